//! The rules that span tables: unique names, declared issuers, `[auth]` behind every token,
//! no port both always open and gated, and the kernel's limit on endpoint entries.

use std::collections::HashMap;
use std::ops::Range;

use super::error::Problems;
use super::raw::{RawPolicy, Text};
use super::validate::Placed;
use super::{Auth, Endpoint, Gate, MAX_ENDPOINT_ENTRIES, PortRange, Protocol};

pub(super) fn check(
    problems: &mut Problems,
    raw: &RawPolicy,
    endpoints: &[Placed<Endpoint>],
    gates: &[Placed<Gate>],
    auth: Option<&Auth>,
) {
    unique_names(
        problems,
        "[[endpoint]]",
        raw.endpoint.iter().map(|table| &table.get_ref().name),
    );
    unique_names(
        problems,
        "[[gate]]",
        raw.gate.iter().map(|table| &table.get_ref().name),
    );
    unique_names(
        problems,
        "[[issuer]]",
        raw.issuer.iter().map(|table| &table.get_ref().name),
    );
    needs_auth(problems, raw);
    issuers_declared(problems, raw);
    no_overlap(problems, endpoints, gates);
    no_gate_on_auth(problems, gates, auth);
    entries_within_limit(problems, endpoints);
}

/// The auth endpoint's own port stays open to everyone: a gate on it would lock every token
/// out.
fn no_gate_on_auth(problems: &mut Problems, gates: &[Placed<Gate>], auth: Option<&Auth>) {
    let Some(auth) = auth else { return };
    for gate in gates {
        let g = &gate.value;
        let taken = auth
            .listen
            .iter()
            .map(|a| a.port())
            .find(|p| g.ports.contains(*p));
        if let (Protocol::Tcp, Some(port)) = (g.protocol, taken) {
            problems.push(
                &gate.port,
                format!(
                    "port: gate {:?} claims tcp {port}, the [auth] endpoint's listen port: \
                     expected another port (tokens are presented there)",
                    g.name
                ),
            );
        }
    }
}

/// Names of one kind of table are unique; a missing or empty name was reported already.
fn unique_names<'r>(
    problems: &mut Problems,
    kind: &str,
    names: impl Iterator<Item = &'r Option<Text>>,
) {
    let mut first_seen: HashMap<&str, Range<usize>> = HashMap::new();
    for name in names.flatten().filter(|name| !name.get_ref().is_empty()) {
        match first_seen.get(name.get_ref().as_str()) {
            Some(first) => {
                let line = problems.locate(first).line;
                problems.push(
                    &name.span(),
                    format!(
                        "name: {:?} is already the name of the {kind} on line {line}",
                        name.get_ref()
                    ),
                );
            }
            None => {
                first_seen.insert(name.get_ref(), name.span());
            }
        }
    }
}

/// Issuers and gates are only useful behind `[auth]`: without it no token can be presented.
fn needs_auth(problems: &mut Problems, raw: &RawPolicy) {
    if raw.auth.is_some() {
        return;
    }

    for gate in &raw.gate {
        problems.push(
            &gate.span(),
            "[[gate]] needs an [auth] table: without it no client can present a token to open it",
        );
    }
    for issuer in &raw.issuer {
        problems.push(
            &issuer.span(),
            "[[issuer]] needs an [auth] table: without it no client can present its tokens",
        );
    }
}

/// A gate's `issuers` name `[[issuer]]` tables of the file.
fn issuers_declared(problems: &mut Problems, raw: &RawPolicy) {
    let declared: Vec<&str> = raw
        .issuer
        .iter()
        .filter_map(|table| table.get_ref().name.as_ref())
        .map(|name| name.get_ref().as_str())
        .collect();
    let known = match declared.as_slice() {
        [] => "none is declared".to_owned(),
        names => {
            let quoted: Vec<String> = names.iter().map(|name| format!("{name:?}")).collect();
            format!("declared: {}", quoted.join(", "))
        }
    };

    let lists = raw
        .gate
        .iter()
        .filter_map(|table| table.get_ref().issuers.as_ref());
    for name in lists.flat_map(|list| list.get_ref()) {
        let name_text = name.get_ref();
        if !declared.contains(&name_text.as_str()) {
            let message = format!(
                "issuers: expected the name of an [[issuer]], found {name_text:?} ({known})"
            );
            problems.push(&name.span(), message);
        }
    }
}

/// A port is either always open or opened by a token, never both.
fn no_overlap(problems: &mut Problems, endpoints: &[Placed<Endpoint>], gates: &[Placed<Gate>]) {
    for gate in gates {
        for endpoint in endpoints {
            let (g, e) = (&gate.value, &endpoint.value);
            if g.protocol != e.protocol || !g.ports.overlaps(&e.ports) {
                continue;
            }

            let shared = PortRange {
                first: g.ports.first.max(e.ports.first),
                last: g.ports.last.min(e.ports.last),
            };
            problems.push(
                &gate.port,
                format!(
                    "port: gate {:?} and endpoint {:?} both claim {} {shared}: expected a port \
                     to be either always open or opened by a token",
                    g.name, e.name, g.protocol
                ),
            );
        }
    }
}

fn entries_within_limit(problems: &mut Problems, endpoints: &[Placed<Endpoint>]) {
    let mut total: u64 = 0;
    for placed in endpoints {
        let endpoint = &placed.value;
        total += endpoint.ports.len() as u64 * endpoint.from.len() as u64;
        if total > MAX_ENDPOINT_ENTRIES {
            problems.push(
                &placed.table,
                format!(
                    "endpoint {:?} brings all endpoints to {total} port × prefix entries: \
                     expected at most {MAX_ENDPOINT_ENTRIES}; use fewer prefixes or ports",
                    endpoint.name
                ),
            );
            return;
        }
    }
}
