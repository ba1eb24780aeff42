//! A full disk under the state folder: the agent reports that it cannot write its ledger,
//! the grant holds in the kernel all the same (also after the agent is killed), and the
//! report clears once the ledger can be written again.

use std::{
    fs::File,
    io::Write as _,
    path::{Path, PathBuf},
    process::Command,
    time::Duration,
};

use anyhow::{Context as _, bail};
use portguard_tests::{
    agent::state_dir,
    gated::{Gate, GatedHost},
    lab::Family,
    oidc::{ProviderOptions, Signer},
    probe::{ANSWER_WAIT, Probe, tcp_probe},
};

const GATE: Gate = Gate {
    name: "postgres",
    port: 5432,
    scope: "db:connect",
    max_ttl: "2m",
    on_expiry: "keep",
};

/// A tiny tmpfs mounted over a folder and filled to the last byte; lazily unmounted on drop.
struct FullDisk {
    path: PathBuf,
}

impl FullDisk {
    fn over(path: &Path) -> anyhow::Result<Self> {
        std::fs::create_dir_all(path)?;
        let status = Command::new("mount")
            .args(["-t", "tmpfs", "-o", "size=64k", "portguard-test-full"])
            .arg(path)
            .status()
            .context("run mount")?;
        if !status.success() {
            bail!("mount a tmpfs at {} ({status})", path.display());
        }
        let disk = Self {
            path: path.to_owned(),
        };
        let mut filler = File::create(path.join("filler"))?;
        let block = [0u8; 4096];
        while filler.write_all(&block).is_ok() {}
        Ok(disk)
    }
}

impl Drop for FullDisk {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.path).status();
    }
}

#[test]
fn a_full_disk_is_reported_and_the_grant_holds_in_the_kernel() -> anyhow::Result<()> {
    let mut host = GatedHost::start("full_disk", &[GATE], &ProviderOptions::default())?;
    let state = state_dir(host.agent.policy(), host.lab.host.name());
    let disk = FullDisk::over(&state)?;
    // The agent's mount namespace (`ip netns exec`) sees mounts made before it starts.
    host.restart_agent()?;

    let token = host.token(Signer::Rs256, "db:connect")?;
    let opened = host.open(Family::V4, &token, &["--port", "5432/tcp"])?;
    let failed = host
        .agent
        .wait_for_event("ledger.write_failed", Duration::from_secs(5))?;
    assert_eq!(
        failed["path"],
        state.join("grants.json").display().to_string()
    );
    assert!(
        failed["error"]
            .as_str()
            .unwrap_or_default()
            .contains("space"),
        "{failed}"
    );
    assert_eq!(
        tcp_probe(&host.lab.client, Family::V4.host(5432), ANSWER_WAIT),
        Probe::Open,
        "the grant {} does not hold\n{}",
        opened.id,
        host.report()
    );

    // The agent dies; the kernel keeps the grant it could not record.
    host.agent.kill()?;
    assert_eq!(
        tcp_probe(&host.lab.client, Family::V4.host(5432), ANSWER_WAIT),
        Probe::Open,
        "the grant ended with the agent"
    );
    drop(disk);
    Ok(())
}

#[test]
fn the_report_clears_once_the_ledger_is_written_again() -> anyhow::Result<()> {
    let mut host = GatedHost::start("disk_recovers", &[GATE], &ProviderOptions::default())?;
    let state = state_dir(host.agent.policy(), host.lab.host.name());
    let disk = FullDisk::over(&state)?;
    // The agent's mount namespace (`ip netns exec`) sees mounts made before it starts.
    host.restart_agent()?;

    let token = host.token(Signer::Rs256, "db:connect")?;
    let opened = host.open(Family::V4, &token, &["--port", "5432/tcp"])?;
    host.agent
        .wait_for_event("ledger.write_failed", Duration::from_secs(5))?;

    // Room again (the agent's mount namespace keeps the mount: free the space inside it).
    std::fs::remove_file(state.join("filler"))?;
    let output = host.grants_cli(&["revoke", &opened.id])?;
    assert!(output.status.success(), "{}", host.report());
    host.agent
        .wait_for_event("ledger.written", Duration::from_secs(5))?;
    assert!(
        state.join("grants.json").is_file(),
        "no ledger in {}",
        state.display()
    );
    drop(disk);
    Ok(())
}
