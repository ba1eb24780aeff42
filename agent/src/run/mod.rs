//! `portguard run`: the daemon. In order: validate the policy; load the kernel programs over
//! the pinned maps and fill them, live grants from the ledger included; attach to the
//! policy's interfaces, adopting the links an earlier agent pinned; fetch the issuers' keys; serve
//! the auth endpoint and the control socket; log what the kernel decides; reload on SIGHUP.
//! On SIGTERM the agent goes and the guard stays: only `portguard uninstall` removes it.

mod reload;

use std::{
    collections::HashMap,
    path::{Path, PathBuf},
    process::ExitCode,
    sync::{Arc, RwLock, atomic::AtomicU64},
    time::{Duration, SystemTime},
};

use anyhow::Context as _;
use portguard_common::{Reason, maps::Counters};
use tokio::{
    signal::unix::{SignalKind, signal},
    task::JoinSet,
};

use self::reload::Running;
use crate::{
    api,
    check::describe,
    compile::{MapEntries, compile},
    control,
    engine::{Engine, SharedEngine},
    events::{Event, EventLog, FlowReader},
    grants::{GrantBook, Restored},
    interfaces,
    interfaces::Interface,
    issuers::Issuers,
    loader::Guard,
    notify::{Notifier, watchdog_interval},
    policy::{Auth, Location, Policy, SessionEnv},
    status::Expected,
    tokens::Validator,
};

/// How often the kernel's count of lost events is checked.
const LOST_EVENTS_INTERVAL: Duration = Duration::from_secs(1);
/// Clock skew tolerated on token times.
const TOKEN_LEEWAY: Duration = Duration::from_secs(60);

/// Where the daemon keeps its state and listens for the CLI.
#[derive(Clone, Debug)]
pub struct RunOptions {
    pub policy: PathBuf,
    pub state_dir: PathBuf,
    pub control_socket: PathBuf,
    /// Where the guard's programs, links and maps are pinned (on a bpffs).
    pub pin_dir: PathBuf,
    /// Apply the policy even if it would shut the operator out (`lockout::refuse_unless_forced`).
    pub force: bool,
}

pub fn run(options: &RunOptions) -> anyhow::Result<ExitCode> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("start the async runtime")?
        .block_on(serve(options))
}

