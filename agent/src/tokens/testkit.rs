//! Keys made on the spot, their JWKS, and tokens signed with them: for the token tests, and
//! (feature `testkit`) for the privileged tests and benchmarks. Never in a release build.

use std::sync::OnceLock;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use aws_lc_rs::encoding::AsDer;
use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::rsa::{KeyPair as RsaKeyPair, KeySize};
use aws_lc_rs::signature::{
    ECDSA_P256_SHA256_FIXED, ECDSA_P256_SHA256_FIXED_SIGNING, ED25519, EcdsaKeyPair,
    Ed25519KeyPair, KeyPair as _, RSA_PKCS1_2048_8192_SHA256, RsaPublicKeyComponents,
    VerificationAlgorithm,
};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{Algorithm as Jwt, EncodingKey};
use serde_json::{Value, json};

use super::{IssuerTrust, KeySet, Validator};
use crate::policy::Algorithm;

pub const ISS: &str = "https://idp.example.com/realms/corp";
pub const AUD: &str = "https://host-42.example.com/portguard";

/// A private key that signs test tokens, and its public half as a JWK.
pub struct Signer {
    pub kid: &'static str,
    pub alg: Jwt,
    pub key: EncodingKey,
    pub jwk: Value,
}

pub struct Fixture {
    pub rsa: Signer,
    pub ec: Signer,
    pub ed: Signer,
    /// The RSA public key as DER, the bytes an attacker would use as an HMAC secret.
    pub rsa_public_der: Vec<u8>,
}

/// The keys every test shares: an RSA-2048 key pair takes a while to generate.
pub fn keys() -> &'static Fixture {
    static KEYS: OnceLock<Fixture> = OnceLock::new();
    KEYS.get_or_init(|| {
        let rsa = RsaKeyPair::generate(KeySize::Rsa2048).expect("generate RSA key");
        let public = rsa.public_key();
        let n = public.modulus().big_endian_without_leading_zero().to_vec();
        let e = public.exponent().big_endian_without_leading_zero().to_vec();
        let pkcs8 = rsa.as_der().expect("encode RSA key");
        let rsa_signer = Signer {
            kid: "rsa-1",
            alg: Jwt::RS256,
            key: EncodingKey::from_rsa_der(pkcs1_from_pkcs8(pkcs8.as_ref())),
            jwk: json!({"kty": "RSA", "kid": "rsa-1", "use": "sig", "n": b64(&n), "e": b64(&e)}),
        };

        let rng = SystemRandom::new();
        let ec_pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng)
            .expect("generate P-256 key");
        let ec = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, ec_pkcs8.as_ref())
            .expect("read P-256 key");
        let point = ec.public_key().as_ref();
        let ec_signer = Signer {
            kid: "ec-1",
            alg: Jwt::ES256,
            key: EncodingKey::from_ec_der(ec_pkcs8.as_ref()),
            jwk: json!({"kty": "EC", "kid": "ec-1", "crv": "P-256",
                        "x": b64(&point[1..33]), "y": b64(&point[33..])}),
        };

        let ed = Ed25519KeyPair::generate().expect("generate Ed25519 key");
        let ed_signer = Signer {
            kid: "ed-1",
            alg: Jwt::EdDSA,
            key: EncodingKey::from_ed_der(ed.to_pkcs8().expect("encode Ed25519 key").as_ref()),
            jwk: json!({"kty": "OKP", "kid": "ed-1", "crv": "Ed25519",
                        "x": b64(ed.public_key().as_ref())}),
        };

        Fixture {
            rsa: rsa_signer,
            ec: ec_signer,
            ed: ed_signer,
            rsa_public_der: public.as_ref().to_vec(),
        }
    })
}

pub fn b64(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

pub fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs()
}

/// A JWKS document holding these keys.
pub fn jwks(keys: &[&Value]) -> Vec<u8> {
    serde_json::to_vec(&json!({ "keys": keys })).expect("serialize JWKS")
}

/// The one trusted issuer, with the three test keys and the default allow-list.
pub fn issuers() -> Vec<IssuerTrust> {
    let keys = keys();
    issuers_with(
        &[&keys.rsa.jwk, &keys.ec.jwk, &keys.ed.jwk],
        &Algorithm::DEFAULT,
    )
}

