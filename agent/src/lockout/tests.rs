//! Which policies lockout protection refuses, accepts or lets through with a warning.

use std::path::Path;

use super::*;
use crate::policy::{IcmpPolicy, Mode};

/// The session of an operator logged in over SSH from 203.0.113.9.
const SESSION: &str = "203.0.113.9 51234 192.0.2.1 22";

/// A web endpoint, and nothing on the SSH port.
const WEB_ONLY: &str =
    "[[endpoint]]\nname = \"web\"\nport = 443\nprotocol = \"tcp\"\nfrom = [\"10.0.0.0/8\"]\n";

/// SSH from the office network, which leaves the session's client out.
const OFFICE_SSH: &str =
    "[[endpoint]]\nname = \"ssh\"\nport = 22\nprotocol = \"tcp\"\nfrom = [\"10.0.0.0/8\"]\n";

/// SSH from the office network and the operator's address.
const OPERATOR_SSH: &str = "[[endpoint]]\nname = \"ssh\"\nport = 22\nprotocol = \"tcp\"\n\
                            from = [\"10.0.0.0/8\", \"203.0.113.0/24\"]\n";

fn policy(text: &str) -> Policy {
    Policy::parse(Path::new("policy.toml"), text).expect("a valid policy")
}

fn session(ssh_connection: &str) -> Vec<SshPeer> {
    vec![SshPeer::from_ssh_connection(ssh_connection).expect("a readable $SSH_CONNECTION")]
}

fn kernel_peer(client: &str, server: &str) -> SshPeer {
    SshPeer {
        client: client.parse().unwrap(),
        server: server.parse().unwrap(),
        origin: PeerOrigin::Kernel,
    }
}

/// The one lockout, which must be at `line`:`column` and say `says`.
#[track_caller]
fn assert_lockout(found: &[Lockout], line: usize, column: usize, says: &str) {
    assert_eq!(found.len(), 1, "expected one lockout, found {found:#?}");
    let lockout = &found[0];
    assert_eq!(
        (lockout.line, lockout.column),
        (line, column),
        "{lockout:?}"
    );
    assert!(
        lockout.message.contains(says),
        "{:?} does not say {says:?}",
        lockout.message
    );
}

#[track_caller]
fn refused(text: &str, peers: &[SshPeer]) -> Vec<Lockout> {
    match review(&policy(text), peers, false) {
        Err(refused) => refused.lockouts,
        Ok(warnings) => panic!("accepted, with warnings {warnings:#?}"),
    }
}

#[track_caller]
fn accepted(text: &str, peers: &[SshPeer], force: bool) -> Vec<Lockout> {
    match review(&policy(text), peers, force) {
        Ok(warnings) => warnings,
        Err(refused) => panic!("refused: {refused}"),
    }
}

#[test]
fn no_endpoint_on_the_ssh_port_is_refused() {
    let found = refused(WEB_ONLY, &session(SESSION));

    assert_lockout(
        &found,
        1,
        1,
        "this session comes over ssh from 203.0.113.9 to port 22: enforcing this policy drops \
         new connections from 203.0.113.9 to tcp port 22 (port_closed)",
    );
}

#[test]
fn ssh_endpoint_whose_from_leaves_the_session_out_is_refused_at_its_from() {
    let found = refused(OFFICE_SSH, &session(SESSION));

    assert_lockout(&found, 5, 8, "(source_not_allowed): once it ends");
}

#[test]
fn ssh_endpoint_whose_from_includes_the_session_is_accepted() {
    assert_eq!(accepted(OPERATOR_SSH, &session(SESSION), false), []);
}

#[test]
fn ssh_endpoint_open_to_everyone_is_accepted() {
    let text = "[[endpoint]]\nname = \"ssh\"\nport = 22\nprotocol = \"tcp\"\n";

    assert_eq!(accepted(text, &session(SESSION), false), []);
}

#[test]
fn monitor_mode_never_locks_out() {
    let text = format!("[guard]\nmode = \"monitor\"\n\n{WEB_ONLY}");

    assert_eq!(assess(&policy(&text), &session(SESSION)), []);
}

#[test]
fn monitor_mode_is_accepted_with_what_enforcing_would_cut() {
    let text = format!("[guard]\nmode = \"monitor\"\n\n{OFFICE_SSH}");

    let warnings = accepted(&text, &session(SESSION), false);

    assert_lockout(
        &warnings,
        8,
        8,
        "mode is \"monitor\", so for now it is only reported",
    );
}

#[test]
fn forced_lockout_is_accepted_with_a_warning() {
    let warnings = accepted(OFFICE_SSH, &session(SESSION), true);

    assert_lockout(
        &warnings,
        5,
        8,
        "(source_not_allowed): once it ends, it cannot be opened again; applied anyway (--force)",
    );
}

