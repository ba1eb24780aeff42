//! The agent as a child process in a namespace (`ip netns exec NS portguard run`), with its
//! JSON events collected as they arrive, and stopped (SIGTERM, then SIGKILL) on drop.

use std::{
    io::{BufRead as _, BufReader, Read},
    path::{Path, PathBuf},
    process::{Child, Command, ExitStatus, Stdio},
    sync::{Arc, Condvar, Mutex},
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};
use nix::{
    sys::signal::{Signal, kill},
    unistd::Pid,
};
use serde_json::Value;

use crate::netns::Netns;

/// How long a stopping agent may take before it is killed.
const STOP_GRACE: Duration = Duration::from_secs(5);

/// The `portguard` binary to test: `PORTGUARD_BIN`, else the newest of
/// `target/release/portguard` and `target/debug/portguard` in the workspace.
pub fn portguard_bin() -> anyhow::Result<PathBuf> {
    if let Some(path) = std::env::var_os("PORTGUARD_BIN") {
        let path = PathBuf::from(path);
        if !path.is_file() {
            bail!(
                "PORTGUARD_BIN is {}, which is not a file: build the agent with \
                 `cargo build -p portguard`",
                path.display()
            );
        }
        return Ok(path);
    }

    let target = match std::env::var_os("CARGO_TARGET_DIR") {
        Some(dir) => PathBuf::from(dir),
        None => Path::new(env!("CARGO_MANIFEST_DIR")).join("../target"),
    };
    let newest = ["release", "debug"]
        .iter()
        .map(|profile| target.join(profile).join("portguard"))
        .filter_map(|path| Some((path.metadata().ok()?.modified().ok()?, path)))
        .max_by_key(|(modified, _)| *modified);
    match newest {
        Some((_, path)) => Ok(path),
        None => bail!(
            "cannot find the portguard binary in {}/{{release,debug}} nor in PORTGUARD_BIN: \
             build it first with `cargo build -p portguard`",
            target.display()
        ),
    }
}

/// Events received so far, and a signal for those waiting on new ones.
#[derive(Default)]
struct Received {
    events: Mutex<Vec<Value>>,
    arrived: Condvar,
    /// Lines of stdout that are not JSON, and the whole of stderr.
    other_output: Mutex<String>,
}

/// A running agent. Dropping it stops it.
pub struct Agent {
    child: Child,
    netns: String,
    policy: PathBuf,
    received: Arc<Received>,
    exit: Option<ExitStatus>,
}

/// The state directory an agent for this policy and namespace uses.
pub fn state_dir(policy: &Path, netns: &str) -> PathBuf {
    policy.with_file_name(format!("state-{netns}"))
}

/// The folder beside a policy where the lab mounts a bpffs for its agents' pins.
pub const PIN_MOUNT: &str = "bpffs";

/// The pin folder an agent for this policy and namespace uses: on the lab's bpffs, so that
/// a restarted agent finds what its predecessor pinned, and other tests' agents never do.
pub fn pin_dir(policy: &Path, netns: &str) -> PathBuf {
    policy.with_file_name(PIN_MOUNT).join(netns)
}

/// The control socket an agent for this policy and namespace listens on.
pub fn control_socket(policy: &Path, netns: &str) -> PathBuf {
    policy.with_file_name(format!("control-{netns}.sock"))
}

impl Agent {
    /// Starts `portguard run --policy POLICY` inside `netns`.
    pub fn start(netns: &Netns, policy: &Path) -> anyhow::Result<Self> {
        Self::start_binary(&portguard_bin()?, netns, policy, &[])
    }

    /// Starts `BINARY run --policy POLICY ARGS...` inside `netns`: another build of the agent
    /// (an upgrade), or extra flags.
    pub fn start_binary(
        binary: &Path,
        netns: &Netns,
        policy: &Path,
        args: &[&str],
    ) -> anyhow::Result<Self> {
        let pin_root = policy.with_file_name(PIN_MOUNT);
        if !crate::pins::is_bpffs(&pin_root) {
            bail!(
                "{} is not a bpffs: start agents through a Lab, which mounts one",
                pin_root.display()
            );
        }
        let mut child = Command::new("ip")
            .args(["netns", "exec", netns.name()])
            .arg(binary)
            .arg("run")
            .arg("--policy")
            .arg(policy)
            .args(args)
            .env(
                "PORTGUARD_LOG",
                std::env::var("PORTGUARD_LOG").unwrap_or_else(|_| "info".into()),
            )
            // Each agent keeps its ledger and control socket beside its policy, so that
            // agents of different tests never share them.
            .env("PORTGUARD_STATE_DIR", state_dir(policy, netns.name()))
            .env(
                "PORTGUARD_CONTROL_SOCKET",
                control_socket(policy, netns.name()),
            )
            .env("PORTGUARD_PIN_DIR", pin_dir(policy, netns.name()))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .with_context(|| format!("start {} in {}", binary.display(), netns.name()))?;

        let received = Arc::new(Received::default());
        let stdout = child.stdout.take().context("take the agent's stdout")?;
        let stderr = child.stderr.take().context("take the agent's stderr")?;
        let for_stdout = received.clone();
        thread::spawn(move || read_events(stdout, &for_stdout));
        let for_stderr = received.clone();
        thread::spawn(move || read_stderr(stderr, &for_stderr));

        Ok(Self {
            child,
            netns: netns.name().to_owned(),
            policy: policy.to_owned(),
            received,
            exit: None,
        })
    }

