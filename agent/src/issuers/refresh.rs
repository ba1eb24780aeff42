//! The background task: each issuer's keys read at start-up, retried with backoff while the
//! issuer cannot be read, and refreshed periodically once they are.

use std::sync::Arc;
use std::time::Duration;

use tokio::task::JoinSet;

use super::report::Trigger;
use super::{Issuers, Shared, Timings};
use crate::events::EventLog;

/// Doubling delays between retries, from `first` up to `max`.
#[derive(Debug, Clone, Copy)]
struct Backoff {
    first: Duration,
    max: Duration,
    next: Duration,
}

impl Issuers {
    /// Reads every issuer's keys and keeps them fresh, reporting to `log`; runs until the
    /// task is dropped or aborted. An issuer that cannot be read is never fatal: it is
    /// retried after 1 s, 2 s, ... up to 60 s, and its gates stay shut until it answers.
    /// Failed refreshes keep the last good keys.
    pub async fn run(self, log: EventLog) {
        self.shared.reporter.attach(log);

        let mut watchers = JoinSet::new();
        for index in 0..self.shared.entries.len() {
            watchers.spawn(watch(Arc::clone(&self.shared), index));
        }
        while let Some(result) = watchers.join_next().await {
            if let Err(error) = result
                && error.is_panic()
            {
                tracing::error!(%error, "an issuer's key refresh stopped");
            }
        }
    }
}

/// Keeps one issuer's keys fresh, forever.
async fn watch(shared: Arc<Shared>, index: usize) {
    let entry = &shared.entries[index];
    let Timings {
        refresh,
        retry_first,
        retry_max,
        ..
    } = shared.timings;
    let mut backoff = Backoff::new(retry_first, retry_max);

    loop {
        let trigger = if entry.has_keys() {
            Trigger::Periodic
        } else {
            Trigger::Start
        };
        let succeeded = {
            let mut gate = entry.gate.lock().await;
            let retry_in = backoff.peek();
            shared
                .fetch(entry, &mut gate, trigger, Some(retry_in))
                .await
        };

        let wait = if succeeded {
            backoff.reset();
            refresh
        } else {
            backoff.advance()
        };
        tokio::time::sleep(wait).await;
    }
}

impl Backoff {
    fn new(first: Duration, max: Duration) -> Self {
        Self {
            first,
            max,
            next: first.min(max),
        }
    }

    /// The delay before the next retry, should the coming attempt fail.
    fn peek(&self) -> Duration {
        self.next
    }

    /// Returns the delay to wait now, and doubles the next one.
    fn advance(&mut self) -> Duration {
        let wait = self.next;
        self.next = (self.next * 2).min(self.max);
        wait
    }

    fn reset(&mut self) {
        self.next = self.first.min(self.max);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_its_ceiling_and_resets() {
        let mut backoff = Backoff::new(Duration::from_secs(1), Duration::from_mins(1));
        let waits: Vec<u64> = (0..8).map(|_| backoff.advance().as_secs()).collect();
        assert_eq!(waits, [1, 2, 4, 8, 16, 32, 60, 60]);

        backoff.reset();
        assert_eq!(backoff.peek(), Duration::from_secs(1));
    }
}
