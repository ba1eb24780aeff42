//! The guard outlives its agent. Killed (SIGKILL) or stopped (SIGTERM), the agent leaves its
//! programs attached and its maps pinned: forbidden ports stay shut, open ones stay open, and
//! a grant still ends at its expiry, which the kernel checks. A restarted agent, of the same
//! build or the next one, adopts the pinned links without a moment unguarded. Only
//! `portguard uninstall` takes the guard away. A prober hits every port all along.

use std::{
    path::{Path, PathBuf},
    process::Output,
    thread,
    time::Duration,
};

use anyhow::{Context as _, bail};
use portguard_tests::{
    Agent, Lab, TcpServer,
    agent::{control_socket, pin_dir},
    gated::{Gate, ISSUER_NAME, portguard_open, token_tables},
    lab::{AGENT_START, Family, HOST_IF, any},
    oidc::{AUDIENCE, Provider, ProviderOptions, Signer},
    portguard_bin,
    probe::ANSWER_WAIT,
    prober::{BootTime, Prober, Report, Target},
    tls::TestTls,
};
use serde_json::Value;

/// Endpoints open to everyone: nothing listens on SSH (the host answers with a RST), a
/// server listens on WEB.
const SSH: u16 = 22;
const WEB: u16 = 8080;
/// Opened for the client's first addresses by grants short enough to expire while the agent
/// is dead.
const GATE: Gate = Gate {
    name: "postgres",
    port: 5432,
    scope: "db:connect",
    max_ttl: "5s",
    on_expiry: "keep",
};
/// Ports nothing opens; servers listen on some of them.
const SHUT: [u16; 9] = [23, 25, 80, 443, 3306, 5433, 6379, 9200, 11211];
const SHUT_LISTENING: [u16; 2] = [3306, 6379];

/// How long the prober watches the first agent at work before it is killed.
const BEFORE_KILL: Duration = Duration::from_millis(700);
/// How long the agent stays dead at least.
const DEAD_FOR: Duration = Duration::from_secs(3);
/// How long the prober watches the restarted agent.
const AFTER_RESTART: Duration = Duration::from_secs(1);
/// How far from its expiry a grant's verdict may change: the prober's timestamps and the
/// kernel's expiry are both on CLOCK_BOOTTIME, but the expiry reaches the test in
/// wall-clock milliseconds.
const EXPIRY_TOLERANCE: Duration = Duration::from_secs(1);

fn endpoints() -> String {
    format!(
        r#"
[guard]
interfaces = ["*"]

[[endpoint]]
name = "ssh"
port = {SSH}
protocol = "tcp"

[[endpoint]]
name = "web"
port = {WEB}
protocol = "tcp"
"#
    )
}

fn open_targets() -> Vec<Target> {
    Target::both(&[SSH, WEB])
}

fn shut_targets() -> Vec<Target> {
    Target::both(&SHUT)
}

/// Listeners on the web port, on `extra` ports, and on the shut ports that have one.
fn listeners(lab: &Lab, extra: &[u16]) -> anyhow::Result<Vec<TcpServer>> {
    [WEB]
        .iter()
        .chain(&SHUT_LISTENING)
        .chain(extra)
        .map(|port| TcpServer::start(&lab.host, any(*port)))
        .collect()
}

/// The one event named `name` about the host's end of the veth among `events`.
fn on_host_if<'a>(events: &'a [Value], name: &str) -> Option<&'a Value> {
    events
        .iter()
        .find(|event| event["event"] == name && event["interface"] == HOST_IF)
}

/// A grant the test opened: for whom, and when the kernel ends it.
struct Grant {
    family: Family,
    id: String,
    expires: BootTime,
}

/// The lab with the agent, an OpenID provider for the gate's tokens and the listeners.
/// Fields drop in order: the agent first, the lab last.
struct GuardedHost {
    agent: Agent,
    _servers: Vec<TcpServer>,
    provider: Provider,
    tls: TestTls,
    policy: PathBuf,
    lab: Lab,
}

