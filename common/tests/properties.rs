//! Properties over generated packets: the verdict never panics, nothing reaches a closed
//! port, well-formed frames parse to what they were built from, and the strategy the
//! kernel tests use reaches every verdict.

mod support;

use std::collections::HashMap;

use portguard_common::{
    Reason,
    craft::{ARB_MAX_LEN, ARB_MIN_LEN, ModelMaps, arb_frame, arb_packet, prefix_matches},
    maps::{
        Config, ENDPOINT_ANY_V4, ENDPOINT_ANY_V6, EndpointKey, FlowKey, GrantKey, ICMP_ALL,
        MODE_MONITOR, PROTO_TCP, PROTO_UDP, PrefixKeyData, is_ipv4_mapped,
    },
    packet::{Headers, TCP_ACK, TCP_SYN, parse},
    verdict::{Decision, judge},
};
use proptest::{
    collection::vec, prelude::*, sample::select, strategy::ValueTree, test_runner::TestRunner,
};
use support::{enforce, sample};

fn arb_config() -> impl Strategy<Value = Config> {
    (
        prop_oneof![Just(0), Just(MODE_MONITOR)],
        prop_oneof![Just(0), Just(ICMP_ALL)],
    )
        .prop_map(|(mode, icmp)| Config {
            mode,
            icmp,
            ..Config::default()
        })
}

/// Checks that a decision that lets a packet in rests on an entry of the maps that covers it.
fn check_grounded(
    decision: &Decision,
    headers: &Headers,
    maps: &ModelMaps,
    config: &Config,
) -> Result<(), TestCaseError> {
    let port = headers.destination_port;
    let new_tcp = headers.tcp_flags & TCP_SYN != 0 && headers.tcp_flags & TCP_ACK == 0;
    match decision.reason {
        Reason::Endpoint => {
            prop_assert!(headers.protocol == PROTO_TCP || headers.protocol == PROTO_UDP);
            let endpoint = maps
                .endpoints
                .get(&EndpointKey::new(headers.protocol, port));
            prop_assert!(
                endpoint.is_some(),
                "endpoint pass to undeclared port {}",
                port
            );
            let endpoint = endpoint.unwrap();
            let any = if headers.family == 4 {
                ENDPOINT_ANY_V4
            } else {
                ENDPOINT_ANY_V6
            };
            let key = PrefixKeyData::new(headers.protocol, port, headers.source);
            let by_prefix = maps.prefixes.iter().any(|(len, data, rule)| {
                prefix_matches(*len, data, &key) && u64::from(*rule) == decision.rule
            });
            prop_assert!(
                endpoint.flags & any != 0 || by_prefix,
                "source not allowed on {}",
                port
            );
        }
        Reason::Grant => {
            let grant = maps
                .grants
                .get(&GrantKey::new(headers.source, headers.protocol, port));
            prop_assert!(grant.is_some(), "grant pass without a grant on {}", port);
            let grant = grant.unwrap();
            prop_assert!(grant.expires_boot_ns > maps.boot_ns && grant.grant_id == decision.rule);
        }
        Reason::UdpReply => {
            prop_assert_eq!(headers.protocol, PROTO_UDP);
            let key = FlowKey {
                remote: headers.source,
                remote_port: headers.source_port,
                local_port: port,
            };
            let sent = maps.udp_flows.get(&key);
            prop_assert!(sent.is_some(), "reply pass without a flow to port {}", port);
            let ttl = if config.udp_reply_ttl_ns == 0 {
                30_000_000_000
            } else {
                config.udp_reply_ttl_ns
            };
            prop_assert!(maps.coarse_ns - sent.unwrap() < ttl);
        }
        Reason::TcpNotNew => prop_assert!(headers.protocol == PROTO_TCP && !new_tcp),
        _ => {}
    }
    if matches!(
        decision.reason,
        Reason::Endpoint | Reason::Grant | Reason::UdpReply
    ) {
        prop_assert!(headers.family == 4 || !is_ipv4_mapped(&headers.source));
        prop_assert!(headers.protocol == PROTO_UDP || new_tcp);
    }
    // A new connection or datagram that passes in enforce mode is one of the above.
    if decision.reason.passes() && (new_tcp || headers.protocol == PROTO_UDP) {
        let open = [
            Reason::Endpoint,
            Reason::Grant,
            Reason::UdpReply,
            Reason::LaterFragment,
        ];
        prop_assert!(
            open.contains(&decision.reason),
            "{:?} passed {:?}",
            decision,
            headers
        );
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(4096))]

    #[test]
    fn judge_never_panics_on_arbitrary_bytes(bytes in vec(any::<u8>(), 0..200)) {
        let mut headers = Headers::default();
        judge(&bytes[..], &enforce(), &sample(), &mut headers);
    }

    #[test]
    fn judge_never_panics_on_arbitrary_bytes_behind_an_ip_ethertype(
        ethertype in select(vec![0x0800u16, 0x86dd, 0x8100, 0x88a8]),
        version in select(vec![0x40u8, 0x45, 0x4f, 0x60]),
        rest in vec(any::<u8>(), 0..300),
    ) {
        let bytes = [&[0; 12][..], &ethertype.to_be_bytes(), &[version], &rest].concat();
        let mut headers = Headers::default();
        judge(&bytes[..], &enforce(), &sample(), &mut headers);
    }

    #[test]
    fn nothing_reaches_a_closed_port(bytes in arb_packet(), config in arb_config()) {
        let maps = sample();
        let mut headers = Headers::default();
        let decision = judge(&bytes[..], &config, &maps, &mut headers);
        check_grounded(&decision, &headers, &maps, &config)?;
        prop_assert_eq!(decision.passes(&config), decision.reason.passes() || config.mode == MODE_MONITOR);
    }

    #[test]
    fn well_formed_frames_parse_to_what_was_built(frame in arb_frame()) {
        let Some(expected) = frame.expected() else { return Ok(()) };
        let mut headers = Headers::default();
        let got = parse(&frame.build()[..], &mut headers);
        match expected {
            Ok(want) => {
                prop_assert_eq!(got, Ok(()));
                prop_assert_eq!(headers, want);
            }
            Err(reason) => prop_assert_eq!(got, Err(reason)),
        }
    }

    #[test]
    fn arb_packet_fits_a_test_run(bytes in arb_packet()) {
        prop_assert!((ARB_MIN_LEN..=ARB_MAX_LEN).contains(&bytes.len()));
    }
}

