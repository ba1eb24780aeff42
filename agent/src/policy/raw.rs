//! The policy file as TOML gives it: loose serde shapes that keep the span of every value.
//!
//! Every table denies unknown keys, so a typo is an error at the key. Every key is optional
//! and every enumerated value is a string here: `validate` reports missing keys and bad values,
//! all of them at once, instead of serde stopping at the first.

use serde::Deserialize;
use toml::{Spanned, Value};

/// A string and where it was written.
pub(super) type Text = Spanned<String>;

/// A list of strings, each with its place, and the list's own place.
pub(super) type TextList = Spanned<Vec<Text>>;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawPolicy {
    pub guard: Option<Spanned<RawGuard>>,
    #[serde(default)]
    pub endpoint: Vec<Spanned<RawEndpoint>>,
    pub auth: Option<Spanned<RawAuth>>,
    #[serde(default)]
    pub issuer: Vec<Spanned<RawIssuer>>,
    #[serde(default)]
    pub gate: Vec<Spanned<RawGate>>,
    pub events: Option<Spanned<RawEvents>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawGuard {
    pub interfaces: Option<TextList>,
    pub mode: Option<Text>,
    pub icmp: Option<Text>,
    pub udp_reply_ttl: Option<Text>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawEndpoint {
    pub name: Option<Text>,
    /// An integer or a string, told apart by `ports`.
    pub port: Option<Spanned<Value>>,
    pub protocol: Option<Text>,
    pub from: Option<TextList>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawAuth {
    pub listen: Option<TextList>,
    pub tls_cert: Option<Text>,
    pub tls_key: Option<Text>,
    pub audience: Option<Text>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawIssuer {
    pub name: Option<Text>,
    pub url: Option<Text>,
    pub algorithms: Option<TextList>,
    pub jwks_file: Option<Text>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawGate {
    pub name: Option<Text>,
    pub port: Option<Spanned<Value>>,
    pub protocol: Option<Text>,
    pub scope: Option<Text>,
    pub max_ttl: Option<Text>,
    pub on_expiry: Option<Text>,
    pub issuers: Option<TextList>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawEvents {
    pub file: Option<Text>,
    pub metrics: Option<Text>,
}
