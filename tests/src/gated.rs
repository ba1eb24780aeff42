//! A host whose ports open for tokens: the lab, the test OpenID provider in the host namespace
//! (on its loopback, where the agent fetches keys), a CA and certificate for the auth
//! endpoint, a policy with `[auth]`, `[[issuer]]` and `[[gate]]`s, the agent, and listeners
//! behind the gates; with the client's side of the token flow: `portguard open` and plain
//! HTTPS requests from the client namespace, `portguard grants` for the operator.

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    process::Output,
    sync::atomic::{AtomicU32, Ordering},
    thread,
    time::Duration,
};

use anyhow::{Context as _, bail};
use serde_json::{Value, json};

use crate::{
    agent::{Agent, control_socket, portguard_bin},
    http::{Request, Response},
    lab::{Family, Lab, any},
    netns::Netns,
    oidc::{AUDIENCE, Provider, ProviderOptions, Signer},
    servers::TcpServer,
    tls::TestTls,
};

/// The port of the agent's auth endpoint.
pub const AUTH_PORT: u16 = 8443;
/// The provider's port on the host namespace's loopback.
pub const PROVIDER_PORT: u16 = 9000;
/// The policy's name for the provider.
pub const ISSUER_NAME: &str = "test";
/// How long the agent may take to read the provider's keys and listen.
const READY_WAIT: Duration = Duration::from_secs(15);

/// A `[[gate]]` of the policy.
#[derive(Clone, Copy, Debug)]
pub struct Gate {
    pub name: &'static str,
    pub port: u16,
    pub scope: &'static str,
    pub max_ttl: &'static str,
    /// "keep" or "cut".
    pub on_expiry: &'static str,
}

/// The `[auth]`, `[[issuer]]` and `[[gate]]` tables for a provider at `issuer` and the
/// certificate in `tls`.
pub fn token_tables(issuer: &str, tls: &TestTls, gates: &[Gate]) -> String {
    let mut text = format!(
        r#"
[auth]
listen = ["0.0.0.0:{AUTH_PORT}", "[::]:{AUTH_PORT}"]
tls_cert = "{}"
tls_key = "{}"
audience = "{AUDIENCE}"

[[issuer]]
name = "{ISSUER_NAME}"
url = "{issuer}"
algorithms = ["RS256", "ES256", "EdDSA"]
"#,
        tls.cert().display(),
        tls.key().display(),
    );
    for gate in gates {
        text.push_str(&format!(
            r#"
[[gate]]
name = "{}"
port = {}
protocol = "tcp"
scope = "{}"
max_ttl = "{}"
on_expiry = "{}"
"#,
            gate.name, gate.port, gate.scope, gate.max_ttl, gate.on_expiry
        ));
    }
    text
}

/// The agent's auth endpoint as the client reaches it over `family`.
pub fn auth_address(family: Family) -> SocketAddr {
    family.host(AUTH_PORT)
}

/// The auth endpoint's url for `portguard open`.
pub fn auth_url(family: Family) -> String {
    format!("https://{}", auth_address(family))
}

/// What `portguard open` printed for a grant.
#[derive(Debug, Clone)]
pub struct Opened {
    pub id: String,
    pub line: String,
}

/// Everything a token test needs. Fields drop in order: the agent, the listeners, the
/// provider, the TLS files, then the lab.
pub struct GatedHost {
    pub agent: Agent,
    _servers: Vec<TcpServer>,
    pub provider: Provider,
    pub tls: TestTls,
    pub lab: Lab,
    policy: String,
    tokens_written: AtomicU32,
}

