//! The userspace test kit (feature `craft`): a builder of packets, a model of the guard's
//! maps, and proptest strategies that stress the parser. The unit tests here and the
//! privileged kernel tests share it; it needs std and is never built into the eBPF object.

mod expected;
mod frame;
mod model;
mod strategy;

pub use frame::{Ext, Frame, auth, dest_opts, fragment, hop_by_hop, routing, v6};
pub use model::{
    HOST_V4, HOST_V6, ModelMaps, SAMPLE_PORTS, SAMPLE_SOURCES_V4, SAMPLE_SOURCES_V6, prefix_matches,
};
pub use strategy::{ARB_MAX_LEN, ARB_MIN_LEN, arb_frame, arb_packet};
