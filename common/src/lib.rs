//! What the portguard kernel programs and agent must agree on: map layouts, verdict reasons,
//! and the one packet parser and verdict function that both run.
#![cfg_attr(not(test), no_std)]

#[cfg(any(test, feature = "craft"))]
pub mod craft;
pub mod maps;
pub mod packet;
pub mod reason;
pub mod verdict;

pub use reason::Reason;

/// Names of the maps in the eBPF object, as the agent looks them up.
pub mod map_names {
    pub const ENDPOINTS: &str = "PG_ENDPOINTS";
    pub const ENDPOINT_PREFIXES: &str = "PG_ENDPOINT_PREFIXES";
    pub const GRANTS: &str = "PG_GRANTS";
    pub const UDP_FLOWS: &str = "PG_UDP_FLOWS";
    pub const COUNTERS: &str = "PG_COUNTERS";
    pub const CONFIG: &str = "PG_CONFIG";
    pub const EVENTS: &str = "PG_EVENTS";
    pub const EVENT_RATE: &str = "PG_EVENT_RATE";
    pub const REPORT_WINDOW: &str = "PG_REPORT_WINDOW";

    /// Every map of the object: the ones the agent pins.
    pub const ALL: [&str; 9] = [
        ENDPOINTS,
        ENDPOINT_PREFIXES,
        GRANTS,
        UDP_FLOWS,
        COUNTERS,
        CONFIG,
        EVENTS,
        EVENT_RATE,
        REPORT_WINDOW,
    ];
}

/// Names of the programs in the eBPF object.
pub mod program_names {
    pub const XDP_GUARD: &str = "portguard_xdp";
    pub const TC_EGRESS: &str = "portguard_egress";
    pub const XDP_PASS: &str = "portguard_xdp_pass";
}
