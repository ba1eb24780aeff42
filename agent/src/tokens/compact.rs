//! The JWS compact form: three segments of strict base64url, and JSON objects whose member
//! names never repeat.
//!
//! serde_json keeps the last of two equal member names without a word, so a token could say
//! one thing to this agent and another to a different parser. The objects here are built by a
//! visitor that refuses the second occurrence instead.

use std::fmt;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Value};

/// The three parts of a compact JWS, as they appear in the token.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Segments<'a> {
    pub header: &'a str,
    pub payload: &'a str,
    pub signature: &'a str,
}

/// Why the compact form could not be read; the message names the part, never its content.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum FormError {
    /// Not readable: wrong segment count, base64url or JSON that does not parse.
    Malformed(String),
    /// A member name repeats; the string is that name, quoted for the log.
    Duplicate(String),
}

/// Splits a token into exactly three non-empty segments.
pub(crate) fn split(token: &str) -> Result<Segments<'_>, FormError> {
    let mut parts = token.split('.');
    let (Some(header), Some(payload), Some(signature), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        let count = token.split('.').count();
        return Err(FormError::Malformed(format!(
            "expected 3 dot-separated segments (header.payload.signature), found {count}"
        )));
    };

    for (name, segment) in [
        ("header", header),
        ("payload", payload),
        ("signature", signature),
    ] {
        if segment.is_empty() {
            return Err(FormError::Malformed(format!("the {name} segment is empty")));
        }
    }
    Ok(Segments {
        header,
        payload,
        signature,
    })
}

/// Decodes one segment: the url-safe alphabet, no padding, and no stray bits in the last
/// character, so that every byte string has exactly one spelling.
pub(crate) fn base64url(name: &str, segment: &str) -> Result<Vec<u8>, FormError> {
    URL_SAFE_NO_PAD.decode(segment).map_err(|error| {
        FormError::Malformed(format!(
            "the {name} segment is not canonical unpadded base64url: {error}"
        ))
    })
}

/// Decodes a segment that holds a JSON object.
pub(crate) fn json_segment(name: &str, segment: &str) -> Result<Map<String, Value>, FormError> {
    let bytes = base64url(name, segment)?;
    json_object(name, &bytes)
}

/// Parses a JSON object, refusing a member name that appears twice at any depth.
pub(crate) fn json_object(name: &str, bytes: &[u8]) -> Result<Map<String, Value>, FormError> {
    let mut deserializer = serde_json::Deserializer::from_slice(bytes);
    let value = StrictValue
        .deserialize(&mut deserializer)
        .and_then(|value| deserializer.end().map(|()| value))
        .map_err(|error| match error.classify() {
            // Only the visitor below raises data errors: every JSON type is welcome.
            serde_json::error::Category::Data => {
                FormError::Duplicate(format!("the {name} {error}"))
            }
            _ => FormError::Malformed(format!("the {name} is not valid JSON: {error}")),
        })?;

    match value {
        Value::Object(map) => Ok(map),
        _ => Err(FormError::Malformed(format!(
            "the {name} is JSON but not an object"
        ))),
    }
}

/// Builds a [`Value`] like serde_json does, but fails on a repeated member name.
struct StrictValue;

impl<'de> DeserializeSeed<'de> for StrictValue {
    type Value = Value;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Value, D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for StrictValue {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_bool<E>(self, value: bool) -> Result<Value, E> {
        Ok(Value::Bool(value))
    }

    fn visit_i64<E>(self, value: i64) -> Result<Value, E> {
        Ok(Value::from(value))
    }

    fn visit_u64<E>(self, value: u64) -> Result<Value, E> {
        Ok(Value::from(value))
    }

    fn visit_f64<E>(self, value: f64) -> Result<Value, E> {
        Ok(Value::from(value))
    }

    fn visit_str<E>(self, value: &str) -> Result<Value, E> {
        Ok(Value::String(value.to_owned()))
    }

    fn visit_string<E>(self, value: String) -> Result<Value, E> {
        Ok(Value::String(value))
    }

    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut items = Vec::new();
        while let Some(item) = seq.next_element_seed(StrictValue)? {
            items.push(item);
        }
        Ok(Value::Array(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut access: A) -> Result<Value, A::Error> {
        let mut map = Map::new();
        while let Some(key) = access.next_key::<String>()? {
            if map.contains_key(&key) {
                return Err(de::Error::custom(format_args!(
                    "member {} appears twice",
                    super::reject::quoted(&key)
                )));
            }
            let value = access.next_value_seed(StrictValue)?;
            map.insert(key, value);
        }
        Ok(Value::Object(map))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repeated_member_is_refused_at_any_depth() {
        let top = json_object("payload", br#"{"sub":"a","sub":"b"}"#);
        assert!(matches!(top, Err(FormError::Duplicate(m)) if m.contains("\"sub\"")));

        let nested = json_object("payload", br#"{"x":{"k":1,"k":2}}"#);
        assert!(matches!(nested, Err(FormError::Duplicate(_))));
    }

    #[test]
    fn escaped_spelling_of_a_name_is_still_a_repeat() {
        let escaped = json_object("payload", br#"{"sub":"a","\u0073ub":"b"}"#);
        assert!(matches!(escaped, Err(FormError::Duplicate(_))));
    }

    #[test]
    fn non_objects_and_trailing_bytes_are_malformed() {
        for text in [&b"[1]"[..], b"\"x\"", b"{} {}", b"{", b""] {
            assert!(matches!(
                json_object("header", text),
                Err(FormError::Malformed(_))
            ));
        }
    }

    #[test]
    fn base64url_is_strict() {
        assert_eq!(base64url("x", "YWI").unwrap(), b"ab");
        // Padding, the standard alphabet, and a final character with stray low bits.
        for bad in ["YWI=", "YW+/", "YWJ", "YW I"] {
            assert!(base64url("x", bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn split_wants_three_non_empty_segments() {
        assert!(split("a.b.c").is_ok());
        for bad in ["a.b", "a.b.c.d", "a..c", "a.b.", ".b.c", "", "abc"] {
            assert!(split(bad).is_err(), "{bad}");
        }
    }
}
