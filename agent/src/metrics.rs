//! Prometheus metrics on the policy's `[events] metrics` address: the kernel's packet
//! counters by reason and verdict, lost events, live grants, and the policy generation, in
//! the text exposition format. Plain HTTP: bind it to a local or management address.

use std::{
    fmt::Write as _,
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
};

use axum::{Router, extract::State, http::header, response::IntoResponse, routing::get};
use portguard_common::Reason;

use crate::engine::SharedEngine;

#[derive(Clone)]
struct Metrics {
    engine: SharedEngine,
    generation: Arc<AtomicU64>,
}

/// Serves `GET /metrics` on `address` until the task is dropped.
pub async fn serve(
    address: SocketAddr,
    engine: SharedEngine,
    generation: Arc<AtomicU64>,
) -> std::io::Result<()> {
    let listener = tokio::net::TcpListener::bind(address).await?;
    let router = Router::new()
        .route("/metrics", get(metrics))
        .with_state(Metrics { engine, generation });
    axum::serve(listener, router).await
}

async fn metrics(State(state): State<Metrics>) -> impl IntoResponse {
    let (counters, grants) = {
        let engine = state.engine.lock();
        (engine.kernel.counters().ok(), engine.book.list().len())
    };
    let body = render(
        counters.as_ref(),
        grants,
        state.generation.load(Ordering::Relaxed),
    );
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], body)
}

/// The exposition text.
pub fn render(
    counters: Option<&portguard_common::maps::Counters>,
    grants: usize,
    generation: u64,
) -> String {
    let mut out = String::new();
    out.push_str(
        "# HELP portguard_packets_total Packets judged by the guard, by reason and verdict.\n",
    );
    out.push_str("# TYPE portguard_packets_total counter\n");
    if let Some(counters) = counters {
        for reason in Reason::ALL {
            let verdict = if reason.passes() { "pass" } else { "drop" };
            let _ = writeln!(
                out,
                "portguard_packets_total{{reason=\"{}\",verdict=\"{verdict}\"}} {}",
                reason.name(),
                counters.packets[reason as usize]
            );
        }
        out.push_str(
            "# HELP portguard_events_lost_total Events the kernel could not log, by cause.\n",
        );
        out.push_str("# TYPE portguard_events_lost_total counter\n");
        let _ = writeln!(
            out,
            "portguard_events_lost_total{{cause=\"ring_full\"}} {}",
            counters.events_lost
        );
        let _ = writeln!(
            out,
            "portguard_events_lost_total{{cause=\"flood\"}} {}",
            counters.events_unattributed
        );
        out.push_str(
            "# HELP portguard_events_suppressed_total Events held back by the per-source budget.\n",
        );
        out.push_str("# TYPE portguard_events_suppressed_total counter\n");
        let _ = writeln!(
            out,
            "portguard_events_suppressed_total {}",
            counters.events_suppressed
        );
    }
    out.push_str("# HELP portguard_grants Live grants.\n# TYPE portguard_grants gauge\n");
    let _ = writeln!(out, "portguard_grants {grants}");
    out.push_str("# HELP portguard_policy_generation The policy generation in force.\n");
    out.push_str("# TYPE portguard_policy_generation gauge\n");
    let _ = writeln!(out, "portguard_policy_generation {generation}");
    out
}

#[cfg(test)]
mod tests {
    use portguard_common::maps::Counters;

    use super::*;

    #[test]
    fn counters_render_as_prometheus_text() {
        let mut counters = Counters::default();
        counters.packets[Reason::PortClosed as usize] = 7;
        counters.events_lost = 2;

        let text = render(Some(&counters), 3, 1);

        assert!(
            text.contains("portguard_packets_total{reason=\"port_closed\",verdict=\"drop\"} 7\n"),
            "{text}"
        );
        assert!(text.contains("portguard_packets_total{reason=\"endpoint\",verdict=\"pass\"} 0\n"));
        assert!(text.contains("portguard_events_lost_total{cause=\"ring_full\"} 2\n"));
        assert!(text.contains("portguard_grants 3\n"));
        assert!(text.contains("portguard_policy_generation 1\n"));
    }
}
