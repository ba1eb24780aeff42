//! portguard's agent as a library: the daemon's parts, also used by the privileged tests and
//! the benchmarks.

pub mod api;
pub mod check;
pub mod compile;
pub mod control;
pub mod engine;
pub mod events;
pub mod grants;
pub mod hotplug;
pub mod interfaces;
pub mod issuers;
pub mod loader;
pub mod lockout;
pub mod metrics;
pub mod notify;
pub mod open;
pub mod policy;
pub mod run;
pub mod status;
pub mod tokens;
