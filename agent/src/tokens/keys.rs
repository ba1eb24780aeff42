//! Kinds of verification keys, the algorithms each may verify, and what makes a published key
//! unfit.

use std::fmt;

use crate::policy::Algorithm;

/// The type of a public key, which decides the algorithms it may verify.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyKind {
    Rsa { bits: usize },
    Ec(Curve),
    Ed25519,
}

/// An elliptic curve for ECDSA.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Curve {
    P256,
    P384,
}

/// Why a published key was left out of a key set.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyFlaw {
    #[error("entry is not a JSON object")]
    NotAnObject,
    #[error("key has no kid, so no token can name it")]
    MissingKid,
    #[error("{0}")]
    BadKid(String),
    #[error("kid is published {count} times; a token could pick either key")]
    DuplicateKid { count: usize },
    #[error("{0}")]
    BadMember(String),
    #[error("key is symmetric (kty \"oct\"): tokens are verified with public keys only")]
    Symmetric,
    #[error("key type {0:?} is not supported; expected RSA, EC or OKP")]
    UnsupportedKeyType(String),
    #[error("curve {0:?} is not supported; expected P-256, P-384 or Ed25519")]
    UnsupportedCurve(String),
    #[error("RSA modulus is {bits} bits, less than the 2048 required")]
    WeakRsa { bits: usize },
    #[error("RSA modulus is {bits} bits, more than the 8192 accepted")]
    OversizedRsa { bits: usize },
    #[error("RSA exponent is not 65537")]
    RsaExponent,
    #[error("key is invalid: {0}")]
    InvalidKey(String),
    #[error("key is not for verifying signatures: {0}")]
    NotForSigning(String),
    #[error("key names algorithm {0:?}, which is not a supported signature algorithm")]
    UnknownAlgorithm(String),
    #[error("key names algorithm {}, which a {kind} key cannot verify", algorithm.as_str())]
    AlgorithmMismatch { algorithm: Algorithm, kind: KeyKind },
    #[error("key names algorithm {}, which the issuer's allow-list forbids", .0.as_str())]
    AlgorithmForbidden(Algorithm),
    #[error("none of the issuer's allowed algorithms fits a {kind} key")]
    NoAllowedAlgorithm { kind: KeyKind },
}

impl KeyKind {
    /// Every algorithm that a key of this kind can verify.
    pub fn algorithms(&self) -> &'static [Algorithm] {
        match self {
            Self::Rsa { .. } => &[
                Algorithm::Rs256,
                Algorithm::Rs384,
                Algorithm::Rs512,
                Algorithm::Ps256,
                Algorithm::Ps384,
                Algorithm::Ps512,
            ],
            Self::Ec(Curve::P256) => &[Algorithm::Es256],
            Self::Ec(Curve::P384) => &[Algorithm::Es384],
            Self::Ed25519 => &[Algorithm::EdDsa],
        }
    }

    /// The length of every signature this key makes: ECDSA as raw `r || s`, RSA as long as
    /// the modulus. Any other length is not a canonical signature.
    pub fn signature_len(&self) -> usize {
        match self {
            Self::Rsa { bits } => bits.div_ceil(8),
            Self::Ec(curve) => 2 * curve.coordinate_bytes(),
            Self::Ed25519 => 64,
        }
    }
}

impl fmt::Display for KeyKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Rsa { bits } => write!(f, "RSA-{bits}"),
            Self::Ec(curve) => f.write_str(curve.as_str()),
            Self::Ed25519 => f.write_str("Ed25519"),
        }
    }
}

impl Curve {
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::P256 => "P-256",
            Self::P384 => "P-384",
        }
    }

    /// The size of one coordinate, and of each of a signature's `r` and `s`.
    pub fn coordinate_bytes(&self) -> usize {
        match self {
            Self::P256 => 32,
            Self::P384 => 48,
        }
    }
}

/// jsonwebtoken's name for an algorithm of the policy.
pub(crate) fn jwt_algorithm(algorithm: Algorithm) -> jsonwebtoken::Algorithm {
    use jsonwebtoken::Algorithm as Jwt;

    match algorithm {
        Algorithm::Rs256 => Jwt::RS256,
        Algorithm::Rs384 => Jwt::RS384,
        Algorithm::Rs512 => Jwt::RS512,
        Algorithm::Ps256 => Jwt::PS256,
        Algorithm::Ps384 => Jwt::PS384,
        Algorithm::Ps512 => Jwt::PS512,
        Algorithm::Es256 => Jwt::ES256,
        Algorithm::Es384 => Jwt::ES384,
        Algorithm::EdDsa => Jwt::EdDSA,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_policy_algorithm_has_a_key_kind() {
        let kinds = [
            KeyKind::Rsa { bits: 2048 },
            KeyKind::Ec(Curve::P256),
            KeyKind::Ec(Curve::P384),
            KeyKind::Ed25519,
        ];
        for algorithm in Algorithm::ALL {
            let fitting = kinds
                .iter()
                .filter(|kind| kind.algorithms().contains(&algorithm))
                .count();
            assert_eq!(fitting, 1, "{}", algorithm.as_str());
            assert_eq!(
                format!("{:?}", jwt_algorithm(algorithm)),
                algorithm.as_str()
            );
        }
    }

    #[test]
    fn signature_lengths_are_fixed_by_the_key() {
        assert_eq!(KeyKind::Ec(Curve::P256).signature_len(), 64);
        assert_eq!(KeyKind::Ec(Curve::P384).signature_len(), 96);
        assert_eq!(KeyKind::Rsa { bits: 2048 }.signature_len(), 256);
        assert_eq!(KeyKind::Ed25519.signature_len(), 64);
    }
}
