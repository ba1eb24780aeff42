//! Refetching keys for an unknown `kid`: a rotation is followed, and a flood of unknown ids
//! costs at most one fetch per interval.

use std::time::Duration;

use super::server::Reply;
use super::{DISCOVERY, JWKS, corp, jwks, timings, trusted_kids};

#[tokio::test]
async fn rotation_is_followed_on_an_unknown_kid() {
    let interval = Duration::from_millis(100);
    let (server, issuers) = corp(&["old"], timings(interval)).await;
    issuers.refresh().await;
    server.serve(JWKS, Reply::json(jwks(&["new"])));
    tokio::time::sleep(interval).await;

    assert!(issuers.refresh_for_unknown_kid("corp", "new").await);

    assert_eq!(
        trusted_kids(&issuers),
        ["new"],
        "the withdrawn key is dropped"
    );
    assert_eq!(server.hits(JWKS), 2);
    assert_eq!(
        server.hits(DISCOVERY),
        1,
        "a rotation does not repeat discovery"
    );
}

#[tokio::test]
async fn concurrent_unknown_kids_share_one_fetch() {
    let (server, issuers) = corp(&["a", "b"], timings(Duration::from_secs(10))).await;
    server.serve(
        JWKS,
        Reply::json(jwks(&["a", "b"])).delayed(Duration::from_millis(200)),
    );

    let mut callers = tokio::task::JoinSet::new();
    for caller in 0..100 {
        let issuers = issuers.clone();
        let kid = if caller % 2 == 0 { "a" } else { "b" };
        callers.spawn(async move { issuers.refresh_for_unknown_kid("corp", kid).await });
    }
    let found = callers.join_all().await;

    assert!(found.iter().all(|&known| known));
    assert_eq!(server.hits(JWKS), 1);
}

#[tokio::test]
async fn flood_of_unknown_kids_is_one_fetch_per_interval() {
    let (server, issuers) = corp(&["a"], timings(Duration::from_secs(10))).await;

    let mut callers = tokio::task::JoinSet::new();
    for caller in 0..100 {
        let issuers = issuers.clone();
        callers.spawn(async move {
            let kid = format!("forged-{caller}");
            issuers.refresh_for_unknown_kid("corp", &kid).await
        });
    }
    let found = callers.join_all().await;

    assert!(found.iter().all(|&known| !known));
    assert_eq!(server.hits(JWKS), 1);
    assert_eq!(trusted_kids(&issuers), ["a"]);
}

#[tokio::test]
async fn second_unknown_kid_within_the_interval_fetches_nothing() {
    let (server, issuers) = corp(&["a"], timings(Duration::from_secs(10))).await;
    assert!(issuers.refresh_for_unknown_kid("corp", "a").await);
    assert_eq!(server.hits(JWKS), 1);

    server.serve(JWKS, Reply::json(jwks(&["a", "b"])));
    assert!(!issuers.refresh_for_unknown_kid("corp", "b").await);

    assert_eq!(server.hits(JWKS), 1);
}

#[tokio::test]
async fn known_kid_fetches_nothing() {
    let (server, issuers) = corp(&["a"], timings(Duration::ZERO)).await;
    issuers.refresh().await;

    assert!(issuers.refresh_for_unknown_kid("corp", "a").await);

    assert_eq!(server.hits(JWKS), 1);
}

#[tokio::test]
async fn unknown_issuer_fetches_nothing() {
    let (server, issuers) = corp(&["a"], timings(Duration::ZERO)).await;

    assert!(!issuers.refresh_for_unknown_kid("other", "a").await);

    assert_eq!(server.hits(DISCOVERY) + server.hits(JWKS), 0);
}

#[tokio::test]
async fn failed_refetch_keeps_the_keys_and_counts_against_the_interval() {
    let interval = Duration::from_millis(100);
    let (server, issuers) = corp(&["a"], timings(interval)).await;
    issuers.refresh().await;
    server.serve(JWKS, Reply::status(500));
    tokio::time::sleep(interval).await;

    assert!(!issuers.refresh_for_unknown_kid("corp", "b").await);
    assert!(!issuers.refresh_for_unknown_kid("corp", "c").await);

    assert_eq!(server.hits(JWKS), 2);
    assert_eq!(trusted_kids(&issuers), ["a"]);
}
