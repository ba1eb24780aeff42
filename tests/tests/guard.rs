//! The guard's verdicts on new inbound traffic, seen from a client namespace: declared ports
//! answer, every other port is filtered (dropped, not refused), and an endpoint is closed to
//! sources outside its prefixes. IPv4 and IPv6, TCP and UDP.

use portguard_tests::{
    Lab, TcpServer, UdpServer,
    lab::{Family, any},
    probe::{ANSWER_WAIT, FILTERED_WAIT, Probe, tcp_probe, tcp_probe_from, udp_request},
};

const POLICY: &str = r#"
[guard]
interfaces = ["*"]

[[endpoint]]
name = "web"
port = 8080
protocol = "tcp"

[[endpoint]]
name = "dns"
port = 5353
protocol = "udp"
"#;

#[test]
fn declared_tcp_port_accepts_connections() -> anyhow::Result<()> {
    let lab = Lab::new("declared_tcp_port_accepts_connections")?;
    let _web = TcpServer::start(&lab.host, any(8080))?;
    let agent = lab.start_agent(POLICY)?;

    for family in Family::BOTH {
        let probe = tcp_probe(&lab.client, family.host(8080), ANSWER_WAIT);
        assert_eq!(
            probe,
            Probe::Open,
            "{family:?} 8080/tcp\n{}",
            agent.report()
        );
    }
    Ok(())
}

#[test]
fn undeclared_tcp_port_looks_filtered_not_refused() -> anyhow::Result<()> {
    let lab = Lab::new("undeclared_tcp_port_looks_filtered")?;
    let _db = TcpServer::start(&lab.host, any(5432))?;
    for family in Family::BOTH {
        let before = tcp_probe(&lab.client, family.host(5432), ANSWER_WAIT);
        assert_eq!(
            before,
            Probe::Open,
            "{family:?} 5432/tcp answers before the guard"
        );
    }

    let agent = lab.start_agent(POLICY)?;

    for family in Family::BOTH {
        let probe = tcp_probe(&lab.client, family.host(5432), FILTERED_WAIT);
        assert_eq!(
            probe,
            Probe::Filtered,
            "{family:?} 5432/tcp\n{}",
            agent.report()
        );
    }
    Ok(())
}

#[test]
fn declared_udp_port_answers() -> anyhow::Result<()> {
    let lab = Lab::new("declared_udp_port_answers")?;
    let _dns = UdpServer::echo(&lab.host, any(5353))?;
    let agent = lab.start_agent(POLICY)?;

    for family in Family::BOTH {
        let answer = udp_request(&lab.client, family.host(5353), b"ping", ANSWER_WAIT)?;
        assert_eq!(
            answer.as_deref(),
            Some(&b"ping"[..]),
            "{family:?} 5353/udp\n{}",
            agent.report()
        );
    }
    Ok(())
}

#[test]
fn undeclared_udp_port_drops_datagrams() -> anyhow::Result<()> {
    let lab = Lab::new("undeclared_udp_port_drops_datagrams")?;
    let _syslog = UdpServer::echo(&lab.host, any(5514))?;
    for family in Family::BOTH {
        let before = udp_request(&lab.client, family.host(5514), b"ping", ANSWER_WAIT)?;
        assert!(
            before.is_some(),
            "{family:?} 5514/udp answers before the guard"
        );
    }

    let agent = lab.start_agent(POLICY)?;

    for family in Family::BOTH {
        let answer = udp_request(&lab.client, family.host(5514), b"ping", FILTERED_WAIT)?;
        assert_eq!(answer, None, "{family:?} 5514/udp\n{}", agent.report());
    }
    Ok(())
}

#[test]
fn source_outside_endpoint_prefixes_is_dropped() -> anyhow::Result<()> {
    let lab = Lab::new("source_outside_endpoint_prefixes")?;
    let _ssh = TcpServer::start(&lab.host, any(2222))?;
    let policy = format!(
        r#"
[guard]
interfaces = ["*"]

[[endpoint]]
name = "admin-ssh"
port = 2222
protocol = "tcp"
from = ["{}/32", "{}/128"]
"#,
        Family::V4.client_other(),
        Family::V6.client_other(),
    );
    let agent = lab.start_agent(&policy)?;

    for family in Family::BOTH {
        let outside = family.client(0).ip();
        let probe = tcp_probe_from(&lab.client, outside, family.host(2222), FILTERED_WAIT);
        assert_eq!(
            probe,
            Probe::Filtered,
            "from {outside} (outside)\n{}",
            agent.report()
        );

        let inside = family.client_other();
        let probe = tcp_probe_from(&lab.client, inside, family.host(2222), ANSWER_WAIT);
        assert_eq!(
            probe,
            Probe::Open,
            "from {inside} (inside)\n{}",
            agent.report()
        );
    }
    Ok(())
}
