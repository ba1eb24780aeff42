//! The guard's maps and programs. The decisions themselves live in `portguard_common`, shared
//! with the agent and its tests; this file only binds them to kernel memory and helpers.

use aya_ebpf::{
    bindings::{TC_ACT_UNSPEC, xdp_action},
    helpers::{bpf_ktime_get_boot_ns, bpf_ktime_get_coarse_ns},
    macros::{classifier, map, xdp},
    maps::{
        Array, HashMap, LruHashMap, PerCpuArray, RingBuf,
        lpm_trie::{Key, LpmTrie},
    },
    programs::{TcContext, XdpContext},
};
use portguard_common::{
    Reason,
    maps::{
        Addr, Config, Counters, DEFAULT_EVENTS_PER_SOURCE_PER_SEC, DEFAULT_REPORTS_PER_CPU_PER_SEC,
        EVENT_RING_BYTES, EndpointKey, EndpointValue, FlowEvent, FlowKey, GrantKey, GrantValue,
        MAX_ENDPOINT_PREFIXES, MAX_ENDPOINTS, MAX_EVENT_SOURCES, MAX_GRANTS, MAX_UDP_FLOWS,
        PREFIX_KEY_PORT_BITS, PrefixKeyData, RateState,
    },
    packet::{Headers, Packet, parse},
    verdict::{Decision, GuardMaps, judge, outbound_flow_key},
};

const BPF_F_NO_PREALLOC: u32 = 1;
const NS_PER_SEC: u64 = 1_000_000_000;
/// An outbound flow's timestamp is rewritten at most this often: a write on every datagram
/// costs several times a lookup.
const FLOW_REFRESH_NS: u64 = NS_PER_SEC;

#[map(name = "PG_ENDPOINTS")]
static ENDPOINTS: HashMap<EndpointKey, EndpointValue> = HashMap::with_max_entries(MAX_ENDPOINTS, 0);

#[map(name = "PG_ENDPOINT_PREFIXES")]
static ENDPOINT_PREFIXES: LpmTrie<PrefixKeyData, u32> =
    LpmTrie::with_max_entries(MAX_ENDPOINT_PREFIXES, BPF_F_NO_PREALLOC);

#[map(name = "PG_GRANTS")]
static GRANTS: HashMap<GrantKey, GrantValue> = HashMap::with_max_entries(MAX_GRANTS, 0);

#[map(name = "PG_UDP_FLOWS")]
static UDP_FLOWS: LruHashMap<FlowKey, u64> = LruHashMap::with_max_entries(MAX_UDP_FLOWS, 0);

#[map(name = "PG_COUNTERS")]
static COUNTERS: PerCpuArray<Counters> = PerCpuArray::with_max_entries(1, 0);

#[map(name = "PG_CONFIG")]
static CONFIG: Array<Config> = Array::with_max_entries(1, 0);

#[map(name = "PG_EVENTS")]
static EVENTS: RingBuf = RingBuf::with_byte_size(EVENT_RING_BYTES, 0);

#[map(name = "PG_EVENT_RATE")]
static EVENT_RATE: LruHashMap<Addr, RateState> = LruHashMap::with_max_entries(MAX_EVENT_SOURCES, 0);

/// Packet memory from `start` to the end that the context's `data_end` field holds.
struct Frame {
    start: usize,
    /// The `data_end` field of the program's context (`xdp_md` or `__sk_buff`).
    end_field: *const u32,
}

impl Frame {
    fn xdp(ctx: &XdpContext) -> Self {
        // SAFETY: ctx.ctx points at the xdp_md the kernel passed to the program.
        Self {
            start: ctx.data(),
            end_field: unsafe { &raw const (*ctx.ctx).data_end },
        }
    }

    fn tc(ctx: &TcContext) -> Self {
        // SAFETY: ctx.skb.skb points at the __sk_buff the kernel passed to the program.
        Self {
            start: ctx.data(),
            end_field: unsafe { &raw const (*ctx.skb.skb).data_end },
        }
    }
}

