//! The test kit itself: frames carry the lengths and checksums they claim, damage does what
//! it says, and the model trie matches prefixes the way a BPF LPM trie does.

use portguard_common::{
    craft::{Frame, HOST_V4, HOST_V6, ModelMaps, dest_opts, hop_by_hop, prefix_matches, v6},
    maps::{PROTO_TCP, PROTO_UDP, PrefixKeyData, ipv4_mapped},
    packet::TCP_SYN,
    verdict::GuardMaps,
};

/// The one's complement sum of `bytes`, folded: 0xffff over data that holds its checksum.
fn ones_sum(bytes: &[u8]) -> u16 {
    let mut sum: u32 = bytes
        .chunks(2)
        .map(|p| u32::from(p[0]) << 8 | u32::from(*p.get(1).unwrap_or(&0)))
        .sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    sum as u16
}

#[test]
fn ipv4_frame_carries_its_lengths_and_checksums() {
    let frame = Frame::ipv4([10, 0, 0, 5], HOST_V4)
        .vlan(5)
        .ipv4_options(&[1; 6])
        .tcp(1, 22, TCP_SYN)
        .payload(3);
    let bytes = frame.build();
    let ip = &bytes[18..];
    assert_eq!(u16::from_be_bytes([bytes[12], bytes[13]]), 0x8100);
    assert_eq!(u16::from_be_bytes([bytes[16], bytes[17]]), 0x0800);
    assert_eq!(ip[0], 0x47, "version 4, 28 bytes of header");
    assert_eq!(u16::from_be_bytes([ip[2], ip[3]]) as usize, 28 + 20 + 3);
    assert_eq!(ones_sum(&ip[..28]), 0xffff);
    assert_eq!(frame.transport_offset(), 18 + 28);

    let tcp = &ip[28..];
    let pseudo = [&ip[12..20], &[0, 6], &(tcp.len() as u16).to_be_bytes()[..]].concat();
    assert_eq!(ones_sum(&[pseudo.as_slice(), tcp].concat()), 0xffff);
}

#[test]
fn ipv6_frame_chains_its_extension_headers() {
    let frame = Frame::ipv6(v6([0x2001, 0xdb8, 0, 0, 0, 0, 0, 5]), HOST_V6)
        .ext(hop_by_hop(8))
        .ext(dest_opts(16))
        .fragment(0, true)
        .udp(53, 40000)
        .payload(5);
    let bytes = frame.build();
    let ip = &bytes[14..];
    assert_eq!(
        u16::from_be_bytes([ip[4], ip[5]]) as usize,
        8 + 16 + 8 + 8 + 5
    );
    assert_eq!((ip[6], ip[40], ip[48], ip[64]), (0, 60, 44, 17));
    assert_eq!(
        (ip[41], ip[49]),
        (0, 1),
        "length fields in 8-byte units, less one"
    );
    let udp = &ip[72..];
    assert_eq!(u16::from_be_bytes([udp[4], udp[5]]), 13);
    let pseudo = [&ip[8..40], &[0, 17], &13u16.to_be_bytes()[..]].concat();
    assert_eq!(ones_sum(&[pseudo.as_slice(), udp].concat()), 0xffff);
}

#[test]
fn damage_does_what_it_says() {
    let frame = Frame::ipv4([10, 0, 0, 5], HOST_V4).tcp(1, 22, TCP_SYN);
    assert_eq!(frame.clone().truncate(20).build().len(), 20);
    let clipped = frame.clone().clip_transport(12).build();
    assert_eq!(
        (
            clipped.len(),
            u16::from_be_bytes([clipped[16], clipped[17]])
        ),
        (14 + 32, 32)
    );
    let lying = frame.clone().total_length(9).version(6).ihl(2).build();
    assert_eq!(
        (lying[14], u16::from_be_bytes([lying[16], lying[17]])),
        (0x62, 9)
    );
    assert_eq!(frame.expected().map(|r| r.is_ok()), Some(true));
    assert_eq!(frame.truncate(30).expected(), None);
}

fn key(protocol: u8, port: u16, source: [u8; 4]) -> PrefixKeyData {
    PrefixKeyData::new(protocol, port, ipv4_mapped(source))
}

#[test]
fn prefixes_match_bits_in_memory_order() {
    let net = key(PROTO_TCP, 22, [192, 0, 2, 128]);
    assert!(prefix_matches(
        32 + 96 + 25,
        &net,
        &key(PROTO_TCP, 22, [192, 0, 2, 200])
    ));
    assert!(!prefix_matches(
        32 + 96 + 25,
        &net,
        &key(PROTO_TCP, 22, [192, 0, 2, 127])
    ));
    assert!(prefix_matches(
        32 + 96 + 24,
        &net,
        &key(PROTO_TCP, 22, [192, 0, 2, 1])
    ));
    // 32 bits cover protocol and port: any source; 0 bits match every key.
    assert!(prefix_matches(32, &net, &key(PROTO_TCP, 22, [1, 2, 3, 4])));
    assert!(!prefix_matches(
        32,
        &net,
        &key(PROTO_TCP, 23, [192, 0, 2, 128])
    ));
    assert!(prefix_matches(0, &net, &key(PROTO_UDP, 9, [1, 2, 3, 4])));
    // The port is big endian: 22 and 23 differ in bit 31, 22 and 22 + 256 in bit 23.
    assert!(prefix_matches(31, &net, &key(PROTO_TCP, 23, [1, 2, 3, 4])));
    assert!(prefix_matches(
        23,
        &net,
        &key(PROTO_TCP, 22 + 256, [1, 2, 3, 4])
    ));
    assert!(!prefix_matches(
        24,
        &net,
        &key(PROTO_TCP, 22 + 256, [1, 2, 3, 4])
    ));
    assert!(prefix_matches(160, &net, &net));
}

#[test]
fn model_trie_answers_the_longest_prefix_and_replaces_equal_ones() {
    let maps = ModelMaps::default()
        .with_prefix(PROTO_TCP, 22, ipv4_mapped([10, 0, 0, 0]), 96 + 8, 1)
        .with_prefix(PROTO_TCP, 22, ipv4_mapped([10, 1, 0, 0]), 96 + 16, 2)
        .with_prefix(PROTO_TCP, 22, ipv4_mapped([10, 1, 9, 9]), 96 + 16, 3);
    assert_eq!(maps.prefixes.len(), 2);
    assert_eq!(
        maps.endpoint_prefix(&key(PROTO_TCP, 22, [10, 1, 2, 3])),
        Some(3)
    );
    assert_eq!(
        maps.endpoint_prefix(&key(PROTO_TCP, 22, [10, 2, 2, 3])),
        Some(1)
    );
    assert_eq!(
        maps.endpoint_prefix(&key(PROTO_TCP, 22, [11, 1, 2, 3])),
        None
    );
    assert_eq!(
        maps.endpoint_prefix(&key(PROTO_UDP, 22, [10, 1, 2, 3])),
        None
    );
}
