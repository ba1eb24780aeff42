//! The real XDP program, run through BPF_PROG_TEST_RUN, judged against the userspace verdict
//! function on the same packets: a fixed table, then 100,000 generated and mutated packets.
//! Any disagreement (action or reason) fails with the packet's bytes.

use std::cell::RefCell;

use aya::programs::{TestRun, TestRunOptions, Xdp};
use nix::time::{ClockId, clock_gettime};
use portguard::{
    compile::{MapEntries, PrefixEntry},
    loader::Guard,
};
use portguard_common::{
    Reason,
    craft::{Frame, ModelMaps, arb_packet},
    maps::{CONFIG_CUT_PORTS, Config, ICMP_ESSENTIAL, MODE_ENFORCE, MODE_MONITOR},
    packet::{Headers, TCP_ACK, TCP_SYN},
    program_names,
    verdict::{Decision, judge},
};
use proptest::test_runner::{Config as ProptestConfig, TestCaseError, TestRunner};

const XDP_DROP: u32 = 1;
const XDP_PASS: u32 = 2;
/// BPF_PROG_TEST_RUN refuses XDP input shorter than an Ethernet header.
const MIN_TEST_RUN_LEN: usize = 14;
const UDP_REPLY_TTL_NS: u64 = 30_000_000_000;

fn clock_ns(clock: ClockId) -> u64 {
    let now = clock_gettime(clock).expect("read a clock");
    now.tv_sec() as u64 * 1_000_000_000 + now.tv_nsec() as u64
}

/// The loaded guard and the model holding the same entries.
struct Harness {
    guard: Guard,
    model: ModelMaps,
    config: Config,
    counters: [u64; Reason::COUNT],
}

impl Harness {
    fn new(mode: u32) -> Self {
        assert!(
            nix::unistd::Uid::effective().is_root(),
            "kernel tests need root: run `cargo xtask test`"
        );
        let model = ModelMaps::sample(
            clock_ns(ClockId::CLOCK_BOOTTIME),
            clock_ns(ClockId::CLOCK_MONOTONIC_COARSE),
        );
        let config = Config {
            mode,
            icmp: ICMP_ESSENTIAL,
            generation: 1,
            udp_reply_ttl_ns: UDP_REPLY_TTL_NS,
            events_per_source_per_sec: 0,
            flags: CONFIG_CUT_PORTS,
            reports_per_cpu_per_sec: 0,
            _reserved: 0,
        };

        let mut guard = Guard::load().expect("load the guard (root, kernel with BTF)");
        let entries = MapEntries {
            endpoints: model.endpoints.clone(),
            prefixes: model
                .prefixes
                .iter()
                .map(|&(prefix_len, data, rule)| PrefixEntry {
                    prefix_len,
                    data,
                    rule,
                })
                .collect(),
            config,
            rules: Vec::new(),
        };
        guard.apply(&entries).expect("fill the maps");
        for (key, value) in &model.grants {
            guard.insert_grant(key, value).expect("insert a grant");
        }
        for (key, sent) in &model.udp_flows {
            guard
                .insert_udp_flow(key, *sent)
                .expect("insert a UDP flow");
        }
        let counters = guard.counters().expect("read counters").packets;
        Self {
            guard,
            model,
            config,
            counters,
        }
    }

    /// Keeps the "fresh" UDP flows fresh in both the kernel and the model, so a long run does
    /// not age them past the TTL halfway, and moves the model's clocks to now.
    fn refresh(&mut self) {
        let coarse = clock_ns(ClockId::CLOCK_MONOTONIC_COARSE);
        self.model.boot_ns = clock_ns(ClockId::CLOCK_BOOTTIME);
        self.model.coarse_ns = coarse;
        let fresh: Vec<_> = self
            .model
            .udp_flows
            .iter()
            .filter(|(_, sent)| coarse.saturating_sub(**sent) < UDP_REPLY_TTL_NS / 2)
            .map(|(key, _)| *key)
            .collect();
        for key in fresh {
            self.model.udp_flows.insert(key, coarse);
            self.guard
                .insert_udp_flow(&key, coarse)
                .expect("refresh a UDP flow");
        }
    }

