//! The `portguard` binary: the daemon (`run`) and the operator's and clients' commands.

use std::{path::PathBuf, process::ExitCode};

use clap::{Parser, Subcommand, builder::BoolishValueParser};
use portguard::{
    check,
    control::{self, DEFAULT_SOCKET, Request},
    open::{OpenRequest, open},
    run::{RunOptions, run},
};

/// Where the guard is pinned unless told otherwise.
const DEFAULT_PIN_DIR: &str = "/sys/fs/bpf/portguard";

/// Keeps every port of this host shut, except the declared endpoints and what valid access
/// tokens open.
#[derive(Debug, Parser)]
#[command(name = "portguard", version = env!("PORTGUARD_VERSION"), about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the guard: load the policy, attach to its interfaces, serve the auth endpoint, log
    /// events (needs root, or CAP_BPF, CAP_NET_ADMIN and CAP_PERFMON).
    Run {
        /// The policy file.
        #[arg(
            long,
            default_value = "/etc/portguard/policy.toml",
            env = "PORTGUARD_POLICY"
        )]
        policy: PathBuf,
        /// Where the grant ledger is kept.
        #[arg(
            long,
            default_value = "/var/lib/portguard",
            env = "PORTGUARD_STATE_DIR"
        )]
        state_dir: PathBuf,
        /// The control socket the CLI talks to.
        #[arg(long, default_value = DEFAULT_SOCKET, env = "PORTGUARD_CONTROL_SOCKET")]
        control_socket: PathBuf,
        /// Where the guard's programs, links and maps are pinned (on a bpffs, mounted at
        /// /sys/fs/bpf when missing): what keeps the guard enforcing while the agent is
        /// stopped, and what the next agent adopts.
        #[arg(long, default_value = DEFAULT_PIN_DIR, env = "PORTGUARD_PIN_DIR")]
        pin_dir: PathBuf,
        /// Apply a policy that would shut out an open SSH connection or IPv6 neighbour
        /// discovery (see `check`); try a policy in monitor mode first instead.
        #[arg(long, env = "PORTGUARD_FORCE", value_parser = BoolishValueParser::new())]
        force: bool,
    },
    /// Validate a policy file without touching the kernel; exits 1 when it has errors or
    /// would shut out an open SSH connection.
    Check {
        /// The policy file.
        #[arg(
            long,
            default_value = "/etc/portguard/policy.toml",
            env = "PORTGUARD_POLICY"
        )]
        policy: PathBuf,
        /// Exit 2 when the policy has warnings.
        #[arg(long)]
        strict: bool,
        /// Report what the policy would shut out as warnings, not errors.
        #[arg(long, env = "PORTGUARD_FORCE", value_parser = BoolishValueParser::new())]
        force: bool,
    },
    /// Reload the policy file in the running agent (as `systemctl reload` does), and print
    /// the generation in force; exits 1 when the new policy is refused (the old one stays).
    Reload {
        /// Roll the reload back unless `portguard confirm` comes within this time (e.g.
        /// "2m"): a way back if the new policy cuts you off.
        #[arg(long, value_parser = humantime::parse_duration)]
        confirm_within: Option<std::time::Duration>,
        #[arg(long, default_value = DEFAULT_SOCKET, env = "PORTGUARD_CONTROL_SOCKET")]
        control_socket: PathBuf,
    },
    /// Keep the policy of a reload made with `--confirm-within`.
    Confirm {
        #[arg(long, default_value = DEFAULT_SOCKET, env = "PORTGUARD_CONTROL_SOCKET")]
        control_socket: PathBuf,
    },
    /// Remove the guard from the kernel: unpin its links (the interfaces are unguarded from
    /// then on), programs and maps. Refused while an agent answers on the control socket:
    /// stop the service first.
    Uninstall {
        #[arg(long, default_value = DEFAULT_PIN_DIR, env = "PORTGUARD_PIN_DIR")]
        pin_dir: PathBuf,
        #[arg(long, default_value = DEFAULT_SOCKET, env = "PORTGUARD_CONTROL_SOCKET")]
        control_socket: PathBuf,
    },
    /// What the kernel enforces now; exits 1 when it is not what the policy asks for.
    Status {
        /// The whole status as JSON.
        #[arg(long)]
        json: bool,
        /// The running agent's control socket.
        #[arg(long, default_value = DEFAULT_SOCKET, env = "PORTGUARD_CONTROL_SOCKET")]
        control_socket: PathBuf,
        /// Where the guard is pinned: read when no agent answers, to show what the kernel
        /// still enforces.
        #[arg(long, default_value = DEFAULT_PIN_DIR, env = "PORTGUARD_PIN_DIR")]
        pin_dir: PathBuf,
    },
    /// List or revoke the running agent's grants.
    Grants {
        #[command(subcommand)]
        action: GrantsAction,
        /// The running agent's control socket.
        #[arg(long, global = true, default_value = DEFAULT_SOCKET, env = "PORTGUARD_CONTROL_SOCKET")]
        control_socket: PathBuf,
    },
    /// Ask an agent for a grant: present an access token at its auth endpoint.
    Open {
        /// The agent's auth endpoint, e.g. https://host.example.com:8443
        url: String,
        /// A file holding the access token.
        #[arg(long)]
        token_file: PathBuf,
        /// A port to open, as PORT/tcp or PORT/udp (repeat for more); default: every port
        /// the token's scopes open.
        #[arg(long = "port")]
        ports: Vec<String>,
        /// Ask for a shorter grant than the token and the gate allow, e.g. 10m.
        #[arg(long)]
        ttl: Option<String>,
        /// Extra CA certificates (PEM) to trust for the auth endpoint.
        #[arg(long)]
        ca: Option<PathBuf>,
    },
    /// Write the man page or shell completions into a directory (for packaging).
    #[command(hide = true)]
    Generate {
        artifact: Artifact,
        /// The directory to write into.
        #[arg(long)]
        out: PathBuf,
    },
}

