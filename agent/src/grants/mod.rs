//! Grants: which source may reach which gated port until when. The book keeps them in memory,
//! in a crash-safe ledger and in the kernel's grant map, and keeps the three in step: the
//! kernel entry for a (source, protocol, port) always carries the latest expiry among the live
//! grants that cover it, so a second grant extends a live one and never shortens it.

mod clock;
mod ledger;
mod plan;

use std::{
    collections::BTreeMap,
    net::IpAddr,
    path::{Path, PathBuf},
    time::{Duration, SystemTime, UNIX_EPOCH},
};

pub use clock::boot_ns_at;
pub use ledger::{Ledger, LedgerError, Restored};
pub use plan::{PlanError, Requested, plan};
use portguard_common::maps::{Addr, GrantKey, GrantValue, ipv4_mapped};
use serde::{Deserialize, Serialize};

use crate::{
    events::Event,
    loader::{Guard, LoadError},
    policy::Protocol,
};

/// Most ports one grant may open (a gate may be a port range).
pub const MAX_PORTS_PER_GRANT: usize = 1024;

/// One port a grant opens, and the gate that allowed it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct GrantPort {
    pub port: u16,
    /// "tcp" or "udp".
    pub protocol: String,
    pub gate: String,
}

impl GrantPort {
    pub fn protocol_number(&self) -> u8 {
        if self.protocol == Protocol::Udp.as_str() {
            Protocol::Udp.number()
        } else {
            Protocol::Tcp.number()
        }
    }

    pub fn label(&self) -> String {
        format!("{}/{}", self.port, self.protocol)
    }
}

/// A grant: ports opened for one source address until an expiry.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Grant {
    /// 16 hex digits; the kernel stores the same number.
    pub id: String,
    pub source: IpAddr,
    pub ports: Vec<GrantPort>,
    pub issuer: String,
    pub subject: String,
    pub client_id: Option<String>,
    pub scopes: Vec<String>,
    pub jti: Option<String>,
    pub token_hash: String,
    pub created_unix_ms: u64,
    pub expires_unix_ms: u64,
}

impl Grant {
    pub fn expires_at(&self) -> SystemTime {
        UNIX_EPOCH + Duration::from_millis(self.expires_unix_ms)
    }

    pub fn is_live(&self, now: SystemTime) -> bool {
        self.expires_at() > now
    }

    /// The number the kernel map carries for this grant.
    pub fn kernel_id(&self) -> u64 {
        u64::from_str_radix(&self.id, 16).unwrap_or(0)
    }

    fn keys(&self) -> impl Iterator<Item = GrantKey> + '_ {
        let source = mapped(self.source);
        self.ports
            .iter()
            .map(move |p| GrantKey::new(source, p.protocol_number(), p.port))
    }

    /// An event about this grant, with who holds it and what it opens; never the token.
    pub fn event(&self, name: &str) -> Event {
        Event::new(name)
            .with("grant", &self.id)
            .with("source", self.source.to_string())
            .with(
                "ports",
                self.ports.iter().map(GrantPort::label).collect::<Vec<_>>(),
            )
            .with("gates", self.gates())
            .with(
                "expires_at",
                humantime::format_rfc3339_seconds(self.expires_at()).to_string(),
            )
            .with("issuer", &self.issuer)
            .with("subject", &self.subject)
            .with("client_id", &self.client_id)
            .with("scopes", &self.scopes)
            .with("jti", &self.jti)
            .with("token_hash", &self.token_hash)
    }

    pub fn gates(&self) -> Vec<String> {
        let mut gates: Vec<String> = self.ports.iter().map(|p| p.gate.clone()).collect();
        gates.dedup();
        gates
    }
}

/// An address as the maps key it: 16 bytes, IPv4 mapped.
pub fn mapped(address: IpAddr) -> Addr {
    match address {
        IpAddr::V4(v4) => ipv4_mapped(v4.octets()),
        IpAddr::V6(v6) => v6
            .to_ipv4_mapped()
            .map_or(v6.octets(), |v4| ipv4_mapped(v4.octets())),
    }
}

/// Where grants are written in the kernel. The guard in production; a map in tests.
pub trait GrantMap {
    fn write(&mut self, key: &GrantKey, value: Option<&GrantValue>) -> Result<(), LoadError>;
}

impl<T: GrantMap + ?Sized> GrantMap for &mut T {
    fn write(&mut self, key: &GrantKey, value: Option<&GrantValue>) -> Result<(), LoadError> {
        (**self).write(key, value)
    }
}

