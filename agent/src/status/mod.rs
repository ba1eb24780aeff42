//! What the kernel enforces right now, for `portguard status`: each guarded interface checked
//! against the kernel's own view (netlink for XDP, the tcx query for egress), the mode and
//! generation read back from the config map, the counters, the grants and the issuers.

pub mod pinned;

use futures_util::TryStreamExt as _;
use portguard_common::{
    Reason,
    maps::{Config, Counters, MODE_MONITOR},
};
use rtnetlink::packet_route::link::{LinkAttribute, LinkXdp};
use serde::Serialize;
use serde_json::{Map, Value};

use crate::{engine::SharedEngine, issuers::Issuers, policy::Mode};

/// One guarded interface, as the agent attached it and as the kernel has it.
#[derive(Debug, Clone, Serialize)]
pub struct InterfaceStatus {
    pub name: String,
    pub ifindex: u32,
    pub xdp_mode: &'static str,
    /// The kernel's id of the XDP link (the same across restarts that adopt it).
    pub link_id: u32,
    /// The kernel runs our XDP program on this interface.
    pub xdp_attached: bool,
    /// The kernel runs our UDP flow recorder on this interface's tcx egress.
    pub egress_attached: bool,
}

/// What the policy asked for, to compare with what the kernel has.
#[derive(Clone)]
pub struct Expected {
    pub policy: std::path::PathBuf,
    pub mode: Mode,
    pub generation: u64,
    pub issuers: Option<Issuers>,
}

/// The whole status, as JSON; `enforcing` is false when the kernel differs from the policy.
pub async fn collect(engine: &SharedEngine, expected: &Expected) -> Value {
    let (interfaces, program_ids, config, counters, grants, pin_dir, ledger_error) = {
        let mut engine = engine.lock();
        let grants = engine.book.list().len();
        let ledger_error = engine.book.ledger_error().map(str::to_owned);
        let counters = engine.kernel.counters().ok();
        match engine.kernel.guard_mut() {
            Some(guard) => (
                guard
                    .attachments()
                    .iter()
                    .map(|a| (a.interface.clone(), a.mode.as_str(), a.link_id))
                    .collect(),
                guard.program_ids().ok(),
                guard.config().ok(),
                counters,
                grants,
                guard.pin_dir().map(|p| p.display().to_string()),
                ledger_error,
            ),
            None => (Vec::new(), None, None, counters, grants, None, ledger_error),
        }
    };

    let mut checked = Vec::new();
    for (interface, xdp_mode, link_id) in interfaces {
        let (xdp, egress) = match program_ids {
            Some((xdp_id, egress_id)) => (
                xdp_program_ids(interface.index).await.contains(&xdp_id),
                egress_program_ids(&interface.name).contains(&egress_id),
            ),
            None => (false, false),
        };
        checked.push(InterfaceStatus {
            name: interface.name,
            ifindex: interface.index,
            xdp_mode,
            link_id,
            xdp_attached: xdp,
            egress_attached: egress,
        });
    }

    let mode_in_kernel = config.map(|c| {
        if c.mode == MODE_MONITOR {
            "monitor"
        } else {
            "enforce"
        }
    });
    let enforcing = !checked.is_empty()
        && checked.iter().all(|i| i.xdp_attached && i.egress_attached)
        && mode_in_kernel == Some(expected.mode.as_str())
        && config.is_some_and(|c: Config| c.generation == expected.generation);

    let mut status = Map::new();
    status.insert("enforcing".into(), enforcing.into());
    status.insert(
        "policy".into(),
        expected.policy.display().to_string().into(),
    );
    status.insert("mode".into(), expected.mode.as_str().into());
    status.insert("mode_in_kernel".into(), mode_in_kernel.into());
    status.insert("generation".into(), expected.generation.into());
    status.insert(
        "generation_in_kernel".into(),
        config.map(|c| c.generation).into(),
    );
    status.insert(
        "interfaces".into(),
        serde_json::to_value(&checked).unwrap_or_default(),
    );
    status.insert("grants".into(), grants.into());
    // Where the guard is pinned: what keeps it enforcing while no agent runs.
    status.insert("pin_dir".into(), pin_dir.into());
    status.insert("ledger_error".into(), ledger_error.into());
    if let Some(counters) = counters {
        status.insert("packets".into(), packets(&counters).into());
        status.insert("events_lost".into(), counters.events_lost.into());
        status.insert(
            "events_unattributed".into(),
            counters.events_unattributed.into(),
        );
    }
    if let Some(issuers) = &expected.issuers {
        let list: Vec<Value> = issuers.status().iter().map(issuer).collect();
        status.insert("issuers".into(), list.into());
    }
    Value::Object(status)
}

