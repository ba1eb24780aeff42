//! Reloads (SIGHUP) change the guard in place. Hundreds of them, alternating two policies
//! under a prober, never open a port that neither policy opens nor close one that both
//! open; a malformed policy is refused and leaves the guard as it was; a gate that a reload
//! removes takes its grants with it, and the other gates keep theirs.

use std::{
    path::Path,
    time::{Duration, Instant},
};

use anyhow::Context as _;
use nix::sys::signal::Signal;
use portguard_tests::{
    Agent, Lab, TcpServer,
    gated::{Gate, GatedHost, token_tables},
    lab::{CLIENT_V4, CLIENT_V6, Family, SUBNET_V4, SUBNET_V6, any},
    oidc::{ProviderOptions, Signer},
    probe::ANSWER_WAIT,
    prober::{Prober, Target},
};

/// Open in both policies; a server listens on WEB, nothing on SSH.
const SSH: u16 = 22;
const WEB: u16 = 8080;
/// Open only in policy A, only in B.
const ONLY_A: [u16; 2] = [3000, 3001];
const ONLY_B: [u16; 2] = [4000, 4001];
/// Open in neither; a server listens on 3306.
const NEITHER: [u16; 3] = [23, 3306, 6379];
/// Open in both, from the client's first addresses in A and from the whole subnet in B: the
/// first addresses always pass, the second ones only under B.
const ADMIN: u16 = 2222;

/// Reloads in the storm.
const RELOADS: u64 = 300;
/// How long one reload may take, from SIGHUP to `policy.loaded`.
const RELOAD_WAIT: Duration = Duration::from_secs(5);
/// How long the prober watches before the storm, and after it.
const QUIET: Duration = Duration::from_millis(500);

fn endpoint(name: &str, port: u16, from: Option<[&str; 2]>) -> String {
    let mut text =
        format!("\n[[endpoint]]\nname = \"{name}\"\nport = {port}\nprotocol = \"tcp\"\n");
    if let Some([v4, v6]) = from {
        text.push_str(&format!("from = [\"{v4}\", \"{v6}\"]\n"));
    }
    text
}

fn policy(only: [u16; 2], admin_from: [&str; 2]) -> String {
    let mut text = String::from("[guard]\ninterfaces = [\"*\"]\n");
    text.push_str(&endpoint("ssh", SSH, None));
    text.push_str(&endpoint("web", WEB, None));
    for port in only {
        text.push_str(&endpoint(&format!("app-{port}"), port, None));
    }
    text.push_str(&endpoint("admin", ADMIN, Some(admin_from)));
    text
}

fn policy_a() -> String {
    let (v4, v6) = (format!("{CLIENT_V4}/32"), format!("{CLIENT_V6}/128"));
    policy(ONLY_A, [&v4, &v6])
}

fn policy_b() -> String {
    policy(ONLY_B, [SUBNET_V4, SUBNET_V6])
}

/// Replaces the policy file at once (write beside it, then rename), so that the agent never
/// reads half a file.
fn replace_policy(path: &Path, text: &str) -> anyhow::Result<()> {
    let staged = path.with_extension("toml.new");
    std::fs::write(&staged, text).with_context(|| format!("write {}", staged.display()))?;
    std::fs::rename(&staged, path)
        .with_context(|| format!("rename {} to {}", staged.display(), path.display()))
}

/// Replaces the policy, sends SIGHUP and waits for the reload that makes `generation`.
fn reload(agent: &mut Agent, text: &str, generation: u64) -> anyhow::Result<()> {
    replace_policy(agent.policy(), text)?;
    agent.signal(Signal::SIGHUP)?;
    let loaded = agent.wait_for(
        &format!("policy.loaded of generation {generation}"),
        RELOAD_WAIT,
        |event| event["event"] == "policy.loaded" && event["generation"] == generation,
    )?;
    anyhow::ensure!(loaded["reload"] == true, "not a reload: {loaded}");
    Ok(())
}

#[test]
fn reload_storm_never_opens_or_closes_what_both_policies_agree_on() -> anyhow::Result<()> {
    let lab = Lab::new("reload_storm")?;
    let _servers = [WEB, 3306]
        .map(|port| TcpServer::start(&lab.host, any(port)))
        .into_iter()
        .collect::<anyhow::Result<Vec<_>>>()?;
    let mut agent = lab.start_agent(&policy_a())?;

    let always = Target::both(&[SSH, WEB, ADMIN]);
    let never = Target::both(&NEITHER);
    let toggled = [
        Target::both(&ONLY_A),
        Target::both(&ONLY_B),
        Target::both_from_other(&[ADMIN]),
    ]
    .concat();
    let prober = Prober::start(
        &lab.client,
        &[always.clone(), never.clone(), toggled.clone()].concat(),
    )?;
    std::thread::sleep(QUIET);

    let (a, b) = (policy_a(), policy_b());
    let started = Instant::now();
    prober.mark("storm begins");
    for reloaded in 1..=RELOADS {
        let text = if reloaded % 2 == 1 { &b } else { &a };
        reload(&mut agent, text, 1 + reloaded)?;
    }
    prober.mark("storm ends");
    let took = started.elapsed();
    eprintln!("{RELOADS} reloads took {took:?}");
    std::thread::sleep(QUIET);
    let report = prober.stop()?;
    eprintln!("{}", report.summary());

    report.assert_never_passed(&never);
    report.assert_always_passed(&always);
    // The storm did change the guard: what one policy opens passed at times and not others.
    report.assert_both_seen(&toggled);

    let loaded = agent.events_named("policy.loaded");
    let last = loaded.last().context("no policy.loaded")?;
    assert_eq!(last["generation"], 1 + RELOADS, "{last}");
    assert_eq!(
        loaded.len() as u64,
        1 + RELOADS,
        "policy.loaded events: one at start and one per reload"
    );
    assert!(
        agent.events_named("policy.rejected").is_empty(),
        "{}",
        agent.report()
    );
    Ok(())
}

