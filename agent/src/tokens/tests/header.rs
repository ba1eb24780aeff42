//! Tokens refused for their header: unsigned, confused algorithms, keys they try to choose,
//! and types that are not access tokens.

use jsonwebtoken::{Algorithm as Jwt, EncodingKey};
use serde_json::json;

use super::{b64, claims, crafted, encoded, issuers_with, keys, refused, refused_by, signed_text};
use crate::policy::Algorithm;
use crate::tokens::Reason;

/// A token with this header and a good payload, but no valid signature: the header alone
/// must sink it.
fn unsigned(header: &serde_json::Value, signature: &str) -> String {
    let payload = claims(json!({})).to_string();
    format!(
        "{}.{}.{signature}",
        b64(header.to_string().as_bytes()),
        b64(payload.as_bytes())
    )
}

#[test]
fn alg_none_is_refused_in_any_spelling() {
    for alg in ["none", "None", "NONE", "nOnE", " none", ""] {
        let header = json!({"alg": alg, "typ": "at+jwt", "kid": "rsa-1"});
        for signature in ["", "c2ln"] {
            let reason = refused(&unsigned(&header, signature));
            assert!(
                matches!(reason, Reason::AlgorithmNotAllowed | Reason::Malformed),
                "alg {alg:?} with signature {signature:?}: {reason:?}"
            );
        }
        assert_eq!(
            refused(&unsigned(&header, "c2ln")),
            Reason::AlgorithmNotAllowed
        );
    }
}

#[test]
fn hs256_signed_with_the_rsa_public_key_is_refused() {
    let keys = keys();
    let secret = EncodingKey::from_secret(&keys.rsa_public_der).expect("an HMAC key");
    let header = json!({"alg": "HS256", "typ": "at+jwt", "kid": "rsa-1"}).to_string();
    let token = signed_text(&header, &claims(json!({})).to_string(), &secret, Jwt::HS256);
    assert_eq!(refused(&token), Reason::AlgorithmNotAllowed);
}

#[test]
fn es256_header_naming_an_rsa_key_is_refused() {
    // Signed by the EC key, but naming the RSA key: the key decides the algorithm.
    let token = crafted(&keys().ec, json!({"kid": "rsa-1"}), &claims(json!({})));
    assert_eq!(refused(&token), Reason::AlgorithmNotAllowed);
}

#[test]
fn rs256_header_naming_an_ec_key_is_refused() {
    let token = crafted(&keys().rsa, json!({"kid": "ec-1"}), &claims(json!({})));
    assert_eq!(refused(&token), Reason::AlgorithmNotAllowed);
}

#[test]
fn algorithm_outside_the_allow_list_is_refused() {
    let keys = keys();
    // PS256 fits the RSA key, but the issuer allows RS256 only.
    let issuers = issuers_with(&[&keys.rsa.jwk], &[Algorithm::Rs256]);
    let token = crafted(&keys.rsa, json!({"alg": "PS256"}), &claims(json!({})));
    assert_eq!(refused_by(&token, &issuers), Reason::AlgorithmNotAllowed);

    let accepted = crafted(&keys.rsa, json!({"alg": "RS256"}), &claims(json!({})));
    assert!(refused_by_none(&accepted, &issuers));
}

fn refused_by_none(token: &str, issuers: &[crate::tokens::IssuerTrust]) -> bool {
    super::validator()
        .validate(token, issuers, std::time::SystemTime::now())
        .is_ok()
}

#[test]
fn missing_kid_is_refused() {
    let token = crafted(&keys().rsa, json!({"kid": null}), &claims(json!({})));
    assert_eq!(refused(&token), Reason::BadKeyId);
}

#[test]
fn unknown_kid_is_refused() {
    let token = crafted(&keys().rsa, json!({"kid": "rsa-2"}), &claims(json!({})));
    assert_eq!(refused(&token), Reason::UnknownKey);
}

#[test]
fn path_shaped_kid_is_refused() {
    let token = crafted(
        &keys().rsa,
        json!({"kid": "../../etc/passwd"}),
        &claims(json!({})),
    );
    assert_eq!(refused(&token), Reason::BadKeyId);
}

#[test]
fn long_kid_is_refused() {
    let keys = keys();
    let kilobyte = crafted(
        &keys.ec,
        json!({"kid": "k".repeat(1024)}),
        &claims(json!({})),
    );
    assert_eq!(refused(&kilobyte), Reason::BadKeyId);

    // Ten kilobytes cannot even fit in a token.
    let huge = crafted(
        &keys.ec,
        json!({"kid": "k".repeat(10 * 1024)}),
        &claims(json!({})),
    );
    assert_eq!(refused(&huge), Reason::TooLarge);
}

#[test]
fn kid_of_wrong_type_is_refused() {
    let token = crafted(&keys().rsa, json!({"kid": ["rsa-1"]}), &claims(json!({})));
    assert_eq!(refused(&token), Reason::BadKeyId);
}

#[test]
fn key_fetching_and_embedding_headers_are_refused() {
    let keys = keys();
    let headers = [
        json!({"jku": "https://evil.example/jwks.json"}),
        json!({"x5u": "https://evil.example/cert.pem"}),
        json!({"jwk": keys.rsa.jwk.clone()}),
        json!({"x5c": ["MIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8AMIIBCgKCAQEA"]}),
    ];
    for header in headers {
        let token = crafted(&keys.rsa, header.clone(), &claims(json!({})));
        assert_eq!(refused(&token), Reason::ForbiddenHeader, "{header}");
    }
}

#[test]
fn unknown_crit_is_refused() {
    let keys = keys();
    for crit in [json!(["exp"]), json!(["b64"]), json!([]), json!("x")] {
        let token = crafted(&keys.ec, json!({ "crit": crit }), &claims(json!({})));
        assert_eq!(refused(&token), Reason::UnknownCritical, "{crit}");
    }
}

#[test]
fn typ_jwt_is_refused() {
    let token = crafted(&keys().rsa, json!({"typ": "JWT"}), &claims(json!({})));
    assert_eq!(refused(&token), Reason::BadType);
}

#[test]
fn missing_typ_is_refused() {
    let token = crafted(&keys().rsa, json!({"typ": null}), &claims(json!({})));
    assert_eq!(refused(&token), Reason::BadType);
}

#[test]
fn id_token_typ_is_refused_even_when_well_signed() {
    // jsonwebtoken's default header: what an ID token or a plain JWT carries.
    let keys = keys();
    let mut header = jsonwebtoken::Header::new(Jwt::ES256);
    header.kid = Some(keys.ec.kid.to_owned());
    let token = jsonwebtoken::encode(&header, &claims(json!({})), &keys.ec.key).expect("sign");
    assert_eq!(refused(&token), Reason::BadType);
    assert!(super::check(&encoded(&keys.ec, &claims(json!({})))).is_ok());
}

#[test]
fn duplicate_header_member_is_refused() {
    let keys = keys();
    let header = r#"{"alg":"ES256","typ":"at+jwt","kid":"ec-1","kid":"rsa-1"}"#;
    let token = signed_text(
        header,
        &claims(json!({})).to_string(),
        &keys.ec.key,
        Jwt::ES256,
    );
    assert_eq!(refused(&token), Reason::DuplicateClaim);

    let alg_twice = r#"{"alg":"none","typ":"at+jwt","kid":"ec-1","alg":"ES256"}"#;
    let token = signed_text(
        alg_twice,
        &claims(json!({})).to_string(),
        &keys.ec.key,
        Jwt::ES256,
    );
    assert_eq!(refused(&token), Reason::DuplicateClaim);
}