impl GuardedHost {
    /// Starts the lab, the provider, and `binary` as the agent with the endpoints and the
    /// gate; waits until it guards the host and takes tokens.
    fn start(test: &str, binary: &Path) -> anyhow::Result<Self> {
        let lab = Lab::new(test)?;
        let tls = TestTls::for_lab_host()?;
        let servers = listeners(&lab, &[GATE.port])?;
        let provider = Provider::start(&lab.host, &ProviderOptions::default())?;
        let text = format!(
            "{}{}",
            endpoints(),
            token_tables(provider.issuer(), &tls, &[GATE])
        );
        let policy = lab.write_policy("policy.toml", &text)?;

        let mut agent = start_agent(binary, &lab, &policy)?;
        agent.wait_for("issuer.keys_loaded", AGENT_START, |event| {
            event["event"] == "issuer.keys_loaded" && event["issuer"] == ISSUER_NAME
        })?;
        for address in ["0.0.0.0:8443", "[::]:8443"] {
            agent.wait_for(&format!("auth.listening on {address}"), AGENT_START, |e| {
                e["event"] == "auth.listening" && e["address"] == address
            })?;
        }
        Ok(Self {
            agent,
            _servers: servers,
            provider,
            tls,
            policy,
            lab,
        })
    }

    /// Opens a grant to the gate for the client's first address of each family, and reads
    /// back when each expires.
    fn open_grants(&self) -> anyhow::Result<Vec<Grant>> {
        let token = self.provider.token(Signer::EdDsa, GATE.scope, AUDIENCE)?;
        let token_file = self.tls.dir().join("token");
        write_private(&token_file, &token)?;

        let mut opened = Vec::new();
        for family in Family::BOTH {
            let port = format!("{}/tcp", GATE.port);
            let output = portguard_open(
                &self.lab.client,
                &self.tls,
                family,
                &token_file,
                &["--port", &port],
            )?;
            let stdout = succeeded(&output, "portguard open", &self.agent)?;
            // "grant ID opens PORTS for SOURCE until EXPIRY (N s)"
            let id = stdout
                .strip_prefix("grant ")
                .and_then(|rest| rest.split_whitespace().next())
                .with_context(|| format!("read the grant id from {stdout:?}"))?;
            opened.push((family, id.to_owned()));
        }

        let listed = self.grants()?;
        opened
            .into_iter()
            .map(|(family, id)| {
                let expires_unix_ms = listed
                    .iter()
                    .find(|grant| grant["id"] == id.as_str())
                    .and_then(|grant| grant["expires_unix_ms"].as_u64())
                    .with_context(|| format!("grant {id} is not listed: {listed:?}"))?;
                Ok(Grant {
                    family,
                    id,
                    expires: BootTime::from_unix_ms(expires_unix_ms),
                })
            })
            .collect()
    }

    /// The live grants, as `portguard grants list` prints them.
    fn grants(&self) -> anyhow::Result<Vec<Value>> {
        let output = std::process::Command::new(portguard_bin()?)
            .args(["grants", "list", "--control-socket"])
            .arg(control_socket(&self.policy, self.lab.host.name()))
            .output()
            .context("run portguard grants list")?;
        succeeded(&output, "portguard grants list", &self.agent)?
            .lines()
            .map(|line| serde_json::from_str(line).with_context(|| format!("read {line:?}")))
            .collect()
    }
}

/// Starts `binary` as the agent with `policy` in the lab's host namespace, and waits until
/// it guards the host's end of the veth.
fn start_agent(binary: &Path, lab: &Lab, policy: &Path) -> anyhow::Result<Agent> {
    let mut agent = Agent::start_binary(binary, &lab.host, policy, &[])?;
    agent.wait_for(
        &format!("guard.attached on {HOST_IF}"),
        AGENT_START,
        |event| event["event"] == "guard.attached" && event["interface"] == HOST_IF,
    )?;
    Ok(agent)
}

/// Writes `text` to a new file only its owner reads, as `portguard open` wants a token file.
fn write_private(path: &Path, text: &str) -> anyhow::Result<()> {
    use std::os::unix::fs::OpenOptionsExt as _;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("create {}", path.display()))?;
    std::io::Write::write_all(&mut file, text.as_bytes())
        .with_context(|| format!("write {}", path.display()))
}

/// The trimmed stdout of a command that must have succeeded.
fn succeeded(output: &Output, what: &str, agent: &Agent) -> anyhow::Result<String> {
    let stdout = String::from_utf8_lossy(&output.stdout).trim().to_owned();
    if !output.status.success() {
        bail!(
            "{what} failed ({}): {stdout}\n{}\n{}",
            output.status,
            String::from_utf8_lossy(&output.stderr),
            agent.report()
        );
    }
    Ok(stdout)
}

/// Sleeps until `time` has come.
fn sleep_until(time: BootTime) {
    let now = BootTime::now();
    if time > now {
        thread::sleep(time.since(now));
    }
}