impl GatedHost {
    /// Starts the lab, the provider, and the agent with `gates`, a listener on each gate's
    /// port, and waits until the agent holds the provider's keys and listens for tokens.
    pub fn start(test: &str, gates: &[Gate], provider: &ProviderOptions) -> anyhow::Result<Self> {
        let lab = Lab::new(test)?;
        let tls = TestTls::for_lab_host()?;
        let servers = gates
            .iter()
            .map(|gate| TcpServer::start(&lab.host, any(gate.port)))
            .collect::<anyhow::Result<Vec<_>>>()?;

        // The host namespace is new, so the provider's port is free there; knowing it, the
        // provider and the agent start side by side (the agent retries its first key fetch
        // if it is quicker).
        let options = ProviderOptions {
            port: PROVIDER_PORT,
            ..provider.clone()
        };
        let issuer = format!("http://127.0.0.1:{PROVIDER_PORT}");
        let policy = format!(
            "[guard]\ninterfaces = [\"*\"]\n{}",
            token_tables(&issuer, &tls, gates)
        );
        let (provider, agent) = thread::scope(|scope| {
            let provider = scope.spawn(|| Provider::start(&lab.host, &options));
            let agent = lab.start_agent(&policy);
            let provider = provider
                .join()
                .unwrap_or_else(|panic| std::panic::resume_unwind(panic));
            (provider, agent)
        });
        let (provider, agent) = (provider?, agent?);
        anyhow::ensure!(
            provider.issuer() == issuer,
            "the provider's issuer is {}, not {issuer}",
            provider.issuer()
        );

        let mut host = Self {
            agent,
            _servers: servers,
            provider,
            tls,
            lab,
            policy,
            tokens_written: AtomicU32::new(0),
        };
        host.wait_ready()?;
        Ok(host)
    }

    /// Waits for the issuer's keys and both auth listeners.
    fn wait_ready(&mut self) -> anyhow::Result<()> {
        self.agent
            .wait_for("issuer.keys_loaded", READY_WAIT, |event| {
                event["event"] == "issuer.keys_loaded" && event["issuer"] == ISSUER_NAME
            })
            .with_context(|| format!("provider output:\n{}", self.provider.output()))?;
        for family in Family::BOTH {
            let address = match family {
                Family::V4 => format!("0.0.0.0:{AUTH_PORT}"),
                Family::V6 => format!("[::]:{AUTH_PORT}"),
            };
            self.agent
                .wait_for(&format!("auth.listening on {address}"), READY_WAIT, |e| {
                    e["event"] == "auth.listening" && e["address"] == address.as_str()
                })?;
        }
        Ok(())
    }

    pub fn policy(&self) -> &str {
        &self.policy
    }

    /// Stops the agent (SIGTERM) and starts a new one with the same policy, state directory
    /// and control socket.
    pub fn restart_agent(&mut self) -> anyhow::Result<()> {
        let status = self.agent.stop()?;
        if !status.success() {
            bail!("the agent exited with {status}\n{}", self.agent.report());
        }
        self.agent = self.lab.start_agent(&self.policy)?;
        self.wait_ready()
    }

    /// The agent's control socket, on the shared filesystem.
    pub fn control_socket(&self) -> PathBuf {
        control_socket(self.agent.policy(), self.lab.host.name())
    }

    /// A token for this host's audience.
    pub fn token(&self, signer: Signer, scope: &str) -> anyhow::Result<String> {
        self.provider.token(signer, scope, AUDIENCE)
    }

