//! Reading keys: discovery believed only for the configured issuer, key sets only from safe
//! urls and within the size limit, and files on this host.

use std::time::Duration;

use serde_json::json;

use super::server::{Reply, Server};
use super::{DISCOVERY, JWKS, corp, issuer, jwks, last_error, timings, trusted_kids};
use crate::issuers::Issuers;
use crate::tokens::MAX_JWKS_BYTES;

fn interval() -> Duration {
    Duration::from_secs(10)
}

#[tokio::test]
async fn discovery_finds_the_key_set() {
    let (server, issuers) = corp(&["a", "b"], timings(interval())).await;

    issuers.refresh().await;

    assert_eq!(trusted_kids(&issuers), ["a", "b"]);
    let trusted = issuers.trusted();
    assert_eq!(trusted[0].name, "corp");
    assert_eq!(trusted[0].issuer, server.url());
    let status = &issuers.status()[0];
    assert_eq!(status.keys, 2);
    assert_eq!(
        status.source.as_deref(),
        Some(format!("{}{JWKS}", server.url()).as_str())
    );
    assert!(status.last_success.is_some() && status.last_error.is_none());
}

#[tokio::test]
async fn issuer_is_trusted_under_the_name_discovery_gives() {
    let (server, _) = corp(&["a"], timings(interval())).await;
    let configured = format!("{}/", server.url());
    let issuers = Issuers::with_timings(&[issuer("corp", &configured)], timings(interval()))
        .expect("build the issuers");

    issuers.refresh().await;

    assert_eq!(issuers.trusted()[0].issuer, server.url());
}

#[tokio::test]
async fn discovery_naming_another_issuer_is_refused() {
    let (server, issuers) = corp(&["a"], timings(interval())).await;
    let document =
        json!({"issuer": "https://evil.example", "jwks_uri": format!("{}{JWKS}", server.url())});
    server.serve(DISCOVERY, Reply::json(document.to_string()));

    issuers.refresh().await;

    assert!(issuers.trusted().is_empty());
    assert!(
        last_error(&issuers).contains("https://evil.example"),
        "{}",
        last_error(&issuers)
    );
    assert_eq!(server.hits(JWKS), 0);
}

#[tokio::test]
async fn discovery_may_not_send_keys_to_plain_http_elsewhere() {
    let (server, issuers) = corp(&["a"], timings(interval())).await;
    let document = json!({"issuer": server.url(), "jwks_uri": "http://keys.example.com/jwks"});
    server.serve(DISCOVERY, Reply::json(document.to_string()));

    issuers.refresh().await;

    assert!(issuers.trusted().is_empty());
    assert!(
        last_error(&issuers).contains("jwks_uri"),
        "{}",
        last_error(&issuers)
    );
}

#[tokio::test]
async fn oversized_key_set_is_refused() {
    let (server, issuers) = corp(&["a"], timings(interval())).await;
    let padded = json!({"keys": [super::jwk("a")], "pad": "x".repeat(2 * 1024 * 1024)});
    server.serve(JWKS, Reply::json(padded.to_string()));

    issuers.refresh().await;

    assert!(issuers.trusted().is_empty());
    assert!(
        last_error(&issuers).contains("more than"),
        "{}",
        last_error(&issuers)
    );
}

#[tokio::test]
async fn oversized_key_set_without_length_is_cut_off() {
    let (server, issuers) = corp(&["a"], timings(interval())).await;
    let endless = vec![b' '; 16 * 1024 * 1024];
    server.serve(JWKS, Reply::json(endless).without_length());

    issuers.refresh().await;

    assert!(issuers.trusted().is_empty());
    let expected = format!("more than the {MAX_JWKS_BYTES} bytes");
    assert!(
        last_error(&issuers).contains(&expected),
        "{}",
        last_error(&issuers)
    );
}

#[tokio::test]
async fn redirect_to_another_origin_is_refused() {
    let (server, issuers) = corp(&["a"], timings(interval())).await;
    let elsewhere = server.url().replace("127.0.0.1", "localhost");
    server.serve(JWKS, Reply::redirect(&format!("{elsewhere}/moved")));
    server.serve("/moved", Reply::json(jwks(&["a"])));

    issuers.refresh().await;

    assert!(issuers.trusted().is_empty());
    assert_eq!(server.hits("/moved"), 0);
}

#[tokio::test]
async fn redirect_within_the_origin_is_followed() {
    let (server, issuers) = corp(&[], timings(interval())).await;
    server.serve(JWKS, Reply::redirect("/jwks/"));
    server.serve("/jwks/", Reply::json(jwks(&["a"])));

    issuers.refresh().await;

    assert_eq!(trusted_kids(&issuers), ["a"]);
}

#[tokio::test]
async fn error_status_is_a_failure() {
    let (server, issuers) = corp(&["a"], timings(interval())).await;
    server.serve(DISCOVERY, Reply::status(503));

    issuers.refresh().await;

    assert!(issuers.trusted().is_empty());
    assert!(
        last_error(&issuers).contains("503"),
        "{}",
        last_error(&issuers)
    );
}

#[tokio::test]
async fn refused_keys_are_left_out_and_the_rest_kept() {
    let (server, issuers) = corp(&[], timings(interval())).await;
    let mixed =
        json!({"keys": [super::jwk("good"), {"kty": "oct", "kid": "shared", "k": "c2VjcmV0"}]});
    server.serve(JWKS, Reply::json(mixed.to_string()));

    issuers.refresh().await;

    assert_eq!(trusted_kids(&issuers), ["good"]);
    assert!(!issuers.refresh_for_unknown_kid("corp", "shared").await);
    assert_eq!(server.hits(JWKS), 1, "a refused key is not refetched");
}

#[tokio::test]
async fn jwks_file_issuer_reads_its_file_on_each_refresh() {
    let dir = tempfile::tempdir().expect("a scratch directory");
    let path = dir.path().join("corp.jwks.json");
    std::fs::write(&path, jwks(&["old"])).expect("write the key set");
    let mut config = issuer("corp", "https://idp.example.com/realms/corp");
    config.jwks_file = Some(path.clone());
    let issuers = Issuers::with_timings(&[config], timings(interval())).expect("build");

    issuers.refresh().await;
    assert_eq!(trusted_kids(&issuers), ["old"]);
    assert_eq!(
        issuers.trusted()[0].issuer,
        "https://idp.example.com/realms/corp"
    );

    std::fs::write(&path, jwks(&["new"])).expect("rewrite the key set");
    issuers.refresh().await;
    assert_eq!(trusted_kids(&issuers), ["new"]);

    std::fs::remove_file(&path).expect("remove the key set");
    issuers.refresh().await;
    assert_eq!(trusted_kids(&issuers), ["new"], "last good keys stay");
    assert!(
        last_error(&issuers).contains("corp.jwks.json"),
        "{}",
        last_error(&issuers)
    );
}

#[tokio::test]
async fn unreachable_issuer_is_a_failure_not_a_panic() {
    let server = Server::start().await;
    let url = server.url();
    drop(server);
    let issuers =
        Issuers::with_timings(&[issuer("corp", &url)], timings(interval())).expect("build");

    issuers.refresh().await;

    assert!(issuers.trusted().is_empty());
    assert!(
        last_error(&issuers).contains("discovery"),
        "{}",
        last_error(&issuers)
    );
}
