//! Lockout protection: the policies that `run` and `check` refuse unless forced, because
//! enforcing them would shut the operator out of the host. Two dangers are judged:
//! - an SSH connection to this host (this session's, or one the kernel knows of) that could
//!   not be opened again, or whose packets would be dropped at once;
//! - ICMPv6 neighbour discovery dropped, which ends every IPv6 conversation on the link.
//!
//! Each is decided as the kernel would decide it: a crafted packet judged by the guard's own
//! verdict function over the maps the policy compiles to. Monitor mode drops nothing, so a
//! policy in monitor mode never locks out; what it would cut once enforced is a warning.

mod probe;
mod sessions;

use std::{
    collections::HashSet,
    fmt,
    net::{IpAddr, Ipv6Addr},
    path::{Path, PathBuf},
};

use portguard_common::{
    maps::{Config, MODE_ENFORCE, MODE_MONITOR},
    packet::{TCP_ACK, TCP_SYN},
};
use tracing::debug;

pub use sessions::{PeerOrigin, SshPeer, ssh_peers};

use self::probe::CompiledMaps;
use crate::{
    compile::{MapEntries, compile},
    policy::{Location, Policy, PortRange, Protocol, SessionEnv},
};

/// Any generation: the verdict does not read it.
const GENERATION: u64 = 1;
/// A link-local neighbour, as neighbour discovery comes from.
const NEIGHBOUR: Ipv6Addr = Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, 1);
/// Neighbour discovery a host must receive (RFC 4861), with where it is sent. Router
/// solicitations (133) are left out: only routers need them, and the guard drops them under
/// `icmp = "essential"` on purpose.
const NEIGHBOUR_DISCOVERY: [(u8, &str, Ipv6Addr); 3] = [
    (
        134,
        "router advertisement",
        Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 1),
    ),
    (
        135,
        "neighbour solicitation",
        Ipv6Addr::new(0xff02, 0, 0, 0, 0, 1, 0xff00, 2),
    ),
    (
        136,
        "neighbour advertisement",
        Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, 2),
    ),
];

/// A way a policy would shut the operator out, at the place in the file it is about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lockout {
    /// 1-based.
    pub line: usize,
    /// 1-based, in characters.
    pub column: usize,
    pub message: String,
}

/// A policy refused because enforcing it would shut the operator out.
#[derive(Debug, thiserror::Error)]
#[error("{}", render(path, lockouts))]
pub struct LockoutRefused {
    pub path: PathBuf,
    /// Never empty.
    pub lockouts: Vec<Lockout>,
}

impl fmt::Display for Lockout {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}: {}", self.line, self.column, self.message)
    }
}

/// What enforcing `policy` as written would cut off, for these SSH connections: nothing in
/// monitor mode.
pub fn assess(policy: &Policy, peers: &[SshPeer]) -> Vec<Lockout> {
    let entries = compile(policy, GENERATION);
    judge_all(policy, peers, &entries, &entries.config)
}

/// Refuses `policy` if enforcing it would shut out one of `peers`, unless `force`. Otherwise
/// returns what to warn about: the lockouts that were forced, or, in monitor mode, what
/// switching to enforce would cut off.
pub fn review(
    policy: &Policy,
    peers: &[SshPeer],
    force: bool,
) -> Result<Vec<Lockout>, LockoutRefused> {
    let entries = compile(policy, GENERATION);

    let lockouts = judge_all(policy, peers, &entries, &entries.config);
    if !lockouts.is_empty() && !force {
        return Err(LockoutRefused {
            path: policy.path.clone(),
            lockouts,
        });
    }
    if !lockouts.is_empty() {
        return Ok(with_suffix(lockouts, "; applied anyway (--force)"));
    }

    if entries.config.mode != MODE_MONITOR {
        return Ok(Vec::new());
    }
    let enforced = Config {
        mode: MODE_ENFORCE,
        ..entries.config
    };
    let once_enforced = judge_all(policy, peers, &entries, &enforced);
    Ok(with_suffix(
        once_enforced,
        "; mode is \"monitor\", so for now it is only reported",
    ))
}

/// [`review`] for the SSH connections of this host: this session's `$SSH_CONNECTION` and
/// the connections to sshd in `/proc`. `run` calls it right after loading the policy, and
/// logs the lockouts it returns as warnings.
pub fn refuse_unless_forced(policy: &Policy, force: bool) -> Result<Vec<Lockout>, LockoutRefused> {
    let peers = ssh_peers(&SessionEnv::from_process());
    debug!(peers = ?peers, force, "judging the policy for lockouts");
    review(policy, &peers, force)
}

