//! A continuous prober: from the client namespace, on a thread of its own, it sends a new TCP
//! connect to every target in turn until stopped, and records for each attempt when its SYN
//! left and whether the SYN passed the guard. Tests then ask the report whether a port ever
//! let a SYN through, or ever dropped one, over the whole run or a part of it (while the
//! agent was dead, after a grant's expiry...).
//!
//! A SYN passed when the host answered: a SYN-ACK (something listens) or a RST (nothing
//! does) both mean the guard let it in. A SYN dropped is never answered, so an attempt that
//! gets no answer within [`ATTEMPT_TIMEOUT`] counts as dropped. On a veth the host answers
//! within a millisecond; the report keeps the slowest answer of each target, to show how far
//! that is from the timeout.
//!
//! What keeps the prober from false alarms:
//! - every attempt is a new socket with a new source port, so an answer always belongs to
//!   its own SYN, never to an earlier attempt's;
//! - an attempt gives up long before the first SYN retransmission (1 s, the initial RTO):
//!   each attempt sends exactly one SYN, sent at the recorded time;
//! - sockets close with `SO_LINGER` 0: an answered attempt ends with a RST, so neither side
//!   keeps a connection or a TIME_WAIT that a later attempt could run into, and an attempt
//!   that times out is closed in SYN_SENT, which sends nothing;
//! - the timeout is measured by the runtime's timer, which looks at the socket before the
//!   deadline: an answer that came while the prober's thread waited for a CPU still counts.
//!
//! Resolution: each target gets one attempt every [`CYCLE`] (the targets' attempts are
//! spread evenly over the cycle), so any window of the guard longer than a cycle and a bit of
//! scheduling jitter (say 100 ms) is seen on every target, and a window of a few
//! milliseconds is most likely seen by none. Keep the targets to a few dozen: each one
//! dropped keeps [`ATTEMPT_TIMEOUT`] / [`CYCLE`] attempts in flight.
//!
//! Times are `CLOCK_BOOTTIME`, the clock the kernel checks grant expiries against.

use std::{
    fmt,
    fs::File,
    net::{IpAddr, SocketAddr},
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
        mpsc,
    },
    thread::{self, JoinHandle},
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use anyhow::Context as _;
use nix::{
    sched::{CloneFlags, setns},
    time::{ClockId, clock_gettime},
};
use socket2::{Domain, Protocol, SockAddr, Socket, Type};
use tokio::{task::JoinSet, time::MissedTickBehavior};

use crate::{lab::Family, netns::Netns};

/// How often each target is probed.
pub const CYCLE: Duration = Duration::from_millis(50);
/// How long an attempt waits for the host's answer before it calls the SYN dropped: far
/// above a veth's round trip, far below the first SYN retransmission.
pub const ATTEMPT_TIMEOUT: Duration = Duration::from_millis(300);

/// A point in time on `CLOCK_BOOTTIME`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct BootTime(Duration);

impl BootTime {
    pub fn now() -> Self {
        let now = clock_gettime(ClockId::CLOCK_BOOTTIME).expect("CLOCK_BOOTTIME is readable");
        Self(Duration::new(now.tv_sec() as u64, now.tv_nsec() as u32))
    }

    /// The boot time at which the wall clock reads `unix_ms` (milliseconds since the epoch),
    /// as the agent converts a grant's expiry for the kernel.
    pub fn from_unix_ms(unix_ms: u64) -> Self {
        let (boot, wall) = (Self::now(), SystemTime::now());
        let wall_ms = wall
            .duration_since(UNIX_EPOCH)
            .expect("the clock is after 1970")
            .as_millis() as u64;
        if unix_ms >= wall_ms {
            boot + Duration::from_millis(unix_ms - wall_ms)
        } else {
            boot - Duration::from_millis(wall_ms - unix_ms)
        }
    }

    /// How long after `earlier` this is (zero if it is not later).
    pub fn since(self, earlier: BootTime) -> Duration {
        self.0.saturating_sub(earlier.0)
    }
}

