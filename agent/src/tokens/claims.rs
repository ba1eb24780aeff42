//! The claims of a verified access token: their types, the clock, and who the token names.
//!
//! jsonwebtoken checks `exp`, `nbf`, `iss` and `aud` too, against the system clock. These
//! checks are stricter (integer times, `iat`, a longest lifetime, `iss` a single string) and
//! use the caller's clock reading, so that one validation sees one instant.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::{Map, Value};

use super::reject::{Fault, Reason, Rejection, quoted};

/// What a verified token says about its holder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Claims {
    pub subject: String,
    pub client_id: Option<String>,
    pub scopes: Vec<String>,
    pub jti: Option<String>,
    pub expires_at: SystemTime,
    pub issued_at: Option<SystemTime>,
}

/// The clock and limits a token's times are judged by.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Clock {
    /// Seconds since the epoch.
    pub now: u64,
    pub leeway: u64,
    pub max_lifetime: u64,
}

/// The identifying claims of a token, read whether or not they will be believed, for the
/// log of a rejection. Values of the wrong type are left out.
pub(crate) fn identity(payload: &Map<String, Value>, rejection: &mut Rejection) {
    let text = |name: &str| payload.get(name).and_then(Value::as_str).map(str::to_owned);
    rejection.subject = text("sub");
    rejection.client_id = text("client_id");
    rejection.jti = text("jti");
}

/// Checks every claim of a payload whose signature verified.
pub(crate) fn check(
    payload: &Map<String, Value>,
    issuer: &str,
    audience: &str,
    clock: Clock,
) -> Result<Claims, Fault> {
    if payload.get("iss").and_then(Value::as_str) != Some(issuer) {
        return Err(Fault::new(
            Reason::WrongIssuer,
            format!("iss is not exactly {}", quoted(issuer)),
        ));
    }
    check_audience(payload, audience)?;

    let expires = required_time(payload, "exp")?;
    let not_before = optional_time(payload, "nbf")?;
    let issued = optional_time(payload, "iat")?;
    check_times(clock, expires, not_before, issued)?;

    let subject = optional_text(payload, "sub")?.ok_or_else(|| missing("sub"))?;
    Ok(Claims {
        subject: subject.to_owned(),
        client_id: optional_text(payload, "client_id")?.map(str::to_owned),
        scopes: scopes(payload)?,
        jti: optional_text(payload, "jti")?.map(str::to_owned),
        expires_at: UNIX_EPOCH + Duration::from_secs(expires),
        issued_at: issued.map(|iat| UNIX_EPOCH + Duration::from_secs(iat)),
    })
}

/// Seconds since the epoch, for comparing with NumericDate claims.
pub(crate) fn epoch_seconds(time: SystemTime) -> u64 {
    time.duration_since(UNIX_EPOCH)
        .map_or(0, |since| since.as_secs())
}

fn check_audience(payload: &Map<String, Value>, audience: &str) -> Result<(), Fault> {
    let found = match payload.get("aud") {
        None => return Err(missing("aud")),
        Some(Value::String(aud)) => aud == audience,
        Some(Value::Array(list)) => {
            if !list.iter().all(Value::is_string) {
                return Err(wrong_type("aud", "a string or an array of strings"));
            }
            list.iter().any(|aud| aud.as_str() == Some(audience))
        }
        Some(_) => return Err(wrong_type("aud", "a string or an array of strings")),
    };

    if found {
        return Ok(());
    }
    Err(Fault::new(
        Reason::WrongAudience,
        format!(
            "aud does not contain this host's audience {}",
            quoted(audience)
        ),
    ))
}

/// Judges the times of a token by the clock, each with the leeway for clock skew; the
/// detail says so, since skew is the usual cause.
fn check_times(
    clock: Clock,
    expires: u64,
    not_before: Option<u64>,
    issued: Option<u64>,
) -> Result<(), Fault> {
    let Clock {
        now,
        leeway,
        max_lifetime,
    } = clock;

    if now >= expires.saturating_add(leeway) {
        return Err(Fault::new(
            Reason::Expired,
            format!(
                "exp {expires} is {}s before this host's clock ({now}), beyond the {leeway}s \
                 leeway",
                now - expires
            ),
        ));
    }
    if expires > now.saturating_add(max_lifetime).saturating_add(leeway) {
        return Err(Fault::new(
            Reason::ExpiryTooFar,
            format!(
                "exp {expires} is {}s ahead of this host's clock ({now}); the longest accepted \
                 is {max_lifetime}s",
                expires - now
            ),
        ));
    }
    if let Some(nbf) = not_before.filter(|&nbf| nbf > now.saturating_add(leeway)) {
        return Err(Fault::new(
            Reason::NotYetValid,
            format!(
                "nbf {nbf} is {}s after this host's clock ({now}), beyond the {leeway}s leeway",
                nbf - now
            ),
        ));
    }
    if let Some(iat) = issued.filter(|&iat| iat > now.saturating_add(leeway)) {
        return Err(Fault::new(
            Reason::IssuedInFuture,
            format!(
                "iat {iat} is {}s after this host's clock ({now}), beyond the {leeway}s leeway",
                iat - now
            ),
        ));
    }
    Ok(())
}

fn required_time(payload: &Map<String, Value>, name: &str) -> Result<u64, Fault> {
    optional_time(payload, name)?.ok_or_else(|| missing(name))
}

