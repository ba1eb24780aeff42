//! Durations as the policy file writes them ("30s", "15m", "1h"), and their bounds.

use std::time::Duration;

/// The bounds a duration key accepts, and how a message states them.
pub(super) struct Bounds {
    pub min: Duration,
    pub max: Duration,
    /// Completes "expected ...", e.g. "a duration from 1s to 1h".
    pub expected: &'static str,
}

/// `udp_reply_ttl`: long enough for a DNS answer, short enough that a flow does not linger.
pub(super) const UDP_REPLY_TTL: Bounds = Bounds {
    min: Duration::from_secs(1),
    max: Duration::from_secs(60 * 60),
    expected: "a duration from 1s to 1h",
};

/// `max_ttl`: a grant of no time opens nothing, and one beyond a day is a standing rule.
pub(super) const MAX_TTL: Bounds = Bounds {
    min: Duration::from_nanos(1),
    max: Duration::from_secs(24 * 60 * 60),
    expected: "a duration above 0s and at most 24h",
};

/// Reads the value of `key`; the error is the message.
pub(super) fn parse(key: &str, text: &str, bounds: &Bounds) -> Result<Duration, String> {
    let duration = humantime::parse_duration(text.trim()).map_err(|_| {
        format!("{key}: expected a duration such as \"30s\", \"15m\" or \"1h\", found {text:?}")
    })?;
    if duration < bounds.min || duration > bounds.max {
        return Err(format!(
            "{key}: expected {}, found {text:?}",
            bounds.expected
        ));
    }
    Ok(duration)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_take_humantime_units() {
        assert_eq!(
            parse("max_ttl", "15m", &MAX_TTL),
            Ok(Duration::from_secs(900))
        );
        assert_eq!(
            parse("max_ttl", "1h 30m", &MAX_TTL),
            Ok(Duration::from_secs(5400))
        );
        assert_eq!(
            parse("udp_reply_ttl", "30s", &UDP_REPLY_TTL),
            Ok(Duration::from_secs(30))
        );
    }

    #[test]
    fn duration_without_unit_is_refused() {
        let message = parse("max_ttl", "15", &MAX_TTL).unwrap_err();

        assert_eq!(
            message,
            "max_ttl: expected a duration such as \"30s\", \"15m\" or \"1h\", found \"15\""
        );
    }

    #[test]
    fn durations_outside_their_bounds_are_refused() {
        assert!(parse("max_ttl", "0s", &MAX_TTL).is_err());
        assert!(parse("max_ttl", "25h", &MAX_TTL).is_err());
        assert!(parse("max_ttl", "24h", &MAX_TTL).is_ok());
        assert!(parse("udp_reply_ttl", "500ms", &UDP_REPLY_TTL).is_err());
        assert!(parse("udp_reply_ttl", "2h", &UDP_REPLY_TTL).is_err());
    }
}
