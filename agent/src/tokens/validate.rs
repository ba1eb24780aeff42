//! Validation of one token, in order: size, form, header, issuer and key, signature, claims.
//!
//! The payload is decoded before the signature is checked, but only its `iss` is used then, to
//! choose the issuer whose key must verify it; nothing else in it is believed until the
//! signature holds. Junk is refused before any cryptography or hashing is spent on it.

use std::time::{Duration, SystemTime};

use jsonwebtoken::errors::ErrorKind;
use serde_json::{Map, Value};

use super::claims::{self, Claims, Clock};
use super::compact::{self, FormError};
use super::header;
use super::jwks::Key;
use super::keys::{KeyKind, jwt_algorithm};
use super::reject::{Fault, Reason, Rejection, quoted};
use super::{AccessToken, IssuerTrust, MAX_LEEWAY, MAX_LIFETIME, MAX_TOKEN_BYTES, Validator};
use crate::policy::Algorithm;

impl Validator {
    /// A validator for tokens addressed to `audience`, tolerating `leeway` of clock skew
    /// (at most [`MAX_LEEWAY`]).
    pub fn new(audience: String, leeway: Duration) -> Self {
        Self {
            audience,
            leeway: leeway.min(MAX_LEEWAY),
            max_lifetime: MAX_LIFETIME,
        }
    }

    /// Changes the longest time ahead a token's `exp` may be (24 hours by default).
    pub fn with_max_lifetime(mut self, max_lifetime: Duration) -> Self {
        self.max_lifetime = max_lifetime;
        self
    }

    /// The `aud` that tokens must carry.
    pub fn audience(&self) -> &str {
        &self.audience
    }

    pub fn leeway(&self) -> Duration {
        self.leeway
    }

    /// Validates a bearer token against the trusted issuers. `now` is the wall clock:
    /// jsonwebtoken checks `exp` and `nbf` against the system clock as well.
    ///
    /// Takes `&self` and keeps no state, so it can run in a loop or from many tasks at once.
    #[expect(
        clippy::result_large_err,
        reason = "a rejection is a common outcome that is logged whole; boxing it saves nothing"
    )]
    pub fn validate(
        &self,
        token: &str,
        issuers: &[IssuerTrust],
        now: SystemTime,
    ) -> Result<AccessToken, Rejection> {
        if token.len() > MAX_TOKEN_BYTES {
            return Err(Rejection::new(
                Reason::TooLarge,
                format!(
                    "token is {} bytes, more than the {MAX_TOKEN_BYTES} accepted",
                    token.len()
                ),
            ));
        }
        let segments = compact::split(token).map_err(form)?;
        let signature = compact::base64url("signature", segments.signature).map_err(form)?;
        let header_fields = compact::json_segment("header", segments.header).map_err(form)?;
        let checked = header::check(&header_fields)?;
        let payload = compact::json_segment("payload", segments.payload).map_err(form)?;

        // From here on the token is well formed: every rejection says whose it claims to be.
        let mut known = Rejection::new(Reason::Malformed, String::new());
        known.kid = Some(checked.kid.to_owned());
        known.token_hash = Some(super::token_hash(token));
        claims::identity(&payload, &mut known);
        let reject = |known: &Rejection, fault: Fault| Rejection {
            reason: fault.reason,
            detail: fault.detail,
            ..known.clone()
        };

        let trust = issuer(&payload, issuers).map_err(|fault| reject(&known, fault))?;
        known.issuer = Some(trust.name.clone());
        let token = Parsed {
            text: token,
            kid: checked.kid,
            algorithm: checked.algorithm,
            signature: &signature,
            payload: &payload,
        };
        let claims = self
            .judge(&token, trust, now)
            .map_err(|fault| reject(&known, fault))?;

        Ok(AccessToken {
            issuer_name: trust.name.clone(),
            issuer: trust.issuer.clone(),
            subject: claims.subject,
            client_id: claims.client_id,
            scopes: claims.scopes,
            jti: claims.jti,
            expires_at: claims.expires_at,
            issued_at: claims.issued_at,
            token_hash: known.token_hash.unwrap_or_default(),
        })
    }

    /// Chooses the key, checks the algorithm and the signature, then the claims.
    fn judge(
        &self,
        token: &Parsed<'_>,
        trust: &IssuerTrust,
        now: SystemTime,
    ) -> Result<Claims, Fault> {
        let kid = token.kid;
        let Some(key) = trust.keys.key(kid) else {
            return Err(match trust.keys.refusal(kid) {
                Some(flaw) => Fault::new(
                    Reason::RefusedKey,
                    format!(
                        "issuer {} published key {} but it was refused: {flaw}",
                        trust.name,
                        quoted(kid)
                    ),
                ),
                None => Fault::new(
                    Reason::UnknownKey,
                    format!(
                        "issuer {} has no key {} among its {} keys",
                        trust.name,
                        quoted(kid),
                        trust.keys.len()
                    ),
                ),
            });
        };

        let algorithm = token.algorithm;
        if !trust.algorithms.contains(&algorithm) || !key.algorithms.contains(&algorithm) {
            let fitting: Vec<&str> = key.algorithms.iter().map(|alg| alg.as_str()).collect();
            return Err(Fault::new(
                Reason::AlgorithmNotAllowed,
                format!(
                    "alg {} is not accepted for key {} ({}) of issuer {}, which verifies {}",
                    algorithm.as_str(),
                    quoted(kid),
                    key.kind,
                    trust.name,
                    fitting.join(", ")
                ),
            ));
        }
        signature_shape(key.kind, token.signature)?;

        let clock = Clock {
            now: claims::epoch_seconds(now),
            leeway: self.leeway.as_secs(),
            max_lifetime: self.max_lifetime.as_secs(),
        };
        self.verify(token, trust, key)?;
        claims::check(token.payload, &trust.issuer, &self.audience, clock)
    }

    /// Verifies the signature with jsonwebtoken's crypto (aws-lc), with the one algorithm
    /// chosen by the key. The token was already parsed strictly above and its claims are
    /// checked by [`claims::check`] next: jsonwebtoken's `decode`, which parses the token a
    /// second time to check fewer claims, is not needed for them.
    fn verify(&self, token: &Parsed<'_>, trust: &IssuerTrust, key: &Key) -> Result<(), Fault> {
        let (message, signature) = token
            .text
            .rsplit_once('.')
            .ok_or_else(|| Fault::new(Reason::Malformed, "no signature segment".to_owned()))?;
        let bad_signature = || {
            Fault::new(
                Reason::BadSignature,
                format!(
                    "signature does not verify with {} key of issuer {}",
                    key.kind, trust.name
                ),
            )
        };
        match jsonwebtoken::crypto::verify(
            signature,
            message.as_bytes(),
            &key.decoding,
            jwt_algorithm(token.algorithm),
        ) {
            Ok(true) => Ok(()),
            Ok(false) => Err(bad_signature()),
            Err(error) => Err(match error.kind() {
                ErrorKind::InvalidSignature => bad_signature(),
                ErrorKind::InvalidAlgorithm | ErrorKind::InvalidAlgorithmName => Fault::new(
                    Reason::AlgorithmNotAllowed,
                    format!("jsonwebtoken refused the algorithm: {error}"),
                ),
                ErrorKind::Base64(_) => Fault::new(
                    Reason::Malformed,
                    format!("the signature is not base64url: {error}"),
                ),
                _ => Fault::new(
                    Reason::BadSignature,
                    format!("jsonwebtoken refused the signature: {error}"),
                ),
            }),
        }
    }
}

