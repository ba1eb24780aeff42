//! Grants: the kernel-side cost of a SYN let in by a grant, with 10 and 100,000 live grants,
//! against the pass-only program; and the time from a grant request (the real auth endpoint
//! handler, in-process, over a real guard) to the first SYN the kernel lets in, against the
//! same kernel step without the request (a direct map write).

use std::{
    net::{IpAddr, Ipv4Addr},
    sync::Arc,
    time::{Duration, Instant, SystemTime},
};

use axum::{
    Extension,
    body::Body,
    http::{Request, StatusCode, header},
};
use aya::programs::{TestRun, TestRunOptions, Xdp};
use portguard::{
    api::{self, App, Limits, Peer, RateLimiter},
    compile::MapEntries,
    engine::{Engine, SharedEngine},
    events::EventLog,
    grants::{GrantBook, boot_ns_at, mapped},
    issuers::Issuers,
    loader::Guard,
    policy::{Algorithm, Gate, Issuer, OnExpiry, PortRange, Protocol},
    tokens::testkit::{ISS, claims, encoded, jwks, keys, validator},
};
use portguard_common::{
    craft::Frame,
    maps::{ENDPOINT_GATE, EndpointKey, EndpointValue, GrantKey, GrantValue, PROTO_TCP},
    packet::TCP_SYN,
    program_names,
};
use serde_json::json;
use tower::ServiceExt as _;

use crate::{Args, measure, print_row};

const HOST: [u8; 4] = [10, 0, 0, 1];
const GATED_PORT: u16 = 5432;
const XDP_PASS: u32 = 2;
/// Grant requests timed for the latency percentiles.
const REQUESTS: usize = 200;

pub fn run(args: &Args) -> anyhow::Result<()> {
    println!("\n## Grants in the kernel: a granted SYN\n");
    println!(
        "| case | ns/packet (median, min-max) | pass-only ns | ratio (median, min-max) | goal |"
    );
    println!("|---|---|---|---|---|");
    for count in [10u32, 100_000] {
        let mut guard = Guard::load()?;
        guard.apply(&gated())?;
        let expires = boot_ns_at(SystemTime::now() + Duration::from_secs(3600));
        for i in 0..count {
            let source = mapped(IpAddr::V4(client(i)));
            let value = GrantValue {
                expires_boot_ns: expires,
                grant_id: u64::from(i) + 1,
            };
            guard.insert_grant(&GrantKey::new(source, PROTO_TCP, GATED_PORT), &value)?;
        }
        let syn = Frame::ipv4(client(count / 2).octets(), HOST)
            .tcp(40000, GATED_PORT, TCP_SYN)
            .build();
        let row = measure(&mut guard, &syn, args)?;
        print_row(
            &format!("SYN let in by a grant, {count} live grants"),
            &row,
            Some(2.5),
        );
    }

    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?
        .block_on(latency())
}

/// Maps with one gate, on the gated port, and nothing else.
fn gated() -> MapEntries {
    let mut entries = MapEntries::default();
    let gate = EndpointValue {
        rule: 0,
        flags: ENDPOINT_GATE,
    };
    entries
        .endpoints
        .insert(EndpointKey::new(PROTO_TCP, GATED_PORT), gate);
    entries
}

/// The n-th client address: 10.(n / 65536).(n / 256).(n % 256), never the host's.
fn client(n: u32) -> Ipv4Addr {
    Ipv4Addr::new(10, 100 + (n >> 16) as u8, (n >> 8) as u8, n as u8)
}

