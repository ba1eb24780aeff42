//! The token tests, with the shared fixtures of [`super::testkit`] and helpers that check a
//! refusal.

mod accepted;
mod claims;
mod header;
mod jwks;
mod signature;

use std::time::SystemTime;

pub(crate) use super::testkit::*;
use super::{IssuerTrust, Reason, Rejection};

/// Validates with the shared issuer and validator at the current time.
#[expect(
    clippy::result_large_err,
    reason = "returns what `Validator::validate` returns"
)]
pub(crate) fn check(token: &str) -> Result<super::AccessToken, Rejection> {
    validator().validate(token, &issuers(), SystemTime::now())
}

/// The reason a token is refused, failing the test if it is accepted. Also checks that the
/// rejection never repeats the token or its signature.
#[track_caller]
pub(crate) fn refused(token: &str) -> Reason {
    refused_by(token, &issuers())
}

#[track_caller]
pub(crate) fn refused_by(token: &str, issuers: &[IssuerTrust]) -> Reason {
    let rejection = validator()
        .validate(token, issuers, SystemTime::now())
        .expect_err("token should be refused");
    let signature = token.rsplit('.').next().unwrap_or(token);
    let shown = format!("{rejection:?}");
    // Short strings could appear in a detail by chance; real tokens and signatures are long.
    if token.len() >= 16 {
        assert!(!shown.contains(token), "the rejection repeats the token");
    }
    if signature.len() >= 16 {
        assert!(
            !shown.contains(signature),
            "the rejection repeats the signature"
        );
    }
    assert!(
        !rejection.detail.is_empty(),
        "the rejection explains nothing"
    );
    rejection.reason
}
