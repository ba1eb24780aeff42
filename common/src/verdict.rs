//! The verdict function: what happens to a parsed packet, given the guard's maps.
//! The contract it implements is the verdict table of DESIGN.md section 2.

use crate::{
    Reason,
    maps::{
        CONFIG_CUT_PORTS, Config, DEFAULT_UDP_REPLY_TTL_NS, ENDPOINT_ANY_V4, ENDPOINT_ANY_V6,
        ENDPOINT_CUT, ENDPOINT_GATE, EndpointKey, EndpointValue, FlowKey, GrantKey, GrantValue,
        ICMP_ALL, MODE_MONITOR, PROTO_ICMP, PROTO_ICMPV6, PROTO_TCP, PROTO_UDP, PrefixKeyData,
    },
    packet::{Headers, Packet, TCP_ACK, TCP_SYN, parse},
};

/// Lookups the verdict needs; the kernel answers them from BPF maps, userspace from a model.
pub trait GuardMaps {
    fn endpoint(&self, key: &EndpointKey) -> Option<EndpointValue>;
    /// Longest-prefix match of a full-length key (protocol, port and the whole address).
    fn endpoint_prefix(&self, key: &PrefixKeyData) -> Option<u32>;
    fn grant(&self, key: &GrantKey) -> Option<GrantValue>;
    /// When the host last sent on this UDP flow (coarse monotonic ns).
    fn udp_flow(&self, key: &FlowKey) -> Option<u64>;
    /// Now, in `CLOCK_BOOTTIME` ns (grant expiry).
    fn boot_ns(&self) -> u64;
    /// Now, in coarse `CLOCK_MONOTONIC` ns (UDP flow age).
    fn coarse_ns(&self) -> u64;
}

/// A verdict and what it rests on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Decision {
    pub reason: Reason,
    /// The endpoint index or grant id that let the packet in; 0 otherwise.
    pub rule: u64,
}

impl Decision {
    #[inline(always)]
    const fn of(reason: Reason) -> Self {
        Self { reason, rule: 0 }
    }

    /// Whether the packet goes on, in the configured mode.
    #[inline(always)]
    pub fn passes(&self, config: &Config) -> bool {
        self.reason.passes() || config.mode == MODE_MONITOR
    }
}

/// Parses and judges one inbound packet. `headers` is left holding what the parser read.
#[inline(always)]
pub fn judge<P: Packet + ?Sized, M: GuardMaps>(
    pkt: &P,
    config: &Config,
    maps: &M,
    headers: &mut Headers,
) -> Decision {
    match parse(pkt, headers) {
        Ok(()) => decide(headers, config, maps),
        Err(reason) => Decision::of(reason),
    }
}

/// Judges a packet whose headers were parsed completely.
#[inline(always)]
pub fn decide<M: GuardMaps>(headers: &Headers, config: &Config, maps: &M) -> Decision {
    match headers.protocol {
        PROTO_TCP => {
            // Only a SYN without ACK opens a connection; the rest belongs to connections the
            // kernel knows, or is answered by it with a RST.
            if headers.tcp_flags & TCP_SYN == 0 || headers.tcp_flags & TCP_ACK != 0 {
                if config.flags & CONFIG_CUT_PORTS != 0 && is_cut(headers, maps) {
                    return Decision::of(Reason::GrantEnded);
                }
                return Decision::of(Reason::TcpNotNew);
            }
            port_decision(headers, maps)
        }
        PROTO_UDP => {
            let decision = port_decision(headers, maps);
            if decision.reason.passes() || !is_reply(headers, config, maps) {
                return decision;
            }
            Decision::of(Reason::UdpReply)
        }
        PROTO_ICMP | PROTO_ICMPV6 => {
            if is_essential_icmp(headers.protocol, headers.icmp_type) {
                Decision::of(Reason::IcmpEssential)
            } else if config.icmp == ICMP_ALL {
                Decision::of(Reason::IcmpAllowed)
            } else {
                Decision::of(Reason::IcmpBlocked)
            }
        }
        _ => Decision::of(Reason::ProtocolNotAllowed),
    }
}

