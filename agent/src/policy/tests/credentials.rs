//! `tls_cert` and `tls_key` written `"credential:NAME"`: systemd credentials
//! (`LoadCredential=`), found in `$CREDENTIALS_DIRECTORY` when the policy is loaded.

use std::path::{Path, PathBuf};

use super::super::auth::with_credentials_directory;
use super::{Policy, Problem, parse};

/// An `[auth]` table whose key, on line 4 at column 11, is `tls_key`.
fn auth(tls_cert: &str, tls_key: &str) -> String {
    format!(
        "[auth]\nlisten = [\"[::]:8443\"]\ntls_cert = \"{tls_cert}\"\ntls_key = \"{tls_key}\"\n\
         audience = \"portguard\"\n"
    )
}

fn parse_with(directory: Option<&str>, text: &str) -> Result<Policy, super::PolicyError> {
    with_credentials_directory(directory.map(Path::new), || parse(text))
}

#[track_caller]
fn problems_with(directory: Option<&str>, text: &str) -> Vec<Problem> {
    match parse_with(directory, text) {
        Err(super::PolicyError::Invalid { problems, .. }) => problems,
        other => panic!("expected problems, found {other:?}"),
    }
}

#[track_caller]
fn one_problem_with(directory: Option<&str>, text: &str) -> Problem {
    let found = problems_with(directory, text);
    assert_eq!(found.len(), 1, "expected one problem, found {found:#?}");
    found.into_iter().next().expect("one problem")
}

#[test]
fn credential_key_is_the_file_in_the_credentials_directory() {
    let text = auth("/etc/portguard/tls.crt", "credential:tls.key");

    let policy = parse_with(Some("/run/credentials/portguard.service"), &text)
        .unwrap_or_else(|error| panic!("expected a valid policy, found:\n{error}"));

    let auth = policy.auth.expect("[auth] is written");
    assert_eq!(
        auth.tls_key,
        PathBuf::from("/run/credentials/portguard.service/tls.key")
    );
    assert_eq!(auth.tls_cert, PathBuf::from("/etc/portguard/tls.crt"));
}

#[test]
fn credential_cert_and_key_both_resolve() {
    let text = auth("credential:tls.crt", "credential:tls.key");

    let auth = parse_with(Some("/run/credentials/portguard.service"), &text)
        .expect("valid")
        .auth
        .expect("[auth] is written");

    assert_eq!(
        auth.tls_cert,
        PathBuf::from("/run/credentials/portguard.service/tls.crt")
    );
    assert_eq!(
        auth.tls_key,
        PathBuf::from("/run/credentials/portguard.service/tls.key")
    );
}

#[test]
fn plain_paths_ignore_the_credentials_directory() {
    let text = auth(
        "/etc/portguard/tls.crt",
        "/etc/portguard/credential:odd.key",
    );

    let auth = parse_with(Some("/run/credentials/portguard.service"), &text)
        .expect("valid")
        .auth
        .expect("[auth] is written");

    assert_eq!(
        auth.tls_key,
        PathBuf::from("/etc/portguard/credential:odd.key")
    );
}

#[test]
fn credential_without_credentials_directory_is_an_error_at_the_value() {
    let text = auth("/etc/portguard/tls.crt", "credential:tls.key");

    let problem = one_problem_with(None, &text);

    assert_eq!((problem.line, problem.column), (4, 11), "{problem:?}");
    for says in [
        "tls_key: \"credential:tls.key\" names a systemd credential",
        "$CREDENTIALS_DIRECTORY is not set",
        "LoadCredential=tls.key:",
    ] {
        assert!(
            problem.message.contains(says),
            "{:?} does not say {says:?}",
            problem.message
        );
    }
}

#[test]
fn an_empty_credentials_directory_counts_as_unset() {
    let text = auth("/etc/portguard/tls.crt", "credential:tls.key");

    let problem = one_problem_with(Some(""), &text);

    assert!(
        problem
            .message
            .contains("$CREDENTIALS_DIRECTORY is not set"),
        "{problem:?}"
    );
}

#[test]
fn a_relative_credentials_directory_is_refused() {
    let text = auth("/etc/portguard/tls.crt", "credential:tls.key");

    let problem = one_problem_with(Some("credentials"), &text);

    assert_eq!((problem.line, problem.column), (4, 11), "{problem:?}");
    assert!(
        problem.message.contains("not an absolute path"),
        "{problem:?}"
    );
}

#[test]
fn credential_names_must_be_file_names() {
    for name in [
        "",
        ".",
        "..",
        "../tls.key",
        "keys/tls.key",
        "/etc/portguard/tls.key",
    ] {
        let text = auth("/etc/portguard/tls.crt", &format!("credential:{name}"));

        let problem = one_problem_with(Some("/run/credentials/portguard.service"), &text);

        assert_eq!(
            (problem.line, problem.column),
            (4, 11),
            "{name:?}: {problem:?}"
        );
        assert!(
            problem
                .message
                .contains("tls_key: expected a credential name after \"credential:\""),
            "{name:?}: {problem:?}"
        );
    }
}

#[test]
fn credential_names_longer_than_name_max_are_refused() {
    let long = "k".repeat(256);
    let text = auth("/etc/portguard/tls.crt", &format!("credential:{long}"));

    let problem = one_problem_with(Some("/run/credentials/portguard.service"), &text);

    assert!(
        problem.message.contains("expected a credential name"),
        "{problem:?}"
    );
}

#[test]
fn cert_and_key_credentials_are_both_reported() {
    let text = auth("credential:tls.crt", "credential:tls.key");

    let found = problems_with(None, &text);

    let places: Vec<_> = found
        .iter()
        .map(|problem| (problem.line, problem.column))
        .collect();
    assert_eq!(places, [(3, 12), (4, 11)], "{found:#?}");
    assert!(found[0].message.starts_with("tls_cert: "), "{found:?}");
    assert!(found[1].message.starts_with("tls_key: "), "{found:?}");
}

#[test]
fn the_error_names_file_line_and_column() {
    let text = auth("/etc/portguard/tls.crt", "credential:tls.key");

    let error = parse_with(None, &text).unwrap_err();

    assert!(
        error
            .to_string()
            .starts_with("policy.toml:4:11: tls_key: \"credential:tls.key\" names a systemd"),
        "{error}"
    );
}

#[test]
fn the_real_environment_is_read_outside_tests_overrides() {
    // Outside `with_credentials_directory`, the process's own environment decides; under
    // `cargo test` it has no credentials unless the test runner runs as a systemd service
    // with some.
    let text = auth("/etc/portguard/tls.crt", "credential:tls.key");
    let real = std::env::var_os("CREDENTIALS_DIRECTORY").filter(|d| !d.is_empty());

    let parsed = parse(&text);

    match real {
        None => assert!(parsed.is_err(), "{parsed:?}"),
        Some(directory) => assert_eq!(
            parsed.expect("valid").auth.expect("[auth]").tls_key,
            PathBuf::from(directory).join("tls.key")
        ),
    }
}