fn judge_all(
    policy: &Policy,
    peers: &[SshPeer],
    entries: &MapEntries,
    config: &Config,
) -> Vec<Lockout> {
    let maps = CompiledMaps::new(entries);
    let mut lockouts = Vec::new();

    let mut seen = HashSet::new();
    for peer in peers {
        if seen.insert((peer.client.ip(), peer.server.port())) {
            lockouts.extend(ssh_lockout(policy, peer, config, &maps));
        }
    }

    // No policy option drops neighbour discovery today; this guards the verdict against
    // learning to.
    for (icmp_type, name, destination) in NEIGHBOUR_DISCOVERY {
        let frame = probe::icmpv6(NEIGHBOUR, destination, icmp_type);
        let decision = probe::judge(&frame, config, &maps);
        if !decision.passes(config) {
            lockouts.push(Lockout {
                line: Location::START.line,
                column: Location::START.column,
                message: format!(
                    "enforcing this policy drops ICMPv6 {name} (type {icmp_type}) from link-local \
                     neighbours ({}): IPv6 on the guarded links would stop working",
                    decision.reason.name()
                ),
            });
        }
    }

    lockouts.sort_by_key(|lockout| (lockout.line, lockout.column));
    lockouts
}

/// Whether `peer` could connect again, and keep its connection, under `config`.
fn ssh_lockout(
    policy: &Policy,
    peer: &SshPeer,
    config: &Config,
    maps: &CompiledMaps,
) -> Option<Lockout> {
    let (client, port) = (peer.client.ip(), peer.server.port());
    let established = probe::judge(&probe::tcp(peer.client, peer.server, TCP_ACK), config, maps);
    let new = probe::judge(&probe::tcp(peer.client, peer.server, TCP_SYN), config, maps);

    let consequence = if !established.passes(config) {
        format!(
            "enforcing this policy drops its packets at once ({}): tcp port {port} cuts \
             connections without a live grant",
            established.reason.name()
        )
    } else if !new.passes(config) {
        format!(
            "enforcing this policy drops new connections from {client} to tcp port {port} ({}): \
             once it ends, it cannot be opened again",
            new.reason.name()
        )
    } else {
        return None;
    };

    let connection = match peer.origin {
        PeerOrigin::ThisSession => {
            format!("this session comes over ssh from {client} to port {port}")
        }
        PeerOrigin::Kernel => format!("an ssh connection from {client} to port {port} is open"),
    };
    let at = port_location(policy, client, port);
    Some(Lockout {
        line: at.line,
        column: at.column,
        message: format!("{connection}: {consequence}"),
    })
}

/// Where to look for what shuts `client` out of tcp `port`: the `from` (or the header) of
/// the first endpoint on the port that leaves the client out, else a gate on the port, else
/// the start of the file.
fn port_location(policy: &Policy, client: IpAddr, port: u16) -> Location {
    let on_port =
        |protocol: Protocol, ports: &PortRange| protocol == Protocol::Tcp && ports.contains(port);

    let endpoint = policy.endpoints.iter().position(|endpoint| {
        on_port(endpoint.protocol, &endpoint.ports)
            && !endpoint.from.iter().any(|prefix| prefix.contains(&client))
    });
    if let Some(index) = endpoint {
        return policy
            .locations
            .endpoints
            .get(index)
            .map_or(Location::START, |location| {
                location.from.unwrap_or(location.table)
            });
    }

    policy
        .gates
        .iter()
        .position(|gate| on_port(gate.protocol, &gate.ports))
        .and_then(|index| policy.locations.gates.get(index).copied())
        .unwrap_or(Location::START)
}

fn with_suffix(lockouts: Vec<Lockout>, suffix: &str) -> Vec<Lockout> {
    lockouts
        .into_iter()
        .map(|lockout| Lockout {
            message: lockout.message + suffix,
            ..lockout
        })
        .collect()
}

fn render(path: &Path, lockouts: &[Lockout]) -> String {
    let mut lines: Vec<String> = lockouts
        .iter()
        .map(|lockout| format!("{}:{lockout}", path.display()))
        .collect();
    lines.push(format!(
        "{}: refused: enforcing this policy would shut you out; try it with mode = \"monitor\" \
         first, or pass --force to apply it anyway",
        path.display()
    ));
    lines.join("\n")
}

#[cfg(test)]
mod tests;