async fn serve(options: &RunOptions) -> anyhow::Result<ExitCode> {
    // First of all, so that a signal during start-up is handled once running, not fatal.
    let mut signals = Signals::install()?;
    let policy_path = options.policy.as_path();
    let stdout_only = EventLog::open(None)?;
    stdout_only.emit(
        Event::new("agent.started")
            .with("version", env!("CARGO_PKG_VERSION"))
            .with("build", env!("PORTGUARD_BUILD"))
            .with("pid", std::process::id())
            .with("policy", policy_path),
    );

    // 1. Validate: nothing touches the kernel until the policy is known good.
    let (policy, wanted) = match validate(policy_path, options.force) {
        Ok(valid) => valid,
        Err(description) => {
            stdout_only.emit(rejected(policy_path, &description));
            eprintln!("{}", description.trim_end());
            return Ok(ExitCode::FAILURE);
        }
    };
    let log = EventLog::open(policy.events.file.as_deref())?;
    let tls = match &policy.auth {
        Some(auth) => Some(
            api::server_config(&auth.tls_cert, &auth.tls_key)
                .context("load the auth endpoint's TLS files")?,
        ),
        None => None,
    };

    // 2-3. The guard in the kernel, this policy in it, on the policy's interfaces.
    let Enforcing {
        mut guard,
        book,
        names,
        generation,
        entries,
    } = enforce(options, &policy, &wanted, &log)?;
    let interface_count = names.read().map(|n| n.len()).unwrap_or(0);

    let ring = guard.take_events()?;
    let engine = SharedEngine::new(Engine {
        kernel: Box::new(guard),
        book,
    });

    // 4. Issuers, the auth endpoint, the control socket, the kernel's events, expiry.
    let mut tasks = JoinSet::new();
    let rules = Arc::new(RwLock::new(entries.rules.clone()));
    let reader = FlowReader::new(ring, log.clone(), rules.clone(), names.clone())
        .context("watch the event ring buffer")?;
    tasks.spawn(async move {
        if let Err(error) = reader.run().await {
            tracing::error!(%error, "reading the kernel's events stopped");
        }
    });
    tasks.spawn(crate::engine::watch_expiry(engine.clone(), log.clone()));
    let issuers = match &policy.auth {
        Some(_) => Some(Issuers::new(&policy.issuers).context("set up the issuers' HTTPS client")?),
        None => None,
    };
    let expected = Arc::new(RwLock::new(Expected {
        policy: policy.path.clone(),
        mode: policy.guard.mode,
        generation,
        issuers: issuers.clone(),
    }));
    let listener = control::bind(&options.control_socket)?;
    let (commands, command_queue) = tokio::sync::mpsc::channel(4);
    let control = control::Control {
        engine: engine.clone(),
        log: log.clone(),
        expected: expected.clone(),
        commands,
    };
    tasks.spawn(control::serve(listener, control));
    let generation_in_force = Arc::new(AtomicU64::new(generation));
    if let Some(address) = policy.events.metrics {
        let (engine, log) = (engine.clone(), log.clone());
        let generation = generation_in_force.clone();
        tasks.spawn(async move {
            log.emit(Event::new("metrics.listening").with("address", address.to_string()));
            if let Err(error) = crate::metrics::serve(address, engine, generation).await {
                tracing::error!(%error, %address, "the metrics listener stopped");
            }
        });
    }
    let gates = api::Gates::new(policy.gates.clone());
    if let (Some(auth), Some(tls), Some(issuers)) = (&policy.auth, tls, issuers) {
        start_auth(&mut tasks, auth, tls, issuers, &gates, &engine, &log).await?;
    }
    // New interfaces under `*`, named ones that come back, and any that go away.
    tasks.spawn(crate::hotplug::watch(
        engine.clone(),
        log.clone(),
        names.clone(),
        policy.guard.interfaces.clone(),
    ));

    log.emit(
        Event::new("agent.ready")
            .with("interfaces", interface_count)
            .with("control_socket", &options.control_socket),
    );
    let notifier = Notifier::from_env();
    notifier.ready(&format!(
        "guarding {interface_count} interface(s), {} endpoint(s), {} gate(s)",
        policy.endpoints.len(),
        policy.gates.len(),
    ));
    let mut running = Running {
        policy,
        generation,
        rules,
        gates,
        expected,
        generation_in_force,
        force: options.force,
        commands: command_queue,
        unconfirmed: None,
    };
    let outcome = wait_for_stop(&engine, &log, &mut running, &notifier, &mut signals).await;
    notifier.stopping("leaving the guard enforcing");

    // 5. Stop: the agent goes, the guard stays pinned and enforcing (grants expire in the
    // kernel on time). Only `portguard uninstall` removes it.
    tasks.abort_all();
    report_stop(&engine, &log, outcome.as_deref().ok(), &options.pin_dir);
    let _ = std::fs::remove_file(&options.control_socket);
    outcome.map(|_| ExitCode::SUCCESS)
}

/// What steps 2 and 3 of a start leave: the guard enforcing the policy, and what the rest of
/// the agent needs of it.
struct Enforcing {
    guard: Guard,
    book: GrantBook,
    names: Arc<RwLock<HashMap<u32, String>>>,
    generation: u64,
    entries: MapEntries,
}

