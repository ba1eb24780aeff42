//! Why a token was refused: the reason code that events carry, and what the log may say.

use std::fmt;

/// The class of a refused token, as `reason` in a `token.rejected` event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Reason {
    /// Longer than [`super::MAX_TOKEN_BYTES`]; refused before any parsing.
    TooLarge,
    /// Not three segments of strict base64url, or a segment that is not a JSON object.
    Malformed,
    /// A `typ` header other than `at+jwt` or `application/at+jwt`, or none.
    BadType,
    /// A header that fetches or embeds keys (`jku`, `x5u`, `jwk`, `x5c`) or changes how the
    /// payload is read (`b64`, `zip`, `enc`).
    ForbiddenHeader,
    /// A `crit` header: no extension is understood, so every one is unknown.
    UnknownCritical,
    /// `alg` is `none`, symmetric, unknown, outside the issuer's allow-list, or not one
    /// that the key was made for.
    AlgorithmNotAllowed,
    /// `kid` missing, not a string, too long or with characters no key id has.
    BadKeyId,
    /// No key of the issuer has this `kid`; the key set may need a refetch.
    UnknownKey,
    /// The issuer published a key with this `kid`, but it was refused (weak, not for
    /// signing, ...); refetching will not help.
    RefusedKey,
    /// The signature does not verify, or is not the canonical shape for its algorithm.
    BadSignature,
    /// `iss` names no issuer that this host trusts.
    UnknownIssuer,
    /// `iss` is not a single string (an array, a number), or differs from the issuer's.
    WrongIssuer,
    /// `aud` does not name this host.
    WrongAudience,
    /// `exp` is past, beyond the leeway.
    Expired,
    /// `nbf` is in the future, beyond the leeway.
    NotYetValid,
    /// `iat` is in the future, beyond the leeway.
    IssuedInFuture,
    /// `exp` is further ahead than any access token should live.
    ExpiryTooFar,
    /// A required claim (`iss`, `exp`, `aud`, `sub`) is absent.
    MissingClaim,
    /// A claim of the wrong type: `exp` as a string or a fraction, `sub` as a number, ...
    InvalidClaim,
    /// A member name appears twice in the header or the payload.
    DuplicateClaim,
    /// The token is valid but opens none of the asked ports. Decided by the gates, never by
    /// the validator; here so that every `token.rejected` reason has one spelling.
    InsufficientScope,
}

impl Reason {
    /// Every reason, for metrics that pre-register one counter each.
    pub const ALL: [Reason; 21] = [
        Self::TooLarge,
        Self::Malformed,
        Self::BadType,
        Self::ForbiddenHeader,
        Self::UnknownCritical,
        Self::AlgorithmNotAllowed,
        Self::BadKeyId,
        Self::UnknownKey,
        Self::RefusedKey,
        Self::BadSignature,
        Self::UnknownIssuer,
        Self::WrongIssuer,
        Self::WrongAudience,
        Self::Expired,
        Self::NotYetValid,
        Self::IssuedInFuture,
        Self::ExpiryTooFar,
        Self::MissingClaim,
        Self::InvalidClaim,
        Self::DuplicateClaim,
        Self::InsufficientScope,
    ];

    /// The reason code in events and metrics.
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::TooLarge => "too_large",
            Self::Malformed => "malformed",
            Self::BadType => "bad_type",
            Self::ForbiddenHeader => "forbidden_header",
            Self::UnknownCritical => "unknown_critical",
            Self::AlgorithmNotAllowed => "algorithm_not_allowed",
            Self::BadKeyId => "bad_kid",
            Self::UnknownKey => "unknown_key",
            Self::RefusedKey => "refused_key",
            Self::BadSignature => "bad_signature",
            Self::UnknownIssuer => "unknown_issuer",
            Self::WrongIssuer => "wrong_issuer",
            Self::WrongAudience => "wrong_audience",
            Self::Expired => "expired",
            Self::NotYetValid => "not_yet_valid",
            Self::IssuedInFuture => "issued_in_future",
            Self::ExpiryTooFar => "expiry_too_far",
            Self::MissingClaim => "missing_claim",
            Self::InvalidClaim => "invalid_claim",
            Self::DuplicateClaim => "duplicate_claim",
            Self::InsufficientScope => "insufficient_scope",
        }
    }
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A refused token: its reason, an explanation for the operator, and whatever is known of
/// the token's identity. Nothing here is trusted unless the signature verified; nothing here
/// ever holds the token or its signature.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    pub reason: Reason,
    /// What was wrong, for the log.
    pub detail: String,
    /// The name of the trusted issuer that `iss` matched.
    pub issuer: Option<String>,
    /// The header's `kid`, once it passed the key id checks.
    pub kid: Option<String>,
    /// [`super::token_hash`] of the token, once it parsed as a JWT; junk is refused without
    /// spending a hash on it.
    pub token_hash: Option<String>,
    /// Claims read from the payload, unverified unless the signature checked out.
    pub subject: Option<String>,
    pub client_id: Option<String>,
    pub jti: Option<String>,
}

impl Rejection {
    pub(crate) fn new(reason: Reason, detail: impl Into<String>) -> Self {
        Self {
            reason,
            detail: detail.into(),
            issuer: None,
            kid: None,
            token_hash: None,
            subject: None,
            client_id: None,
            jti: None,
        }
    }
}

impl fmt::Display for Rejection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.reason, self.detail)
    }
}

impl std::error::Error for Rejection {}

/// A refusal found by one check, before the validator adds what it knows of the token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Fault {
    pub reason: Reason,
    pub detail: String,
}

impl Fault {
    pub(crate) fn new(reason: Reason, detail: impl Into<String>) -> Self {
        Self {
            reason,
            detail: detail.into(),
        }
    }
}

impl From<Fault> for Rejection {
    fn from(fault: Fault) -> Self {
        Rejection::new(fault.reason, fault.detail)
    }
}

/// Quotes a value taken from a token for a log line: escaped, and cut to a length that
/// cannot flood it.
pub(crate) fn quoted(value: &str) -> String {
    const MAX_CHARS: usize = 64;

    if value.chars().count() <= MAX_CHARS {
        return format!("{value:?}");
    }
    let head: String = value.chars().take(MAX_CHARS).collect();
    format!("{head:?}… ({} bytes)", value.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reason_codes_are_snake_case_and_distinct() {
        let mut seen = std::collections::HashSet::new();
        for reason in Reason::ALL {
            let code = reason.as_str();
            assert!(code.bytes().all(|b| b.is_ascii_lowercase() || b == b'_'));
            seen.insert(code);
        }
        assert_eq!(seen.len(), Reason::ALL.len());
    }

    #[test]
    fn quoted_values_are_cut_and_escaped() {
        assert_eq!(quoted("a\nb"), "\"a\\nb\"");
        let long = "x".repeat(10_000);
        assert!(quoted(&long).len() < 100);
    }
}