#[test]
fn malformed_reload_is_rejected_and_changes_nothing() -> anyhow::Result<()> {
    let lab = Lab::new("malformed_reload_rejected")?;
    let _web = TcpServer::start(&lab.host, any(WEB))?;
    let mut agent = lab.start_agent(&policy_a())?;

    let open = [Target::both(&[SSH, WEB, ADMIN]), Target::both(&ONLY_A)].concat();
    let shut = [
        Target::both(&NEITHER),
        Target::both(&ONLY_B),
        Target::both_from_other(&[ADMIN]),
    ]
    .concat();
    let prober = Prober::start(&lab.client, &[open.clone(), shut.clone()].concat())?;
    std::thread::sleep(QUIET);

    // Policy B with a port out of range: nothing of B may take effect.
    let malformed = policy_b().replace(&format!("port = {}", ONLY_B[0]), "port = 99999");
    assert_ne!(malformed, policy_b());
    prober.mark("malformed reload");
    replace_policy(agent.policy(), &malformed)?;
    agent.signal(Signal::SIGHUP)?;
    let rejected = agent.wait_for_event("policy.rejected", RELOAD_WAIT)?;
    assert_eq!(rejected["generation"], 1, "the generation kept: {rejected}");
    // The reason points at the bad value, as at start-up: `PATH:LINE:COLUMN: ...`.
    let line = 1 + malformed
        .lines()
        .position(|line| line == "port = 99999")
        .context("the malformed line")?;
    let location = format!("{}:{line}:", agent.policy().display());
    let reason = rejected["reason"].as_str().unwrap_or_default();
    assert!(
        reason.contains(&location),
        "reason {reason:?} lacks {location}"
    );
    std::thread::sleep(QUIET * 2);
    let report = prober.stop()?;

    report.assert_always_passed(&open);
    report.assert_never_passed(&shut);
    assert_eq!(
        agent.events_named("policy.loaded").len(),
        1,
        "a policy was loaded after the malformed one\n{}",
        agent.report()
    );

    // The agent is still at generation 1: the next good reload makes generation 2.
    reload(&mut agent, &policy_b(), 2)?;
    Ok(())
}

/// Two gates with grants long enough to outlive the test; a reload removes the first.
const REMOVED: Gate = Gate {
    name: "postgres",
    port: 5432,
    scope: "db:connect",
    max_ttl: "2m",
    on_expiry: "keep",
};
const KEPT: Gate = Gate {
    name: "redis",
    port: 6380,
    ..REMOVED
};

#[test]
fn reload_that_removes_a_gate_revokes_its_grants_only() -> anyhow::Result<()> {
    let mut host = GatedHost::start(
        "reload_removes_a_gate",
        &[REMOVED, KEPT],
        &ProviderOptions::default(),
    )?;
    let token = host.token(Signer::Rs256, REMOVED.scope)?;
    let mut grants = Vec::new();
    for gate in [REMOVED, KEPT] {
        for family in Family::BOTH {
            let port = format!("{}/tcp", gate.port);
            grants.push((gate.name, host.open(family, &token, &["--port", &port])?.id));
        }
    }
    let removed = Target::both(&[REMOVED.port]);
    let kept = Target::both(&[KEPT.port]);
    let prober = Prober::start(&host.lab.client, &[removed.clone(), kept.clone()].concat())?;
    std::thread::sleep(QUIET);

    // The same policy without the first gate: [auth] and [[issuer]] as they were.
    let text = format!(
        "[guard]\ninterfaces = [\"*\"]\n{}",
        token_tables(host.provider.issuer(), &host.tls, &[KEPT])
    );
    assert_ne!(text, host.policy(), "the policy did not change");
    let reloading = prober.mark("reload without the gate");
    reload(&mut host.agent, &text, 2)?;
    let reloaded = prober.mark("policy.loaded");
    for (gate, id) in &grants {
        let revoked = host
            .agent
            .events()
            .into_iter()
            .find(|event| event["event"] == "grant.revoked" && event["grant"] == id.as_str());
        if *gate == REMOVED.name {
            let revoked = match revoked {
                Some(revoked) => revoked,
                None => host
                    .agent
                    .wait_for(&format!("grant.revoked {id}"), ANSWER_WAIT, |e| {
                        e["event"] == "grant.revoked" && e["grant"] == id.as_str()
                    })?,
            };
            assert_eq!(revoked["reason"], "gate_removed", "{revoked}");
            assert_eq!(revoked["by"], "reload", "{revoked}");
        } else {
            assert_eq!(revoked, None, "a grant of a gate still there was revoked");
        }
    }
    std::thread::sleep(QUIET);
    let report = prober.stop()?;

    report.before(reloading).assert_always_passed(&removed);
    report.after(reloaded).assert_never_passed(&removed);
    report.assert_always_passed(&kept);
    let live: Vec<String> = host
        .grants()?
        .iter()
        .filter_map(|grant| grant["id"].as_str().map(str::to_owned))
        .collect();
    for (gate, id) in &grants {
        assert_eq!(
            live.contains(id),
            *gate == KEPT.name,
            "grant {id} of {gate} after the reload; live: {live:?}"
        );
    }
    Ok(())
}
