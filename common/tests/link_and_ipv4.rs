//! Ethernet, VLAN tags and the IPv4 header: tags walked or refused, non-IP passed, options
//! skipped, header and total lengths checked, and fragments judged as DESIGN.md says.

mod support;

use portguard_common::{
    Reason,
    craft::{Frame, HOST_V4},
    packet::{TCP_ACK, TCP_SYN},
};
use support::{PEER_V4, STRANGER_V4, enforce, judge_bytes, reason, sample};

fn syn_to(port: u16) -> Frame {
    Frame::ipv4(STRANGER_V4, HOST_V4).tcp(40000, port, TCP_SYN)
}

#[test]
fn untagged_syn_to_declared_port_passes() {
    assert_eq!(reason(&syn_to(443)), Reason::Endpoint);
}

#[test]
fn vlan_tagged_syn_to_declared_port_passes() {
    assert_eq!(reason(&syn_to(443).vlan(100)), Reason::Endpoint);
}

#[test]
fn double_tagged_syn_to_declared_port_passes() {
    assert_eq!(reason(&syn_to(443).vlan(100).vlan(200)), Reason::Endpoint);
    assert_eq!(reason(&syn_to(443).qinq(100).vlan(200)), Reason::Endpoint);
}

#[test]
fn vlan_tagged_syn_to_closed_port_is_dropped() {
    assert_eq!(reason(&syn_to(80).vlan(100)), Reason::PortClosed);
    assert_eq!(reason(&syn_to(80).qinq(1).vlan(2)), Reason::PortClosed);
}

#[test]
fn three_vlan_tags_are_dropped() {
    assert_eq!(
        reason(&syn_to(443).vlan(1).vlan(2).vlan(3)),
        Reason::TooManyVlanTags
    );
    assert_eq!(
        reason(&Frame::non_ip(0x0806).qinq(1).vlan(2).vlan(3)),
        Reason::TooManyVlanTags
    );
}

#[test]
fn arp_and_lldp_pass_as_non_ip() {
    assert_eq!(reason(&Frame::non_ip(0x0806).payload(28)), Reason::NonIp);
    assert_eq!(reason(&Frame::non_ip(0x88cc).payload(40)), Reason::NonIp);
    assert_eq!(
        reason(&Frame::non_ip(0x0806).vlan(9).payload(28)),
        Reason::NonIp
    );
}

#[test]
fn frame_shorter_than_an_ethernet_header_is_truncated() {
    assert_eq!(
        judge_bytes(&[0; 13], &sample(), &enforce()).reason,
        Reason::TruncatedEthernet
    );
}

#[test]
fn ethernet_padding_after_the_total_length_is_ignored() {
    let mut bytes = syn_to(443).build();
    bytes.extend([0; 18]);
    assert_eq!(
        judge_bytes(&bytes, &sample(), &enforce()).reason,
        Reason::Endpoint
    );
}

#[test]
fn ipv4_options_are_skipped_to_reach_tcp() {
    for len in [1, 4, 8, 20, 39, 40] {
        let options: Vec<u8> = (0..len).map(|i| if i + 1 == len { 0 } else { 1 }).collect();
        assert_eq!(
            reason(&syn_to(443).ipv4_options(&options)),
            Reason::Endpoint,
            "{len}"
        );
        assert_eq!(
            reason(&syn_to(80).ipv4_options(&options)),
            Reason::PortClosed,
            "{len}"
        );
    }
}

#[test]
fn ihl_below_five_is_a_bad_header() {
    for ihl in 0..5 {
        assert_eq!(
            reason(&syn_to(443).ihl(ihl)),
            Reason::BadIpv4Header,
            "ihl {ihl}"
        );
    }
}

#[test]
fn ihl_past_the_total_length_is_a_bad_header() {
    // 60 bytes of header declared, 40 bytes of packet.
    assert_eq!(reason(&syn_to(443).ihl(15)), Reason::BadIpv4Header);
}

