//! portguard's agent as a library: the daemon's parts, also used by the privileged tests.

pub mod policy;