/// What a kill-and-restart showed: both agents' events, and the prober's report.
struct Restarted {
    host: GuardedHost,
    first_events: Vec<Value>,
    report: Report,
}

/// Runs `first` as the agent, opens grants, kills the agent with SIGKILL under the prober,
/// keeps it dead past the grants' expiry, and starts `second` in its place. Checks that the
/// guard held all along, that the grants ended on time with nobody there to end them, and
/// that `second` adopted the pinned links.
fn guard_survives_kill_and_restart(
    test: &str,
    first: &Path,
    second: &Path,
) -> anyhow::Result<Restarted> {
    let mut host = GuardedHost::start(test, first)?;
    let grants = host.open_grants()?;
    let granted: Vec<Target> = grants
        .iter()
        .map(|grant| Target::to(grant.family, GATE.port))
        .collect();
    let shut: Vec<Target> = [shut_targets(), Target::both_from_other(&[GATE.port])].concat();
    let all = [open_targets(), shut.clone(), granted].concat();
    let prober = Prober::start(&host.lab.client, &all)?;

    thread::sleep(BEFORE_KILL);
    prober.mark("SIGKILL sent");
    host.agent.kill()?;
    let killed = prober.mark("agent reaped");
    let first_events = host.agent.events();
    let (soonest, last) = (
        grants.iter().map(|grant| grant.expires).min(),
        grants.iter().map(|grant| grant.expires).max(),
    );
    let (soonest, last) = (soonest.context("no grant")?, last.context("no grant")?);
    anyhow::ensure!(
        soonest > killed + EXPIRY_TOLERANCE,
        "a grant expires {:?} after the kill, too soon to see it expire with the agent dead: \
         the setup was slow",
        soonest.since(killed)
    );
    for grant in &grants {
        prober.mark_at(
            grant.expires,
            &format!("grant {} ({:?}) expires", grant.id, grant.family),
        );
    }

    sleep_until((killed + DEAD_FOR).max(last + EXPIRY_TOLERANCE + Duration::from_millis(500)));
    prober.mark("restarting the agent");
    host.agent = start_agent(second, &host.lab, &host.policy)?;
    prober.mark("guard.attached by the restarted agent");
    thread::sleep(AFTER_RESTART);
    let report = prober.stop()?;

    // The restarted agent took over the links the first one pinned.
    let attached = on_host_if(&first_events, "guard.attached").context("first attach")?;
    assert_eq!(
        attached["adopted"], false,
        "the first agent found something to adopt: {attached}"
    );
    assert!(
        attached["link_id"].is_u64(),
        "guard.attached without a link_id: {attached}"
    );
    let events = host.agent.events();
    let adopted = on_host_if(&events, "guard.attached").context("second attach")?;
    assert_eq!(
        adopted["adopted"],
        true,
        "the restarted agent did not adopt the pinned link\n{}",
        host.agent.report()
    );
    assert_eq!(
        adopted["link_id"],
        attached["link_id"],
        "the restarted agent attached a new link instead of updating the pinned one\n{}",
        host.agent.report()
    );

    // The guard held while the agent was dead and across the restart.
    report.assert_never_passed(&shut);
    report.assert_always_passed(&open_targets());
    for grant in &grants {
        let target = Target::to(grant.family, GATE.port);
        report
            .before(grant.expires - EXPIRY_TOLERANCE)
            .assert_always_passed(&[target]);
        report
            .after(grant.expires + EXPIRY_TOLERANCE)
            .assert_never_passed(&[target]);
    }

    // The restarted agent finds in its ledger that the grants ended while it was away.
    for grant in &grants {
        let expired = host.agent.wait_for(
            &format!("grant.expired {}", grant.id),
            ANSWER_WAIT,
            |event| event["event"] == "grant.expired" && event["grant"] == grant.id.as_str(),
        )?;
        assert_eq!(expired["while_stopped"], true, "{expired}");
    }
    Ok(Restarted {
        host,
        first_events,
        report,
    })
}

#[test]
fn guard_holds_while_the_agent_is_killed_and_restarted() -> anyhow::Result<()> {
    let agent = portguard_bin()?;
    let restarted = guard_survives_kill_and_restart("guard_holds_agent_killed", &agent, &agent)?;
    eprintln!("{}", restarted.report.summary());
    Ok(())
}

