//! Replies to the host's own traffic pass the guard: TCP by its flags, UDP because the tcx
//! egress program recorded the flow. A datagram that answers nothing the host sent is
//! dropped, even on a port where the host is waiting for an answer.

use std::net::SocketAddr;

use portguard_tests::{
    Lab, TcpServer, UdpServer, dns,
    lab::{Family, any},
    probe::{
        ANSWER_WAIT, FILTERED_WAIT, any_port_for, tcp_exchange, udp_receive, udp_request_connected,
        udp_request_to, udp_socket,
    },
};

/// Nothing declared that these tests use: every reply must pass on its own merits.
const POLICY: &str = r#"
[guard]
interfaces = ["*"]

[[endpoint]]
name = "ssh"
port = 22
protocol = "tcp"
"#;

/// A DNS server on each of the client's first addresses. A wildcard socket would answer
/// from whichever address routing picks, which is not the address the host asked.
fn resolvers(lab: &Lab) -> anyhow::Result<[UdpServer; 2]> {
    Ok([
        UdpServer::dns(&lab.client, Family::V4.client(53))?,
        UdpServer::dns(&lab.client, Family::V6.client(53))?,
    ])
}

#[test]
fn host_tcp_connection_gets_its_replies() -> anyhow::Result<()> {
    let lab = Lab::new("host_tcp_connection_gets_replies")?;
    let _service = TcpServer::start(&lab.client, any(7000))?;
    let agent = lab.start_agent(POLICY)?;

    for family in Family::BOTH {
        let echoed = tcp_exchange(
            &lab.host,
            family.client(7000),
            b"hello from the host",
            ANSWER_WAIT,
        );
        let echoed = echoed.map_err(|error| error.context(agent.report()))?;
        assert_eq!(
            echoed,
            b"hello from the host",
            "{family:?}\n{}",
            agent.report()
        );
    }
    Ok(())
}

#[test]
fn host_dns_query_from_connected_socket_gets_its_answer() -> anyhow::Result<()> {
    let lab = Lab::new("host_dns_query_connected")?;
    let _resolvers = resolvers(&lab)?;
    let agent = lab.start_agent(POLICY)?;

    for (id, family) in (1u16..).zip(Family::BOTH) {
        let resolver = family.client(53);
        let socket = udp_socket(&lab.host, any_port_for(resolver))?;
        socket.connect(resolver)?;

        let answer =
            udp_request_connected(&socket, &dns::query(id, "db.example.test"), ANSWER_WAIT)?;
        let Some(answer) = answer else {
            panic!(
                "{family:?}: no DNS answer on a connected socket\n{}",
                agent.report()
            );
        };
        assert_eq!(dns::read_answer(&answer, id)?, dns::ANSWER);
    }
    Ok(())
}

#[test]
fn host_dns_query_from_unconnected_socket_gets_its_answer() -> anyhow::Result<()> {
    let lab = Lab::new("host_dns_query_unconnected")?;
    let _resolvers = resolvers(&lab)?;
    let agent = lab.start_agent(POLICY)?;

    for (id, family) in (1u16..).zip(Family::BOTH) {
        let resolver = family.client(53);
        let socket = udp_socket(&lab.host, any_port_for(resolver))?;

        let answer = udp_request_to(
            &socket,
            resolver,
            &dns::query(id, "db.example.test"),
            ANSWER_WAIT,
        )?;
        let Some(answer) = answer else {
            panic!(
                "{family:?}: no DNS answer on an unconnected socket\n{}",
                agent.report()
            );
        };
        assert_eq!(dns::read_answer(&answer, id)?, dns::ANSWER);
    }
    Ok(())
}

#[test]
fn unsolicited_datagram_to_host_query_port_is_dropped() -> anyhow::Result<()> {
    let lab = Lab::new("unsolicited_datagram_dropped")?;
    let _resolvers = resolvers(&lab)?;
    let mut agent = lab.start_agent(POLICY)?;

    for (id, family) in (1u16..).zip(Family::BOTH) {
        // The host asks, and its answer comes back: the port is waiting for replies.
        let resolver = family.client(53);
        let socket = udp_socket(&lab.host, any_port_for(resolver))?;
        let answer = udp_request_to(
            &socket,
            resolver,
            &dns::query(id, "db.example.test"),
            ANSWER_WAIT,
        )?;
        assert!(
            answer.is_some(),
            "{family:?}: no DNS answer\n{}",
            agent.report()
        );
        let port = socket.local_addr()?.port();

        // Another client socket sends to that same port: it answers nothing, so it is dropped.
        let host_port = SocketAddr::new(family.host(0).ip(), port);
        let intruder = udp_socket(&lab.client, any_port_for(host_port))?;
        intruder.send_to(b"unsolicited", host_port)?;
        let received = udp_receive(&socket, FILTERED_WAIT)?;
        assert_eq!(
            received, None,
            "{family:?}: unsolicited datagram reached port {port}"
        );

        agent.wait_for(
            &format!("flow.blocked for {family:?} udp port {port}"),
            ANSWER_WAIT,
            |event| {
                event["event"] == "flow.blocked"
                    && event["family"] == family.name()
                    && event["protocol"] == "udp"
                    && event["destination_port"] == port
                    && event["reason"] == "port_closed"
            },
        )?;
    }
    Ok(())
}
