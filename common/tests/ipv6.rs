//! The IPv6 header and its extension chain: hop-by-hop, routing, destination options,
//! authentication and fragment headers walked up to the fixed depth and length; misplaced,
//! unknown or too deep: dropped.

mod support;

use portguard_common::{
    Reason,
    craft::{Frame, HOST_V6, auth, dest_opts, fragment, hop_by_hop, routing},
    maps::{ipv4_mapped, is_ipv4_mapped},
    packet::{MAX_IPV6_EXTENSION_BYTES, MAX_IPV6_EXTENSIONS, TCP_SYN},
};
use support::{PEER_V4, STRANGER_V6, reason};

fn stranger() -> Frame {
    Frame::ipv6(STRANGER_V6, HOST_V6)
}

fn chain(exts: impl IntoIterator<Item = portguard_common::craft::Ext>) -> Frame {
    exts.into_iter().fold(stranger(), Frame::ext)
}

#[test]
fn ipv6_syn_to_declared_port_passes() {
    assert_eq!(reason(&stranger().tcp(1, 443, TCP_SYN)), Reason::Endpoint);
    assert_eq!(
        reason(&stranger().vlan(6).tcp(1, 443, TCP_SYN)),
        Reason::Endpoint
    );
}

#[test]
fn ipv6_syn_to_closed_port_is_dropped() {
    assert_eq!(reason(&stranger().tcp(1, 80, TCP_SYN)), Reason::PortClosed);
}

#[test]
fn hop_by_hop_first_is_walked() {
    assert_eq!(
        reason(&chain([hop_by_hop(8)]).tcp(1, 443, TCP_SYN)),
        Reason::Endpoint
    );
    assert_eq!(
        reason(&chain([hop_by_hop(64)]).tcp(1, 80, TCP_SYN)),
        Reason::PortClosed
    );
}

#[test]
fn hop_by_hop_after_another_header_is_dropped() {
    let frame = chain([dest_opts(8), hop_by_hop(8)]).tcp(1, 443, TCP_SYN);
    assert_eq!(reason(&frame), Reason::BadIpv6Extension);
    let frame = chain([hop_by_hop(8), hop_by_hop(8)]).tcp(1, 443, TCP_SYN);
    assert_eq!(reason(&frame), Reason::BadIpv6Extension);
}

#[test]
fn routing_destination_options_and_auth_are_walked() {
    let exts = [
        hop_by_hop(8),
        dest_opts(16),
        routing(24),
        auth(12),
        auth(24),
        dest_opts(8),
    ];
    assert_eq!(
        reason(&chain(exts.clone()).tcp(1, 443, TCP_SYN)),
        Reason::Endpoint
    );
    assert_eq!(reason(&chain(exts).tcp(1, 80, TCP_SYN)), Reason::PortClosed);
}

#[test]
fn chain_of_eight_headers_is_walked() {
    let exts = std::iter::once(hop_by_hop(8)).chain((1..MAX_IPV6_EXTENSIONS).map(|_| dest_opts(8)));
    assert_eq!(reason(&chain(exts).tcp(1, 443, TCP_SYN)), Reason::Endpoint);
}

#[test]
fn chain_of_nine_headers_is_too_long() {
    let exts = std::iter::once(hop_by_hop(8)).chain((0..MAX_IPV6_EXTENSIONS).map(|_| dest_opts(8)));
    assert_eq!(
        reason(&chain(exts).tcp(1, 443, TCP_SYN)),
        Reason::Ipv6ExtensionChainTooLong
    );
}

#[test]
fn chain_of_exactly_the_maximum_bytes_is_walked() {
    let frame = chain([dest_opts(MAX_IPV6_EXTENSION_BYTES)]).tcp(1, 443, TCP_SYN);
    assert_eq!(reason(&frame), Reason::Endpoint);
}

#[test]
fn chain_longer_than_the_maximum_bytes_is_too_long() {
    let frame = chain([dest_opts(MAX_IPV6_EXTENSION_BYTES + 8)]).tcp(1, 443, TCP_SYN);
    assert_eq!(reason(&frame), Reason::Ipv6ExtensionChainTooLong);
    let frame = chain([hop_by_hop(512), routing(256), dest_opts(264)]).tcp(1, 443, TCP_SYN);
    assert_eq!(reason(&frame), Reason::Ipv6ExtensionChainTooLong);
}

