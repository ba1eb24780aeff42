//! Wall-clock expiries turned into the kernel's clock for grants: `CLOCK_BOOTTIME`
//! nanoseconds, which keep counting through suspend, so a suspended host cannot stretch a
//! grant.

use std::time::SystemTime;

use nix::time::{ClockId, clock_gettime};

/// The `CLOCK_BOOTTIME` reading at which `at` (wall clock) comes; 0 when it has passed.
pub fn boot_ns_at(at: SystemTime) -> u64 {
    let now = SystemTime::now();
    let boot_now = match clock_gettime(ClockId::CLOCK_BOOTTIME) {
        Ok(t) => t.tv_sec() as u64 * 1_000_000_000 + t.tv_nsec() as u64,
        Err(_) => return 0,
    };
    match at.duration_since(now) {
        Ok(ahead) => boot_now.saturating_add(ahead.as_nanos() as u64),
        Err(_) => 0,
    }
}