impl std::ops::Add<Duration> for BootTime {
    type Output = BootTime;

    fn add(self, duration: Duration) -> BootTime {
        BootTime(self.0 + duration)
    }
}

impl std::ops::Sub<Duration> for BootTime {
    type Output = BootTime;

    fn sub(self, duration: Duration) -> BootTime {
        BootTime(self.0.saturating_sub(duration))
    }
}

/// Where an attempt goes: a host address and port, from the client's first address of the
/// family or from another of its addresses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Target {
    pub to: SocketAddr,
    pub from: Option<IpAddr>,
}

impl Target {
    /// The host's `port` over both families, from the client's first addresses.
    pub fn both(ports: &[u16]) -> Vec<Target> {
        ports
            .iter()
            .flat_map(|port| Family::BOTH.map(|family| Target::to(family, *port)))
            .collect()
    }

    /// As [`Target::both`], from the client's second addresses.
    pub fn both_from_other(ports: &[u16]) -> Vec<Target> {
        ports
            .iter()
            .flat_map(|port| {
                Family::BOTH.map(|family| Target {
                    from: Some(family.client_other()),
                    ..Target::to(family, *port)
                })
            })
            .collect()
    }

    /// The host's `port` over `family`, from the client's first address.
    pub fn to(family: Family, port: u16) -> Target {
        Target {
            to: family.host(port),
            from: None,
        }
    }
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/tcp", self.to)?;
        if let Some(from) = self.from {
            write!(f, " from {from}")?;
        }
        Ok(())
    }
}

/// What became of one attempt's SYN.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Answered with a SYN-ACK: the SYN passed, and a listener took it.
    Open,
    /// Answered with a RST: the SYN passed, and nothing listens.
    Refused,
    /// No answer within [`ATTEMPT_TIMEOUT`]: the SYN was dropped.
    Dropped,
    /// No SYN could be sent (no route, no address...): the error.
    Failed(String),
}

impl Outcome {
    /// Whether the SYN reached the host's stack.
    pub fn passed(&self) -> bool {
        matches!(self, Self::Open | Self::Refused)
    }

    fn kind(&self) -> &'static str {
        match self {
            Self::Open | Self::Refused => "passed",
            Self::Dropped => "dropped",
            Self::Failed(_) => "failed",
        }
    }
}

/// One attempt: when its SYN left, what became of it, and how long the answer took.
#[derive(Clone, Debug)]
pub struct Attempt {
    pub sent: BootTime,
    pub outcome: Outcome,
    pub took: Duration,
}

/// Moments the test names while the prober runs ("agent killed"), shown in failure messages.
type Marks = Arc<Mutex<Vec<(BootTime, String)>>>;

/// A prober at work. Dropping it stops it; [`Prober::stop`] also returns what it saw.
pub struct Prober {
    targets: Vec<Target>,
    started: BootTime,
    marks: Marks,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<anyhow::Result<Vec<Vec<Attempt>>>>>,
}

impl Prober {
    /// Starts probing `targets` from inside `netns` (the client's namespace).
    pub fn start(netns: &Netns, targets: &[Target]) -> anyhow::Result<Self> {
        anyhow::ensure!(!targets.is_empty(), "nothing to probe");
        let path = format!("/run/netns/{}", netns.name());
        let namespace = File::open(&path).with_context(|| format!("open {path}"))?;

        let stop = Arc::new(AtomicBool::new(false));
        let (flag, list) = (stop.clone(), targets.to_vec());
        let name = netns.name().to_owned();
        let (ready, started) = mpsc::channel();
        let thread = thread::Builder::new()
            .name("prober".into())
            .spawn(move || -> anyhow::Result<Vec<Vec<Attempt>>> {
                // Sockets belong to the namespace of the thread that creates them: all of
                // them are created on this thread, where the runtime runs every task.
                let runtime = setns(&namespace, CloneFlags::CLONE_NEWNET)
                    .with_context(|| format!("enter network namespace {name}"))
                    .and_then(|()| {
                        tokio::runtime::Builder::new_current_thread()
                            .enable_io()
                            .enable_time()
                            .build()
                            .context("start the prober's runtime")
                    });
                let runtime = match runtime {
                    Ok(runtime) => runtime,
                    Err(error) => {
                        let _ = ready.send(Err(format!("{error:#}")));
                        return Err(error);
                    }
                };
                let _ = ready.send(Ok(()));
                Ok(runtime.block_on(probe_until_stopped(&list, &flag)))
            })
            .context("start the prober's thread")?;
        match started.recv() {
            Ok(Ok(())) => {}
            Ok(Err(error)) => anyhow::bail!("start the prober: {error}"),
            Err(_) => anyhow::bail!("the prober's thread ended before it started probing"),
        }

        Ok(Self {
            targets: targets.to_vec(),
            started: BootTime::now(),
            marks: Marks::default(),
            stop,
            thread: Some(thread),
        })
    }

