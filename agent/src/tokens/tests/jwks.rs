//! Key sets: which published keys are used, which are refused and why, and what a token
//! naming a refused key is told.

use serde_json::{Value, json};

use super::{b64, claims, crafted, encoded, issuers_with, jwks, keys, refused_by};
use crate::policy::Algorithm;
use crate::tokens::{Curve, JwksError, KeyFlaw, KeyKind, KeySet, MAX_JWKS_BYTES, MAX_KEYS, Reason};

/// The one flaw reported for a key set of this single key, under the default allow-list.
fn flaw(jwk: Value) -> KeyFlaw {
    let (set, problems) = KeySet::parse(&jwks(&[&jwk]), &Algorithm::DEFAULT).expect("a key set");
    assert_eq!(set.len(), 0, "the key is left out");
    assert_eq!(problems.len(), 1, "{problems:?}");
    problems[0].flaw.clone()
}

/// The test RSA key with some members changed.
fn rsa_with(changes: Value) -> Value {
    let mut jwk = keys().rsa.jwk.clone();
    for (name, value) in changes.as_object().into_iter().flatten() {
        jwk[name] = value.clone();
    }
    jwk
}

#[test]
fn good_keys_are_all_kept() {
    let keys = keys();
    let document = jwks(&[&keys.rsa.jwk, &keys.ec.jwk, &keys.ed.jwk]);
    let (set, problems) = KeySet::parse(&document, &Algorithm::DEFAULT).expect("a key set");

    assert!(problems.is_empty(), "{problems:?}");
    assert_eq!(set.len(), 3);
    let mut kids: Vec<&str> = set.kids().collect();
    kids.sort_unstable();
    assert_eq!(kids, ["ec-1", "ed-1", "rsa-1"]);
}

#[test]
fn weak_rsa_key_is_refused() {
    // A 1024-bit modulus: its size alone refuses it.
    let mut modulus = vec![0xc5; 128];
    modulus[127] = 0x01;
    let weak = rsa_with(json!({ "n": b64(&modulus) }));
    assert_eq!(flaw(weak), KeyFlaw::WeakRsa { bits: 1024 });
}

#[test]
fn rsa_exponent_other_than_65537_is_refused() {
    assert_eq!(
        flaw(rsa_with(json!({"e": b64(&[3])}))),
        KeyFlaw::RsaExponent
    );
    assert_eq!(
        flaw(rsa_with(json!({"e": b64(&[1])}))),
        KeyFlaw::RsaExponent
    );
}

#[test]
fn encryption_key_is_refused() {
    assert!(matches!(
        flaw(rsa_with(json!({"use": "enc"}))),
        KeyFlaw::NotForSigning(_)
    ));
}

#[test]
fn key_ops_without_verify_are_refused() {
    for ops in [
        json!(["encrypt", "wrapKey"]),
        json!(["sign"]),
        json!([]),
        json!("verify"),
    ] {
        let jwk = rsa_with(json!({ "key_ops": ops }));
        assert!(matches!(flaw(jwk), KeyFlaw::NotForSigning(_)), "{ops}");
    }
    let verifying = rsa_with(json!({"key_ops": ["verify"]}));
    let (set, _) = KeySet::parse(&jwks(&[&verifying]), &Algorithm::DEFAULT).expect("a key set");
    assert_eq!(set.len(), 1);
}

#[test]
fn key_alg_forbidden_by_the_issuer_is_refused() {
    let jwk = rsa_with(json!({"alg": "PS256"}));
    assert_eq!(flaw(jwk), KeyFlaw::AlgorithmForbidden(Algorithm::Ps256));
}

#[test]
fn key_alg_of_another_family_is_refused() {
    let jwk = rsa_with(json!({"alg": "ES256"}));
    assert!(matches!(
        flaw(jwk),
        KeyFlaw::AlgorithmMismatch {
            algorithm: Algorithm::Es256,
            ..
        }
    ));
    for alg in ["HS256", "RSA-OAEP", "none"] {
        let jwk = rsa_with(json!({ "alg": alg }));
        assert!(matches!(flaw(jwk), KeyFlaw::UnknownAlgorithm(_)), "{alg}");
    }
}

#[test]
fn key_whose_type_the_allow_list_excludes_is_refused() {
    let document = jwks(&[&keys().rsa.jwk]);
    let (set, problems) = KeySet::parse(&document, &[Algorithm::Es256]).expect("a key set");
    assert_eq!(set.len(), 0);
    assert_eq!(
        problems[0].flaw,
        KeyFlaw::NoAllowedAlgorithm {
            kind: KeyKind::Rsa { bits: 2048 }
        }
    );
}

#[test]
fn key_alg_narrows_what_the_key_verifies() {
    let keys = keys();
    let allowed = [Algorithm::Rs256, Algorithm::Ps256];
    let pinned = rsa_with(json!({"alg": "RS256"}));
    let issuers = issuers_with(&[&pinned], &allowed);

    let pss = crafted(&keys.rsa, json!({"alg": "PS256"}), &claims(json!({})));
    assert_eq!(refused_by(&pss, &issuers), Reason::AlgorithmNotAllowed);
    let pkcs1 = encoded(&keys.rsa, &claims(json!({})));
    let validator = super::validator();
    assert!(
        validator
            .validate(&pkcs1, &issuers, std::time::SystemTime::now())
            .is_ok()
    );
}

