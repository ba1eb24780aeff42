//! Interface hot-plug: with `interfaces = ["*"]`, an interface that appears while the agent
//! runs is guarded within moments, and one that goes away is forgotten while the agent goes
//! on guarding the others.

use std::{
    net::SocketAddr,
    time::{Duration, Instant},
};

use portguard_tests::{
    Lab, Netns, TcpServer, VethPair,
    lab::{Family, any},
    probe::{ANSWER_WAIT, FILTERED_WAIT, Probe, tcp_probe},
    veth::End,
};

const POLICY: &str = r#"
[guard]
interfaces = ["*"]
mode = "enforce"

[[endpoint]]
name = "web"
port = 8080
protocol = "tcp"
"#;

/// The interface plugged in while the agent runs, and its peer in a second client namespace.
const NEW_HOST_IF: &str = "pg-hot";
const NEW_CLIENT_IF: &str = "pg-hot-c";
const NEW_HOST_V4: &str = "10.202.0.1";
const NEW_HOST_V6: &str = "fd00:202::1";

/// How long the agent may take to notice an interface, attached or gone.
const HOTPLUG_WAIT: Duration = Duration::from_secs(5);

/// The new interface's host address of `family` with `port`.
fn new_host(family: Family, port: u16) -> SocketAddr {
    let ip = match family {
        Family::V4 => NEW_HOST_V4.parse().expect("IPv4 address"),
        Family::V6 => NEW_HOST_V6.parse().expect("IPv6 address"),
    };
    SocketAddr::new(ip, port)
}

#[test]
fn interface_plugged_in_after_start_is_guarded_then_forgotten() -> anyhow::Result<()> {
    let lab = Lab::new("hotplug")?;
    let _web = TcpServer::start(&lab.host, any(8080))?;
    let _db = TcpServer::start(&lab.host, any(5432))?;
    let mut agent = lab.start_agent(POLICY)?;
    let second_client = Netns::new(format!("pgt-hotplug-{}-c2", std::process::id()))?;

    // Plug in: a veth between the host namespace and a second client namespace.
    let plugged_at = Instant::now();
    let veth = VethPair::new(
        End {
            netns: &lab.host,
            name: NEW_HOST_IF,
            addresses: &[&format!("{NEW_HOST_V4}/24"), &format!("{NEW_HOST_V6}/64")],
        },
        End {
            netns: &second_client,
            name: NEW_CLIENT_IF,
            addresses: &["10.202.0.2/24", "fd00:202::2/64"],
        },
    )?;
    let ifindex = lab.host.ifindex(NEW_HOST_IF)?;
    let attached = agent.wait_for(
        &format!("guard.attached with hotplug on {NEW_HOST_IF}"),
        HOTPLUG_WAIT,
        |event| {
            event["event"] == "guard.attached"
                && event["interface"] == NEW_HOST_IF
                && event["hotplug"] == true
        },
    )?;
    println!(
        "hotplug: {NEW_HOST_IF} guarded {:?} after `ip link add` (includes addressing it)",
        plugged_at.elapsed()
    );
    assert_eq!(attached["ifindex"], ifindex, "{attached}");
    assert_eq!(attached["mode"], "enforce", "{attached}");
    let link = lab.host.ip(&["-d", "link", "show", "dev", NEW_HOST_IF])?;
    assert!(
        link.contains("xdp"),
        "no XDP program on {NEW_HOST_IF}:\n{link}"
    );

    // Guarded: the declared port answers, an undeclared one is dropped.
    for family in Family::BOTH {
        let declared = tcp_probe(&second_client, new_host(family, 8080), ANSWER_WAIT);
        assert_eq!(
            declared,
            Probe::Open,
            "{family:?} 8080/tcp over {NEW_HOST_IF}\n{}",
            agent.report()
        );
        let undeclared = tcp_probe(&second_client, new_host(family, 5432), FILTERED_WAIT);
        assert_eq!(
            undeclared,
            Probe::Filtered,
            "{family:?} 5432/tcp over {NEW_HOST_IF}\n{}",
            agent.report()
        );
    }

    // Unplug: the agent forgets the interface and keeps guarding the lab's own.
    let unplugged_at = Instant::now();
    drop(veth);
    let detached = agent.wait_for(
        &format!("guard.detached of {NEW_HOST_IF}"),
        HOTPLUG_WAIT,
        |event| event["event"] == "guard.detached" && event["ifindex"] == ifindex,
    )?;
    println!(
        "hotplug: {NEW_HOST_IF} forgotten {:?} after `ip link del`",
        unplugged_at.elapsed()
    );
    assert_eq!(detached["reason"], "interface_removed", "{detached}");
    assert_eq!(detached["interface"], NEW_HOST_IF, "{detached}");
    assert!(agent.is_running(), "{}", agent.report());

    assert!(lab.host_has_xdp()?, "{}", lab.host_link()?);
    for family in Family::BOTH {
        let declared = tcp_probe(&lab.client, family.host(8080), ANSWER_WAIT);
        assert_eq!(
            declared,
            Probe::Open,
            "{family:?} 8080/tcp\n{}",
            agent.report()
        );
        let undeclared = tcp_probe(&lab.client, family.host(5432), FILTERED_WAIT);
        assert_eq!(
            undeclared,
            Probe::Filtered,
            "{family:?} 5432/tcp\n{}",
            agent.report()
        );
    }
    Ok(())
}
