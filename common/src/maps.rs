//! Keys and values of the guard's maps, laid out identically for the kernel and the agent.
//!
//! Every type is `#[repr(C)]`, `Copy`, made of fixed-width integers with explicit padding.
//! Addresses are 16 bytes in network byte order, IPv4 as IPv4-mapped IPv6 (`::ffff:a.b.c.d`),
//! so one map serves both families. Ports are in host byte order unless a field says otherwise.

/// Capacity of the declared-endpoint hash: every port of both protocols.
pub const MAX_ENDPOINTS: u32 = 131_072;
/// Capacity of the endpoint source-prefix trie.
pub const MAX_ENDPOINT_PREFIXES: u32 = 65_536;
/// Capacity of the grants hash.
pub const MAX_GRANTS: u32 = 131_072;
/// Capacity of the LRU table of the host's own outbound UDP flows.
pub const MAX_UDP_FLOWS: u32 = 65_536;
/// Capacity of the LRU table of per-source event budgets.
pub const MAX_EVENT_SOURCES: u32 = 16_384;
/// Size of the event ring buffer in bytes (a power of two, a multiple of the page size).
pub const EVENT_RING_BYTES: u32 = 256 * 1024;

pub const PROTO_TCP: u8 = 6;
pub const PROTO_UDP: u8 = 17;
pub const PROTO_ICMP: u8 = 1;
pub const PROTO_ICMPV6: u8 = 58;

/// An address as the maps store it: 16 bytes, network byte order, IPv4 mapped.
pub type Addr = [u8; 16];

/// Maps an IPv4 address (network byte order) to `::ffff:a.b.c.d`.
#[inline(always)]
pub const fn ipv4_mapped(v4: [u8; 4]) -> Addr {
    [
        0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, v4[0], v4[1], v4[2], v4[3],
    ]
}

/// Whether an address is IPv4-mapped.
#[inline(always)]
pub const fn is_ipv4_mapped(addr: &Addr) -> bool {
    addr[0] == 0
        && addr[1] == 0
        && addr[2] == 0
        && addr[3] == 0
        && addr[4] == 0
        && addr[5] == 0
        && addr[6] == 0
        && addr[7] == 0
        && addr[8] == 0
        && addr[9] == 0
        && addr[10] == 0xff
        && addr[11] == 0xff
}

/// Key of the port hash: declared endpoints, and the ports of gates ([`ENDPOINT_GATE`]).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct EndpointKey {
    pub protocol: u8,
    pub _pad: u8,
    /// Destination port, host byte order.
    pub port: u16,
}

impl EndpointKey {
    pub const fn new(protocol: u8, port: u16) -> Self {
        Self {
            protocol,
            _pad: 0,
            port,
        }
    }
}

/// The endpoint accepts every IPv4 source: no prefix lookup needed.
pub const ENDPOINT_ANY_V4: u32 = 1;
/// The endpoint accepts every IPv6 source.
pub const ENDPOINT_ANY_V6: u32 = 2;
/// Not an endpoint but a gate's port: it opens only for sources with a live grant.
pub const ENDPOINT_GATE: u32 = 4;
/// A gate's port whose established connections end with their grant (`on_expiry = "cut"`).
pub const ENDPOINT_CUT: u32 = 8;

/// Value of the declared-endpoint hash.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct EndpointValue {
    /// Index of the endpoint in the policy (names it in events).
    pub rule: u32,
    /// `ENDPOINT_ANY_*` bits; sources not covered by them are looked up in the prefix trie.
    pub flags: u32,
}

/// Data of an endpoint-prefix trie key. The trie matches the first `prefix_len` bits of
/// `[protocol, 0, port (big endian), address]`: 32 bits of protocol and port, then the
/// source prefix on the IPv4-mapped address (an IPv4 /n is a /96+n).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct PrefixKeyData {
    pub protocol: u8,
    pub _pad: u8,
    /// Destination port, network byte order (the trie compares bits in memory order).
    pub port_be: [u8; 2],
    pub addr: Addr,
}

/// Bits of a prefix key that hold protocol and port.
pub const PREFIX_KEY_PORT_BITS: u32 = 32;

impl PrefixKeyData {
    pub const fn new(protocol: u8, port: u16, addr: Addr) -> Self {
        Self {
            protocol,
            _pad: 0,
            port_be: port.to_be_bytes(),
            addr,
        }
    }
}

/// Key of the grants hash: who may reach which port.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct GrantKey {
    pub source: Addr,
    pub protocol: u8,
    pub _pad: u8,
    /// Destination port, host byte order.
    pub port: u16,
}

