//! The verdict on packets that parse: TCP flags, UDP endpoints, grants and replies, endpoint
//! source prefixes, grant expiry, ICMP policy and monitor mode, against the verdict table of
//! DESIGN.md section 2.

mod support;

use portguard_common::{
    Reason,
    craft::{Frame, HOST_V4, HOST_V6, SAMPLE_SOURCES_V6},
    maps::{Config, ICMP_ALL, MODE_MONITOR, PROTO_TCP, ipv4_mapped},
    packet::{TCP_ACK, TCP_FIN, TCP_RST, TCP_SYN},
};
use support::{
    BOOT_NS, NS_PER_SEC, STRANGER_V4, STRANGER_V6, decision, enforce, from_peer_v4, from_peer_v6,
    judge_bytes, reason, sample,
};

fn from_v4(source: [u8; 4]) -> Frame {
    Frame::ipv4(source, HOST_V4)
}

fn from_v6(source: [u8; 16]) -> Frame {
    Frame::ipv6(source, HOST_V6)
}

#[test]
fn syn_to_closed_port_is_dropped() {
    assert_eq!(
        reason(&from_peer_v4().tcp(1, 80, TCP_SYN)),
        Reason::PortClosed
    );
    assert_eq!(
        reason(&from_peer_v6().tcp(1, 80, TCP_SYN)),
        Reason::PortClosed
    );
}

#[test]
fn syn_ack_ack_rst_and_flagless_segments_pass_as_not_new() {
    for flags in [
        TCP_SYN | TCP_ACK,
        TCP_ACK,
        TCP_RST,
        TCP_RST | TCP_ACK,
        TCP_FIN | TCP_ACK,
        0,
    ] {
        assert_eq!(
            reason(&from_peer_v4().tcp(1, 80, flags)),
            Reason::TcpNotNew,
            "{flags:#x}"
        );
        assert_eq!(
            reason(&from_peer_v6().tcp(1, 80, flags)),
            Reason::TcpNotNew,
            "{flags:#x}"
        );
    }
}

#[test]
fn syn_with_fin_or_rst_is_judged_as_new() {
    for flags in [TCP_SYN | TCP_FIN, TCP_SYN | TCP_RST, !TCP_ACK] {
        assert_eq!(
            reason(&from_peer_v4().tcp(1, 80, flags)),
            Reason::PortClosed,
            "{flags:#x}"
        );
        assert_eq!(
            reason(&from_peer_v4().tcp(1, 22, flags)),
            Reason::Endpoint,
            "{flags:#x}"
        );
    }
}

#[test]
fn tcp_data_offset_below_five_is_dropped() {
    let frame = from_peer_v4().tcp(1, 22, TCP_SYN);
    let mut bytes = frame.build();
    bytes[frame.transport_offset() + 12] = 0x40;
    assert_eq!(
        judge_bytes(&bytes, &sample(), &enforce()).reason,
        Reason::BadTcpHeader
    );
}

#[test]
fn udp_to_endpoint_passes() {
    assert_eq!(
        reason(&from_v4(STRANGER_V4).udp(5353, 53)),
        Reason::Endpoint
    );
    assert_eq!(
        reason(&from_v6(STRANGER_V6).udp(5353, 443)),
        Reason::Endpoint
    );
}

#[test]
fn udp_to_granted_port_passes() {
    let got = decision(&from_peer_v4().udp(5000, 8080));
    assert_eq!((got.reason, got.rule), (Reason::Grant, 105));
}

#[test]
fn udp_reply_within_the_ttl_passes() {
    assert_eq!(
        reason(&from_v4([192, 0, 2, 53]).udp(53, 40000)),
        Reason::UdpReply
    );
    assert_eq!(
        reason(&from_v6(SAMPLE_SOURCES_V6[2]).udp(53, 40001)),
        Reason::UdpReply
    );
}

#[test]
fn udp_reply_after_the_ttl_is_dropped() {
    assert_eq!(
        reason(&from_v4([10, 0, 0, 53]).udp(123, 40002)),
        Reason::PortClosed
    );
    // The flow to 192.0.2.53 was sent 1 s ago: a 500 ms lifetime has run out.
    let config = Config {
        udp_reply_ttl_ns: NS_PER_SEC / 2,
        ..enforce()
    };
    let bytes = from_v4([192, 0, 2, 53]).udp(53, 40000).build();
    assert_eq!(
        judge_bytes(&bytes, &sample(), &config).reason,
        Reason::PortClosed
    );
}

