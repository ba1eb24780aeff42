//! Each problem of `[auth]`, the issuers, the tokens' path to the gates and `[events]`, at its
//! line and column.

use super::{AUTH, ISSUER, assert_problem, valid};

/// A gate table, to put after the table under test.
const GATE: &str = "\n[[gate]]\nname = \"db\"\nport = 5432\nprotocol = \"tcp\"\nscope = \"db\"\n";

#[test]
fn gate_without_auth_is_an_error_at_the_gate() {
    let text = format!("{ISSUER}{GATE}");

    let found = super::problems(&text);

    assert_eq!(found.len(), 2, "{found:#?}");
    assert_eq!((found[1].line, found[1].column), (6, 1));
    assert!(
        found[1].message.contains("[[gate]] needs an [auth] table"),
        "{found:?}"
    );
}

#[test]
fn gate_on_the_auth_listen_port_is_an_error_at_its_port() {
    let gate = "\n[[gate]]\nname = \"db\"\nport = 8443\nprotocol = \"tcp\"\nscope = \"db\"\n";
    let text = format!("{AUTH}{ISSUER}{gate}");

    let found = super::problems(&text);

    assert_eq!(found.len(), 1, "{found:#?}");
    assert_eq!((found[0].line, found[0].column), (14, 8));
    assert!(
        found[0]
            .message
            .contains("the [auth] endpoint's listen port"),
        "{found:?}"
    );
}

#[test]
fn issuer_without_auth_is_an_error_at_the_issuer() {
    assert_problem(ISSUER, 2, 1, "[[issuer]] needs an [auth] table");
}

#[test]
fn auth_listen_must_not_be_empty() {
    let text = "[auth]\nlisten = []\ntls_cert = \"c\"\ntls_key = \"k\"\naudience = \"a\"\n";

    assert_problem(text, 2, 10, "listen: expected at least one address");
}

#[test]
fn auth_listen_port_must_not_be_zero() {
    let text =
        "[auth]\nlisten = [\"[::]:0\"]\ntls_cert = \"c\"\ntls_key = \"k\"\naudience = \"a\"\n";

    assert_problem(
        text,
        2,
        11,
        r#"listen: expected a port from 1 to 65535, found "[::]:0""#,
    );
}

#[test]
fn auth_listen_must_be_an_address_and_port() {
    let text = "[auth]\nlisten = [\"8443\"]\ntls_cert = \"c\"\ntls_key = \"k\"\naudience = \"a\"\n";

    assert_problem(
        text,
        2,
        11,
        r#"listen: expected an address and port such as "0.0.0.0:8443""#,
    );
}

#[test]
fn auth_audience_must_not_be_empty() {
    let text =
        "[auth]\nlisten = [\"[::]:8443\"]\ntls_cert = \"c\"\ntls_key = \"k\"\naudience = \"\"\n";

    assert_problem(text, 5, 12, r#"audience: expected an audience, found """#);
}

#[test]
fn auth_without_a_key_is_an_error_at_its_table() {
    let text = "\n[auth]\nlisten = [\"[::]:8443\"]\ntls_cert = \"c\"\naudience = \"a\"\n";

    assert_problem(text, 2, 1, "missing key `tls_key` in [auth]");
}

#[test]
fn issuer_names_are_unique() {
    let text = format!("{AUTH}{ISSUER}{ISSUER}");

    assert_problem(
        &text,
        13,
        8,
        r#"name: "corp" is already the name of the [[issuer]] on line 9"#,
    );
}

#[test]
fn gate_issuers_must_name_declared_issuers() {
    let text = format!("{AUTH}{ISSUER}{GATE}issuers = [\"corp\", \"crop\"]\n");

    assert_problem(
        &text,
        17,
        20,
        r#"issuers: expected the name of an [[issuer]], found "crop" (declared: "corp")"#,
    );
}

#[test]
fn issuer_url_must_be_https() {
    let text = format!("{AUTH}\n[[issuer]]\nname = \"corp\"\nurl = \"http://idp.example.com\"\n");

    assert_problem(
        &text,
        10,
        7,
        r#"url: expected an https url (http only to a loopback host), found "http://idp.example.com""#,
    );
}

#[test]
fn issuer_url_may_be_http_on_loopback() {
    let text =
        format!("{AUTH}\n[[issuer]]\nname = \"dev\"\nurl = \"http://127.0.0.1:8080/realms/dev\"\n");

    assert_eq!(
        valid(&text).issuers[0].url,
        "http://127.0.0.1:8080/realms/dev"
    );
}

#[test]
fn hmac_algorithms_are_refused_with_the_reason() {
    let text = format!("{AUTH}{ISSUER}algorithms = [\"RS256\", \"HS256\"]\n");

    assert_problem(
        &text,
        11,
        24,
        r#"algorithms: "HS256" is refused: hmac needs a secret shared with the issuer"#,
    );
}

#[test]
fn none_algorithm_is_refused_with_the_reason() {
    let text = format!("{AUTH}{ISSUER}algorithms = [\"none\"]\n");

    assert_problem(
        &text,
        11,
        15,
        r#"algorithms: "none" is refused: it accepts unsigned tokens"#,
    );
}

#[test]
fn unknown_algorithm_lists_the_accepted_ones() {
    let text = format!("{AUTH}{ISSUER}algorithms = [\"RS257\"]\n");

    assert_problem(
        &text,
        11,
        15,
        r#"algorithms: expected one of "RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "EdDSA", found "RS257""#,
    );
}

#[test]
fn empty_algorithms_is_an_error() {
    let text = format!("{AUTH}{ISSUER}algorithms = []\n");

    assert_problem(&text, 11, 14, "algorithms: expected at least one algorithm");
}

#[test]
fn issuer_keys_are_read() {
    let text = format!(
        "{AUTH}{ISSUER}algorithms = [\"ES384\", \"ES384\"]\njwks_file = \"/etc/portguard/corp.jwks\"\n"
    );

    let issuer = &valid(&text).issuers[0];

    assert_eq!(issuer.algorithms, [super::Algorithm::Es384]);
    assert_eq!(
        issuer.jwks_file.as_deref(),
        Some(std::path::Path::new("/etc/portguard/corp.jwks"))
    );
}

#[test]
fn events_metrics_must_be_an_address_and_port() {
    assert_problem(
        "[events]\nmetrics = \"localhost:9464\"\n",
        2,
        11,
        "metrics: expected an address and port",
    );
}
