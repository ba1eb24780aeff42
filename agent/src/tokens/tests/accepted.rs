//! The shapes of token that are accepted, and what the validator says about them.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::json;

use super::{AUD, ISS, check, claims, crafted, encoded, issuers, keys, now_secs, validator};
use crate::tokens::{MAX_LEEWAY, Reason, Validator, token_hash};

#[test]
fn rs256_token_is_accepted_with_its_identity() {
    let token = encoded(&keys().rsa, &claims(json!({})));

    let access = check(&token).expect("RS256 token accepted");
    assert_eq!(access.issuer_name, "corp");
    assert_eq!(access.issuer, ISS);
    assert_eq!(access.subject, "svc-ci");
    assert_eq!(access.client_id.as_deref(), Some("ci-runner"));
    assert_eq!(access.scopes, ["db:connect", "ssh"]);
    assert_eq!(access.jti.as_deref(), Some("jti-1"));
    assert_eq!(access.token_hash, token_hash(&token));
    assert_eq!(access.token_hash.len(), 16);
}

#[test]
fn es256_token_is_accepted() {
    let token = encoded(&keys().ec, &claims(json!({})));
    assert!(check(&token).is_ok());
}

#[test]
fn eddsa_token_is_accepted() {
    let token = encoded(&keys().ed, &claims(json!({})));
    assert!(check(&token).is_ok());
}

#[test]
fn expiry_and_issue_times_are_reported() {
    let exp = now_secs() + 120;
    let token = encoded(&keys().ec, &claims(json!({"exp": exp, "iat": exp - 200})));

    let access = check(&token).expect("token accepted");
    assert_eq!(access.expires_at, UNIX_EPOCH + Duration::from_secs(exp));
    assert_eq!(
        access.issued_at,
        Some(UNIX_EPOCH + Duration::from_secs(exp - 200))
    );
}

#[test]
fn audience_array_containing_ours_is_accepted() {
    let aud = json!(["https://other.example.com", AUD]);
    let token = encoded(&keys().rsa, &claims(json!({ "aud": aud })));
    assert!(check(&token).is_ok());
}

#[test]
fn typ_with_media_type_prefix_is_accepted() {
    let keys = keys();
    for typ in ["application/at+jwt", "AT+JWT"] {
        let token = crafted(&keys.ed, json!({ "typ": typ }), &claims(json!({})));
        assert!(check(&token).is_ok(), "{typ}");
    }
}

#[test]
fn clock_skew_within_leeway_is_accepted() {
    let now = now_secs();
    let skewed = claims(json!({"exp": now - 20, "nbf": now + 20, "iat": now + 20}));
    let token = encoded(&keys().rsa, &skewed);
    assert!(check(&token).is_ok());
}

#[test]
fn clock_skew_beyond_a_smaller_leeway_is_refused() {
    let now = now_secs();
    let token = encoded(&keys().rsa, &claims(json!({"iat": now + 20})));
    let strict = Validator::new(AUD.to_owned(), Duration::from_secs(5));

    let rejection = strict
        .validate(&token, &issuers(), SystemTime::now())
        .expect_err("skew beyond 5 s refused");
    assert_eq!(rejection.reason, Reason::IssuedInFuture);
    assert!(rejection.detail.contains("leeway"), "{}", rejection.detail);
}

#[test]
fn leeway_is_capped_at_sixty_seconds() {
    let generous = Validator::new(AUD.to_owned(), Duration::from_secs(3600));
    assert_eq!(generous.leeway(), MAX_LEEWAY);
}

#[test]
fn token_without_scope_is_accepted_with_no_scopes() {
    let token = encoded(&keys().ec, &claims(json!({"scope": null})));
    let access = check(&token).expect("token accepted");
    assert!(access.scopes.is_empty());
}

#[test]
fn scp_array_gives_the_scopes() {
    let token = encoded(
        &keys().ec,
        &claims(json!({"scope": null, "scp": ["db:connect"]})),
    );
    let access = check(&token).expect("token accepted");
    assert_eq!(access.scopes, ["db:connect"]);
}

#[test]
fn optional_claims_may_be_absent() {
    let bare = claims(json!({"client_id": null, "jti": null, "iat": null, "scope": null}));
    let access = check(&encoded(&keys().rsa, &bare)).expect("token accepted");
    assert_eq!(
        (access.client_id, access.jti, access.issued_at),
        (None, None, None)
    );
}

#[test]
fn validation_repeats_in_a_loop_with_one_validator() {
    let keys = keys();
    let tokens: Vec<String> = [&keys.rsa, &keys.ec, &keys.ed]
        .into_iter()
        .map(|signer| encoded(signer, &claims(json!({}))))
        .collect();
    let (validator, issuers) = (validator(), issuers());

    for _ in 0..20 {
        for token in &tokens {
            assert!(
                validator
                    .validate(token, &issuers, SystemTime::now())
                    .is_ok()
            );
        }
    }
}
