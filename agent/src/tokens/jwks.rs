//! An issuer's JSON Web Key Set, read into the keys that may verify its tokens.
//!
//! Every key is checked on the way in, so that validation only ever meets keys fit for it:
//! public signature keys of a supported type and size, each with the algorithms that both the
//! key and the issuer's allow-list accept. A key that fails is left out and reported, and a
//! token that names it is refused as `refused_key` rather than `unknown_key`, which would
//! ask for a pointless refetch.

use std::collections::HashMap;

use aws_lc_rs::signature::{
    ECDSA_P256_SHA256_FIXED, ECDSA_P384_SHA384_FIXED, ED25519, ParsedPublicKey,
    RSA_PKCS1_2048_8192_SHA256, RsaPublicKeyComponents,
};
use jsonwebtoken::DecodingKey;
use serde_json::{Map, Value};

use super::compact::{self, FormError};
use super::keys::{Curve, KeyFlaw, KeyKind};
use crate::policy::Algorithm;

/// The largest key set document read; real ones are a few kilobytes.
pub const MAX_JWKS_BYTES: usize = 512 * 1024;

/// The most keys one issuer may publish.
pub const MAX_KEYS: usize = 100;

/// The smallest RSA modulus accepted, in bits.
pub const MIN_RSA_BITS: usize = 2048;

/// The largest RSA modulus accepted, in bits: past it a signature check costs enough to be
/// a denial of service, and aws-lc refuses it anyway.
pub const MAX_RSA_BITS: usize = 8192;

/// The keys of one issuer, by `kid`.
#[derive(Debug, Clone, Default)]
pub struct KeySet {
    keys: HashMap<String, Key>,
    /// Key ids that the issuer published but that were refused, with why.
    refused: HashMap<String, KeyFlaw>,
}

/// One verification key.
#[derive(Debug, Clone)]
pub(crate) struct Key {
    pub kind: KeyKind,
    /// What this key verifies: its type's algorithms, narrowed by its own `alg` and by the
    /// issuer's allow-list. Never empty, never symmetric.
    pub algorithms: Vec<Algorithm>,
    pub decoding: DecodingKey,
}

/// A key left out of a [`KeySet`], and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyProblem {
    /// The key's position in the document's `keys` array.
    pub index: usize,
    pub kid: Option<String>,
    pub flaw: KeyFlaw,
}

/// A key set document that cannot be used at all; the last good keys should stay.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JwksError {
    #[error("key set is {len} bytes, more than the {MAX_JWKS_BYTES} accepted")]
    TooLarge { len: usize },
    #[error("key set is malformed: {0}")]
    Malformed(String),
    #[error("key set has no \"keys\" array")]
    NoKeys,
    #[error("key set has {count} keys, more than the {MAX_KEYS} accepted")]
    TooManyKeys { count: usize },
}

impl KeySet {
    /// Reads a JWKS document. `allowed` is the issuer's algorithm allow-list. Keys that cannot
    /// be used are reported and left out; the document itself is refused only when it is not
    /// a key set.
    pub fn parse(
        json: &[u8],
        allowed: &[Algorithm],
    ) -> Result<(KeySet, Vec<KeyProblem>), JwksError> {
        if json.len() > MAX_JWKS_BYTES {
            return Err(JwksError::TooLarge { len: json.len() });
        }
        let document = compact::json_object("key set", json).map_err(|error| match error {
            FormError::Malformed(message) | FormError::Duplicate(message) => {
                JwksError::Malformed(message)
            }
        })?;
        let Some(Value::Array(entries)) = document.get("keys") else {
            return Err(JwksError::NoKeys);
        };
        if entries.len() > MAX_KEYS {
            return Err(JwksError::TooManyKeys {
                count: entries.len(),
            });
        }

        let mut set = KeySet::default();
        let mut problems = Vec::new();
        let mut seen: HashMap<String, usize> = HashMap::new();
        for (index, entry) in entries.iter().enumerate() {
            let Value::Object(fields) = entry else {
                problems.push(KeyProblem {
                    index,
                    kid: None,
                    flaw: KeyFlaw::NotAnObject,
                });
                continue;
            };
            let kid = match key_id(fields) {
                Ok(kid) => kid,
                Err(flaw) => {
                    problems.push(KeyProblem {
                        index,
                        kid: None,
                        flaw,
                    });
                    continue;
                }
            };
            *seen.entry(kid.clone()).or_default() += 1;

            match key(fields, allowed) {
                Ok(key) => {
                    set.keys.insert(kid, key);
                }
                Err(flaw) => {
                    set.refused.insert(kid.clone(), flaw.clone());
                    problems.push(KeyProblem {
                        index,
                        kid: Some(kid),
                        flaw,
                    });
                }
            }
        }

        // Two keys under one kid leave the choice to whoever wrote the token: use neither.
        for (kid, count) in seen.into_iter().filter(|(_, count)| *count > 1) {
            set.keys.remove(&kid);
            set.refused
                .insert(kid.clone(), KeyFlaw::DuplicateKid { count });
            problems.push(KeyProblem {
                index: entries.len(),
                kid: Some(kid),
                flaw: KeyFlaw::DuplicateKid { count },
            });
        }
        Ok((set, problems))
    }

