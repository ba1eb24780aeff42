//! `portguard run`: the daemon. Validates the policy, loads and fills the kernel maps,
//! attaches to the policy's interfaces, logs flow events, and detaches on SIGTERM.

use std::{
    collections::HashMap,
    path::Path,
    process::ExitCode,
    sync::{Arc, RwLock},
    time::Duration,
};

use anyhow::Context as _;
use portguard_common::{Reason, maps::Counters};
use tokio::signal::unix::{SignalKind, signal};

use crate::{
    check::describe,
    compile::compile,
    events::{Event, EventLog, FlowReader},
    interfaces,
    loader::Guard,
    policy::{Mode, Policy, SessionEnv},
};

/// How often the kernel's count of lost events is checked.
const LOST_EVENTS_INTERVAL: Duration = Duration::from_secs(1);

pub fn run(policy_path: &Path) -> anyhow::Result<ExitCode> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("start the async runtime")?
        .block_on(serve(policy_path))
}

async fn serve(policy_path: &Path) -> anyhow::Result<ExitCode> {
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
    let warnings: Vec<String> = policy
        .warnings(&SessionEnv::from_process())
        .into_iter()
        .map(|w| {
            format!(
                "{}:{}:{}: {}",
                policy_path.display(),
                w.line,
                w.column,
                w.message
            )
        })
        .collect();
    for warning in &warnings {
        tracing::warn!("{warning}");
    }

    // 2. Load, fill the maps, then attach: the programs never run on half a policy.
    let generation = 1;
    let entries = compile(&policy, generation);
    let mut guard = Guard::load().context("load the guard")?;
    guard.apply(&entries).context("fill the guard's maps")?;
    log.emit(
        Event::new("policy.loaded")
            .with("policy", policy_path)
            .with("generation", generation)
            .with("mode", mode_name(policy.guard.mode))
            .with("endpoints", policy.endpoints.len())
            .with("rules", &entries.rules)
            .with("warnings", &warnings),
    );

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
                .with("mode", mode_name(policy.guard.mode)),
        );
        names
            .write()
            .expect("interface names lock")
            .insert(interface.index, interface.name.clone());
    }

    // 3. Report what the kernel decides.
    let rules = Arc::new(RwLock::new(entries.rules.clone()));
    let reader = FlowReader::new(guard.take_events()?, log.clone(), rules, names)
        .context("watch the event ring buffer")?;
    let reader = tokio::spawn(reader.run());

    let outcome = wait_for_stop(&mut guard, &log, policy_path).await;

    // 4. Stop: detach everything this agent attached.
    let mut stopping =
        Event::new("agent.stopping").with("signal", outcome.as_deref().unwrap_or("error"));
    if let Ok(counters) = guard.counters() {
        stopping = stopping.with("packets", packets_by_reason(&counters));
    }
    log.emit(stopping);
    reader.abort();
    for interface in guard.detach_all() {
        log.emit(
            Event::new("guard.detached")
                .with("interface", interface.name)
                .with("ifindex", interface.index),
        );
    }
    outcome.map(|_| ExitCode::SUCCESS)
}

/// Runs until SIGTERM or SIGINT, reporting lost events on the way. Returns the signal's name.
async fn wait_for_stop(
    guard: &mut Guard,
    log: &EventLog,
    policy_path: &Path,
) -> anyhow::Result<String> {
    let mut terminate = signal(SignalKind::terminate()).context("handle SIGTERM")?;
    let mut interrupt = signal(SignalKind::interrupt()).context("handle SIGINT")?;
    let mut hangup = signal(SignalKind::hangup()).context("handle SIGHUP")?;
    let mut ticker = tokio::time::interval(LOST_EVENTS_INTERVAL);
    let mut lost_reported = 0;

    loop {
        tokio::select! {
            _ = terminate.recv() => return Ok("SIGTERM".into()),
            _ = interrupt.recv() => return Ok("SIGINT".into()),
            _ = hangup.recv() => {
                // Live reload arrives with the systemd integration; until then a changed
                // policy is validated and the operator told to restart.
                match Policy::load(policy_path) {
                    Ok(_) => log.emit(rejected(policy_path, "reload is not supported yet: restart portguard to apply a new policy")),
                    Err(error) => log.emit(rejected(policy_path, &describe(error))),
                }
            }
            _ = ticker.tick() => {
                match guard.counters() {
                    Ok(counters) if counters.events_lost > lost_reported => {
                        log.emit(Event::new("events.lost").with("count", counters.events_lost - lost_reported));
                        lost_reported = counters.events_lost;
                    }
                    Ok(_) => {}
                    Err(error) => tracing::warn!(error = %error, "read the guard's counters"),
                }
            }
        }
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

fn mode_name(mode: Mode) -> &'static str {
    match mode {
        Mode::Enforce => "enforce",
        Mode::Monitor => "monitor",
    }
}
