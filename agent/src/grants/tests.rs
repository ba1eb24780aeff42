//! Grant book, ledger and plan, against a map in memory and a state directory of the test's.

use std::{
    collections::HashMap,
    net::IpAddr,
    time::{Duration, SystemTime},
};

use portguard_common::maps::{GrantKey, GrantValue, PROTO_TCP};

use super::*;
use crate::{
    policy::{Gate, OnExpiry, PortRange},
    tokens::AccessToken,
};

#[derive(Default)]
struct MemoryMap(HashMap<GrantKey, GrantValue>);

impl GrantMap for MemoryMap {
    fn write(&mut self, key: &GrantKey, value: Option<&GrantValue>) -> Result<(), LoadError> {
        match value {
            Some(v) => self.0.insert(*key, *v),
            None => self.0.remove(key),
        };
        Ok(())
    }
}

const CLIENT: &str = "10.201.0.2";

fn gate(name: &str, port: u16, scope: &str, max_ttl: Option<u64>) -> Gate {
    Gate {
        name: name.into(),
        ports: PortRange {
            first: port,
            last: port,
        },
        protocol: Protocol::Tcp,
        scope: scope.into(),
        max_ttl: max_ttl.map(Duration::from_secs),
        on_expiry: OnExpiry::Keep,
        issuers: Vec::new(),
    }
}

fn token(subject: &str, scopes: &[&str], lifetime: u64, now: SystemTime) -> AccessToken {
    AccessToken {
        issuer_name: "corp".into(),
        issuer: "https://idp.test".into(),
        subject: subject.into(),
        client_id: Some(subject.into()),
        scopes: scopes.iter().map(|s| s.to_string()).collect(),
        jti: Some("jti-1".into()),
        expires_at: now + Duration::from_secs(lifetime),
        issued_at: Some(now),
        token_hash: "0123456789abcdef".into(),
    }
}

fn source() -> IpAddr {
    CLIENT.parse().unwrap()
}

fn key(port: u16) -> GrantKey {
    GrantKey::new(mapped(source()), PROTO_TCP, port)
}

fn grant_for(subject: &str, lifetime: u64, now: SystemTime) -> Grant {
    let gates = [gate("postgres", 5432, "db:connect", None)];
    plan(
        &gates,
        &token(subject, &["db:connect"], lifetime, now),
        source(),
        &Requested::default(),
        now,
    )
    .unwrap()
}

#[test]
fn lifetime_is_the_shortest_of_token_gate_and_request() {
    let now = SystemTime::now();
    let gates = [gate("postgres", 5432, "db:connect", Some(600))];
    let t = token("ci", &["db:connect"], 3600, now);
    let g = plan(&gates, &t, source(), &Requested::default(), now).unwrap();
    assert_eq!(g.expires_unix_ms, unix_ms(now + Duration::from_secs(600)));

    let asked = Requested {
        ports: vec![],
        ttl: Some(Duration::from_secs(60)),
    };
    let g = plan(&gates, &t, source(), &asked, now).unwrap();
    assert_eq!(g.expires_unix_ms, unix_ms(now + Duration::from_secs(60)));

    let short = token("ci", &["db:connect"], 30, now);
    let g = plan(&gates, &short, source(), &Requested::default(), now).unwrap();
    assert_eq!(g.expires_unix_ms, unix_ms(now + Duration::from_secs(30)));
}

#[test]
fn a_token_without_the_scope_opens_nothing() {
    let now = SystemTime::now();
    let gates = [gate("postgres", 5432, "db:connect", None)];
    let t = token("ci", &["web:admin"], 3600, now);
    let asked = Requested {
        ports: vec![(5432, Protocol::Tcp)],
        ttl: None,
    };
    assert!(matches!(
        plan(&gates, &t, source(), &asked, now),
        Err(PlanError::InsufficientScope(_))
    ));
    assert!(matches!(
        plan(&gates, &t, source(), &Requested::default(), now),
        Err(PlanError::InsufficientScope(_))
    ));
}

#[test]
fn only_the_asked_ports_open() {
    let now = SystemTime::now();
    let gates = [
        gate("postgres", 5432, "db", None),
        gate("redis", 6379, "db", None),
    ];
    let t = token("ci", &["db"], 3600, now);
    let asked = Requested {
        ports: vec![(6379, Protocol::Tcp), (9999, Protocol::Tcp)],
        ttl: None,
    };
    let g = plan(&gates, &t, source(), &asked, now).unwrap();
    assert_eq!(
        g.ports.iter().map(GrantPort::label).collect::<Vec<_>>(),
        ["6379/tcp"]
    );
}

#[test]
fn a_gate_limited_to_other_issuers_stays_shut() {
    let now = SystemTime::now();
    let mut only_partner = gate("postgres", 5432, "db", None);
    only_partner.issuers = vec!["partner".into()];
    let t = token("ci", &["db"], 3600, now);
    assert!(plan(&[only_partner], &t, source(), &Requested::default(), now).is_err());
}

#[test]
fn open_writes_the_kernel_entry_and_revoke_removes_it() {
    let (dir, now) = (tempfile::tempdir().unwrap(), SystemTime::now());
    let mut map = MemoryMap::default();
    let (mut book, _) = GrantBook::open(dir.path(), &mut map, now).unwrap();

    let opened = book
        .open_grant(grant_for("ci", 600, now), &mut map, now)
        .unwrap();
    let entry = map.0[&key(5432)];
    assert_eq!(entry.grant_id, opened.grant.kernel_id());
    assert!(entry.expires_boot_ns > 0);

    book.revoke(&opened.grant.id, &mut map, now).unwrap();
    assert!(map.0.is_empty());
    assert!(book.list().is_empty());
}

