//! Tests of whole policy files: the design's example, defaults, and the helpers the error
//! and warning tests share.

mod auth_errors;
mod credentials;
mod errors;
mod warnings;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::*;

/// The example of DESIGN.md section 4, verbatim.
const DESIGN_EXAMPLE: &str = r#"[guard]
interfaces = ["*"]              # or names: ["eth0", "ens5"]
mode = "enforce"                # or "monitor"
icmp = "essential"              # or "all" (echo requests too); essential never goes shut

[[endpoint]]                    # always open: the declared auth endpoints
name = "sso-callback"
port = 443                      # also "8000-8010" for a range
protocol = "tcp"                # tcp | udp
from = ["0.0.0.0/0", "::/0"]    # optional; default: anywhere

[auth]                          # the agent's token endpoint, opened automatically
listen = ["0.0.0.0:8443", "[::]:8443"]
tls_cert = "/etc/portguard/tls.crt"
tls_key = "/etc/portguard/tls.key"
audience = "https://host-42.example.com/portguard"

[[issuer]]
name = "corp"
url = "https://idp.example.com"  # discovery: <url>/.well-known/openid-configuration
algorithms = ["RS256", "ES256", "EdDSA"]

[[gate]]                        # ports that a token opens
name = "postgres"
port = 5432
protocol = "tcp"
scope = "db:connect"
max_ttl = "15m"
on_expiry = "keep"              # or "cut"

[events]
file = "/var/log/portguard/events.jsonl"
metrics = "127.0.0.1:9464"
"#;

/// An `[auth]` table to append to files whose gates or issuers need one.
const AUTH: &str = r#"
[auth]
listen = ["[::]:8443"]
tls_cert = "/etc/portguard/tls.crt"
tls_key = "/etc/portguard/tls.key"
audience = "portguard"
"#;

/// An `[[issuer]]` table to append to files whose gates need one.
const ISSUER: &str = r#"
[[issuer]]
name = "corp"
url = "https://idp.example.com"
"#;

fn parse(text: &str) -> Result<Policy, PolicyError> {
    Policy::parse(Path::new("policy.toml"), text)
}

#[track_caller]
fn valid(text: &str) -> Policy {
    parse(text).unwrap_or_else(|error| panic!("expected a valid policy, found:\n{error}"))
}

#[track_caller]
fn problems(text: &str) -> Vec<Problem> {
    match parse(text) {
        Err(PolicyError::Invalid { problems, .. }) => problems,
        other => panic!("expected problems, found {other:?}"),
    }
}

/// The one problem of `text`, which must be at `line`:`column` and say `says`.
#[track_caller]
fn assert_problem(text: &str, line: usize, column: usize, says: &str) {
    let found = problems(text);
    assert_eq!(found.len(), 1, "expected one problem, found {found:#?}");
    let problem = &found[0];
    assert_eq!(
        (problem.line, problem.column),
        (line, column),
        "{problem:?}"
    );
    assert!(
        problem.message.contains(says),
        "{:?} does not say {says:?}",
        problem.message
    );
}

#[test]
fn design_example_is_a_valid_policy() {
    let policy = valid(DESIGN_EXAMPLE);

    assert_eq!(policy.path, PathBuf::from("policy.toml"));
    assert_eq!(policy.guard, Guard::default());
    assert_eq!(
        policy.endpoints,
        [Endpoint {
            name: "sso-callback".into(),
            ports: PortRange::single(443),
            protocol: Protocol::Tcp,
            from: vec!["0.0.0.0/0".parse().unwrap(), "::/0".parse().unwrap()],
        }]
    );
    let auth = policy.auth.expect("the example has [auth]");
    assert_eq!(
        auth.listen,
        [
            "0.0.0.0:8443".parse::<SocketAddr>().unwrap(),
            "[::]:8443".parse().unwrap()
        ]
    );
    assert_eq!(auth.tls_cert, PathBuf::from("/etc/portguard/tls.crt"));
    assert_eq!(auth.tls_key, PathBuf::from("/etc/portguard/tls.key"));
    assert_eq!(auth.audience, "https://host-42.example.com/portguard");
    assert_eq!(
        policy.issuers,
        [Issuer {
            name: "corp".into(),
            url: "https://idp.example.com".into(),
            algorithms: vec![Algorithm::Rs256, Algorithm::Es256, Algorithm::EdDsa],
            jwks_file: None,
        }]
    );
    assert_eq!(
        policy.gates,
        [Gate {
            name: "postgres".into(),
            ports: PortRange::single(5432),
            protocol: Protocol::Tcp,
            scope: "db:connect".into(),
            max_ttl: Some(Duration::from_secs(15 * 60)),
            on_expiry: OnExpiry::Keep,
            issuers: vec![],
        }]
    );
    assert_eq!(
        policy.events.file,
        Some(PathBuf::from("/var/log/portguard/events.jsonl"))
    );
    assert_eq!(
        policy.events.metrics,
        Some("127.0.0.1:9464".parse().unwrap())
    );
}

