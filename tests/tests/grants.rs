//! The life of a grant opened by a real token: it ends at the gate's `max_ttl` (in the
//! kernel, even with the agent frozen), its holder or the operator can end it early, a
//! restarted agent restores it from its ledger, and a "cut" gate ends established
//! connections with it while a "keep" gate leaves them be.

use std::{
    io::{ErrorKind, Read as _, Write as _},
    net::{SocketAddr, TcpStream},
    thread,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use anyhow::Context as _;
use nix::{
    sys::signal::{Signal, kill},
    unistd::Pid,
};
use portguard_tests::{
    gated::{Gate, GatedHost},
    lab::Family,
    netns::Netns,
    oidc::{ProviderOptions, Signer},
    probe::{ANSWER_WAIT, FILTERED_WAIT, Probe, tcp_probe},
};
use serde_json::Value;

/// Short enough to wait out in a test.
const SHORT: Gate = Gate {
    name: "postgres",
    port: 5432,
    scope: "db:connect",
    max_ttl: "4s",
    on_expiry: "keep",
};
/// Long enough to outlive a test.
const LONG: Gate = Gate {
    max_ttl: "2m",
    ..SHORT
};
const CUT: Gate = Gate {
    name: "postgres-cut",
    port: 5433,
    on_expiry: "cut",
    ..LONG
};

fn start(test: &str, gates: &[Gate]) -> anyhow::Result<GatedHost> {
    GatedHost::start(test, gates, &ProviderOptions::default())
}

/// Opens a grant for the client's address of each family with one token; returns the ids.
fn open_both(host: &GatedHost, port: u16) -> anyhow::Result<Vec<String>> {
    let token = host.token(Signer::Rs256, "db:connect")?;
    let port = format!("{port}/tcp");
    Family::BOTH
        .iter()
        .map(|family| Ok(host.open(*family, &token, &["--port", &port])?.id))
        .collect()
}

fn assert_probe(host: &GatedHost, family: Family, port: u16, expected: Probe, when: &str) {
    let wait = if expected == Probe::Open {
        ANSWER_WAIT
    } else {
        FILTERED_WAIT
    };
    assert_eq!(
        tcp_probe(&host.lab.client, family.host(port), wait),
        expected,
        "{family:?} {port}/tcp {when}\n{}",
        host.report()
    );
}

/// When the live grants expire, in Unix milliseconds, soonest first (asked of the agent: ask
/// before freezing it).
fn expiries(host: &GatedHost) -> anyhow::Result<Vec<u64>> {
    let mut expiries: Vec<u64> = host
        .grants()?
        .iter()
        .filter_map(|grant| grant["expires_unix_ms"].as_u64())
        .collect();
    anyhow::ensure!(!expiries.is_empty(), "no live grant");
    expiries.sort_unstable();
    Ok(expiries)
}

/// When the last live grant expires.
fn last_expiry(host: &GatedHost) -> anyhow::Result<u64> {
    Ok(*expiries(host)?.last().expect("not empty"))
}

/// Sleeps until `unix_ms` has passed, and a little more.
fn sleep_past(unix_ms: u64) -> anyhow::Result<()> {
    let now = SystemTime::now().duration_since(UNIX_EPOCH)?.as_millis() as u64;
    thread::sleep(Duration::from_millis(unix_ms.saturating_sub(now) + 300));
    Ok(())
}

/// The `grant.*` event named `name` for grant `id`.
fn grant_event(
    host: &mut GatedHost,
    name: &str,
    id: &str,
    timeout: Duration,
) -> anyhow::Result<Value> {
    host.agent
        .wait_for(&format!("{name} {id}"), timeout, |event| {
            event["event"] == name && event["grant"] == id
        })
}

#[test]
fn grant_ends_at_the_gates_max_ttl_and_is_logged() -> anyhow::Result<()> {
    let mut host = start("grant_ends_at_max_ttl", &[SHORT])?;
    let ids = open_both(&host, 5432)?;
    for family in Family::BOTH {
        assert_probe(&host, family, 5432, Probe::Open, "with a grant");
    }
    for grant in host.grants()? {
        let lasts = grant["expires_unix_ms"].as_u64().unwrap_or(0)
            - grant["created_unix_ms"].as_u64().unwrap_or(0);
        assert!(
            lasts <= 4_000,
            "the grant lasts {lasts} ms, beyond max_ttl: {grant}"
        );
    }

    sleep_past(last_expiry(&host)?)?;
    for family in Family::BOTH {
        assert_probe(&host, family, 5432, Probe::Filtered, "after max_ttl");
    }
    for id in &ids {
        grant_event(&mut host, "grant.expired", id, ANSWER_WAIT)?;
    }
    assert!(host.grants()?.is_empty(), "{}", host.report());
    Ok(())
}

/// Stops the agent's process with SIGSTOP; SIGCONT on drop, whatever happens.
struct Frozen(Pid);

impl Frozen {
    fn new(pid: u32) -> anyhow::Result<Self> {
        let pid = Pid::from_raw(i32::try_from(pid)?);
        kill(pid, Signal::SIGSTOP).context("freeze the agent")?;
        Ok(Self(pid))
    }
}

impl Drop for Frozen {
    fn drop(&mut self) {
        let _ = kill(self.0, Signal::SIGCONT);
    }
}

#[test]
fn kernel_ends_the_grant_while_the_agent_is_frozen() -> anyhow::Result<()> {
    let mut host = start("kernel_ends_grant_frozen", &[SHORT])?;
    let ids = open_both(&host, 5432)?;
    for family in Family::BOTH {
        assert_probe(&host, family, 5432, Probe::Open, "with a grant");
    }

    let expiry = last_expiry(&host)?;
    let frozen = Frozen::new(host.agent.pid())?;
    sleep_past(expiry)?;
    for family in Family::BOTH {
        assert_probe(
            &host,
            family,
            5432,
            Probe::Filtered,
            "after max_ttl, the agent frozen",
        );
    }
    assert!(
        host.agent.events_named("grant.expired").is_empty(),
        "a frozen agent logged an expiry\n{}",
        host.report()
    );

    drop(frozen);
    for id in &ids {
        grant_event(&mut host, "grant.expired", id, ANSWER_WAIT)?;
    }
    Ok(())
}

#[test]
fn holder_revokes_its_grant_with_the_same_token() -> anyhow::Result<()> {
    let mut host = start("holder_revokes_its_grant", &[LONG])?;
    let token = host.token(Signer::Es256, "db:connect")?;
    for family in Family::BOTH {
        let opened = host.open(family, &token, &["--port", "5432/tcp"])?;
        assert_probe(&host, family, 5432, Probe::Open, "with a grant");

        let answer = host.delete_grant(family, &token, &opened.id)?;
        assert_eq!(answer.status, 204, "{}\n{}", answer.text(), host.report());
        assert_probe(&host, family, 5432, Probe::Filtered, "after DELETE");

        let revoked = grant_event(&mut host, "grant.revoked", &opened.id, ANSWER_WAIT)?;
        assert_eq!(revoked["by"], "holder", "{revoked}");
        assert_eq!(revoked["subject"], Signer::Es256.client_id(), "{revoked}");
        let again = host.delete_grant(family, &token, &opened.id)?;
        assert_eq!(again.status, 404, "a second DELETE: {}", again.text());
    }
    assert!(host.grants()?.is_empty(), "{}", host.report());
    Ok(())
}

#[test]
fn another_subject_cannot_revoke_a_grant() -> anyhow::Result<()> {
    let host = start("another_subject_cannot_revoke", &[LONG])?;
    let holder = host.token(Signer::Rs256, "db:connect")?;
    let other = host.token(Signer::EdDsa, "db:connect")?;
    let opened = host.open(Family::V4, &holder, &["--port", "5432/tcp"])?;

    let answer = host.delete_grant(Family::V4, &other, &opened.id)?;
    assert_eq!(answer.status, 404, "{}", answer.text());
    assert_probe(
        &host,
        Family::V4,
        5432,
        Probe::Open,
        "after a stranger's DELETE",
    );
    assert!(host.agent.events_named("grant.revoked").is_empty());
    Ok(())
}

#[test]
fn operator_revokes_a_grant_through_the_control_socket() -> anyhow::Result<()> {
    let mut host = start("operator_revokes_a_grant", &[LONG])?;
    let ids = open_both(&host, 5432)?;
    let listed: Vec<Value> = host.grants()?;
    for id in &ids {
        assert!(
            listed.iter().any(|grant| grant["id"] == id.as_str()),
            "grants list lacks {id}: {listed:?}"
        );
    }

    for (family, id) in Family::BOTH.into_iter().zip(&ids) {
        assert_probe(&host, family, 5432, Probe::Open, "with a grant");
        let output = host.grants_cli(&["revoke", id])?;
        assert!(
            output.status.success(),
            "portguard grants revoke {id}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        assert_probe(&host, family, 5432, Probe::Filtered, "after the revoke");

        let revoked = grant_event(&mut host, "grant.revoked", id, ANSWER_WAIT)?;
        assert_eq!(revoked["by"], "operator", "{revoked}");
    }
    assert!(host.grants()?.is_empty(), "{}", host.report());

    let unknown = host.grants_cli(&["revoke", "0123456789abcdef"])?;
    assert!(
        !unknown.status.success(),
        "revoking an unknown grant succeeded"
    );
    Ok(())
}

#[test]
fn restarted_agent_restores_live_grants_from_its_ledger() -> anyhow::Result<()> {
    let mut host = start("restarted_agent_restores", &[LONG])?;
    let ids = open_both(&host, 5432)?;
    for family in Family::BOTH {
        assert_probe(&host, family, 5432, Probe::Open, "before the restart");
    }

    host.restart_agent()?;
    assert_eq!(host.agent.events_named("agent.started").len(), 1);
    for id in &ids {
        let restored = grant_event(&mut host, "grant.opened", id, ANSWER_WAIT)?;
        assert_eq!(restored["restored"], true, "{restored}");
        assert_eq!(restored["subject"], Signer::Rs256.client_id(), "{restored}");
    }
    for family in Family::BOTH {
        assert_probe(&host, family, 5432, Probe::Open, "after the restart");
    }
    let listed = host.grants()?;
    assert_eq!(listed.len(), ids.len(), "{listed:?}");
    Ok(())
}

/// A connection from the client that the host's echo server answers.
fn connect(netns: &Netns, to: SocketAddr) -> anyhow::Result<TcpStream> {
    let stream = netns
        .run(|| TcpStream::connect_timeout(&to, ANSWER_WAIT))?
        .with_context(|| format!("connect to {to}"))?;
    stream.set_read_timeout(Some(Duration::from_millis(1_500)))?;
    Ok(stream)
}

/// Whether `payload` comes back on `stream` in time.
fn echoes(stream: &mut TcpStream, payload: &[u8]) -> bool {
    if stream.write_all(payload).is_err() {
        return false;
    }
    let mut received = Vec::new();
    let mut buffer = [0u8; 256];
    while received.len() < payload.len() {
        match stream.read(&mut buffer) {
            Ok(0) => return false,
            Ok(read) => received.extend_from_slice(&buffer[..read]),
            Err(error) if matches!(error.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                return false;
            }
            Err(_) => return false,
        }
    }
    received == payload
}

/// Opens one grant over both gates for each family, connects to both ports, revokes the
/// grants, and returns whether each connection still carried data: (keep port, cut port).
fn established_after_revoke(host: &mut GatedHost, family: Family) -> anyhow::Result<(bool, bool)> {
    let token = host.token(Signer::Rs256, "db:connect")?;
    let opened = host.open(family, &token, &[])?;
    assert!(
        opened.line.contains("5432/tcp") && opened.line.contains("5433/tcp"),
        "{}",
        opened.line
    );
    let mut keep = connect(&host.lab.client, family.host(LONG.port))?;
    let mut cut = connect(&host.lab.client, family.host(CUT.port))?;
    assert!(echoes(&mut keep, b"before"), "{family:?} keep port before");
    assert!(echoes(&mut cut, b"before"), "{family:?} cut port before");

    // The echo server drops a connection silent for 2 s: revoke and try at once.
    let output = host.grants_cli(&["revoke", &opened.id])?;
    assert!(output.status.success(), "{output:?}");
    let kept = echoes(&mut keep, b"after");
    let cut_passed = echoes(&mut cut, b"after");
    grant_event(host, "grant.revoked", &opened.id, ANSWER_WAIT)?;
    Ok((kept, cut_passed))
}

/// Waits for the kernel's report of a packet of an established connection to the cut gate
/// dropped because its grant ended.
fn wait_for_grant_ended(host: &mut GatedHost, family: Family) -> anyhow::Result<Value> {
    let client = family.client(0).ip().to_string();
    host.agent.wait_for(
        &format!("flow.blocked grant_ended from {client}"),
        ANSWER_WAIT,
        |event| {
            event["event"] == "flow.blocked"
                && event["reason"] == "grant_ended"
                && event["destination_port"] == CUT.port
                && event["source"] == client.as_str()
        },
    )
}

#[test]
fn cut_gate_ends_established_connections_when_the_grant_is_revoked() -> anyhow::Result<()> {
    let mut host = start("cut_gate_ends_connections", &[LONG, CUT])?;
    for family in Family::BOTH {
        let (_, cut_passed) = established_after_revoke(&mut host, family)?;
        assert!(
            !cut_passed,
            "{family:?}: the cut gate's connection still carries data after the revoke\n{}",
            host.report()
        );
        wait_for_grant_ended(&mut host, family)?;
        assert_probe(&host, family, CUT.port, Probe::Filtered, "after the revoke");
    }
    Ok(())
}

#[test]
fn keep_gate_keeps_established_connections_when_the_grant_is_revoked() -> anyhow::Result<()> {
    let mut host = start("keep_gate_keeps_connections", &[LONG, CUT])?;
    for family in Family::BOTH {
        let (kept, _) = established_after_revoke(&mut host, family)?;
        assert!(
            kept,
            "{family:?}: the keep gate's connection stopped after the revoke\n{}",
            host.report()
        );
        assert_probe(
            &host,
            family,
            LONG.port,
            Probe::Filtered,
            "new, after the revoke",
        );
    }
    Ok(())
}

#[test]
fn cut_gate_ends_established_connections_when_the_grant_expires() -> anyhow::Result<()> {
    let mut host = start("cut_gate_ends_at_expiry", &[LONG, CUT])?;
    let token = host.token(Signer::Rs256, "db:connect")?;
    let mut connections = Vec::new();
    for family in Family::BOTH {
        host.open(family, &token, &["--port", "5433/tcp", "--ttl", "3s"])?;
        let mut stream = connect(&host.lab.client, family.host(CUT.port))?;
        assert!(echoes(&mut stream, b"before"), "{family:?} cut port before");
        connections.push((family, stream));
    }

    // Keep talking (the echo server drops a connection silent for 2 s) until the grants
    // have expired.
    let expiries = expiries(&host)?;
    loop {
        let now = SystemTime::now().duration_since(UNIX_EPOCH)?.as_millis() as u64;
        if now + 400 > expiries[0] {
            break;
        }
        for (family, stream) in &mut connections {
            assert!(
                echoes(stream, b"while live"),
                "{family:?}: the connection stopped before the grant expired\n{}",
                host.report()
            );
        }
        thread::sleep(Duration::from_millis(300));
    }
    sleep_past(*expiries.last().expect("not empty"))?;
    for (family, stream) in &mut connections {
        assert!(
            !echoes(stream, b"after"),
            "{family:?}: the cut gate's connection still carries data after the expiry\n{}",
            host.report()
        );
    }
    for family in Family::BOTH {
        wait_for_grant_ended(&mut host, family)?;
    }
    Ok(())
}
