//! A rough measure of validations per second against the raw signature checks of aws-lc, run
//! by hand: `cargo test --release -p portguard --lib tokens::tests::throughput -- --ignored
//! --nocapture`. The benchmark proper belongs to `cargo xtask bench`; this keeps the ratio
//! in sight while the validator changes.

use std::time::{Instant, SystemTime};

use aws_lc_rs::signature::{
    ECDSA_P256_SHA256_FIXED, ED25519, RSA_PKCS1_2048_8192_SHA256, RsaPublicKeyComponents,
    VerificationAlgorithm,
};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::{Value, json};

use super::{Signer, claims, encoded, issuers, keys, validator};

const ROUNDS: u32 = 2000;

/// A JWK member's bytes; empty when the key type has no such member.
fn component(jwk: &Value, name: &str) -> Vec<u8> {
    let text = jwk[name].as_str().unwrap_or_default();
    URL_SAFE_NO_PAD.decode(text).expect("base64url component")
}

/// Checks per second of `check`, after a warm-up.
fn rate(mut check: impl FnMut() -> bool) -> f64 {
    for _ in 0..ROUNDS / 10 {
        assert!(check());
    }
    let start = Instant::now();
    for _ in 0..ROUNDS {
        assert!(check());
    }
    f64::from(ROUNDS) / start.elapsed().as_secs_f64()
}

/// The raw check of a token's signature with aws-lc, as jsonwebtoken makes it, with the key
/// decoded beforehand.
fn raw_check(signer: &Signer, token: &str) -> impl FnMut() -> bool {
    let (message, signature) = token.rsplit_once('.').expect("three segments");
    let message = message.as_bytes().to_vec();
    let signature = URL_SAFE_NO_PAD
        .decode(signature)
        .expect("canonical signature");
    let jwk = &signer.jwk;
    let (n, e) = (component(jwk, "n"), component(jwk, "e"));
    let point = [&[0x04][..], &component(jwk, "x"), &component(jwk, "y")].concat();
    let x = component(jwk, "x");
    let alg = signer.alg;

    move || match alg {
        jsonwebtoken::Algorithm::RS256 => RsaPublicKeyComponents { n: &n, e: &e }
            .verify(&RSA_PKCS1_2048_8192_SHA256, &message, &signature)
            .is_ok(),
        jsonwebtoken::Algorithm::ES256 => ECDSA_P256_SHA256_FIXED
            .verify_sig(&point, &message, &signature)
            .is_ok(),
        _ => ED25519.verify_sig(&x, &message, &signature).is_ok(),
    }
}

#[test]
#[ignore = "a measurement, run by hand in release mode"]
fn validations_per_second_against_raw_signature_checks() {
    let keys = keys();
    let (validator, issuers) = (validator(), issuers());

    for signer in [&keys.rsa, &keys.ec, &keys.ed] {
        let token = encoded(signer, &claims(json!({})));
        let validations = rate(|| {
            validator
                .validate(&token, &issuers, SystemTime::now())
                .is_ok()
        });
        let raw = rate(raw_check(signer, &token));
        println!(
            "{:?}: {validations:.0} validations/s, {raw:.0} raw checks/s, ratio {:.2}",
            signer.alg,
            validations / raw
        );
    }

    let unknown_kid = super::crafted(&keys.ec, json!({"kid": "ec-9"}), &claims(json!({})));
    let parsed = rate(|| {
        validator
            .validate(&unknown_kid, &issuers, SystemTime::now())
            .is_err()
    });
    println!("well formed, unknown kid: {parsed:.0} refusals/s");

    let junk = "eyJhbGciOiJub25lIn0.e30.";
    let refusals = rate(|| {
        validator
            .validate(junk, &issuers, SystemTime::now())
            .is_err()
    });
    println!("junk: {refusals:.0} refusals/s");
}
