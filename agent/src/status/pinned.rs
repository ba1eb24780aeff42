//! The status when no agent answers: what the guard pinned in bpffs still enforces, read
//! from the pins themselves. Stopping the agent leaves the guard in place, so "the agent is
//! down" alone would hide that every port is still shut.

use std::{fs, path::Path};

use aya::maps::{Array, Map, MapData, PerCpuArray};
use portguard_common::{
    map_names,
    maps::{Config, Counters, MODE_MONITOR},
};
use serde_json::{Map as Object, Value, json};

use crate::loader::pins::{self, LinkKind};

/// What the pins under `pin_dir` hold: the links with their interfaces, and the mode,
/// generation and counters in the maps. `None` when nothing is pinned there.
pub fn collect(pin_dir: &Path) -> Result<Option<Value>, pins::PinError> {
    if !pin_dir.join("links").is_dir() {
        return Ok(None);
    }
    let links: Vec<Value> = pins::links_in(pin_dir)?
        .into_iter()
        .map(|link| {
            json!({
                "interface": interface_name(link.ifindex),
                "ifindex": link.ifindex,
                "program": match link.kind {
                    LinkKind::XdpNative => "xdp (native)",
                    LinkKind::XdpGeneric => "xdp (generic)",
                    LinkKind::Egress => "tcx egress",
                },
                "link_id": link.link_id,
                "attached": link.live,
            })
        })
        .collect();

    let mut status = Object::new();
    status.insert("pin_dir".into(), pin_dir.display().to_string().into());
    status.insert("links".into(), links.into());
    if let Some(maps) = maps_folder(pin_dir) {
        if let Some(config) = read_config(&maps.join(map_names::CONFIG)) {
            let mode = if config.mode == MODE_MONITOR {
                "monitor"
            } else {
                "enforce"
            };
            status.insert("mode_in_kernel".into(), mode.into());
            status.insert("generation_in_kernel".into(), config.generation.into());
        }
        if let Some(counters) = read_counters(&maps.join(map_names::COUNTERS)) {
            status.insert("packets".into(), super::packets(&counters).into());
        }
    }
    Ok(Some(Value::Object(status)))
}

/// The pinned guard for people.
pub fn describe(pinned: &Value) -> String {
    let mut out = format!(
        "pinned guard at {}: generation {}, mode {}, still in the kernel\n",
        pinned["pin_dir"].as_str().unwrap_or("?"),
        pinned["generation_in_kernel"],
        pinned["mode_in_kernel"].as_str().unwrap_or("?"),
    );
    for link in pinned["links"].as_array().into_iter().flatten() {
        out.push_str(&format!(
            "  {} (index {}): {}, link {}{}\n",
            link["interface"].as_str().unwrap_or("?"),
            link["ifindex"],
            link["program"].as_str().unwrap_or("?"),
            link["link_id"],
            if link["attached"] == true {
                ""
            } else {
                ", attached to nothing (the interface is gone)"
            },
        ));
    }
    out
}

/// The map folder a guard uses: the newest `maps-*` with a configuration in it.
fn maps_folder(pin_dir: &Path) -> Option<std::path::PathBuf> {
    fs::read_dir(pin_dir)
        .ok()?
        .filter_map(|entry| entry.ok())
        .filter(|entry| entry.file_name().to_string_lossy().starts_with("maps-"))
        .filter(|entry| entry.path().join(map_names::CONFIG).exists())
        .max_by_key(|entry| entry.metadata().and_then(|m| m.modified()).ok())
        .map(|entry| entry.path())
}

fn read_config(path: &Path) -> Option<Config> {
    let array: Array<_, Config> =
        Array::try_from(Map::Array(MapData::from_pin(path).ok()?)).ok()?;
    array.get(&0, 0).ok()
}

fn read_counters(path: &Path) -> Option<Counters> {
    let array: PerCpuArray<_, Counters> =
        PerCpuArray::try_from(Map::PerCpuArray(MapData::from_pin(path).ok()?)).ok()?;
    let mut total = Counters::default();
    for cpu in array.get(&0, 0).ok()?.iter() {
        total.add(cpu);
    }
    Some(total)
}

/// The interface's name in this network namespace, when it still exists.
fn interface_name(ifindex: u32) -> Option<String> {
    let mut buffer = [0u8; libc::IF_NAMESIZE];
    // SAFETY: the buffer holds IF_NAMESIZE bytes, as if_indextoname requires.
    let name = unsafe { libc::if_indextoname(ifindex, buffer.as_mut_ptr().cast()) };
    if name.is_null() {
        return None;
    }
    let end = buffer.iter().position(|b| *b == 0).unwrap_or(buffer.len());
    Some(String::from_utf8_lossy(&buffer[..end]).into_owned())
}