/// Steps 2 and 3 of a start: loads the guard over the pinned maps, writes the policy and the
/// ledger's live grants into them, attaches (or takes over the pinned links), and lets go of
/// what the policy no longer names.
fn enforce(
    options: &RunOptions,
    policy: &Policy,
    wanted: &[Interface],
    log: &EventLog,
) -> anyhow::Result<Enforcing> {
    // 2. Load over the pinned maps, fill them, then attach (or adopt): the programs never
    // run on half a policy. A guard left by an earlier agent keeps enforcing its policy
    // until the new one is in the maps.
    let mut guard = Guard::open(&options.pin_dir).context("load the guard")?;
    let previous = guard.previous_config();
    let generation = previous.map_or(1, |config| config.generation + 1);
    let entries = compile(policy, generation);
    guard.apply(&entries).context("fill the guard's maps")?;
    log.emit(
        loaded(policy, &entries, generation)
            .with("pin_dir", &options.pin_dir)
            .with("adopted", previous.is_some()),
    );
    // Grants still live in the ledger are written too, before any link runs these maps:
    // after an upgrade that changed the maps' layout, they are new and empty.
    let now = SystemTime::now();
    let (book, restored) = GrantBook::open(&options.state_dir, &mut guard, now)
        .context("open the grant ledger (the guard stays in place)")?;
    report_restored(log, &restored);

    // 3. Attach, or take over the links an earlier agent pinned.
    let names = attach(&mut guard, wanted, policy, log)?;
    for ifindex in guard.release_unadopted() {
        log.emit(
            Event::new("guard.detached")
                .with("ifindex", ifindex)
                .with("reason", "not_in_policy"),
        );
    }
    match guard.finish_pinning() {
        Ok(removed) if !removed.is_empty() => {
            log.emit(Event::new("guard.old_layout_removed").with("pins", &removed));
        }
        Ok(_) => {}
        Err(error) => tracing::warn!(error = %format!("{error:#}"), "pin the programs"),
    }
    Ok(Enforcing {
        guard,
        book,
        names,
        generation,
        entries,
    })
}

/// Says that the agent stops and that the guard stays, interface by interface.
fn report_stop(engine: &SharedEngine, log: &EventLog, signal: Option<&str>, pin_dir: &Path) {
    let mut engine = engine.lock();
    let mut stopping = Event::new("agent.stopping")
        .with("signal", signal.unwrap_or("error"))
        .with("guard", "enforcing");
    if let Ok(counters) = engine.kernel.counters() {
        stopping = stopping.with("packets", packets_by_reason(&counters));
    }
    log.emit(stopping);
    if let Some(guard) = engine.kernel.guard_mut() {
        for attachment in guard.attachments() {
            log.emit(
                Event::new("guard.kept")
                    .with("interface", &attachment.interface.name)
                    .with("ifindex", attachment.interface.index)
                    .with("link_id", attachment.link_id)
                    .with("pin_dir", pin_dir),
            );
        }
    }
}

/// Starts the issuers' key fetching and the auth endpoint on each listen address.
async fn start_auth(
    tasks: &mut JoinSet<()>,
    auth: &Auth,
    tls: Arc<rustls::ServerConfig>,
    issuers: Issuers,
    gates: &api::Gates,
    engine: &SharedEngine,
    log: &EventLog,
) -> anyhow::Result<()> {
    tasks.spawn(issuers.clone().run(log.clone()));

    let limits = api::Limits::default();
    let app = api::App {
        validator: Arc::new(Validator::new(auth.audience.clone(), TOKEN_LEEWAY)),
        cache: Arc::default(),
        issuers,
        gates: gates.clone(),
        engine: engine.clone(),
        log: log.clone(),
        limiter: Arc::new(api::RateLimiter::new(
            limits.requests_burst,
            limits.requests_per_second,
        )),
    };
    let router = api::router(app, &limits);
    let acceptor = tokio_rustls::TlsAcceptor::from(tls);
    for listener in api::bind(&auth.listen)
        .await
        .context("listen on the auth endpoint")?
    {
        let address = listener.local_addr()?;
        log.emit(Event::new("auth.listening").with("address", address.to_string()));
        tasks.spawn(api::serve(
            listener,
            acceptor.clone(),
            router.clone(),
            limits.clone(),
        ));
    }
    Ok(())
}

