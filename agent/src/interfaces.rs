//! Which network interfaces the policy guards: names resolved to indexes, `*` expanded to
//! every interface but loopback.

use std::{fs, io, path::Path};

use crate::policy::Interfaces;

const SYS_CLASS_NET: &str = "/sys/class/net";
/// `IFF_LOOPBACK` from `<linux/if.h>`.
const IFF_LOOPBACK: u32 = 0x8;

/// A network interface of this host (of this network namespace).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Interface {
    pub name: String,
    pub index: u32,
}

#[derive(Debug, thiserror::Error)]
pub enum InterfaceError {
    #[error("list network interfaces in {SYS_CLASS_NET}")]
    List(#[source] io::Error),
    #[error("interface {0} named by the policy does not exist")]
    Missing(String),
    #[error("the policy guards every interface, but this host has none besides loopback")]
    NoneFound,
}

/// The interfaces the policy asks for, as they exist now.
pub fn resolve(wanted: &Interfaces) -> Result<Vec<Interface>, InterfaceError> {
    let present = list().map_err(InterfaceError::List)?;
    match wanted {
        Interfaces::All => {
            let found: Vec<_> = present
                .into_iter()
                .filter(|(_, loopback)| !loopback)
                .map(|(i, _)| i)
                .collect();
            if found.is_empty() {
                return Err(InterfaceError::NoneFound);
            }
            Ok(found)
        }
        Interfaces::Named(names) => names
            .iter()
            .map(|name| {
                present
                    .iter()
                    .find(|(i, _)| &i.name == name)
                    .map(|(i, _)| i.clone())
                    .ok_or_else(|| InterfaceError::Missing(name.clone()))
            })
            .collect(),
    }
}

/// Every interface with whether it is a loopback, sorted by index.
fn list() -> io::Result<Vec<(Interface, bool)>> {
    let mut found = Vec::new();
    for entry in fs::read_dir(SYS_CLASS_NET)? {
        let entry = entry?;
        let name = entry.file_name().to_string_lossy().into_owned();
        let dir = entry.path();
        // An interface may vanish while we read: skip it.
        let (Ok(index), Ok(flags)) = (
            read_number(&dir.join("ifindex")),
            read_number(&dir.join("flags")),
        ) else {
            continue;
        };
        found.push((Interface { name, index }, flags & IFF_LOOPBACK != 0));
    }
    found.sort_by_key(|(i, _)| i.index);
    Ok(found)
}

fn read_number(path: &Path) -> io::Result<u32> {
    let text = fs::read_to_string(path)?;
    let text = text.trim();
    let parsed = match text.strip_prefix("0x") {
        Some(hex) => u32::from_str_radix(hex, 16),
        None => text.parse(),
    };
    parsed.map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
}
