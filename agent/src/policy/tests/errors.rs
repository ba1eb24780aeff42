//! Each problem of the file's syntax, `[guard]`, endpoints and gates, at its line and column.

use super::{AUTH, ISSUER, assert_problem, problems};

/// A valid endpoint table after `head`, so that line numbers in `head` stay put.
fn with_endpoint(head: &str) -> String {
    format!("{head}\n[[endpoint]]\nname = \"ssh\"\nport = 22\nprotocol = \"tcp\"\n")
}

#[test]
fn syntax_error_has_its_line_and_column() {
    assert_problem(
        "[guard]\nmode = enforce\n",
        2,
        8,
        "string values must be quoted",
    );
}

#[test]
fn unknown_key_is_an_error_with_its_line() {
    let text = "[[endpoint]]\nname = \"ssh\"\nprot = 22\n";

    assert_problem(
        text,
        3,
        1,
        "unknown field `prot`, expected one of `name`, `port`",
    );
}

#[test]
fn unknown_table_is_an_error_with_its_line() {
    assert_problem(
        "\n[gaurd]\nmode = \"enforce\"\n",
        2,
        2,
        "unknown field `gaurd`",
    );
}

#[test]
fn value_of_the_wrong_type_is_an_error_at_the_value() {
    assert_problem(
        "[guard]\nmode = 1\n",
        2,
        8,
        "invalid type: integer `1`, expected a string",
    );
}

#[test]
fn missing_key_is_an_error_at_its_table() {
    let text = "[[endpoint]]\nname = \"ssh\"\nprotocol = \"tcp\"\n";

    assert_problem(text, 1, 1, "missing key `port` in [[endpoint]]");
}

#[test]
fn mode_must_be_enforce_or_monitor() {
    let text = with_endpoint("[guard]\nmode = \"enforcing\"\n");

    assert_problem(
        &text,
        2,
        8,
        r#"mode: expected "enforce" or "monitor", found "enforcing""#,
    );
}

#[test]
fn icmp_must_be_essential_or_all() {
    let text = with_endpoint("[guard]\nicmp = \"none\"\n");

    assert_problem(
        &text,
        2,
        8,
        r#"icmp: expected "essential" or "all", found "none""#,
    );
}

#[test]
fn udp_reply_ttl_must_be_between_a_second_and_an_hour() {
    let text = with_endpoint("[guard]\nudp_reply_ttl = \"2h\"\n");

    assert_problem(
        &text,
        2,
        17,
        r#"udp_reply_ttl: expected a duration from 1s to 1h, found "2h""#,
    );
}