    /// Runs one packet through the kernel program: its return code and the reason counted.
    fn kernel(&mut self, packet: &[u8]) -> (u32, Reason) {
        let program: &mut Xdp = self
            .guard
            .ebpf_mut()
            .program_mut(program_names::XDP_GUARD)
            .expect("guard program")
            .try_into()
            .expect("an XDP program");
        let mut options = TestRunOptions::new();
        options.data_in = Some(packet);
        let result = program.test_run(options).expect("BPF_PROG_TEST_RUN");

        let after = self.guard.counters().expect("read counters").packets;
        let counted: Vec<usize> = (0..Reason::COUNT)
            .filter(|&i| after[i] != self.counters[i])
            .collect();
        self.counters = after;
        assert_eq!(
            counted.len(),
            1,
            "one packet must count under exactly one reason: {counted:?}"
        );
        let reason = Reason::from_code(counted[0] as u8).expect("a known reason code");
        (result.return_value, reason)
    }

    fn userspace(&self, packet: &[u8]) -> Decision {
        judge(packet, &self.config, &self.model, &mut Headers::default())
    }

    /// Compares kernel and userspace on one packet; `Err` describes a disagreement.
    fn compare(&mut self, packet: &[u8]) -> Result<Reason, String> {
        let expected = self.userspace(packet);
        let (code, reason) = self.kernel(packet);
        let expected_code = if expected.passes(&self.config) {
            XDP_PASS
        } else {
            XDP_DROP
        };
        if reason != expected.reason || code != expected_code {
            return Err(format!(
                "kernel said {code} ({reason:?}), userspace {expected_code} ({:?}) for {packet:02x?}",
                expected.reason
            ));
        }
        Ok(reason)
    }
}

fn v4(last: u8) -> [u8; 4] {
    [10, 0, 0, last]
}

const HOST_V4: [u8; 4] = [10, 0, 0, 1];

fn v6(last: u16) -> [u8; 16] {
    let mut addr = [0u8; 16];
    addr[..4].copy_from_slice(&[0x20, 0x01, 0x0d, 0xb8]);
    addr[14..].copy_from_slice(&last.to_be_bytes());
    addr
}