impl GrantKey {
    pub const fn new(source: Addr, protocol: u8, port: u16) -> Self {
        Self {
            source,
            protocol,
            _pad: 0,
            port,
        }
    }
}

/// Value of the grants hash.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct GrantValue {
    /// When the grant ends, in `CLOCK_BOOTTIME` nanoseconds (`bpf_ktime_get_boot_ns`).
    pub expires_boot_ns: u64,
    /// The agent's id of the grant, reported in events.
    pub grant_id: u64,
}

/// Key of the outbound UDP flow table, seen from the host: the remote end and the local port.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct FlowKey {
    pub remote: Addr,
    /// Remote port, host byte order.
    pub remote_port: u16,
    /// Local port, host byte order.
    pub local_port: u16,
}

/// Value of [`crate::map_names::CONFIG`], the one-entry configuration array.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Config {
    /// [`MODE_ENFORCE`] or [`MODE_MONITOR`]. A zeroed (never written) config enforces.
    pub mode: u32,
    /// [`ICMP_ESSENTIAL`] or [`ICMP_ALL`].
    pub icmp: u32,
    /// Policy generation, reported by status; bumped by every load.
    pub generation: u64,
    /// How long an outbound UDP flow accepts replies, in nanoseconds; 0 means the default.
    pub udp_reply_ttl_ns: u64,
    /// Events a source may cause per second before they are suppressed; 0 means the default.
    pub events_per_source_per_sec: u32,
    /// `CONFIG_*` bits.
    pub flags: u32,
    /// Reported packets a CPU attributes to their sources each second; past it, under a
    /// flood, reports are only counted ([`Counters::events_unattributed`]), which spares
    /// the per-source lookup. 0 means the default.
    pub reports_per_cpu_per_sec: u32,
    pub _reserved: u32,
}

/// Some gate cuts established connections when its grants end: TCP segments to the ports
/// flagged [`ENDPOINT_CUT`] need a live grant, not only new connections.
pub const CONFIG_CUT_PORTS: u32 = 1;

pub const MODE_ENFORCE: u32 = 0;
pub const MODE_MONITOR: u32 = 1;
pub const ICMP_ESSENTIAL: u32 = 0;
pub const ICMP_ALL: u32 = 1;
pub const DEFAULT_UDP_REPLY_TTL_NS: u64 = 30_000_000_000;
pub const DEFAULT_EVENTS_PER_SOURCE_PER_SEC: u32 = 10;
pub const DEFAULT_REPORTS_PER_CPU_PER_SEC: u32 = 5_000;

/// Value of [`crate::map_names::COUNTERS`], a per-CPU array of one entry: exact counts of
/// verdicts by reason, and of events that found the ring buffer full.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Counters {
    /// Packets by [`crate::Reason`] code.
    pub packets: [u64; crate::Reason::COUNT],
    /// Events that could not be written because the ring buffer was full.
    pub events_lost: u64,
    /// Events not written because their source was over its budget.
    pub events_suppressed: u64,
    /// Outbound UDP datagrams recorded by the egress program.
    pub udp_flows_recorded: u64,
    /// Reports past a CPU's per-second budget: neither written nor attributed to a source.
    pub events_unattributed: u64,
}

impl Default for Counters {
    fn default() -> Self {
        Self {
            packets: [0; crate::Reason::COUNT],
            events_lost: 0,
            events_suppressed: 0,
            udp_flows_recorded: 0,
            events_unattributed: 0,
        }
    }
}

impl Counters {
    /// Adds another CPU's counters to these (the map is per CPU; readers sum them).
    pub fn add(&mut self, other: &Counters) {
        for (sum, count) in self.packets.iter_mut().zip(other.packets.iter()) {
            *sum += count;
        }
        self.events_lost += other.events_lost;
        self.events_suppressed += other.events_suppressed;
        self.udp_flows_recorded += other.udp_flows_recorded;
        self.events_unattributed += other.events_unattributed;
    }
}

/// Per-source event budget, in the LRU [`crate::map_names::EVENT_RATE`].
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct RateState {
    /// Start of the current one-second window (coarse monotonic ns).
    pub window_start_ns: u64,
    /// Events written in this window.
    pub sent: u32,
    /// Events suppressed since the last one written, reported with the next.
    pub suppressed: u32,
}

/// An event written to the ring buffer: a connection let in, or a packet dropped.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FlowEvent {
    /// `CLOCK_MONOTONIC` nanoseconds (coarse).
    pub ts_ns: u64,
    /// Endpoint index or grant id that let the flow in; 0 for drops.
    pub rule: u64,
    pub source: Addr,
    pub destination: Addr,
    pub source_port: u16,
    pub destination_port: u16,
    pub ifindex: u32,
    /// Events from this source suppressed since the previous one (rate limit).
    pub suppressed: u32,
    /// [`crate::Reason`] code.
    pub reason: u8,
    pub protocol: u8,
    /// 1 when the packet was dropped; 0 when it passed (also in monitor mode).
    pub dropped: u8,
    /// 4 or 6.
    pub family: u8,
}