    /// Names this moment in the report, and returns it.
    pub fn mark(&self, label: &str) -> BootTime {
        let now = BootTime::now();
        self.mark_at(now, label);
        now
    }

    /// Names a moment in the report, past or to come (a grant's expiry).
    pub fn mark_at(&self, time: BootTime, label: &str) {
        let mut marks = self.marks.lock().expect("marks lock");
        marks.push((time, label.to_owned()));
        marks.sort_by_key(|(time, _)| *time);
    }

    /// Stops probing, waits for the attempts in flight, and returns what the prober saw.
    pub fn stop(mut self) -> anyhow::Result<Report> {
        let stopped = BootTime::now();
        self.stop.store(true, Ordering::Relaxed);
        let thread = self.thread.take().expect("the prober runs until stopped");
        let attempts = match thread.join() {
            Ok(attempts) => attempts?,
            Err(panic) => std::panic::resume_unwind(panic),
        };
        let marks = self.marks.lock().expect("marks lock").clone();
        Ok(Report {
            targets: self.targets.clone(),
            attempts,
            marks,
            started: self.started,
            window: (self.started, stopped),
        })
    }
}

impl Drop for Prober {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Sends one attempt to each target per cycle, spread over the cycle, until `stop`; then
/// waits for the attempts in flight. Returns the attempts by target, in the order sent.
async fn probe_until_stopped(targets: &[Target], stop: &AtomicBool) -> Vec<Vec<Attempt>> {
    let mut attempts = vec![Vec::new(); targets.len()];
    let mut in_flight = JoinSet::new();
    let mut ticks = tokio::time::interval(CYCLE / targets.len() as u32);
    ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut next = 0;

    while !stop.load(Ordering::Relaxed) {
        tokio::select! {
            _ = ticks.tick() => {
                let target = targets[next];
                in_flight.spawn(async move { (next, attempt(target).await) });
                next = (next + 1) % targets.len();
            }
            Some(Ok((index, done))) = in_flight.join_next() => attempts[index].push(done),
        }
    }
    while let Some(done) = in_flight.join_next().await {
        if let Ok((index, done)) = done {
            attempts[index].push(done);
        }
    }
    for list in &mut attempts {
        list.sort_by_key(|attempt| attempt.sent);
    }
    attempts
}

/// One connect to `target`, on a fresh socket closed with a RST if it connected.
async fn attempt(target: Target) -> Attempt {
    let sent = BootTime::now();
    let outcome = match connect(target).await {
        Ok(outcome) => outcome,
        Err(error) => Outcome::Failed(error.to_string()),
    };
    Attempt {
        sent,
        outcome,
        took: BootTime::now().since(sent),
    }
}

async fn connect(target: Target) -> std::io::Result<Outcome> {
    let socket = Socket::new(
        Domain::for_address(target.to),
        Type::STREAM.nonblocking(),
        Some(Protocol::TCP),
    )?;
    // Closing with a RST leaves no TIME_WAIT and no half-open connection on the host.
    socket.set_linger(Some(Duration::ZERO))?;
    if let Some(from) = target.from {
        socket.bind(&SockAddr::from(SocketAddr::new(from, 0)))?;
    }
    let socket = tokio::net::TcpSocket::from_std_stream(socket.into());
    match tokio::time::timeout(ATTEMPT_TIMEOUT, socket.connect(target.to)).await {
        Ok(Ok(_stream)) => Ok(Outcome::Open),
        Ok(Err(error)) if error.kind() == std::io::ErrorKind::ConnectionRefused => {
            Ok(Outcome::Refused)
        }
        Ok(Err(error)) => Err(error),
        Err(_elapsed) => Ok(Outcome::Dropped),
    }
}

/// What the prober saw, over its whole run or a part of it ([`Report::between`]).
#[derive(Clone, Debug)]
pub struct Report {
    targets: Vec<Target>,
    attempts: Vec<Vec<Attempt>>,
    marks: Vec<(BootTime, String)>,
    /// When the prober started: times in messages count from here.
    started: BootTime,
    /// The part of the run this report covers: attempts sent in `[from, to)`.
    window: (BootTime, BootTime),
}

/// A run of consecutive attempts to one target with the same fate.
#[derive(Clone, Debug)]
pub struct Window {
    /// "passed", "dropped" or "failed".
    pub kind: &'static str,
    pub first: BootTime,
    pub last: BootTime,
    pub count: usize,
}

/// How many attempts to one target passed, were dropped, or failed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counts {
    pub passed: usize,
    pub dropped: usize,
    pub failed: usize,
}

