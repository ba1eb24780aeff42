//! Packets the guard would see, judged by the guard's own parser and verdict function
//! (`portguard_common::verdict`) over the maps a policy compiles to: what the kernel would
//! decide, asked without the kernel.
//!
//! `portguard-common`'s test kit has a packet builder and a model of the maps, but its
//! `craft` feature brings proptest along, so the few frames needed here are built by hand.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use portguard_common::{
    maps::{
        Config, EndpointKey, EndpointValue, FlowKey, GrantKey, GrantValue, PROTO_ICMPV6, PROTO_TCP,
        PrefixKeyData,
    },
    packet::{ETHERTYPE_IPV4, ETHERTYPE_IPV6, Headers},
    verdict::{self, Decision, GuardMaps},
};

use crate::compile::{MapEntries, PrefixEntry};

const MAC_ADDRESSES: [u8; 12] = [0x02, 0, 0, 0, 0, 0x01, 0x02, 0, 0, 0, 0, 0x02];
const HOP_LIMIT: u8 = 64;
/// Neighbour discovery messages carry the hop limit 255, which proves them on-link.
const ND_HOP_LIMIT: u8 = 255;

/// The maps the kernel would hold for a policy, right after it is loaded: its endpoints,
/// gates and prefixes, and no grants or UDP flows yet.
pub(super) struct CompiledMaps<'a> {
    entries: &'a MapEntries,
}

impl<'a> CompiledMaps<'a> {
    pub(super) fn new(entries: &'a MapEntries) -> Self {
        Self { entries }
    }
}

impl GuardMaps for CompiledMaps<'_> {
    fn endpoint(&self, key: &EndpointKey) -> Option<EndpointValue> {
        self.entries.endpoints.get(key).copied()
    }

    /// Longest-prefix match, as the kernel's LPM trie answers a full-length key.
    fn endpoint_prefix(&self, key: &PrefixKeyData) -> Option<u32> {
        self.entries
            .prefixes
            .iter()
            .filter(|entry| covers(entry, key))
            .max_by_key(|entry| entry.prefix_len)
            .map(|entry| entry.rule)
    }

    fn grant(&self, _key: &GrantKey) -> Option<GrantValue> {
        None
    }

    fn udp_flow(&self, _key: &FlowKey) -> Option<u64> {
        None
    }

    fn boot_ns(&self) -> u64 {
        0
    }

    fn coarse_ns(&self) -> u64 {
        0
    }
}

/// Whether the first `prefix_len` bits of the entry's key equal the key's, in memory order
/// and most significant bit first, as an LPM trie compares them.
fn covers(entry: &PrefixEntry, key: &PrefixKeyData) -> bool {
    let (prefix, key) = (key_bytes(&entry.data), key_bytes(key));
    let whole = (entry.prefix_len / 8) as usize;
    let rest = entry.prefix_len % 8;
    if whole > prefix.len() || prefix[..whole] != key[..whole] {
        return false;
    }
    rest == 0 || (prefix[whole] ^ key[whole]) & (0xffu8 << (8 - rest)) == 0
}

/// A prefix key's data as the trie sees it in memory.
fn key_bytes(data: &PrefixKeyData) -> [u8; 20] {
    let mut bytes = [0u8; 20];
    bytes[0] = data.protocol;
    bytes[1] = data._pad;
    bytes[2..4].copy_from_slice(&data.port_be);
    bytes[4..].copy_from_slice(&data.addr);
    bytes
}

/// The kernel's verdict on an Ethernet frame.
pub(super) fn judge(frame: &[u8], config: &Config, maps: &CompiledMaps) -> Decision {
    let mut headers = Headers::default();
    verdict::judge(frame, config, maps, &mut headers)
}

/// A TCP segment without options or data, with these flags.
pub(super) fn tcp(source: SocketAddr, destination: SocketAddr, flags: u8) -> Vec<u8> {
    let mut segment = Vec::with_capacity(20);
    segment.extend_from_slice(&source.port().to_be_bytes());
    segment.extend_from_slice(&destination.port().to_be_bytes());
    segment.extend_from_slice(&[0, 0, 0, 1, 0, 0, 0, 0]); // sequence, acknowledgement
    segment.extend_from_slice(&[5 << 4, flags, 0xfa, 0xf0, 0, 0, 0, 0]); // offset 5 words
    ip(
        source.ip(),
        destination.ip(),
        PROTO_TCP,
        HOP_LIMIT,
        &segment,
    )
}

/// An ICMPv6 message of this type, 24 bytes long: room for a neighbour solicitation's or
/// advertisement's target address.
pub(super) fn icmpv6(source: Ipv6Addr, destination: Ipv6Addr, icmp_type: u8) -> Vec<u8> {
    let mut message = vec![0u8; 24];
    message[0] = icmp_type;
    ip(
        IpAddr::V6(source),
        IpAddr::V6(destination),
        PROTO_ICMPV6,
        ND_HOP_LIMIT,
        &message,
    )
}

