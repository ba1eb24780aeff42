//! Proptest strategies for packets that stress the parser: every kind of frame [`Frame`]
//! builds, aimed at the sample policy of [`super::ModelMaps::sample`] so that many reach the
//! verdict, and the same frames damaged (lengths that lie, cuts, flipped header bytes).

extern crate std;

use std::{vec, vec::Vec};

use proptest::{
    collection::vec,
    prelude::*,
    sample::{Index, select},
};

use super::{
    frame::{Ext, Frame, auth, dest_opts, fragment, hop_by_hop, routing},
    model::{HOST_V4, HOST_V6, SAMPLE_PORTS, SAMPLE_SOURCES_V4, SAMPLE_SOURCES_V6},
};
use crate::{
    maps::{Addr, ipv4_mapped},
    packet::{TCP_ACK, TCP_FIN, TCP_RST, TCP_SYN},
};

/// The shortest packet [`arb_packet`] makes: an Ethernet header, the least that
/// `BPF_PROG_TEST_RUN` takes for XDP.
pub const ARB_MIN_LEN: usize = 14;
/// The longest packet [`arb_packet`] makes: it fits the linear buffer of an XDP test run
/// (a 4 KiB page less headroom and shared info), so the program sees every byte.
pub const ARB_MAX_LEN: usize = 3000;

/// Well-formed frames of every kind: non-IP, 0 to 3 VLAN tags, IPv4 with 0 to 40 bytes of
/// options and fragments at offsets 0, 1 and beyond, IPv6 with extension chains (shallow,
/// deep, misordered, long), TCP, UDP, ICMP and unknown protocols. About two in three are
/// TCP or UDP, mostly to [`SAMPLE_PORTS`] from [`SAMPLE_SOURCES_V4`] and
/// [`SAMPLE_SOURCES_V6`] or their prefixes, and one in three hits an entry of
/// [`super::ModelMaps::sample`] exactly. [`Frame::expected`] says what each must parse to.
pub fn arb_frame() -> impl Strategy<Value = Frame> {
    let target = prop_oneof![
        2 => (arb_source(), arb_transport()),
        1 => select(sample_targets()),
    ];
    (
        target,
        arb_ipv4_options(),
        arb_ipv4_fragment(),
        arb_ext_chain(),
        arb_tags(),
        arb_payload_len(),
    )
        .prop_map(
            |((source, transport), options, fragment, exts, tags, payload)| {
                let frame = match source {
                    Source::V4(source) => {
                        let frame = Frame::ipv4(source, HOST_V4).ipv4_options(&options);
                        match fragment {
                            Some((offset, more)) => frame.fragment(offset, more),
                            None => frame,
                        }
                    }
                    Source::V6(source) => exts
                        .into_iter()
                        .fold(Frame::ipv6(source, HOST_V6), Frame::ext),
                    Source::NonIp(ethertype) => Frame::non_ip(ethertype),
                };
                let frame = tags.into_iter().fold(frame, |frame, (outer, id)| {
                    if outer {
                        frame.qinq(id)
                    } else {
                        frame.vlan(id)
                    }
                });
                match source {
                    Source::NonIp(_) => frame.payload(payload),
                    _ => transport.apply(frame).payload(payload),
                }
            },
        )
}

/// Packets of 14 to 3,000 bytes to compare the kernel's verdict with [`crate::verdict::judge`]
/// on: half are [`arb_frame`] as built, the rest damaged: a length field or version that
/// lies, the transport clipped under the IP header's lengths, the frame cut short, or a few
/// header bytes flipped.
pub fn arb_packet() -> impl Strategy<Value = Vec<u8>> {
    (arb_frame(), arb_damage()).prop_map(|(frame, damage)| damage.apply(frame))
}

/// How [`arb_packet`] damages a frame.
#[derive(Clone, Debug)]
enum Damage {
    None,
    TotalLength(u16),
    PayloadLength(u16),
    Version(u8),
    Ihl(u8),
    ClipTransport(Index),
    Truncate(Index),
    /// Byte positions within the headers, and what to XOR them with.
    Flip(Vec<(Index, u8)>),
}