impl FlowEvent {
    /// Size of the record in the ring buffer.
    pub const SIZE: usize = core::mem::size_of::<FlowEvent>();

    /// Decodes a record read from the ring buffer (native byte order), without `unsafe`.
    pub fn from_bytes(bytes: &[u8]) -> Option<FlowEvent> {
        if bytes.len() < Self::SIZE {
            return None;
        }
        let u64_at = |at: usize| u64::from_ne_bytes(array(&bytes[at..at + 8]));
        let u32_at = |at: usize| u32::from_ne_bytes(array(&bytes[at..at + 4]));
        let u16_at = |at: usize| u16::from_ne_bytes(array(&bytes[at..at + 2]));
        Some(FlowEvent {
            ts_ns: u64_at(0),
            rule: u64_at(8),
            source: array(&bytes[16..32]),
            destination: array(&bytes[32..48]),
            source_port: u16_at(48),
            destination_port: u16_at(50),
            ifindex: u32_at(52),
            suppressed: u32_at(56),
            reason: bytes[60],
            protocol: bytes[61],
            dropped: bytes[62],
            family: bytes[63],
        })
    }
}

fn array<const N: usize>(bytes: &[u8]) -> [u8; N] {
    let mut out = [0u8; N];
    out.copy_from_slice(bytes);
    out
}

#[cfg(feature = "user")]
mod pod {
    // SAFETY: each type is #[repr(C)], Copy, made only of integers and byte arrays, with
    // explicit padding fields, so every bit pattern is valid and none has implicit padding.
    unsafe impl aya::Pod for super::EndpointKey {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::EndpointValue {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::PrefixKeyData {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::GrantKey {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::GrantValue {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::FlowKey {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::Config {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::Counters {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::RateState {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::FlowEvent {}
}

#[cfg(test)]
mod tests {
    use super::*;
    use core::mem::size_of;

    #[test]
    fn counters_add_every_field() {
        let cpu = Counters {
            packets: [1; crate::Reason::COUNT],
            events_lost: 2,
            events_suppressed: 3,
            udp_flows_recorded: 4,
            events_unattributed: 5,
        };
        let mut total = Counters::default();
        total.add(&cpu);
        total.add(&cpu);
        assert_eq!(
            total,
            Counters {
                packets: [2; crate::Reason::COUNT],
                events_lost: 4,
                events_suppressed: 6,
                udp_flows_recorded: 8,
                events_unattributed: 10,
            }
        );
    }

    #[test]
    fn layouts_have_no_implicit_padding() {
        assert_eq!(size_of::<EndpointKey>(), 4);
        assert_eq!(size_of::<EndpointValue>(), 8);
        assert_eq!(size_of::<PrefixKeyData>(), 20);
        assert_eq!(size_of::<GrantKey>(), 20);
        assert_eq!(size_of::<GrantValue>(), 16);
        assert_eq!(size_of::<FlowKey>(), 20);
        assert_eq!(size_of::<Config>(), 40);
        assert_eq!(size_of::<RateState>(), 16);
        assert_eq!(size_of::<FlowEvent>(), 8 + 8 + 32 + 4 + 4 + 4 + 4);
    }

    #[test]
    fn flow_event_decodes_from_its_own_bytes() {
        let event = FlowEvent {
            ts_ns: 1,
            rule: 2,
            source: [3; 16],
            destination: [4; 16],
            source_port: 5,
            destination_port: 6,
            ifindex: 7,
            suppressed: 8,
            reason: 9,
            protocol: 10,
            dropped: 1,
            family: 6,
        };
        let mut bytes = std::vec::Vec::new();
        bytes.extend_from_slice(&event.ts_ns.to_ne_bytes());
        bytes.extend_from_slice(&event.rule.to_ne_bytes());
        bytes.extend_from_slice(&event.source);
        bytes.extend_from_slice(&event.destination);
        bytes.extend_from_slice(&event.source_port.to_ne_bytes());
        bytes.extend_from_slice(&event.destination_port.to_ne_bytes());
        bytes.extend_from_slice(&event.ifindex.to_ne_bytes());
        bytes.extend_from_slice(&event.suppressed.to_ne_bytes());
        bytes.extend_from_slice(&[9, 10, 1, 6]);
        assert_eq!(FlowEvent::from_bytes(&bytes), Some(event));
        assert_eq!(FlowEvent::from_bytes(&bytes[..63]), None);
    }
}
