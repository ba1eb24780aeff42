//! `portguard check`: validates a policy file, refuses one that would shut the operator out
//! (unless forced), and warns about risky ones, without touching the kernel.

use std::{
    io::{self, Write},
    path::Path,
    process::ExitCode,
};

use anyhow::Context as _;

use crate::{
    lockout::{self, SshPeer},
    policy::{Policy, SessionEnv},
};

/// How `check` judges a policy.
#[derive(Clone, Copy, Debug, Default)]
pub struct CheckOptions {
    /// Exit 2 when there are warnings.
    pub strict: bool,
    /// Report lockouts as warnings rather than refusing the policy.
    pub force: bool,
}

pub fn check(path: &Path, options: CheckOptions) -> anyhow::Result<ExitCode> {
    let env = SessionEnv::from_process();
    let peers = lockout::ssh_peers(&env);
    report(
        path,
        options,
        &env,
        &peers,
        &mut io::stdout().lock(),
        &mut io::stderr().lock(),
    )
    .context("write the report")
}

/// Judges the policy at `path` for the session `env` and the SSH connections `peers`:
/// errors and lockouts exit 1, warnings go to `err`, the summary to `out`.
fn report(
    path: &Path,
    options: CheckOptions,
    env: &SessionEnv,
    peers: &[SshPeer],
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> io::Result<ExitCode> {
    let policy = match Policy::load(path) {
        Ok(policy) => policy,
        Err(error) => {
            writeln!(err, "{}", describe(error).trim_end())?;
            return Ok(ExitCode::FAILURE);
        }
    };

    let lockouts = match lockout::review(&policy, peers, options.force) {
        Ok(lockouts) => lockouts,
        Err(refused) => {
            writeln!(err, "{refused}")?;
            return Ok(ExitCode::FAILURE);
        }
    };

    let mut warnings: Vec<(usize, usize, String)> = policy
        .warnings(env)
        .into_iter()
        .map(|warning| (warning.line, warning.column, warning.message))
        .collect();
    warnings.extend(
        lockouts
            .into_iter()
            .map(|lockout| (lockout.line, lockout.column, lockout.message)),
    );
    warnings.sort_by_key(|(line, column, _)| (*line, *column));
    for (line, column, message) in &warnings {
        writeln!(
            err,
            "{}:{line}:{column}: warning: {message}",
            path.display()
        )?;
    }
    writeln!(
        out,
        "{}: ok ({} endpoints, {} gates, {} issuers, {} warnings)",
        path.display(),
        policy.endpoints.len(),
        policy.gates.len(),
        policy.issuers.len(),
        warnings.len()
    )?;
    Ok(if options.strict && !warnings.is_empty() {
        ExitCode::from(2)
    } else {
        ExitCode::SUCCESS
    })
}

/// A policy error with its causes (a read error's I/O cause, say), for people.
pub fn describe(error: crate::policy::PolicyError) -> String {
    format!("{:#}", anyhow::Error::from(error))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// SSH from the office network only.
    const OFFICE_SSH: &str =
        "[[endpoint]]\nname = \"ssh\"\nport = 22\nprotocol = \"tcp\"\nfrom = [\"10.0.0.0/8\"]\n";

    /// What `check` prints and returns for `text`, run from an SSH session from 203.0.113.9.
    fn check_over_ssh(text: &str, options: CheckOptions) -> (ExitCode, String, String) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("policy.toml");
        std::fs::write(&path, text).unwrap();
        let env = SessionEnv {
            ssh_connection: Some("203.0.113.9 51234 192.0.2.1 22".to_owned()),
        };
        let peers: Vec<SshPeer> = env
            .ssh_connection
            .as_deref()
            .and_then(SshPeer::from_ssh_connection)
            .into_iter()
            .collect();
        let (mut out, mut err) = (Vec::new(), Vec::new());

        let code = report(&path, options, &env, &peers, &mut out, &mut err).unwrap();

        let located = |bytes: Vec<u8>| {
            String::from_utf8(bytes)
                .unwrap()
                .replace(&path.display().to_string(), "policy.toml")
        };
        (code, located(out), located(err))
    }

    #[test]
    fn policy_that_would_cut_the_session_exits_1_with_the_place() {
        let (code, out, err) = check_over_ssh(OFFICE_SSH, CheckOptions::default());

        assert_eq!(code, ExitCode::FAILURE);
        assert_eq!(out, "");
        assert!(
            err.starts_with(
                "policy.toml:5:8: this session comes over ssh from 203.0.113.9 to port 22"
            ),
            "{err}"
        );
        assert!(err.contains("pass --force"), "{err}");
    }

    #[test]
    fn forced_lockout_is_a_warning_and_exits_0() {
        let options = CheckOptions {
            force: true,
            ..CheckOptions::default()
        };

        let (code, out, err) = check_over_ssh(OFFICE_SSH, options);

        assert_eq!(code, ExitCode::SUCCESS);
        assert_eq!(
            out,
            "policy.toml: ok (1 endpoints, 0 gates, 0 issuers, 1 warnings)\n"
        );
        assert!(
            err.starts_with("policy.toml:5:8: warning: this session comes over ssh"),
            "{err}"
        );
        assert!(
            err.trim_end().ends_with("applied anyway (--force)"),
            "{err}"
        );
    }

    #[test]
    fn forced_lockout_still_counts_as_a_warning_for_strict() {
        let options = CheckOptions {
            force: true,
            strict: true,
        };

        let (code, _, _) = check_over_ssh(OFFICE_SSH, options);

        assert_eq!(code, ExitCode::from(2));
    }

    #[test]
    fn policy_that_keeps_the_session_passes_without_warnings() {
        let text = OFFICE_SSH.replace("[\"10.0.0.0/8\"]", "[\"10.0.0.0/8\", \"203.0.113.9/32\"]");

        let (code, out, err) = check_over_ssh(&text, CheckOptions::default());

        assert_eq!(code, ExitCode::SUCCESS);
        assert_eq!(err, "");
        assert!(out.ends_with("0 warnings)\n"), "{out}");
    }
}
