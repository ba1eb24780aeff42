//! A small kit for portguard's privileged tests: network namespaces joined by veth, servers
//! and probes that run inside them, and the agent as a child process whose events the test
//! reads. Everything it creates is removed by a guard on drop, even when a test fails.
//!
//! Tests need root. They refuse to run otherwise, and say how to run them.

pub mod agent;
pub mod dns;
pub mod gated;
pub mod http;
pub mod lab;
pub mod links;
pub mod netns;
pub mod oidc;
pub mod pins;
pub mod probe;
pub mod prober;
pub mod servers;
pub mod tls;
pub mod veth;

pub use agent::{Agent, portguard_bin};
pub use lab::{Family, Lab};
pub use netns::{Netns, in_netns};
pub use probe::{Probe, tcp_probe, tcp_probe_from};
pub use servers::{TcpServer, UdpServer};
pub use veth::VethPair;

use anyhow::bail;

/// Fails unless the process runs as root: namespaces, veth and XDP all need it.
pub fn require_root() -> anyhow::Result<()> {
    if !nix::unistd::geteuid().is_root() {
        bail!("privileged tests need root: run `cargo xtask test`");
    }
    Ok(())
}
