//! The auth endpoint called in-process: real tokens signed with keys made here, a key file
//! issuer, a grant book over a map in memory, and the event log read back from a file.

use std::{
    collections::HashMap,
    net::IpAddr,
    path::PathBuf,
    sync::{Arc, Mutex},
    time::Duration,
};

use axum::{
    Extension, Router,
    body::{Body, to_bytes},
    http::{Request, StatusCode, header},
};
use portguard_common::maps::{Counters, GrantKey, GrantValue};
use serde_json::{Value, json};
use tower::ServiceExt as _;

use super::*;
use crate::{
    engine::{Engine, Kernel},
    grants::{GrantBook, GrantMap, mapped},
    interfaces::Interface,
    loader::LoadError,
    policy::{Algorithm, Gate, Issuer, OnExpiry, PortRange, Protocol},
    tokens::tests::{AUD, ISS, claims, encoded, jwks, keys},
};

/// The grant map in memory, shared with the test.
#[derive(Clone, Default)]
struct MemoryKernel(Arc<Mutex<HashMap<GrantKey, GrantValue>>>);

impl GrantMap for MemoryKernel {
    fn write(&mut self, key: &GrantKey, value: Option<&GrantValue>) -> Result<(), LoadError> {
        let mut map = self.0.lock().unwrap();
        match value {
            Some(v) => map.insert(*key, *v),
            None => map.remove(key),
        };
        Ok(())
    }
}

impl Kernel for MemoryKernel {
    fn counters(&self) -> Result<Counters, LoadError> {
        Ok(Counters::default())
    }

    fn detach_all(&mut self) -> Vec<Interface> {
        Vec::new()
    }
}

struct Harness {
    router: Router,
    kernel: MemoryKernel,
    events: PathBuf,
    _dir: tempfile::TempDir,
}

const CLIENT: &str = "10.201.0.2";

async fn harness() -> Harness {
    let dir = tempfile::tempdir().unwrap();
    let fixture = keys();
    let key_file = dir.path().join("jwks.json");
    std::fs::write(
        &key_file,
        jwks(&[&fixture.rsa.jwk, &fixture.ec.jwk, &fixture.ed.jwk]),
    )
    .unwrap();
    let issuer = Issuer {
        name: "corp".into(),
        url: ISS.into(),
        algorithms: vec![Algorithm::Rs256, Algorithm::Es256, Algorithm::EdDsa],
        jwks_file: Some(key_file),
    };
    let issuers = Issuers::new(&[issuer]).unwrap();
    issuers.refresh().await;
    assert_eq!(issuers.trusted().len(), 1, "the key file issuer has keys");

    let kernel = MemoryKernel::default();
    let mut map = kernel.clone();
    let (book, _) = GrantBook::open(
        &dir.path().join("state"),
        &mut map,
        std::time::SystemTime::now(),
    )
    .unwrap();
    let events = dir.path().join("events.jsonl");
    let gate = Gate {
        name: "postgres".into(),
        ports: PortRange {
            first: 5432,
            last: 5432,
        },
        protocol: Protocol::Tcp,
        scope: "db:connect".into(),
        max_ttl: Some(Duration::from_secs(600)),
        on_expiry: OnExpiry::Keep,
        issuers: Vec::new(),
    };
    let limits = Limits {
        requests_burst: 5,
        requests_per_second: 0.1,
        ..Limits::default()
    };
    let app = App {
        validator: Arc::new(Validator::new(AUD.into(), Duration::from_secs(60))),
        cache: Arc::default(),
        issuers,
        gates: Gates::new(vec![gate]),
        engine: SharedEngine::new(Engine {
            kernel: Box::new(kernel.clone()),
            book,
        }),
        log: EventLog::open(Some(&events)).unwrap(),
        limiter: Arc::new(RateLimiter::new(
            limits.requests_burst,
            limits.requests_per_second,
        )),
    };
    let peer: IpAddr = CLIENT.parse().unwrap();
    let router = router(app, &limits).layer(Extension(Peer(peer)));
    Harness {
        router,
        kernel,
        events,
        _dir: dir,
    }
}

impl Harness {
    async fn call(
        &self,
        method: &str,
        uri: &str,
        token: Option<&str>,
        body: &str,
    ) -> (StatusCode, Option<String>, Value) {
        let mut request = Request::builder().method(method).uri(uri);
        if let Some(token) = token {
            request = request.header(header::AUTHORIZATION, format!("Bearer {token}"));
        }
        let request = request.body(Body::from(body.to_owned())).unwrap();
        let response = self.router.clone().oneshot(request).await.unwrap();
        let status = response.status();
        let challenge = response
            .headers()
            .get(header::WWW_AUTHENTICATE)
            .map(|v| v.to_str().unwrap().to_owned());
        let bytes = to_bytes(response.into_body(), 1 << 20).await.unwrap();
        (
            status,
            challenge,
            serde_json::from_slice(&bytes).unwrap_or(Value::Null),
        )
    }

