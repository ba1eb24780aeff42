//! Per-source limits of the auth endpoint: a token bucket of grant requests, and a count of
//! open connections. Both tables are bounded, so a flood of sources cannot exhaust memory.

use std::{
    collections::HashMap,
    net::IpAddr,
    sync::Mutex,
    time::{Duration, Instant},
};

/// Sources tracked at most; past it, idle entries are dropped, then new sources share one.
const MAX_SOURCES: usize = 16_384;

struct Bucket {
    tokens: f64,
    updated: Instant,
}

/// Grant requests per source: `burst` at once, refilled at `per_second`.
pub struct RateLimiter {
    burst: f64,
    per_second: f64,
    buckets: Mutex<HashMap<IpAddr, Bucket>>,
}

impl RateLimiter {
    pub fn new(burst: u32, per_second: f64) -> Self {
        Self {
            burst: f64::from(burst),
            per_second,
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// Takes one request from the source's bucket, or says how long to wait.
    pub fn check(&self, source: IpAddr, now: Instant) -> Result<(), Duration> {
        let mut buckets = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
        if buckets.len() >= MAX_SOURCES && !buckets.contains_key(&source) {
            let (burst, per_second) = (self.burst, self.per_second);
            buckets.retain(|_, b| {
                b.tokens + now.duration_since(b.updated).as_secs_f64() * per_second < burst
            });
        }
        let key = if buckets.len() >= MAX_SOURCES {
            IpAddr::from([0u8; 16])
        } else {
            source
        };
        let bucket = buckets.entry(key).or_insert(Bucket {
            tokens: self.burst,
            updated: now,
        });

        let refill = now.duration_since(bucket.updated).as_secs_f64() * self.per_second;
        bucket.tokens = (bucket.tokens + refill).min(self.burst);
        bucket.updated = now;
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            Ok(())
        } else {
            Err(Duration::from_secs_f64(
                (1.0 - bucket.tokens) / self.per_second,
            ))
        }
    }
}

/// Open connections per source.
pub struct ConnectionCount {
    per_source: usize,
    open: Mutex<HashMap<IpAddr, usize>>,
}

impl ConnectionCount {
    pub fn new(per_source: usize) -> Self {
        Self {
            per_source,
            open: Mutex::new(HashMap::new()),
        }
    }

    /// Counts a new connection, unless the source already has its share.
    pub fn enter(&self, source: IpAddr) -> bool {
        let mut open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        let count = open.entry(source).or_default();
        if *count >= self.per_source {
            return false;
        }
        *count += 1;
        true
    }

    pub fn leave(&self, source: IpAddr) {
        let mut open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(count) = open.get_mut(&source) {
            *count -= 1;
            if *count == 0 {
                open.remove(&source);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_source_over_its_burst_waits_and_others_do_not() {
        let limiter = RateLimiter::new(3, 1.0);
        let (a, b, now) = (
            "10.0.0.1".parse().unwrap(),
            "10.0.0.2".parse().unwrap(),
            Instant::now(),
        );
        for _ in 0..3 {
            assert!(limiter.check(a, now).is_ok());
        }
        assert!(limiter.check(a, now).is_err());
        assert!(limiter.check(b, now).is_ok());
        assert!(limiter.check(a, now + Duration::from_secs(1)).is_ok());
    }

    #[test]
    fn connections_per_source_are_capped() {
        let count = ConnectionCount::new(2);
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        assert!(count.enter(a) && count.enter(a));
        assert!(!count.enter(a));
        count.leave(a);
        assert!(count.enter(a));
    }
}
