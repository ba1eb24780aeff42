//! The control socket: a Unix socket, root only (mode 0600), that the CLI uses to ask the
//! running agent for its grants and to revoke one. One JSON request per line, one JSON answer
//! per line.

use std::{
    os::unix::fs::PermissionsExt as _,
    path::{Path, PathBuf},
    sync::{Arc, RwLock},
    time::{Duration, SystemTime},
};

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tokio::{
    io::{AsyncBufReadExt as _, AsyncReadExt as _, AsyncWriteExt as _, BufReader},
    net::{UnixListener, UnixStream},
    sync::{mpsc, oneshot},
};

use crate::{
    engine::SharedEngine,
    events::EventLog,
    status::{self, Expected},
};

pub const DEFAULT_SOCKET: &str = "/run/portguard/control.sock";
/// Longest request line read; longer ones close the connection.
const MAX_REQUEST_BYTES: usize = 4096;

#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Request {
    Status,
    GrantsList,
    GrantsRevoke {
        id: String,
    },
    /// Reload the policy file, as SIGHUP does; with `confirm_within_ms`, the policy in force
    /// comes back unless `confirm` arrives in time.
    Reload {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        confirm_within_ms: Option<u64>,
    },
    /// Keep the policy of a reload that waits for confirmation.
    Confirm,
}

/// What only the daemon's main loop can do (it holds the policy in force), with where to
/// send the answer.
#[derive(Debug)]
pub enum Command {
    Reload {
        confirm_within: Option<Duration>,
        reply: oneshot::Sender<Value>,
    },
    Confirm {
        reply: oneshot::Sender<Value>,
    },
}

#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    #[error("create control socket {path}")]
    Bind {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "connect to the agent's control socket {path} (is `portguard run` running, and are you root?)"
    )]
    Connect {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("talk to the agent")]
    Io(#[source] std::io::Error),
    #[error("the agent's answer is not understood")]
    Answer(#[source] serde_json::Error),
    #[error("{0}")]
    Refused(String),
}

/// Binds the socket, replacing a stale one, readable and writable by its owner only. A
/// socket that still answers belongs to another running agent: that is an error.
pub fn bind(path: &Path) -> Result<UnixListener, ControlError> {
    let error = |source| ControlError::Bind {
        path: path.to_owned(),
        source,
    };
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(error)?;
    }
    if std::os::unix::net::UnixStream::connect(path).is_ok() {
        return Err(error(std::io::Error::new(
            std::io::ErrorKind::AddrInUse,
            "another portguard agent answers on it (give this one --control-socket)",
        )));
    }
    match std::fs::remove_file(path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(error(e)),
    }
    let listener = UnixListener::bind(path).map_err(error)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).map_err(error)?;
    Ok(listener)
}

/// What the control socket answers from.
#[derive(Clone)]
pub struct Control {
    pub engine: SharedEngine,
    pub log: EventLog,
    /// What the policy in force asks for; a reload replaces it.
    pub expected: Arc<RwLock<Expected>>,
    /// The daemon's main loop, for reloads.
    pub commands: mpsc::Sender<Command>,
}

impl Control {
    /// A copy of what the policy in force asks for.
    fn expected(&self) -> Expected {
        self.expected.read().expect("expected lock").clone()
    }
}

/// Answers requests until the task is dropped.
pub async fn serve(listener: UnixListener, control: Control) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        };
        let control = control.clone();
        tokio::spawn(async move {
            if let Err(error) = answer(stream, &control).await {
                tracing::debug!(%error, "control connection");
            }
        });
    }
}

async fn answer(stream: UnixStream, control: &Control) -> std::io::Result<()> {
    let (read, mut write) = stream.into_split();
    let mut lines = BufReader::new(read.take(MAX_REQUEST_BYTES as u64 * 16)).lines();
    // An idle client is dropped after 30 s.
    while let Ok(next) = tokio::time::timeout(Duration::from_secs(30), lines.next_line()).await {
        let Some(line) = next? else { break };
        if line.len() > MAX_REQUEST_BYTES {
            break;
        }
        let reply = match serde_json::from_str::<Request>(&line) {
            Ok(request) => handle(request, control).await,
            Err(error) => json!({ "ok": false, "error": format!("bad request: {error}") }),
        };
        let mut text = reply.to_string();
        text.push('\n');
        write.write_all(text.as_bytes()).await?;
    }
    Ok(())
}

async fn handle(request: Request, control: &Control) -> Value {
    match request {
        Request::Status => {
            json!({ "ok": true, "status": status::collect(&control.engine, &control.expected()).await })
        }
        Request::GrantsList => json!({ "ok": true, "grants": control.engine.grants() }),
        Request::GrantsRevoke { id } => match control.engine.revoke(&id, SystemTime::now()) {
            Ok(grant) => {
                control
                    .log
                    .emit(grant.event("grant.revoked").with("by", "operator"));
                json!({ "ok": true, "grant": grant })
            }
            Err(error) => json!({ "ok": false, "error": error.to_string() }),
        },
        Request::Reload { confirm_within_ms } => {
            let confirm_within = confirm_within_ms.map(Duration::from_millis);
            command(control, |reply| Command::Reload {
                confirm_within,
                reply,
            })
            .await
        }
        Request::Confirm => command(control, |reply| Command::Confirm { reply }).await,
    }
}

/// Hands a command to the main loop and waits for its answer.
async fn command(control: &Control, make: impl FnOnce(oneshot::Sender<Value>) -> Command) -> Value {
    let (reply, answer) = oneshot::channel();
    if control.commands.send(make(reply)).await.is_err() {
        return json!({ "ok": false, "error": "the agent is stopping" });
    }
    answer
        .await
        .unwrap_or_else(|_| json!({ "ok": false, "error": "the agent is stopping" }))
}

/// How long the CLI waits for the agent's answer.
const ASK_TIMEOUT: Duration = Duration::from_secs(5);

/// Sends one request to the agent and returns its answer (`ok: true`), or its refusal. An
/// agent that does not answer within five seconds (stopped, stuck) is an error.
pub async fn ask(path: &Path, request: &Request) -> Result<Value, ControlError> {
    tokio::time::timeout(ASK_TIMEOUT, exchange(path, request))
        .await
        .unwrap_or_else(|_| {
            Err(ControlError::Io(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                "the agent did not answer within 5 s (is it stopped or stuck?)",
            )))
        })
}

async fn exchange(path: &Path, request: &Request) -> Result<Value, ControlError> {
    let stream = UnixStream::connect(path)
        .await
        .map_err(|source| ControlError::Connect {
            path: path.to_owned(),
            source,
        })?;
    let (read, mut write) = stream.into_split();
    let mut text = serde_json::to_string(request).map_err(ControlError::Answer)?;
    text.push('\n');
    write
        .write_all(text.as_bytes())
        .await
        .map_err(ControlError::Io)?;

    let mut line = String::new();
    BufReader::new(read)
        .read_line(&mut line)
        .await
        .map_err(ControlError::Io)?;
    let answer: Value = serde_json::from_str(&line).map_err(ControlError::Answer)?;
    if answer["ok"] == Value::Bool(true) {
        Ok(answer)
    } else {
        Err(ControlError::Refused(
            answer["error"].as_str().unwrap_or("refused").to_owned(),
        ))
    }
}