#[test]
fn unknown_next_header_is_dropped() {
    // ESP, no next header, an experimental code, SCTP, IPv4 ICMP.
    for protocol in [50, 59, 253, 132, 1] {
        assert_eq!(
            reason(&stranger().protocol(protocol, 16)),
            Reason::ProtocolNotAllowed
        );
        let behind = chain([hop_by_hop(8), routing(8)]).protocol(protocol, 16);
        assert_eq!(reason(&behind), Reason::ProtocolNotAllowed, "{protocol}");
    }
}

#[test]
fn first_fragment_header_is_judged_like_a_whole_packet() {
    assert_eq!(
        reason(&stranger().fragment(0, true).tcp(1, 443, TCP_SYN)),
        Reason::Endpoint
    );
    assert_eq!(
        reason(&stranger().fragment(0, true).tcp(1, 80, TCP_SYN)),
        Reason::PortClosed
    );
    let behind = chain([hop_by_hop(8), fragment(0, true), dest_opts(8)]).tcp(1, 80, TCP_SYN);
    assert_eq!(reason(&behind), Reason::PortClosed);
}

#[test]
fn later_fragment_headers_pass() {
    // Linux refuses overlapping IPv6 fragments (RFC 5722), so offset 1 cannot rewrite a
    // first fragment's flags: unlike IPv4, it passes like any later fragment.
    for offset in [1, 2, 100, 0x1fff] {
        let frame = chain([hop_by_hop(8), fragment(offset, true)]).protocol(6, 40);
        assert_eq!(reason(&frame), Reason::LaterFragment, "offset {offset}");
    }
}

#[test]
fn ipv6_first_fragment_too_short_for_tcp_or_udp_header_is_dropped() {
    let tcp = stranger()
        .fragment(0, true)
        .tcp(1, 443, TCP_SYN)
        .clip_transport(19);
    assert_eq!(reason(&tcp), Reason::ShortFirstFragment);
    let udp = stranger().fragment(0, true).udp(1, 443).clip_transport(4);
    assert_eq!(reason(&udp), Reason::ShortFirstFragment);
}

#[test]
fn repeated_fragment_header_keeps_the_first_fragment_reason() {
    let frame = chain([fragment(0, true), fragment(0, false)])
        .tcp(1, 443, TCP_SYN)
        .clip_transport(12);
    assert_eq!(reason(&frame), Reason::ShortFirstFragment);
}

#[test]
fn truncated_extension_header_is_dropped() {
    // The payload ends inside the routing header's first two bytes.
    let frame = chain([hop_by_hop(8), routing(8)])
        .tcp(1, 443, TCP_SYN)
        .payload_length(9);
    assert_eq!(reason(&frame), Reason::TruncatedIpv6Extension);
}

#[test]
fn payload_length_past_the_packet_is_truncated() {
    let frame = stranger().tcp(1, 443, TCP_SYN);
    assert_eq!(
        reason(&frame.clone().payload_length(21)),
        Reason::TruncatedIpv6
    );
    assert_eq!(
        reason(&frame.payload_length(u16::MAX)),
        Reason::TruncatedIpv6
    );
}

#[test]
fn ipv6_version_other_than_six_is_a_bad_header() {
    for version in [0, 4, 7, 15] {
        assert_eq!(
            reason(&stranger().tcp(1, 443, TCP_SYN).version(version)),
            Reason::BadIpv6Header
        );
    }
}

#[test]
fn ipv4_mapped_source_is_dropped() {
    // Judged as 10.0.0.5, it would find that address's grant on TCP 5432.
    let mapped = ipv4_mapped(PEER_V4);
    assert!(is_ipv4_mapped(&mapped));
    let frame = Frame::ipv6(mapped, HOST_V6).tcp(1, 5432, TCP_SYN);
    assert_eq!(reason(&frame), Reason::BadIpv6Header);
}
