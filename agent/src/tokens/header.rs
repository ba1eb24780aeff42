//! The JOSE header of an access token: what it may say, and what it may never ask for.

use serde_json::{Map, Value};

use super::jwks;
use super::reject::{Fault, Reason, quoted};
use crate::policy::Algorithm;

/// Headers that fetch a key from a URL or carry one inline. Honouring any of them lets the
/// token choose the key that verifies it, so their mere presence refuses the token.
const KEY_BEARING: [&str; 4] = ["jku", "x5u", "jwk", "x5c"];

/// Headers that change how the payload is read (RFC 7797 unencoded payloads, compression,
/// encryption); an access token has no use for them.
const PAYLOAD_CHANGING: [&str; 3] = ["b64", "zip", "enc"];

/// What the header names, once it passed every check.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Checked<'a> {
    pub algorithm: Algorithm,
    pub kid: &'a str,
}

/// Checks a decoded header; the payload is not looked at yet.
pub(crate) fn check(header: &Map<String, Value>) -> Result<Checked<'_>, Fault> {
    for name in KEY_BEARING {
        if header.contains_key(name) {
            return Err(Fault::new(
                Reason::ForbiddenHeader,
                format!("header {name:?} would let the token choose its own key"),
            ));
        }
    }
    for name in PAYLOAD_CHANGING {
        if header.contains_key(name) {
            return Err(Fault::new(
                Reason::ForbiddenHeader,
                format!("header {name:?} is not used by access tokens"),
            ));
        }
    }
    if let Some(critical) = header.get("crit") {
        return Err(Fault::new(
            Reason::UnknownCritical,
            format!(
                "header crit lists extensions this agent does not understand: {}",
                short(critical)
            ),
        ));
    }

    media_type(header)?;
    let algorithm = algorithm(header)?;
    let kid = kid(header)?;
    Ok(Checked { algorithm, kid })
}

/// RFC 9068 section 2.1: `typ` is `at+jwt`, with or without the `application/` prefix,
/// compared without case. A missing `typ` could be an ID token replayed as an access token.
fn media_type(header: &Map<String, Value>) -> Result<(), Fault> {
    let found = match header.get("typ") {
        None => {
            return Err(Fault::new(
                Reason::BadType,
                "header has no typ; expected \"at+jwt\"",
            ));
        }
        Some(Value::String(typ)) => typ,
        Some(other) => {
            return Err(Fault::new(
                Reason::BadType,
                format!("header typ is {}, not a string", short(other)),
            ));
        }
    };

    let typ = found.to_ascii_lowercase();
    if typ == "at+jwt" || typ == "application/at+jwt" {
        return Ok(());
    }
    Err(Fault::new(
        Reason::BadType,
        format!(
            "header typ is {}; expected \"at+jwt\" (an access token)",
            quoted(found)
        ),
    ))
}

/// The header's `alg`, if it is an asymmetric algorithm this agent knows. Whether the issuer
/// and the key accept it is decided once the key is known.
fn algorithm(header: &Map<String, Value>) -> Result<Algorithm, Fault> {
    let refuse = |detail: String| Fault::new(Reason::AlgorithmNotAllowed, detail);
    let name = match header.get("alg") {
        Some(Value::String(name)) => name,
        Some(other) => {
            return Err(refuse(format!(
                "header alg is {}, not a string",
                short(other)
            )));
        }
        None => return Err(refuse("header has no alg".to_owned())),
    };

    if let Some(algorithm) = Algorithm::from_name(name) {
        return Ok(algorithm);
    }
    let upper = name.trim().to_ascii_uppercase();
    let detail = if upper == "NONE" || upper.is_empty() {
        format!("alg {} is an unsigned token, never accepted", quoted(name))
    } else if upper.starts_with("HS") {
        format!(
            "alg {} is symmetric; tokens are verified with the issuer's public keys",
            quoted(name)
        )
    } else {
        format!(
            "alg {} is not a supported signature algorithm",
            quoted(name)
        )
    };
    Err(refuse(detail))
}

fn kid(header: &Map<String, Value>) -> Result<&str, Fault> {
    let refuse = |detail: String| Fault::new(Reason::BadKeyId, detail);
    match header.get("kid") {
        Some(Value::String(kid)) => jwks::check_kid(kid).map(|()| kid.as_str()).map_err(refuse),
        Some(other) => Err(refuse(format!(
            "header kid is {}, not a string",
            short(other)
        ))),
        None => Err(refuse(
            "header has no kid, so no key can be chosen".to_owned(),
        )),
    }
}

/// A JSON value from the token, cut short for a log line.
fn short(value: &Value) -> String {
    quoted(&value.to_string())
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn header(value: Value) -> Map<String, Value> {
        match value {
            Value::Object(map) => map,
            _ => unreachable!("test headers are objects"),
        }
    }

    fn reason(value: Value) -> Option<Reason> {
        check(&header(value))
            .err()
            .map(|rejection| rejection.reason)
    }

    #[test]
    fn plain_access_token_header_passes() {
        let fields = header(json!({"alg": "ES256", "typ": "at+jwt", "kid": "k1"}));
        let checked = check(&fields).expect("a plain header is accepted");
        assert_eq!(checked.algorithm, Algorithm::Es256);
        assert_eq!(checked.kid, "k1");
    }

    #[test]
    fn typ_compares_without_case() {
        for typ in ["AT+JWT", "Application/At+Jwt"] {
            assert_eq!(
                reason(json!({"alg": "RS256", "typ": typ, "kid": "k"})),
                None
            );
        }
        assert_eq!(
            reason(json!({"alg": "RS256", "typ": "at+jwt ", "kid": "k"})),
            Some(Reason::BadType)
        );
        assert_eq!(
            reason(json!({"alg": "RS256", "typ": ["at+jwt"], "kid": "k"})),
            Some(Reason::BadType)
        );
    }

    #[test]
    fn payload_changing_headers_are_forbidden() {
        for name in PAYLOAD_CHANGING {
            let mut value = json!({"alg": "RS256", "typ": "at+jwt", "kid": "k"});
            value[name] = json!(false);
            assert_eq!(reason(value), Some(Reason::ForbiddenHeader), "{name}");
        }
    }

    #[test]
    fn alg_of_wrong_type_or_missing_is_refused() {
        let missing = json!({"typ": "at+jwt", "kid": "k"});
        let number = json!({"alg": 256, "typ": "at+jwt", "kid": "k"});
        let lower = json!({"alg": "rs256", "typ": "at+jwt", "kid": "k"});
        for value in [missing, number, lower] {
            assert_eq!(reason(value), Some(Reason::AlgorithmNotAllowed));
        }
    }

    #[test]
    fn kid_must_be_a_plain_name() {
        for kid in [
            json!(""),
            json!(7),
            json!("a b"),
            json!("k\n1"),
            json!("..%2f"),
        ] {
            let value = json!({"alg": "RS256", "typ": "at+jwt", "kid": kid});
            assert_eq!(reason(value), Some(Reason::BadKeyId), "{kid}");
        }
    }
}