impl GrantMap for Guard {
    fn write(&mut self, key: &GrantKey, value: Option<&GrantValue>) -> Result<(), LoadError> {
        match value {
            Some(value) => self.insert_grant(key, value),
            None => self.remove_grant(key),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum GrantError {
    #[error("write the grant to the kernel")]
    Kernel(#[source] LoadError),
    #[error("no grant {0}")]
    Unknown(String),
}

/// The live grants, their ledger, and the kernel map they are enforced through.
///
/// The kernel is written first and the ledger after. When the ledger cannot be written (a
/// full disk, a read-only state folder) the grant still holds, in the kernel and here, and
/// the failure is kept for the agent to report: a restarted agent then does not know that
/// grant, but the kernel still ends it on time.
pub struct GrantBook {
    grants: BTreeMap<String, Grant>,
    ledger: Ledger,
    /// Why the last write of the ledger failed, until one succeeds.
    ledger_error: Option<String>,
}

/// What `open` did: a new grant, or an existing one extended.
#[derive(Debug, Clone)]
pub struct Opened {
    pub grant: Grant,
    pub extended: bool,
}

impl GrantBook {
    /// Opens the ledger in `state_dir` and restores the grants still live into `map`.
    pub fn open(
        state_dir: &Path,
        map: &mut (impl GrantMap + ?Sized),
        now: SystemTime,
    ) -> Result<(Self, Restored), GrantError> {
        let (ledger, restored, ledger_error) = match Ledger::open(state_dir, now) {
            Ok((ledger, restored)) => (ledger, restored, None),
            Err(error) => (
                Ledger::at(state_dir),
                Restored::default(),
                Some(format!("{:#}", anyhow::Error::new(error))),
            ),
        };
        let mut book = Self {
            grants: BTreeMap::new(),
            ledger,
            ledger_error,
        };
        for grant in &restored.live {
            book.grants.insert(grant.id.clone(), grant.clone());
        }
        let keys: Vec<GrantKey> = book.grants.values().flat_map(Grant::keys).collect();
        book.sync(map, &keys, now)?;
        if book.ledger_error.is_none() {
            book.persist();
        }
        Ok((book, restored))
    }

    pub fn ledger_path(&self) -> PathBuf {
        self.ledger.path().to_owned()
    }

    /// Records a grant: a live grant of the same holder, source and ports is extended (never
    /// shortened) instead of doubled.
    pub fn open_grant(
        &mut self,
        mut grant: Grant,
        map: &mut (impl GrantMap + ?Sized),
        now: SystemTime,
    ) -> Result<Opened, GrantError> {
        let same = self.grants.values_mut().find(|g| {
            g.is_live(now)
                && g.source == grant.source
                && g.ports == grant.ports
                && g.issuer == grant.issuer
                && g.subject == grant.subject
        });
        let (opened, extended) = match same {
            Some(existing) => {
                existing.expires_unix_ms = existing.expires_unix_ms.max(grant.expires_unix_ms);
                existing.jti = grant.jti.take().or(existing.jti.take());
                existing.token_hash = std::mem::take(&mut grant.token_hash);
                (existing.clone(), true)
            }
            None => {
                self.grants.insert(grant.id.clone(), grant.clone());
                (grant, false)
            }
        };

        let keys: Vec<GrantKey> = opened.keys().collect();
        self.sync(map, &keys, now)?;
        self.persist();
        Ok(Opened {
            grant: opened,
            extended,
        })
    }

    /// Ends a grant before its expiry.
    pub fn revoke(
        &mut self,
        id: &str,
        map: &mut (impl GrantMap + ?Sized),
        now: SystemTime,
    ) -> Result<Grant, GrantError> {
        let grant = self
            .grants
            .remove(id)
            .ok_or_else(|| GrantError::Unknown(id.to_owned()))?;
        let keys: Vec<GrantKey> = grant.keys().collect();
        self.sync(map, &keys, now)?;
        self.persist();
        Ok(grant)
    }

    /// Removes the grants that have expired by `now` (the kernel already refuses them) and
    /// returns them, for their `grant.expired` events.
    pub fn expire(
        &mut self,
        map: &mut (impl GrantMap + ?Sized),
        now: SystemTime,
    ) -> Result<Vec<Grant>, GrantError> {
        let ids: Vec<String> = self
            .grants
            .values()
            .filter(|g| !g.is_live(now))
            .map(|g| g.id.clone())
            .collect();
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let expired: Vec<Grant> = ids.iter().filter_map(|id| self.grants.remove(id)).collect();
        let keys: Vec<GrantKey> = expired.iter().flat_map(Grant::keys).collect();
        self.sync(map, &keys, now)?;
        self.persist();
        Ok(expired)
    }

    pub fn get(&self, id: &str) -> Option<&Grant> {
        self.grants.get(id)
    }

    pub fn list(&self) -> Vec<Grant> {
        self.grants.values().cloned().collect()
    }

    pub fn next_expiry(&self) -> Option<SystemTime> {
        self.grants.values().map(Grant::expires_at).min()
    }

    /// Rewrites the kernel entry of each key: the latest expiry among live grants covering
    /// it, or no entry.
    fn sync(
        &self,
        map: &mut (impl GrantMap + ?Sized),
        keys: &[GrantKey],
        now: SystemTime,
    ) -> Result<(), GrantError> {
        for key in keys {
            let best = self
                .grants
                .values()
                .filter(|g| g.is_live(now) && g.keys().any(|k| k == *key))
                .max_by_key(|g| g.expires_unix_ms);
            let value = best.map(|g| GrantValue {
                expires_boot_ns: boot_ns_at(g.expires_at()),
                grant_id: g.kernel_id(),
            });
            map.write(key, value.as_ref()).map_err(GrantError::Kernel)?;
        }
        Ok(())
    }

    fn persist(&mut self) {
        self.ledger_error = match self.ledger.write(self.grants.values()) {
            Ok(()) => None,
            Err(error) => {
                let error = format!("{:#}", anyhow::Error::new(error));
                tracing::error!(path = %self.ledger.path().display(), %error, "write the grant ledger");
                Some(error)
            }
        };
    }

    /// Why the ledger could not be written last time, if it could not.
    pub fn ledger_error(&self) -> Option<&str> {
        self.ledger_error.as_deref()
    }
}

/// A fresh grant id: 16 hex digits from the system's random source.
pub fn new_id() -> String {
    let mut bytes = [0u8; 8];
    // The id names a grant; it is not a secret. If the random source fails, the clock will do.
    if aws_lc_rs::rand::fill(&mut bytes).is_err() {
        bytes = (SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos() as u64)
            .to_be_bytes();
    }
    bytes[0] |= 0x10; // never zero, always 16 digits
    format!("{:016x}", u64::from_be_bytes(bytes))
}

pub fn unix_ms(time: SystemTime) -> u64 {
    time.duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_millis() as u64
}

#[cfg(test)]
mod tests;
