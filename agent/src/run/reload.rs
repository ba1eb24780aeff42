//! Reloads: the policy file read again and written into the running guard, by SIGHUP or
//! over the control socket, and the confirm-or-roll-back timer of `portguard reload
//! --confirm-within`.

use std::{
    sync::{
        Arc, RwLock,
        atomic::{AtomicU64, Ordering},
    },
    time::SystemTime,
};

use super::{loaded, refuse_lockouts, rejected};
use crate::{
    api,
    check::describe,
    compile::compile,
    control,
    engine::SharedEngine,
    events::{Event, EventLog},
    notify::Notifier,
    policy::Policy,
    status::Expected,
};

/// What a reload replaces.
pub(super) struct Running {
    pub(super) policy: Policy,
    pub(super) generation: u64,
    /// Rule names for the event reader.
    pub(super) rules: Arc<RwLock<Vec<String>>>,
    pub(super) gates: api::Gates,
    pub(super) expected: Arc<RwLock<Expected>>,
    pub(super) generation_in_force: Arc<AtomicU64>,
    pub(super) force: bool,
    /// Reloads asked for over the control socket.
    pub(super) commands: tokio::sync::mpsc::Receiver<control::Command>,
    /// A reload waiting for `portguard confirm`: when, and the policy to go back to.
    pub(super) unconfirmed: Option<(tokio::time::Instant, Box<Policy>)>,
}

/// Reads the policy file again, through the same validation as a start, and writes it into
/// the running guard's maps (see `Guard::apply` for why no packet sees a policy that neither
/// version allows). Returns the `policy.loaded` event, or why the new policy was refused,
/// in which case the guard keeps the old one untouched.
fn reload(engine: &SharedEngine, log: &EventLog, running: &mut Running) -> Result<Event, String> {
    let policy = Policy::load(&running.policy.path).map_err(describe)?;
    refuse_lockouts(&policy, running.force)?;
    apply_policy(engine, log, running, policy)
}

/// Makes `policy` the one in force: the kernel's maps, the rule names, the gates, the grants
/// of gates that are gone, and what status compares against.
fn apply_policy(
    engine: &SharedEngine,
    log: &EventLog,
    running: &mut Running,
    policy: Policy,
) -> Result<Event, String> {
    let old = &running.policy;
    let needs_restart: Vec<&str> = [
        (
            "[guard] interfaces",
            policy.guard.interfaces != old.guard.interfaces,
        ),
        ("[auth]", policy.auth != old.auth),
        ("[[issuers]]", policy.issuers != old.issuers),
        ("[events]", policy.events != old.events),
    ]
    .into_iter()
    .filter_map(|(section, changed)| changed.then_some(section))
    .collect();
    if !needs_restart.is_empty() {
        return Err(format!(
            "{} changed, which a reload cannot apply: restart portguard for that (the guard \
             stays in place across a restart)",
            needs_restart.join(", ")
        ));
    }

    let generation = running.generation + 1;
    let entries = compile(&policy, generation);
    {
        let mut engine = engine.lock();
        let guard = engine
            .kernel
            .guard_mut()
            .ok_or_else(|| "no kernel guard to reload".to_owned())?;
        if let Err(error) = guard.apply(&entries) {
            let restored = guard.apply(&compile(old, running.generation));
            return Err(format!(
                "write the new policy into the kernel: {error:#}; {}",
                match restored {
                    Ok(()) => "the policy in force was written back".to_owned(),
                    Err(again) => format!("writing back the policy in force failed too: {again:#}"),
                }
            ));
        }
    }
    *running.rules.write().expect("rules lock") = entries.rules.clone();
    running.gates.replace(policy.gates.clone());

    // A grant on a gate the policy no longer has is revoked (its port is closed already:
    // the gate is gone from the kernel's map).
    let removed: Vec<&str> = old
        .gates
        .iter()
        .filter(|gate| !policy.gates.iter().any(|g| g.name == gate.name))
        .map(|gate| gate.name.as_str())
        .collect();
    let now = SystemTime::now();
    let doomed: Vec<String> = engine
        .grants()
        .into_iter()
        .filter(|grant| {
            grant
                .ports
                .iter()
                .any(|p| removed.contains(&p.gate.as_str()))
        })
        .map(|grant| grant.id)
        .collect();
    for id in doomed {
        match engine.revoke(&id, now) {
            Ok(grant) => log.emit(
                grant
                    .event("grant.revoked")
                    .with("by", "reload")
                    .with("reason", "gate_removed"),
            ),
            Err(error) => tracing::warn!(%id, error = %error, "revoke a grant of a removed gate"),
        }
    }

    {
        let mut expected = running.expected.write().expect("expected lock");
        expected.mode = policy.guard.mode;
        expected.generation = generation;
    }
    running
        .generation_in_force
        .store(generation, Ordering::Relaxed);
    let event = loaded(&policy, &entries, generation).with("reload", true);
    running.policy = policy;
    running.generation = generation;
    Ok(event)
}

