//! `cargo xtask bench`: the XDP guard's cost per packet for each verdict, measured with
//! BPF_PROG_TEST_RUN as a ratio against a pass-only XDP program run in the same process,
//! interleaved with it, and repeated so that the spread shows. Then the same for 10, 1,000
//! and 100,000 endpoint entries, which should stay flat.

use aya::programs::{TestRun, TestRunOptions, Xdp};
use clap::Parser;
use nix::time::{ClockId, clock_gettime};
use portguard::{compile::MapEntries, loader::Guard};
use portguard_common::{
    craft::{Frame, fragment, hop_by_hop, routing},
    maps::{
        Config, ENDPOINT_ANY_V4, ENDPOINT_ANY_V6, EndpointKey, EndpointValue, FlowKey, PROTO_TCP,
        PROTO_UDP, ipv4_mapped,
    },
    packet::{TCP_ACK, TCP_SYN},
    program_names,
};

#[derive(Debug, Parser)]
struct Args {
    /// BPF_PROG_TEST_RUN repeats per measurement.
    #[arg(long, default_value_t = 1_000_000)]
    repeat: u32,
    /// Measurements per case.
    #[arg(long, default_value_t = 5)]
    runs: u32,
}

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

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    println!(
        "# portguard XDP benchmark (BPF_PROG_TEST_RUN, {} repeats x {} runs)\n",
        args.repeat, args.runs
    );

    let mut guard = Guard::load()?;
    fill(&mut guard, 1_000)?;
    println!("## Cost per verdict (1,000 endpoint entries)\n");
    println!(
        "| case | ns/packet (median, min-max) | pass-only ns | ratio (median, min-max) | goal |"
    );
    println!("|---|---|---|---|---|");
    for case in cases() {
        let row = measure(&mut guard, &case.packet, &args)?;
        print_row(case.name, &row, case.goal);
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
            measure(&mut guard, &hit, &args)?,
            measure(&mut guard, &miss, &args)?,
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

struct Row {
    guard_ns: Vec<f64>,
    pass_ns: Vec<f64>,
}

impl Row {
    fn ratios(&self) -> Vec<f64> {
        self.guard_ns
            .iter()
            .zip(&self.pass_ns)
            .map(|(g, p)| g / p)
            .collect()
    }

    fn ratio_median(&self) -> f64 {
        median(&self.ratios())
    }
}

/// Runs the guard and the pass-only program alternately, `runs` times each.
fn measure(guard: &mut Guard, packet: &[u8], args: &Args) -> anyhow::Result<Row> {
    let mut row = Row {
        guard_ns: Vec::new(),
        pass_ns: Vec::new(),
    };
    for _ in 0..args.runs {
        row.pass_ns.push(ns_per_run(
            guard,
            program_names::XDP_PASS,
            packet,
            args.repeat,
        )?);
        row.guard_ns.push(ns_per_run(
            guard,
            program_names::XDP_GUARD,
            packet,
            args.repeat,
        )?);
    }
    Ok(row)
}

fn ns_per_run(guard: &mut Guard, program: &str, packet: &[u8], repeat: u32) -> anyhow::Result<f64> {
    let program: &mut Xdp = guard
        .ebpf_mut()
        .program_mut(program)
        .ok_or_else(|| anyhow::anyhow!("program {program} missing"))?
        .try_into()?;
    let mut options = TestRunOptions::new();
    options.data_in = Some(packet);
    options.repeat = repeat;
    // The kernel's own timing: the mean per repeat, in whole nanoseconds. It leaves out the
    // time the test thread was preempted, which timing the call from here would count on a
    // shared machine; its price is a resolution of 1 ns.
    let result = program.test_run(options)?;
    Ok(result.duration.as_nanos() as f64)
}

fn median(values: &[f64]) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    sorted[sorted.len() / 2]
}

fn spread(values: &[f64]) -> (f64, f64) {
    let min = values.iter().copied().fold(f64::INFINITY, f64::min);
    let max = values.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    (min, max)
}

fn print_row(name: &str, row: &Row, goal: Option<f64>) {
    let (gmin, gmax) = spread(&row.guard_ns);
    let ratios = row.ratios();
    let (rmin, rmax) = spread(&ratios);
    let ratio = median(&ratios);
    let goal = match goal {
        Some(goal) if ratio <= goal => format!("<= {goal}x: met"),
        Some(goal) => format!("<= {goal}x: MISSED"),
        None => "-".into(),
    };
    println!(
        "| {name} | {:.1} ({gmin:.1}-{gmax:.1}) | {:.1} | {ratio:.2}x ({rmin:.2}-{rmax:.2}) | {goal} |",
        median(&row.guard_ns),
        median(&row.pass_ns),
    );
}
