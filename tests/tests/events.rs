//! The flow events the agent logs from the kernel: connections let in name their endpoint,
//! drops name their reason, and a flood from one source is logged at a limited rate with
//! the suppressed packets counted.

use std::{thread, time::Duration};

use portguard_tests::{
    Lab, TcpServer,
    lab::{Family, HOST_IF, any},
    probe::{ANSWER_WAIT, FILTERED_WAIT, Probe, syn_flood, tcp_probe, tcp_probe_from},
};
use serde_json::Value;

const POLICY: &str = r#"
[guard]
interfaces = ["*"]

[[endpoint]]
name = "web"
port = 8080
protocol = "tcp"

[[endpoint]]
name = "admin-ssh"
port = 2222
protocol = "tcp"
from = ["10.201.0.3/32", "fd00:201::3/128"]
"#;

/// Whether `event` is about a TCP connection from `family` to `port`.
fn tcp_to(event: &Value, family: Family, port: u16) -> bool {
    event["family"] == family.name()
        && event["protocol"] == "tcp"
        && event["destination_port"] == port
}

#[test]
fn allowed_connection_is_reported_with_its_endpoint() -> anyhow::Result<()> {
    let lab = Lab::new("allowed_connection_is_reported")?;
    let _web = TcpServer::start(&lab.host, any(8080))?;
    let mut agent = lab.start_agent(POLICY)?;

    for family in Family::BOTH {
        assert_eq!(
            tcp_probe(&lab.client, family.host(8080), ANSWER_WAIT),
            Probe::Open
        );

        let allowed = agent.wait_for(
            &format!("flow.allowed {family:?} 8080"),
            ANSWER_WAIT,
            |event| event["event"] == "flow.allowed" && tcp_to(event, family, 8080),
        )?;
        assert_eq!(allowed["rule"], "web", "{allowed}");
        assert_eq!(allowed["reason"], "endpoint", "{allowed}");
        assert_eq!(allowed["interface"], HOST_IF, "{allowed}");
        assert_eq!(
            allowed["source"],
            family.client(0).ip().to_string(),
            "{allowed}"
        );
        assert_eq!(
            allowed["destination"],
            family.host(0).ip().to_string(),
            "{allowed}"
        );
    }
    Ok(())
}

#[test]
fn blocked_connection_is_reported_with_its_reason() -> anyhow::Result<()> {
    let lab = Lab::new("blocked_connection_is_reported")?;
    let mut agent = lab.start_agent(POLICY)?;

    for family in Family::BOTH {
        // 5432 is declared by nothing; 2222 is declared, but not for the client's first address.
        assert_eq!(
            tcp_probe(&lab.client, family.host(5432), FILTERED_WAIT),
            Probe::Filtered
        );
        let first = family.client(0).ip();
        assert_eq!(
            tcp_probe_from(&lab.client, first, family.host(2222), FILTERED_WAIT),
            Probe::Filtered
        );

        for (port, reason) in [(5432, "port_closed"), (2222, "source_not_allowed")] {
            let blocked = agent.wait_for(
                &format!("flow.blocked {family:?} {port}"),
                ANSWER_WAIT,
                |event| event["event"] == "flow.blocked" && tcp_to(event, family, port),
            )?;
            assert_eq!(blocked["reason"], reason, "{blocked}");
            assert_eq!(blocked["dropped"], true, "{blocked}");
            assert_eq!(blocked["source"], first.to_string(), "{blocked}");
        }
    }
    Ok(())
}

#[test]
fn syn_flood_to_closed_port_is_logged_at_a_limited_rate() -> anyhow::Result<()> {
    const SYNS: u32 = 2_000;
    let lab = Lab::new("syn_flood_is_rate_limited")?;
    let _web = TcpServer::start(&lab.host, any(8080))?;
    let mut agent = lab.start_agent(POLICY)?;

    // Two seconds of flood, then one more SYN after the rate window has passed: that event
    // carries the count of what the last window suppressed.
    syn_flood(
        &lab.client,
        Family::V4.host(5432),
        SYNS,
        Duration::from_secs(2),
    )?;
    thread::sleep(Duration::from_millis(1_200));
    syn_flood(&lab.client, Family::V4.host(5432), 1, Duration::ZERO)?;
    agent.wait_for("flow.blocked with a count", ANSWER_WAIT, |event| {
        event["event"] == "flow.blocked"
            && tcp_to(event, Family::V4, 5432)
            && event["count"].is_u64()
    })?;
    thread::sleep(Duration::from_millis(500));

    let blocked: Vec<Value> = agent
        .events_named("flow.blocked")
        .into_iter()
        .filter(|event| tcp_to(event, Family::V4, 5432))
        .collect();
    let counted: u64 = blocked
        .iter()
        .map(|event| event["count"].as_u64().unwrap_or(1))
        .sum();
    println!(
        "{} SYNs: {} flow.blocked events counting {counted}",
        SYNS + 1,
        blocked.len()
    );
    assert!(
        blocked.len() <= 48,
        "{} flow.blocked events for {SYNS} SYNs: not rate limited\n{}",
        blocked.len(),
        agent.report()
    );
    assert!(
        blocked
            .iter()
            .skip(1)
            .any(|event| event["count"].as_u64() > Some(1)),
        "{}",
        agent.report()
    );
    assert!(
        (u64::from(SYNS) * 9 / 10..=u64::from(SYNS) + 1).contains(&counted),
        "the events count {counted} SYNs of {}\n{}",
        SYNS + 1,
        agent.report()
    );

    assert!(
        agent.is_running(),
        "the agent died in the flood\n{}",
        agent.report()
    );
    assert_eq!(
        tcp_probe(&lab.client, Family::V4.host(8080), ANSWER_WAIT),
        Probe::Open
    );
    Ok(())
}
