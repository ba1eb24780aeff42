//! Each warning of a valid policy, at the line and column of what it is about.

use super::{AUTH, ISSUER, SessionEnv, Warning, valid};

/// An endpoint that warns about nothing by itself: SSH from the office network.
const OFFICE_SSH: &str =
    "[[endpoint]]\nname = \"ssh\"\nport = 22\nprotocol = \"tcp\"\nfrom = [\"10.0.0.0/8\"]\n";

fn warnings(text: &str, ssh_connection: Option<&str>) -> Vec<Warning> {
    let env = SessionEnv {
        ssh_connection: ssh_connection.map(str::to_owned),
    };
    valid(text).warnings(&env)
}

/// The one warning of `text`, which must be at `line`:`column` and say `says`.
#[track_caller]
fn assert_warning(found: &[Warning], line: usize, column: usize, says: &str) {
    assert_eq!(found.len(), 1, "expected one warning, found {found:#?}");
    let warning = &found[0];
    assert_eq!(
        (warning.line, warning.column),
        (line, column),
        "{warning:?}"
    );
    assert!(
        warning.message.contains(says),
        "{:?} does not say {says:?}",
        warning.message
    );
}

#[test]
fn narrow_policy_warns_about_nothing() {
    assert_eq!(warnings(OFFICE_SSH, None), []);
}

#[test]
fn endpoint_open_to_everyone_warns_at_its_from() {
    let text = "[[endpoint]]\nname = \"web\"\nport = 80\nprotocol = \"tcp\"\n\
                from = [\"10.0.0.0/8\", \"::/0\"]\n";

    let found = warnings(text, None);

    assert_warning(
        &found,
        5,
        8,
        "endpoint \"web\" is open to every address on tcp 80",
    );
}

#[test]
fn endpoint_open_by_default_warns_at_its_table() {
    let text =
        format!("{OFFICE_SSH}\n[[endpoint]]\nname = \"dns\"\nport = 53\nprotocol = \"udp\"\n");

    let found = warnings(&text, None);

    assert_warning(
        &found,
        7,
        1,
        "endpoint \"dns\" is open to every address on udp 53",
    );
}

#[test]
fn endpoint_open_to_everyone_on_the_auth_port_is_quiet() {
    let text = format!(
        "{OFFICE_SSH}\n[[endpoint]]\nname = \"token\"\nport = 8443\nprotocol = \"tcp\"\n{AUTH}"
    );

    assert_eq!(warnings(&text, None), []);
}

#[test]
fn gate_without_max_ttl_warns_at_the_gate() {
    let text = format!(
        "{OFFICE_SSH}\n[[gate]]\nname = \"db\"\nport = 5432\nprotocol = \"tcp\"\nscope = \"db\"\n\
         {AUTH}{ISSUER}"
    );

    let found = warnings(&text, None);

    assert_warning(
        &found,
        7,
        1,
        "gate \"db\" has no max_ttl: a grant lasts as long as the token",
    );
}

#[test]
fn gate_without_any_issuer_warns_that_it_never_opens() {
    let text = format!(
        "{OFFICE_SSH}\n[[gate]]\nname = \"db\"\nport = 5432\nprotocol = \"tcp\"\nscope = \"db\"\n\
         max_ttl = \"1h\"\n{AUTH}"
    );

    let found = warnings(&text, None);

    assert_warning(
        &found,
        7,
        1,
        "gate \"db\" can never open: no [[issuer]] is declared",
    );
}

#[test]
fn undeclared_ssh_port_warns_when_the_session_arrives_over_ssh() {
    let text =
        "[[endpoint]]\nname = \"web\"\nport = 443\nprotocol = \"tcp\"\nfrom = [\"10.0.0.0/8\"]\n";

    let found = warnings(text, Some("203.0.113.9 51234 192.0.2.1 22"));

    assert_warning(
        &found,
        1,
        1,
        "this session comes over ssh from 203.0.113.9 to port 22, and no tcp endpoint opens \
         port 22 to 203.0.113.9: enforcing this policy would cut it",
    );
}

#[test]
fn ssh_port_declared_for_the_client_is_quiet() {
    assert_eq!(warnings(OFFICE_SSH, Some("10.1.2.3 51234 10.0.0.1 22")), []);
}

#[test]
fn ssh_client_with_a_mapped_ipv4_address_matches_its_ipv4_prefix() {
    assert_eq!(
        warnings(OFFICE_SSH, Some("::ffff:10.1.2.3 51234 ::ffff:10.0.0.1 22")),
        []
    );
}

#[test]
fn ssh_port_declared_for_other_sources_warns_at_that_endpoint() {
    let found = warnings(OFFICE_SSH, Some("198.51.100.4 51234 192.0.2.1 22"));

    assert_warning(&found, 5, 8, "from 198.51.100.4 to port 22");
}

#[test]
fn ssh_port_declared_over_udp_does_not_count() {
    let text =
        "[[endpoint]]\nname = \"mosh\"\nport = 22\nprotocol = \"udp\"\nfrom = [\"10.0.0.0/8\"]\n";

    let found = warnings(text, Some("10.1.2.3 51234 10.0.0.1 22"));

    assert_warning(&found, 1, 1, "no tcp endpoint opens port 22");
}

#[test]
fn unreadable_ssh_connection_is_ignored() {
    assert_eq!(warnings(OFFICE_SSH, Some("garbage")), []);
}

#[test]
fn monitor_mode_is_a_reminder_at_the_mode() {
    let text = format!("[guard]\nmode = \"monitor\"\n\n{OFFICE_SSH}");

    let found = warnings(&text, None);

    assert_warning(&found, 2, 8, "mode is \"monitor\": nothing is dropped");
}

#[test]
fn no_endpoints_warns_at_the_start_of_the_file() {
    let found = warnings("[guard]\nmode = \"enforce\"\n", None);

    assert_warning(&found, 1, 1, "no [[endpoint]] is declared");
}

#[test]
fn warnings_come_in_file_order() {
    let text = "[guard]\nmode = \"monitor\"\n\n\
                [[endpoint]]\nname = \"web\"\nport = 443\nprotocol = \"tcp\"\n";

    let found = warnings(text, Some("10.1.2.3 51234 10.0.0.1 22"));

    let places: Vec<_> = found
        .iter()
        .map(|warning| (warning.line, warning.column))
        .collect();
    assert_eq!(places, [(1, 1), (2, 8), (4, 1)]);
}
