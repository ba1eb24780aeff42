//! The risks a valid policy takes, which `portguard check` reports before it is applied:
//! ports open to everyone, grants without a bound, gates that never open.

use std::collections::BTreeSet;
use std::env;
use std::fmt;

use super::{Location, Mode, Policy, Protocol};

/// A risk in a policy, at the place in the file it is about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Warning {
    /// 1-based.
    pub line: usize,
    /// 1-based, in characters.
    pub column: usize,
    pub message: String,
}

/// What is known of the session that is about to apply a policy; `crate::lockout` reads it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SessionEnv {
    /// `$SSH_CONNECTION`: "client_ip client_port server_ip server_port".
    pub ssh_connection: Option<String>,
}

impl SessionEnv {
    pub fn from_process() -> Self {
        Self {
            ssh_connection: env::var("SSH_CONNECTION")
                .ok()
                .filter(|value| !value.trim().is_empty()),
        }
    }
}

impl fmt::Display for Warning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}: {}", self.line, self.column, self.message)
    }
}

/// The risks `policy` takes. Whether it would shut out the session applying it is not a
/// warning but a lockout, which `crate::lockout` judges with the guard's verdict function and
/// `check` and `run` refuse unless forced.
pub(super) fn collect(policy: &Policy, _env: &SessionEnv) -> Vec<Warning> {
    let mut warnings = Vec::new();
    let mut warn = |at: Location, message: String| {
        warnings.push(Warning {
            line: at.line,
            column: at.column,
            message,
        });
    };

    if policy.guard.mode == Mode::Monitor {
        warn(
            policy.locations.mode.unwrap_or(Location::START),
            "mode is \"monitor\": nothing is dropped, connections the policy refuses are only \
             reported"
                .to_owned(),
        );
    }

    if policy.endpoints.is_empty() {
        warn(
            Location::START,
            "no [[endpoint]] is declared: only the [auth] listener and gates open ports".to_owned(),
        );
    }

    let auth_ports: BTreeSet<u16> = policy
        .auth
        .iter()
        .flat_map(|auth| auth.listen.iter().map(|address| address.port()))
        .collect();
    for (index, endpoint) in policy.endpoints.iter().enumerate() {
        let only_auth_ports = endpoint.protocol == Protocol::Tcp
            && endpoint.ports.iter().all(|port| auth_ports.contains(&port));
        if endpoint.is_open_to_everyone() && !only_auth_ports {
            warn(
                endpoint_location(policy, index),
                format!(
                    "endpoint {:?} is open to every address on {} {}; list the sources in `from` \
                     to narrow it",
                    endpoint.name, endpoint.protocol, endpoint.ports
                ),
            );
        }
    }

    for (index, gate) in policy.gates.iter().enumerate() {
        let at = policy
            .locations
            .gates
            .get(index)
            .copied()
            .unwrap_or(Location::START);
        if gate.max_ttl.is_none() {
            let message = format!(
                "gate {:?} has no max_ttl: a grant lasts as long as the token that opened it",
                gate.name
            );
            warn(at, message);
        }
        if policy.issuers.is_empty() {
            let message = format!(
                "gate {:?} can never open: no [[issuer]] is declared to verify tokens",
                gate.name
            );
            warn(at, message);
        }
    }

    warnings.sort_by_key(|warning| (warning.line, warning.column));
    warnings
}

/// Where an endpoint's sources are written: its `from`, or its header when `from` is absent.
fn endpoint_location(policy: &Policy, index: usize) -> Location {
    policy
        .locations
        .endpoints
        .get(index)
        .map_or(Location::START, |location| {
            location.from.unwrap_or(location.table)
        })
}