#[test]
fn policy_without_sessions_is_accepted() {
    assert_eq!(accepted(WEB_ONLY, &[], false), []);
}

#[test]
fn kernel_connections_are_judged_on_their_own_server_port() {
    let peers = [kernel_peer("[2001:db8::9]:57842", "[2001:db8::1]:2222")];

    let found = refused(OPERATOR_SSH, &peers);

    assert_lockout(
        &found,
        1,
        1,
        "an ssh connection from 2001:db8::9 to port 2222 is open: enforcing this policy drops \
         new connections from 2001:db8::9 to tcp port 2222 (port_closed)",
    );
}

#[test]
fn each_client_and_port_is_reported_once() {
    let mut peers = session(SESSION);
    peers.push(kernel_peer("203.0.113.9:40000", "192.0.2.1:22"));
    peers.push(kernel_peer("198.51.100.4:40000", "192.0.2.1:22"));

    let found = refused(OFFICE_SSH, &peers);

    assert_eq!(found.len(), 2, "{found:#?}");
    assert!(
        found[0]
            .message
            .starts_with("this session comes over ssh from 203.0.113.9")
    );
    assert!(
        found[1]
            .message
            .starts_with("an ssh connection from 198.51.100.4")
    );
}

#[test]
fn ssh_client_with_a_mapped_ipv4_address_matches_its_ipv4_prefix() {
    let peers = session("::ffff:10.1.2.3 51234 ::ffff:10.0.0.1 22");

    assert_eq!(accepted(OFFICE_SSH, &peers, false), []);
}

#[test]
fn ssh_port_declared_over_udp_does_not_count() {
    let text =
        "[[endpoint]]\nname = \"mosh\"\nport = 22\nprotocol = \"udp\"\nfrom = [\"10.0.0.0/8\"]\n";

    let found = refused(text, &session("10.1.2.3 51234 10.0.0.1 22"));

    assert_lockout(&found, 1, 1, "(port_closed)");
}

#[test]
fn ssh_port_behind_a_gate_is_refused_at_the_gate() {
    let text = format!(
        "{WEB_ONLY}\n[[gate]]\nname = \"ssh\"\nport = 22\nprotocol = \"tcp\"\nscope = \"ssh\"\n\
         max_ttl = \"1h\"\n{AUTH}"
    );

    let found = refused(&text, &session(SESSION));

    assert_lockout(&found, 7, 1, "(port_closed): once it ends");
}

#[test]
fn ssh_port_behind_a_gate_that_cuts_drops_the_session_at_once() {
    let text = format!(
        "{WEB_ONLY}\n[[gate]]\nname = \"ssh\"\nport = 22\nprotocol = \"tcp\"\nscope = \"ssh\"\n\
         max_ttl = \"1h\"\non_expiry = \"cut\"\n{AUTH}"
    );

    let found = refused(&text, &session(SESSION));

    assert_lockout(
        &found,
        7,
        1,
        "enforcing this policy drops its packets at once (grant_ended)",
    );
}

#[test]
fn neighbour_discovery_passes_under_every_icmp_setting() {
    for icmp in [IcmpPolicy::Essential, IcmpPolicy::All] {
        let mut policy = policy(WEB_ONLY);
        policy.guard.icmp = icmp;
        policy.guard.mode = Mode::Enforce;

        assert_eq!(assess(&policy, &[]), [], "icmp = {icmp:?}");
    }
}

#[test]
fn neighbour_discovery_probes_are_judged_essential() {
    let entries = compile(&policy(WEB_ONLY), GENERATION);
    let maps = CompiledMaps::new(&entries);

    for (icmp_type, name, destination) in NEIGHBOUR_DISCOVERY {
        let frame = probe::icmpv6(NEIGHBOUR, destination, icmp_type);
        let decision = probe::judge(&frame, &entries.config, &maps);

        assert_eq!(
            decision.reason,
            portguard_common::Reason::IcmpEssential,
            "{name}"
        );
    }
}

#[test]
fn refusal_names_the_file_and_the_way_out() {
    let error = review(&policy(OFFICE_SSH), &session(SESSION), false).unwrap_err();

    let text = error.to_string();

    assert!(
        text.starts_with("policy.toml:5:8: this session comes over ssh"),
        "{text}"
    );
    assert!(
        text.ends_with("or pass --force to apply it anyway"),
        "{text}"
    );
    assert!(text.contains("mode = \"monitor\""), "{text}");
}

/// An `[auth]` table, which gates need.
const AUTH: &str = r#"
[auth]
listen = ["[::]:8443"]
tls_cert = "/etc/portguard/tls.crt"
tls_key = "/etc/portguard/tls.key"
audience = "portguard"
"#;