async fn latency() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let fixture = keys();
    let key_file = dir.path().join("jwks.json");
    std::fs::write(&key_file, jwks(&[&fixture.ec.jwk]))?;
    let issuer = Issuer {
        name: "corp".into(),
        url: ISS.into(),
        algorithms: vec![Algorithm::Es256],
        jwks_file: Some(key_file),
    };
    let issuers = Issuers::new(&[issuer])?;
    issuers.refresh().await;

    let mut guard = Guard::load()?;
    guard.apply(&gated())?;
    let (book, _) = GrantBook::open(&dir.path().join("state"), &mut guard, SystemTime::now())?;
    let engine = SharedEngine::new(Engine {
        kernel: Box::new(guard),
        book,
    });
    let gate = Gate {
        name: "postgres".into(),
        ports: PortRange {
            first: GATED_PORT,
            last: GATED_PORT,
        },
        protocol: Protocol::Tcp,
        scope: "db:connect".into(),
        max_ttl: Some(Duration::from_secs(600)),
        on_expiry: OnExpiry::Keep,
        issuers: Vec::new(),
    };
    let limits = Limits::default();
    let app = App {
        validator: Arc::new(validator()),
        cache: Arc::default(),
        issuers,
        gates: portguard::api::Gates::new(vec![gate]),
        engine: engine.clone(),
        log: EventLog::file_only(&dir.path().join("events.jsonl"))?,
        limiter: Arc::new(RateLimiter::new(
            limits.requests_burst,
            limits.requests_per_second,
        )),
    };
    // Stdout would carry an event per request; the file keeps them out of the table.
    let router = api::router(app, &limits);

    let (mut full, mut kernel_only) = (Vec::new(), Vec::new());
    for i in 0..REQUESTS as u32 {
        // Each request its own client and token: no cache hit, a signature check each time.
        let source = client(1_000 + i);
        let token = encoded(
            &fixture.ec,
            &claims(json!({ "scope": "db:connect", "jti": format!("bench-{i}") })),
        );
        let request = Request::post("/v1/grants")
            .header(header::AUTHORIZATION, format!("Bearer {token}"))
            .body(Body::empty())?;
        let started = Instant::now();
        let response = router
            .clone()
            .layer(Extension(Peer(IpAddr::V4(source))))
            .oneshot(request)
            .await?;
        anyhow::ensure!(
            response.status() == StatusCode::CREATED,
            "grant refused: {}",
            response.status()
        );
        first_syn_passes(&engine, source)?;
        full.push(started.elapsed());

        // The kernel step alone: write the entry, then the first SYN.
        let other = client(50_000 + i);
        let started = Instant::now();
        {
            let mut engine = engine.lock();
            let guard = engine.kernel.guard_mut().expect("a real guard");
            let value = GrantValue {
                expires_boot_ns: boot_ns_at(SystemTime::now() + Duration::from_secs(60)),
                grant_id: 1,
            };
            guard.insert_grant(
                &GrantKey::new(mapped(IpAddr::V4(other)), PROTO_TCP, GATED_PORT),
                &value,
            )?;
        }
        first_syn_passes(&engine, other)?;
        kernel_only.push(started.elapsed());
    }

    println!(
        "\n## From grant request to the first SYN let in ({REQUESTS} requests, ES256 tokens)\n"
    );
    println!("| path | p50 | p99 |");
    println!("|---|---|---|");
    let (p50, p99) = (percentile(&mut full, 50), percentile(&mut full, 99));
    let (k50, k99) = (
        percentile(&mut kernel_only, 50),
        percentile(&mut kernel_only, 99),
    );
    println!("| request: validate, plan, ledger (fsync), map, first SYN | {p50:?} | {p99:?} |");
    println!("| baseline: map write, first SYN | {k50:?} | {k99:?} |");
    println!(
        "\nRatio at p50: {:.1}x the kernel step alone.",
        p50.as_secs_f64() / k50.as_secs_f64()
    );
    Ok(())
}

/// Runs SYNs from `source` through the guard until one passes.
fn first_syn_passes(engine: &SharedEngine, source: Ipv4Addr) -> anyhow::Result<()> {
    let syn = Frame::ipv4(source.octets(), HOST)
        .tcp(40000, GATED_PORT, TCP_SYN)
        .build();
    let mut engine = engine.lock();
    let guard = engine.kernel.guard_mut().expect("a real guard");
    let program: &mut Xdp = guard
        .ebpf_mut()
        .program_mut(program_names::XDP_GUARD)
        .expect("guard")
        .try_into()?;
    for _ in 0..1_000 {
        let mut options = TestRunOptions::new();
        options.data_in = Some(&syn);
        if program.test_run(options)?.return_value == XDP_PASS {
            return Ok(());
        }
    }
    anyhow::bail!("no SYN from {source} passed after the grant")
}

fn percentile(samples: &mut [Duration], p: usize) -> Duration {
    samples.sort();
    samples[(samples.len() * p / 100).min(samples.len() - 1)]
}
