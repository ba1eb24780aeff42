//! Each warning of a valid policy, at the line and column of what it is about.

use super::{AUTH, ISSUER, SessionEnv, Warning, valid};

/// An endpoint that warns about nothing by itself: SSH from the office network.
const OFFICE_SSH: &str =
    "[[endpoint]]\nname = \"ssh\"\nport = 22\nprotocol = \"tcp\"\nfrom = [\"10.0.0.0/8\"]\n";

fn warnings(text: &str) -> Vec<Warning> {
    valid(text).warnings(&SessionEnv::default())
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
    assert_eq!(warnings(OFFICE_SSH), []);
}

#[test]
fn endpoint_open_to_everyone_warns_at_its_from() {
    let text = "[[endpoint]]\nname = \"web\"\nport = 80\nprotocol = \"tcp\"\n\
                from = [\"10.0.0.0/8\", \"::/0\"]\n";

    let found = warnings(text);

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

    let found = warnings(&text);

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

    assert_eq!(warnings(&text), []);
}

#[test]
fn gate_without_max_ttl_warns_at_the_gate() {
    let text = format!(
        "{OFFICE_SSH}\n[[gate]]\nname = \"db\"\nport = 5432\nprotocol = \"tcp\"\nscope = \"db\"\n\
         {AUTH}{ISSUER}"
    );

    let found = warnings(&text);

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

    let found = warnings(&text);

    assert_warning(
        &found,
        7,
        1,
        "gate \"db\" can never open: no [[issuer]] is declared",
    );
}

#[test]
fn monitor_mode_is_a_reminder_at_the_mode() {
    let text = format!("[guard]\nmode = \"monitor\"\n\n{OFFICE_SSH}");

    let found = warnings(&text);

    assert_warning(&found, 2, 8, "mode is \"monitor\": nothing is dropped");
}

#[test]
fn no_endpoints_warns_at_the_start_of_the_file() {
    let found = warnings("[guard]\nmode = \"enforce\"\n");

    assert_warning(&found, 1, 1, "no [[endpoint]] is declared");
}

#[test]
fn warnings_come_in_file_order() {
    let text = "[guard]\nmode = \"monitor\"\n\n\
                [[endpoint]]\nname = \"web\"\nport = 443\nprotocol = \"tcp\"\n";

    let found = warnings(text);

    let places: Vec<_> = found
        .iter()
        .map(|warning| (warning.line, warning.column))
        .collect();
    assert_eq!(places, [(2, 8), (4, 1)]);
}
