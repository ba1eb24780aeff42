//! The test OpenID provider (`tests/oidc`: node-oidc-provider, pinned) as a child process in a
//! network namespace, on that namespace's loopback. Tokens are asked for over HTTP from inside
//! the namespace, as any client of the provider would; the process is killed on drop.

use std::{
    io::{BufRead as _, BufReader, Read},
    net::{SocketAddr, TcpStream},
    path::PathBuf,
    process::{Child, Command, Stdio},
    sync::{Arc, Mutex, mpsc},
    thread,
    time::Duration,
};

use anyhow::{Context as _, bail};
use base64::{
    Engine as _,
    engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD},
};
use nix::{
    sys::signal::{Signal, kill},
    unistd::Pid,
};
use serde_json::Value;

use crate::{
    http::{self, IO_TIMEOUT, Request, Response},
    netns::{Netns, in_netns},
};

/// The audience the tests' agents are configured with.
pub const AUDIENCE: &str = "https://host.test/portguard";
/// Another resource the provider knows, for tokens meant for someone else.
pub const OTHER_AUDIENCE: &str = "https://other.test/portguard";

/// How long the provider may take to start listening.
const START_WAIT: Duration = Duration::from_secs(20);
/// How long it may take to exit after SIGTERM.
const STOP_GRACE: Duration = Duration::from_secs(3);

/// A client of the provider; each signs its access tokens with one algorithm.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Signer {
    Rs256,
    Es256,
    EdDsa,
}

impl Signer {
    pub const ALL: [Signer; 3] = [Signer::Rs256, Signer::Es256, Signer::EdDsa];

    /// The client id, which is also the tokens' `sub`.
    pub fn client_id(self) -> &'static str {
        match self {
            Self::Rs256 => "ci-job-rs",
            Self::Es256 => "ci-job-es",
            Self::EdDsa => "ci-job-ed",
        }
    }

    /// The `alg` of its tokens.
    pub fn alg(self) -> &'static str {
        match self {
            Self::Rs256 => "RS256",
            Self::Es256 => "ES256",
            Self::EdDsa => "EdDSA",
        }
    }

    fn secret(self) -> &'static str {
        "secret"
    }
}

/// How to start the provider.
#[derive(Clone, Debug)]
pub struct ProviderOptions {
    /// The resources it issues tokens for; the first is the default.
    pub audiences: Vec<String>,
    /// The port on the namespace's loopback; 0 for any free port.
    pub port: u16,
    /// Access token lifetime, in seconds.
    pub ttl_seconds: u32,
    /// Added to the provider's clock (negative: a provider whose clock is slow). Its tokens'
    /// `iat` and `exp` move with it.
    pub clock_offset_seconds: i64,
}

impl Default for ProviderOptions {
    fn default() -> Self {
        Self {
            audiences: vec![AUDIENCE.into(), OTHER_AUDIENCE.into()],
            port: 0,
            ttl_seconds: 300,
            clock_offset_seconds: 0,
        }
    }
}

/// A running provider. Dropping it kills it.
pub struct Provider {
    child: Child,
    netns: String,
    address: SocketAddr,
    issuer: String,
    output: Arc<Mutex<String>>,
    /// Holds the clock-shifting preload module, when there is one.
    _dir: Option<tempfile::TempDir>,
}

/// The provider's folder, with its npm packages installed.
pub fn provider_dir() -> anyhow::Result<PathBuf> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("oidc");
    if !dir
        .join("node_modules/oidc-provider/package.json")
        .is_file()
    {
        bail!(
            "the test OpenID provider is not installed in {}: run `cargo xtask setup` \
             (or `npm ci` there)",
            dir.display()
        );
    }
    Ok(dir)
}

