//! `portguard check`: validates a policy file and warns about risky ones, without touching
//! the kernel.

use std::{path::Path, process::ExitCode};

use crate::policy::{Policy, SessionEnv};

pub fn check(path: &Path, strict: bool) -> anyhow::Result<ExitCode> {
    let policy = match Policy::load(path) {
        Ok(policy) => policy,
        Err(error) => {
            eprintln!("{}", describe(error).trim_end());
            return Ok(ExitCode::FAILURE);
        }
    };

    let warnings = policy.warnings(&SessionEnv::from_process());
    for warning in &warnings {
        eprintln!(
            "{}:{}:{}: warning: {}",
            path.display(),
            warning.line,
            warning.column,
            warning.message
        );
    }
    println!(
        "{}: ok ({} endpoints, {} gates, {} issuers, {} warnings)",
        path.display(),
        policy.endpoints.len(),
        policy.gates.len(),
        policy.issuers.len(),
        warnings.len()
    );
    Ok(if strict && !warnings.is_empty() {
        ExitCode::from(2)
    } else {
        ExitCode::SUCCESS
    })
}

/// A policy error with its causes (a read error's I/O cause, say), for people.
pub fn describe(error: crate::policy::PolicyError) -> String {
    format!("{:#}", anyhow::Error::from(error))
}