/// An Ethernet frame carrying `payload` over IPv4 or IPv6, by the source's family.
/// Checksums are left zero: neither the parser nor the verdict reads them.
fn ip(source: IpAddr, destination: IpAddr, protocol: u8, hop_limit: u8, payload: &[u8]) -> Vec<u8> {
    let mut frame = MAC_ADDRESSES.to_vec();
    match source {
        IpAddr::V4(source) => {
            let destination = match destination.to_canonical() {
                IpAddr::V4(destination) => destination,
                IpAddr::V6(_) => Ipv4Addr::UNSPECIFIED,
            };
            let total_length = (20 + payload.len()) as u16;
            frame.extend_from_slice(&ETHERTYPE_IPV4.to_be_bytes());
            frame.extend_from_slice(&[0x45, 0]);
            frame.extend_from_slice(&total_length.to_be_bytes());
            frame.extend_from_slice(&[0, 0, 0x40, 0, hop_limit, protocol, 0, 0]); // don't fragment
            frame.extend_from_slice(&source.octets());
            frame.extend_from_slice(&destination.octets());
        }
        IpAddr::V6(source) => {
            let destination = match destination {
                IpAddr::V4(destination) => destination.to_ipv6_mapped(),
                IpAddr::V6(destination) => destination,
            };
            let payload_length = payload.len() as u16;
            frame.extend_from_slice(&ETHERTYPE_IPV6.to_be_bytes());
            frame.extend_from_slice(&[0x60, 0, 0, 0]);
            frame.extend_from_slice(&payload_length.to_be_bytes());
            frame.extend_from_slice(&[protocol, hop_limit]);
            frame.extend_from_slice(&source.octets());
            frame.extend_from_slice(&destination.octets());
        }
    }
    frame.extend_from_slice(payload);
    frame
}

#[cfg(test)]
mod tests {
    use portguard_common::{
        maps::{PREFIX_KEY_PORT_BITS, ipv4_mapped},
        packet::{TCP_SYN, parse},
    };

    use super::*;

    fn parsed(frame: &[u8]) -> Headers {
        let mut headers = Headers::default();
        parse(frame, &mut headers).expect("a whole packet");
        headers
    }

    #[test]
    fn tcp_over_ipv4_parses_as_built() {
        let frame = tcp(
            "10.0.0.9:51234".parse().unwrap(),
            "10.0.0.1:22".parse().unwrap(),
            TCP_SYN,
        );

        let headers = parsed(&frame);

        assert_eq!(headers.family, 4);
        assert_eq!(headers.protocol, PROTO_TCP);
        assert_eq!(headers.source, ipv4_mapped([10, 0, 0, 9]));
        assert_eq!(headers.destination, ipv4_mapped([10, 0, 0, 1]));
        assert_eq!((headers.source_port, headers.destination_port), (51234, 22));
        assert_eq!(headers.tcp_flags, TCP_SYN);
    }

    #[test]
    fn tcp_over_ipv6_parses_as_built() {
        let frame = tcp(
            "[2001:db8::9]:51234".parse().unwrap(),
            "[2001:db8::1]:2222".parse().unwrap(),
            TCP_SYN,
        );

        let headers = parsed(&frame);

        assert_eq!(headers.family, 6);
        assert_eq!(
            headers.source,
            "2001:db8::9".parse::<Ipv6Addr>().unwrap().octets()
        );
        assert_eq!(headers.destination_port, 2222);
    }

    #[test]
    fn icmpv6_parses_as_built() {
        let frame = icmpv6(
            "fe80::1".parse().unwrap(),
            "ff02::1:ff00:2".parse().unwrap(),
            135,
        );

        let headers = parsed(&frame);

        assert_eq!(headers.family, 6);
        assert_eq!(headers.protocol, PROTO_ICMPV6);
        assert_eq!(headers.icmp_type, 135);
    }

    #[test]
    fn prefixes_match_on_their_leading_bits_only() {
        let entry = PrefixEntry {
            prefix_len: PREFIX_KEY_PORT_BITS + 96 + 12,
            data: PrefixKeyData::new(PROTO_TCP, 22, ipv4_mapped([10, 16, 0, 0])),
            rule: 7,
        };
        let key = |address| PrefixKeyData::new(PROTO_TCP, 22, ipv4_mapped(address));

        assert!(covers(&entry, &key([10, 31, 255, 255])));
        assert!(!covers(&entry, &key([10, 32, 0, 0])));
        assert!(!covers(
            &entry,
            &PrefixKeyData::new(PROTO_TCP, 23, ipv4_mapped([10, 16, 0, 1]))
        ));
    }
}