/// Attaches to every interface the policy names, or to none at all.
fn attach(
    guard: &mut Guard,
    wanted: &[Interface],
    policy: &Policy,
    log: &EventLog,
) -> anyhow::Result<Arc<RwLock<HashMap<u32, String>>>> {
    let names: Arc<RwLock<HashMap<u32, String>>> = Arc::default();
    for interface in wanted {
        let attachment = match guard.attach(interface) {
            Ok(attachment) => attachment,
            Err(error) => {
                // No new half guard; what an earlier agent left keeps enforcing.
                let fresh: Vec<u32> = guard
                    .attachments()
                    .iter()
                    .filter(|a| !a.adopted)
                    .map(|a| a.interface.index)
                    .collect();
                for index in fresh {
                    guard.forget(index);
                }
                return Err(error).context("attach the guard");
            }
        };
        log.emit(attached(attachment, policy.guard.mode.as_str()));
        names
            .write()
            .expect("interface names lock")
            .insert(interface.index, interface.name.clone());
    }
    Ok(names)
}

/// The event of an interface newly guarded (or taken over from an earlier agent).
pub fn attached(attachment: &crate::loader::Attachment, mode: &str) -> Event {
    Event::new("guard.attached")
        .with("interface", &attachment.interface.name)
        .with("ifindex", attachment.interface.index)
        .with("xdp_mode", attachment.mode.as_str())
        .with("mode", mode)
        .with("adopted", attachment.adopted)
        .with("link_id", attachment.link_id)
}

pub(super) fn loaded(policy: &Policy, entries: &MapEntries, generation: u64) -> Event {
    let warnings: Vec<String> = policy
        .warnings(&SessionEnv::from_process())
        .into_iter()
        .map(|w| {
            format!(
                "{}:{}:{}: {}",
                policy.path.display(),
                w.line,
                w.column,
                w.message
            )
        })
        .collect();
    for warning in &warnings {
        tracing::warn!("{warning}");
    }
    Event::new("policy.loaded")
        .with("policy", &policy.path)
        .with("generation", generation)
        .with("mode", policy.guard.mode.as_str())
        .with("endpoints", policy.endpoints.len())
        .with(
            "gates",
            policy
                .gates
                .iter()
                .map(|g| g.name.clone())
                .collect::<Vec<_>>(),
        )
        .with("rules", &entries.rules)
        .with("warnings", &warnings)
}

fn report_restored(log: &EventLog, restored: &Restored) {
    if let Some((aside, why)) = &restored.set_aside {
        tracing::error!(path = %aside.display(), %why, "the grant ledger was unreadable and was set aside");
        log.emit(
            Event::new("ledger.corrupt")
                .with("set_aside_as", aside)
                .with("reason", why),
        );
    }
    for grant in &restored.live {
        log.emit(grant.event("grant.opened").with("restored", true));
    }
    for grant in &restored.expired {
        log.emit(grant.event("grant.expired").with("while_stopped", true));
    }
}

/// Step 1 of a start: the policy, free of errors and of lockouts (unless forced), and the
/// interfaces it names as they exist now; or why not, with the place in the file.
fn validate(path: &Path, force: bool) -> Result<(Policy, Vec<Interface>), String> {
    let policy = Policy::load(path).map_err(describe)?;
    refuse_lockouts(&policy, force)?;
    let wanted = interfaces::resolve(&policy.guard.interfaces).map_err(|error| {
        let at = policy.locations.interfaces.unwrap_or(Location::START);
        format!(
            "{}:{}:{}: {error}",
            policy.path.display(),
            at.line,
            at.column
        )
    })?;
    Ok((policy, wanted))
}

/// A policy that would shut the operator out is refused, unless forced: then it is a warning.
pub(super) fn refuse_lockouts(policy: &Policy, force: bool) -> Result<(), String> {
    let warnings = crate::lockout::refuse_unless_forced(policy, force)
        .map_err(|refused| refused.to_string())?;
    for warning in &warnings {
        tracing::warn!("{}:{warning}", policy.path.display());
    }
    Ok(())
}

/// The signals the daemon answers: SIGTERM and SIGINT stop it, SIGHUP reloads the policy.
struct Signals {
    terminate: tokio::signal::unix::Signal,
    interrupt: tokio::signal::unix::Signal,
    hangup: tokio::signal::unix::Signal,
}

impl Signals {
    fn install() -> anyhow::Result<Self> {
        Ok(Self {
            terminate: signal(SignalKind::terminate()).context("handle SIGTERM")?,
            interrupt: signal(SignalKind::interrupt()).context("handle SIGINT")?,
            hangup: signal(SignalKind::hangup()).context("handle SIGHUP")?,
        })
    }
}

