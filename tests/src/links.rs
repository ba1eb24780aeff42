//! BPF links as `bpftool` lists them, to check what an agent left attached.
//!
//! Interface indexes are per namespace, and Debian's bpftool 7.1 prints none for XDP and tcx
//! links (nor the name "tcx": it prints the type number, 11), so a link is told apart by its
//! id and its program: list the links before an agent starts, and the agent's are the new
//! ones whose program is portguard's.

use std::{collections::HashMap, process::Command};

use anyhow::Context as _;
use serde_json::Value;

/// `BPF_LINK_TYPE_TCX` from `<linux/bpf.h>`, for bpftool versions that print it as a number.
const LINK_TYPE_TCX: u64 = 11;

/// One XDP or tcx link.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BpfLink {
    pub id: u64,
    /// "xdp" or "tcx".
    pub kind: &'static str,
    pub program: String,
    /// When bpftool prints it: the index in the link's own namespace.
    pub ifindex: Option<u64>,
}

impl BpfLink {
    /// Whether the link runs one of portguard's programs.
    pub fn is_portguard(&self) -> bool {
        self.program.starts_with("portguard")
    }
}

/// The XDP and tcx links of the machine, or `None` when bpftool is not installed.
pub fn xdp_and_tcx_links() -> anyhow::Result<Option<Vec<BpfLink>>> {
    let Some(links) = bpftool(&["link", "show"])? else {
        return Ok(None);
    };
    let programs = bpftool(&["prog", "show"])?.unwrap_or_default();
    let names: HashMap<u64, String> = list(&programs)
        .filter_map(|program| {
            Some((
                program["id"].as_u64()?,
                program["name"].as_str()?.to_owned(),
            ))
        })
        .collect();

    let found = list(&links)
        .filter_map(|link| {
            let kind = match &link["type"] {
                Value::String(kind) if kind == "xdp" => "xdp",
                Value::String(kind) if kind == "tcx" => "tcx",
                Value::Number(kind) if kind.as_u64() == Some(LINK_TYPE_TCX) => "tcx",
                _ => return None,
            };
            let program = link["prog_id"]
                .as_u64()
                .and_then(|id| names.get(&id).cloned());
            Some(BpfLink {
                id: link["id"].as_u64()?,
                kind,
                program: program.unwrap_or_default(),
                ifindex: link["ifindex"].as_u64(),
            })
        })
        .collect();
    Ok(Some(found))
}

/// `bpftool -j ARGS...` as JSON, or `None` when bpftool is not installed.
fn bpftool(args: &[&str]) -> anyhow::Result<Option<Value>> {
    let output = match Command::new("bpftool").arg("-j").args(args).output() {
        Ok(output) => output,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(error) => return Err(error).context("run bpftool"),
    };
    anyhow::ensure!(
        output.status.success(),
        "bpftool {} failed: {}",
        args.join(" "),
        String::from_utf8_lossy(&output.stderr).trim()
    );
    let value = serde_json::from_slice(&output.stdout).context("read bpftool's JSON")?;
    Ok(Some(value))
}

fn list(value: &Value) -> impl Iterator<Item = &Value> {
    value.as_array().into_iter().flatten()
}
