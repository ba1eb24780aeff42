//! The event log: one JSON object per line, one schema for everything the agent decides
//! (DESIGN.md section 3). Events go to stdout (journald under systemd) and optionally a file;
//! diagnostics go to stderr through `tracing`.

mod flows;

use std::{
    fs::{File, OpenOptions},
    io::{self, Write as _},
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
    time::SystemTime,
};

pub use flows::{FlowReader, RuleNames};
use serde::Serialize;
use serde_json::{Map, Value};

/// One event, built field by field; `ts` and `event` come first.
#[derive(Debug, Clone)]
pub struct Event {
    fields: Map<String, Value>,
}

impl Event {
    pub fn new(name: &str) -> Self {
        Self::at(name, SystemTime::now())
    }

    pub fn at(name: &str, time: SystemTime) -> Self {
        let mut fields = Map::new();
        fields.insert(
            "ts".into(),
            humantime::format_rfc3339_millis(time).to_string().into(),
        );
        fields.insert("event".into(), name.into());
        Self { fields }
    }

    /// Adds a field; a value that does not serialize is recorded as null.
    pub fn with(mut self, key: &str, value: impl Serialize) -> Self {
        self.fields.insert(
            key.to_owned(),
            serde_json::to_value(value).unwrap_or(Value::Null),
        );
        self
    }

    pub fn name(&self) -> &str {
        self.fields
            .get("event")
            .and_then(Value::as_str)
            .unwrap_or_default()
    }

    pub fn to_line(&self) -> String {
        Value::Object(self.fields.clone()).to_string()
    }
}

/// Where events are written. Cheap to clone; writers share the sinks.
#[derive(Clone)]
pub struct EventLog {
    stdout: bool,
    file: Option<Arc<Mutex<File>>>,
    file_path: Option<PathBuf>,
}

#[derive(Debug, thiserror::Error)]
#[error("open event file {path}")]
pub struct OpenError {
    path: PathBuf,
    #[source]
    source: io::Error,
}

impl EventLog {
    /// Events to stdout, and to `file` when given (appended, created 0640).
    pub fn open(file: Option<&Path>) -> Result<Self, OpenError> {
        let Some(path) = file else {
            return Ok(Self {
                stdout: true,
                file: None,
                file_path: None,
            });
        };
        let open = || {
            if let Some(dir) = path.parent() {
                std::fs::create_dir_all(dir)?;
            }
            OpenOptions::new().create(true).append(true).open(path)
        };
        let file = open().map_err(|source| OpenError {
            path: path.to_owned(),
            source,
        })?;
        Ok(Self {
            stdout: true,
            file: Some(Arc::new(Mutex::new(file))),
            file_path: Some(path.to_owned()),
        })
    }

    /// Events to `file` only (benchmarks, whose stdout is a report).
    pub fn file_only(file: &Path) -> Result<Self, OpenError> {
        Ok(Self {
            stdout: false,
            ..Self::open(Some(file))?
        })
    }

    /// Writes one event to every sink. A sink that fails is reported, never fatal: the guard
    /// goes on enforcing whether or not its log can be written.
    pub fn emit(&self, event: Event) {
        let mut line = event.to_line();
        line.push('\n');
        if self.stdout
            && let Err(error) = io::stdout().lock().write_all(line.as_bytes())
        {
            tracing::warn!(%error, "cannot write event to stdout");
        }
        if let Some(file) = &self.file {
            let mut file = file.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
            if let Err(error) = file.write_all(line.as_bytes()) {
                tracing::warn!(%error, path = ?self.file_path, "cannot write event to file");
            }
        }
    }
}