impl Damage {
    fn apply(self, frame: Frame) -> Vec<u8> {
        let headers_end = frame.transport_offset() + 20;
        let transport_len = frame.build().len().saturating_sub(frame.transport_offset());
        let frame = match self {
            Damage::TotalLength(value) => frame.total_length(value),
            Damage::PayloadLength(value) => frame.payload_length(value),
            Damage::Version(value) => frame.version(value),
            Damage::Ihl(value) => frame.ihl(value),
            Damage::ClipTransport(at) => frame.clip_transport(at.index(transport_len + 1)),
            _ => frame,
        };

        let mut bytes = frame.build();
        match self {
            Damage::Truncate(at) => {
                bytes.truncate(ARB_MIN_LEN + at.index(bytes.len() - ARB_MIN_LEN + 1))
            }
            Damage::Flip(flips) => {
                let span = headers_end.min(bytes.len());
                for (at, mask) in flips {
                    bytes[at.index(span)] ^= mask;
                }
            }
            _ => {}
        }
        bytes.truncate(ARB_MAX_LEN);
        bytes
    }
}

fn arb_damage() -> impl Strategy<Value = Damage> {
    prop_oneof![
        12 => Just(Damage::None),
        1 => prop_oneof![any::<u16>(), 0u16..80].prop_map(Damage::TotalLength),
        1 => prop_oneof![any::<u16>(), 0u16..80].prop_map(Damage::PayloadLength),
        1 => (0u8..16).prop_map(Damage::Version),
        1 => (0u8..16).prop_map(Damage::Ihl),
        2 => any::<Index>().prop_map(Damage::ClipTransport),
        3 => any::<Index>().prop_map(Damage::Truncate),
        3 => vec((any::<Index>(), 1u8..=255), 1..4).prop_map(Damage::Flip),
    ]
}

/// Where a frame comes from.
#[derive(Clone, Copy, Debug)]
enum Source {
    V4([u8; 4]),
    V6(Addr),
    NonIp(u16),
}

fn arb_source() -> impl Strategy<Value = Source> {
    prop_oneof![
        10 => arb_source_v4().prop_map(Source::V4),
        9 => arb_source_v6().prop_map(Source::V6),
        1 => select(vec![0x0806u16, 0x88cc, 0x8035, 0x88e5, 0x0000, 0xffff]).prop_map(Source::NonIp),
    ]
}

/// Packets that hit each entry of the sample policy, and its near misses.
fn sample_targets() -> Vec<(Source, Transport)> {
    let [peer6, granted6, dns6, dns_net6, stranger6] = SAMPLE_SOURCES_V6.map(Source::V6);
    let v4 = Source::V4;
    let syn = |port| Transport::Tcp(40000, port, TCP_SYN);
    vec![
        (v4([10, 0, 0, 5]), syn(22)),
        (v4([192, 0, 2, 7]), syn(22)),
        (v4([192, 0, 2, 200]), syn(22)),
        (v4([172, 16, 0, 1]), syn(22)),
        (peer6, syn(22)),
        (stranger6, syn(22)),
        (v4([203, 0, 113, 9]), syn(443)),
        (stranger6, syn(443)),
        (v4([10, 0, 0, 5]), syn(5432)),
        (peer6, syn(5432)),
        (v4([192, 0, 2, 7]), syn(5432)),
        (v4([10, 0, 0, 6]), syn(5432)),
        (v4([192, 0, 2, 10]), syn(8080)),
        (granted6, syn(8080)),
        (v4([10, 0, 0, 5]), Transport::Udp(5000, 8080)),
        (v4([192, 0, 2, 53]), Transport::Udp(53, 40000)),
        (dns6, Transport::Udp(53, 40001)),
        (v4([10, 0, 0, 53]), Transport::Udp(123, 40002)),
        (v4([192, 0, 2, 53]), Transport::Udp(53, 40001)),
        (dns_net6, Transport::Udp(5353, 53)),
        (peer6, Transport::Udp(5353, 53)),
        (v4([203, 0, 113, 9]), Transport::Udp(5353, 53)),
        (v4([203, 0, 113, 9]), Transport::Udp(5353, 443)),
        (stranger6, Transport::Udp(5353, 443)),
    ]
}

/// A transport header to put on a frame.
#[derive(Clone, Copy, Debug)]
enum Transport {
    Tcp(u16, u16, u8),
    Udp(u16, u16),
    Icmp(u8, u8),
    Other(u8, usize),
}

impl Transport {
    fn apply(self, frame: Frame) -> Frame {
        match self {
            Transport::Tcp(source, destination, flags) => frame.tcp(source, destination, flags),
            Transport::Udp(source, destination) => frame.udp(source, destination),
            Transport::Icmp(icmp_type, code) => frame.icmp(icmp_type, code),
            Transport::Other(protocol, len) => frame.protocol(protocol, len),
        }
    }
}