    /// The process id (`ip netns exec` execs the agent, so this is the agent itself).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn policy(&self) -> &Path {
        &self.policy
    }

    /// Every event received so far, in order.
    pub fn events(&self) -> Vec<Value> {
        self.received.events.lock().expect("events lock").clone()
    }

    /// The events named `name` received so far.
    pub fn events_named(&self, name: &str) -> Vec<Value> {
        self.events()
            .into_iter()
            .filter(|event| event["event"] == name)
            .collect()
    }

    /// The agent's stderr so far, and any stdout line that was not JSON.
    pub fn other_output(&self) -> String {
        self.received
            .other_output
            .lock()
            .expect("output lock")
            .clone()
    }

    /// Waits for the first event named `name`.
    pub fn wait_for_event(&mut self, name: &str, timeout: Duration) -> anyhow::Result<Value> {
        self.wait_for(&format!("a {name} event"), timeout, |event| {
            event["event"] == name
        })
    }

    /// Waits for the first event that `matches`; `what` describes it in the error.
    pub fn wait_for(
        &mut self,
        what: &str,
        timeout: Duration,
        matches: impl Fn(&Value) -> bool,
    ) -> anyhow::Result<Value> {
        let deadline = Instant::now() + timeout;
        let received = self.received.clone();
        let mut events = received.events.lock().expect("events lock");
        let mut exited = self.exit.is_some();
        loop {
            if let Some(event) = events.iter().find(|event| matches(event)) {
                return Ok(event.clone());
            }
            let now = Instant::now();
            if exited || now >= deadline {
                break;
            }
            // Short waits, so that an agent that exits is noticed without a last event.
            let wait = (deadline - now).min(Duration::from_millis(100));
            events = received
                .arrived
                .wait_timeout(events, wait)
                .expect("events lock")
                .0;
            if !self.is_running() {
                // Let the readers drain the pipes before the last look.
                drop(events);
                thread::sleep(Duration::from_millis(100));
                exited = true;
                events = received.events.lock().expect("events lock");
            }
        }
        drop(events);
        bail!("no {what} within {timeout:?}\n{}", self.report())
    }

    /// Whether the agent is still running.
    pub fn is_running(&mut self) -> bool {
        if self.exit.is_none() {
            self.exit = self.child.try_wait().ok().flatten();
        }
        self.exit.is_none()
    }

    /// Waits for the agent to exit by itself.
    pub fn wait_exit(&mut self, timeout: Duration) -> anyhow::Result<ExitStatus> {
        let deadline = Instant::now() + timeout;
        while self.is_running() {
            if Instant::now() >= deadline {
                bail!(
                    "the agent did not exit within {timeout:?}\n{}",
                    self.report()
                );
            }
            thread::sleep(Duration::from_millis(20));
        }
        // The readers finish once the pipes close.
        thread::sleep(Duration::from_millis(100));
        Ok(self.exit.expect("the agent has exited"))
    }

    /// Sends SIGTERM and waits for the agent to exit; kills it if it takes too long.
    pub fn stop(&mut self) -> anyhow::Result<ExitStatus> {
        if !self.is_running() {
            return Ok(self.exit.expect("the agent has exited"));
        }
        self.signal(Signal::SIGTERM)?;
        match self.wait_exit(STOP_GRACE) {
            Ok(status) => Ok(status),
            Err(error) => {
                let _ = self.signal(Signal::SIGKILL);
                let _ = self.child.wait();
                Err(error.context("the agent ignored SIGTERM and was killed"))
            }
        }
    }

    /// Kills the agent with SIGKILL (a crash: nothing of its own runs on the way out) and
    /// reaps it.
    pub fn kill(&mut self) -> anyhow::Result<ExitStatus> {
        if self.is_running() {
            self.signal(Signal::SIGKILL)?;
        }
        self.wait_exit(STOP_GRACE)
    }

    /// Sends `signal` to the agent (SIGHUP for a reload, SIGSTOP to freeze it, ...).
    pub fn signal(&self, signal: Signal) -> anyhow::Result<()> {
        let pid = Pid::from_raw(i32::try_from(self.child.id()).context("agent pid")?);
        kill(pid, signal).with_context(|| format!("send {signal} to the agent ({pid})"))
    }

    /// What the agent said, for error messages.
    pub fn report(&self) -> String {
        let events: Vec<String> = self.events().iter().map(Value::to_string).collect();
        let status = match self.exit {
            Some(status) => format!("exited ({status})"),
            None => "running".to_owned(),
        };
        format!(
            "agent in {} ({status}), {} events:\n  {}\nagent stderr:\n{}",
            self.netns,
            events.len(),
            events.join("\n  "),
            self.other_output()
        )
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        if !self.is_running() {
            return;
        }
        if let Err(error) = self.stop() {
            eprintln!("warning: stop the agent: {error:#}");
        }
    }
}

fn read_events(stdout: impl Read, received: &Received) {
    for line in BufReader::new(stdout).lines() {
        let Ok(line) = line else { break };
        match serde_json::from_str::<Value>(&line) {
            Ok(event) => {
                received.events.lock().expect("events lock").push(event);
                received.arrived.notify_all();
            }
            Err(_) => {
                let mut other = received.other_output.lock().expect("output lock");
                other.push_str("stdout: ");
                other.push_str(&line);
                other.push('\n');
            }
        }
    }
}

fn read_stderr(stderr: impl Read, received: &Received) {
    for line in BufReader::new(stderr).lines() {
        let Ok(line) = line else { break };
        let mut other = received.other_output.lock().expect("output lock");
        other.push_str(&line);
        other.push('\n');
    }
}
