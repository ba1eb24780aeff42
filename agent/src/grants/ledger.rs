//! The grant ledger: one JSON file in the state directory, replaced atomically (write a
//! temporary file, fsync, rename, fsync the directory) on every change, so that a crash
//! leaves either the old ledger or the new one, never half of one. A ledger that cannot be
//! read is set aside under a new name and reported, never trusted and never deleted.

use std::{
    fs::{self, File},
    io::{self, Write as _},
    path::{Path, PathBuf},
    time::SystemTime,
};

use serde::{Deserialize, Serialize};

use super::{Grant, unix_ms};

const FILE_NAME: &str = "grants.json";
const VERSION: u32 = 1;

#[derive(Debug, thiserror::Error)]
pub enum LedgerError {
    #[error("create state directory {path}")]
    CreateDir {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("write ledger {path}")]
    Write {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("set aside unreadable ledger {path}")]
    SetAside {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

#[derive(Serialize, Deserialize)]
struct File1 {
    version: u32,
    grants: Vec<Grant>,
}

/// What was found in the ledger at start.
#[derive(Debug, Default)]
pub struct Restored {
    /// Grants still live: enforced again.
    pub live: Vec<Grant>,
    /// Grants that expired while the agent was not running.
    pub expired: Vec<Grant>,
    /// An unreadable ledger, moved to this path, and why it could not be read.
    pub set_aside: Option<(PathBuf, String)>,
}

pub struct Ledger {
    path: PathBuf,
}

impl Ledger {
    /// Opens (creating the directory) and reads the ledger.
    pub fn open(state_dir: &Path, now: SystemTime) -> Result<(Self, Restored), LedgerError> {
        fs::create_dir_all(state_dir).map_err(|source| LedgerError::CreateDir {
            path: state_dir.to_owned(),
            source,
        })?;
        let ledger = Self {
            path: state_dir.join(FILE_NAME),
        };

        let mut restored = Restored::default();
        match fs::read(&ledger.path) {
            Ok(bytes) => match parse(&bytes) {
                Ok(grants) => {
                    let (live, expired) = grants.into_iter().partition(|g| g.is_live(now));
                    restored.live = live;
                    restored.expired = expired;
                }
                Err(why) => restored.set_aside = Some((ledger.set_aside(now)?, why)),
            },
            Err(error) if error.kind() == io::ErrorKind::NotFound => {}
            Err(error) => {
                let why = format!("cannot read: {error}");
                restored.set_aside = Some((ledger.set_aside(now)?, why));
            }
        }
        Ok((ledger, restored))
    }

    /// The ledger of `state_dir` without reading it: for an agent that could not open it,
    /// which keeps trying to write it.
    pub fn at(state_dir: &Path) -> Self {
        Self {
            path: state_dir.join(FILE_NAME),
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Replaces the ledger with these grants.
    pub fn write<'a>(&self, grants: impl Iterator<Item = &'a Grant>) -> Result<(), LedgerError> {
        let file = File1 {
            version: VERSION,
            grants: grants.cloned().collect(),
        };
        let mut text = serde_json::to_vec_pretty(&file).expect("grants serialize");
        text.push(b'\n');
        let error = |source| LedgerError::Write {
            path: self.path.clone(),
            source,
        };

        let temporary = self.path.with_extension("json.tmp");
        let mut out = File::create(&temporary).map_err(error)?;
        out.write_all(&text).map_err(error)?;
        out.sync_all().map_err(error)?;
        drop(out);
        fs::rename(&temporary, &self.path).map_err(error)?;
        if let Some(dir) = self.path.parent() {
            File::open(dir).and_then(|d| d.sync_all()).map_err(error)?;
        }
        Ok(())
    }

    fn set_aside(&self, now: SystemTime) -> Result<PathBuf, LedgerError> {
        let aside = self
            .path
            .with_extension(format!("json.corrupt-{}", unix_ms(now)));
        fs::rename(&self.path, &aside).map_err(|source| LedgerError::SetAside {
            path: self.path.clone(),
            source,
        })?;
        Ok(aside)
    }
}

fn parse(bytes: &[u8]) -> Result<Vec<Grant>, String> {
    let file: File1 = serde_json::from_slice(bytes).map_err(|e| format!("not a ledger: {e}"))?;
    if file.version != VERSION {
        return Err(format!(
            "ledger version {} (this agent reads {VERSION})",
            file.version
        ));
    }
    Ok(file.grants)
}