#[test]
fn empty_file_takes_every_default() {
    let policy = valid("");

    assert_eq!(policy.guard.interfaces, Interfaces::All);
    assert_eq!(policy.guard.mode, Mode::Enforce);
    assert_eq!(policy.guard.icmp, IcmpPolicy::Essential);
    assert_eq!(policy.guard.udp_reply_ttl, Duration::from_secs(30));
    assert!(policy.endpoints.is_empty() && policy.gates.is_empty() && policy.issuers.is_empty());
    assert_eq!(policy.auth, None);
    assert_eq!(policy.events, Events::default());
}

#[test]
fn optional_keys_take_their_defaults() {
    let text = format!(
        "[[endpoint]]\nname = \"ssh\"\nport = 22\nprotocol = \"tcp\"\n\n\
         [[gate]]\nname = \"db\"\nport = 5432\nprotocol = \"tcp\"\nscope = \"db\"\n\
         {AUTH}{ISSUER}"
    );

    let policy = valid(&text);

    assert_eq!(policy.endpoints[0].from, Endpoint::anywhere());
    assert_eq!(policy.gates[0].max_ttl, None);
    assert_eq!(policy.gates[0].on_expiry, OnExpiry::Keep);
    assert!(policy.gates[0].issuers.is_empty());
    assert_eq!(policy.issuers[0].algorithms, Algorithm::DEFAULT);
}

#[test]
fn guard_keys_are_read() {
    let policy = valid(
        "[guard]\ninterfaces = [\"eth0\", \"ens5\"]\nmode = \"monitor\"\nicmp = \"all\"\n\
         udp_reply_ttl = \"2m\"\n",
    );

    assert_eq!(
        policy.guard.interfaces,
        Interfaces::Named(vec!["eth0".into(), "ens5".into()])
    );
    assert_eq!(policy.guard.mode, Mode::Monitor);
    assert_eq!(policy.guard.icmp, IcmpPolicy::All);
    assert_eq!(policy.guard.udp_reply_ttl, Duration::from_secs(120));
}

#[test]
fn port_range_and_bare_addresses_are_read() {
    let policy = valid(
        "[[endpoint]]\nname = \"rtp\"\nport = \"10000-10010\"\nprotocol = \"udp\"\n\
         from = [\"192.0.2.7\", \"2001:db8::/32\"]\n",
    );

    let endpoint = &policy.endpoints[0];
    assert_eq!(
        endpoint.ports,
        PortRange {
            first: 10_000,
            last: 10_010
        }
    );
    assert_eq!(endpoint.protocol, Protocol::Udp);
    assert_eq!(
        endpoint.from,
        [
            "192.0.2.7/32".parse().unwrap(),
            "2001:db8::/32".parse().unwrap()
        ]
    );
}

#[test]
fn gate_keys_are_read() {
    let text = format!(
        "[[gate]]\nname = \"db\"\nport = 5432\nprotocol = \"tcp\"\nscope = \"db\"\n\
         max_ttl = \"1h\"\non_expiry = \"cut\"\nissuers = [\"corp\"]\n{AUTH}{ISSUER}"
    );

    let gate = &valid(&text).gates[0];

    assert_eq!(gate.max_ttl, Some(Duration::from_secs(3600)));
    assert_eq!(gate.on_expiry, OnExpiry::Cut);
    assert_eq!(gate.issuers, ["corp"]);
}

#[test]
fn every_problem_of_a_file_is_reported_in_file_order() {
    let text = "[guard]\nmode = \"enforcing\"\nicmp = \"some\"\n\n\
                [[endpoint]]\nname = \"web\"\nport = 0\nprotocol = \"sctp\"\n";

    let found = problems(text);

    let places: Vec<_> = found
        .iter()
        .map(|problem| (problem.line, problem.column))
        .collect();
    assert_eq!(places, [(2, 8), (3, 8), (7, 8), (8, 12)]);
}

#[test]
fn error_display_prints_file_line_column_and_message_per_problem() {
    let error = parse("[guard]\nmode = \"enforcing\"\nicmp = \"some\"\n").unwrap_err();

    assert_eq!(
        error.to_string(),
        "policy.toml:2:8: mode: expected \"enforce\" or \"monitor\", found \"enforcing\"\n\
         policy.toml:3:8: icmp: expected \"essential\" or \"all\", found \"some\""
    );
}

#[test]
fn load_reads_the_file_and_remembers_its_path() {
    let path = std::env::temp_dir().join(format!("portguard-policy-{}.toml", std::process::id()));
    std::fs::write(&path, DESIGN_EXAMPLE).unwrap();

    let loaded = Policy::load(&path);
    std::fs::remove_file(&path).unwrap();

    assert_eq!(loaded.unwrap().path, path);
}

#[test]
fn load_of_a_missing_file_names_the_path() {
    let error = Policy::load(Path::new("/nonexistent/portguard/policy.toml")).unwrap_err();

    assert!(matches!(error, PolicyError::Read { .. }));
    assert_eq!(
        error.to_string(),
        "read policy file /nonexistent/portguard/policy.toml"
    );
    assert!(error.problems().is_empty());
}

#[test]
fn the_packaged_default_policy_is_valid_and_only_monitors() {
    let text = include_str!("../../../../packaging/policy.toml");

    let policy = parse(text).expect("the packaged policy parses");

    assert_eq!(
        policy.guard.mode,
        super::Mode::Monitor,
        "it must lock nothing out"
    );
    assert!(policy.endpoints.iter().any(|e| e.ports.contains(22)));
}