/// A table of packets, each with the reason both sides must agree on.
fn table() -> Vec<(&'static str, Vec<u8>, Reason)> {
    use portguard_common::craft::{fragment, hop_by_hop, routing};
    let syn = TCP_SYN;
    vec![
        (
            "syn to anywhere endpoint",
            Frame::ipv4(v4(9), HOST_V4).tcp(40000, 443, syn).build(),
            Reason::Endpoint,
        ),
        (
            "syn to ssh from inside prefix",
            Frame::ipv4(v4(9), HOST_V4).tcp(40000, 22, syn).build(),
            Reason::Endpoint,
        ),
        (
            "syn to ssh from outside",
            Frame::ipv4([198, 51, 100, 1], HOST_V4)
                .tcp(40000, 22, syn)
                .build(),
            Reason::SourceNotAllowed,
        ),
        (
            "syn to closed port",
            Frame::ipv4(v4(9), HOST_V4).tcp(40000, 9999, syn).build(),
            Reason::PortClosed,
        ),
        (
            "syn+ack",
            Frame::ipv4(v4(9), HOST_V4)
                .tcp(40000, 9999, syn | TCP_ACK)
                .build(),
            Reason::TcpNotNew,
        ),
        (
            "ack",
            Frame::ipv4(v4(9), HOST_V4)
                .tcp(40000, 9999, TCP_ACK)
                .build(),
            Reason::TcpNotNew,
        ),
        (
            "live grant",
            Frame::ipv4(v4(5), HOST_V4).tcp(40000, 5432, syn).build(),
            Reason::Grant,
        ),
        (
            "expired grant",
            Frame::ipv4([192, 0, 2, 7], HOST_V4)
                .tcp(40000, 5432, syn)
                .build(),
            Reason::GrantExpired,
        ),
        (
            "udp reply",
            Frame::ipv4([192, 0, 2, 53], HOST_V4).udp(53, 40000).build(),
            Reason::UdpReply,
        ),
        (
            "stale udp flow",
            Frame::ipv4(v4(53), HOST_V4).udp(123, 40002).build(),
            Reason::PortClosed,
        ),
        (
            "unsolicited udp",
            Frame::ipv4([192, 0, 2, 53], HOST_V4)
                .udp(5555, 40000)
                .build(),
            Reason::PortClosed,
        ),
        (
            "vlan syn",
            Frame::ipv4(v4(9), HOST_V4).vlan(7).tcp(1, 443, syn).build(),
            Reason::Endpoint,
        ),
        (
            "qinq syn",
            Frame::ipv4(v4(9), HOST_V4)
                .qinq(7)
                .vlan(8)
                .tcp(1, 9999, syn)
                .build(),
            Reason::PortClosed,
        ),
        (
            "three vlan tags",
            Frame::ipv4(v4(9), HOST_V4)
                .vlan(1)
                .vlan(2)
                .vlan(3)
                .tcp(1, 443, syn)
                .build(),
            Reason::TooManyVlanTags,
        ),
        (
            "ipv4 options",
            Frame::ipv4(v4(9), HOST_V4)
                .ipv4_options(&[1; 40])
                .tcp(1, 443, syn)
                .build(),
            Reason::Endpoint,
        ),
        (
            "ipv4 ihl 4",
            Frame::ipv4(v4(9), HOST_V4).ihl(4).tcp(1, 443, syn).build(),
            Reason::BadIpv4Header,
        ),
        (
            "offset one fragment",
            Frame::ipv4(v4(9), HOST_V4)
                .fragment(1, true)
                .tcp(1, 9999, syn)
                .build(),
            Reason::TinyFragmentOffset,
        ),
        (
            "later fragment",
            Frame::ipv4(v4(9), HOST_V4)
                .fragment(3, false)
                .tcp(1, 9999, syn)
                .build(),
            Reason::LaterFragment,
        ),
        (
            "short first fragment",
            Frame::ipv4(v4(9), HOST_V4)
                .fragment(0, true)
                .tcp(1, 443, syn)
                .clip_transport(12)
                .build(),
            Reason::ShortFirstFragment,
        ),
        (
            "ipv6 syn",
            Frame::ipv6(v6(9), v6(1)).tcp(1, 443, syn).build(),
            Reason::Endpoint,
        ),
        (
            "ipv6 ext chain",
            Frame::ipv6(v6(9), v6(1))
                .ext(hop_by_hop(8))
                .ext(routing(24))
                .ext(fragment(0, false))
                .tcp(1, 9999, syn)
                .build(),
            Reason::PortClosed,
        ),
        (
            "ipv6 later fragment",
            Frame::ipv6(v6(9), v6(1))
                .ext(fragment(5, true))
                .tcp(1, 9999, syn)
                .build(),
            Reason::LaterFragment,
        ),
        (
            "ipv6 misplaced hop-by-hop",
            Frame::ipv6(v6(9), v6(1))
                .ext(routing(8))
                .ext(hop_by_hop(8))
                .tcp(1, 443, syn)
                .build(),
            Reason::BadIpv6Extension,
        ),
        (
            "icmp echo request",
            Frame::ipv4(v4(9), HOST_V4).icmp(8, 0).build(),
            Reason::IcmpBlocked,
        ),
        (
            "icmp unreachable",
            Frame::ipv4(v4(9), HOST_V4).icmp(3, 4).build(),
            Reason::IcmpEssential,
        ),
        (
            "neighbour solicitation",
            Frame::ipv6(v6(9), v6(1)).icmp(135, 0).build(),
            Reason::IcmpEssential,
        ),
        (
            "ack to a cut port with a live grant",
            Frame::ipv4(v4(5), HOST_V4)
                .tcp(40000, 5432, TCP_ACK)
                .build(),
            Reason::TcpNotNew,
        ),
        (
            "ack to a cut port, grant expired",
            Frame::ipv4([192, 0, 2, 7], HOST_V4)
                .tcp(40000, 5432, TCP_ACK)
                .build(),
            Reason::GrantEnded,
        ),
        (
            "ack to a cut port, no grant",
            Frame::ipv4(v4(9), HOST_V4)
                .tcp(40000, 5432, TCP_ACK)
                .build(),
            Reason::GrantEnded,
        ),
        (
            "arp",
            Frame::non_ip(0x0806).payload(28).build(),
            Reason::NonIp,
        ),
        (
            "truncated tcp",
            Frame::ipv4(v4(9), HOST_V4)
                .tcp(1, 443, syn)
                .truncate(14 + 20 + 10)
                .build(),
            Reason::TruncatedIpv4,
        ),
        (
            "gre",
            Frame::ipv4(v4(9), HOST_V4).protocol(47, 8).build(),
            Reason::ProtocolNotAllowed,
        ),
    ]
}

