//! Shared fixtures for the issuer tests: an issuer played by an in-process HTTP server on
//! 127.0.0.1, key sets of valid EC keys, and timings short enough for a test.

mod fetching;
mod refetch;
mod server;
mod watching;

use std::time::Duration;

use serde_json::{Value, json};

use super::{Issuers, Timings, cache::sorted_kids};
use crate::policy::{Algorithm, Issuer};
use server::{Reply, Server};

pub(super) const DISCOVERY: &str = "/.well-known/openid-configuration";
pub(super) const JWKS: &str = "/jwks";

/// A P-256 public key: the curve's generator, a valid point that anyone may use in a test.
pub(super) fn jwk(kid: &str) -> Value {
    json!({
        "kty": "EC",
        "kid": kid,
        "use": "sig",
        "crv": "P-256",
        "x": "axfR8uEsQkf4vOblY6RA8ncDfYEt6zOg9KE5RdiYwpY",
        "y": "T-NC4v4af5uO5-tKfA-eFivOM1drMV7Oy7ZAaDe_UfU",
    })
}

pub(super) fn jwks(kids: &[&str]) -> String {
    let keys: Vec<Value> = kids.iter().map(|kid| jwk(kid)).collect();
    json!({ "keys": keys }).to_string()
}

pub(super) fn issuer(name: &str, url: &str) -> Issuer {
    Issuer {
        name: name.to_owned(),
        url: url.to_owned(),
        algorithms: Algorithm::DEFAULT.to_vec(),
        jwks_file: None,
    }
}

/// The default timings scaled down, but for the refetch interval, which tests pick.
pub(super) fn timings(unknown_kid_interval: Duration) -> Timings {
    Timings {
        refresh: Duration::from_hours(1),
        unknown_kid_interval,
        retry_first: Duration::from_millis(20),
        retry_max: Duration::from_millis(100),
        request_timeout: Duration::from_secs(2),
    }
}

/// An issuer at `server`: its discovery document, and a key set with `kids`.
pub(super) fn publish(server: &Server, kids: &[&str]) {
    let url = server.url();
    let document = json!({
        "issuer": url,
        "jwks_uri": format!("{url}{JWKS}"),
        "token_endpoint": format!("{url}/token"),
    });
    server.serve(DISCOVERY, Reply::json(document.to_string()));
    server.serve(JWKS, Reply::json(jwks(kids)));
}

/// A server playing an issuer with `kids`, and the issuers of a policy naming it "corp".
pub(super) async fn corp(kids: &[&str], timings: Timings) -> (Server, Issuers) {
    let server = Server::start().await;
    publish(&server, kids);
    let issuers = Issuers::with_timings(&[issuer("corp", &server.url())], timings)
        .expect("build the issuers");
    (server, issuers)
}

/// The key ids validators see for the first trusted issuer; empty when none is trusted.
pub(super) fn trusted_kids(issuers: &Issuers) -> Vec<String> {
    issuers
        .trusted()
        .first()
        .map(|trust| sorted_kids(&trust.keys))
        .unwrap_or_default()
}

/// The last error of the first issuer.
pub(super) fn last_error(issuers: &Issuers) -> String {
    issuers.status()[0].last_error.clone().unwrap_or_default()
}