/// Reloads the policy file, telling systemd and the log; returns the generation in force.
pub(super) fn reload_now(
    engine: &SharedEngine,
    log: &EventLog,
    running: &mut Running,
    notifier: &Notifier,
) -> Result<u64, String> {
    notifier.reloading("reloading the policy");
    let result = reload(engine, log, running);
    match &result {
        Ok(event) => log.emit(event.clone()),
        Err(reason) => {
            log.emit(rejected(&running.policy.path, reason).with("generation", running.generation))
        }
    }
    notifier.ready(&format!("policy generation {}", running.generation));
    result.map(|_| running.generation)
}

/// Puts back the policy in force before an unconfirmed reload.
pub(super) fn roll_back(
    engine: &SharedEngine,
    log: &EventLog,
    running: &mut Running,
    notifier: &Notifier,
) {
    let Some((_, previous)) = running.unconfirmed.take() else {
        return;
    };
    let previous = *previous;
    notifier.reloading("rolling back an unconfirmed reload");
    let unconfirmed = running.generation;
    match apply_policy(engine, log, running, previous) {
        Ok(event) => {
            log.emit(
                Event::new("policy.rolled_back")
                    .with("policy", &running.policy.path)
                    .with("unconfirmed_generation", unconfirmed)
                    .with("generation", running.generation)
                    .with("reason", "the reload was not confirmed in time"),
            );
            log.emit(event.with("rolled_back", true));
        }
        Err(reason) => {
            tracing::error!(%reason, "roll back an unconfirmed reload");
            log.emit(
                rejected(&running.policy.path, &reason)
                    .with("generation", running.generation)
                    .with("rolling_back", true),
            );
        }
    }
    notifier.ready(&format!("policy generation {}", running.generation));
}

/// Waits until `deadline` (that of the reload waiting for confirmation), or forever without
/// one.
pub(super) async fn sleep_until(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}

/// Answers a reload or a confirmation asked for over the control socket.
pub(super) fn answer(
    command: control::Command,
    engine: &SharedEngine,
    log: &EventLog,
    running: &mut Running,
    notifier: &Notifier,
) {
    match command {
        control::Command::Reload {
            confirm_within,
            reply,
        } => {
            let before = running.policy.clone();
            let answer = match reload_now(engine, log, running, notifier) {
                Ok(generation) => {
                    let mut answer = serde_json::json!({ "ok": true, "generation": generation });
                    if let Some(within) = confirm_within {
                        // The policy to go back to is the last one confirmed.
                        let previous = match running.unconfirmed.take() {
                            Some((_, previous)) => previous,
                            None => Box::new(before),
                        };
                        running.unconfirmed =
                            Some((tokio::time::Instant::now() + within, previous));
                        answer["confirm_within_ms"] = (within.as_millis() as u64).into();
                    }
                    answer
                }
                Err(reason) => serde_json::json!({ "ok": false, "error": reason }),
            };
            let _ = reply.send(answer);
        }
        control::Command::Confirm { reply } => {
            let answer = match running.unconfirmed.take() {
                Some(_) => {
                    log.emit(
                        Event::new("policy.confirmed")
                            .with("policy", &running.policy.path)
                            .with("generation", running.generation),
                    );
                    serde_json::json!({ "ok": true, "generation": running.generation })
                }
                None => {
                    serde_json::json!({ "ok": false, "error": "no reload waits for confirmation" })
                }
            };
            let _ = reply.send(answer);
        }
    }
}
