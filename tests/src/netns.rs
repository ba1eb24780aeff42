//! Network namespaces: created with `ip netns add`, deleted on drop, and entered one thread
//! at a time with `setns`.

use std::{
    fs::File,
    process::{Command, Output},
    thread,
};

use anyhow::{Context as _, bail};
use nix::sched::{CloneFlags, setns};

/// A named network namespace (`/run/netns/NAME`), deleted when dropped. Its `lo` is up.
#[derive(Debug)]
pub struct Netns {
    name: String,
}

impl Netns {
    /// Creates the namespace and brings its loopback up.
    pub fn new(name: impl Into<String>) -> anyhow::Result<Self> {
        let name = name.into();
        // Names carry the test's pid: one already there was left by a crashed run of a test
        // that had the same pid, and is ours to replace.
        if std::path::Path::new("/run/netns").join(&name).exists() {
            ip(&["netns", "del", &name])?;
        }
        ip(&["netns", "add", &name])?;

        // From here on the guard owns the namespace, so a failure below still removes it.
        let netns = Self { name };
        netns.ip(&["link", "set", "lo", "up"])?;
        Ok(netns)
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// Runs `ip -n NAME ARGS...` and returns its stdout.
    pub fn ip(&self, args: &[&str]) -> anyhow::Result<String> {
        let mut full = vec!["-n", &self.name];
        full.extend_from_slice(args);
        ip(&full)
    }

    /// Runs a program inside the namespace (`ip netns exec`) and returns its output, whatever
    /// its exit status.
    pub fn exec(&self, program: &str, args: &[&str]) -> anyhow::Result<Output> {
        Command::new("ip")
            .args(["netns", "exec", &self.name, program])
            .args(args)
            .output()
            .with_context(|| format!("run {program} in network namespace {}", self.name))
    }

    /// Runs `f` on a fresh thread inside this namespace; see [`in_netns`].
    pub fn run<T: Send>(&self, f: impl FnOnce() -> T + Send) -> anyhow::Result<T> {
        in_netns(&self.name, f)
    }

    /// The index of an interface of this namespace.
    pub fn ifindex(&self, interface: &str) -> anyhow::Result<u32> {
        let out = self.ip(&["-o", "link", "show", "dev", interface])?;
        let index = out.split(':').next().unwrap_or_default().trim();
        index
            .parse()
            .with_context(|| format!("read the index of {interface} from {out:?}"))
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        if let Err(error) = ip(&["netns", "del", &self.name]) {
            eprintln!("warning: delete network namespace {}: {error:#}", self.name);
        }
    }
}

/// Runs `f` on a fresh thread that has entered the network namespace `/run/netns/NAME`, and
/// returns its result. Sockets created there stay in that namespace wherever they are used
/// afterwards. A panic in `f` is passed on to the caller.
pub fn in_netns<T: Send>(name: &str, f: impl FnOnce() -> T + Send) -> anyhow::Result<T> {
    let path = format!("/run/netns/{name}");
    let handle = File::open(&path).with_context(|| format!("open {path}"))?;

    thread::scope(|scope| {
        let worker = scope.spawn(move || -> anyhow::Result<T> {
            setns(&handle, CloneFlags::CLONE_NEWNET)
                .with_context(|| format!("enter network namespace {name}"))?;
            Ok(f())
        });
        match worker.join() {
            Ok(result) => result,
            Err(panic) => std::panic::resume_unwind(panic),
        }
    })
}

/// Runs `ip ARGS...`, failing with its stderr when it fails.
pub fn ip(args: &[&str]) -> anyhow::Result<String> {
    let output = Command::new("ip")
        .args(args)
        .output()
        .context("run `ip` (install iproute2: `cargo xtask setup`)")?;
    if !output.status.success() {
        bail!(
            "ip {} failed ({}): {}",
            args.join(" "),
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}
