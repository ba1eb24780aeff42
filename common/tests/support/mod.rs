//! What the integration tests share: the sample policy at fixed clocks, named sources, and
//! judging a frame in one call.
#![allow(dead_code, reason = "each test file uses a different part")]

use portguard_common::{
    Reason,
    craft::{Frame, HOST_V4, HOST_V6, ModelMaps, SAMPLE_SOURCES_V6},
    maps::{Addr, Config},
    packet::Headers,
    verdict::{Decision, judge},
};

pub const NS_PER_SEC: u64 = 1_000_000_000;
/// The clocks of [`sample`]: well past boot, so that expired grants and stale flows exist.
pub const BOOT_NS: u64 = 10_000 * NS_PER_SEC;
pub const COARSE_NS: u64 = 10_000 * NS_PER_SEC;

/// In 10.0.0.0/8 (TCP 22), granted TCP 5432 and UDP 8080.
pub const PEER_V4: [u8; 4] = [10, 0, 0, 5];
/// In 2001:db8::/32 (TCP 22), granted TCP 5432.
pub const PEER_V6: Addr = SAMPLE_SOURCES_V6[0];
/// Outside every prefix and grant of the sample policy.
pub const STRANGER_V4: [u8; 4] = [203, 0, 113, 9];
pub const STRANGER_V6: Addr = SAMPLE_SOURCES_V6[4];

pub fn sample() -> ModelMaps {
    ModelMaps::sample(BOOT_NS, COARSE_NS)
}

/// Enforce mode, essential ICMP only.
/// Enforce mode, with the flag the sample's cut port (TCP 5432) needs.
pub fn enforce() -> Config {
    Config {
        flags: portguard_common::maps::CONFIG_CUT_PORTS,
        ..Config::default()
    }
}

pub fn judge_bytes(bytes: &[u8], maps: &ModelMaps, config: &Config) -> Decision {
    let mut headers = Headers::default();
    judge(bytes, config, maps, &mut headers)
}

/// The decision on a frame, under the sample policy in enforce mode.
pub fn decision(frame: &Frame) -> Decision {
    judge_bytes(&frame.build(), &sample(), &enforce())
}

pub fn reason(frame: &Frame) -> Reason {
    decision(frame).reason
}

pub fn from_peer_v4() -> Frame {
    Frame::ipv4(PEER_V4, HOST_V4)
}

pub fn from_peer_v6() -> Frame {
    Frame::ipv6(PEER_V6, HOST_V6)
}
