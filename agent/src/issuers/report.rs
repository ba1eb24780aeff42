//! What the log says about issuers: `issuer.*` events when their keys change or cannot be
//! read, `tracing` diagnostics for the rest.

use std::sync::OnceLock;
use std::time::Duration;

use serde_json::{Value, json};

use super::cache::Stored;
use super::fetch::chain;
use super::load::LoadError;
use crate::events::{Event, EventLog};
use crate::tokens::KeyProblem;

/// Why keys were read, as `trigger` in events.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Trigger {
    /// The first read after start-up, and its retries.
    Start,
    /// The periodic refresh, and its retries.
    Periodic,
    /// A token named a key id that the issuer's keys lack.
    UnknownKid,
    /// [`super::Issuers::refresh`], on reload or at an operator's request.
    Requested,
}

impl Trigger {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Start => "start",
            Self::Periodic => "periodic",
            Self::UnknownKid => "unknown_kid",
            Self::Requested => "requested",
        }
    }
}

/// The event log, once [`super::Issuers::run`] has been given one; until then, only
/// `tracing` hears about issuers.
#[derive(Default)]
pub(super) struct Reporter {
    log: OnceLock<EventLog>,
}

/// A successful read, as the log tells it.
pub(super) struct Success<'a> {
    pub issuer: &'a str,
    pub source: &'a str,
    pub kids: &'a [String],
    pub problems: &'a [KeyProblem],
    pub stored: Stored,
    pub trigger: Trigger,
}

impl Reporter {
    /// Sets the event log; the first one given stays.
    pub fn attach(&self, log: EventLog) {
        let _ = self.log.set(log);
    }

    /// Reports keys read. Nothing is said at info level when a refresh finds what was there.
    pub fn loaded(&self, success: &Success<'_>) {
        let Success {
            issuer,
            source,
            kids,
            problems,
            stored,
            trigger,
        } = *success;

        if stored.kids_changed || stored.recovered {
            tracing::info!(
                issuer,
                source,
                ?kids,
                trigger = trigger.as_str(),
                "issuer keys loaded"
            );
            self.emit(
                Event::new("issuer.keys_loaded")
                    .with("issuer", issuer)
                    .with("kids", kids)
                    .with("source", source)
                    .with("trigger", trigger.as_str()),
            );
        } else {
            tracing::debug!(
                issuer,
                source,
                trigger = trigger.as_str(),
                "issuer keys unchanged"
            );
        }
        if kids.is_empty() {
            tracing::warn!(
                issuer,
                source,
                "issuer publishes no usable key: its gates stay shut"
            );
        }

        let news = stored.problems_changed || stored.kids_changed || stored.recovered;
        if !problems.is_empty() && news {
            tracing::warn!(
                issuer,
                source,
                count = problems.len(),
                "issuer keys refused"
            );
            self.emit(
                Event::new("issuer.keys_rejected")
                    .with("issuer", issuer)
                    .with("source", source)
                    .with("problems", problems.iter().map(problem).collect::<Vec<_>>()),
            );
        }
    }

    /// Reports a failed read; the last good keys, if any, stay in use. `retry_in` is when
    /// the background task tries again, if it is the one that failed.
    pub fn failed(
        &self,
        issuer: &str,
        url: &str,
        error: &LoadError,
        retry_in: Option<Duration>,
        trigger: Trigger,
    ) {
        let message = chain(error);
        let retry = retry_in.map(|delay| humantime::format_duration(delay).to_string());
        tracing::warn!(
            issuer,
            url,
            error = %message,
            retry_in = retry.as_deref(),
            trigger = trigger.as_str(),
            "issuer keys not read; the last good ones stay"
        );

        let name = if error.is_refusal() {
            "issuer.keys_rejected"
        } else {
            "issuer.unreachable"
        };
        let mut event = Event::new(name)
            .with("issuer", issuer)
            .with("url", url)
            .with("error", &message)
            .with("trigger", trigger.as_str());
        if let Some(retry) = retry {
            event = event.with("retry_in", retry);
        }
        self.emit(event);
    }

    fn emit(&self, event: Event) {
        if let Some(log) = self.log.get() {
            log.emit(event);
        }
    }
}

fn problem(problem: &KeyProblem) -> Value {
    json!({
        "index": problem.index,
        "kid": problem.kid,
        "flaw": problem.flaw.to_string(),
    })
}
