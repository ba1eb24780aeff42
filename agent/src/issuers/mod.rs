//! The issuers whose tokens are believed, and their current keys.
//!
//! Keys come from a JWKS file on this host, or from the issuer by OIDC discovery (`fetch`
//! and `discovery`: https, or http to a loopback host; no redirect to another origin; 5 s and
//! 1 MiB per response). `load` reads one issuer's key set, `cache` keeps it with the gate that
//! lets one fetch at a time through, `refresh` is the background task that fetches at
//! start-up, retries with backoff and refreshes every 15 minutes, and `report` says so in the
//! log. A failed read never drops the last good keys.
//!
//! A token with an unknown `kid` may ask for a refetch, but at most one fetch per issuer runs
//! at a time and at most one starts every 10 s, however many tokens ask.

mod cache;
mod discovery;
mod fetch;
mod load;
mod refresh;
mod report;

#[cfg(test)]
mod tests;

use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::{Duration, SystemTime};

pub use fetch::{ClientError, MAX_RESPONSE_BYTES};

use cache::{Gate, IssuerEntry, sorted_kids};
use fetch::Fetcher;
use report::{Reporter, Success, Trigger};

use crate::policy::Issuer;
use crate::tokens::IssuerTrust;

/// The policy's issuers and their keys. Cheap to clone; every clone shares the same keys.
#[derive(Clone)]
pub struct Issuers {
    shared: Arc<Shared>,
}

/// How often keys are fetched, and how long a fetch may take.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timings {
    /// Between two refreshes of keys that were read.
    pub refresh: Duration,
    /// The least time between two fetches that unknown key ids may cause.
    pub unknown_kid_interval: Duration,
    /// The first retry after a failed read; each next one waits twice as long.
    pub retry_first: Duration,
    pub retry_max: Duration,
    /// For each request, from connecting to the last byte of the body.
    pub request_timeout: Duration,
}

/// What `portguard status` shows about an issuer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IssuerStatus {
    pub name: String,
    /// The configured issuer url.
    pub url: String,
    /// Where the keys were last read: the `jwks_uri` or the file.
    pub source: Option<String>,
    /// How many usable keys are held.
    pub keys: usize,
    pub kids: Vec<String>,
    pub last_success: Option<SystemTime>,
    /// The error of the last read, if it failed; cleared by a success.
    pub last_error: Option<String>,
}

struct Shared {
    entries: Vec<IssuerEntry>,
    fetcher: Fetcher,
    timings: Timings,
    reporter: Reporter,
    /// What validators read: the issuers that have keys, in policy order.
    trusted: RwLock<Arc<[IssuerTrust]>>,
    /// Serializes rebuilding `trusted`, so that a slow rebuild never overwrites a newer one.
    publishing: Mutex<()>,
}

impl Default for Timings {
    fn default() -> Self {
        Self {
            refresh: Duration::from_mins(15),
            unknown_kid_interval: Duration::from_secs(10),
            retry_first: Duration::from_secs(1),
            retry_max: Duration::from_mins(1),
            request_timeout: Duration::from_secs(5),
        }
    }
}

impl Issuers {
    /// The policy's `[[issuer]]` list, with no keys yet: [`Issuers::run`] fetches them.
    ///
    /// # Errors
    ///
    /// When the HTTP client cannot be built (no TLS backend).
    pub fn new(issuers: &[Issuer]) -> Result<Self, ClientError> {
        Self::with_timings(issuers, Timings::default())
    }

    /// As [`Issuers::new`], with other timings than the defaults (tests, benchmarks).
    ///
    /// # Errors
    ///
    /// When the HTTP client cannot be built.
    pub fn with_timings(issuers: &[Issuer], timings: Timings) -> Result<Self, ClientError> {
        let shared = Shared {
            entries: issuers.iter().cloned().map(IssuerEntry::new).collect(),
            fetcher: Fetcher::new(timings.request_timeout)?,
            timings,
            reporter: Reporter::default(),
            trusted: RwLock::new(Arc::from(Vec::new())),
            publishing: Mutex::new(()),
        };
        Ok(Self {
            shared: Arc::new(shared),
        })
    }

