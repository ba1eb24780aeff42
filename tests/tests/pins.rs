//! What an agent finds in its pin folder: a pin that another program left, or that does not
//! fit this version's maps, is reported and never reused (and the guard already in place
//! keeps enforcing); maps of an older layout are replaced without a gap.

use std::{fs, path::Path, process::Command, time::Duration};

use anyhow::{Context as _, bail};
use portguard_tests::{
    Agent, Lab,
    agent::pin_dir,
    lab::{Family, HOST_IF, WEB_POLICY, any},
    portguard_bin,
    probe::{ANSWER_WAIT, FILTERED_WAIT, Probe, tcp_probe},
    prober::{Prober, Target},
    servers::TcpServer,
};

/// The one `maps-<layout>` folder of a pin folder.
fn maps_folder(pins: &Path) -> anyhow::Result<std::path::PathBuf> {
    let mut found = Vec::new();
    for entry in fs::read_dir(pins)? {
        let path = entry?.path();
        if path
            .file_name()
            .is_some_and(|n| n.to_string_lossy().starts_with("maps-"))
        {
            found.push(path);
        }
    }
    match found.as_slice() {
        [one] => Ok(one.clone()),
        _ => bail!("expected one maps- folder in {}: {found:?}", pins.display()),
    }
}

/// Pins a new map made by bpftool, as another program would.
fn pin_foreign_map(path: &Path, value_size: u32) -> anyhow::Result<()> {
    let status = Command::new("bpftool")
        .args(["map", "create"])
        .arg(path)
        .args(["type", "array", "key", "4", "value"])
        .arg(value_size.to_string())
        .args(["entries", "1", "name", "not_portguard"])
        .status()
        .context("run bpftool (cargo xtask setup installs it)")?;
    if !status.success() {
        bail!("bpftool map create {} failed ({status})", path.display());
    }
    Ok(())
}

/// Starts an agent, stops it (the guard stays pinned), and returns it.
fn leave_a_guard(lab: &Lab) -> anyhow::Result<Agent> {
    let mut agent = lab.start_agent(WEB_POLICY)?;
    agent.wait_for_event("agent.ready", Duration::from_secs(10))?;
    let status = agent.stop()?;
    anyhow::ensure!(status.success(), "{}", agent.report());
    Ok(agent)
}

/// Starts an agent on the lab's policy and expects it to refuse to start, naming `path`.
fn expect_refusal(lab: &Lab, policy: &Path, path: &Path) -> anyhow::Result<()> {
    let mut agent = Agent::start(&lab.host, policy)?;
    let status = agent.wait_exit(Duration::from_secs(20))?;
    assert!(!status.success(), "{}", agent.report());
    let said = agent.other_output();
    assert!(
        said.contains(&path.display().to_string()) && said.contains("not pinned by"),
        "the refusal does not name {}:\n{}",
        path.display(),
        agent.report()
    );
    assert!(
        agent.events_named("guard.attached").is_empty(),
        "{}",
        agent.report()
    );
    Ok(())
}

/// The guard left in place still enforces: 8080 answers, 5432 does not.
fn still_enforcing(lab: &Lab) {
    let _db = TcpServer::start(&lab.host, any(5432));
    assert!(lab.host_has_xdp().unwrap_or(false), "the guard is gone");
    assert_eq!(
        tcp_probe(&lab.client, Family::V4.host(5432), FILTERED_WAIT),
        Probe::Filtered
    );
}

#[test]
fn a_map_pin_of_another_layout_is_refused_and_the_guard_stays() -> anyhow::Result<()> {
    let lab = Lab::new("foreign_map_pin")?;
    let agent = leave_a_guard(&lab)?;
    let pins = pin_dir(agent.policy(), lab.host.name());

    // Another program's map where the configuration is pinned.
    let config = maps_folder(&pins)?.join("PG_CONFIG");
    fs::remove_file(&config)?;
    pin_foreign_map(&config, 8)?;

    expect_refusal(&lab, agent.policy(), &config)?;
    still_enforcing(&lab);
    Ok(())
}

#[test]
fn a_link_pin_that_is_not_a_portguard_link_is_refused() -> anyhow::Result<()> {
    let lab = Lab::new("foreign_link_pin")?;
    let agent = leave_a_guard(&lab)?;
    let pins = pin_dir(agent.policy(), lab.host.name());

    // A map where a link of an interface that does not exist would be.
    let fake = pins.join("links").join("999_xdp-native");
    pin_foreign_map(&fake, 4)?;

    expect_refusal(&lab, agent.policy(), &fake)?;
    still_enforcing(&lab);
    Ok(())
}

