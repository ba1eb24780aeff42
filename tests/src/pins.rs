//! A bpffs of a test's own, mounted in the test's folder, for the agent's pins: agents of
//! different tests never share pins, and whatever a test leaves pinned goes when the mount
//! does.

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context as _, bail};

/// Whether `path` is on a bpffs (the agent's own check).
pub use portguard::loader::pins::is_bpffs;

/// A bpffs mounted at a folder; lazily unmounted on drop, which releases every pin in it
/// (programs and links with no other holder are then detached by the kernel).
pub struct PinMount {
    path: PathBuf,
}

impl PinMount {
    /// Mounts a fresh bpffs at `path` (created if missing).
    pub fn new(path: &Path) -> anyhow::Result<Self> {
        std::fs::create_dir_all(path).with_context(|| format!("create {}", path.display()))?;
        if !is_bpffs(path) {
            let status = Command::new("mount")
                .args(["-t", "bpf", "bpf"])
                .arg(path)
                .status()
                .context("run mount")?;
            if !status.success() {
                bail!("mount -t bpf bpf {} failed ({status})", path.display());
            }
        }
        Ok(Self {
            path: path.to_owned(),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for PinMount {
    fn drop(&mut self) {
        match Command::new("umount").arg("-l").arg(&self.path).status() {
            Ok(status) if status.success() => {}
            Ok(status) => eprintln!("warning: umount {} ({status})", self.path.display()),
            Err(error) => eprintln!("warning: umount {}: {error}", self.path.display()),
        }
    }
}
