//! `portguard status` tells what the kernel enforces, checked against the kernel itself:
//! yes while the guard is attached, and no (exit 1) once its XDP link is gone.

use std::{
    process::{Command, Output},
    time::Duration,
};

use anyhow::Context as _;
use portguard_tests::{
    Agent, Lab,
    agent::control_socket,
    http::{Request, exchange},
    in_netns,
    lab::WEB_POLICY,
    links::xdp_and_tcx_links,
    portguard_bin,
};
use serde_json::Value;

const POLICY: &str = WEB_POLICY;

/// `portguard status --json`, run inside the host namespace (netlink and tcx are per
/// namespace), with the agent's control socket.
fn status(lab: &Lab, agent: &Agent) -> anyhow::Result<(Output, Value)> {
    let socket = control_socket(agent.policy(), lab.host.name());
    let output = Command::new("ip")
        .args(["netns", "exec", lab.host.name()])
        .arg(portguard_bin()?)
        .args(["status", "--json", "--control-socket"])
        .arg(&socket)
        .output()
        .context("run portguard status")?;
    let json = serde_json::from_slice(&output.stdout).unwrap_or(Value::Null);
    Ok((output, json))
}

#[test]
fn status_reports_the_guard_the_kernel_runs() -> anyhow::Result<()> {
    let lab = Lab::new("status_reports")?;
    let mut agent = lab.start_agent(POLICY)?;
    agent.wait_for_event("agent.ready", Duration::from_secs(10))?;

    let (output, status) = status(&lab, &agent)?;

    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "status exited {}: {status:#} {stderr}",
        output.status
    );
    assert_eq!(status["enforcing"], true, "{status:#}");
    assert_eq!(status["mode_in_kernel"], "enforce");
    assert_eq!(status["generation_in_kernel"], 1);
    let interfaces = status["interfaces"].as_array().context("interfaces")?;
    assert_eq!(interfaces.len(), 1, "{status:#}");
    assert_eq!(interfaces[0]["xdp_attached"], true);
    assert_eq!(interfaces[0]["egress_attached"], true);
    let attached = agent.wait_for_event("guard.attached", Duration::ZERO)?;
    assert_eq!(interfaces[0]["link_id"], attached["link_id"]);
    assert_eq!(
        status["pin_dir"],
        portguard_tests::agent::pin_dir(agent.policy(), lab.host.name())
            .display()
            .to_string()
    );
    assert!(status["ledger_error"].is_null(), "{status:#}");
    Ok(())
}

#[test]
fn status_says_no_when_the_kernel_lost_the_guard() -> anyhow::Result<()> {
    let Some(before) = xdp_and_tcx_links()? else {
        panic!("this test needs bpftool (cargo xtask setup installs it)");
    };
    let lab = Lab::new("status_says_no")?;
    let mut agent = lab.start_agent(POLICY)?;
    agent.wait_for_event("agent.ready", Duration::from_secs(10))?;
    let after = xdp_and_tcx_links()?.unwrap_or_default();
    let ours: Vec<_> = after
        .iter()
        .filter(|link| link.kind == "xdp" && link.is_portguard() && !before.contains(link))
        .collect();
    assert_eq!(
        ours.len(),
        1,
        "one new portguard XDP link expected: {after:?}"
    );

    // Someone removes the XDP link behind the agent's back.
    let detached = Command::new("bpftool")
        .args(["link", "detach", "id", &ours[0].id.to_string()])
        .status()?;
    assert!(detached.success(), "bpftool link detach failed");

    let (output, status) = status(&lab, &agent)?;
    assert_eq!(output.status.code(), Some(1), "{status:#}");
    assert_eq!(status["enforcing"], false);
    assert_eq!(status["interfaces"][0]["xdp_attached"], false, "{status:#}");
    Ok(())
}

#[test]
fn metrics_expose_the_kernels_counters() -> anyhow::Result<()> {
    let lab = Lab::new("metrics_expose")?;
    let policy = format!("{POLICY}\n[events]\nmetrics = \"127.0.0.1:9464\"\n");
    let mut agent = lab.start_agent(&policy)?;
    agent.wait_for_event("agent.ready", Duration::from_secs(10))?;
    agent.wait_for_event("metrics.listening", Duration::from_secs(5))?;

    // The listener is on the host namespace's loopback.
    let text = in_netns(lab.host.name(), || -> anyhow::Result<String> {
        let mut stream = std::net::TcpStream::connect("127.0.0.1:9464")?;
        stream.set_read_timeout(Some(Duration::from_secs(5)))?;
        let response = exchange(
            &mut stream,
            &Request::new("GET", "127.0.0.1:9464", "/metrics"),
        )?;
        anyhow::ensure!(
            response.status == 200,
            "metrics answered {}",
            response.status
        );
        Ok(response.text())
    })??;

    assert!(
        text.contains("portguard_packets_total{reason=\"port_closed\",verdict=\"drop\"}"),
        "{text}"
    );
    assert!(text.contains("portguard_policy_generation 1"), "{text}");
    Ok(())
}
