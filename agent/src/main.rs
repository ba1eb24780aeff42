//! The `portguard` binary: the daemon (`run`) and the operator's commands.

use std::{path::PathBuf, process::ExitCode};

use clap::{Parser, Subcommand};
use portguard::{check, run};

/// Keeps every port of this host shut, except the declared endpoints.
#[derive(Debug, Parser)]
#[command(name = "portguard", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the guard: load the policy, attach to its interfaces, log events (needs root).
    Run {
        /// The policy file.
        #[arg(
            long,
            default_value = "/etc/portguard/policy.toml",
            env = "PORTGUARD_POLICY"
        )]
        policy: PathBuf,
    },
    /// Validate a policy file without touching the kernel; exits 1 when it has errors.
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
    },
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

    let cli = Cli::parse();
    let result = match cli.command {
        Command::Run { policy } => run::run(&policy),
        Command::Check { policy, strict } => check::check(&policy, strict),
    };
    match result {
        Ok(code) => code,
        Err(error) => {
            eprintln!("portguard: {error:#}");
            ExitCode::FAILURE
        }
    }
}