    /// The issuers that have keys, with their keys, for the validator. A snapshot: later
    /// fetches do not change it.
    pub fn trusted(&self) -> Arc<[IssuerTrust]> {
        let trusted = self
            .shared
            .trusted
            .read()
            .unwrap_or_else(PoisonError::into_inner);
        Arc::clone(&trusted)
    }

    /// Refetches the keys of `issuer_name` because a token names `kid`, which they lack, and
    /// says whether the keys now have it. Callers that arrive during a fetch wait for it
    /// and do not fetch again; after a fetch, none starts for
    /// [`Timings::unknown_kid_interval`].
    pub async fn refresh_for_unknown_kid(&self, issuer_name: &str, kid: &str) -> bool {
        let Some(entry) = self.shared.entry(issuer_name) else {
            return false;
        };
        if entry.knows(kid) {
            return true;
        }
        if entry.refuses(kid) {
            tracing::debug!(issuer = issuer_name, kid, "key id refused, not refetched");
            return false;
        }

        let mut gate = entry.gate.lock().await;
        // The fetch this caller waited for may have brought the key.
        if entry.knows(kid) {
            return true;
        }
        if gate.attempted_within(self.shared.timings.unknown_kid_interval) {
            tracing::debug!(
                issuer = issuer_name,
                kid,
                "unknown key id, refetch rate-limited"
            );
            return false;
        }

        tracing::debug!(issuer = issuer_name, kid, "unknown key id, refetching keys");
        self.shared
            .fetch(entry, &mut gate, Trigger::UnknownKid, None)
            .await;
        entry.knows(kid)
    }

    /// Reads every issuer's keys again now, waiting for fetches already running; the
    /// unknown-`kid` rate limit does not apply. Files are re-read.
    pub async fn refresh(&self) {
        for entry in &self.shared.entries {
            let mut gate = entry.gate.lock().await;
            self.shared
                .fetch(entry, &mut gate, Trigger::Requested, None)
                .await;
        }
    }

    /// Each issuer's keys and their freshness, in policy order.
    pub fn status(&self) -> Vec<IssuerStatus> {
        self.shared
            .entries
            .iter()
            .map(IssuerEntry::status)
            .collect()
    }
}

impl Shared {
    fn entry(&self, name: &str) -> Option<&IssuerEntry> {
        self.entries.iter().find(|entry| entry.name() == name)
    }

    /// Reads one issuer's keys, stores them and reports; the caller holds the issuer's gate.
    /// Returns whether the read succeeded.
    async fn fetch(
        &self,
        entry: &IssuerEntry,
        gate: &mut Gate,
        trigger: Trigger,
        retry_in: Option<Duration>,
    ) -> bool {
        gate.start();
        // Only an unknown kid skips discovery: a key rotation rarely moves the key set.
        let known = match trigger {
            Trigger::UnknownKid => entry.discovered(),
            Trigger::Start | Trigger::Periodic | Trigger::Requested => None,
        };

        let loaded = match load::load(&self.fetcher, &entry.config, known).await {
            Ok(loaded) => loaded,
            Err(error) => {
                entry.fail(fetch::chain(&error));
                let url = &entry.config.url;
                self.reporter
                    .failed(entry.name(), url, &error, retry_in, trigger);
                return false;
            }
        };

        let (source, kids) = (loaded.source.clone(), sorted_kids(&loaded.keys));
        let problems = loaded.problems.clone();
        let stored = entry.store(loaded);
        self.publish();

        self.reporter.loaded(&Success {
            issuer: entry.name(),
            source: &source,
            kids: &kids,
            problems: &problems,
            stored,
            trigger,
        });
        true
    }

    /// Rebuilds what [`Issuers::trusted`] returns from every issuer's current keys.
    fn publish(&self) {
        let _publishing = self
            .publishing
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let trusted: Arc<[IssuerTrust]> =
            self.entries.iter().filter_map(IssuerEntry::trust).collect();
        *self.trusted.write().unwrap_or_else(PoisonError::into_inner) = trusted;
    }
}
