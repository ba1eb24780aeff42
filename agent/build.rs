//! Builds the kernel programs (crate `portguard-ebpf`) with the pinned nightly and bpf-linker,
//! for the agent to embed. `AYA_BUILD_SKIP=1` skips it (unit tests without a nightly).

use anyhow::{Context as _, anyhow};

/// The nightly whose LLVM matches bpf-linker's (LLVM 22); see TOOLCHAIN.md.
const EBPF_TOOLCHAIN: &str = "nightly-2026-05-19";

fn main() -> anyhow::Result<()> {
    let ebpf_dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .ok_or_else(|| anyhow!("agent crate has no parent directory"))?
        .join("ebpf");
    let root_dir = ebpf_dir
        .to_str()
        .context("non-UTF-8 path to the ebpf crate")?;
    // The kernel programs compile the shared parser and verdict too: rebuild when they change
    // (aya-build only watches the eBPF crate itself).
    let common = ebpf_dir.with_file_name("common");
    println!("cargo:rerun-if-changed={}", common.join("src").display());
    println!(
        "cargo:rerun-if-changed={}",
        common.join("Cargo.toml").display()
    );
    // Which build this is, for `--version` and the `agent.started` event: packagers (and the
    // upgrade test's second build) set PORTGUARD_BUILD_ID.
    println!("cargo:rerun-if-env-changed=PORTGUARD_BUILD_ID");
    let build = std::env::var("PORTGUARD_BUILD_ID").unwrap_or_else(|_| "unspecified".into());
    println!("cargo:rustc-env=PORTGUARD_BUILD={build}");
    println!(
        "cargo:rustc-env=PORTGUARD_VERSION={} (build {build})",
        std::env::var("CARGO_PKG_VERSION")?
    );
    let out_dir = std::env::var("OUT_DIR")?;
    let object = std::path::Path::new(&out_dir).join("portguard-bpf");

    // An empty object keeps the agent compiling when the eBPF build is skipped; loading it
    // then fails with a message that says so.
    if std::env::var_os("AYA_BUILD_SKIP").is_some_and(|v| v == "1" || v == "true") {
        std::fs::write(&object, [])?;
    }
    aya_build::build_ebpf(
        [aya_build::Package {
            name: "portguard-ebpf",
            root_dir,
            ..Default::default()
        }],
        aya_build::Toolchain::Custom(EBPF_TOOLCHAIN),
    )
    .context("build the eBPF programs (run `cargo xtask setup` first)")
}
