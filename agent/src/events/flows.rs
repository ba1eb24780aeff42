//! Turns the kernel's flow records (ring buffer) into `flow.allowed` and `flow.blocked`
//! events, and reports events the kernel could not write as `events.lost`.

use std::{
    collections::HashMap,
    net::{IpAddr, Ipv6Addr},
    sync::{Arc, RwLock},
    time::{Duration, SystemTime},
};

use aya::maps::{MapData, RingBuf};
use nix::time::{ClockId, clock_gettime};
use portguard_common::{
    Reason,
    maps::{FlowEvent, PROTO_ICMP, PROTO_ICMPV6, PROTO_TCP, PROTO_UDP},
};
use tokio::io::{Interest, unix::AsyncFd};

use super::{Event, EventLog};

/// Endpoint names by rule index, shared with the code that loads policies.
pub type RuleNames = Arc<RwLock<Vec<String>>>;

/// Reads flow records until the ring buffer fails.
pub struct FlowReader {
    ring: AsyncFd<RingBuf<MapData>>,
    context: FlowContext,
}

/// What turns a record into an event.
struct FlowContext {
    log: EventLog,
    rules: RuleNames,
    interfaces: Arc<RwLock<HashMap<u32, String>>>,
    monotonic_epoch: SystemTime,
}

impl FlowReader {
    pub fn new(
        ring: RingBuf<MapData>,
        log: EventLog,
        rules: RuleNames,
        interfaces: Arc<RwLock<HashMap<u32, String>>>,
    ) -> std::io::Result<Self> {
        #[expect(
            deprecated,
            reason = "the AsyncFd owns the ring buffer, so its fd stays open for as long as it \
                      is registered: the I/O-safety hole behind the deprecation cannot occur, \
                      and the agent keeps unsafe code out"
        )]
        let ring = AsyncFd::with_interest(ring, Interest::READABLE)?;
        let context = FlowContext {
            log,
            rules,
            interfaces,
            monotonic_epoch: monotonic_epoch(),
        };
        Ok(Self { ring, context })
    }

    pub async fn run(mut self) -> std::io::Result<()> {
        loop {
            let mut ready = self.ring.readable_mut().await?;
            let ring = ready.get_inner_mut();
            while let Some(record) = ring.next() {
                match FlowEvent::from_bytes(&record) {
                    Some(flow) => {
                        let event = self.context.event_of(&flow);
                        self.context.log.emit(event);
                    }
                    None => tracing::warn!(len = record.len(), "short flow record from kernel"),
                }
            }
            ready.clear_ready();
        }
    }
}

impl FlowContext {
    fn event_of(&self, flow: &FlowEvent) -> Event {
        let reason = Reason::from_code(flow.reason);
        let time = self.monotonic_epoch + Duration::from_nanos(flow.ts_ns);
        let name = if reason.is_some_and(Reason::passes) {
            "flow.allowed"
        } else {
            "flow.blocked"
        };
        let mut event = Event::at(name, time);

        if let Some(interface) = self
            .interfaces
            .read()
            .ok()
            .and_then(|m| m.get(&flow.ifindex).cloned())
        {
            event = event.with("interface", interface);
        }
        if flow.family != 0 {
            event = event
                .with("family", format!("ipv{}", flow.family))
                .with("protocol", protocol_name(flow.protocol))
                .with("source", address(&flow.source, flow.family))
                .with("destination", address(&flow.destination, flow.family));
            if matches!(flow.protocol, PROTO_TCP | PROTO_UDP) {
                event = event
                    .with("source_port", flow.source_port)
                    .with("destination_port", flow.destination_port);
            }
        }
        event = event.with("reason", reason.map_or("unknown", Reason::name));

        match reason {
            Some(Reason::Endpoint) => {
                let rules = self.rules.read().ok();
                let rule = rules
                    .as_ref()
                    .and_then(|r| r.get(flow.rule as usize).cloned());
                event = event.with(
                    "rule",
                    rule.unwrap_or_else(|| format!("endpoint#{}", flow.rule)),
                );
            }
            Some(Reason::Grant) => event = event.with("rule", format!("grant:{:016x}", flow.rule)),
            _ => {}
        }
        if reason.is_some_and(|r| !r.passes()) {
            // In monitor mode the kernel computes the drop and lets the packet through.
            event = event.with("dropped", flow.dropped != 0);
        }
        if flow.suppressed > 0 {
            event = event.with("count", flow.suppressed as u64 + 1);
        }
        event
    }
}

/// Wall-clock time at which CLOCK_MONOTONIC read zero, to date kernel records.
fn monotonic_epoch() -> SystemTime {
    let now = SystemTime::now();
    // The kernel stamps records with the coarse clock (bpf_ktime_get_coarse_ns).
    match clock_gettime(ClockId::CLOCK_MONOTONIC_COARSE) {
        Ok(mono) => {
            let since_boot = Duration::new(mono.tv_sec() as u64, mono.tv_nsec() as u32);
            now.checked_sub(since_boot).unwrap_or(now)
        }
        Err(_) => now,
    }
}

pub fn protocol_name(protocol: u8) -> String {
    match protocol {
        PROTO_TCP => "tcp".into(),
        PROTO_UDP => "udp".into(),
        PROTO_ICMP => "icmp".into(),
        PROTO_ICMPV6 => "icmpv6".into(),
        other => other.to_string(),
    }
}

/// An address as people write it: IPv4 dotted for IPv4-mapped addresses.
pub fn address(addr: &[u8; 16], family: u8) -> String {
    let v6 = Ipv6Addr::from(*addr);
    let ip = match (family, v6.to_ipv4_mapped()) {
        (4, Some(v4)) => IpAddr::V4(v4),
        _ => IpAddr::V6(v6),
    };
    ip.to_string()
}