/// The build an upgrade starts from: `PORTGUARD_PREVIOUS_BIN`, which `cargo xtask test`
/// builds. `None` (the test skips) when it is unset outside CI.
fn previous_build() -> anyhow::Result<Option<PathBuf>> {
    match std::env::var_os("PORTGUARD_PREVIOUS_BIN") {
        Some(path) => {
            let path = PathBuf::from(path);
            anyhow::ensure!(
                path.is_file(),
                "PORTGUARD_PREVIOUS_BIN is {}, which is not a file",
                path.display()
            );
            Ok(Some(path))
        }
        None if std::env::var_os("CI").is_some() => bail!(
            "PORTGUARD_PREVIOUS_BIN is unset: the upgrade test needs a second build of the \
             agent (`cargo xtask test` makes one)"
        ),
        None => Ok(None),
    }
}

#[test]
fn guard_holds_across_an_upgrade() -> anyhow::Result<()> {
    let Some(previous) = previous_build()? else {
        eprintln!(
            "skipped: PORTGUARD_PREVIOUS_BIN names no previous build of the agent to upgrade \
             from; run `cargo xtask test`, which builds one"
        );
        return Ok(());
    };
    let current = portguard_bin()?;
    let restarted = guard_survives_kill_and_restart("guard_holds_upgrade", &previous, &current)?;

    let build = |events: &[Value]| {
        events
            .iter()
            .find(|event| event["event"] == "agent.started")
            .map(|event| event["build"].clone())
            .unwrap_or_default()
    };
    let (before, after) = (
        build(&restarted.first_events),
        build(&restarted.host.agent.events()),
    );
    assert!(
        before.is_string() && after.is_string() && before != after,
        "the two agents should be different builds: {before} then {after} ({} then {})",
        previous.display(),
        current.display()
    );
    Ok(())
}

#[test]
fn sigterm_keeps_the_guard_until_uninstalled() -> anyhow::Result<()> {
    let lab = Lab::new("sigterm_keeps_the_guard")?;
    let _servers = listeners(&lab, &[])?;
    let mut agent = lab.start_agent(&endpoints())?;
    let pins = pin_dir(agent.policy(), lab.host.name());
    let prober = Prober::start(&lab.client, &[open_targets(), shut_targets()].concat())?;

    thread::sleep(BEFORE_KILL);
    let status = agent.stop()?;
    prober.mark("agent stopped (SIGTERM)");
    assert!(
        status.success(),
        "the agent exited with {status}\n{}",
        agent.report()
    );
    let events = agent.events();
    assert!(
        events
            .iter()
            .any(|event| event["event"] == "agent.stopping"),
        "no agent.stopping\n{}",
        agent.report()
    );
    let kept = on_host_if(&events, "guard.kept")
        .with_context(|| format!("no guard.kept for {HOST_IF}\n{}", agent.report()))?;
    assert_eq!(kept["ifindex"], lab.host.ifindex(HOST_IF)?, "{kept}");
    assert_eq!(kept["pin_dir"], pins.to_string_lossy().as_ref(), "{kept}");
    assert!(
        agent.events_named("guard.detached").is_empty(),
        "a stopping agent detached\n{}",
        agent.report()
    );
    assert!(
        lab.host_has_xdp()?,
        "no XDP on {HOST_IF} after SIGTERM:\n{}",
        lab.host_link()?
    );

    thread::sleep(DEAD_FOR / 2);
    let uninstalling = prober.mark("portguard uninstall");
    let binary = portguard_bin()?;
    let binary = binary.to_str().context("the binary's path is not UTF-8")?;
    let pins_arg = pins
        .to_str()
        .context("the pin folder's path is not UTF-8")?;
    let uninstall = || lab.host.exec(binary, &["uninstall", "--pin-dir", pins_arg]);
    succeeded(&uninstall()?, "portguard uninstall", &agent)?;
    // The kernel releases a link once its last pin goes, a moment after the unlink.
    let deadline = BootTime::now() + Duration::from_secs(3);
    while lab.host_has_xdp()? {
        assert!(
            BootTime::now() < deadline,
            "XDP still on {HOST_IF} after portguard uninstall:\n{}",
            lab.host_link()?
        );
        thread::sleep(Duration::from_millis(20));
    }
    let unguarded = prober.mark("no XDP on the host");
    succeeded(&uninstall()?, "a second portguard uninstall", &agent)?;
    thread::sleep(AFTER_RESTART);
    let report = prober.stop()?;

    let guarded = report.before(uninstalling);
    guarded.assert_never_passed(&shut_targets());
    report.assert_always_passed(&open_targets());
    // No guard: the formerly forbidden ports answer.
    report
        .after(unguarded)
        .assert_always_passed(&shut_targets());
    Ok(())
}