impl Packet for Frame {
    #[inline(always)]
    fn read<const N: usize>(&self, offset: usize) -> Option<[u8; N]> {
        let at = self.start + offset;
        // The end is loaded afresh (volatile) for every read. Otherwise LLVM proves a check
        // redundant from an earlier one plus the IP length fields, drops it, and the verifier,
        // which cannot follow that proof, rejects the load.
        // SAFETY: end_field points into the program's context, valid while it runs.
        let end = unsafe { core::ptr::read_volatile(self.end_field) } as usize;
        if at + N > end {
            return None;
        }
        // SAFETY: the check above, against the packet end the verifier tracks, keeps
        // [at, at + N) inside the packet; [u8; N] has no alignment requirement.
        Some(unsafe { *(at as *const [u8; N]) })
    }
}

/// The guard's maps as the verdict function sees them.
struct KernelMaps;

impl GuardMaps for KernelMaps {
    #[inline(always)]
    fn endpoint(&self, key: &EndpointKey) -> Option<EndpointValue> {
        // SAFETY: the pointer comes from bpf_map_lookup_elem and is read at once.
        ENDPOINTS.get_ptr(key).map(|value| unsafe { *value })
    }

    #[inline(always)]
    fn endpoint_prefix(&self, key: &PrefixKeyData) -> Option<u32> {
        ENDPOINT_PREFIXES
            .get(Key::new(PREFIX_KEY_PORT_BITS + 128, *key))
            .copied()
    }

    #[inline(always)]
    fn grant(&self, key: &GrantKey) -> Option<GrantValue> {
        // SAFETY: as for endpoints.
        GRANTS.get_ptr(key).map(|value| unsafe { *value })
    }

    #[inline(always)]
    fn udp_flow(&self, key: &FlowKey) -> Option<u64> {
        // SAFETY: as for endpoints.
        UDP_FLOWS.get_ptr(key).map(|value| unsafe { *value })
    }

    #[inline(always)]
    fn boot_ns(&self) -> u64 {
        // SAFETY: a helper without arguments (kernel 5.8+).
        unsafe { bpf_ktime_get_boot_ns() }
    }

    #[inline(always)]
    fn coarse_ns(&self) -> u64 {
        // SAFETY: a helper without arguments (kernel 5.11+).
        unsafe { bpf_ktime_get_coarse_ns() }
    }
}

#[inline(always)]
fn config() -> Config {
    CONFIG.get(0).copied().unwrap_or_default()
}

#[inline(always)]
fn counters() -> Option<&'static mut Counters> {
    // SAFETY: a per-CPU slot, touched only by this CPU while the program runs.
    COUNTERS
        .get_ptr_mut(0)
        .map(|counters| unsafe { &mut *counters })
}

#[xdp]
pub fn portguard_xdp(ctx: XdpContext) -> u32 {
    let frame = Frame::xdp(&ctx);
    let config = config();
    let mut headers = Headers::default();
    let decision = judge(&frame, &config, &KernelMaps, &mut headers);
    let passes = decision.passes(&config);

    if let Some(counters) = counters() {
        // The mask is for the verifier: every reason code is below Reason::COUNT (64).
        counters.packets[decision.reason as usize & (Reason::COUNT - 1)] += 1;
        if is_reported(decision.reason) {
            report(&ctx, &config, &headers, &decision, passes, counters);
        }
    }

    if passes {
        xdp_action::XDP_PASS
    } else {
        xdp_action::XDP_DROP
    }
}

/// Connections let in and packets dropped are worth an event; replies, established traffic,
/// essential ICMP and non-IP are only counted.
#[inline(always)]
fn is_reported(reason: Reason) -> bool {
    matches!(reason, Reason::Endpoint | Reason::Grant) || !reason.passes()
}

/// This CPU's count of reports in the current second.
#[repr(C)]
#[derive(Clone, Copy)]
struct ReportWindow {
    start_ns: u64,
    reports: u64,
}

#[map(name = "PG_REPORT_WINDOW")]
static REPORT_WINDOW: PerCpuArray<ReportWindow> = PerCpuArray::with_max_entries(1, 0);

