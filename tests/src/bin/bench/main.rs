//! `cargo xtask bench`: every figure as a ratio against a baseline measured in the same run,
//! repeated so that the spread shows. The XDP guard per verdict and as entries grow (`xdp`),
//! token validation against raw signature checks (`tokens`), and grants: their kernel-side
//! cost and the time from a grant request to the first SYN let in (`grants`), and start-up
//! and reload on the kernel side (`lifecycle`).

mod grants;
mod lifecycle;
mod tokens;
mod xdp;

use aya::programs::{TestRun, TestRunOptions, Xdp};
use clap::Parser;
use portguard::loader::Guard;
use portguard_common::program_names;

#[derive(Debug, Parser)]
pub struct Args {
    /// BPF_PROG_TEST_RUN repeats per measurement.
    #[arg(long, default_value_t = 1_000_000)]
    pub repeat: u32,
    /// Measurements per case.
    #[arg(long, default_value_t = 5)]
    pub runs: u32,
    /// Only this section: xdp, grants, lifecycle or tokens.
    #[arg(long)]
    pub only: Option<String>,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    println!(
        "# portguard benchmarks (BPF_PROG_TEST_RUN {} repeats, {} runs a case)\n",
        args.repeat, args.runs
    );
    let wanted = |section: &str| args.only.as_deref().is_none_or(|only| only == section);
    if wanted("xdp") {
        xdp::run(&args)?;
    }
    if wanted("grants") {
        grants::run(&args)?;
    }
    if wanted("lifecycle") {
        lifecycle::run(&args)?;
    }
    if wanted("tokens") {
        tokens::run(&args)?;
    }
    Ok(())
}

pub struct Row {
    pub guard_ns: Vec<f64>,
    pub pass_ns: Vec<f64>,
}

impl Row {
    pub fn ratios(&self) -> Vec<f64> {
        self.guard_ns
            .iter()
            .zip(&self.pass_ns)
            .map(|(g, p)| g / p)
            .collect()
    }

    pub fn ratio_median(&self) -> f64 {
        median(&self.ratios())
    }
}

/// Runs the guard and the pass-only program alternately, `runs` times each.
pub fn measure(guard: &mut Guard, packet: &[u8], args: &Args) -> anyhow::Result<Row> {
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

pub fn ns_per_run(
    guard: &mut Guard,
    program: &str,
    packet: &[u8],
    repeat: u32,
) -> anyhow::Result<f64> {
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

pub fn median(values: &[f64]) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    sorted[sorted.len() / 2]
}

pub fn spread(values: &[f64]) -> (f64, f64) {
    let min = values.iter().copied().fold(f64::INFINITY, f64::min);
    let max = values.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    (min, max)
}

pub fn print_row(name: &str, row: &Row, goal: Option<f64>) {
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