impl Report {
    /// The attempts sent in `[from, to)`.
    pub fn between(&self, from: BootTime, to: BootTime) -> Report {
        let (from, to) = (from.max(self.window.0), to.min(self.window.1));
        let attempts = self
            .attempts
            .iter()
            .map(|list| {
                list.iter()
                    .filter(|attempt| attempt.sent >= from && attempt.sent < to)
                    .cloned()
                    .collect()
            })
            .collect();
        Report {
            targets: self.targets.clone(),
            attempts,
            marks: self.marks.clone(),
            started: self.started,
            window: (from, to),
        }
    }

    /// The attempts sent from `from` on.
    pub fn after(&self, from: BootTime) -> Report {
        self.between(from, self.window.1)
    }

    /// The attempts sent before `to`.
    pub fn before(&self, to: BootTime) -> Report {
        self.between(self.window.0, to)
    }

    /// The attempts to `target`, in the order sent.
    pub fn attempts(&self, target: &Target) -> &[Attempt] {
        let index = self
            .targets
            .iter()
            .position(|probed| probed == target)
            .unwrap_or_else(|| panic!("{target} was not probed"));
        &self.attempts[index]
    }

    pub fn counts(&self, target: &Target) -> Counts {
        let mut counts = Counts::default();
        for attempt in self.attempts(target) {
            match attempt.outcome {
                Outcome::Open | Outcome::Refused => counts.passed += 1,
                Outcome::Dropped => counts.dropped += 1,
                Outcome::Failed(_) => counts.failed += 1,
            }
        }
        counts
    }

    /// The runs of attempts to `target` with the same fate, in order.
    pub fn windows(&self, target: &Target) -> Vec<Window> {
        let mut windows: Vec<Window> = Vec::new();
        for attempt in self.attempts(target) {
            let kind = attempt.outcome.kind();
            match windows.last_mut() {
                Some(window) if window.kind == kind => {
                    window.last = attempt.sent;
                    window.count += 1;
                }
                _ => windows.push(Window {
                    kind,
                    first: attempt.sent,
                    last: attempt.sent,
                    count: 1,
                }),
            }
        }
        windows
    }