#[test]
fn a_second_grant_extends_and_never_shortens() {
    let (dir, now) = (tempfile::tempdir().unwrap(), SystemTime::now());
    let mut map = MemoryMap::default();
    let (mut book, _) = GrantBook::open(dir.path(), &mut map, now).unwrap();

    let first = book
        .open_grant(grant_for("ci", 600, now), &mut map, now)
        .unwrap();
    let longer = book
        .open_grant(grant_for("ci", 1200, now), &mut map, now)
        .unwrap();
    assert!(longer.extended);
    assert_eq!(longer.grant.id, first.grant.id);
    assert_eq!(
        longer.grant.expires_unix_ms,
        unix_ms(now + Duration::from_secs(1200))
    );

    let shorter = book
        .open_grant(grant_for("ci", 60, now), &mut map, now)
        .unwrap();
    assert_eq!(
        shorter.grant.expires_unix_ms,
        unix_ms(now + Duration::from_secs(1200))
    );
    assert_eq!(book.list().len(), 1);
}

#[test]
fn overlapping_grants_keep_the_latest_expiry_in_the_kernel() {
    let (dir, now) = (tempfile::tempdir().unwrap(), SystemTime::now());
    let mut map = MemoryMap::default();
    let (mut book, _) = GrantBook::open(dir.path(), &mut map, now).unwrap();

    let short = book
        .open_grant(grant_for("alice", 600, now), &mut map, now)
        .unwrap()
        .grant;
    let long = book
        .open_grant(grant_for("bob", 1200, now), &mut map, now)
        .unwrap()
        .grant;
    assert_eq!(map.0[&key(5432)].grant_id, long.kernel_id());

    book.revoke(&long.id, &mut map, now).unwrap();
    assert_eq!(map.0[&key(5432)].grant_id, short.kernel_id());
}

#[test]
fn expired_grants_leave_book_and_kernel() {
    let (dir, now) = (tempfile::tempdir().unwrap(), SystemTime::now());
    let mut map = MemoryMap::default();
    let (mut book, _) = GrantBook::open(dir.path(), &mut map, now).unwrap();
    let g = book
        .open_grant(grant_for("ci", 60, now), &mut map, now)
        .unwrap()
        .grant;
    assert_eq!(book.next_expiry(), Some(g.expires_at()));

    assert!(
        book.expire(&mut map, now + Duration::from_secs(30))
            .unwrap()
            .is_empty()
    );
    let expired = book
        .expire(&mut map, now + Duration::from_secs(61))
        .unwrap();
    assert_eq!(expired.len(), 1);
    assert!(map.0.is_empty());
}

#[test]
fn a_restarted_book_restores_live_grants_from_its_ledger() {
    let (dir, now) = (tempfile::tempdir().unwrap(), SystemTime::now());
    let mut map = MemoryMap::default();
    let (mut book, _) = GrantBook::open(dir.path(), &mut map, now).unwrap();
    let live = book
        .open_grant(grant_for("ci", 600, now), &mut map, now)
        .unwrap()
        .grant;
    drop(book);

    let mut fresh = MemoryMap::default();
    let (book, restored) =
        GrantBook::open(dir.path(), &mut fresh, now + Duration::from_secs(1)).unwrap();
    assert_eq!(restored.live, vec![live.clone()]);
    assert_eq!(book.list(), vec![live]);
    assert!(fresh.0.contains_key(&key(5432)));

    let (_, later) = GrantBook::open(
        dir.path(),
        &mut MemoryMap::default(),
        now + Duration::from_secs(601),
    )
    .unwrap();
    assert!(later.live.is_empty());
    assert_eq!(later.expired.len(), 1);
}

#[test]
fn a_corrupt_ledger_is_set_aside_and_reported() {
    let (dir, now) = (tempfile::tempdir().unwrap(), SystemTime::now());
    std::fs::write(
        dir.path().join("grants.json"),
        b"{\"version\": 1, \"grants\": [tru",
    )
    .unwrap();
    let (book, restored) = GrantBook::open(dir.path(), &mut MemoryMap::default(), now).unwrap();
    let (aside, why) = restored.set_aside.expect("reported");
    assert!(aside.exists(), "the unreadable ledger is kept");
    assert!(why.contains("not a ledger"), "{why}");
    assert!(book.list().is_empty());
    assert!(
        dir.path().join("grants.json").exists(),
        "a fresh ledger replaces it"
    );
}

#[test]
fn an_unwritable_state_folder_keeps_grants_and_reports_it() {
    let now = SystemTime::now();
    let dir = tempfile::tempdir().unwrap();
    // A file where the state folder should be: neither creating nor writing can succeed,
    // even as root (a full disk and a read-only mount fail the same way).
    let blocker = dir.path().join("not-a-folder");
    std::fs::write(&blocker, b"").unwrap();
    let mut map = MemoryMap::default();

    let (mut book, restored) = GrantBook::open(&blocker.join("state"), &mut map, now).unwrap();
    assert!(restored.live.is_empty());
    assert!(book.ledger_error().is_some());

    let opened = book
        .open_grant(grant_for("ci", 300, now), &mut map, now)
        .unwrap();
    assert!(
        map.0.contains_key(&key(5432)),
        "the kernel still gets the grant"
    );
    assert_eq!(book.list().len(), 1);
    let error = book.ledger_error().expect("the failed write is kept");
    assert!(error.contains("not-a-folder"), "{error}");

    book.revoke(&opened.grant.id, &mut map, now).unwrap();
    assert!(map.0.is_empty());
}
