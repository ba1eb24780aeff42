//! From the raw file to a [`Policy`]: each table read on its own, then the rules that span
//! tables. Every problem is collected; the policy is refused only at the end, so that one
//! run of `portguard check` shows all of them.

use std::ops::Range;
use std::path::Path;

use ipnet::IpNet;
use toml::Spanned;

use super::error::{Problem, Problems};
use super::fields::{Table, choice, duration, each, name, non_empty, port_range};
use super::raw::{RawEndpoint, RawEvents, RawGate, RawGuard, RawPolicy, Text, TextList};
use super::{
    Endpoint, EndpointLocation, Events, Gate, Guard, IcmpPolicy, Interfaces, Locations, Mode,
    OnExpiry, Policy, Protocol, auth, duration as bounds, network, rules,
};

const MODES: &[(&str, Mode)] = &[("enforce", Mode::Enforce), ("monitor", Mode::Monitor)];
const ICMP: &[(&str, IcmpPolicy)] = &[
    ("essential", IcmpPolicy::Essential),
    ("all", IcmpPolicy::All),
];
const PROTOCOLS: &[(&str, Protocol)] = &[("tcp", Protocol::Tcp), ("udp", Protocol::Udp)];
const ON_EXPIRY: &[(&str, OnExpiry)] = &[("keep", OnExpiry::Keep), ("cut", OnExpiry::Cut)];

/// An endpoint or a gate, with the spans that the rules across tables point at.
pub(super) struct Placed<T> {
    pub value: T,
    pub table: Range<usize>,
    pub port: Range<usize>,
    pub from: Option<Range<usize>>,
}

pub(super) fn validate(path: &Path, raw: &RawPolicy, text: &str) -> Result<Policy, Vec<Problem>> {
    let mut problems = Problems::new(text);

    let guard = raw
        .guard
        .as_ref()
        .map_or_else(Guard::default, |table| guard(&mut problems, table));
    let endpoints: Vec<_> = raw
        .endpoint
        .iter()
        .filter_map(|table| endpoint(&mut problems, table))
        .collect();
    let gates: Vec<_> = raw
        .gate
        .iter()
        .filter_map(|table| gate(&mut problems, table))
        .collect();
    let auth = raw
        .auth
        .as_ref()
        .and_then(|table| auth::auth(&mut problems, table));
    let issuers = raw
        .issuer
        .iter()
        .filter_map(|table| auth::issuer(&mut problems, table))
        .collect();
    let events = raw
        .events
        .as_ref()
        .map(|table| events(&mut problems, table))
        .unwrap_or_default();

    rules::check(&mut problems, raw, &endpoints, &gates, auth.as_ref());

    let locations = locations(&problems, raw, &endpoints, &gates);
    let policy = Policy {
        path: path.to_owned(),
        guard,
        endpoints: endpoints.into_iter().map(|placed| placed.value).collect(),
        auth,
        issuers,
        gates: gates.into_iter().map(|placed| placed.value).collect(),
        events,
        locations,
    };
    problems.finish(policy)
}

fn guard(problems: &mut Problems, raw: &Spanned<RawGuard>) -> Guard {
    let fields = raw.get_ref();
    let defaults = Guard::default();

    let interfaces = fields
        .interfaces
        .as_ref()
        .map(|list| interfaces(problems, list));
    let mode = fields
        .mode
        .as_ref()
        .and_then(|text| choice(problems, "mode", text, MODES));
    let icmp = fields
        .icmp
        .as_ref()
        .and_then(|text| choice(problems, "icmp", text, ICMP));
    let udp_reply_ttl = fields
        .udp_reply_ttl
        .as_ref()
        .and_then(|text| duration(problems, "udp_reply_ttl", text, &bounds::UDP_REPLY_TTL));

    Guard {
        interfaces: interfaces.unwrap_or(defaults.interfaces),
        mode: mode.unwrap_or(defaults.mode),
        icmp: icmp.unwrap_or(defaults.icmp),
        udp_reply_ttl: udp_reply_ttl.unwrap_or(defaults.udp_reply_ttl),
    }
}

fn interfaces(problems: &mut Problems, list: &TextList) -> Interfaces {
    let names = list.get_ref();
    if names.is_empty() {
        problems.push(
            &list.span(),
            "interfaces: expected [\"*\"] or at least one name",
        );
        return Interfaces::All;
    }

    if let Some(star) = names.iter().find(|name| name.get_ref() == "*") {
        if names.len() > 1 {
            problems.push(
                &star.span(),
                "interfaces: expected \"*\" alone or only names, as \"*\" already means every \
                 interface",
            );
        }
        return Interfaces::All;
    }

    let valid = each(problems, list, |name| {
        network::interface_name(name).map(|()| name.to_owned())
    });
    Interfaces::Named(valid)
}

