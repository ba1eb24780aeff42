//! `portguard reload --confirm-within`: a reload that goes back to the policy before it unless
//! the operator confirms it in time, the way back from a policy that cuts them off.

use std::{
    process::{Command, Output},
    time::Duration,
};

use anyhow::Context as _;
use portguard_tests::{
    Agent, Lab,
    agent::control_socket,
    lab::WEB_POLICY,
    lab::{Family, any},
    portguard_bin,
    probe::{ANSWER_WAIT, Probe, tcp_probe},
    servers::TcpServer,
};

const BEFORE: &str = WEB_POLICY;

/// The same, and a second port.
fn after() -> String {
    format!("{BEFORE}\n[[endpoint]]\nname = \"admin\"\nport = 9090\nprotocol = \"tcp\"\n")
}

/// Runs `portguard ARGS --control-socket SOCKET` against the agent.
fn cli(agent: &Agent, lab: &Lab, args: &[&str]) -> anyhow::Result<Output> {
    Command::new(portguard_bin()?)
        .args(args)
        .arg("--control-socket")
        .arg(control_socket(agent.policy(), lab.host.name()))
        .output()
        .context("run portguard")
}

fn probe_admin(lab: &Lab) -> Probe {
    tcp_probe(&lab.client, Family::V4.host(9090), ANSWER_WAIT)
}

#[test]
fn an_unconfirmed_reload_is_rolled_back() -> anyhow::Result<()> {
    let lab = Lab::new("unconfirmed_reload_rolled_back")?;
    let _admin = TcpServer::start(&lab.host, any(9090))?;
    let mut agent = lab.start_agent(BEFORE)?;
    agent.wait_for_event("agent.ready", Duration::from_secs(10))?;
    assert_eq!(probe_admin(&lab), Probe::Filtered);

    lab.write_policy("policy.toml", &after())?;
    let output = cli(&agent, &lab, &["reload", "--confirm-within", "3s"])?;
    assert!(
        output.status.success(),
        "reload: {}\n{}",
        String::from_utf8_lossy(&output.stderr),
        agent.report()
    );
    assert!(String::from_utf8_lossy(&output.stdout).contains("portguard confirm"));
    agent.wait_for(
        "policy.loaded of generation 2",
        Duration::from_secs(5),
        |event| event["event"] == "policy.loaded" && event["generation"] == 2,
    )?;
    assert_eq!(probe_admin(&lab), Probe::Open, "{}", agent.report());

    // No confirmation: the policy before comes back, as a new generation.
    let rolled_back = agent.wait_for_event("policy.rolled_back", Duration::from_secs(10))?;
    assert_eq!(rolled_back["unconfirmed_generation"], 2);
    assert_eq!(rolled_back["generation"], 3);
    assert_eq!(probe_admin(&lab), Probe::Filtered, "{}", agent.report());

    // Nothing waits any more.
    let output = cli(&agent, &lab, &["confirm"])?;
    assert!(!output.status.success());
    Ok(())
}

#[test]
fn a_confirmed_reload_stays() -> anyhow::Result<()> {
    let lab = Lab::new("confirmed_reload_stays")?;
    let _admin = TcpServer::start(&lab.host, any(9090))?;
    let mut agent = lab.start_agent(BEFORE)?;
    agent.wait_for_event("agent.ready", Duration::from_secs(10))?;

    lab.write_policy("policy.toml", &after())?;
    let output = cli(&agent, &lab, &["reload", "--confirm-within", "2s"])?;
    assert!(output.status.success(), "{}", agent.report());
    let output = cli(&agent, &lab, &["confirm"])?;
    assert!(
        output.status.success(),
        "confirm: {}\n{}",
        String::from_utf8_lossy(&output.stderr),
        agent.report()
    );
    agent.wait_for_event("policy.confirmed", Duration::from_secs(5))?;

    std::thread::sleep(Duration::from_secs(3));
    assert!(
        agent.events_named("policy.rolled_back").is_empty(),
        "{}",
        agent.report()
    );
    assert_eq!(probe_admin(&lab), Probe::Open, "{}", agent.report());

    // A policy that fails validation is refused over the socket too; the one in force stays.
    lab.write_policy("policy.toml", "[guard]\ninterfaces = 7\n")?;
    let output = cli(&agent, &lab, &["reload"])?;
    assert!(!output.status.success());
    let rejected = agent.wait_for_event("policy.rejected", Duration::from_secs(5))?;
    assert_eq!(rejected["generation"], 2, "{}", agent.report());
    assert_eq!(probe_admin(&lab), Probe::Open, "{}", agent.report());
    Ok(())
}