    /// How many usable keys the set holds.
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// The ids of the usable keys, in no particular order.
    pub fn kids(&self) -> impl Iterator<Item = &str> {
        self.keys.keys().map(String::as_str)
    }

    /// Why the issuer's key with this id was refused, if it was.
    pub fn refusal(&self, kid: &str) -> Option<&KeyFlaw> {
        self.refused.get(kid)
    }

    pub(crate) fn key(&self, kid: &str) -> Option<&Key> {
        self.keys.get(kid)
    }
}

/// Checks a `kid`, from a key set or a token header: a short printable name, never a path.
pub(crate) fn check_kid(kid: &str) -> Result<(), String> {
    const MAX_KID_BYTES: usize = 256;

    if kid.is_empty() {
        return Err("kid is empty".to_owned());
    }
    if kid.len() > MAX_KID_BYTES {
        return Err(format!(
            "kid is {} bytes, more than the {MAX_KID_BYTES} accepted",
            kid.len()
        ));
    }
    let allowed = |c: char| c.is_ascii_alphanumeric() || "-_.~+/=:@".contains(c);
    if !kid.chars().all(allowed) || kid.contains("..") {
        return Err(format!(
            "kid {} has characters outside letters, digits and -_.~+/=:@, or looks like a path",
            super::reject::quoted(kid)
        ));
    }
    Ok(())
}

fn key_id(fields: &Map<String, Value>) -> Result<String, KeyFlaw> {
    match fields.get("kid") {
        None => Err(KeyFlaw::MissingKid),
        Some(Value::String(kid)) => check_kid(kid)
            .map(|()| kid.clone())
            .map_err(KeyFlaw::BadKid),
        Some(_) => Err(KeyFlaw::BadKid("kid is not a string".to_owned())),
    }
}

/// Builds the verification key of one JWK, or says why it is not fit.
fn key(fields: &Map<String, Value>, allowed: &[Algorithm]) -> Result<Key, KeyFlaw> {
    if let Some(usage) = fields.get("use")
        && usage.as_str() != Some("sig")
    {
        return Err(KeyFlaw::NotForSigning(format!(
            "use is {usage}, not \"sig\""
        )));
    }
    if let Some(operations) = fields.get("key_ops") {
        let verifies = operations
            .as_array()
            .is_some_and(|list| list.iter().any(|op| op.as_str() == Some("verify")));
        if !verifies {
            return Err(KeyFlaw::NotForSigning(format!(
                "key_ops is {operations}, without \"verify\""
            )));
        }
    }

    let (kind, decoding) = match text(fields, "kty")? {
        "RSA" => rsa(fields)?,
        "EC" => ec(fields)?,
        "OKP" => okp(fields)?,
        "oct" => return Err(KeyFlaw::Symmetric),
        other => return Err(KeyFlaw::UnsupportedKeyType(other.to_owned())),
    };
    let algorithms = algorithms(fields, kind, allowed)?;
    Ok(Key {
        kind,
        algorithms,
        decoding,
    })
}

fn rsa(fields: &Map<String, Value>) -> Result<(KeyKind, DecodingKey), KeyFlaw> {
    let n = component(fields, "n")?;
    let e = component(fields, "e")?;
    let n = strip_leading_zeros(&n);
    let e = strip_leading_zeros(&e);

    let bits = n.first().map_or(0, |top| {
        n.len() * 8 - usize::try_from(top.leading_zeros()).unwrap_or(0)
    });
    if bits < MIN_RSA_BITS {
        return Err(KeyFlaw::WeakRsa { bits });
    }
    if bits > MAX_RSA_BITS {
        return Err(KeyFlaw::OversizedRsa { bits });
    }
    if e != [0x01, 0x00, 0x01] {
        return Err(KeyFlaw::RsaExponent);
    }
    RsaPublicKeyComponents { n, e }
        .to_parsed_public_key(&RSA_PKCS1_2048_8192_SHA256)
        .map_err(|error| KeyFlaw::InvalidKey(error.to_string()))?;

    let kind = KeyKind::Rsa { bits };
    Ok((kind, DecodingKey::from_rsa_raw_components(n, e)))
}

