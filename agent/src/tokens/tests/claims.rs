//! Tokens refused for their claims, once their signature verified: times, issuer, audience,
//! types and repeats.

use jsonwebtoken::Algorithm as Jwt;
use serde_json::json;

use super::{claims, encoded, keys, now_secs, refused, signed_text};
use crate::tokens::Reason;

#[test]
fn missing_exp_is_refused() {
    let token = encoded(&keys().rsa, &claims(json!({"exp": null})));
    assert_eq!(refused(&token), Reason::MissingClaim);
}

#[test]
fn past_exp_is_refused_and_says_so() {
    let token = encoded(&keys().ec, &claims(json!({"exp": now_secs() - 600})));
    let rejection = super::check(&token).expect_err("expired token refused");
    assert_eq!(rejection.reason, Reason::Expired);
    assert!(rejection.detail.contains("leeway"), "{}", rejection.detail);
    assert_eq!(rejection.subject.as_deref(), Some("svc-ci"));
    assert_eq!(rejection.client_id.as_deref(), Some("ci-runner"));
    assert_eq!(rejection.jti.as_deref(), Some("jti-1"));
}

#[test]
fn exp_as_a_string_is_refused() {
    let exp = (now_secs() + 300).to_string();
    let token = encoded(&keys().rsa, &claims(json!({ "exp": exp })));
    assert_eq!(refused(&token), Reason::InvalidClaim);
}

#[test]
fn exp_as_a_fraction_is_refused() {
    let exp = now_secs() as f64 + 300.5;
    let token = encoded(&keys().rsa, &claims(json!({ "exp": exp })));
    assert_eq!(refused(&token), Reason::InvalidClaim);
}

#[test]
fn exp_absurdly_far_ahead_is_refused() {
    let keys = keys();
    let next_year = encoded(&keys.ed, &claims(json!({"exp": now_secs() + 365 * 86_400})));
    assert_eq!(refused(&next_year), Reason::ExpiryTooFar);

    let end_of_time = encoded(&keys.ed, &claims(json!({"exp": u64::MAX})));
    assert_eq!(refused(&end_of_time), Reason::ExpiryTooFar);
}

#[test]
fn future_nbf_is_refused() {
    let token = encoded(&keys().rsa, &claims(json!({"nbf": now_secs() + 600})));
    assert_eq!(refused(&token), Reason::NotYetValid);
}

#[test]
fn future_iat_is_refused() {
    let token = encoded(&keys().rsa, &claims(json!({"iat": now_secs() + 600})));
    assert_eq!(refused(&token), Reason::IssuedInFuture);
}

#[test]
fn untrusted_iss_is_refused() {
    let iss = "https://evil.example.com/realms/corp";
    let token = encoded(&keys().rsa, &claims(json!({ "iss": iss })));
    assert_eq!(refused(&token), Reason::UnknownIssuer);
}

#[test]
fn iss_differing_only_by_a_trailing_slash_is_refused() {
    let iss = format!("{}/", super::ISS);
    let token = encoded(&keys().rsa, &claims(json!({ "iss": iss })));
    assert_eq!(refused(&token), Reason::UnknownIssuer);
}

#[test]
fn iss_array_is_refused() {
    let iss = json!([super::ISS, "https://evil.example.com"]);
    let token = encoded(&keys().rsa, &claims(json!({ "iss": iss })));
    assert_eq!(refused(&token), Reason::WrongIssuer);

    let alone = encoded(&keys().rsa, &claims(json!({ "iss": [super::ISS] })));
    assert_eq!(refused(&alone), Reason::WrongIssuer);
}

#[test]
fn missing_iss_is_refused() {
    let token = encoded(&keys().rsa, &claims(json!({"iss": null})));
    assert_eq!(refused(&token), Reason::MissingClaim);
}

#[test]
fn wrong_aud_is_refused() {
    let keys = keys();
    let other = encoded(
        &keys.ec,
        &claims(json!({"aud": "https://host-43.example.com/portguard"})),
    );
    assert_eq!(refused(&other), Reason::WrongAudience);

    let list = encoded(
        &keys.ec,
        &claims(json!({"aud": ["https://a.example", "https://b.example"]})),
    );
    assert_eq!(refused(&list), Reason::WrongAudience);
}

#[test]
fn missing_aud_is_refused() {
    let token = encoded(&keys().ec, &claims(json!({"aud": null})));
    assert_eq!(refused(&token), Reason::MissingClaim);
}

#[test]
fn missing_sub_is_refused() {
    let token = encoded(&keys().ed, &claims(json!({"sub": null})));
    assert_eq!(refused(&token), Reason::MissingClaim);
}

#[test]
fn claims_of_the_wrong_type_are_refused() {
    let keys = keys();
    for changes in [
        json!({"sub": 42}),
        json!({"client_id": ["ci"]}),
        json!({"scope": ["db:connect"]}),
        json!({"jti": 1}),
        json!({"iat": "yesterday"}),
        json!({"nbf": 1.5}),
        json!({"aud": 7}),
    ] {
        let token = encoded(&keys.ed, &claims(changes.clone()));
        assert_eq!(refused(&token), Reason::InvalidClaim, "{changes}");
    }
}

#[test]
fn duplicate_claim_in_payload_is_refused() {
    let keys = keys();
    let header = json!({"alg": "ES256", "typ": "at+jwt", "kid": "ec-1"}).to_string();
    let exp = now_secs() + 300;
    for payload in [
        format!(
            r#"{{"iss":"{}","aud":"{}","sub":"svc-ci","sub":"admin","exp":{exp}}}"#,
            super::ISS,
            super::AUD
        ),
        format!(
            r#"{{"iss":"{}","aud":"{}","sub":"svc-ci","exp":{exp},"exp":{}}}"#,
            super::ISS,
            super::AUD,
            exp + 86_400 * 30
        ),
        format!(
            r#"{{"iss":"https://evil.example","iss":"{}","aud":"{}","sub":"s","exp":{exp}}}"#,
            super::ISS,
            super::AUD
        ),
    ] {
        let token = signed_text(&header, &payload, &keys.ec.key, Jwt::ES256);
        assert_eq!(refused(&token), Reason::DuplicateClaim, "{payload}");
    }
}