/// An issuer's keys and how old they are.
fn issuer(status: &crate::issuers::IssuerStatus) -> Value {
    let age = status
        .last_success
        .and_then(|at| std::time::SystemTime::now().duration_since(at).ok())
        .map(|age| age.as_secs());
    serde_json::json!({
        "name": status.name,
        "url": status.url,
        "keys": status.keys,
        "kids": status.kids,
        "keys_age_seconds": age,
        "last_error": status.last_error,
    })
}

/// The status for people: a line a fact.
pub fn describe(status: &Value) -> String {
    let mut out = String::new();
    let enforcing = status["enforcing"].as_bool().unwrap_or(false);
    out.push_str(if enforcing {
        "enforcing: yes, the kernel has what the policy asks for\n"
    } else {
        "enforcing: NO, the kernel differs from the policy (see below)\n"
    });
    out.push_str(&format!(
        "policy: {} (generation {}, mode {}; in the kernel: generation {}, mode {})\n",
        status["policy"].as_str().unwrap_or("?"),
        status["generation"],
        status["mode"].as_str().unwrap_or("?"),
        status["generation_in_kernel"],
        status["mode_in_kernel"].as_str().unwrap_or("none"),
    ));
    for interface in status["interfaces"].as_array().into_iter().flatten() {
        let yes = |key: &str| {
            if interface[key].as_bool() == Some(true) {
                "yes"
            } else {
                "NO"
            }
        };
        out.push_str(&format!(
            "interface {} (index {}): XDP {} ({}), egress recorder {}\n",
            interface["name"].as_str().unwrap_or("?"),
            interface["ifindex"],
            yes("xdp_attached"),
            interface["xdp_mode"].as_str().unwrap_or("?"),
            yes("egress_attached"),
        ));
    }
    out.push_str(&format!("grants: {} live\n", status["grants"]));
    match status["pin_dir"].as_str() {
        Some(dir) => out.push_str(&format!(
            "pinned at {dir}: the guard stays when the agent stops\n"
        )),
        None => out.push_str("not pinned: the guard goes with the agent\n"),
    }
    if let Some(error) = status["ledger_error"].as_str() {
        out.push_str(&format!(
            "ledger: NOT WRITTEN ({error}); grants hold in the kernel until they expire\n"
        ));
    }
    if let Some(packets) = status["packets"].as_object() {
        let counted: Vec<String> = packets
            .iter()
            .filter(|(_, n)| n.as_u64().unwrap_or(0) > 0)
            .map(|(reason, n)| format!("{reason} {n}"))
            .collect();
        out.push_str(&format!("packets: {}\n", counted.join(", ")));
        out.push_str(&format!(
            "events lost: {} (ring full), {} (flood)\n",
            status["events_lost"], status["events_unattributed"]
        ));
    }
    for issuer in status["issuers"].as_array().into_iter().flatten() {
        let error = issuer["last_error"].as_str();
        out.push_str(&format!(
            "issuer {}: {} key(s), fetched {} s ago{}\n",
            issuer["name"].as_str().unwrap_or("?"),
            issuer["keys"],
            issuer["keys_age_seconds"],
            error
                .map(|e| format!(", last error: {e}"))
                .unwrap_or_default(),
        ));
    }
    out
}

fn packets(counters: &Counters) -> Map<String, Value> {
    Reason::ALL
        .iter()
        .map(|r| (r.name().to_owned(), counters.packets[*r as usize].into()))
        .collect()
}

/// The XDP program ids the kernel reports for an interface (any attach mode).
async fn xdp_program_ids(ifindex: u32) -> Vec<u32> {
    let Ok((connection, handle, _)) = rtnetlink::new_connection() else {
        return Vec::new();
    };
    let task = tokio::spawn(connection);
    let mut ids = Vec::new();
    let mut links = handle.link().get().match_index(ifindex).execute();
    while let Ok(Some(link)) = links.try_next().await {
        for attribute in link.attributes {
            if let LinkAttribute::Xdp(xdp) = attribute {
                for entry in xdp {
                    match entry {
                        LinkXdp::ProgId(id) | LinkXdp::DrvProgId(id) | LinkXdp::SkbProgId(id) => {
                            ids.push(id)
                        }
                        _ => {}
                    }
                }
            }
        }
    }
    task.abort();
    ids
}

/// The program ids on an interface's tcx egress.
fn egress_program_ids(interface: &str) -> Vec<u32> {
    aya::programs::SchedClassifier::query_tcx(interface, aya::programs::TcAttachType::Egress)
        .map(|(_, programs)| programs.iter().map(|p| p.id()).collect())
        .unwrap_or_default()
}
