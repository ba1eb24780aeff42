//! The guard and its grant book behind one lock: whoever opens, revokes or expires a grant
//! writes the kernel map and the ledger in one step, in one order.

use std::{
    sync::{Arc, Mutex, MutexGuard},
    time::SystemTime,
};

use portguard_common::maps::Counters;

use crate::{
    grants::{Grant, GrantBook, GrantError, GrantMap, Opened},
    interfaces::Interface,
    loader::{Guard, LoadError},
};

/// The kernel side as the engine uses it: the guard in production, a map in memory in the
/// HTTP API's tests.
pub trait Kernel: GrantMap + Send {
    fn counters(&self) -> Result<Counters, LoadError>;
    fn detach_all(&mut self) -> Vec<Interface>;
    /// The real guard behind this kernel, when there is one (benchmarks run its programs).
    fn guard_mut(&mut self) -> Option<&mut Guard> {
        None
    }
}

impl Kernel for Guard {
    fn counters(&self) -> Result<Counters, LoadError> {
        Guard::counters(self)
    }

    fn detach_all(&mut self) -> Vec<Interface> {
        Guard::detach_all(self)
    }

    fn guard_mut(&mut self) -> Option<&mut Guard> {
        Some(self)
    }
}

pub struct Engine {
    pub kernel: Box<dyn Kernel>,
    pub book: GrantBook,
}

/// The engine, shared by the auth endpoint, the control socket and the expiry task.
#[derive(Clone)]
pub struct SharedEngine(Arc<Mutex<Engine>>);

impl SharedEngine {
    pub fn new(engine: Engine) -> Self {
        Self(Arc::new(Mutex::new(engine)))
    }

    /// The engine; a panic while it was held leaves it usable (every step is idempotent).
    pub fn lock(&self) -> MutexGuard<'_, Engine> {
        self.0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    pub fn open(&self, grant: Grant, now: SystemTime) -> Result<Opened, GrantError> {
        let mut engine = self.lock();
        let Engine { kernel, book } = &mut *engine;
        book.open_grant(grant, kernel.as_mut(), now)
    }

    pub fn revoke(&self, id: &str, now: SystemTime) -> Result<Grant, GrantError> {
        let mut engine = self.lock();
        let Engine { kernel, book } = &mut *engine;
        book.revoke(id, kernel.as_mut(), now)
    }

    pub fn expire(&self, now: SystemTime) -> Result<Vec<Grant>, GrantError> {
        let mut engine = self.lock();
        let Engine { kernel, book } = &mut *engine;
        book.expire(kernel.as_mut(), now)
    }

    pub fn grant(&self, id: &str) -> Option<Grant> {
        self.lock().book.get(id).cloned()
    }

    pub fn grants(&self) -> Vec<Grant> {
        self.lock().book.list()
    }
}

/// Longest wait between two looks at the grants' expiries (a grant opened meanwhile may
/// expire sooner than the one waited for).
const EXPIRY_TICK: std::time::Duration = std::time::Duration::from_millis(500);

/// Notices expired grants, removes them from ledger and kernel, and logs `grant.expired`.
/// The kernel refuses an expired grant on its own; this keeps the books and the log true.
pub async fn watch_expiry(engine: SharedEngine, log: crate::events::EventLog) {
    loop {
        let now = SystemTime::now();
        let wait = engine
            .lock()
            .book
            .next_expiry()
            .and_then(|at| at.duration_since(now).ok())
            .map_or(EXPIRY_TICK, |until| until.min(EXPIRY_TICK));
        tokio::time::sleep(wait).await;

        match engine.expire(SystemTime::now()) {
            Ok(expired) => {
                for grant in expired {
                    log.emit(grant.event("grant.expired"));
                }
            }
            Err(error) => tracing::error!(error = %anyhow::Error::from(error), "expire grants"),
        }
    }
}
