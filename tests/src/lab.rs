//! The topology of every end-to-end test: a host namespace, where the agent runs, and a client
//! namespace, joined by one veth pair with IPv4 and IPv6 addresses on both ends. The client
//! has a second address of each family, for tests of source prefixes.

use std::{
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr},
    path::PathBuf,
    time::Duration,
};

use anyhow::Context as _;
use tempfile::TempDir;

use crate::{
    agent::PIN_MOUNT,
    agent::{Agent, portguard_bin},
    netns::Netns,
    pins::PinMount,
    require_root,
    veth::{End, VethPair},
};

pub const HOST_IF: &str = "pg-host";
pub const CLIENT_IF: &str = "pg-client";

pub const HOST_V4: Ipv4Addr = Ipv4Addr::new(10, 201, 0, 1);
pub const CLIENT_V4: Ipv4Addr = Ipv4Addr::new(10, 201, 0, 2);
pub const CLIENT_V4_OTHER: Ipv4Addr = Ipv4Addr::new(10, 201, 0, 3);
pub const SUBNET_V4: &str = "10.201.0.0/24";

pub const HOST_V6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0x201, 0, 0, 0, 0, 0, 1);
pub const CLIENT_V6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0x201, 0, 0, 0, 0, 0, 2);
pub const CLIENT_V6_OTHER: Ipv6Addr = Ipv6Addr::new(0xfd00, 0x201, 0, 0, 0, 0, 0, 3);
pub const SUBNET_V6: &str = "fd00:201::/64";

/// How long the agent may take to load its programs and attach.
pub const AGENT_START: Duration = Duration::from_secs(30);

/// An address family; most tests run on both.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Family {
    V4,
    V6,
}

impl Family {
    pub const BOTH: [Family; 2] = [Family::V4, Family::V6];

    /// The host's address with `port`.
    pub fn host(self, port: u16) -> SocketAddr {
        match self {
            Family::V4 => SocketAddr::from((HOST_V4, port)),
            Family::V6 => SocketAddr::from((HOST_V6, port)),
        }
    }

    /// The client's first address with `port`.
    pub fn client(self, port: u16) -> SocketAddr {
        match self {
            Family::V4 => SocketAddr::from((CLIENT_V4, port)),
            Family::V6 => SocketAddr::from((CLIENT_V6, port)),
        }
    }

    /// The client's second address.
    pub fn client_other(self) -> IpAddr {
        match self {
            Family::V4 => CLIENT_V4_OTHER.into(),
            Family::V6 => CLIENT_V6_OTHER.into(),
        }
    }

    /// "ipv4" or "ipv6", as the agent's events write it.
    pub fn name(self) -> &'static str {
        match self {
            Family::V4 => "ipv4",
            Family::V6 => "ipv6",
        }
    }
}

/// The smallest policy of the end-to-end tests: every interface guarded, 8080/tcp open.
pub const WEB_POLICY: &str = r#"
[guard]
interfaces = ["*"]

[[endpoint]]
name = "web"
port = 8080
protocol = "tcp"
"#;

/// Both wildcard addresses on `port`: one dual-stack socket takes IPv4 and IPv6.
pub fn any(port: u16) -> SocketAddr {
    SocketAddr::from((Ipv6Addr::UNSPECIFIED, port))
}

/// A host and a client namespace joined by veth, and a folder for policy files. Dropping it
/// removes them all; drop the agent first (declare it after the lab).
pub struct Lab {
    // Fields drop in this order: the link, then the namespaces, then the folder.
    _veth: VethPair,
    pub host: Netns,
    pub client: Netns,
    _pins: PinMount,
    dir: TempDir,
}

impl Lab {
    /// Builds the topology for the test `test`; namespaces are named `pgt-TEST-PID-{h,c}`.
    pub fn new(test: &str) -> anyhow::Result<Self> {
        require_root()?;
        portguard_bin()?;

        let tag: String = test
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
            .take(40)
            .collect();
        let prefix = format!("pgt-{tag}-{}", std::process::id());
        let host = Netns::new(format!("{prefix}-h"))?;
        let client = Netns::new(format!("{prefix}-c"))?;

        let (host_v4, host_v6) = (format!("{HOST_V4}/24"), format!("{HOST_V6}/64"));
        // The second addresses are never the default source: IPv4 takes the first address of
        // a subnet, and IPv6 avoids a deprecated one (preferred lifetime 0) unless bound to it.
        let client_addresses = [
            format!("{CLIENT_V4}/24"),
            format!("{CLIENT_V4_OTHER}/24"),
            format!("{CLIENT_V6}/64"),
            format!("{CLIENT_V6_OTHER}/64 preferred_lft 0"),
        ];
        let client_addresses: Vec<&str> = client_addresses.iter().map(String::as_str).collect();
        let veth = VethPair::new(
            End {
                netns: &host,
                name: HOST_IF,
                addresses: &[&host_v4, &host_v6],
            },
            End {
                netns: &client,
                name: CLIENT_IF,
                addresses: &client_addresses,
            },
        )
        .context("join the host and client namespaces")?;

        let dir = tempfile::Builder::new()
            .prefix("pgt-")
            .tempdir()
            .context("make a temp folder")?;
        // The agents' pins live on a bpffs of the lab's own (see `agent::pin_dir`).
        let pins = PinMount::new(&dir.path().join(PIN_MOUNT))?;
        Ok(Self {
            _veth: veth,
            host,
            client,
            _pins: pins,
            dir,
        })
    }

    /// Writes a policy file into the lab's folder and returns its path.
    pub fn write_policy(&self, name: &str, text: &str) -> anyhow::Result<PathBuf> {
        let path = self.dir.path().join(name);
        std::fs::write(&path, text).with_context(|| format!("write {}", path.display()))?;
        Ok(path)
    }

    /// Starts the agent in the host namespace with `policy` (TOML), and waits until it has
    /// attached to the host's end of the veth.
    pub fn start_agent(&self, policy: &str) -> anyhow::Result<Agent> {
        let path = self.write_policy("policy.toml", policy)?;
        let mut agent = Agent::start(&self.host, &path)?;
        agent.wait_for(
            &format!("guard.attached on {HOST_IF}"),
            AGENT_START,
            |event| event["event"] == "guard.attached" && event["interface"] == HOST_IF,
        )?;
        Ok(agent)
    }

    /// Whether `ip -d link show` reports an XDP program on the host's end of the veth.
    pub fn host_has_xdp(&self) -> anyhow::Result<bool> {
        let shown = self.host.ip(&["-d", "link", "show", "dev", HOST_IF])?;
        Ok(shown.contains("xdp"))
    }

    /// The host's end of the veth, as `ip -d link show` prints it.
    pub fn host_link(&self) -> anyhow::Result<String> {
        self.host.ip(&["-d", "link", "show", "dev", HOST_IF])
    }
}
