//! The background task and failed reads: an issuer down at start-up is retried until it
//! answers, refreshes follow the issuer, and the last good keys outlive its failures.

use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::Value;

use super::server::{Reply, Server};
use super::trusted_kids;
use super::{DISCOVERY, JWKS, corp, issuer, jwks, last_error, publish, timings};
use crate::events::EventLog;
use crate::issuers::Issuers;

/// Waits up to 5 s for `done`, checking every 10 ms.
async fn eventually(what: &str, done: impl Fn() -> bool) {
    let start = Instant::now();
    while !done() {
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "timed out waiting: {what}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

fn events(path: &Path) -> Vec<Value> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    text.lines()
        .map(|line| serde_json::from_str(line).expect("an event is JSON"))
        .collect()
}

fn named<'a>(events: &'a [Value], name: &str) -> Vec<&'a Value> {
    events
        .iter()
        .filter(|event| event["event"] == name)
        .collect()
}

#[tokio::test]
async fn issuer_down_at_start_is_retried_until_it_answers() {
    let dir = tempfile::tempdir().expect("a scratch directory");
    let log = EventLog::open(Some(&dir.path().join("events.jsonl"))).expect("open the event log");
    let addr = {
        let server = Server::start().await;
        server
            .url()
            .trim_start_matches("http://")
            .parse()
            .expect("an address")
    };
    let url = format!("http://{addr}");
    let issuers = Issuers::with_timings(&[issuer("corp", &url)], timings(Duration::from_secs(10)))
        .expect("build the issuers");
    let task = tokio::spawn(issuers.clone().run(log));

    eventually("a failed attempt", || {
        issuers.status()[0].last_error.is_some()
    })
    .await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(issuers.trusted().is_empty());
    let server = Server::start_on(addr).await;
    publish(&server, &["a"]);
    eventually("keys", || !issuers.trusted().is_empty()).await;
    task.abort();

    assert_eq!(trusted_kids(&issuers), ["a"]);
    assert!(issuers.status()[0].last_error.is_none());
    let events = events(&dir.path().join("events.jsonl"));
    let unreachable = named(&events, "issuer.unreachable");
    assert!(unreachable.len() >= 2, "retried: {events:?}");
    assert_eq!(unreachable[0]["issuer"], "corp");
    assert_eq!(unreachable[0]["retry_in"], "20ms");
    assert_eq!(unreachable[1]["retry_in"], "40ms");
    assert!(
        unreachable[0]["error"]
            .as_str()
            .is_some_and(|error| !error.is_empty())
    );
    let loaded = named(&events, "issuer.keys_loaded");
    assert_eq!(loaded.len(), 1, "{events:?}");
    assert_eq!(loaded[0]["kids"], serde_json::json!(["a"]));
    assert_eq!(loaded[0]["source"], format!("{url}{JWKS}"));
}

#[tokio::test]
async fn last_good_keys_stay_when_the_issuer_starts_failing() {
    let (server, issuers) = corp(&["a"], timings(Duration::from_secs(10))).await;
    issuers.refresh().await;

    server.serve(JWKS, Reply::status(500));
    issuers.refresh().await;
    assert_eq!(trusted_kids(&issuers), ["a"]);
    assert!(
        last_error(&issuers).contains("500"),
        "{}",
        last_error(&issuers)
    );

    server.serve(JWKS, Reply::json("{\"keys\": [}"));
    issuers.refresh().await;
    assert_eq!(trusted_kids(&issuers), ["a"]);
    assert!(
        last_error(&issuers).contains("malformed"),
        "{}",
        last_error(&issuers)
    );

    server.serve(DISCOVERY, Reply::status(404));
    issuers.refresh().await;
    assert_eq!(trusted_kids(&issuers), ["a"]);
    assert!(issuers.status()[0].last_success.is_some());
}

#[tokio::test]
async fn periodic_refresh_follows_the_issuer_and_survives_its_failures() {
    let dir = tempfile::tempdir().expect("a scratch directory");
    let log = EventLog::open(Some(&dir.path().join("events.jsonl"))).expect("open the event log");
    let mut fast = timings(Duration::from_secs(10));
    fast.refresh = Duration::from_millis(50);
    let (server, issuers) = corp(&["a"], fast).await;
    let task = tokio::spawn(issuers.clone().run(log));
    eventually("first keys", || trusted_kids(&issuers) == ["a"]).await;

    server.serve(JWKS, Reply::json(jwks(&["b"])));
    eventually("rotated keys", || trusted_kids(&issuers) == ["b"]).await;
    server.serve(JWKS, Reply::json("not json"));
    eventually("a failed refresh", || {
        issuers.status()[0].last_error.is_some()
    })
    .await;
    task.abort();

    assert_eq!(trusted_kids(&issuers), ["b"]);
    let events = events(&dir.path().join("events.jsonl"));
    assert_eq!(named(&events, "issuer.keys_loaded").len(), 2, "{events:?}");
    let rejected = named(&events, "issuer.keys_rejected");
    assert!(!rejected.is_empty(), "{events:?}");
    assert_eq!(rejected[0]["trigger"], "periodic");
}