#[test]
fn arb_packet_reaches_every_verdict() {
    let mut runner = TestRunner::deterministic();
    let (strategy, maps, count) = (arb_packet(), sample(), 20_000);
    let mut seen: HashMap<Reason, usize> = HashMap::new();
    // Half the packets under `icmp = "all"`, which has a reason of its own.
    let configs = [
        enforce(),
        Config {
            icmp: ICMP_ALL,
            ..enforce()
        },
    ];
    for i in 0..count {
        let bytes = strategy.new_tree(&mut runner).unwrap().current();
        let mut headers = Headers::default();
        let decision = judge(&bytes[..], &configs[i % 2], &maps, &mut headers);
        *seen.entry(decision.reason).or_default() += 1;
    }

    // Shorter than an Ethernet header is the one reason a test run cannot be given.
    for reason in Reason::ALL
        .into_iter()
        .filter(|r| *r != Reason::TruncatedEthernet)
    {
        assert!(
            seen.contains_key(&reason),
            "{reason:?} never reached: {seen:?}"
        );
    }
    let policy = [
        Reason::Endpoint,
        Reason::Grant,
        Reason::UdpReply,
        Reason::PortClosed,
    ];
    let policy: usize = policy
        .iter()
        .chain(&[Reason::SourceNotAllowed, Reason::GrantExpired])
        .map(|r| seen.get(r).copied().unwrap_or(0))
        .sum();
    assert!(
        policy * 100 / count >= 30,
        "{policy} of {count} reach a port decision: {seen:?}"
    );
}
