//! Start-up and reload, the kernel side: loading the guard over pinned maps (what a restarted
//! or upgraded agent does) against loading it fresh; and a reload, written as a difference
//! against the maps, against filling the same policy into empty maps.

use std::{
    fmt::Write as _,
    path::Path,
    time::{Duration, Instant},
};

use portguard::{
    compile::{MapEntries, compile},
    loader::{Guard, pins},
    policy::Policy,
};
use portguard_tests::pins::PinMount;

use crate::{Args, median, spread};

/// Endpoint ports in each policy; the two policies of a reload share half of them.
const PORTS: u16 = 2_000;

pub fn run(args: &Args) -> anyhow::Result<()> {
    let dir = tempfile::Builder::new().prefix("pg-bench-").tempdir()?;
    let mount = PinMount::new(&dir.path().join("bpffs"))?;
    let pin_dir = mount.path().join("guard");

    println!("\n## Start-up and reload (kernel side)\n");
    println!("| case | ms (median, min-max) | baseline | baseline ms | ratio (median, min-max) |");
    println!("|---|---|---|---|---|");

    let (mut fresh, mut adopt) = (Vec::new(), Vec::new());
    for _ in 0..args.runs {
        pins::remove_all(&pin_dir)?;
        fresh.push(time(|| Guard::open(&pin_dir).map(drop))?);
        adopt.push(time(|| Guard::open(&pin_dir).map(drop))?);
    }
    row(
        "load over pinned maps (restart)",
        &adopt,
        "load fresh",
        &fresh,
    );
    pins::remove_all(&pin_dir)?;

    let before = entries(dir.path(), 10_000)?;
    let after = entries(dir.path(), 10_000 + PORTS / 2)?;
    let (mut fill, mut reload, mut same) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..args.runs {
        let mut guard = Guard::load()?;
        fill.push(time(|| guard.apply(&before))?);
        reload.push(time(|| guard.apply(&after))?);
        same.push(time(|| guard.apply(&after))?);
    }
    let name = format!("reload, half of {PORTS} ports changed");
    row(&name, &reload, "fill into empty maps", &fill);
    row(
        "reload, nothing changed",
        &same,
        "fill into empty maps",
        &fill,
    );
    Ok(())
}

/// A policy of `PORTS` tcp endpoints from `first`, each open to two prefixes, compiled.
fn entries(dir: &Path, first: u16) -> anyhow::Result<MapEntries> {
    let mut text = String::from("[guard]\ninterfaces = [\"*\"]\n");
    let last = first + PORTS - 1;
    let _ = write!(
        text,
        "\n[[endpoint]]\nname = \"many\"\nport = \"{first}-{last}\"\nprotocol = \"tcp\"\n\
         from = [\"10.0.0.0/8\", \"2001:db8::/32\"]\n"
    );
    let path = dir.join(format!("policy-{first}.toml"));
    std::fs::write(&path, &text)?;
    let policy = Policy::parse(&path, &text).map_err(|e| anyhow::anyhow!("{e:?}"))?;
    Ok(compile(&policy, 1))
}

fn time<E>(f: impl FnOnce() -> Result<(), E>) -> anyhow::Result<f64>
where
    E: std::error::Error + Send + Sync + 'static,
{
    let start = Instant::now();
    f()?;
    Ok(as_ms(start.elapsed()))
}

fn as_ms(elapsed: Duration) -> f64 {
    elapsed.as_secs_f64() * 1_000.0
}

fn row(name: &str, measured: &[f64], baseline_name: &str, baseline: &[f64]) {
    let (min, max) = spread(measured);
    let ratios: Vec<f64> = measured.iter().zip(baseline).map(|(m, b)| m / b).collect();
    let (rmin, rmax) = spread(&ratios);
    println!(
        "| {name} | {:.1} ({min:.1}-{max:.1}) | {baseline_name} | {:.1} | {:.2}x ({rmin:.2}-{rmax:.2}) |",
        median(measured),
        median(baseline),
        median(&ratios),
    );
}
