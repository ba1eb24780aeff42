//! `cargo xtask demo`: portguard guarding a host in a network namespace, shown with real
//! connections from a client namespace, then the token flow: a real OpenID provider issues
//! an access token, `portguard open` presents it, the gated port opens for the client's
//! address until the grant expires. Exits non-zero when anything is not as expected.

use std::{
    net::SocketAddr,
    process::ExitCode,
    thread,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use anyhow::Context as _;
use portguard::tokens::token_hash;
use portguard_tests::{
    Agent, Lab, TcpServer,
    agent::{control_socket, pin_dir, portguard_bin},
    gated::{self, Gate, auth_url},
    lab::{CLIENT_V4, CLIENT_V6, Family, HOST_IF, HOST_V4, HOST_V6, SUBNET_V4, SUBNET_V6, any},
    oidc::{AUDIENCE, Provider, ProviderOptions, Signer, jwt_part},
    probe::{ANSWER_WAIT, FILTERED_WAIT, Probe, tcp_probe, tcp_probe_from},
    tls::TestTls,
};
use serde_json::Value;

/// The gated port: shut until a token with its scope opens it, for six seconds at most.
const POSTGRES: Gate = Gate {
    name: "postgres",
    port: 5432,
    scope: "db:connect",
    max_ttl: "6s",
    on_expiry: "keep",
};

/// The policy the demo applies: an SSH-like port for the client's subnet, a web port for
/// everyone, the auth endpoint, and a database port that only a token opens.
fn policy(issuer: &str, tls: &TestTls) -> String {
    let guard = format!(
        r#"[guard]
interfaces = ["*"]
mode = "enforce"

[[endpoint]]
name = "ssh"
port = 22
protocol = "tcp"
from = ["{SUBNET_V4}", "{SUBNET_V6}"]

[[endpoint]]
name = "web"
port = 8080
protocol = "tcp"
"#
    );
    guard + &gated::token_tables(issuer, tls, &[POSTGRES])
}

/// A port the demo connects to, and what it should find there.
struct Expectation {
    port: u16,
    probe: Probe,
    why: &'static str,
}

const EXPECTATIONS: [Expectation; 3] = [
    Expectation {
        port: 8080,
        probe: Probe::Open,
        why: "endpoint \"web\", open to everyone",
    },
    Expectation {
        port: 22,
        probe: Probe::Open,
        why: "endpoint \"ssh\", open to the client's subnet",
    },
    Expectation {
        port: 5432,
        probe: Probe::Filtered,
        why: "gate \"postgres\": no grant, so no answer, not even a reset",
    },
];

/// Counts what held and what did not, printing one line for each.
#[derive(Default)]
struct Checks {
    passed: usize,
    failed: usize,
}

impl Checks {
    fn check(&mut self, held: bool, line: &str) {
        if held {
            self.passed += 1;
            println!("  ✓ {line}");
        } else {
            self.failed += 1;
            println!("  ✗ {line}");
        }
    }

    /// Connects from the client to `port` on the host and checks that it finds `expected`,
    /// printing the line with `why`.
    fn probe(&mut self, lab: &Lab, family: Family, port: u16, expected: Probe, why: &str) {
        let to = family.host(port);
        let wait = if expected == Probe::Open {
            ANSWER_WAIT
        } else {
            FILTERED_WAIT
        };
        let found = tcp_probe(&lab.client, to, wait);
        self.check(
            found == expected,
            &format!("{:<36} {:<26} {why}", route(family, to), found.to_string()),
        );
    }
}

fn main() -> ExitCode {
    match demo() {
        Ok(checks) if checks.failed == 0 => {
            println!("\nAll {} checks held.", checks.passed);
            ExitCode::SUCCESS
        }
        Ok(checks) => {
            println!(
                "\n{} of {} checks failed.",
                checks.failed,
                checks.failed + checks.passed
            );
            ExitCode::FAILURE
        }
        Err(error) => {
            eprintln!("\ndemo: {error:#}");
            ExitCode::FAILURE
        }
    }
}

fn demo() -> anyhow::Result<Checks> {
    let mut checks = Checks::default();
    println!("portguard demo: a host that keeps every port shut but those its policy declares\n");

    let lab = Lab::new("demo")?;
    println!("Two network namespaces joined by a veth pair:");
    println!("  host    {}  {HOST_V4}  {HOST_V6}", lab.host.name());
    println!("  client  {}  {CLIENT_V4}  {CLIENT_V6}", lab.client.name());

    let _services = [
        TcpServer::start(&lab.host, any(22))?,
        TcpServer::start(&lab.host, any(8080))?,
        TcpServer::start(&lab.host, any(5432))?,
    ];
    println!("\nThe host listens on 22 (ssh), 8080 (web) and 5432 (a database).");
    println!("Without the guard, the client reaches all of them:");
    for expectation in &EXPECTATIONS {
        let to = Family::V4.host(expectation.port);
        let found = tcp_probe(&lab.client, to, ANSWER_WAIT);
        checks.check(
            found == Probe::Open,
            &format!("{:<36} {found}", route(Family::V4, to)),
        );
    }

    println!("\nStarting the test OpenID provider (node-oidc-provider) in the host namespace...");
    let provider = Provider::start(
        &lab.host,
        &ProviderOptions {
            port: gated::PROVIDER_PORT,
            ..ProviderOptions::default()
        },
    )?;
    println!("  issuer {} (on the host's loopback)", provider.issuer());
    let tls = TestTls::for_lab_host()?;
    println!("  the auth endpoint's certificate is signed by a throwaway CA (rcgen)");

    let policy = policy(provider.issuer(), &tls);
    println!("\nThe policy:");
    for line in policy.lines() {
        println!("    {line}");
    }

    println!("\nStarting `portguard run` in the host namespace...");
    let mut agent = lab.start_agent(&policy)?;
    let attached = agent.wait_for_event("guard.attached", ANSWER_WAIT)?;
    println!(
        "  guard attached to {} ({} XDP, {} mode)",
        attached["interface"].as_str().unwrap_or(HOST_IF),
        attached["xdp_mode"].as_str().unwrap_or("?"),
        attached["mode"].as_str().unwrap_or("?"),
    );

    println!("\nFrom the client, with the guard on:");
    for family in Family::BOTH {
        for expectation in &EXPECTATIONS {
            let to = family.host(expectation.port);
            let wait = if expectation.probe == Probe::Open {
                ANSWER_WAIT
            } else {
                FILTERED_WAIT
            };
            let found = tcp_probe(&lab.client, to, wait);
            let shown = match found {
                Probe::Filtered => format!("filtered (no answer in {}s)", wait.as_secs()),
                _ => found.to_string(),
            };
            checks.check(
                found == expectation.probe,
                &format!("{:<36} {shown:<26} {}", route(family, to), expectation.why),
            );
        }
    }

    println!("\nWhat the agent logged (one JSON object per line, a few of them):");
    // The attachment, a connection let in and one dropped.
    let wanted: [(&str, &str, u16); 3] = [
        ("guard.attached", "guard.attached", 0),
        ("flow.allowed to 8080", "flow.allowed", 8080),
        ("flow.blocked to 5432", "flow.blocked", 5432),
    ];
    for (what, name, port) in wanted {
        let matches = |event: &Value| {
            event["event"] == name && (port == 0 || event["destination_port"] == port)
        };
        match agent.wait_for(what, Duration::from_secs(2), matches) {
            Ok(event) => println!("  {event}"),
            Err(_) => checks.check(false, &format!("no {what} event")),
        }
    }

    token_flow(&mut checks, &lab, &mut agent, &provider, &tls)?;

    println!("\nStopping the agent (SIGTERM): the guard stays, pinned in bpffs...");
    let stopped = stop(&mut agent);
    checks.check(
        stopped.is_ok(),
        &stopped.unwrap_or_else(|error| format!("{error:#}")),
    );
    checks.probe(
        &lab,
        Family::V4,
        5432,
        Probe::Filtered,
        "the agent is gone, the guard is not",
    );

    println!("\n$ portguard uninstall   (removes the guard from the kernel, on purpose)");
    let pins = pin_dir(agent.policy(), lab.host.name());
    let uninstalled = std::process::Command::new(portguard_bin()?)
        .arg("uninstall")
        .arg("--pin-dir")
        .arg(&pins)
        .arg("--control-socket")
        .arg(control_socket(agent.policy(), lab.host.name()))
        .output()
        .context("run portguard uninstall")?;
    checks.check(
        uninstalled.status.success(),
        String::from_utf8_lossy(&uninstalled.stdout).trim(),
    );
    let left = lab.host_has_xdp()?;
    checks.check(
        !left,
        &format!(
            "{HOST_IF} has {}XDP program attached",
            if left { "an " } else { "no " }
        ),
    );

    println!("\nRemoving the namespaces.");
    drop(agent);
    drop(provider);
    drop(lab);
    Ok(checks)
}

/// "client → host:port", as the lines show a connection.
fn route(family: Family, to: SocketAddr) -> String {
    match family.client(0) {
        SocketAddr::V4(client) => format!("{} → {to}", client.ip()),
        SocketAddr::V6(client) => format!("[{}] → {to}", client.ip()),
    }
}

/// Stops the agent and says how it went.
fn stop(agent: &mut Agent) -> anyhow::Result<String> {
    let status = agent.stop()?;
    anyhow::ensure!(
        status.success(),
        "the agent exited with {status}\n{}",
        agent.report()
    );
    let kept = agent.events_named("guard.kept").len();
    anyhow::ensure!(
        kept > 0,
        "the agent stopped without leaving the guard\n{}",
        agent.report()
    );
    Ok(format!(
        "agent stopped ({status}); the guard stays enforcing on {kept} interface(s)"
    ))
}

/// A token opens the gated port for the client's address, and the kernel shuts it again when
/// the grant expires.
fn token_flow(
    checks: &mut Checks,
    lab: &Lab,
    agent: &mut Agent,
    provider: &Provider,
    tls: &TestTls,
) -> anyhow::Result<()> {
    println!(
        "\nThe token flow: port 5432 opens for whoever presents a token with scope db:connect."
    );
    let keys = agent.wait_for("issuer.keys_loaded", Duration::from_secs(10), |event| {
        event["event"] == "issuer.keys_loaded"
    })?;
    println!("  the agent holds the provider's keys: {}", keys["kids"]);
    checks.probe(
        lab,
        Family::V4,
        POSTGRES.port,
        Probe::Filtered,
        "no grant yet",
    );

    let signer = Signer::Es256;
    let token = provider.token(signer, POSTGRES.scope, AUDIENCE)?;
    let (header, claims) = (jwt_part(&token, 0)?, jwt_part(&token, 1)?);
    println!(
        "\nThe client {} asks the provider for a token (client credentials, resource {AUDIENCE}):",
        signer.client_id()
    );
    println!(
        "  header: alg {}, kid {}, typ {}",
        header["alg"], header["kid"], header["typ"]
    );
    let lifetime = claims["exp"].as_u64().unwrap_or(0) - claims["iat"].as_u64().unwrap_or(0);
    println!(
        "  claims: sub {}, scope {}, aud {}, lives {lifetime} s",
        claims["sub"], claims["scope"], claims["aud"]
    );
    println!(
        "  (the token itself is never printed nor logged; the log names it by hash {})",
        token_hash(&token)
    );
    let token_file = tls.dir().join("token");
    std::fs::write(&token_file, &token).context("write the token file")?;

    let mut opened = Vec::new();
    for family in Family::BOTH {
        println!(
            "\n$ portguard open {} --token-file token --port 5432/tcp --ca ca.pem   (in the client namespace)",
            auth_url(family)
        );
        let output = gated::portguard_open(
            &lab.client,
            tls,
            family,
            &token_file,
            &["--port", "5432/tcp"],
        )?;
        let printed = String::from_utf8_lossy(&output.stdout).trim().to_owned();
        let complaint = String::from_utf8_lossy(&output.stderr).trim().to_owned();
        println!(
            "  {}",
            if printed.is_empty() {
                &complaint
            } else {
                &printed
            }
        );
        checks.check(output.status.success(), "portguard open was granted");
        let id = printed
            .strip_prefix("grant ")
            .and_then(|rest| rest.split_whitespace().next())
            .unwrap_or_default()
            .to_owned();

        checks.probe(
            lab,
            family,
            POSTGRES.port,
            Probe::Open,
            &format!("grant {id}"),
        );
        let to = family.host(POSTGRES.port);
        let other = family.client_other();
        let found = tcp_probe_from(&lab.client, other, to, FILTERED_WAIT);
        let from = match other {
            std::net::IpAddr::V4(v4) => v4.to_string(),
            std::net::IpAddr::V6(v6) => format!("[{v6}]"),
        };
        checks.check(
            found == Probe::Filtered,
            &format!(
                "{:<36} {:<26} the client's other address: not the grant's",
                format!("{from} → {to}"),
                found.to_string()
            ),
        );
        opened.push(id);
    }

    println!("\nWhat the agent logged about it:");
    for (what, name) in [
        ("token.accepted", "token.accepted"),
        ("grant.opened", "grant.opened"),
    ] {
        match agent.wait_for(what, Duration::from_secs(2), |e| e["event"] == name) {
            Ok(event) => println!("  {event}"),
            Err(_) => checks.check(false, &format!("no {what} event")),
        }
    }
    let by_grant = |event: &Value| event["event"] == "flow.allowed" && event["reason"] == "grant";
    match agent.wait_for("flow.allowed by a grant", Duration::from_secs(2), by_grant) {
        Ok(event) => println!("  {event}"),
        Err(_) => checks.check(false, "no flow.allowed event for the grant"),
    }
    let logged = agent
        .events()
        .iter()
        .any(|e| e.to_string().contains(&token));
    checks.check(!logged, "no event holds the token");

    println!("\n$ portguard grants list   (the operator, through the agent's control socket)");
    let socket = control_socket(agent.policy(), lab.host.name());
    let listed = std::process::Command::new(portguard_bin()?)
        .args(["grants", "list", "--control-socket"])
        .arg(&socket)
        .output()
        .context("run portguard grants list")?;
    let mut expires_ms = 0;
    let now_ms = SystemTime::now().duration_since(UNIX_EPOCH)?.as_millis() as u64;
    for line in String::from_utf8_lossy(&listed.stdout).lines() {
        let grant: Value = serde_json::from_str(line).unwrap_or_default();
        let expires = grant["expires_unix_ms"].as_u64().unwrap_or(0);
        let ports: Vec<String> = grant["ports"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|p| format!("{}/{}", p["port"], p["protocol"].as_str().unwrap_or("?")))
            .collect();
        println!(
            "  {} for {} opens {} to subject {}, expires in {:.1} s",
            grant["id"].as_str().unwrap_or("?"),
            grant["source"].as_str().unwrap_or("?"),
            ports.join(", "),
            grant["subject"].as_str().unwrap_or("?"),
            expires.saturating_sub(now_ms) as f64 / 1000.0
        );
        expires_ms = expires_ms.max(expires);
    }
    checks.check(listed.status.success(), "portguard grants list answered");

    println!(
        "\nWaiting for the grants to expire (max_ttl {})...",
        POSTGRES.max_ttl
    );
    let now_ms = SystemTime::now().duration_since(UNIX_EPOCH)?.as_millis() as u64;
    thread::sleep(Duration::from_millis(
        expires_ms.saturating_sub(now_ms) + 300,
    ));
    for family in Family::BOTH {
        checks.probe(
            lab,
            family,
            POSTGRES.port,
            Probe::Filtered,
            "grant expired: the kernel refuses it",
        );
    }
    for id in opened.iter().filter(|id| !id.is_empty()) {
        match agent.wait_for("grant.expired", Duration::from_secs(2), |e| {
            e["event"] == "grant.expired" && e["grant"] == id.as_str()
        }) {
            Ok(event) => println!("  {event}"),
            Err(_) => checks.check(false, &format!("no grant.expired event for {id}")),
        }
    }
    Ok(())
}