    /// Writes `token` to a new file (mode 0600) for `--token-file`.
    pub fn token_file(&self, token: &str) -> anyhow::Result<PathBuf> {
        use std::os::unix::fs::OpenOptionsExt as _;
        let n = self.tokens_written.fetch_add(1, Ordering::Relaxed);
        let path = self.tls.dir().join(format!("token-{n}"));
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)
            .with_context(|| format!("create {}", path.display()))?;
        std::io::Write::write_all(&mut file, token.as_bytes())?;
        Ok(path)
    }

    /// Runs `portguard open` in the client namespace against the host's `family` address,
    /// with `extra` arguments (`--port 5432/tcp`, `--ttl 3s`), and returns its output.
    pub fn open_output(
        &self,
        family: Family,
        token: &str,
        extra: &[&str],
    ) -> anyhow::Result<Output> {
        let token_file = self.token_file(token)?;
        portguard_open(&self.lab.client, &self.tls, family, &token_file, extra)
    }

    /// As [`GatedHost::open_output`], failing unless a grant was opened; returns its id.
    pub fn open(&self, family: Family, token: &str, extra: &[&str]) -> anyhow::Result<Opened> {
        let output = self.open_output(family, token, extra)?;
        let stdout = String::from_utf8_lossy(&output.stdout).trim().to_owned();
        let stderr = String::from_utf8_lossy(&output.stderr);
        if !output.status.success() {
            bail!(
                "portguard open over {family:?} failed ({}): {stdout}\n{stderr}\n{}",
                output.status,
                self.agent.report()
            );
        }
        // "grant ID opens PORTS for SOURCE until EXPIRY (N s)"
        let id = stdout
            .strip_prefix("grant ")
            .and_then(|rest| rest.split_whitespace().next())
            .with_context(|| format!("read the grant id from {stdout:?}"))?;
        Ok(Opened {
            id: id.to_owned(),
            line: stdout.clone(),
        })
    }

    /// `POST /v1/grants` from the client namespace over `family`, with `token` and `body`.
    pub fn post_grant(
        &self,
        family: Family,
        token: &str,
        body: &Value,
    ) -> anyhow::Result<Response> {
        let host = auth_address(family).to_string();
        let body = body.to_string();
        let request = Request::new("POST", &host, "/v1/grants")
            .header("Authorization", format!("Bearer {token}"))
            .body("application/json", body.as_bytes());
        self.tls
            .request(&self.lab.client, auth_address(family), &request)
    }

    /// `DELETE /v1/grants/{id}` from the client namespace over `family`, with `token`.
    pub fn delete_grant(&self, family: Family, token: &str, id: &str) -> anyhow::Result<Response> {
        let host = auth_address(family).to_string();
        let path = format!("/v1/grants/{id}");
        let request =
            Request::new("DELETE", &host, &path).header("Authorization", format!("Bearer {token}"));
        self.tls
            .request(&self.lab.client, auth_address(family), &request)
    }

    /// `portguard grants ARGS --control-socket S`, run by the operator outside the
    /// namespace: the socket is a file on the shared filesystem.
    pub fn grants_cli(&self, args: &[&str]) -> anyhow::Result<Output> {
        let binary = portguard_bin()?;
        std::process::Command::new(&binary)
            .arg("grants")
            .args(args)
            .arg("--control-socket")
            .arg(self.control_socket())
            .output()
            .with_context(|| format!("run {} grants", binary.display()))
    }

    /// The live grants, as `portguard grants list` prints them.
    pub fn grants(&self) -> anyhow::Result<Vec<Value>> {
        let output = self.grants_cli(&["list"])?;
        if !output.status.success() {
            bail!(
                "portguard grants list failed ({}): {}",
                output.status,
                String::from_utf8_lossy(&output.stderr)
            );
        }
        String::from_utf8_lossy(&output.stdout)
            .lines()
            .map(|line| serde_json::from_str(line).with_context(|| format!("read {line:?}")))
            .collect()
    }

    /// What the agent and the provider said, for failure messages.
    pub fn report(&self) -> String {
        format!(
            "{}\nprovider output:\n{}",
            self.agent.report(),
            self.provider.output()
        )
    }
}

/// Runs `portguard open https://HOST:8443 --token-file FILE --ca CA EXTRA...` in `client`,
/// against the host's `family` address, and returns its output whatever its status.
pub fn portguard_open(
    client: &Netns,
    tls: &TestTls,
    family: Family,
    token_file: &Path,
    extra: &[&str],
) -> anyhow::Result<Output> {
    let binary = portguard_bin()?;
    let url = auth_url(family);
    let mut args = vec![
        "open",
        url.as_str(),
        "--token-file",
        path_str(token_file)?,
        "--ca",
        path_str(tls.ca())?,
    ];
    args.extend_from_slice(extra);
    client.exec(path_str(&binary)?, &args)
}

/// The request body that asks for these ports.
pub fn ports_body(ports: &[&str]) -> Value {
    json!({ "ports": ports })
}

fn path_str(path: &Path) -> anyhow::Result<&str> {
    path.to_str()
        .with_context(|| format!("{} is not UTF-8", path.display()))
}
