//! The agent's life: what it reports when it starts, how it refuses a malformed policy, the
//! guard it leaves enforcing when stopped (until `portguard uninstall`), and monitor mode,
//! which reports drops without dropping.

use std::time::Duration;

use portguard_tests::{
    Agent, Lab, TcpServer, UdpServer,
    agent::{control_socket, pin_dir},
    lab::WEB_POLICY,
    lab::{Family, HOST_IF, any},
    links::xdp_and_tcx_links,
    portguard_bin,
    probe::{ANSWER_WAIT, Probe, tcp_probe, udp_request},
};

const POLICY: &str = WEB_POLICY;

#[test]
fn agent_reports_start_policy_and_attachment() -> anyhow::Result<()> {
    let lab = Lab::new("agent_reports_start")?;
    let agent = lab.start_agent(POLICY)?;

    let events = agent.events();
    let position = |name: &str| events.iter().position(|event| event["event"] == name);
    let (started, loaded, attached) = (
        position("agent.started"),
        position("policy.loaded"),
        position("guard.attached"),
    );
    assert!(
        started.is_some() && started < loaded && loaded < attached,
        "expected agent.started, policy.loaded, guard.attached in that order\n{}",
        agent.report()
    );

    let attached = &events[attached.expect("checked above")];
    assert_eq!(attached["interface"], HOST_IF);
    let mode = attached["xdp_mode"].as_str().unwrap_or_default();
    assert!(matches!(mode, "native" | "generic"), "xdp_mode {mode:?}");
    for event in &events {
        assert!(event["ts"].is_string(), "event without ts: {event}");
    }
    Ok(())
}

#[test]
fn malformed_policy_is_rejected_and_attaches_nothing() -> anyhow::Result<()> {
    let lab = Lab::new("malformed_policy_rejected")?;
    let policy = lab.write_policy(
        "bad.toml",
        "[guard]\ninterfaces = [\"*\"]\n\n[[endpoint]]\nname = \"web\"\nport = 99999\nprotocol = \"tcp\"\n",
    )?;
    let mut agent = Agent::start(&lab.host, &policy)?;

    let status = agent.wait_exit(Duration::from_secs(10))?;
    assert!(
        !status.success(),
        "the agent accepted a port of 99999\n{}",
        agent.report()
    );

    // The value 99999 is on line 6, column 8.
    let location = format!("{}:6:8:", policy.display());
    assert!(
        agent.other_output().contains(&location),
        "stderr lacks {location}\n{}",
        agent.report()
    );
    let rejected = agent.events_named("policy.rejected");
    assert_eq!(rejected.len(), 1, "{}", agent.report());
    assert!(
        rejected[0]["reason"]
            .as_str()
            .unwrap_or_default()
            .contains(&location)
    );

    assert!(
        agent.events_named("guard.attached").is_empty(),
        "{}",
        agent.report()
    );
    assert!(
        !lab.host_has_xdp()?,
        "XDP left on {HOST_IF}:\n{}",
        lab.host_link()?
    );
    Ok(())
}

#[test]
fn a_policy_naming_a_missing_interface_is_refused_at_its_location() -> anyhow::Result<()> {
    let lab = Lab::new("missing_interface_refused")?;
    let policy = lab.write_policy(
        "missing.toml",
        "[guard]\ninterfaces = [\"pg-nope0\"]\n\n[[endpoint]]\nname = \"web\"\nport = 8080\nprotocol = \"tcp\"\n",
    )?;
    let mut agent = Agent::start(&lab.host, &policy)?;
    let status = agent.wait_exit(Duration::from_secs(20))?;
    assert!(!status.success(), "{}", agent.report());

    // The list is on line 2, from column 14.
    let location = format!("{}:2:14:", policy.display());
    let rejected = agent.wait_for_event("policy.rejected", Duration::ZERO)?;
    let reason = rejected["reason"].as_str().unwrap_or_default();
    assert!(
        reason.contains(&location) && reason.contains("pg-nope0"),
        "{reason}"
    );
    assert!(!lab.host_has_xdp()?, "{}", lab.host_link()?);
    Ok(())
}