#[test]
fn total_length_below_the_header_is_a_bad_header() {
    assert_eq!(reason(&syn_to(443).total_length(0)), Reason::BadIpv4Header);
    assert_eq!(reason(&syn_to(443).total_length(19)), Reason::BadIpv4Header);
    assert_eq!(
        reason(&syn_to(443).ipv4_options(&[1; 8]).total_length(27)),
        Reason::BadIpv4Header
    );
}

#[test]
fn total_length_past_the_packet_is_truncated() {
    assert_eq!(reason(&syn_to(443).total_length(41)), Reason::TruncatedIpv4);
    assert_eq!(
        reason(&syn_to(443).total_length(u16::MAX)),
        Reason::TruncatedIpv4
    );
}

#[test]
fn ipv4_version_other_than_four_is_a_bad_header() {
    for version in [0, 5, 6, 15] {
        assert_eq!(
            reason(&syn_to(443).version(version)),
            Reason::BadIpv4Header,
            "{version}"
        );
    }
}

#[test]
fn other_ip_protocols_are_dropped() {
    for protocol in [2, 41, 47, 50, 58, 132, 255] {
        let frame = Frame::ipv4(STRANGER_V4, HOST_V4).protocol(protocol, 24);
        assert_eq!(
            reason(&frame),
            Reason::ProtocolNotAllowed,
            "protocol {protocol}"
        );
    }
}

#[test]
fn ipv4_first_fragment_is_judged_like_a_whole_packet() {
    assert_eq!(reason(&syn_to(443).fragment(0, true)), Reason::Endpoint);
    assert_eq!(reason(&syn_to(80).fragment(0, true)), Reason::PortClosed);
    assert_eq!(
        reason(&syn_to(80).fragment(0, true).payload(100)),
        Reason::PortClosed
    );
}

#[test]
fn ipv4_fragment_at_offset_one_is_dropped() {
    for more in [false, true] {
        assert_eq!(
            reason(&syn_to(443).fragment(1, more)),
            Reason::TinyFragmentOffset
        );
        let tail = Frame::ipv4(PEER_V4, HOST_V4)
            .fragment(1, more)
            .protocol(6, 12);
        assert_eq!(reason(&tail), Reason::TinyFragmentOffset);
    }
}

#[test]
fn ipv4_later_fragments_pass() {
    for offset in [2, 3, 185, 0x1fff] {
        for more in [false, true] {
            let tail = Frame::ipv4(STRANGER_V4, HOST_V4)
                .fragment(offset, more)
                .protocol(6, 64);
            assert_eq!(reason(&tail), Reason::LaterFragment, "offset {offset}");
            let gre = Frame::ipv4(STRANGER_V4, HOST_V4)
                .fragment(offset, more)
                .protocol(47, 64);
            assert_eq!(reason(&gre), Reason::LaterFragment, "offset {offset}");
        }
    }
}

#[test]
fn ipv4_first_fragment_too_short_for_tcp_header_is_dropped() {
    // Flags at byte 13 are there, but not the whole header: a later fragment could rewrite.
    for len in [0, 8, 14, 19] {
        let frame = syn_to(443).fragment(0, true).clip_transport(len);
        assert_eq!(reason(&frame), Reason::ShortFirstFragment, "{len} bytes");
    }
}

#[test]
fn ipv4_first_fragment_too_short_for_udp_header_is_dropped() {
    let frame = Frame::ipv4(STRANGER_V4, HOST_V4)
        .udp(1, 53)
        .fragment(0, true)
        .clip_transport(7);
    assert_eq!(reason(&frame), Reason::ShortFirstFragment);
}

#[test]
fn ipv4_first_fragment_with_ack_only_passes() {
    let frame = Frame::ipv4(STRANGER_V4, HOST_V4)
        .tcp(1, 80, TCP_ACK)
        .fragment(0, true);
    assert_eq!(reason(&frame), Reason::TcpNotNew);
}
