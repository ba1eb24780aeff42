//! `portguard run`: the daemon. In order: validate the policy; load and fill the kernel maps;
//! attach to the policy's interfaces; restore live grants from the ledger; fetch the issuers'
//! keys; serve the auth endpoint and the control socket; log what the kernel decides; detach
//! on SIGTERM.

use std::{
    collections::HashMap,
    path::{Path, PathBuf},
    process::ExitCode,
    sync::{Arc, RwLock},
    time::{Duration, SystemTime},
};

use anyhow::Context as _;
use portguard_common::{Reason, maps::Counters};
use tokio::{
    signal::unix::{SignalKind, signal},
    task::JoinSet,
};

use crate::{
    api,
    check::describe,
    compile::{MapEntries, compile},
    control,
    engine::{Engine, SharedEngine},
    events::{Event, EventLog, FlowReader},
    grants::{GrantBook, Restored},
    interfaces,
    issuers::Issuers,
    loader::Guard,
    notify::{Notifier, watchdog_interval},
    policy::{Auth, Policy, SessionEnv},
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
    let policy_path = options.policy.as_path();
    let stdout_only = EventLog::open(None)?;
    stdout_only.emit(
        Event::new("agent.started")
            .with("version", env!("CARGO_PKG_VERSION"))
            .with("pid", std::process::id())
            .with("policy", policy_path),
    );

    // 1. Validate: nothing touches the kernel until the policy is known good.
    let policy = match Policy::load(policy_path) {
        Ok(policy) => policy,
        Err(error) => {
            let description = describe(error);
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

    // 2. Load, fill the maps, then attach: the programs never run on half a policy.
    let generation = 1;
    let entries = compile(&policy, generation);
    let mut guard = Guard::load().context("load the guard")?;
    guard.apply(&entries).context("fill the guard's maps")?;
    log.emit(loaded(&policy, &entries, generation));
    let names = attach(&mut guard, &policy, &log)?;
    let interface_count = names.read().map(|n| n.len()).unwrap_or(0);

    // 3. Grants still live in the ledger are enforced again.
    let now = SystemTime::now();
    let (book, restored) = match GrantBook::open(&options.state_dir, &mut guard, now) {
        Ok(opened) => opened,
        Err(error) => {
            guard.detach_all();
            return Err(error).context("open the grant ledger");
        }
    };
    report_restored(&log, &restored);
    let ring = guard.take_events()?;
    let engine = SharedEngine::new(Engine {
        kernel: Box::new(guard),
        book,
    });

    // 4-5. Issuers, the auth endpoint, the control socket, the kernel's events, expiry.
    let mut tasks = JoinSet::new();
    let rules = Arc::new(RwLock::new(entries.rules.clone()));
    let reader =
        FlowReader::new(ring, log.clone(), rules, names).context("watch the event ring buffer")?;
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
    let expected = Expected {
        policy: policy.path.clone(),
        mode: policy.guard.mode,
        generation,
        issuers: issuers.clone(),
    };
    let listener = control::bind(&options.control_socket)?;
    let control = control::Control {
        engine: engine.clone(),
        log: log.clone(),
        expected,
    };
    tasks.spawn(control::serve(listener, control));
    if let Some(address) = policy.events.metrics {
        let (engine, log) = (engine.clone(), log.clone());
        tasks.spawn(async move {
            log.emit(Event::new("metrics.listening").with("address", address.to_string()));
            if let Err(error) = crate::metrics::serve(address, engine, generation).await {
                tracing::error!(%error, %address, "the metrics listener stopped");
            }
        });
    }
    if let (Some(auth), Some(tls), Some(issuers)) = (&policy.auth, tls, issuers) {
        start_auth(&mut tasks, &policy, auth, tls, issuers, &engine, &log).await?;
    }

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
    let outcome = wait_for_stop(&engine, &log, policy_path, &notifier).await;
    notifier.stopping("detaching the guard");

    // 6. Stop: detach everything this agent attached. Live grants stay in the ledger.
    tasks.abort_all();
    let mut engine = engine.lock();
    let mut stopping =
        Event::new("agent.stopping").with("signal", outcome.as_deref().unwrap_or("error"));
    if let Ok(counters) = engine.kernel.counters() {
        stopping = stopping.with("packets", packets_by_reason(&counters));
    }
    log.emit(stopping);
    for interface in engine.kernel.detach_all() {
        log.emit(
            Event::new("guard.detached")
                .with("interface", interface.name)
                .with("ifindex", interface.index),
        );
    }
    let _ = std::fs::remove_file(&options.control_socket);
    outcome.map(|_| ExitCode::SUCCESS)
}

/// Starts the issuers' key fetching and the auth endpoint on each listen address.
async fn start_auth(
    tasks: &mut JoinSet<()>,
    policy: &Policy,
    auth: &Auth,
    tls: Arc<rustls::ServerConfig>,
    issuers: Issuers,
    engine: &SharedEngine,
    log: &EventLog,
) -> anyhow::Result<()> {
    tasks.spawn(issuers.clone().run(log.clone()));

    let limits = api::Limits::default();
    let app = api::App {
        validator: Arc::new(Validator::new(auth.audience.clone(), TOKEN_LEEWAY)),
        cache: Arc::default(),
        issuers,
        gates: policy.gates.clone().into(),
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
    policy: &Policy,
    log: &EventLog,
) -> anyhow::Result<Arc<RwLock<HashMap<u32, String>>>> {
    let wanted =
        interfaces::resolve(&policy.guard.interfaces).context("find the interfaces to guard")?;
    let names: Arc<RwLock<HashMap<u32, String>>> = Arc::default();
    for interface in &wanted {
        let attachment = match guard.attach(interface) {
            Ok(attachment) => attachment,
            Err(error) => {
                guard.detach_all();
                return Err(error).context("attach the guard");
            }
        };
        log.emit(
            Event::new("guard.attached")
                .with("interface", &interface.name)
                .with("ifindex", interface.index)
                .with("xdp_mode", attachment.mode.as_str())
                .with("mode", policy.guard.mode.as_str()),
        );
        names
            .write()
            .expect("interface names lock")
            .insert(interface.index, interface.name.clone());
    }
    Ok(names)
}

fn loaded(policy: &Policy, entries: &MapEntries, generation: u64) -> Event {
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

/// Runs until SIGTERM or SIGINT, reporting lost events on the way. Returns the signal's name.
async fn wait_for_stop(
    engine: &SharedEngine,
    log: &EventLog,
    policy_path: &Path,
    notifier: &Notifier,
) -> anyhow::Result<String> {
    let mut terminate = signal(SignalKind::terminate()).context("handle SIGTERM")?;
    let mut interrupt = signal(SignalKind::interrupt()).context("handle SIGINT")?;
    let mut hangup = signal(SignalKind::hangup()).context("handle SIGHUP")?;
    let mut ticker = tokio::time::interval(LOST_EVENTS_INTERVAL);
    let mut lost_reported = (0, 0);
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
                // Live reload arrives with the systemd integration; until then a changed
                // policy is validated and the operator told to restart.
                let reason = match Policy::load(policy_path) {
                    Ok(_) => "reload is not supported yet: restart portguard to apply a new policy".to_owned(),
                    Err(error) => describe(error),
                };
                log.emit(rejected(policy_path, &reason));
            }
            _ = watchdog.tick(), if watchdog_on => notifier.watchdog(),
            _ = ticker.tick() => {
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

fn rejected(policy_path: &Path, reason: &str) -> Event {
    Event::new("policy.rejected")
        .with("policy", policy_path)
        .with("reason", reason.trim_end())
}