pub fn issuers_with(jwk: &[&Value], allowed: &[Algorithm]) -> Vec<IssuerTrust> {
    let (keys, _) = KeySet::parse(&jwks(jwk), allowed).expect("parse test JWKS");
    vec![IssuerTrust {
        name: "corp".to_owned(),
        issuer: ISS.to_owned(),
        algorithms: allowed.to_vec(),
        keys,
    }]
}

pub fn validator() -> Validator {
    Validator::new(AUD.to_owned(), Duration::from_secs(60))
}

/// The claims of a good token; `changes` replaces members, and `null` removes one.
pub fn claims(changes: Value) -> Value {
    let now = now_secs();
    let mut claims = json!({
        "iss": ISS, "aud": AUD, "sub": "svc-ci", "client_id": "ci-runner",
        "scope": "db:connect ssh", "jti": "jti-1", "iat": now, "exp": now + 300,
    });
    merge(&mut claims, changes);
    claims
}

fn merge(target: &mut Value, changes: Value) {
    let (Some(target), Value::Object(changes)) = (target.as_object_mut(), changes) else {
        return;
    };
    for (name, value) in changes {
        if value.is_null() {
            target.remove(&name);
        } else {
            target.insert(name, value);
        }
    }
}

/// A token signed by jsonwebtoken's own encoder, as an issuer would make it.
pub fn encoded(signer: &Signer, claims: &Value) -> String {
    let mut header = jsonwebtoken::Header::new(signer.alg);
    header.typ = Some("at+jwt".to_owned());
    header.kid = Some(signer.kid.to_owned());
    jsonwebtoken::encode(&header, claims, &signer.key).expect("sign test token")
}

/// A token whose header is the signer's, changed by `changes` (`null` removes a member).
pub fn crafted(signer: &Signer, changes: Value, claims: &Value) -> String {
    let mut header =
        json!({"alg": format!("{:?}", signer.alg), "typ": "at+jwt", "kid": signer.kid});
    merge(&mut header, changes);
    let alg = header["alg"]
        .as_str()
        .and_then(|alg| alg.parse().ok())
        .unwrap_or(signer.alg);
    signed_text(&header.to_string(), &claims.to_string(), &signer.key, alg)
}

/// A token from raw JSON texts, which may say things `serde_json::Value` cannot (repeats).
pub fn signed_text(header: &str, payload: &str, key: &EncodingKey, alg: Jwt) -> String {
    let message = format!("{}.{}", b64(header.as_bytes()), b64(payload.as_bytes()));
    let signature = jsonwebtoken::crypto::sign(message.as_bytes(), key, alg).expect("sign");
    format!("{message}.{signature}")
}

/// The `RSAPrivateKey` inside a PKCS#8 `PrivateKeyInfo`, which jsonwebtoken's RSA signer
/// wants: SEQUENCE { INTEGER version, SEQUENCE algorithm, OCTET STRING key, ... }.
fn pkcs1_from_pkcs8(der: &[u8]) -> &[u8] {
    let (_, info, _) = der_element(der);
    let (_, _, rest) = der_element(info);
    let (_, _, rest) = der_element(rest);
    let (tag, key, _) = der_element(rest);
    assert_eq!(tag, 0x04, "PKCS#8 private key is an OCTET STRING");
    key
}

/// One DER element: tag, contents, and what follows.
fn der_element(der: &[u8]) -> (u8, &[u8], &[u8]) {
    let (tag, first) = (der[0], der[1]);
    let (len, header) = if first < 0x80 {
        (usize::from(first), 2)
    } else {
        let count = usize::from(first & 0x7f);
        let len = der[2..2 + count]
            .iter()
            .fold(0usize, |len, &byte| (len << 8) | usize::from(byte));
        (len, 2 + count)
    };
    (tag, &der[header..header + len], &der[header + len..])
}

/// A JWK member's bytes; empty when the key type has no such member.
fn component(jwk: &Value, name: &str) -> Vec<u8> {
    let text = jwk[name].as_str().unwrap_or_default();
    URL_SAFE_NO_PAD.decode(text).expect("base64url component")
}

/// The raw check of a token's signature with aws-lc, as jsonwebtoken makes it, with the key
/// decoded beforehand.
pub fn raw_signature_check(signer: &Signer, token: &str) -> impl FnMut() -> bool {
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
