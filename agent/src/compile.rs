//! Turns a validated policy into the entries of the guard's maps. The loader writes them to
//! the kernel; the privileged tests feed the same entries to the userspace verdict model.

use std::{collections::HashMap, net::IpAddr};

use ipnet::IpNet;
use portguard_common::maps::{
    Addr, CONFIG_CUT_PORTS, Config, DEFAULT_EVENTS_PER_SOURCE_PER_SEC,
    DEFAULT_REPORTS_PER_CPU_PER_SEC, ENDPOINT_ANY_V4, ENDPOINT_ANY_V6, ENDPOINT_CUT, ENDPOINT_GATE,
    EndpointKey, EndpointValue, ICMP_ALL, ICMP_ESSENTIAL, MAX_ENDPOINT_PREFIXES, MODE_ENFORCE,
    MODE_MONITOR, PREFIX_KEY_PORT_BITS, PrefixKeyData, ipv4_mapped,
};

use crate::policy::{IcmpPolicy, Mode, OnExpiry, Policy, PortRange, Protocol};

/// Name of the rule that opens the agent's own auth endpoint.
pub const AUTH_RULE: &str = "auth";

/// One source prefix of one endpoint port, as an LPM trie key and its rule.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PrefixEntry {
    pub prefix_len: u32,
    pub data: PrefixKeyData,
    pub rule: u32,
}

/// Everything the kernel needs to enforce a policy.
#[derive(Clone, Debug, Default)]
pub struct MapEntries {
    pub endpoints: HashMap<EndpointKey, EndpointValue>,
    pub prefixes: Vec<PrefixEntry>,
    pub config: Config,
    /// Rule names by index: the policy's endpoints, then the auth endpoint when there is one.
    pub rules: Vec<String>,
}

/// An endpoint as the kernel sees it: a name, ports, a protocol and source prefixes.
struct Opening<'a> {
    name: &'a str,
    ports: PortRange,
    protocol: Protocol,
    from: &'a [IpNet],
}

/// Compiles a policy for the given generation.
pub fn compile(policy: &Policy, generation: u64) -> MapEntries {
    let mut entries = MapEntries {
        config: Config {
            mode: match policy.guard.mode {
                Mode::Enforce => MODE_ENFORCE,
                Mode::Monitor => MODE_MONITOR,
            },
            icmp: match policy.guard.icmp {
                IcmpPolicy::Essential => ICMP_ESSENTIAL,
                IcmpPolicy::All => ICMP_ALL,
            },
            generation,
            udp_reply_ttl_ns: policy.guard.udp_reply_ttl.as_nanos() as u64,
            events_per_source_per_sec: DEFAULT_EVENTS_PER_SOURCE_PER_SEC,
            flags: 0,
            reports_per_cpu_per_sec: DEFAULT_REPORTS_PER_CPU_PER_SEC,
            _reserved: 0,
        },
        ..MapEntries::default()
    };

    let anywhere = [
        IpNet::new(IpAddr::from([0u8; 4]), 0).expect("0 is a valid prefix length"),
        IpNet::new(IpAddr::from([0u16; 8]), 0).expect("0 is a valid prefix length"),
    ];
    let mut openings: Vec<Opening> = policy
        .endpoints
        .iter()
        .map(|e| Opening {
            name: &e.name,
            ports: e.ports,
            protocol: e.protocol,
            from: &e.from,
        })
        .collect();
    // The agent's own token endpoint is always reachable, or no token could ever be shown.
    if let Some(auth) = &policy.auth {
        for listen in &auth.listen {
            let port = listen.port();
            openings.push(Opening {
                name: AUTH_RULE,
                ports: PortRange {
                    first: port,
                    last: port,
                },
                protocol: Protocol::Tcp,
                from: &anywhere,
            });
        }
    }

    for opening in &openings {
        let rule = rule_index(&mut entries.rules, opening.name);
        add_opening(&mut entries, opening, rule);
    }
    // A gate's ports are in the same hash, flagged: one lookup tells a closed port from a
    // gated one, and only gated ports cost a grant lookup.
    for gate in &policy.gates {
        let cut = gate.on_expiry == OnExpiry::Cut;
        let flags = ENDPOINT_GATE | if cut { ENDPOINT_CUT } else { 0 };
        for port in gate.ports.first..=gate.ports.last {
            let key = EndpointKey::new(gate.protocol.number(), port);
            // Never over an endpoint (validation refuses the overlap): the auth endpoint's
            // port must stay open.
            entries
                .endpoints
                .entry(key)
                .or_insert(EndpointValue { rule: 0, flags });
        }
        if cut {
            entries.config.flags |= CONFIG_CUT_PORTS;
        }
    }
    debug_assert!(entries.prefixes.len() <= MAX_ENDPOINT_PREFIXES as usize);
    entries
}

fn rule_index(rules: &mut Vec<String>, name: &str) -> u32 {
    match rules.iter().position(|r| r == name) {
        Some(i) => i as u32,
        None => {
            rules.push(name.to_owned());
            (rules.len() - 1) as u32
        }
    }
}

fn add_opening(entries: &mut MapEntries, opening: &Opening, rule: u32) {
    let protocol = opening.protocol.number();
    let mut flags = 0;
    for net in opening.from {
        match net {
            IpNet::V4(v4) if v4.prefix_len() == 0 => flags |= ENDPOINT_ANY_V4,
            IpNet::V6(v6) if v6.prefix_len() == 0 => flags |= ENDPOINT_ANY_V6,
            _ => {}
        }
    }

    for port in opening.ports.first..=opening.ports.last {
        let key = EndpointKey::new(protocol, port);
        let value = entries
            .endpoints
            .entry(key)
            .or_insert(EndpointValue { rule, flags: 0 });
        // An "anywhere" endpoint names the rule for the sources it covers.
        if flags & !value.flags != 0 {
            value.rule = rule;
        }
        value.flags |= flags;

        for net in opening.from {
            if net.prefix_len() == 0 {
                continue;
            }
            let (addr, bits): (Addr, u32) = match net {
                IpNet::V4(v4) => (
                    ipv4_mapped(v4.network().octets()),
                    96 + v4.prefix_len() as u32,
                ),
                IpNet::V6(v6) => (v6.network().octets(), v6.prefix_len() as u32),
            };
            entries.prefixes.push(PrefixEntry {
                prefix_len: PREFIX_KEY_PORT_BITS + bits,
                data: PrefixKeyData::new(protocol, port, addr),
                rule,
            });
        }
    }
}
