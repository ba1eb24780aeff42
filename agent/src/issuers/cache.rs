//! One issuer's keys as last read, what went wrong since, and the gate that lets one fetch
//! at a time through.

use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant, SystemTime};

use super::IssuerStatus;
use super::discovery::Discovered;
use super::load::Loaded;
use crate::policy::Issuer;
use crate::tokens::{IssuerTrust, KeyProblem, KeySet};

/// An `[[issuer]]` of the policy and the state of its keys.
#[derive(Debug)]
pub(super) struct IssuerEntry {
    pub config: Issuer,
    state: Mutex<KeyState>,
    /// Held for the whole of a fetch, so that callers arriving meanwhile wait for its result
    /// instead of fetching again.
    pub gate: tokio::sync::Mutex<Gate>,
}

#[derive(Debug, Default)]
struct KeyState {
    /// The keys last read; `None` until the first success, and kept through failures.
    trust: Option<IssuerTrust>,
    discovered: Option<Discovered>,
    source: Option<String>,
    problems: Vec<KeyProblem>,
    last_success: Option<SystemTime>,
    last_error: Option<String>,
}

/// When the issuer's keys were last asked for, successfully or not.
#[derive(Debug, Default)]
pub(super) struct Gate {
    last_attempt: Option<Instant>,
}

/// What a successful read changed, which decides what the log says about it.
#[derive(Debug, Clone, Copy)]
pub(super) struct Stored {
    /// The key ids differ from the last good ones, or there were none.
    pub kids_changed: bool,
    /// The previous attempt had failed.
    pub recovered: bool,
    /// The refused keys differ from the last read.
    pub problems_changed: bool,
}

impl Gate {
    /// Notes that a fetch starts now.
    pub fn start(&mut self) {
        self.last_attempt = Some(Instant::now());
    }

    /// Whether a fetch started less than `interval` ago.
    pub fn attempted_within(&self, interval: Duration) -> bool {
        self.last_attempt
            .is_some_and(|last| last.elapsed() < interval)
    }
}

impl IssuerEntry {
    pub fn new(config: Issuer) -> Self {
        Self {
            config,
            state: Mutex::default(),
            gate: tokio::sync::Mutex::default(),
        }
    }

    pub fn name(&self) -> &str {
        &self.config.name
    }

    /// Whether the current keys include one with this id.
    pub fn knows(&self, kid: &str) -> bool {
        let state = self.state();
        state
            .trust
            .as_ref()
            .is_some_and(|trust| trust.keys.kids().any(|known| known == kid))
    }

    /// Whether the issuer published a key with this id that was refused: fetching the same
    /// key set again will not make it usable.
    pub fn refuses(&self, kid: &str) -> bool {
        let state = self.state();
        state
            .trust
            .as_ref()
            .is_some_and(|trust| trust.keys.refusal(kid).is_some())
    }

    pub fn has_keys(&self) -> bool {
        self.state().trust.is_some()
    }

    /// The last discovery, so that an unknown `kid` refetches the key set alone.
    pub fn discovered(&self) -> Option<Discovered> {
        self.state().discovered.clone()
    }

    pub fn trust(&self) -> Option<IssuerTrust> {
        self.state().trust.clone()
    }

    /// Replaces the keys with those just read. A key set that the issuer no longer publishes
    /// is dropped at once: that is how a provider withdraws a compromised key.
    pub fn store(&self, loaded: Loaded) -> Stored {
        let mut state = self.state();
        let previous_kids = state.trust.as_ref().map(|trust| sorted_kids(&trust.keys));
        let stored = Stored {
            kids_changed: previous_kids.as_ref() != Some(&sorted_kids(&loaded.keys)),
            recovered: state.last_error.is_some(),
            problems_changed: state.problems != loaded.problems,
        };

        state.trust = Some(IssuerTrust {
            name: self.config.name.clone(),
            issuer: loaded.issuer,
            algorithms: self.config.algorithms.clone(),
            keys: loaded.keys,
        });
        if loaded.discovered.is_some() {
            state.discovered = loaded.discovered;
        }
        state.source = Some(loaded.source);
        state.problems = loaded.problems;
        state.last_success = Some(SystemTime::now());
        state.last_error = None;
        stored
    }

    /// Records a failed read; the keys stay as they were.
    pub fn fail(&self, error: String) {
        self.state().last_error = Some(error);
    }

    pub fn status(&self) -> IssuerStatus {
        let state = self.state();
        let keys = state.trust.as_ref().map(|trust| &trust.keys);
        IssuerStatus {
            name: self.config.name.clone(),
            url: self.config.url.clone(),
            source: state.source.clone(),
            keys: keys.map_or(0, KeySet::len),
            kids: keys.map(sorted_kids).unwrap_or_default(),
            last_success: state.last_success,
            last_error: state.last_error.clone(),
        }
    }

    fn state(&self) -> MutexGuard<'_, KeyState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// The ids of a key set's usable keys, sorted for logs and comparisons.
pub(super) fn sorted_kids(keys: &KeySet) -> Vec<String> {
    let mut kids: Vec<String> = keys.kids().map(str::to_owned).collect();
    kids.sort_unstable();
    kids
}
