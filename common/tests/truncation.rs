//! Packets that end early: every cut of every kind of packet, and every length field that
//! declares less than the headers need. Each gets its own truncation reason, never a pass
//! to a closed port, never a panic.

mod support;

use portguard_common::{
    Reason,
    craft::{Frame, HOST_V4, HOST_V6, SAMPLE_SOURCES_V6, auth, dest_opts, hop_by_hop, routing},
    packet::{TCP_ACK, TCP_SYN},
};
use support::{decision, enforce, from_peer_v4, from_peer_v6, judge_bytes, reason, sample};

#[derive(Clone, Copy, Debug)]
enum Family {
    V4,
    V6,
    NonIp,
}

/// One packet of each kind, the family it is and its verdict when whole.
fn kinds() -> Vec<(Frame, Family, Reason)> {
    use Family::*;
    let dns_net_v6 = SAMPLE_SOURCES_V6[3];
    vec![
        (from_peer_v4().tcp(40000, 22, TCP_SYN), V4, Reason::Endpoint),
        (
            from_peer_v4().tcp(40000, 22, TCP_ACK).payload(100),
            V4,
            Reason::TcpNotNew,
        ),
        (
            from_peer_v4().udp(40000, 53).payload(30),
            V4,
            Reason::Endpoint,
        ),
        (
            from_peer_v4().icmp(8, 0).payload(56),
            V4,
            Reason::IcmpBlocked,
        ),
        (
            from_peer_v4()
                .vlan(7)
                .ipv4_options(&[1, 1, 1, 0])
                .tcp(1, 443, TCP_SYN),
            V4,
            Reason::Endpoint,
        ),
        (
            from_peer_v4()
                .qinq(1)
                .vlan(2)
                .fragment(0, true)
                .udp(1, 8080),
            V4,
            Reason::Grant,
        ),
        (
            from_peer_v4().fragment(9, false).udp(1, 8080),
            V4,
            Reason::LaterFragment,
        ),
        (
            from_peer_v6().tcp(40000, 443, TCP_SYN),
            V6,
            Reason::Endpoint,
        ),
        (
            Frame::ipv6(dns_net_v6, HOST_V6).udp(5353, 53).payload(40),
            V6,
            Reason::Endpoint,
        ),
        (
            from_peer_v6().icmp(135, 0).payload(24),
            V6,
            Reason::IcmpEssential,
        ),
        (
            from_peer_v6()
                .vlan(3)
                .ext(hop_by_hop(8))
                .ext(routing(24))
                .ext(dest_opts(8))
                .ext(auth(16))
                .fragment(0, true)
                .tcp(1, 22, TCP_SYN),
            V6,
            Reason::Endpoint,
        ),
        (Frame::non_ip(0x0806).payload(28), NonIp, Reason::NonIp),
        (
            Frame::non_ip(0x88cc).vlan(5).payload(40),
            NonIp,
            Reason::NonIp,
        ),
    ]
}

/// What a packet cut to `len` bytes must be dropped for.
fn cut_reason(frame: &Frame, family: Family, len: usize) -> Reason {
    match family {
        _ if len < 14 => Reason::TruncatedEthernet,
        _ if len < frame.network_offset() => Reason::TruncatedVlan,
        Family::V4 => Reason::TruncatedIpv4,
        Family::V6 => Reason::TruncatedIpv6,
        Family::NonIp => Reason::NonIp,
    }
}

#[test]
fn every_cut_of_every_kind_of_packet_is_dropped_as_truncated() {
    for (frame, family, whole) in kinds() {
        let bytes = frame.build();
        assert_eq!(reason(&frame), whole, "{frame:?} whole");

        for len in 0..bytes.len() {
            let got = judge_bytes(&bytes[..len], &sample(), &enforce());
            let want = cut_reason(&frame, family, len);
            assert_eq!(got.reason, want, "{frame:?} cut to {len} bytes");
            assert!(
                want == Reason::NonIp || !got.reason.passes(),
                "{frame:?} cut to {len} passes"
            );
        }
    }
}