fn endpoint(problems: &mut Problems, raw: &Spanned<RawEndpoint>) -> Option<Placed<Endpoint>> {
    let (table, fields) = (Table::new(raw, "[[endpoint]]"), raw.get_ref());
    let name = table.required(problems, "name", &fields.name);
    let port = table.required(problems, "port", &fields.port);
    let protocol = table.required(problems, "protocol", &fields.protocol);

    let name = name.and_then(|text| self::name(problems, text));
    let ports = port.and_then(|value| port_range(problems, value));
    let protocol = protocol.and_then(|text| choice(problems, "protocol", text, PROTOCOLS));
    let from = fields.from.as_ref().map(|list| sources(problems, list));

    Some(Placed {
        value: Endpoint {
            name: name?,
            ports: ports?,
            protocol: protocol?,
            from: from.unwrap_or_else(Endpoint::anywhere),
        },
        table: table.span(),
        port: port?.span(),
        from: fields.from.as_ref().map(Spanned::span),
    })
}

fn sources(problems: &mut Problems, list: &TextList) -> Vec<IpNet> {
    if list.get_ref().is_empty() {
        problems.push(
            &list.span(),
            "from: expected at least one address or prefix; leave the key out to allow every \
             source",
        );
    }

    each(problems, list, network::source_prefix)
}

fn gate(problems: &mut Problems, raw: &Spanned<RawGate>) -> Option<Placed<Gate>> {
    let (table, fields) = (Table::new(raw, "[[gate]]"), raw.get_ref());
    let name = table.required(problems, "name", &fields.name);
    let port = table.required(problems, "port", &fields.port);
    let protocol = table.required(problems, "protocol", &fields.protocol);
    let scope = table.required(problems, "scope", &fields.scope);

    let name = name.and_then(|text| self::name(problems, text));
    let ports = port.and_then(|value| port_range(problems, value));
    let protocol = protocol.and_then(|text| choice(problems, "protocol", text, PROTOCOLS));
    let scope = scope.and_then(|text| self::scope(problems, text));
    let max_ttl = fields
        .max_ttl
        .as_ref()
        .and_then(|text| duration(problems, "max_ttl", text, &bounds::MAX_TTL));
    let on_expiry = fields
        .on_expiry
        .as_ref()
        .and_then(|text| choice(problems, "on_expiry", text, ON_EXPIRY));
    // Whether the names are declared is a rule across tables.
    let issuers = fields.issuers.as_ref().map_or_else(Vec::new, |list| {
        list.get_ref()
            .iter()
            .map(|name| name.get_ref().clone())
            .collect()
    });

    Some(Placed {
        value: Gate {
            name: name?,
            ports: ports?,
            protocol: protocol?,
            scope: scope?,
            max_ttl,
            on_expiry: on_expiry.unwrap_or_default(),
            issuers,
        },
        table: table.span(),
        port: port?.span(),
        from: None,
    })
}

/// One OAuth scope: a token's `scope` claim is a list separated by spaces.
fn scope(problems: &mut Problems, text: &Text) -> Option<String> {
    let scope = text.get_ref();
    if scope.is_empty() || scope.chars().any(char::is_whitespace) {
        problems.push(
            &text.span(),
            format!(
                "scope: expected one scope without spaces, such as \"db:connect\", found {scope:?}"
            ),
        );
        return None;
    }
    Some(scope.clone())
}

fn events(problems: &mut Problems, raw: &Spanned<RawEvents>) -> Events {
    let fields = raw.get_ref();

    let file = fields
        .file
        .as_ref()
        .and_then(|text| non_empty(problems, "file", text, "a file path"));
    let metrics = fields.metrics.as_ref().and_then(|text| {
        network::listen_address("metrics", text.get_ref())
            .map_err(|message| problems.push(&text.span(), message))
            .ok()
    });

    Events {
        file: file.map(Into::into),
        metrics,
    }
}

fn locations(
    problems: &Problems,
    raw: &RawPolicy,
    endpoints: &[Placed<Endpoint>],
    gates: &[Placed<Gate>],
) -> Locations {
    let guard = raw.guard.as_ref().map(|table| table.get_ref());
    let mode = guard.and_then(|table| table.mode.as_ref());
    let interfaces = guard.and_then(|table| table.interfaces.as_ref());
    let endpoint = |placed: &Placed<Endpoint>| EndpointLocation {
        table: problems.locate(&placed.table),
        from: placed.from.as_ref().map(|span| problems.locate(span)),
    };

    Locations {
        mode: mode.map(|text| problems.locate(&text.span())),
        interfaces: interfaces.map(|list| problems.locate(&list.span())),
        endpoints: endpoints.iter().map(endpoint).collect(),
        gates: gates
            .iter()
            .map(|placed| problems.locate(&placed.table))
            .collect(),
    }
}