#[test]
fn duplicate_kids_refuse_both_keys() {
    let keys = keys();
    let mut second = keys.ec.jwk.clone();
    second["kid"] = json!("rsa-1");
    let (set, problems) =
        KeySet::parse(&jwks(&[&keys.rsa.jwk, &second]), &Algorithm::DEFAULT).expect("a key set");

    assert_eq!(set.len(), 0);
    assert_eq!(problems[0].flaw, KeyFlaw::DuplicateKid { count: 2 });
    let issuers = issuers_with(&[&keys.rsa.jwk, &second], &Algorithm::DEFAULT);
    let token = encoded(&keys.rsa, &claims(json!({})));
    assert_eq!(refused_by(&token, &issuers), Reason::RefusedKey);
}

#[test]
fn token_naming_a_refused_key_says_so() {
    let keys = keys();
    let weak = rsa_with(json!({"e": b64(&[3])}));
    let issuers = issuers_with(&[&weak], &Algorithm::DEFAULT);
    let token = encoded(&keys.rsa, &claims(json!({})));
    assert_eq!(refused_by(&token, &issuers), Reason::RefusedKey);
}

#[test]
fn symmetric_key_is_refused() {
    let oct = json!({"kty": "oct", "kid": "hmac", "k": b64(b"secret-secret-secret")});
    assert_eq!(flaw(oct), KeyFlaw::Symmetric);
}

#[test]
fn unsupported_curves_are_refused() {
    let coordinate = b64(&[1; 66]);
    let p521 =
        json!({"kty": "EC", "kid": "p521", "crv": "P-521", "x": coordinate, "y": coordinate});
    let secp256k1 = json!({"kty": "EC", "kid": "k1", "crv": "secp256k1", "x": "AA", "y": "AA"});
    let x25519 = json!({"kty": "OKP", "kid": "x", "crv": "X25519", "x": b64(&[9; 32])});
    let ed448 = json!({"kty": "OKP", "kid": "e", "crv": "Ed448", "x": b64(&[9; 57])});
    for jwk in [p521, secp256k1, x25519, ed448] {
        assert!(
            matches!(flaw(jwk.clone()), KeyFlaw::UnsupportedCurve(_)),
            "{jwk}"
        );
    }
}

#[test]
fn point_off_the_curve_is_refused() {
    let mut jwk = keys().ec.jwk.clone();
    jwk["y"] = json!(b64(&[0x11; 32]));
    assert!(matches!(flaw(jwk), KeyFlaw::InvalidKey(_)));
    let short =
        json!({"kty": "EC", "kid": "s", "crv": "P-256", "x": b64(&[1; 31]), "y": b64(&[1; 32])});
    assert!(matches!(flaw(short), KeyFlaw::InvalidKey(_)));
    let curve = Curve::P256;
    assert_eq!(curve.coordinate_bytes(), 32);
}

#[test]
fn keys_without_a_usable_kid_are_refused() {
    let mut anonymous = keys().ec.jwk.clone();
    anonymous.as_object_mut().map(|jwk| jwk.remove("kid"));
    assert_eq!(flaw(anonymous), KeyFlaw::MissingKid);
    assert!(matches!(
        flaw(rsa_with(json!({"kid": "../keys"}))),
        KeyFlaw::BadKid(_)
    ));
    assert!(matches!(
        flaw(rsa_with(json!({"kid": 1}))),
        KeyFlaw::BadKid(_)
    ));
}

#[test]
fn unknown_key_type_and_missing_components_are_refused() {
    assert!(matches!(
        flaw(rsa_with(json!({"kty": "DSA"}))),
        KeyFlaw::UnsupportedKeyType(_)
    ));
    let mut no_modulus = keys().rsa.jwk.clone();
    no_modulus.as_object_mut().map(|jwk| jwk.remove("n"));
    assert!(matches!(flaw(no_modulus), KeyFlaw::BadMember(_)));
    assert!(matches!(
        flaw(rsa_with(json!({"n": "AQAB="}))),
        KeyFlaw::BadMember(_)
    ));
}

#[test]
fn documents_that_are_not_key_sets_are_refused() {
    let allowed = Algorithm::DEFAULT;
    assert!(matches!(
        KeySet::parse(b"<html>", &allowed),
        Err(JwksError::Malformed(_))
    ));
    assert!(matches!(
        KeySet::parse(b"{}", &allowed),
        Err(JwksError::NoKeys)
    ));
    assert!(matches!(
        KeySet::parse(br#"{"keys":{}}"#, &allowed),
        Err(JwksError::NoKeys)
    ));
    let repeated = br#"{"keys":[],"keys":[]}"#;
    assert!(matches!(
        KeySet::parse(repeated, &allowed),
        Err(JwksError::Malformed(_))
    ));

    let many: Vec<Value> = (0..=MAX_KEYS).map(|_| json!({})).collect();
    let document = serde_json::to_vec(&json!({ "keys": many })).expect("serialize");
    assert!(matches!(
        KeySet::parse(&document, &allowed),
        Err(JwksError::TooManyKeys { .. })
    ));

    let huge = vec![b' '; MAX_JWKS_BYTES + 1];
    assert!(matches!(
        KeySet::parse(&huge, &allowed),
        Err(JwksError::TooLarge { .. })
    ));
}

#[test]
fn one_bad_key_leaves_the_others_usable() {
    let keys = keys();
    let oct = json!({"kty": "oct", "kid": "hmac", "k": "c2VjcmV0"});
    let document = jwks(&[&oct, &keys.ec.jwk]);
    let (set, problems) = KeySet::parse(&document, &Algorithm::DEFAULT).expect("a key set");
    assert_eq!(set.kids().collect::<Vec<_>>(), ["ec-1"]);
    assert_eq!(
        (problems[0].index, problems[0].kid.as_deref()),
        (0, Some("hmac"))
    );
}