#[test]
fn udp_reply_ttl_follows_the_config() {
    // The flow to 10.0.0.53 was sent 60 s ago.
    let config = Config {
        udp_reply_ttl_ns: 61 * NS_PER_SEC,
        ..enforce()
    };
    let bytes = from_v4([10, 0, 0, 53]).udp(123, 40002).build();
    assert_eq!(
        judge_bytes(&bytes, &sample(), &config).reason,
        Reason::UdpReply
    );
}

#[test]
fn unsolicited_udp_is_dropped() {
    assert_eq!(
        reason(&from_v4(STRANGER_V4).udp(53, 40000)),
        Reason::PortClosed
    );
    assert_eq!(
        reason(&from_v4([192, 0, 2, 53]).udp(54, 40000)),
        Reason::PortClosed
    );
    assert_eq!(
        reason(&from_v4([192, 0, 2, 53]).udp(53, 40001)),
        Reason::PortClosed
    );
    assert_eq!(reason(&from_v6(STRANGER_V6).udp(53, 9)), Reason::PortClosed);
}

#[test]
fn endpoint_source_inside_a_prefix_passes() {
    assert_eq!(
        reason(&from_v4([10, 200, 3, 4]).tcp(1, 22, TCP_SYN)),
        Reason::Endpoint
    );
    assert_eq!(
        reason(&from_peer_v6().tcp(1, 22, TCP_SYN)),
        Reason::Endpoint
    );
    assert_eq!(
        reason(&from_v6(SAMPLE_SOURCES_V6[3]).udp(1, 53)),
        Reason::Endpoint
    );
}

#[test]
fn endpoint_source_outside_its_prefixes_is_source_not_allowed() {
    assert_eq!(
        reason(&from_v4(STRANGER_V4).tcp(1, 22, TCP_SYN)),
        Reason::SourceNotAllowed
    );
    assert_eq!(
        reason(&from_v4([11, 0, 0, 1]).tcp(1, 22, TCP_SYN)),
        Reason::SourceNotAllowed
    );
    assert_eq!(
        reason(&from_v6(STRANGER_V6).tcp(1, 22, TCP_SYN)),
        Reason::SourceNotAllowed
    );
    // UDP 53 is open to any IPv4 source, but IPv6 only from 2001:db8:53::/48.
    assert_eq!(reason(&from_peer_v6().udp(1, 53)), Reason::SourceNotAllowed);
    // UDP 443 is open to any IPv6 source and no IPv4 one.
    assert_eq!(
        reason(&from_peer_v4().udp(1, 443)),
        Reason::SourceNotAllowed
    );
}

#[test]
fn longest_matching_prefix_names_the_rule() {
    let rule = |source| decision(&from_v4(source).tcp(1, 22, TCP_SYN)).rule;
    assert_eq!(rule([192, 0, 2, 1]), 5);
    assert_eq!(rule([192, 0, 2, 128]), 6);
    assert_eq!(rule([192, 0, 2, 255]), 6);
    assert_eq!(rule([10, 9, 9, 9]), 1);
}

#[test]
fn live_grant_passes_syn_from_its_source() {
    let got = decision(&from_peer_v4().tcp(1, 5432, TCP_SYN));
    assert_eq!((got.reason, got.rule), (Reason::Grant, 100));
    let got = decision(&from_peer_v6().tcp(1, 5432, TCP_SYN));
    assert_eq!((got.reason, got.rule), (Reason::Grant, 101));
}

#[test]
fn expired_grant_drops_syn() {
    assert_eq!(
        reason(&from_v4([192, 0, 2, 7]).tcp(1, 5432, TCP_SYN)),
        Reason::GrantExpired
    );
    assert_eq!(
        reason(&from_v6(SAMPLE_SOURCES_V6[1]).tcp(1, 8080, TCP_SYN)),
        Reason::GrantExpired
    );
}

#[test]
fn grant_ending_now_is_expired() {
    let maps = sample().with_grant(ipv4_mapped(STRANGER_V4), PROTO_TCP, 5432, BOOT_NS, 7);
    let bytes = from_v4(STRANGER_V4).tcp(1, 5432, TCP_SYN).build();
    assert_eq!(
        judge_bytes(&bytes, &maps, &enforce()).reason,
        Reason::GrantExpired
    );
    let maps = maps.with_grant(ipv4_mapped(STRANGER_V4), PROTO_TCP, 5432, BOOT_NS + 1, 7);
    assert_eq!(judge_bytes(&bytes, &maps, &enforce()).reason, Reason::Grant);
}

