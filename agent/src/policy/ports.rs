//! Transport protocols and port ranges, and how the policy file writes them.

use std::fmt;
use std::ops::RangeInclusive;

use toml::Value;

/// The transport protocol an endpoint or a gate applies to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Protocol {
    Tcp,
    Udp,
}

/// An inclusive range of ports, never empty and never containing port 0.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct PortRange {
    pub first: u16,
    pub last: u16,
}

impl Protocol {
    /// The name the policy file uses.
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::Tcp => "tcp",
            Self::Udp => "udp",
        }
    }

    /// The IP protocol number, as in the IPv4 header and the IPv6 next-header field.
    pub fn number(&self) -> u8 {
        match self {
            Self::Tcp => 6,
            Self::Udp => 17,
        }
    }
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl PortRange {
    /// A range of the one port `port`.
    pub fn single(port: u16) -> Self {
        Self {
            first: port,
            last: port,
        }
    }

    /// How many ports the range holds, at least one.
    #[expect(
        clippy::len_without_is_empty,
        reason = "a port range always holds at least one port"
    )]
    pub fn len(&self) -> usize {
        usize::from(self.last) - usize::from(self.first) + 1
    }

    pub fn contains(&self, port: u16) -> bool {
        (self.first..=self.last).contains(&port)
    }

    pub fn overlaps(&self, other: &PortRange) -> bool {
        self.first <= other.last && other.first <= self.last
    }

    /// The ports of the range, in order.
    pub fn iter(&self) -> RangeInclusive<u16> {
        self.first..=self.last
    }

    /// Reads `port = 443`, `port = "443"` or `port = "8000-8010"`; the error is the message.
    pub(super) fn from_value(value: &Value) -> Result<Self, String> {
        let range = match value {
            Value::Integer(port) => Self::single(port_number(*port)?),
            Value::String(text) => Self::from_text(text)?,
            other => return Err(expected_port(&other.to_string())),
        };

        if range.first > range.last {
            return Err(format!(
                "port: expected the first port of a range before the last, found \"{range}\""
            ));
        }
        Ok(range)
    }

    fn from_text(text: &str) -> Result<Self, String> {
        let number = |part: &str| -> Result<u16, String> {
            let port = part
                .trim()
                .parse::<i64>()
                .map_err(|_| expected_port(&format!("{text:?}")))?;
            port_number(port)
        };

        match text.split_once('-') {
            Some((first, last)) => Ok(Self {
                first: number(first)?,
                last: number(last)?,
            }),
            None => Ok(Self::single(number(text)?)),
        }
    }
}

impl IntoIterator for PortRange {
    type Item = u16;
    type IntoIter = RangeInclusive<u16>;

    fn into_iter(self) -> Self::IntoIter {
        self.iter()
    }
}

impl fmt::Display for PortRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.first == self.last {
            write!(f, "{}", self.first)
        } else {
            write!(f, "{}-{}", self.first, self.last)
        }
    }
}

fn port_number(port: i64) -> Result<u16, String> {
    match u16::try_from(port) {
        Ok(port) if port != 0 => Ok(port),
        _ => Err(format!(
            "port: expected a port from 1 to 65535, found {port}"
        )),
    }
}

fn expected_port(found: &str) -> String {
    format!("port: expected a port such as 443 or a range such as \"8000-8010\", found {found}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(value: Value) -> Result<PortRange, String> {
        PortRange::from_value(&value)
    }

    #[test]
    fn port_is_an_integer_or_a_string() {
        assert_eq!(parse(Value::Integer(443)), Ok(PortRange::single(443)));
        assert_eq!(
            parse(Value::String("443".into())),
            Ok(PortRange::single(443))
        );
        assert_eq!(
            parse(Value::String("8000-8010".into())),
            Ok(PortRange {
                first: 8000,
                last: 8010
            })
        );
    }

    #[test]
    fn port_zero_and_above_65535_are_refused() {
        assert!(
            parse(Value::Integer(0))
                .unwrap_err()
                .contains("from 1 to 65535")
        );
        assert!(
            parse(Value::Integer(65_536))
                .unwrap_err()
                .contains("found 65536")
        );
        assert!(parse(Value::String("0-10".into())).is_err());
    }

    #[test]
    fn backwards_range_is_refused() {
        let message = parse(Value::String("9000-8000".into())).unwrap_err();

        assert!(message.contains("found \"9000-8000\""), "{message}");
    }

    #[test]
    fn range_counts_and_contains_its_ends() {
        let range = PortRange {
            first: 8000,
            last: 8010,
        };

        assert_eq!(range.len(), 11);
        assert!(range.contains(8000) && range.contains(8010) && !range.contains(8011));
        assert_eq!(range.iter().count(), 11);
        assert!(range.overlaps(&PortRange::single(8010)));
        assert!(!range.overlaps(&PortRange::single(7999)));
    }
}