#[test]
fn fixed_table_agrees_with_userspace_and_the_verdict_table() {
    let mut harness = Harness::new(MODE_ENFORCE);
    for (name, packet, want) in table() {
        let got = harness
            .compare(&packet)
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(got, want, "{name}");
    }
}

#[test]
fn monitor_mode_passes_what_enforce_drops() {
    let mut harness = Harness::new(MODE_MONITOR);
    for (name, packet, want) in table() {
        let (code, reason) = harness.kernel(&packet);
        assert_eq!(reason, want, "{name}");
        assert_eq!(code, XDP_PASS, "{name}: monitor mode must pass");
    }
}

#[test]
fn generated_packets_agree_with_userspace() {
    const CASES: u32 = 100_000;
    let harness = RefCell::new(Harness::new(MODE_ENFORCE));
    let counts = RefCell::new((0u32, 0u32, [0u32; Reason::COUNT]));
    let mut runner = TestRunner::new(ProptestConfig {
        cases: CASES,
        failure_persistence: None,
        ..ProptestConfig::default()
    });

    let result = runner.run(&arb_packet(), |packet| {
        let mut counts = counts.borrow_mut();
        if packet.len() < MIN_TEST_RUN_LEN {
            counts.1 += 1;
            return Ok(());
        }
        let mut harness = harness.borrow_mut();
        counts.0 += 1;
        if counts.0 % 1_000 == 0 {
            harness.refresh();
        }
        let reason = harness.compare(&packet).map_err(TestCaseError::fail)?;
        counts.2[reason as usize] += 1;
        Ok(())
    });
    if let Err(error) = result {
        panic!("kernel and userspace disagree: {error}");
    }

    let (compared, skipped, by_reason) = *counts.borrow();
    eprintln!("compared {compared} packets in the kernel, {skipped} shorter than Ethernet skipped");
    for reason in Reason::ALL {
        eprintln!("  {:<32} {}", reason.name(), by_reason[reason as usize]);
    }
    assert!(
        compared >= CASES * 9 / 10,
        "too many packets skipped: {skipped}"
    );
    // The generator must reach the verdict, not only the parser's refusals.
    for reason in [
        Reason::Endpoint,
        Reason::SourceNotAllowed,
        Reason::PortClosed,
        Reason::Grant,
        Reason::UdpReply,
    ] {
        assert!(
            by_reason[reason as usize] > 100,
            "too few packets judged {reason:?}"
        );
    }
}