    /// Fails unless every attempt to each of `targets` was dropped.
    pub fn assert_never_passed(&self, targets: &[Target]) {
        let failures: Vec<String> = targets
            .iter()
            .filter_map(|target| {
                let counts = self.counts(target);
                if counts.passed + counts.dropped + counts.failed == 0 {
                    return Some(format!("{target}: not probed in this window"));
                }
                let passed: Vec<&Attempt> = self
                    .attempts(target)
                    .iter()
                    .filter(|attempt| attempt.outcome.passed())
                    .collect();
                let first = passed.first()?;
                Some(format!(
                    "{target}: {} of {} SYNs passed, the first sent at {} ({:?})",
                    passed.len(),
                    counts.passed + counts.dropped + counts.failed,
                    self.at(first.sent),
                    first.outcome
                ))
            })
            .collect();
        self.fail_if_any(
            "SYNs to ports that must stay shut passed the guard",
            &failures,
        );
    }

    /// Fails unless every attempt to each of `targets` passed.
    pub fn assert_always_passed(&self, targets: &[Target]) {
        let failures: Vec<String> = targets
            .iter()
            .filter_map(|target| {
                let counts = self.counts(target);
                if counts.passed + counts.dropped + counts.failed == 0 {
                    return Some(format!("{target}: not probed in this window"));
                }
                let missed: Vec<&Attempt> = self
                    .attempts(target)
                    .iter()
                    .filter(|attempt| !attempt.outcome.passed())
                    .collect();
                let first = missed.first()?;
                Some(format!(
                    "{target}: {} of {} SYNs got no answer, the first sent at {} ({:?})",
                    missed.len(),
                    counts.passed + counts.dropped + counts.failed,
                    self.at(first.sent),
                    first.outcome
                ))
            })
            .collect();
        self.fail_if_any("SYNs to ports that must stay open were dropped", &failures);
    }

    /// Fails unless each of `targets` saw at least one attempt pass and one dropped: the
    /// guard changed its verdict on them during the window.
    pub fn assert_both_seen(&self, targets: &[Target]) {
        let failures: Vec<String> = targets
            .iter()
            .filter_map(|target| {
                let counts = self.counts(target);
                (counts.passed == 0 || counts.dropped == 0).then(|| format!("{target}: {counts:?}"))
            })
            .collect();
        self.fail_if_any("ports whose verdict never changed", &failures);
    }

    fn fail_if_any(&self, what: &str, failures: &[String]) {
        if !failures.is_empty() {
            panic!(
                "{what} (between {} and {}):\n  {}\n{}",
                self.at(self.window.0),
                self.at(self.window.1),
                failures.join("\n  "),
                self.summary()
            );
        }
    }

    /// `time` as seconds since the prober started, the way messages write it.
    fn at(&self, time: BootTime) -> String {
        if time < self.started {
            format!("-{:.3}s", self.started.since(time).as_secs_f64())
        } else {
            format!("+{:.3}s", time.since(self.started).as_secs_f64())
        }
    }

    /// Every target's counts and windows, and the marks, for failure messages.
    pub fn summary(&self) -> String {
        let mut text = String::from("prober marks:");
        for (time, label) in &self.marks {
            text.push_str(&format!(" {} {label};", self.at(*time)));
        }
        text.push_str("\nprober windows by target:\n");
        for target in &self.targets {
            let counts = self.counts(target);
            let slowest = self
                .attempts(target)
                .iter()
                .filter(|attempt| attempt.outcome.passed())
                .map(|attempt| attempt.took)
                .max()
                .unwrap_or_default();
            text.push_str(&format!(
                "  {target}: {} passed (slowest answer {slowest:?}), {} dropped, {} failed:",
                counts.passed, counts.dropped, counts.failed
            ));
            for window in self.windows(target) {
                text.push_str(&format!(
                    " {} {}..{} ({});",
                    window.kind,
                    self.at(window.first),
                    self.at(window.last),
                    window.count
                ));
            }
            if let Some(Attempt {
                outcome: Outcome::Failed(error),
                ..
            }) = self
                .attempts(target)
                .iter()
                .find(|attempt| matches!(attempt.outcome, Outcome::Failed(_)))
            {
                text.push_str(&format!(" first failure: {error}"));
            }
            text.push('\n');
        }
        text
    }
}