    fn events(&self) -> Vec<Value> {
        std::fs::read_to_string(&self.events)
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }

    fn granted(&self) -> bool {
        let key = GrantKey::new(mapped(CLIENT.parse().unwrap()), 6, 5432);
        self.kernel.0.lock().unwrap().contains_key(&key)
    }
}

fn token(changes: Value) -> String {
    encoded(&keys().ec, &claims(changes))
}

#[tokio::test]
async fn health_answers() {
    let h = harness().await;
    let (status, _, body) = h.call("GET", "/healthz", None, "").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["status"], "ok");
}

#[tokio::test]
async fn a_valid_token_opens_its_gate_for_the_callers_address_only() {
    let h = harness().await;
    let t = token(json!({ "scope": "db:connect" }));
    let (status, _, body) = h
        .call(
            "POST",
            "/v1/grants",
            Some(&t),
            r#"{"ports": ["5432/tcp"], "ttl": "5m"}"#,
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert_eq!(body["source"], CLIENT);
    assert_eq!(body["ports"], json!(["5432/tcp"]));
    assert!(body["ttl_seconds"].as_u64().unwrap() <= 300);
    assert!(h.granted());

    let events = h.events();
    let names: Vec<&str> = events
        .iter()
        .map(|e| e["event"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["token.accepted", "grant.opened"]);
    assert!(
        events.iter().all(|e| !e.to_string().contains(&t)),
        "the raw token is never logged"
    );
    assert_eq!(events[1]["subject"], "svc-ci");
}

#[tokio::test]
async fn no_token_is_a_bearer_challenge() {
    let h = harness().await;
    let (status, challenge, _) = h.call("POST", "/v1/grants", None, "").await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(challenge.as_deref(), Some("Bearer realm=\"portguard\""));
}

#[tokio::test]
async fn a_bad_token_is_invalid_token_and_logged_with_its_reason() {
    let h = harness().await;
    let expired = token(json!({ "scope": "db:connect", "exp": 1_000_000 }));
    let (status, challenge, _) = h.call("POST", "/v1/grants", Some(&expired), "").await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert!(challenge.unwrap().contains("error=\"invalid_token\""));
    assert!(!h.granted());
    let events = h.events();
    assert_eq!(events[0]["event"], "token.rejected");
    assert_eq!(events[0]["reason"], "expired");

    let (status, _, _) = h.call("POST", "/v1/grants", Some("not.a.token"), "").await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let wrong_audience = token(json!({ "scope": "db:connect", "aud": "https://elsewhere" }));
    let (status, _, _) = h
        .call("POST", "/v1/grants", Some(&wrong_audience), "")
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(h.events()[2]["reason"], "wrong_audience");
}

#[tokio::test]
async fn a_token_without_the_scope_is_insufficient_scope() {
    let h = harness().await;
    let t = token(json!({ "scope": "web:admin" }));
    let (status, challenge, body) = h.call("POST", "/v1/grants", Some(&t), "").await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    assert!(challenge.unwrap().contains("error=\"insufficient_scope\""));
    assert!(!h.granted());
    assert_eq!(h.events()[0]["reason"], "insufficient_scope");
}

#[tokio::test]
async fn a_malformed_body_is_a_bad_request() {
    let h = harness().await;
    let t = token(json!({ "scope": "db:connect" }));
    for body in [
        r#"{"ports": ["99999/tcp"]}"#,
        r#"{"source": "10.0.0.9"}"#,
        "{",
        r#"{"ttl": "soon"}"#,
    ] {
        let (status, _, _) = h.call("POST", "/v1/grants", Some(&t), body).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    }
    assert!(!h.granted());
}

#[tokio::test]
async fn only_the_holder_revokes_a_grant() {
    let h = harness().await;
    let t = token(json!({ "scope": "db:connect" }));
    let (_, _, grant) = h.call("POST", "/v1/grants", Some(&t), "").await;
    let uri = format!("/v1/grants/{}", grant["id"].as_str().unwrap());

    let stranger = token(json!({ "scope": "db:connect", "sub": "someone-else" }));
    let (status, _, _) = h.call("DELETE", &uri, Some(&stranger), "").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert!(h.granted());

    let (status, _, _) = h.call("DELETE", &uri, Some(&t), "").await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    assert!(!h.granted());
    assert_eq!(h.events().last().unwrap()["event"], "grant.revoked");
}

#[tokio::test]
async fn a_flood_of_requests_from_one_source_is_rate_limited() {
    let h = harness().await;
    let mut statuses = Vec::new();
    for _ in 0..8 {
        statuses.push(h.call("POST", "/v1/grants", Some("junk"), "").await.0);
    }
    assert!(
        statuses[..5].iter().all(|s| *s == StatusCode::UNAUTHORIZED),
        "{statuses:?}"
    );
    assert!(
        statuses[5..]
            .iter()
            .all(|s| *s == StatusCode::TOO_MANY_REQUESTS),
        "{statuses:?}"
    );
}
