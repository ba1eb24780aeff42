//! The XDP guard's cost per packet for each verdict, as a ratio against the pass-only
//! program; then the same for 10, 1,000 and 100,000 endpoint entries, which should stay flat.

use crate::{Args, measure, print_row};
use nix::time::{ClockId, clock_gettime};
use portguard::{compile::MapEntries, loader::Guard};
use portguard_common::{
    craft::{Frame, fragment, hop_by_hop, routing},
    maps::{
        Config, ENDPOINT_ANY_V4, ENDPOINT_ANY_V6, EndpointKey, EndpointValue, FlowKey, PROTO_TCP,
        PROTO_UDP, ipv4_mapped,
    },
    packet::{TCP_ACK, TCP_SYN},
};

/// Goals from DESIGN.md section 7, as ratios to the pass-only program.
const ALLOWED_GOAL: f64 = 2.5;
const DROPPED_GOAL: f64 = 3.0;
const FLAT_GOAL: f64 = 1.2;

const CLIENT: [u8; 4] = [10, 0, 0, 2];
const HOST: [u8; 4] = [10, 0, 0, 1];
const DECLARED_PORT: u16 = 7;
const CLOSED_PORT: u16 = 50_000;

struct Case {
    name: &'static str,
    packet: Vec<u8>,
    /// The goal this case is held to, if any.
    goal: Option<f64>,
}

fn cases() -> Vec<Case> {
    let v6 = |last: u8| {
        let mut a = [0u8; 16];
        a[..2].copy_from_slice(&[0x20, 0x01]);
        a[15] = last;
        a
    };
    vec![
        Case {
            name: "endpoint hit (IPv4 SYN)",
            packet: Frame::ipv4(CLIENT, HOST)
                .tcp(40000, DECLARED_PORT, TCP_SYN)
                .build(),
            goal: Some(ALLOWED_GOAL),
        },
        Case {
            name: "endpoint hit (IPv6 SYN)",
            packet: Frame::ipv6(v6(2), v6(1))
                .tcp(40000, DECLARED_PORT, TCP_SYN)
                .build(),
            goal: Some(ALLOWED_GOAL),
        },
        Case {
            name: "miss, dropped (IPv4 SYN)",
            packet: Frame::ipv4(CLIENT, HOST)
                .tcp(40000, CLOSED_PORT, TCP_SYN)
                .build(),
            goal: Some(DROPPED_GOAL),
        },
        Case {
            name: "miss, dropped (IPv6 SYN)",
            packet: Frame::ipv6(v6(2), v6(1))
                .tcp(40000, CLOSED_PORT, TCP_SYN)
                .build(),
            goal: Some(DROPPED_GOAL),
        },
        Case {
            name: "reply traffic (TCP ACK)",
            packet: Frame::ipv4(CLIENT, HOST).tcp(443, 40000, TCP_ACK).build(),
            goal: Some(ALLOWED_GOAL),
        },
        Case {
            name: "reply traffic (UDP, flow hit)",
            packet: Frame::ipv4(CLIENT, HOST).udp(53, 40000).build(),
            goal: Some(ALLOWED_GOAL),
        },
        Case {
            name: "IPv6 + 3 extension headers, hit",
            packet: Frame::ipv6(v6(2), v6(1))
                .ext(hop_by_hop(8))
                .ext(routing(24))
                .ext(fragment(0, false))
                .tcp(40000, DECLARED_PORT, TCP_SYN)
                .build(),
            goal: Some(ALLOWED_GOAL),
        },
        Case {
            name: "malformed (truncated IPv4), dropped",
            packet: Frame::ipv4(CLIENT, HOST)
                .tcp(1, 2, TCP_SYN)
                .truncate(30)
                .build(),
            goal: Some(DROPPED_GOAL),
        },
    ]
}

pub fn run(args: &Args) -> anyhow::Result<()> {
    let mut guard = Guard::load()?;
    fill(&mut guard, 1_000)?;
    println!("## Cost per verdict (1,000 endpoint entries)\n");
    println!(
        "A million repeats of one packet are a flood: past a CPU's budget of reports a second \
         (5,000), reported packets skip the per-source lookup. The second table turns that \
         budget off: every report is attributed to its source, as below the budget.\n"
    );
    for (title, reports_per_cpu) in [
        ("flood (default budget)", 0),
        ("every report attributed", u32::MAX),
    ] {
        guard.set_config(&Config {
            reports_per_cpu_per_sec: reports_per_cpu,
            ..Config::default()
        })?;
        println!("### {title}\n");
        println!(
            "| case | ns/packet (median, min-max) | pass-only ns | ratio (median, min-max) | goal |"
        );
        println!("|---|---|---|---|---|");
        for case in cases() {
            let row = measure(&mut guard, &case.packet, args)?;
            print_row(case.name, &row, case.goal);
        }
        println!();
    }

    println!("\n## Flat as entries grow\n");
    println!("| entries | hit ratio | miss ratio |");
    println!("|---|---|---|");
    let hit = Frame::ipv4(CLIENT, HOST)
        .tcp(40000, DECLARED_PORT, TCP_SYN)
        .build();
    let miss = Frame::ipv4(CLIENT, HOST)
        .tcp(40000, CLOSED_PORT, TCP_SYN)
        .build();
    let mut first: Option<(f64, f64)> = None;
    for entries in [10, 1_000, 100_000] {
        let mut guard = Guard::load()?;
        fill(&mut guard, entries)?;
        let (hit, miss) = (
            measure(&mut guard, &hit, args)?,
            measure(&mut guard, &miss, args)?,
        );
        let (hit_ratio, miss_ratio) = (hit.ratio_median(), miss.ratio_median());
        let (base_hit, base_miss) = *first.get_or_insert((hit_ratio, miss_ratio));
        println!(
            "| {entries} | {hit_ratio:.2}x ({:.2} of 10 entries) | {miss_ratio:.2}x ({:.2} of 10 entries) |",
            hit_ratio / base_hit,
            miss_ratio / base_miss
        );
    }
    println!("\nFlat means within {FLAT_GOAL}x of the 10-entry figure.");
    Ok(())
}

/// Declares `count` endpoints (TCP ports from 1, then UDP ports), open to every source, and
/// records one outbound UDP flow for the reply case.
fn fill(guard: &mut Guard, count: u32) -> anyhow::Result<()> {
    let mut entries = MapEntries {
        config: Config::default(),
        ..MapEntries::default()
    };
    for i in 0..count {
        let (protocol, port) = if i < 40_000 {
            (PROTO_TCP, i + 1)
        } else {
            (PROTO_UDP, i - 40_000 + 1)
        };
        entries.endpoints.insert(
            EndpointKey::new(protocol, port as u16),
            EndpointValue {
                rule: i,
                flags: ENDPOINT_ANY_V4 | ENDPOINT_ANY_V6,
            },
        );
    }
    entries
        .endpoints
        .entry(EndpointKey::new(PROTO_TCP, DECLARED_PORT))
        .or_insert(EndpointValue {
            rule: 0,
            flags: ENDPOINT_ANY_V4 | ENDPOINT_ANY_V6,
        });
    guard.apply(&entries)?;

    let now = clock_gettime(ClockId::CLOCK_MONOTONIC_COARSE)?;
    let now = now.tv_sec() as u64 * 1_000_000_000 + now.tv_nsec() as u64;
    // Far enough ahead to stay fresh for the whole run.
    let key = FlowKey {
        remote: ipv4_mapped(CLIENT),
        remote_port: 53,
        local_port: 40000,
    };
    guard.insert_udp_flow(&key, now + 3_600_000_000_000)?;
    Ok(())
}