impl Provider {
    /// Starts `node provider.js` in `netns` on 127.0.0.1, and waits until it is ready.
    pub fn start(netns: &Netns, options: &ProviderOptions) -> anyhow::Result<Self> {
        let dir = provider_dir()?;
        let mut command = Command::new("ip");
        command.args(["netns", "exec", netns.name(), "node"]);

        let preload = if options.clock_offset_seconds != 0 {
            let preload = tempfile::Builder::new()
                .prefix("pgt-oidc-")
                .tempdir()
                .context("make a temp folder")?;
            let module = preload.path().join("shift-clock.mjs");
            let offset_ms = options.clock_offset_seconds * 1000;
            std::fs::write(
                &module,
                format!(
                    "// The provider's clock, shifted by {offset_ms} ms.\n\
                     const now = Date.now;\nDate.now = () => now() + ({offset_ms});\n"
                ),
            )
            .with_context(|| format!("write {}", module.display()))?;
            command
                .arg("--import")
                .arg(format!("file://{}", module.display()));
            Some(preload)
        } else {
            None
        };

        command
            .arg(dir.join("provider.js"))
            .args(["--host", "127.0.0.1", "--port", &options.port.to_string()])
            .args(["--ttl", &options.ttl_seconds.to_string()]);
        for audience in &options.audiences {
            command.args(["--audience", audience]);
        }
        let mut child = command
            .current_dir(&dir)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .with_context(|| format!("start node {}/provider.js", dir.display()))?;

        // From here on a failure kills the child through the guard.
        let output = Arc::new(Mutex::new(String::new()));
        let stdout = child.stdout.take().context("take the provider's stdout")?;
        let stderr = child.stderr.take().context("take the provider's stderr")?;
        let mut provider = Self {
            child,
            netns: netns.name().to_owned(),
            address: SocketAddr::from(([127, 0, 0, 1], 0)),
            issuer: String::new(),
            output: output.clone(),
            _dir: preload,
        };
        let for_stderr = output.clone();
        thread::spawn(move || collect(stderr, &for_stderr));
        let (ready, issuer) = mpsc::channel();
        thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if let Some(issuer) = line.strip_prefix("READY ") {
                    let _ = ready.send(issuer.trim().to_owned());
                }
                let mut output = output.lock().expect("output lock");
                output.push_str(&line);
                output.push('\n');
            }
        });

        let issuer = issuer.recv_timeout(START_WAIT).map_err(|_| {
            anyhow::anyhow!(
                "the OpenID provider did not print READY within {START_WAIT:?}:\n{}",
                provider.output()
            )
        })?;
        let port = issuer
            .rsplit(':')
            .next()
            .and_then(|port| port.parse::<u16>().ok())
            .with_context(|| format!("read the port of the issuer {issuer}"))?;
        provider.address.set_port(port);
        provider.issuer = issuer;
        Ok(provider)
    }

    /// The issuer url, `http://127.0.0.1:PORT`: what tokens carry as `iss` and the policy's
    /// `[[issuer]] url`.
    pub fn issuer(&self) -> &str {
        &self.issuer
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// What the provider wrote (one line per request on stderr).
    pub fn output(&self) -> String {
        self.output.lock().expect("output lock").clone()
    }

    /// An access token from `signer` (client credentials) for `audience` with `scope`
    /// (space-separated; scopes the provider does not know are dropped).
    pub fn token(&self, signer: Signer, scope: &str, audience: &str) -> anyhow::Result<String> {
        let mut fields = vec![("grant_type", "client_credentials"), ("resource", audience)];
        if !scope.is_empty() {
            fields.push(("scope", scope));
        }
        let body = http::form(&fields);
        let credentials = STANDARD.encode(format!("{}:{}", signer.client_id(), signer.secret()));
        let host = self.address.to_string();
        let request = Request::new("POST", &host, "/token")
            .header("Authorization", format!("Basic {credentials}"))
            .body("application/x-www-form-urlencoded", body.as_bytes());
        let response = self.send(&request)?;
        if response.status != 200 {
            bail!(
                "the provider refused a token for {} ({audience}, {scope:?}): {} {}",
                signer.client_id(),
                response.status,
                response.text()
            );
        }
        let answer = response.json()?;
        answer["access_token"]
            .as_str()
            .map(str::to_owned)
            .with_context(|| format!("no access_token in {}", response.text()))
    }

    /// Makes new signing keys for every algorithm; with `drop_old`, the old ones leave the
    /// published key set. Returns the provider's state, with `new_kids`.
    pub fn rotate(&self, drop_old: bool) -> anyhow::Result<Value> {
        let path = if drop_old {
            "/admin/rotate?drop_old=1"
        } else {
            "/admin/rotate"
        };
        self.admin("POST", path)
    }

    /// Issuer, audiences, token lifetime, signing and published key ids.
    pub fn state(&self) -> anyhow::Result<Value> {
        self.admin("GET", "/admin/state")
    }

    fn admin(&self, method: &str, path: &str) -> anyhow::Result<Value> {
        let host = self.address.to_string();
        let response = self.send(&Request::new(method, &host, path))?;
        if response.status != 200 {
            bail!("{method} {path}: {} {}", response.status, response.text());
        }
        response.json()
    }

    /// One request over a connection made inside the provider's namespace.
    fn send(&self, request: &Request) -> anyhow::Result<Response> {
        let address = self.address;
        let mut stream = in_netns(&self.netns, || {
            TcpStream::connect_timeout(&address, IO_TIMEOUT)
        })?
        .with_context(|| format!("connect to the provider at {address} in {}", self.netns))?;
        stream.set_read_timeout(Some(IO_TIMEOUT))?;
        stream.set_write_timeout(Some(IO_TIMEOUT))?;
        http::exchange(&mut stream, request)
            .with_context(|| format!("{} {}{}", request.method, self.issuer, request.path))
    }

    fn signal(&self, signal: Signal) {
        if let Ok(pid) = i32::try_from(self.child.id()) {
            let _ = kill(Pid::from_raw(pid), signal);
        }
    }
}

impl Drop for Provider {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(Some(_))) {
            return;
        }
        self.signal(Signal::SIGTERM);
        let deadline = std::time::Instant::now() + STOP_GRACE;
        while std::time::Instant::now() < deadline {
            if matches!(self.child.try_wait(), Ok(Some(_))) {
                return;
            }
            thread::sleep(Duration::from_millis(20));
        }
        self.signal(Signal::SIGKILL);
        let _ = self.child.wait();
    }
}

fn collect(stream: impl Read, into: &Mutex<String>) {
    for line in BufReader::new(stream).lines() {
        let Ok(line) = line else { break };
        let mut output = into.lock().expect("output lock");
        output.push_str(&line);
        output.push('\n');
    }
}

/// The JSON of a token's header (part 0) or claims (part 1), without checking anything.
pub fn jwt_part(token: &str, part: usize) -> anyhow::Result<Value> {
    let segment = token
        .split('.')
        .nth(part)
        .with_context(|| format!("the token has no part {part}"))?;
    let bytes = URL_SAFE_NO_PAD
        .decode(segment)
        .with_context(|| format!("base64 of part {part}"))?;
    serde_json::from_slice(&bytes).with_context(|| format!("JSON of part {part}"))
}