/// A well-formed token whose header passed.
struct Parsed<'a> {
    /// The whole token, for jsonwebtoken.
    text: &'a str,
    kid: &'a str,
    algorithm: Algorithm,
    signature: &'a [u8],
    payload: &'a Map<String, Value>,
}

/// The trusted issuer that `iss` names. Only this claim is read before the signature.
fn issuer<'a>(
    payload: &Map<String, Value>,
    issuers: &'a [IssuerTrust],
) -> Result<&'a IssuerTrust, Fault> {
    let iss = match payload.get("iss") {
        Some(Value::String(iss)) => iss,
        Some(other) => {
            return Err(Fault::new(
                Reason::WrongIssuer,
                format!(
                    "iss must be a single string, found {}",
                    quoted(&other.to_string())
                ),
            ));
        }
        None => return Err(Fault::new(Reason::MissingClaim, "claim iss is required")),
    };

    issuers
        .iter()
        .find(|trust| trust.issuer == *iss)
        .ok_or_else(|| {
            Fault::new(
                Reason::UnknownIssuer,
                format!("iss {} is not a trusted issuer", quoted(iss)),
            )
        })
}

/// Refuses a signature that is not the one canonical encoding for its key: the exact length,
/// and for ECDSA an `r` and `s` that are not zero (the "psychic signature" of CVE-2022-21449).
fn signature_shape(kind: KeyKind, signature: &[u8]) -> Result<(), Fault> {
    let expected = kind.signature_len();
    if signature.len() != expected {
        return Err(Fault::new(
            Reason::BadSignature,
            format!(
                "signature is {} bytes; a {kind} key signs exactly {expected}",
                signature.len()
            ),
        ));
    }
    if let KeyKind::Ec(_) = kind {
        let (r, s) = signature.split_at(expected / 2);
        if r.iter().all(|&b| b == 0) || s.iter().all(|&b| b == 0) {
            return Err(Fault::new(
                Reason::BadSignature,
                "ECDSA signature has r or s equal to zero",
            ));
        }
    }
    Ok(())
}

fn form(error: FormError) -> Rejection {
    match error {
        FormError::Malformed(detail) => Rejection::new(Reason::Malformed, detail),
        FormError::Duplicate(detail) => Rejection::new(Reason::DuplicateClaim, detail),
    }
}