#[test]
fn udp_reply_ttl_needs_a_unit() {
    let text = with_endpoint("[guard]\nudp_reply_ttl = \"30\"\n");

    assert_problem(&text, 2, 17, r#"expected a duration such as "30s""#);
}

#[test]
fn interfaces_star_mixed_with_names_is_an_error() {
    let text = with_endpoint("[guard]\ninterfaces = [\"eth0\", \"*\"]\n");

    assert_problem(&text, 2, 23, r#"expected "*" alone or only names"#);
}

#[test]
fn interfaces_list_must_not_be_empty() {
    let text = with_endpoint("[guard]\ninterfaces = []\n");

    assert_problem(
        &text,
        2,
        14,
        r#"interfaces: expected ["*"] or at least one name"#,
    );
}

#[test]
fn interface_name_must_be_a_valid_linux_name() {
    let text =
        with_endpoint("[guard]\ninterfaces = [\"eth0\", \"eth0:1\", \"a-very-long-name0\"]\n");

    let found = problems(&text);

    let places: Vec<_> = found
        .iter()
        .map(|problem| (problem.line, problem.column))
        .collect();
    assert_eq!(places, [(2, 23), (2, 33)]);
    assert!(
        found[0].message.contains(r#"found "eth0:1""#),
        "{}",
        found[0].message
    );
}

#[test]
fn loopback_interface_is_an_error() {
    let text = with_endpoint("[guard]\ninterfaces = [\"lo\"]\n");

    assert_problem(&text, 2, 15, "\"lo\" is loopback, which is never guarded");
}

#[test]
fn endpoint_name_must_not_be_empty() {
    let text = "[[endpoint]]\nname = \"\"\nport = 22\nprotocol = \"tcp\"\n";

    assert_problem(
        text,
        2,
        8,
        r#"name: expected letters, digits, '_', '.' or '-', found """#,
    );
}

#[test]
fn endpoint_name_takes_letters_digits_and_punctuation_only() {
    let text = "[[endpoint]]\nname = \"my ssh\"\nport = 22\nprotocol = \"tcp\"\n";

    assert_problem(text, 2, 8, r#"found "my ssh""#);
}

#[test]
fn endpoint_names_are_unique() {
    let text = "[[endpoint]]\nname = \"ssh\"\nport = 22\nprotocol = \"tcp\"\n\n\
                [[endpoint]]\nname = \"ssh\"\nport = 2222\nprotocol = \"tcp\"\n";

    assert_problem(
        text,
        7,
        8,
        r#"name: "ssh" is already the name of the [[endpoint]] on line 2"#,
    );
}

#[test]
fn protocol_must_be_tcp_or_udp() {
    let text = "[[endpoint]]\nname = \"ssh\"\nport = 22\nprotocol = \"TCP\"\n";

    assert_problem(
        text,
        4,
        12,
        r#"protocol: expected "tcp" or "udp", found "TCP""#,
    );
}

#[test]
fn port_zero_is_an_error() {
    let text = "[[endpoint]]\nname = \"ssh\"\nport = 0\nprotocol = \"tcp\"\n";

    assert_problem(text, 3, 8, "port: expected a port from 1 to 65535, found 0");
}

#[test]
fn port_above_65535_is_an_error() {
    let text = "[[endpoint]]\nname = \"ssh\"\nport = \"22-70000\"\nprotocol = \"tcp\"\n";

    assert_problem(
        text,
        3,
        8,
        "port: expected a port from 1 to 65535, found 70000",
    );
}

#[test]
fn port_range_must_not_run_backwards() {
    let text = "[[endpoint]]\nname = \"web\"\nport = \"8010-8000\"\nprotocol = \"tcp\"\n";

    assert_problem(
        text,
        3,
        8,
        r#"expected the first port of a range before the last, found "8010-8000""#,
    );
}

#[test]
fn port_must_be_a_number_or_a_range() {
    let text = "[[endpoint]]\nname = \"web\"\nport = \"https\"\nprotocol = \"tcp\"\n";

    assert_problem(
        text,
        3,
        8,
        r#"port: expected a port such as 443 or a range such as "8000-8010", found "https""#,
    );
}

#[test]
fn explicit_empty_from_is_an_error() {
    let text = "[[endpoint]]\nname = \"ssh\"\nport = 22\nprotocol = \"tcp\"\nfrom = []\n";

    assert_problem(text, 5, 8, "from: expected at least one address or prefix");
}

#[test]
fn from_entry_must_be_an_address_or_a_prefix() {
    let text = "[[endpoint]]\nname = \"ssh\"\nport = 22\nprotocol = \"tcp\"\n\
                from = [\"10.0.0.0/8\", \"office\"]\n";

    assert_problem(
        text,
        5,
        23,
        r#"from: expected an address or a prefix such as "10.0.0.0/8""#,
    );
}

#[test]
fn from_prefix_with_host_bits_names_the_corrected_prefix() {
    let text = "[[endpoint]]\nname = \"ssh\"\nport = 22\nprotocol = \"tcp\"\n\
                from = [\"192.168.1.10/24\"]\n";

    assert_problem(
        text,
        5,
        9,
        r#"from: "192.168.1.10/24" has host bits set: expected "192.168.1.0/24""#,
    );
}

#[test]
fn endpoint_entries_past_the_kernel_limit_name_the_endpoint() {
    let text = "[[endpoint]]\nname = \"wide\"\nport = \"1-40000\"\nprotocol = \"tcp\"\nfrom = [\"10.0.0.0/8\"]\n\n\
                [[endpoint]]\nname = \"wider\"\nport = \"1-20000\"\nprotocol = \"udp\"\n\
                from = [\"10.0.0.0/8\", \"192.168.0.0/16\"]\n";

    assert_problem(
        text,
        7,
        1,
        "endpoint \"wider\" brings all endpoints to 80000 port × prefix entries: expected at most 65536",
    );
}

#[test]
fn gate_and_endpoint_on_the_same_port_name_both() {
    let text = format!(
        "[[endpoint]]\nname = \"db-public\"\nport = \"5400-5500\"\nprotocol = \"tcp\"\n\n\
         [[gate]]\nname = \"postgres\"\nport = 5432\nprotocol = \"tcp\"\nscope = \"db\"\n{AUTH}{ISSUER}"
    );

    assert_problem(
        &text,
        8,
        8,
        r#"port: gate "postgres" and endpoint "db-public" both claim tcp 5432"#,
    );
}

#[test]
fn gate_and_endpoint_on_the_same_port_of_other_protocols_are_fine() {
    let text = format!(
        "[[endpoint]]\nname = \"dns\"\nport = 53\nprotocol = \"udp\"\n\n\
         [[gate]]\nname = \"dns-tcp\"\nport = 53\nprotocol = \"tcp\"\nscope = \"dns\"\n{AUTH}{ISSUER}"
    );

    super::valid(&text);
}

#[test]
fn gate_names_are_unique() {
    let text = format!(
        "[[gate]]\nname = \"db\"\nport = 5432\nprotocol = \"tcp\"\nscope = \"db\"\n\n\
         [[gate]]\nname = \"db\"\nport = 3306\nprotocol = \"tcp\"\nscope = \"db\"\n{AUTH}{ISSUER}"
    );

    assert_problem(
        &text,
        8,
        8,
        r#"name: "db" is already the name of the [[gate]] on line 2"#,
    );
}

#[test]
fn gate_scope_is_one_word() {
    let text = format!(
        "[[gate]]\nname = \"db\"\nport = 5432\nprotocol = \"tcp\"\nscope = \"db read\"\n{AUTH}{ISSUER}"
    );

    assert_problem(&text, 5, 9, r#"scope: expected one scope without spaces"#);
}

#[test]
fn max_ttl_must_be_above_zero() {
    let text = format!(
        "[[gate]]\nname = \"db\"\nport = 5432\nprotocol = \"tcp\"\nscope = \"db\"\n\
         max_ttl = \"0s\"\n{AUTH}{ISSUER}"
    );

    assert_problem(
        &text,
        6,
        11,
        r#"max_ttl: expected a duration above 0s and at most 24h, found "0s""#,
    );
}

#[test]
fn max_ttl_must_be_at_most_a_day() {
    let text = format!(
        "[[gate]]\nname = \"db\"\nport = 5432\nprotocol = \"tcp\"\nscope = \"db\"\n\
         max_ttl = \"2days\"\n{AUTH}{ISSUER}"
    );

    assert_problem(&text, 6, 11, r#"found "2days""#);
}

#[test]
fn on_expiry_must_be_keep_or_cut() {
    let text = format!(
        "[[gate]]\nname = \"db\"\nport = 5432\nprotocol = \"tcp\"\nscope = \"db\"\n\
         on_expiry = \"drop\"\n{AUTH}{ISSUER}"
    );

    assert_problem(
        &text,
        6,
        13,
        r#"on_expiry: expected "keep" or "cut", found "drop""#,
    );
}