#[test]
fn maps_of_an_older_layout_are_replaced_without_a_gap() -> anyhow::Result<()> {
    let lab = Lab::new("older_layout")?;
    let mut agent = leave_a_guard(&lab)?;
    let pins = pin_dir(agent.policy(), lab.host.name());
    let first_link = agent.wait_for_event("guard.attached", Duration::ZERO)?["link_id"].clone();

    // As if an older version had pinned its maps under another layout: the programs on the
    // links keep using them until the new agent swaps its own in.
    let current = maps_folder(&pins)?;
    let older = pins.join("maps-0000000000000000");
    fs::rename(&current, &older)
        .with_context(|| format!("rename {} (bpffs)", current.display()))?;

    let _web = TcpServer::start(&lab.host, any(8080))?;
    let (open, shut) = (Target::both(&[8080]), Target::both(&[5432, 9090]));
    let prober = Prober::start(&lab.client, &[open.clone(), shut.clone()].concat())?;
    std::thread::sleep(Duration::from_millis(300));
    let mut agent = lab.start_agent(WEB_POLICY)?;
    agent.wait_for_event("agent.ready", Duration::from_secs(10))?;
    std::thread::sleep(Duration::from_millis(300));
    let report = prober.stop()?;
    report.assert_always_passed(&open);
    report.assert_never_passed(&shut);
    let attached = agent.wait_for_event("guard.attached", Duration::ZERO)?;
    assert_eq!(attached["adopted"], true, "{}", agent.report());
    assert_eq!(attached["link_id"], first_link, "{}", agent.report());
    agent.wait_for_event("guard.old_layout_removed", Duration::ZERO)?;
    assert!(!older.exists(), "{} left", older.display());
    assert_eq!(maps_folder(&pins)?, current);

    assert_eq!(
        tcp_probe(&lab.client, Family::V4.host(8080), ANSWER_WAIT),
        Probe::Open,
        "{}",
        agent.report()
    );
    still_enforcing(&lab);
    Ok(())
}

#[test]
fn pins_of_an_interface_gone_are_replaced_when_its_index_comes_back() -> anyhow::Result<()> {
    let lab = Lab::new("reused_ifindex")?;
    let ifindex = lab.host.ifindex(HOST_IF)?.to_string();
    let _agent = leave_a_guard(&lab)?;

    // The guarded interface goes while no agent runs, and another takes its index.
    lab.host.ip(&["link", "del", HOST_IF])?;
    lab.host.ip(&[
        "link",
        "add",
        "pg-again",
        "index",
        &ifindex,
        "type",
        "veth",
        "peer",
        "name",
        "pg-again-c",
    ])?;

    let policy = lab.write_policy("policy.toml", WEB_POLICY)?;
    let mut agent = Agent::start(&lab.host, &policy)?;
    let attached = agent.wait_for(
        "guard.attached on pg-again",
        Duration::from_secs(30),
        |event| event["event"] == "guard.attached" && event["interface"] == "pg-again",
    )?;
    assert_eq!(attached["adopted"], false, "{}", agent.report());
    let status = agent.stop()?;
    assert!(status.success(), "{}", agent.report());

    // The new links were pinned where the stale ones were, and stay after the stop.
    let shown = lab.host.ip(&["-d", "link", "show", "dev", "pg-again"])?;
    assert!(shown.contains("prog/xdp"), "no guard on pg-again:\n{shown}");
    Ok(())
}

#[test]
fn one_agent_per_pin_folder() -> anyhow::Result<()> {
    let lab = Lab::new("one_agent_per_pin_folder")?;
    let mut first = lab.start_agent(WEB_POLICY)?;
    first.wait_for_event("agent.ready", Duration::from_secs(10))?;
    let pins = pin_dir(first.policy(), lab.host.name());

    // A second agent on the same folder, with a control socket of its own, would take the
    // first one's links over: it is refused before it touches them.
    let other_socket = pins.with_file_name("second.sock");
    let socket_arg = other_socket.display().to_string();
    let mut second = Agent::start_binary(
        &portguard_bin()?,
        &lab.host,
        first.policy(),
        &["--control-socket", &socket_arg],
    )?;
    let status = second.wait_exit(Duration::from_secs(20))?;
    assert!(!status.success(), "{}", second.report());
    assert!(
        second.other_output().contains("holds the pin folder"),
        "{}",
        second.report()
    );
    assert!(second.events_named("guard.attached").is_empty());

    // Nor does `uninstall` pull the guard from under a running agent.
    let uninstall = Command::new(portguard_bin()?)
        .arg("uninstall")
        .arg("--pin-dir")
        .arg(&pins)
        .arg("--control-socket")
        .arg(&other_socket)
        .output()?;
    assert!(!uninstall.status.success());
    assert!(pins.join("links").is_dir());

    assert!(first.is_running(), "{}", first.report());
    still_enforcing(&lab);
    Ok(())
}
