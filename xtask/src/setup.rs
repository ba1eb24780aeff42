//! `cargo xtask setup`: installs the toolchain pieces TOOLCHAIN.md lists, skipping what is
//! already present, and checks that the nightly's LLVM matches bpf-linker's.

use std::process::{Command, Stdio};

use anyhow::{Context as _, bail};

/// The nightly that builds the kernel programs; its LLVM (22) must match bpf-linker's.
pub const EBPF_TOOLCHAIN: &str = "nightly-2026-05-19";
const EBPF_LLVM_MAJOR: &str = "22";
const BPF_LINKER_VERSION: &str = "0.13.0";
const LLVM_PREFIX: &str = "/usr/lib/llvm-22";
/// cargo-deb, which builds the Debian package (`cargo xtask package`, and the package that the
/// packaging tests install).
const CARGO_DEB_VERSION: &str = "3.8.0";
/// Debian packages: LLVM 22 for bpf-linker (also at run time), iproute2 for namespaces and
/// veths in tests and the demo, bpftool to inspect what is attached; for the packaging tests,
/// systemd (`systemd-analyze verify` on the unit), man-db (which that verify asks for the
/// unit's man page) and dpkg (the package installed into a scratch root).
const APT_PACKAGES: &[&str] = &[
    "llvm-22-dev",
    "iproute2",
    "bpftool",
    "systemd",
    "man-db",
    "dpkg",
];

pub fn run() -> anyhow::Result<()> {
    apt_packages()?;
    ebpf_toolchain()?;
    bpf_linker()?;
    oidc_provider()?;
    cargo_deb()?;
    eprintln!("xtask: setup complete");
    Ok(())
}

fn apt_packages() -> anyhow::Result<()> {
    let missing: Vec<&str> = APT_PACKAGES
        .iter()
        .copied()
        .filter(|p| !dpkg_installed(p))
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    eprintln!("xtask: installing {}", missing.join(" "));
    execute(Command::new("apt-get").arg("update").arg("-q"))?;
    execute(
        Command::new("apt-get")
            .args(["install", "-y", "-q", "--no-install-recommends"])
            .args(&missing)
            .env("DEBIAN_FRONTEND", "noninteractive"),
    )
    .context("install Debian packages (needs root)")
}

fn dpkg_installed(package: &str) -> bool {
    Command::new("dpkg-query")
        .args(["-W", "-f=${Status}", package])
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains("install ok installed"))
}

fn ebpf_toolchain() -> anyhow::Result<()> {
    let has_src = Command::new("rustup")
        .args([
            "component",
            "list",
            "--installed",
            "--toolchain",
            EBPF_TOOLCHAIN,
        ])
        .output()
        .is_ok_and(|o| {
            o.status.success() && String::from_utf8_lossy(&o.stdout).contains("rust-src")
        });
    if !has_src {
        eprintln!("xtask: installing {EBPF_TOOLCHAIN} with rust-src");
        execute(Command::new("rustup").args([
            "toolchain",
            "install",
            EBPF_TOOLCHAIN,
            "--profile",
            "minimal",
            "--component",
            "rust-src",
        ]))?;
    }

    let version = Command::new("rustup")
        .args(["run", EBPF_TOOLCHAIN, "rustc", "-vV"])
        .output()
        .context("ask the eBPF toolchain for its version")?;
    let version = String::from_utf8_lossy(&version.stdout);
    let llvm = version
        .lines()
        .find_map(|l| l.strip_prefix("LLVM version: "))
        .unwrap_or("unknown");
    if !llvm.starts_with(&format!("{EBPF_LLVM_MAJOR}.")) {
        bail!(
            "{EBPF_TOOLCHAIN} reports LLVM {llvm}, but bpf-linker {BPF_LINKER_VERSION} is built \
             against LLVM {EBPF_LLVM_MAJOR}: pin a nightly with LLVM {EBPF_LLVM_MAJOR}"
        );
    }
    Ok(())
}

fn bpf_linker() -> anyhow::Result<()> {
    let present = Command::new("bpf-linker")
        .arg("--version")
        .stdout(Stdio::piped())
        .output()
        .is_ok_and(|o| {
            o.status.success() && String::from_utf8_lossy(&o.stdout).contains(BPF_LINKER_VERSION)
        });
    if present {
        return Ok(());
    }
    eprintln!("xtask: installing bpf-linker {BPF_LINKER_VERSION} (about a minute)");
    execute(
        Command::new("cargo")
            .args([
                "install",
                &format!("bpf-linker@{BPF_LINKER_VERSION}"),
                "--locked",
            ])
            .args(["--no-default-features", "--features", "llvm-22"])
            .env("LLVM_PREFIX", LLVM_PREFIX),
    )
    .context("install bpf-linker")
}

/// The OpenID provider the end-to-end tests and the demo get tokens from (node-oidc-provider,
/// pinned by tests/oidc/package-lock.json).
fn oidc_provider() -> anyhow::Result<()> {
    let dir = crate::workspace_root().join("tests/oidc");
    if dir.join("node_modules/oidc-provider/package.json").exists() {
        return Ok(());
    }
    if Command::new("npm").arg("--version").output().is_err() {
        eprintln!("xtask: installing Node.js and npm");
        execute(
            Command::new("apt-get")
                .args([
                    "install",
                    "-y",
                    "-q",
                    "--no-install-recommends",
                    "nodejs",
                    "npm",
                ])
                .env("DEBIAN_FRONTEND", "noninteractive"),
        )
        .context("install Node.js (needs root)")?;
    }
    eprintln!("xtask: installing the test OpenID provider (npm ci in tests/oidc)");
    execute(
        Command::new("npm")
            .args(["ci", "--no-audit", "--no-fund"])
            .current_dir(&dir),
    )
    .context("install tests/oidc's npm packages")
}

/// cargo-deb at the pinned version; another version installed is replaced.
fn cargo_deb() -> anyhow::Result<()> {
    let present = Command::new("cargo")
        .args(["deb", "--version"])
        .output()
        .is_ok_and(|o| {
            // "cargo-deb 3.8.0"
            o.status.success()
                && String::from_utf8_lossy(&o.stdout)
                    .split_whitespace()
                    .any(|word| word == CARGO_DEB_VERSION)
        });
    if present {
        return Ok(());
    }
    eprintln!("xtask: installing cargo-deb {CARGO_DEB_VERSION} (about a minute)");
    execute(Command::new("cargo").args([
        "install",
        "--locked",
        "--force",
        &format!("cargo-deb@{CARGO_DEB_VERSION}"),
    ]))
    .context("install cargo-deb")
}

fn execute(command: &mut Command) -> anyhow::Result<()> {
    let status = command
        .status()
        .with_context(|| format!("run {command:?}"))?;
    if !status.success() {
        bail!("{command:?} failed ({status})");
    }
    Ok(())
}