/// Whether this CPU has already attributed its budget of reports this second: under a flood
/// the per-source lookup (a hash of 16 bytes) is spared, and the report only counted.
#[inline(always)]
fn over_cpu_budget(config: &Config, now: u64) -> bool {
    let Some(window) = REPORT_WINDOW.get_ptr_mut(0) else {
        return false;
    };
    // SAFETY: a per-CPU slot, touched only by this CPU while the program runs.
    let window = unsafe { &mut *window };
    if now.wrapping_sub(window.start_ns) >= NS_PER_SEC {
        window.start_ns = now;
        window.reports = 0;
    }
    let budget = if config.reports_per_cpu_per_sec == 0 {
        DEFAULT_REPORTS_PER_CPU_PER_SEC
    } else {
        config.reports_per_cpu_per_sec
    };
    window.reports += 1;
    window.reports > u64::from(budget)
}

/// Writes an event unless its source is over its budget for this second.
#[inline(always)]
fn report(
    ctx: &XdpContext,
    config: &Config,
    headers: &Headers,
    decision: &Decision,
    passes: bool,
    counters: &mut Counters,
) {
    let now = KernelMaps.coarse_ns();
    if over_cpu_budget(config, now) {
        counters.events_unattributed += 1;
        return;
    }
    let budget = if config.events_per_source_per_sec == 0 {
        DEFAULT_EVENTS_PER_SOURCE_PER_SEC
    } else {
        config.events_per_source_per_sec
    };

    // Racing CPUs may let a few more events through than the budget: the budget protects the
    // log, while the counters stay exact.
    let suppressed = match EVENT_RATE.get_ptr_mut(&headers.source) {
        Some(state) => {
            // SAFETY: a pointer from bpf_map_lookup_elem, valid for this program run.
            let state = unsafe { &mut *state };
            if now.wrapping_sub(state.window_start_ns) >= NS_PER_SEC {
                state.window_start_ns = now;
                state.sent = 0;
            }
            if state.sent >= budget {
                state.suppressed = state.suppressed.wrapping_add(1);
                counters.events_suppressed += 1;
                return;
            }
            state.sent += 1;
            core::mem::replace(&mut state.suppressed, 0)
        }
        None => {
            let state = RateState {
                window_start_ns: now,
                sent: 1,
                suppressed: 0,
            };
            let _ = EVENT_RATE.insert(&headers.source, &state, 0);
            0
        }
    };

    let Some(mut entry) = EVENTS.reserve::<FlowEvent>(0) else {
        counters.events_lost += 1;
        return;
    };
    entry.write(FlowEvent {
        ts_ns: now,
        rule: decision.rule,
        source: headers.source,
        destination: headers.destination,
        source_port: headers.source_port,
        destination_port: headers.destination_port,
        ifindex: ctx.ingress_ifindex() as u32,
        suppressed,
        reason: decision.reason as u8,
        protocol: headers.protocol,
        dropped: (!passes) as u8,
        family: headers.family,
    });
    entry.submit(0);
}

/// Records the host's outbound UDP flows, so that the guard lets their answers in. It never
/// decides anything: it always hands the packet on (TCX_NEXT).
#[classifier]
pub fn portguard_egress(ctx: TcContext) -> i32 {
    let frame = Frame::tc(&ctx);
    let mut headers = Headers::default();
    if parse(&frame, &mut headers).is_err() {
        return TC_ACT_UNSPEC;
    }
    let Some(key) = outbound_flow_key(&headers) else {
        return TC_ACT_UNSPEC;
    };

    let now = KernelMaps.coarse_ns();
    match UDP_FLOWS.get_ptr_mut(&key) {
        // SAFETY: a pointer from bpf_map_lookup_elem, valid for this program run.
        Some(last_sent) => unsafe {
            if now.wrapping_sub(*last_sent) >= FLOW_REFRESH_NS {
                *last_sent = now;
            }
        },
        None => {
            let _ = UDP_FLOWS.insert(&key, &now, 0);
            if let Some(counters) = counters() {
                counters.udp_flows_recorded += 1;
            }
        }
    }
    TC_ACT_UNSPEC
}

/// The baseline of the benchmarks: an XDP program that only passes.
#[xdp]
pub fn portguard_xdp_pass(_ctx: XdpContext) -> u32 {
    xdp_action::XDP_PASS
}