fn arb_transport() -> impl Strategy<Value = Transport> {
    let flags = prop_oneof![
        6 => Just(TCP_SYN),
        1 => Just(TCP_SYN | TCP_ACK),
        1 => Just(TCP_ACK),
        1 => Just(TCP_RST),
        1 => Just(TCP_SYN | TCP_FIN),
        1 => Just(0),
        1 => any::<u8>(),
    ];
    let udp_source = prop_oneof![2 => select(vec![53u16, 123, 443]), 1 => any::<u16>()];
    // Types that are essential on either family, and any other.
    let icmp_type = prop_oneof![
        select(vec![0u8, 3, 8, 11, 1, 2, 128, 129, 133, 134, 135, 136, 137]),
        any::<u8>()
    ];
    let other = select(vec![
        0u8, 1, 2, 6, 17, 41, 47, 50, 58, 59, 60, 132, 253, 255,
    ]);
    prop_oneof![
        9 => (any::<u16>(), arb_port(), flags).prop_map(|(s, d, f)| Transport::Tcp(s, d, f)),
        6 => (udp_source, arb_port()).prop_map(|(s, d)| Transport::Udp(s, d)),
        3 => (icmp_type, any::<u8>()).prop_map(|(t, c)| Transport::Icmp(t, c)),
        2 => (other, 0usize..40).prop_map(|(p, len)| Transport::Other(p, len)),
    ]
}

fn arb_port() -> impl Strategy<Value = u16> {
    prop_oneof![4 => select(SAMPLE_PORTS.to_vec()), 1 => any::<u16>()]
}

fn arb_payload_len() -> impl Strategy<Value = usize> {
    prop_oneof![3 => Just(0usize), 1 => 1usize..64, 1 => 64usize..600]
}

fn arb_source_v4() -> impl Strategy<Value = [u8; 4]> {
    prop_oneof![
        3 => select(SAMPLE_SOURCES_V4.to_vec()),
        2 => any::<[u8; 3]>().prop_map(|[a, b, c]| [10, a, b, c]),
        2 => any::<u8>().prop_map(|d| [192, 0, 2, d]),
        1 => any::<[u8; 4]>(),
    ]
}

fn arb_source_v6() -> impl Strategy<Value = Addr> {
    prop_oneof![
        6 => select(SAMPLE_SOURCES_V6.to_vec()),
        4 => any::<[u8; 12]>().prop_map(|rest| {
            let mut addr = [0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];
            addr[4..].copy_from_slice(&rest);
            addr
        }),
        2 => any::<Addr>(),
        1 => select(SAMPLE_SOURCES_V4.to_vec()).prop_map(ipv4_mapped),
    ]
}

fn arb_tags() -> impl Strategy<Value = Vec<(bool, u16)>> {
    let tag = (prop::bool::weighted(0.3), 0u16..4096);
    prop_oneof![14 => Just(Vec::new()), 3 => vec(tag.clone(), 1), 2 => vec(tag.clone(), 2), 1 => vec(tag, 3)]
}

fn arb_ipv4_options() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        6 => Just(Vec::new()),
        1 => Just(vec![1, 1, 1, 0]),
        1 => vec(any::<u8>(), 1..=40),
        1 => Just(vec![1; 40]),
    ]
}

/// No fragment, or (offset in 8-byte units, more fragments).
fn arb_ipv4_fragment() -> impl Strategy<Value = Option<(u16, bool)>> {
    prop_oneof![
        12 => Just(None),
        2 => Just(Some((0, true))),
        1 => any::<bool>().prop_map(|more| Some((1, more))),
        1 => (2u16..8192, any::<bool>()).prop_map(Some),
    ]
}

fn arb_ext() -> impl Strategy<Value = Ext> {
    let len =
        prop_oneof![4 => Just(8usize), 2 => (1usize..8).prop_map(|n| n * 8), 1 => 64usize..=1100];
    prop_oneof![
        2 => len.clone().prop_map(hop_by_hop),
        2 => len.clone().prop_map(dest_opts),
        2 => len.clone().prop_map(routing),
        1 => len.prop_map(auth),
        1 => Just(fragment(0, true)),
        1 => Just(fragment(1, true)),
        1 => (2u16..8192, any::<bool>()).prop_map(|(offset, more)| fragment(offset, more)),
    ]
}

/// Mostly no extension headers; else a few, often led by hop-by-hop, or a chain around the
/// walk's depth of 8.
fn arb_ext_chain() -> impl Strategy<Value = Vec<Ext>> {
    let chain = prop_oneof![
        3 => vec(arb_ext(), 1..=3),
        1 => vec(arb_ext(), 7..=10),
    ];
    let chain = (any::<bool>(), chain).prop_map(|(lead, mut exts)| {
        if lead {
            exts.insert(0, hop_by_hop(8));
        }
        exts
    });
    prop_oneof![3 => Just(Vec::new()), 2 => chain]
}