/// What a transport header clipped to `len` bytes under the IP lengths must be dropped for,
/// or `None` when enough of it is there to judge.
fn clip_reason(protocol: &str, len: usize, first_fragment: bool) -> Option<Reason> {
    let (needed, whole) = match protocol {
        "tcp" => (20, Reason::TruncatedTcp),
        "udp" => (8, Reason::TruncatedUdp),
        // Only the type is judged: 4 bytes (type, code, checksum) suffice.
        _ => return (len < 4).then_some(Reason::TruncatedIcmp),
    };
    (len < needed).then_some(if first_fragment {
        Reason::ShortFirstFragment
    } else {
        whole
    })
}

#[test]
fn every_clip_of_the_transport_header_is_dropped_under_its_own_reason() {
    let dns_net_v6 = SAMPLE_SOURCES_V6[3];
    for first_fragment in [false, true] {
        let cases = [
            ("tcp", from_peer_v4().tcp(1, 22, TCP_SYN), Reason::Endpoint),
            ("udp", from_peer_v4().udp(1, 53), Reason::Endpoint),
            ("icmp", from_peer_v4().icmp(0, 0), Reason::IcmpEssential),
            ("tcp", from_peer_v6().tcp(1, 22, TCP_SYN), Reason::Endpoint),
            (
                "udp",
                Frame::ipv6(dns_net_v6, HOST_V6).udp(1, 53),
                Reason::Endpoint,
            ),
            ("icmp", from_peer_v6().icmp(129, 0), Reason::IcmpEssential),
        ];
        for (protocol, frame, whole) in cases {
            let frame = if first_fragment {
                frame.fragment(0, true)
            } else {
                frame
            };
            for len in 0..=20 {
                let got = reason(&frame.clone().clip_transport(len));
                let want = clip_reason(protocol, len, first_fragment).unwrap_or(whole);
                assert_eq!(got, want, "{frame:?} with {len} bytes of {protocol}");
            }
        }
    }
}

#[test]
fn every_ipv4_total_length_short_of_the_headers_is_dropped() {
    for options in [&[][..], &[1, 1, 1, 1, 1, 1, 1, 0]] {
        let frame = Frame::ipv4(STRANGER, HOST_V4)
            .ipv4_options(options)
            .tcp(1, 443, TCP_SYN);
        let header_len = 20 + options.len() as u16;
        for total in 0..header_len + 20 {
            let want = if total < header_len {
                Reason::BadIpv4Header
            } else {
                Reason::TruncatedTcp
            };
            assert_eq!(
                reason(&frame.clone().total_length(total)),
                want,
                "total length {total}"
            );
        }
        assert_eq!(
            reason(&frame.total_length(header_len + 20)),
            Reason::Endpoint
        );
    }
}

const STRANGER: [u8; 4] = support::STRANGER_V4;

#[test]
fn every_ipv6_payload_length_short_of_the_extension_chain_is_dropped() {
    for more in [false, true] {
        let chain = [hop_by_hop(16), routing(8), dest_opts(24), auth(12)];
        let frame = chain
            .iter()
            .cloned()
            .fold(from_peer_v6(), Frame::ext)
            .fragment(0, more);
        let frame = frame.tcp(1, 22, TCP_SYN);

        // Where each header starts in the payload, and the bytes of it the walk reads.
        let mut headers = Vec::new();
        let mut start = 0;
        for ext in &chain {
            headers.push((start, 2));
            start += ext.len();
        }
        headers.push((start, 4));
        let transport = start + 8;

        for payload in 0..transport + 20 {
            let want = match headers.iter().find(|(start, read)| payload < start + read) {
                Some(_) => Reason::TruncatedIpv6Extension,
                None if more => Reason::ShortFirstFragment,
                None => Reason::TruncatedTcp,
            };
            let got = decision(&frame.clone().payload_length(payload as u16));
            assert_eq!(
                got.reason, want,
                "payload length {payload}, first fragment {more}"
            );
        }
        assert_eq!(
            reason(&frame.payload_length(transport as u16 + 20)),
            Reason::Endpoint
        );
    }
}