#[test]
fn sigterm_leaves_the_guard_and_uninstall_removes_it() -> anyhow::Result<()> {
    let lab = Lab::new("sigterm_leaves_the_guard")?;
    let ifindex = lab.host.ifindex(HOST_IF)?;
    // bpftool shows what `ip link` cannot: the tcx egress link.
    let before = xdp_and_tcx_links()?;

    let mut agent = lab.start_agent(POLICY)?;
    assert!(
        lab.host_has_xdp()?,
        "no XDP on {HOST_IF} while running:\n{}",
        lab.host_link()?
    );
    let ours: Vec<_> = match (&before, xdp_and_tcx_links()?) {
        (Some(before), Some(now)) => now
            .into_iter()
            .filter(|link| {
                link.is_portguard() && link.ifindex.is_none_or(|index| index == u64::from(ifindex))
            })
            .filter(|link| !before.iter().any(|old| old.id == link.id))
            .collect(),
        _ => Vec::new(),
    };
    if before.is_some() {
        for kind in ["xdp", "tcx"] {
            assert!(
                ours.iter().any(|link| link.kind == kind),
                "no {kind} link for {HOST_IF}: {ours:?}"
            );
        }
    }

    let status = agent.stop()?;
    assert!(
        status.success(),
        "the agent exited with {status}\n{}",
        agent.report()
    );
    let stopping = agent.wait_for_event("agent.stopping", Duration::ZERO)?;
    assert_eq!(stopping["guard"], "enforcing", "{}", agent.report());
    let kept = agent.events_named("guard.kept");
    assert!(
        kept.iter().any(|event| event["interface"] == HOST_IF),
        "{}",
        agent.report()
    );
    assert!(
        agent.events_named("guard.detached").is_empty(),
        "{}",
        agent.report()
    );

    // The agent is gone; the guard is not.
    assert!(
        lab.host_has_xdp()?,
        "XDP gone from {HOST_IF} after SIGTERM:\n{}",
        lab.host_link()?
    );
    if let Some(after) = xdp_and_tcx_links()? {
        for link in &ours {
            assert!(
                after.iter().any(|now| now.id == link.id),
                "link {link:?} gone after SIGTERM"
            );
        }
    }
    let _db = TcpServer::start(&lab.host, any(5432))?;
    for family in Family::BOTH {
        assert_eq!(
            tcp_probe(&lab.client, family.host(5432), ANSWER_WAIT),
            Probe::Filtered,
            "{family:?} 5432/tcp with the agent stopped"
        );
    }

    // `portguard status` says so, from the pins, and exits 1 (no agent).
    let pin_dir = pin_dir(agent.policy(), lab.host.name());
    let socket = control_socket(agent.policy(), lab.host.name());
    let status = std::process::Command::new("ip")
        .args(["netns", "exec", lab.host.name()])
        .arg(portguard_bin()?)
        .args(["status", "--json", "--pin-dir"])
        .arg(&pin_dir)
        .arg("--control-socket")
        .arg(&socket)
        .output()?;
    assert!(!status.status.success());
    let json: serde_json::Value = serde_json::from_slice(&status.stdout)?;
    let pinned = &json["pinned"];
    assert_eq!(pinned["mode_in_kernel"], "enforce", "{json:#}");
    assert_eq!(pinned["generation_in_kernel"], 1, "{json:#}");
    let links = pinned["links"].as_array().cloned().unwrap_or_default();
    assert_eq!(links.len(), 2, "{json:#}");
    for link in &links {
        assert_eq!(link["interface"], HOST_IF, "{json:#}");
        assert_eq!(link["attached"], true, "{json:#}");
    }

    // Only `portguard uninstall` removes it.
    let output = std::process::Command::new(portguard_bin()?)
        .arg("uninstall")
        .arg("--pin-dir")
        .arg(&pin_dir)
        .arg("--control-socket")
        .arg(&socket)
        .output()?;
    assert!(
        output.status.success(),
        "uninstall: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(!pin_dir.exists(), "{} left", pin_dir.display());
    assert!(
        !lab.host_has_xdp()?,
        "XDP left on {HOST_IF} after uninstall:\n{}",
        lab.host_link()?
    );
    if let Some(after) = xdp_and_tcx_links()? {
        let left: Vec<_> = ours
            .iter()
            .filter(|link| after.iter().any(|now| now.id == link.id))
            .collect();
        assert!(left.is_empty(), "links left after uninstall: {left:?}");
    }
    for family in Family::BOTH {
        assert_eq!(
            tcp_probe(&lab.client, family.host(5432), ANSWER_WAIT),
            Probe::Open,
            "{family:?} 5432/tcp after uninstall"
        );
    }

    // Twice is fine: nothing is left to remove.
    let again = std::process::Command::new(portguard_bin()?)
        .args(["uninstall", "--pin-dir"])
        .arg(&pin_dir)
        .arg("--control-socket")
        .arg(&socket)
        .output()?;
    assert!(again.status.success());
    Ok(())
}

#[test]
fn monitor_mode_passes_everything_and_reports_would_be_drops() -> anyhow::Result<()> {
    let lab = Lab::new("monitor_mode_passes_everything")?;
    let _db = TcpServer::start(&lab.host, any(5432))?;
    let _syslog = [
        UdpServer::echo(&lab.host, Family::V4.host(5514))?,
        UdpServer::echo(&lab.host, Family::V6.host(5514))?,
    ];
    let mut agent = lab.start_agent(&POLICY.replace("[guard]", "[guard]\nmode = \"monitor\""))?;

    for family in Family::BOTH {
        let probe = tcp_probe(&lab.client, family.host(5432), ANSWER_WAIT);
        assert_eq!(
            probe,
            Probe::Open,
            "{family:?} 5432/tcp in monitor mode\n{}",
            agent.report()
        );
        let answer = udp_request(&lab.client, family.host(5514), b"ping", ANSWER_WAIT)?;
        assert!(
            answer.is_some(),
            "{family:?} 5514/udp in monitor mode\n{}",
            agent.report()
        );

        for (protocol, port) in [("tcp", 5432), ("udp", 5514)] {
            agent.wait_for(
                &format!("flow.blocked {family:?} {port}/{protocol}"),
                ANSWER_WAIT,
                |event| {
                    event["event"] == "flow.blocked"
                        && event["family"] == family.name()
                        && event["protocol"] == protocol
                        && event["destination_port"] == port
                        && event["reason"] == "port_closed"
                        && event["dropped"] == false
                },
            )?;
        }
    }
    let dropped: Vec<_> = agent
        .events_named("flow.blocked")
        .into_iter()
        .filter(|event| event["dropped"] != false)
        .collect();
    assert!(dropped.is_empty(), "monitor mode dropped: {dropped:?}");
    Ok(())
}