/// Runs until SIGTERM or SIGINT, reporting lost events on the way. Returns the signal's name.
async fn wait_for_stop(
    engine: &SharedEngine,
    log: &EventLog,
    running: &mut Running,
    notifier: &Notifier,
    signals: &mut Signals,
) -> anyhow::Result<String> {
    let Signals {
        terminate,
        interrupt,
        hangup,
    } = signals;
    let mut ticker = tokio::time::interval(LOST_EVENTS_INTERVAL);
    let mut lost_reported = (0, 0);
    let mut ledger_reported: Option<String> = None;
    // systemd's watchdog, when the unit sets one: pinged from the same loop that reads the
    // kernel's counters, so a stuck agent stops pinging.
    let mut watchdog =
        tokio::time::interval(watchdog_interval().unwrap_or(Duration::from_secs(3600)));
    let watchdog_on = watchdog_interval().is_some();

    loop {
        tokio::select! {
            _ = terminate.recv() => return Ok("SIGTERM".into()),
            _ = interrupt.recv() => return Ok("SIGINT".into()),
            _ = hangup.recv() => {
                // A reload by signal is the operator's own: it settles any pending one.
                running.unconfirmed = None;
                let _ = reload::reload_now(engine, log, running, notifier);
            }
            Some(command) = running.commands.recv() => {
                reload::answer(command, engine, log, running, notifier);
            }
            _ = reload::sleep_until(running.unconfirmed.as_ref().map(|(at, _)| *at)) => {
                reload::roll_back(engine, log, running, notifier);
            }
            _ = watchdog.tick(), if watchdog_on => notifier.watchdog(),
            _ = ticker.tick() => {
                report_ledger(engine, log, &mut ledger_reported);
                let counters = engine.lock().kernel.counters();
                match counters {
                    Ok(counters) => {
                        let seen = (counters.events_lost, counters.events_unattributed);
                        report_lost(log, seen, lost_reported);
                        lost_reported = seen;
                    }
                    Err(error) => tracing::warn!(error = %error, "read the guard's counters"),
                }
            }
        }
    }
}

/// Reports a ledger that cannot be written (a full disk, a read-only state folder), once
/// per change: the grants hold in the kernel regardless, but a restarted agent would not
/// know those opened since.
fn report_ledger(engine: &SharedEngine, log: &EventLog, reported: &mut Option<String>) {
    let (now, path) = {
        let engine = engine.lock();
        (
            engine.book.ledger_error().map(str::to_owned),
            engine.book.ledger_path(),
        )
    };
    if now == *reported {
        return;
    }
    match &now {
        Some(error) => log.emit(
            Event::new("ledger.write_failed")
                .with("path", &path)
                .with("error", error)
                .with("grants", "enforced by the kernel until they expire"),
        ),
        None => log.emit(Event::new("ledger.written").with("path", &path)),
    }
    *reported = now;
}

/// Reports what the kernel could not log since the last look: events that found the ring
/// buffer full, and reports past a CPU's per-second budget under a flood (counted, not
/// attributed to a source).
fn report_lost(log: &EventLog, (full, flood): (u64, u64), (full_before, flood_before): (u64, u64)) {
    if full > full_before {
        log.emit(
            Event::new("events.lost")
                .with("count", full - full_before)
                .with("cause", "ring_full"),
        );
    }
    if flood > flood_before {
        log.emit(
            Event::new("events.lost")
                .with("count", flood - flood_before)
                .with("cause", "flood"),
        );
    }
}

/// The non-zero packet counters by reason name.
fn packets_by_reason(counters: &Counters) -> serde_json::Map<String, serde_json::Value> {
    Reason::ALL
        .iter()
        .filter(|reason| counters.packets[**reason as usize] > 0)
        .map(|reason| {
            (
                reason.name().to_owned(),
                counters.packets[*reason as usize].into(),
            )
        })
        .collect()
}

pub(super) fn rejected(policy_path: &Path, reason: &str) -> Event {
    Event::new("policy.rejected")
        .with("policy", policy_path)
        .with("reason", reason.trim_end())
}