fn ec(fields: &Map<String, Value>) -> Result<(KeyKind, DecodingKey), KeyFlaw> {
    let (curve, verification): (_, &'static ParsedAlgorithm) = match text(fields, "crv")? {
        "P-256" => (Curve::P256, &ECDSA_P256_SHA256_FIXED),
        "P-384" => (Curve::P384, &ECDSA_P384_SHA384_FIXED),
        other => return Err(KeyFlaw::UnsupportedCurve(other.to_owned())),
    };
    let (x, y) = (component(fields, "x")?, component(fields, "y")?);
    let size = curve.coordinate_bytes();
    if x.len() != size || y.len() != size {
        return Err(KeyFlaw::InvalidKey(format!(
            "{} coordinates must be {size} bytes, found x {} and y {}",
            curve.as_str(),
            x.len(),
            y.len()
        )));
    }

    // An uncompressed point; aws-lc checks that it lies on the curve.
    let mut point = Vec::with_capacity(1 + 2 * size);
    point.push(0x04);
    point.extend_from_slice(&x);
    point.extend_from_slice(&y);
    ParsedPublicKey::new(verification, &point)
        .map_err(|error| KeyFlaw::InvalidKey(error.to_string()))?;

    let decoding = DecodingKey::from_ec_components(text(fields, "x")?, text(fields, "y")?)
        .map_err(|error| KeyFlaw::InvalidKey(error.to_string()))?;
    Ok((KeyKind::Ec(curve), decoding))
}

fn okp(fields: &Map<String, Value>) -> Result<(KeyKind, DecodingKey), KeyFlaw> {
    let curve = text(fields, "crv")?;
    if curve != "Ed25519" {
        return Err(KeyFlaw::UnsupportedCurve(curve.to_owned()));
    }
    let x = component(fields, "x")?;
    ParsedPublicKey::new(&ED25519, &x).map_err(|error| KeyFlaw::InvalidKey(error.to_string()))?;

    let decoding = DecodingKey::from_ed_components(text(fields, "x")?)
        .map_err(|error| KeyFlaw::InvalidKey(error.to_string()))?;
    Ok((KeyKind::Ed25519, decoding))
}

type ParsedAlgorithm = aws_lc_rs::signature::EcdsaVerificationAlgorithm;

/// The algorithms a key verifies: those of its type, its own `alg` if it names one, and the
/// issuer's allow-list, all at once.
fn algorithms(
    fields: &Map<String, Value>,
    kind: KeyKind,
    allowed: &[Algorithm],
) -> Result<Vec<Algorithm>, KeyFlaw> {
    let fitting = kind.algorithms();
    let Some(named) = fields.get("alg") else {
        let algorithms: Vec<Algorithm> = fitting
            .iter()
            .copied()
            .filter(|algorithm| allowed.contains(algorithm))
            .collect();
        if algorithms.is_empty() {
            return Err(KeyFlaw::NoAllowedAlgorithm { kind });
        }
        return Ok(algorithms);
    };

    let name = named
        .as_str()
        .ok_or_else(|| KeyFlaw::BadMember("alg is not a string".to_owned()))?;
    let algorithm =
        Algorithm::from_name(name).ok_or_else(|| KeyFlaw::UnknownAlgorithm(name.to_owned()))?;
    if !fitting.contains(&algorithm) {
        return Err(KeyFlaw::AlgorithmMismatch { algorithm, kind });
    }
    if !allowed.contains(&algorithm) {
        return Err(KeyFlaw::AlgorithmForbidden(algorithm));
    }
    Ok(vec![algorithm])
}

fn text<'a>(fields: &'a Map<String, Value>, name: &str) -> Result<&'a str, KeyFlaw> {
    match fields.get(name) {
        Some(Value::String(value)) => Ok(value),
        Some(_) => Err(KeyFlaw::BadMember(format!("{name} is not a string"))),
        None => Err(KeyFlaw::BadMember(format!("{name} is missing"))),
    }
}

fn component(fields: &Map<String, Value>, name: &str) -> Result<Vec<u8>, KeyFlaw> {
    let encoded = text(fields, name)?;
    compact::base64url(name, encoded)
        .map_err(|_| KeyFlaw::BadMember(format!("{name} is not canonical unpadded base64url")))
}

fn strip_leading_zeros(bytes: &[u8]) -> &[u8] {
    let start = bytes.iter().position(|&b| b != 0).unwrap_or(bytes.len());
    &bytes[start..]
}
