//! [`ModelMaps`], the guard's maps modelled with std collections for the userspace verdict,
//! and a sample policy that the strategies aim their packets at.

extern crate std;

use std::{collections::HashMap, vec::Vec};

use super::frame::v6;
use crate::{
    maps::{
        Addr, ENDPOINT_ANY_V4, ENDPOINT_ANY_V6, ENDPOINT_CUT, ENDPOINT_GATE, EndpointKey,
        EndpointValue, FlowKey, GrantKey, GrantValue, PREFIX_KEY_PORT_BITS, PROTO_TCP, PROTO_UDP,
        PrefixKeyData, ipv4_mapped,
    },
    verdict::GuardMaps,
};

/// Bits in a prefix key's data: protocol, pad, port and a 16-byte address.
const PREFIX_KEY_BITS: u32 = PREFIX_KEY_PORT_BITS + 128;
const NS_PER_SEC: u64 = 1_000_000_000;

/// The guarded host's IPv4 address in sample packets.
pub const HOST_V4: [u8; 4] = [198, 51, 100, 1];
/// The guarded host's IPv6 address in sample packets.
pub const HOST_V6: Addr = v6([0xfd00, 0, 0, 0, 0, 0, 0, 1]);
/// Ports that [`ModelMaps::sample`] declares, grants or has UDP flows on, and one it does not
/// know (80).
pub const SAMPLE_PORTS: [u16; 9] = [22, 53, 80, 443, 5432, 8080, 40000, 40001, 40002];
/// IPv4 sources that [`ModelMaps::sample`] names, and one outside every prefix.
pub const SAMPLE_SOURCES_V4: [[u8; 4]; 8] = [
    [10, 0, 0, 5],
    [10, 0, 0, 53],
    [192, 0, 2, 7],
    [192, 0, 2, 10],
    [192, 0, 2, 53],
    [192, 0, 2, 200],
    [172, 16, 0, 1],
    [203, 0, 113, 9],
];
/// IPv6 sources that [`ModelMaps::sample`] names, and one outside every prefix.
pub const SAMPLE_SOURCES_V6: [Addr; 5] = [
    v6([0x2001, 0xdb8, 0, 0, 0, 0, 0, 5]),
    v6([0x2001, 0xdb8, 0, 0, 0, 0, 0, 0x10]),
    v6([0x2001, 0xdb8, 0, 0, 0, 0, 0, 0x53]),
    v6([0x2001, 0xdb8, 0x53, 0, 0, 0, 0, 1]),
    v6([0x2001, 0xdb9, 0, 0, 0, 0, 0, 1]),
];

/// The guard's maps in userspace. The fields are public so that a kernel test can load the
/// same entries into the real maps.
#[derive(Clone, Debug, Default)]
pub struct ModelMaps {
    pub endpoints: HashMap<EndpointKey, EndpointValue>,
    /// Entries of the endpoint-prefix LPM trie: (prefix length in bits, key data, rule).
    pub prefixes: Vec<(u32, PrefixKeyData, u32)>,
    pub grants: HashMap<GrantKey, GrantValue>,
    /// When the host last sent on each flow (coarse monotonic ns).
    pub udp_flows: HashMap<FlowKey, u64>,
    /// Now, in `CLOCK_BOOTTIME` ns.
    pub boot_ns: u64,
    /// Now, in coarse `CLOCK_MONOTONIC` ns.
    pub coarse_ns: u64,
}

impl ModelMaps {
    /// Empty maps, with the clocks at these values.
    pub fn at(boot_ns: u64, coarse_ns: u64) -> Self {
        Self {
            boot_ns,
            coarse_ns,
            ..Self::default()
        }
    }

    /// Declares an endpoint; `flags` holds `ENDPOINT_ANY_*` bits.
    pub fn with_endpoint(mut self, protocol: u8, port: u16, rule: u32, flags: u32) -> Self {
        self.endpoints.insert(
            EndpointKey::new(protocol, port),
            EndpointValue { rule, flags },
        );
        self
    }

