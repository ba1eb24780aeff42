//! `cargo xtask`: sets up a machine, and builds, tests, benchmarks, demonstrates and packages
//! portguard. Everything it needs it installs itself (`setup`), so a fresh machine of the
//! project's kind needs nothing done by hand.

mod package;
mod setup;

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context as _, bail};
use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(name = "cargo xtask", about = "portguard's build, test and demo tasks")]
struct Cli {
    #[command(subcommand)]
    task: Task,
}

#[derive(Debug, Subcommand)]
enum Task {
    /// Install what building and testing need: apt packages, the pinned nightly with rust-src,
    /// bpf-linker. Skips what is already there.
    Setup,
    /// Set up, then run every test: unit tests, then the privileged kernel and end-to-end tests
    /// (root).
    Test {
        /// Only the unit tests (no root needed).
        #[arg(long)]
        unit: bool,
    },
    /// Set up, then benchmark the XDP guard against a pass-only program (root).
    Bench {
        /// BPF_PROG_TEST_RUN repeats per measurement.
        #[arg(long, default_value_t = 1_000_000)]
        repeat: u32,
        /// Measurements per case (the spread is printed).
        #[arg(long, default_value_t = 5)]
        runs: u32,
    },
    /// Set up, then show the guard at work in two network namespaces (root).
    Demo,
    /// Build the Debian package (binary, systemd unit, default policy, man page, completions)
    /// into target/debian/.
    Package {
        /// The build of the agent to package: release to ship, dev for tests.
        #[arg(long, value_enum, default_value_t = package::Profile::Release)]
        profile: package::Profile,
        /// Write the .deb into this folder instead of target/debian/.
        #[arg(long)]
        output: Option<PathBuf>,
    },
}

fn main() -> anyhow::Result<()> {
    match Cli::parse().task {
        Task::Setup => setup::run(),
        Task::Test { unit } => test(unit),
        Task::Bench { repeat, runs } => bench(repeat, runs),
        Task::Demo => demo(),
        Task::Package { profile, output } => {
            setup::run()?;
            package::build(profile, output.as_deref(), None).map(|_| ())
        }
    }
}

fn test(unit_only: bool) -> anyhow::Result<()> {
    if !unit_only {
        require_root("the privileged tests")?;
    }
    setup::run()?;

    cargo(&["fmt", "--all", "--", "--check"])
        .context("check formatting (run `cargo fmt --all`)")?;
    cargo(&[
        "clippy",
        "--workspace",
        "--all-targets",
        "--features",
        "portguard-common/craft",
        "--",
        "-D",
        "warnings",
    ])
    .context("run clippy")?;
    cargo(&[
        "test",
        "--workspace",
        "--exclude",
        "portguard-tests",
        "--features",
        "portguard-common/craft",
    ])
    .context("run the unit tests")?;
    if unit_only {
        return Ok(());
    }

    // Privileged tests share kernel state (namespaces, interfaces): one at a time.
    // The agent is built twice, told apart by their build ids, for the upgrade tests: the
    // previous build, then the one under test. Each is copied aside, as later steps may
    // build target/debug/portguard again.
    let upgrade = workspace_root().join("target/upgrade");
    std::fs::create_dir_all(&upgrade).with_context(|| format!("create {}", upgrade.display()))?;
    let mut builds = Vec::new();
    for build_id in ["previous", "current"] {
        cargo_with_env(
            &["build", "-p", "portguard"],
            &[("PORTGUARD_BUILD_ID", std::ffi::OsStr::new(build_id))],
        )
        .with_context(|| format!("build the {build_id} agent for the end-to-end tests"))?;
        let copy = upgrade.join(format!("portguard-{build_id}"));
        std::fs::copy(workspace_root().join("target/debug/portguard"), &copy)
            .with_context(|| format!("copy the {build_id} agent to {}", copy.display()))?;
        builds.push(copy);
    }
    let (previous, agent) = (&builds[0], &builds[1]);
    // The packaging tests install this package into a scratch root: the debug build just
    // made, so that testing the package costs no release build.
    let deb = package::build(
        package::Profile::Dev,
        Some(&workspace_root().join("target/debian-test")),
        Some("current"),
    )
    .context("build the Debian package for the packaging tests")?;
    cargo_with_env(
        // `--tests`: integration tests only, so that the run closes on a real test binary's
        // summary rather than on an empty doc-test one.
        &[
            "test",
            "-p",
            "portguard-tests",
            "--tests",
            "--",
            "--test-threads=1",
        ],
        &[
            ("PORTGUARD_BIN", agent.as_os_str()),
            ("PORTGUARD_PREVIOUS_BIN", previous.as_os_str()),
            ("PORTGUARD_DEB", deb.as_os_str()),
        ],
    )
    .context("run the privileged tests")
}

fn bench(repeat: u32, runs: u32) -> anyhow::Result<()> {
    require_root("benchmarks (BPF_PROG_TEST_RUN)")?;
    setup::run()?;
    let (repeat, runs) = (repeat.to_string(), runs.to_string());
    cargo(&[
        "run",
        "--release",
        "-p",
        "portguard-tests",
        "--bin",
        "bench",
        "--",
        "--repeat",
        &repeat,
        "--runs",
        &runs,
    ])
    .context("run the benchmarks")
}

fn demo() -> anyhow::Result<()> {
    require_root("the demo (network namespaces and XDP)")?;
    setup::run()?;
    cargo(&["build", "--release", "-p", "portguard"]).context("build the agent")?;
    let agent = workspace_root().join("target/release/portguard");
    let status = Command::new(env_cargo())
        .args(["run", "--release", "-p", "portguard-tests", "--bin", "demo"])
        .env("PORTGUARD_BIN", &agent)
        .current_dir(workspace_root())
        .status()
        .context("run the demo")?;
    if !status.success() {
        bail!("the demo failed ({status})");
    }
    Ok(())
}

fn require_root(what: &str) -> anyhow::Result<()> {
    let uid = Command::new("id")
        .arg("-u")
        .output()
        .context("run `id -u`")?;
    if String::from_utf8_lossy(&uid.stdout).trim() != "0" {
        bail!("{what} need root (CAP_BPF, CAP_NET_ADMIN, CAP_SYS_ADMIN): run again with sudo");
    }
    Ok(())
}

/// Runs cargo in the workspace root and fails on a non-zero exit.
fn cargo(args: &[&str]) -> anyhow::Result<()> {
    cargo_with_env(args, &[])
}

fn cargo_with_env(args: &[&str], env: &[(&str, &std::ffi::OsStr)]) -> anyhow::Result<()> {
    eprintln!("xtask: cargo {}", args.join(" "));
    let status = Command::new(env_cargo())
        .args(args)
        .envs(env.iter().copied())
        .current_dir(workspace_root())
        .status()
        .with_context(|| format!("run cargo {}", args.join(" ")))?;
    if !status.success() {
        bail!("cargo {} failed ({status})", args.join(" "));
    }
    Ok(())
}

fn env_cargo() -> String {
    std::env::var("CARGO").unwrap_or_else(|_| "cargo".into())
}

pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives in the workspace")
        .to_owned()
}
