//! The policy file: TOML in, a validated [`Policy`] out, with every problem located in the file.
//!
//! Parsing happens in two passes. `raw` deserializes the TOML into loose shapes that keep the
//! byte span of every value, so that typos and syntax errors stop at the first one. Then
//! `validate` turns those shapes into the types below, collecting every semantic problem of the
//! file before refusing it. The rest of the agent trusts a `Policy` and never looks at TOML.

mod auth;
mod duration;
mod error;
mod fields;
mod network;
mod ports;
mod raw;
mod rules;
mod validate;
mod warnings;

#[cfg(test)]
mod tests;

use std::fs;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use ipnet::IpNet;

pub use auth::{Algorithm, Auth, Issuer};
pub use error::{Location, PolicyError, Problem};
pub use ports::{PortRange, Protocol};
pub use warnings::{SessionEnv, Warning};

/// The most (port × source prefix) entries all endpoints together may expand to in the kernel.
pub const MAX_ENDPOINT_ENTRIES: u64 = 65_536;

/// A validated policy file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    /// The file the policy was read from, for messages.
    pub path: PathBuf,
    pub guard: Guard,
    /// Ports that are always open, in file order.
    pub endpoints: Vec<Endpoint>,
    /// The agent's token endpoint; required as soon as there is an issuer or a gate.
    pub auth: Option<Auth>,
    pub issuers: Vec<Issuer>,
    /// Ports that a token opens, in file order.
    pub gates: Vec<Gate>,
    pub events: Events,
    /// Where the parts above were written, so that warnings can point back at the file.
    pub locations: Locations,
}

/// The `[guard]` table: where and how the guard runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Guard {
    pub interfaces: Interfaces,
    pub mode: Mode,
    pub icmp: IcmpPolicy,
    /// How long a UDP flow that the host started stays open to replies.
    pub udp_reply_ttl: Duration,
}

/// The interfaces the guard attaches to. Loopback is never guarded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Interfaces {
    /// Every interface but loopback, written `["*"]`.
    All,
    Named(Vec<String>),
}

/// Whether dropped connections are dropped, or only reported.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Mode {
    #[default]
    Enforce,
    Monitor,
}

/// Which ICMP messages pass the guard.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum IcmpPolicy {
    /// Error and path-MTU messages, which the network needs to work; echo requests are dropped.
    #[default]
    Essential,
    /// Every ICMP message, echo requests too.
    All,
}

/// An `[[endpoint]]`: a port that is always open to the listed sources.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    pub name: String,
    pub ports: PortRange,
    pub protocol: Protocol,
    /// Source prefixes allowed in; every address when the key is absent.
    pub from: Vec<IpNet>,
}

/// A `[[gate]]`: a port that opens for the holder of a token with the gate's scope.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Gate {
    pub name: String,
    pub ports: PortRange,
    pub protocol: Protocol,
    /// The scope a token must carry to open this gate.
    pub scope: String,
    /// The longest a grant may last, whatever the token's own expiry.
    pub max_ttl: Option<Duration>,
    pub on_expiry: OnExpiry,
    /// Names of the `[[issuer]]` tables whose tokens open this gate; empty means any issuer.
    pub issuers: Vec<String>,
}

/// What happens to open connections when their grant expires.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum OnExpiry {
    /// Established connections live on; only new ones are refused.
    #[default]
    Keep,
    /// Established connections are cut too.
    Cut,
}

/// The `[events]` table: where the agent reports what it did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Events {
    /// A JSON-lines file of decisions and grants.
    pub file: Option<PathBuf>,
    /// The address the Prometheus metrics listener binds.
    pub metrics: Option<SocketAddr>,
}

/// Where the parts of a policy were written. A policy built by hand has none, and its warnings
/// then point at line 1, column 1.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Locations {
    /// The value of `mode`, when the key is written.
    pub mode: Option<Location>,
    /// The value of `interfaces`, when the key is written.
    pub interfaces: Option<Location>,
    /// One per endpoint, in the order of `Policy::endpoints`.
    pub endpoints: Vec<EndpointLocation>,
    /// The `[[gate]]` header of each gate, in the order of `Policy::gates`.
    pub gates: Vec<Location>,
}

/// Where one endpoint was written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EndpointLocation {
    /// The `[[endpoint]]` header.
    pub table: Location,
    /// The value of `from`, when the key is written.
    pub from: Option<Location>,
}

impl Default for Guard {
    fn default() -> Self {
        Self {
            interfaces: Interfaces::All,
            mode: Mode::default(),
            icmp: IcmpPolicy::default(),
            udp_reply_ttl: Duration::from_secs(30),
        }
    }
}

impl Endpoint {
    /// The sources an endpoint without `from` is open to: every address of both families.
    pub fn anywhere() -> Vec<IpNet> {
        vec![
            IpNet::V4(ipnet::Ipv4Net::default()),
            IpNet::V6(ipnet::Ipv6Net::default()),
        ]
    }

    /// Whether any source address at all may reach this endpoint.
    pub fn is_open_to_everyone(&self) -> bool {
        self.from.iter().any(|prefix| prefix.prefix_len() == 0)
    }
}

impl Mode {
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::Enforce => "enforce",
            Self::Monitor => "monitor",
        }
    }
}

impl Policy {
    /// Reads and validates the policy file at `path`.
    pub fn load(path: &Path) -> Result<Policy, PolicyError> {
        let text = fs::read_to_string(path).map_err(|source| PolicyError::Read {
            path: path.to_owned(),
            source,
        })?;
        Self::parse(path, &text)
    }

    /// Validates a policy from its text; `path` only names the file in messages.
    pub fn parse(path: &Path, text: &str) -> Result<Policy, PolicyError> {
        let invalid = |problems| PolicyError::Invalid {
            path: path.to_owned(),
            problems,
        };

        let raw =
            toml::from_str(text).map_err(|error| invalid(vec![error::syntax(text, &error)]))?;
        validate::validate(path, &raw, text).map_err(invalid)
    }

    /// The risks this policy takes, given the session that is about to apply it.
    pub fn warnings(&self, env: &SessionEnv) -> Vec<Warning> {
        warnings::collect(self, env)
    }
}