    /// Allows the sources in `address/address_bits` (on the 16-byte address: an IPv4 /n is
    /// a /96+n of its mapped address) to reach an endpoint.
    pub fn with_prefix(
        self,
        protocol: u8,
        port: u16,
        address: Addr,
        address_bits: u32,
        rule: u32,
    ) -> Self {
        let data = PrefixKeyData::new(protocol, port, address);
        self.with_trie_entry(PREFIX_KEY_PORT_BITS + address_bits, data, rule)
    }

    /// Adds a raw trie entry. Like the kernel's trie, an entry of the same length and the same
    /// leading bits is replaced; a length past the key is refused.
    pub fn with_trie_entry(mut self, prefix_len: u32, data: PrefixKeyData, rule: u32) -> Self {
        assert!(
            prefix_len <= PREFIX_KEY_BITS,
            "prefix length {prefix_len} past the key"
        );
        self.prefixes
            .retain(|(len, old, _)| *len != prefix_len || !prefix_matches(prefix_len, old, &data));
        self.prefixes.push((prefix_len, data, rule));
        self
    }

    /// Declares a gate's port: it opens for sources with a live grant; with `cut`,
    /// established TCP connections to it end with their grant.
    pub fn with_gate(mut self, protocol: u8, port: u16, cut: bool) -> Self {
        let flags = ENDPOINT_GATE | if cut { ENDPOINT_CUT } else { 0 };
        self.endpoints.insert(
            EndpointKey::new(protocol, port),
            EndpointValue { rule: 0, flags },
        );
        self
    }

    pub fn with_grant(
        mut self,
        source: Addr,
        protocol: u8,
        port: u16,
        expires_boot_ns: u64,
        grant_id: u64,
    ) -> Self {
        let key = GrantKey::new(source, protocol, port);
        self.grants.insert(
            key,
            GrantValue {
                expires_boot_ns,
                grant_id,
            },
        );
        self
    }

    /// Records that the host sent UDP from `local_port` to `remote:remote_port` at `sent_ns`.
    pub fn with_udp_flow(
        mut self,
        remote: Addr,
        remote_port: u16,
        local_port: u16,
        sent_ns: u64,
    ) -> Self {
        self.udp_flows.insert(
            FlowKey {
                remote,
                remote_port,
                local_port,
            },
            sent_ns,
        );
        self
    }

