//! Tokens refused for their form or their signature: junk, oversize, bad encodings, forged and
//! non-canonical signatures.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::json;

use super::{b64, claims, encoded, keys, refused};
use crate::tokens::{MAX_TOKEN_BYTES, Reason};

/// Replaces a token's signature segment.
fn with_signature(token: &str, signature: &str) -> String {
    let (message, _) = token.rsplit_once('.').expect("three segments");
    format!("{message}.{signature}")
}

fn signature_bytes(token: &str) -> Vec<u8> {
    let (_, signature) = token.rsplit_once('.').expect("three segments");
    URL_SAFE_NO_PAD
        .decode(signature)
        .expect("canonical signature")
}

#[test]
fn flipped_signature_bit_is_refused() {
    let keys = keys();
    for signer in [&keys.rsa, &keys.ec, &keys.ed] {
        let token = encoded(signer, &claims(json!({})));
        let mut signature = signature_bytes(&token);
        signature[10] ^= 0x01;
        let forged = with_signature(&token, &b64(&signature));
        assert_eq!(refused(&forged), Reason::BadSignature, "{:?}", signer.alg);
    }
}

#[test]
fn signature_over_other_claims_is_refused() {
    let keys = keys();
    let honest = encoded(&keys.ec, &claims(json!({"scope": "web"})));
    let wanted = encoded(&keys.ec, &claims(json!({"scope": "db:connect ssh root"})));
    let (_, honest_signature) = honest.rsplit_once('.').expect("three segments");
    let spliced = with_signature(&wanted, honest_signature);
    assert_eq!(refused(&spliced), Reason::BadSignature);
}

#[test]
fn all_zero_ecdsa_signature_is_refused() {
    let token = encoded(&keys().ec, &claims(json!({})));
    let zero = with_signature(&token, &b64(&[0; 64]));
    assert_eq!(refused(&zero), Reason::BadSignature);

    let mut half_zero = signature_bytes(&token);
    half_zero[32..].fill(0);
    assert_eq!(
        refused(&with_signature(&token, &b64(&half_zero))),
        Reason::BadSignature
    );
}

#[test]
fn der_encoded_ecdsa_signature_is_refused() {
    // ES256 signatures are raw r || s (64 bytes); DER is the wrong encoding for JWS.
    let token = encoded(&keys().ec, &claims(json!({})));
    let raw = signature_bytes(&token);
    let mut der = vec![0x30, 0x44, 0x02, 0x20];
    der.extend_from_slice(&raw[..32]);
    der.extend_from_slice(&[0x02, 0x20]);
    der.extend_from_slice(&raw[32..]);
    assert_eq!(
        refused(&with_signature(&token, &b64(&der))),
        Reason::BadSignature
    );
}

#[test]
fn rsa_signature_of_the_wrong_length_is_refused() {
    let token = encoded(&keys().rsa, &claims(json!({})));
    let mut padded = vec![0];
    padded.extend(signature_bytes(&token));
    assert_eq!(
        refused(&with_signature(&token, &b64(&padded))),
        Reason::BadSignature
    );
}

#[test]
fn signature_with_trailing_bits_is_refused() {
    // 64 bytes end on a 4-bit remainder; a last character with those bits set decodes to the
    // same bytes in a lax decoder, so the token would have two spellings.
    let token = encoded(&keys().ed, &claims(json!({})));
    let (message, signature) = token.rsplit_once('.').expect("three segments");
    let last = signature.chars().last().expect("non-empty");
    let alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let index = alphabet.find(last).expect("base64url character");
    let lax = alphabet.chars().nth(index | 0b11).expect("in alphabet");
    assert_ne!(lax, last, "the honest signature has no trailing bits");

    let changed = format!("{message}.{}{lax}", &signature[..signature.len() - 1]);
    assert_eq!(refused(&changed), Reason::Malformed);
}

#[test]
fn payload_with_trailing_bits_is_refused() {
    let token = encoded(&keys().rsa, &claims(json!({})));
    let mut parts: Vec<String> = token.split('.').map(str::to_owned).collect();
    let payload = URL_SAFE_NO_PAD
        .decode(&parts[1])
        .expect("canonical payload");
    // Pad the JSON so its length leaves a remainder, then set the stray bits.
    let json = [payload.as_slice(), b" "].concat();
    let json = if json.len() % 3 == 0 {
        [json.as_slice(), b" "].concat()
    } else {
        json
    };
    let mut encoded = b64(&json);
    let last = encoded.pop().expect("non-empty");
    let alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let index = alphabet.find(last).expect("base64url character");
    encoded.push(alphabet.chars().nth(index | 0b1).expect("in alphabet"));
    parts[1] = encoded;
    assert_eq!(refused(&parts.join(".")), Reason::Malformed);
}

#[test]
fn padded_or_standard_base64_is_refused() {
    let token = encoded(&keys().ec, &claims(json!({})));
    let (header, rest) = token.split_once('.').expect("segments");
    for changed in [format!("{header}=.{rest}"), format!("{header}+.{rest}")] {
        assert_eq!(refused(&changed), Reason::Malformed);
    }
}

#[test]
fn malformed_shapes_are_refused() {
    let good = encoded(&keys().ec, &claims(json!({})));
    let (header, _) = good.split_once('.').expect("segments");
    let not_json = b64(b"{\"sub\": ");
    let not_object = b64(b"[\"at+jwt\"]");
    let cases = [
        String::new(),
        "junk".to_owned(),
        "a.b".to_owned(),
        format!("{good}.extra"),
        format!("{header}..c2ln"),
        format!("{header}.{not_json}.c2ln"),
        format!("{header}.{not_object}.c2ln"),
        format!("{not_json}.{not_json}.c2ln"),
        format!("{header}.e30.c2l*"),
        good.replace('.', " . "),
    ];
    for token in cases {
        assert_eq!(refused(&token), Reason::Malformed, "{token:?}");
    }
}

#[test]
fn oversized_token_is_refused_before_parsing() {
    // Not even well formed: the size alone decides.
    let junk = "x".repeat(MAX_TOKEN_BYTES + 1);
    assert_eq!(refused(&junk), Reason::TooLarge);

    let big = claims(json!({"padding": "p".repeat(MAX_TOKEN_BYTES)}));
    assert_eq!(refused(&encoded(&keys().rsa, &big)), Reason::TooLarge);
}

#[test]
fn junk_is_refused_without_a_hash() {
    let rejection = super::check("not-a-token").expect_err("junk refused");
    assert_eq!(rejection.token_hash, None);

    let token = encoded(&keys().ec, &claims(json!({})));
    let forged = with_signature(&token, &b64(&[7; 64]));
    let rejection = super::check(&forged).expect_err("forgery refused");
    assert_eq!(rejection.token_hash.as_deref().map(str::len), Some(16));
    assert_eq!(rejection.issuer.as_deref(), Some("corp"));
    assert_eq!(rejection.kid.as_deref(), Some("ec-1"));
}