#[test]
fn grant_opens_nothing_for_another_source_port_or_protocol() {
    assert_eq!(
        reason(&from_v4([10, 0, 0, 6]).tcp(1, 5432, TCP_SYN)),
        Reason::PortClosed
    );
    assert_eq!(
        reason(&from_peer_v4().tcp(1, 5433, TCP_SYN)),
        Reason::PortClosed
    );
    assert_eq!(reason(&from_peer_v4().udp(1, 5432)), Reason::PortClosed);
    assert_eq!(
        reason(&from_peer_v4().tcp(1, 8080, TCP_SYN)),
        Reason::PortClosed
    );
    assert_eq!(reason(&from_peer_v6().udp(1, 8080)), Reason::PortClosed);
}

#[test]
fn essential_icmp_passes_in_both_families() {
    for icmp_type in [0, 3, 11, 12] {
        assert_eq!(
            reason(&from_v4(STRANGER_V4).icmp(icmp_type, 0)),
            Reason::IcmpEssential
        );
    }
    for icmp_type in [1, 2, 3, 4, 129, 130, 131, 132, 134, 135, 136, 143] {
        let got = reason(&from_v6(STRANGER_V6).icmp(icmp_type, 0));
        assert_eq!(got, Reason::IcmpEssential, "ICMPv6 type {icmp_type}");
    }
}

#[test]
fn other_icmp_is_blocked_by_default() {
    for icmp_type in [5, 8, 13, 255] {
        assert_eq!(
            reason(&from_v4(STRANGER_V4).icmp(icmp_type, 0)),
            Reason::IcmpBlocked
        );
    }
    // Echo request, router solicitation, redirect.
    for icmp_type in [128, 133, 137, 0] {
        assert_eq!(
            reason(&from_v6(STRANGER_V6).icmp(icmp_type, 0)),
            Reason::IcmpBlocked
        );
    }
}

#[test]
fn icmp_all_passes_echo_requests_in_both_families() {
    let config = Config {
        icmp: ICMP_ALL,
        ..enforce()
    };
    let v4 = from_v4(STRANGER_V4).icmp(8, 0).payload(56).build();
    let v6 = from_v6(STRANGER_V6).icmp(128, 0).payload(56).build();
    assert_eq!(
        judge_bytes(&v4, &sample(), &config).reason,
        Reason::IcmpAllowed
    );
    assert_eq!(
        judge_bytes(&v6, &sample(), &config).reason,
        Reason::IcmpAllowed
    );
    assert_eq!(
        judge_bytes(&v6[..v6.len() - 1], &sample(), &config).reason,
        Reason::TruncatedIpv6
    );
}

#[test]
fn monitor_mode_passes_drops_and_keeps_their_reason() {
    let monitor = Config {
        mode: MODE_MONITOR,
        ..enforce()
    };
    let closed = from_v4(STRANGER_V4).tcp(1, 80, TCP_SYN).build();
    let mangled = from_v4(STRANGER_V4).tcp(1, 80, TCP_SYN).ihl(3).build();
    for bytes in [closed, mangled] {
        let in_monitor = judge_bytes(&bytes, &sample(), &monitor);
        let in_enforce = judge_bytes(&bytes, &sample(), &enforce());
        assert_eq!(in_monitor, in_enforce);
        assert!(in_monitor.passes(&monitor));
        assert!(!in_enforce.passes(&enforce()));
    }
}

#[test]
fn allowed_packets_pass_in_both_modes() {
    let monitor = Config {
        mode: MODE_MONITOR,
        ..enforce()
    };
    let got = decision(&from_peer_v4().tcp(1, 22, TCP_SYN));
    assert!(got.passes(&enforce()) && got.passes(&monitor));
}

#[test]
fn established_connection_to_cut_port_ends_with_its_grant() {
    let ack = |source: [u8; 4]| {
        Frame::ipv4(source, HOST_V4)
            .tcp(40000, 5432, TCP_ACK)
            .build()
    };
    let maps = sample();
    assert_eq!(
        judge_bytes(&ack([10, 0, 0, 5]), &maps, &enforce()).reason,
        Reason::TcpNotNew
    );
    assert_eq!(
        judge_bytes(&ack([192, 0, 2, 7]), &maps, &enforce()).reason,
        Reason::GrantEnded
    );
    assert_eq!(
        judge_bytes(&ack([10, 0, 0, 99]), &maps, &enforce()).reason,
        Reason::GrantEnded
    );
}

#[test]
fn established_connections_are_kept_without_a_cut_gate() {
    let ack = Frame::ipv4([10, 0, 0, 99], HOST_V4)
        .tcp(40000, 5432, TCP_ACK)
        .build();
    let keep = Config::default();
    assert_eq!(
        judge_bytes(&ack, &sample(), &keep).reason,
        Reason::TcpNotNew
    );
}