    /// A policy that [`super::arb_packet`] aims at, with the clocks at these values (pass the
    /// kernel's clocks for a kernel test; the coarse clock should be past 60 s):
    /// - TCP 22 from 10.0.0.0/8, 192.0.2.0/24 (rule 5), 192.0.2.128/25 (rule 6) and
    ///   2001:db8::/32;
    /// - TCP 443 from anywhere; UDP 53 from any IPv4 and 2001:db8:53::/48; UDP 443 from any
    ///   IPv6 only;
    /// - TCP 5432 granted to 10.0.0.5 and 2001:db8::5, expired for 192.0.2.7; TCP 8080
    ///   granted to 192.0.2.10, expired for 2001:db8::10; UDP 8080 granted to 10.0.0.5;
    ///   established connections to TCP 5432 end with their grant (`on_expiry = "cut"`);
    /// - UDP flows from local 40000 to 192.0.2.53:53 and 40001 to [2001:db8::53]:53, fresh,
    ///   and 40002 to 10.0.0.53:123, stale.
    pub fn sample(boot_ns: u64, coarse_ns: u64) -> Self {
        let live = boot_ns + 3600 * NS_PER_SEC;
        let expired = boot_ns.saturating_sub(1);
        let fresh = coarse_ns.saturating_sub(NS_PER_SEC);
        let stale = coarse_ns.saturating_sub(60 * NS_PER_SEC);
        let any = ENDPOINT_ANY_V4 | ENDPOINT_ANY_V6;
        let [v6_5, v6_10, v6_53, v6_53_net, _] = SAMPLE_SOURCES_V6;

        Self::at(boot_ns, coarse_ns)
            .with_endpoint(PROTO_TCP, 22, 1, 0)
            .with_prefix(PROTO_TCP, 22, ipv4_mapped([10, 0, 0, 0]), 96 + 8, 1)
            .with_prefix(PROTO_TCP, 22, ipv4_mapped([192, 0, 2, 0]), 96 + 24, 5)
            .with_prefix(PROTO_TCP, 22, ipv4_mapped([192, 0, 2, 128]), 96 + 25, 6)
            .with_prefix(PROTO_TCP, 22, v6([0x2001, 0xdb8, 0, 0, 0, 0, 0, 0]), 32, 1)
            .with_endpoint(PROTO_TCP, 443, 2, any)
            .with_endpoint(PROTO_UDP, 53, 3, ENDPOINT_ANY_V4)
            .with_prefix(PROTO_UDP, 53, v6_53_net, 48, 3)
            .with_endpoint(PROTO_UDP, 443, 4, ENDPOINT_ANY_V6)
            .with_gate(PROTO_TCP, 5432, true)
            .with_gate(PROTO_TCP, 8080, false)
            .with_gate(PROTO_UDP, 8080, false)
            .with_grant(ipv4_mapped([10, 0, 0, 5]), PROTO_TCP, 5432, live, 100)
            .with_grant(v6_5, PROTO_TCP, 5432, live, 101)
            .with_grant(ipv4_mapped([192, 0, 2, 7]), PROTO_TCP, 5432, expired, 102)
            .with_grant(ipv4_mapped([192, 0, 2, 10]), PROTO_TCP, 8080, live, 103)
            .with_grant(v6_10, PROTO_TCP, 8080, expired, 104)
            .with_grant(ipv4_mapped([10, 0, 0, 5]), PROTO_UDP, 8080, live, 105)
            .with_udp_flow(ipv4_mapped([192, 0, 2, 53]), 53, 40000, fresh)
            .with_udp_flow(v6_53, 53, 40001, fresh)
            .with_udp_flow(ipv4_mapped([10, 0, 0, 53]), 123, 40002, stale)
    }
}

/// Whether the first `prefix_len` bits of `key` equal those of `data`, bits taken in memory
/// order, most significant bit of each byte first: how a BPF LPM trie compares keys.
pub fn prefix_matches(prefix_len: u32, data: &PrefixKeyData, key: &PrefixKeyData) -> bool {
    let (data, key) = (key_bytes(data), key_bytes(key));
    let whole = (prefix_len / 8) as usize;
    let rest = prefix_len % 8;
    if data[..whole] != key[..whole] {
        return false;
    }
    let mask = (0xff00u16 >> rest) as u8;
    rest == 0 || (data[whole] ^ key[whole]) & mask == 0
}

/// A key's data as the trie sees it in memory.
fn key_bytes(data: &PrefixKeyData) -> [u8; 20] {
    let mut out = [0u8; 20];
    out[0] = data.protocol;
    out[1] = data._pad;
    out[2..4].copy_from_slice(&data.port_be);
    out[4..].copy_from_slice(&data.addr);
    out
}

impl GuardMaps for ModelMaps {
    fn endpoint(&self, key: &EndpointKey) -> Option<EndpointValue> {
        self.endpoints.get(key).copied()
    }

    /// Longest-prefix match, as the kernel answers a lookup with a full-length key.
    fn endpoint_prefix(&self, key: &PrefixKeyData) -> Option<u32> {
        self.prefixes
            .iter()
            .filter(|(len, data, _)| prefix_matches(*len, data, key))
            .max_by_key(|(len, _, _)| *len)
            .map(|(_, _, rule)| *rule)
    }

    fn grant(&self, key: &GrantKey) -> Option<GrantValue> {
        self.grants.get(key).copied()
    }

    fn udp_flow(&self, key: &FlowKey) -> Option<u64> {
        self.udp_flows.get(key).copied()
    }

    fn boot_ns(&self) -> u64 {
        self.boot_ns
    }

    fn coarse_ns(&self) -> u64 {
        self.coarse_ns
    }
}