/// What `generate` writes.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum Artifact {
    /// The man page, portguard.1.
    Man,
    /// Shell completions for bash, zsh and fish.
    Completions,
}

#[derive(Debug, Subcommand)]
enum GrantsAction {
    /// Print the live grants as JSON, one per line.
    List,
    /// End a grant now.
    Revoke { id: String },
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("PORTGUARD_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();

    let result = match Cli::parse().command {
        Command::Run {
            policy,
            state_dir,
            control_socket,
            pin_dir,
            force,
        } => run(&RunOptions {
            policy,
            state_dir,
            control_socket,
            pin_dir,
            force,
        }),
        Command::Uninstall {
            pin_dir,
            control_socket,
        } => uninstall(&pin_dir, &control_socket),
        Command::Reload {
            confirm_within,
            control_socket,
        } => reload(
            &Request::Reload {
                confirm_within_ms: confirm_within.map(|d| d.as_millis() as u64),
            },
            &control_socket,
        ),
        Command::Confirm { control_socket } => reload(&Request::Confirm, &control_socket),
        Command::Check {
            policy,
            strict,
            force,
        } => check::check(&policy, check::CheckOptions { strict, force }),
        Command::Grants {
            action,
            control_socket,
        } => grants(action, &control_socket),
        Command::Status {
            json,
            control_socket,
            pin_dir,
        } => status(json, &control_socket, &pin_dir),
        Command::Generate { artifact, out } => generate(artifact, &out),
        Command::Open {
            url,
            token_file,
            ports,
            ttl,
            ca,
        } => open(&OpenRequest {
            url: &url,
            token_file: &token_file,
            ports: &ports,
            ttl: ttl.as_deref(),
            ca: ca.as_deref(),
        }),
    };
    match result {
        Ok(code) => code,
        Err(error) => {
            eprintln!("portguard: {error:#}");
            ExitCode::FAILURE
        }
    }
}

fn generate(artifact: Artifact, out: &std::path::Path) -> anyhow::Result<ExitCode> {
    use anyhow::Context as _;
    use clap::CommandFactory as _;

    std::fs::create_dir_all(out).with_context(|| format!("create {}", out.display()))?;
    let mut command = Cli::command();
    match artifact {
        Artifact::Man => {
            let path = out.join("portguard.1");
            let mut page = Vec::new();
            clap_mangen::Man::new(command)
                .render(&mut page)
                .context("render the man page")?;
            std::fs::write(&path, page).with_context(|| format!("write {}", path.display()))?;
        }
        Artifact::Completions => {
            use clap_complete::Shell;
            for shell in [Shell::Bash, Shell::Zsh, Shell::Fish] {
                clap_complete::generate_to(shell, &mut command, "portguard", out)
                    .with_context(|| format!("write {shell} completions"))?;
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn uninstall(pin_dir: &std::path::Path, socket: &std::path::Path) -> anyhow::Result<ExitCode> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    if runtime
        .block_on(control::ask(socket, &Request::Status))
        .is_ok()
    {
        anyhow::bail!(
            "an agent answers on {}: stop it first (systemctl stop portguard), or it would \
             keep the guard attached",
            socket.display()
        );
    }
    // An agent holds its pin folder for as long as it runs.
    let _lock = match pin_dir.is_dir() {
        true => Some(portguard::loader::pins::lock(pin_dir)?),
        false => None,
    };
    let removed = portguard::loader::pins::remove_all(pin_dir)?;
    let links = removed
        .iter()
        .filter(|path| path.parent().is_some_and(|p| p.ends_with("links")))
        .count();
    if removed.is_empty() {
        println!("nothing pinned at {}", pin_dir.display());
    } else {
        println!(
            "removed the guard pinned at {}: {links} link(s) detached, {} pin(s) removed",
            pin_dir.display(),
            removed.len()
        );
    }
    Ok(ExitCode::SUCCESS)
}

fn status(
    json: bool,
    socket: &std::path::Path,
    pin_dir: &std::path::Path,
) -> anyhow::Result<ExitCode> {
    let asked = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?
        .block_on(control::ask(socket, &Request::Status));
    let answer = match asked {
        Ok(answer) => answer,
        // No agent: the guard may well still be enforcing, pinned. Say what the pins hold.
        Err(error) => {
            let pinned = portguard::status::pinned::collect(pin_dir)?;
            if json {
                let status = serde_json::json!({
                    "enforcing": false,
                    "agent": format!("{error:#}"),
                    "pinned": pinned,
                });
                println!("{status:#}");
            } else {
                println!("agent: NOT ANSWERING ({error:#})");
                match &pinned {
                    Some(pinned) => print!("{}", portguard::status::pinned::describe(pinned)),
                    None => println!("nothing pinned at {}: no guard", pin_dir.display()),
                }
            }
            return Ok(ExitCode::FAILURE);
        }
    };
    let status = &answer["status"];
    if json {
        println!("{status:#}");
    } else {
        print!("{}", portguard::status::describe(status));
    }
    let enforcing = status["enforcing"].as_bool().unwrap_or(false);
    Ok(if enforcing {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

fn grants(action: GrantsAction, socket: &std::path::Path) -> anyhow::Result<ExitCode> {
    let request = match action {
        GrantsAction::List => Request::GrantsList,
        GrantsAction::Revoke { id } => Request::GrantsRevoke { id },
    };
    let answer = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?
        .block_on(control::ask(socket, &request))?;
    match &request {
        Request::GrantsList => {
            for grant in answer["grants"].as_array().into_iter().flatten() {
                println!("{grant}");
            }
        }
        Request::GrantsRevoke { id } => println!("grant {id} revoked"),
        _ => unreachable!("only grants requests come here"),
    }
    Ok(ExitCode::SUCCESS)
}

/// `reload` and `confirm`: ask the running agent, print what it did.
fn reload(request: &Request, socket: &std::path::Path) -> anyhow::Result<ExitCode> {
    let answer = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?
        .block_on(control::ask(socket, request))?;
    let generation = &answer["generation"];
    match answer["confirm_within_ms"].as_u64() {
        Some(ms) => println!(
            "policy generation {generation} in force; it is rolled back unless \
             `portguard confirm` comes within {}",
            humantime::format_duration(std::time::Duration::from_millis(ms))
        ),
        None => println!("policy generation {generation} in force"),
    }
    Ok(ExitCode::SUCCESS)
}