/// One lookup says whether the port is an endpoint, a gate or nothing: a port that nothing
/// opens is dropped without a grant lookup. Endpoints never overlap gates.
#[inline(always)]
fn port_decision<M: GuardMaps>(headers: &Headers, maps: &M) -> Decision {
    let port = headers.destination_port;
    let Some(endpoint) = maps.endpoint(&EndpointKey::new(headers.protocol, port)) else {
        return Decision::of(Reason::PortClosed);
    };
    if endpoint.flags & ENDPOINT_GATE != 0 {
        return match maps.grant(&GrantKey::new(headers.source, headers.protocol, port)) {
            Some(grant) if grant.expires_boot_ns > maps.boot_ns() => Decision {
                reason: Reason::Grant,
                rule: grant.grant_id,
            },
            Some(_) => Decision::of(Reason::GrantExpired),
            None => Decision::of(Reason::PortClosed),
        };
    }

    let any = if headers.family == 4 {
        ENDPOINT_ANY_V4
    } else {
        ENDPOINT_ANY_V6
    };
    if endpoint.flags & any != 0 {
        return Decision {
            reason: Reason::Endpoint,
            rule: endpoint.rule as u64,
        };
    }
    let key = PrefixKeyData::new(headers.protocol, port, headers.source);
    match maps.endpoint_prefix(&key) {
        Some(rule) => Decision {
            reason: Reason::Endpoint,
            rule: rule as u64,
        },
        None => Decision::of(Reason::SourceNotAllowed),
    }
}

/// Whether a TCP segment belongs to a connection whose grant has ended, on a port that cuts.
#[inline(always)]
fn is_cut<M: GuardMaps>(headers: &Headers, maps: &M) -> bool {
    let port = headers.destination_port;
    match maps.endpoint(&EndpointKey::new(headers.protocol, port)) {
        Some(gate) if gate.flags & ENDPOINT_CUT != 0 => {}
        _ => return false,
    }
    match maps.grant(&GrantKey::new(headers.source, headers.protocol, port)) {
        Some(grant) => grant.expires_boot_ns <= maps.boot_ns(),
        None => true,
    }
}

/// Whether a UDP datagram answers a flow the host sent within the reply lifetime.
#[inline(always)]
fn is_reply<M: GuardMaps>(headers: &Headers, config: &Config, maps: &M) -> bool {
    let key = FlowKey {
        remote: headers.source,
        remote_port: headers.source_port,
        local_port: headers.destination_port,
    };
    let Some(last_sent) = maps.udp_flow(&key) else {
        return false;
    };
    let ttl = if config.udp_reply_ttl_ns == 0 {
        DEFAULT_UDP_REPLY_TTL_NS
    } else {
        config.udp_reply_ttl_ns
    };
    maps.coarse_ns().saturating_sub(last_sent) < ttl
}

/// ICMP the network cannot work without: errors about the host's own traffic, echo replies,
/// and for IPv6 neighbour discovery, router advertisements and multicast listener messages.
#[inline(always)]
pub const fn is_essential_icmp(protocol: u8, icmp_type: u8) -> bool {
    if protocol == PROTO_ICMP {
        // echo reply, destination unreachable (incl. fragmentation needed), time exceeded,
        // parameter problem
        matches!(icmp_type, 0 | 3 | 11 | 12)
    } else {
        // unreachable, packet too big, time exceeded, parameter problem, echo reply,
        // MLD query/report/done, router advertisement, neighbour solicitation/advertisement,
        // MLDv2 report
        matches!(icmp_type, 1..=4 | 129..=132 | 134..=136 | 143)
    }
}

/// The key under which the egress program records an outbound UDP datagram, so that
/// [`decide`] finds it when the answer comes back.
#[inline(always)]
pub fn outbound_flow_key(headers: &Headers) -> Option<FlowKey> {
    if headers.protocol != PROTO_UDP {
        return None;
    }
    Some(FlowKey {
        remote: headers.destination,
        remote_port: headers.destination_port,
        local_port: headers.source_port,
    })
}
