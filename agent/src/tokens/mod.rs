//! OAuth 2.0 JWT access tokens (RFC 9068): issuers' key sets in, verified holders out.
//!
//! `jwks` reads an issuer's published keys and refuses the unfit ones; `validate` takes a
//! bearer token through size, form, `header`, issuer and key, signature (jsonwebtoken with the
//! aws-lc backend) and `claims`, in that order; every refusal is a [`Rejection`] with a
//! [`Reason`] code for the `token.rejected` event. Fetching keys and caching them is not done
//! here: this module only judges.

mod cache;
mod claims;
mod compact;
mod header;
mod jwks;
mod keys;
mod reject;
mod validate;

#[cfg(any(test, feature = "testkit"))]
pub mod testkit;
#[cfg(test)]
pub(crate) mod tests;

use std::time::{Duration, SystemTime};

use aws_lc_rs::digest;

pub use cache::{CACHE_TTL, TokenCache};
pub use jwks::{JwksError, KeyProblem, KeySet, MAX_JWKS_BYTES, MAX_KEYS, MIN_RSA_BITS};
pub use keys::{Curve, KeyFlaw, KeyKind};
pub use reject::{Reason, Rejection};

use crate::policy::Algorithm;

/// The longest bearer token read; longer ones are refused before any parsing.
pub const MAX_TOKEN_BYTES: usize = 8192;

/// The most clock skew a validator tolerates, whatever it is asked for.
pub const MAX_LEEWAY: Duration = Duration::from_secs(60);

/// How far ahead a token's `exp` may be by default: access tokens are short-lived, and one
/// that lives for weeks is a stolen credential waiting to happen.
pub const MAX_LIFETIME: Duration = Duration::from_secs(24 * 60 * 60);

/// An issuer whose tokens are believed, with its current keys.
#[derive(Debug, Clone)]
pub struct IssuerTrust {
    /// The `[[issuer]]` name in the policy, for logs and gates.
    pub name: String,
    /// The exact `iss` value of its tokens, from discovery.
    pub issuer: String,
    /// The policy's allow-list for this issuer.
    pub algorithms: Vec<Algorithm>,
    pub keys: KeySet,
}

/// Validates access tokens addressed to one audience.
#[derive(Debug, Clone)]
pub struct Validator {
    audience: String,
    leeway: Duration,
    max_lifetime: Duration,
}

/// A token that passed every check: who holds it, and what it allows until when.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccessToken {
    /// The `[[issuer]]` name in the policy.
    pub issuer_name: String,
    /// The token's `iss`.
    pub issuer: String,
    pub subject: String,
    pub client_id: Option<String>,
    /// From `scope` (and `scp`), possibly empty: whether they suffice is for the gates.
    pub scopes: Vec<String>,
    pub jti: Option<String>,
    pub expires_at: SystemTime,
    pub issued_at: Option<SystemTime>,
    /// [`token_hash`] of the token, to follow it through the log.
    pub token_hash: String,
}

/// A short fingerprint of a token for logs: the first 16 hex digits of its SHA-256.
pub fn token_hash(token: &str) -> String {
    let digest = digest::digest(&digest::SHA256, token.as_bytes());
    digest.as_ref()[..8]
        .iter()
        .map(|byte| format!("{byte:02x}"))
        .collect()
}
