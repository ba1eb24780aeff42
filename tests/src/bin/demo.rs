//! `cargo xtask demo`: portguard guarding a host in a network namespace, shown with real
//! connections from a client namespace. Exits non-zero when anything is not as expected.

use std::{net::SocketAddr, process::ExitCode, time::Duration};

use portguard_tests::{
    Agent, Lab, TcpServer,
    lab::{CLIENT_V4, CLIENT_V6, Family, HOST_IF, HOST_V4, HOST_V6, SUBNET_V4, SUBNET_V6, any},
    probe::{ANSWER_WAIT, FILTERED_WAIT, Probe, tcp_probe},
};
use serde_json::Value;

/// The policy the demo applies: an SSH-like port for the client's subnet, a web port for
/// everyone, nothing else.
fn policy() -> String {
    format!(
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
    )
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
        why: "declared nowhere: no answer, not even a reset",
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

    let policy = policy();
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

    println!("\nStopping the agent (SIGTERM)...");
    let stopped = stop(&mut agent);
    checks.check(
        stopped.is_ok(),
        &stopped.unwrap_or_else(|error| format!("{error:#}")),
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
    let detached = agent.events_named("guard.detached").len();
    anyhow::ensure!(
        detached > 0,
        "the agent stopped without detaching\n{}",
        agent.report()
    );
    Ok(format!(
        "agent stopped ({status}), detached from {detached} interface(s)"
    ))
}