/// A NumericDate as whole seconds. Fractions are legal in RFC 7519 but no issuer writes
/// them in access tokens, and refusing them leaves no rounding to disagree about.
fn optional_time(payload: &Map<String, Value>, name: &str) -> Result<Option<u64>, Fault> {
    match payload.get(name) {
        None => Ok(None),
        Some(Value::Number(number)) => number
            .as_u64()
            .map(Some)
            .ok_or_else(|| wrong_type(name, "a non-negative whole number of seconds")),
        Some(_) => Err(wrong_type(name, "a number of seconds since the epoch")),
    }
}

fn optional_text<'a>(
    payload: &'a Map<String, Value>,
    name: &str,
) -> Result<Option<&'a str>, Fault> {
    match payload.get(name) {
        None => Ok(None),
        Some(Value::String(text)) => Ok(Some(text)),
        Some(_) => Err(wrong_type(name, "a string")),
    }
}

/// The token's scopes: `scope` as a space-separated string (RFC 9068), and `scp` as an array
/// of strings or a string, as several providers write it. Both are merged, without repeats.
fn scopes(payload: &Map<String, Value>) -> Result<Vec<String>, Fault> {
    let mut scopes: Vec<String> = Vec::new();
    let mut add = |scope: &str| {
        if !scope.is_empty() && !scopes.iter().any(|known| known == scope) {
            scopes.push(scope.to_owned());
        }
    };

    if let Some(scope) = optional_text(payload, "scope")? {
        scope.split(' ').for_each(&mut add);
    }
    match payload.get("scp") {
        None => {}
        Some(Value::String(scope)) => scope.split(' ').for_each(&mut add),
        Some(Value::Array(list)) if list.iter().all(Value::is_string) => {
            list.iter().filter_map(Value::as_str).for_each(&mut add);
        }
        Some(_) => return Err(wrong_type("scp", "an array of strings")),
    }
    Ok(scopes)
}

fn missing(name: &str) -> Fault {
    Fault::new(Reason::MissingClaim, format!("claim {name} is required"))
}

fn wrong_type(name: &str, expected: &str) -> Fault {
    Fault::new(
        Reason::InvalidClaim,
        format!("claim {name} must be {expected}"),
    )
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    const NOW: u64 = 1_800_000_000;
    const CLOCK: Clock = Clock {
        now: NOW,
        leeway: 30,
        max_lifetime: 86_400,
    };

    fn payload(extra: Value) -> Map<String, Value> {
        let mut base = json!({"iss": "https://idp", "aud": "me", "sub": "s", "exp": NOW + 60});
        for (name, value) in extra.as_object().into_iter().flatten() {
            base[name] = value.clone();
        }
        base.as_object().cloned().unwrap_or_default()
    }

    fn reason(extra: Value) -> Option<Reason> {
        check(&payload(extra), "https://idp", "me", CLOCK)
            .err()
            .map(|rejection| rejection.reason)
    }

    #[test]
    fn times_at_the_edge_of_the_leeway() {
        assert_eq!(reason(json!({"exp": NOW - 29})), None);
        assert_eq!(reason(json!({"exp": NOW - 30})), Some(Reason::Expired));
        assert_eq!(reason(json!({"nbf": NOW + 30, "iat": NOW + 30})), None);
        assert_eq!(reason(json!({"nbf": NOW + 31})), Some(Reason::NotYetValid));
        assert_eq!(
            reason(json!({"iat": NOW + 31})),
            Some(Reason::IssuedInFuture)
        );
        assert_eq!(reason(json!({"exp": NOW + 86_430})), None);
        assert_eq!(
            reason(json!({"exp": NOW + 86_431})),
            Some(Reason::ExpiryTooFar)
        );
    }

    #[test]
    fn times_must_be_whole_non_negative_seconds() {
        for exp in [
            json!(-1),
            json!(1.8e9),
            json!(true),
            json!(null),
            json!(1e30),
        ] {
            assert_eq!(
                reason(json!({ "exp": exp })),
                Some(Reason::InvalidClaim),
                "{exp}"
            );
        }
        assert_eq!(reason(json!({"nbf": "0"})), Some(Reason::InvalidClaim));
    }

    #[test]
    fn scope_and_scp_are_merged_without_repeats() {
        let extra = json!({"scope": "db:connect  ssh", "scp": ["ssh", "web"]});
        let claims = check(&payload(extra), "https://idp", "me", CLOCK).expect("valid claims");
        assert_eq!(claims.scopes, ["db:connect", "ssh", "web"]);
        assert_eq!(reason(json!({"scp": [1]})), Some(Reason::InvalidClaim));
        assert_eq!(reason(json!({"scope": ["a"]})), Some(Reason::InvalidClaim));
    }

    #[test]
    fn identifying_claims_must_be_strings() {
        assert_eq!(reason(json!({"sub": 7})), Some(Reason::InvalidClaim));
        assert_eq!(reason(json!({"client_id": {}})), Some(Reason::InvalidClaim));
        assert_eq!(reason(json!({"jti": 1})), Some(Reason::InvalidClaim));
        assert_eq!(
            reason(json!({"aud": ["me", 1]})),
            Some(Reason::InvalidClaim)
        );
    }
}
