//! Tokens from a real OpenID provider (node-oidc-provider, client credentials, JWT access
//! tokens) presented at the agent's auth endpoint from the client namespace: what opens the
//! gated port, for whom, what the log says about it, which tokens are refused with which
//! status and reason, and a key rotation at the provider followed without a restart.

use std::{
    thread,
    time::{Duration, Instant},
};

use portguard::tokens::token_hash;
use portguard_tests::{
    gated::{Gate, GatedHost, ISSUER_NAME, ports_body},
    lab::Family,
    oidc::{OTHER_AUDIENCE, ProviderOptions, Signer, jwt_part},
    probe::{ANSWER_WAIT, FILTERED_WAIT, Probe, tcp_probe, tcp_probe_from},
};
use serde_json::{Value, json};

const POSTGRES: Gate = Gate {
    name: "postgres",
    port: 5432,
    scope: "db:connect",
    max_ttl: "60s",
    on_expiry: "keep",
};

/// How long the agent waits between two key fetches that unknown key ids cause
/// (`issuers::Timings::unknown_kid_interval`).
const UNKNOWN_KID_INTERVAL: Duration = Duration::from_secs(10);

fn start(test: &str) -> anyhow::Result<GatedHost> {
    GatedHost::start(test, &[POSTGRES], &ProviderOptions::default())
}

/// Whether `event` names the token's holder as the provider issued it: issuer, subject,
/// client id, scopes, jti and the token's short hash.
fn names_holder(event: &Value, token: &str, signer: Signer) -> anyhow::Result<()> {
    let claims = jwt_part(token, 1)?;
    anyhow::ensure!(event["issuer"] == ISSUER_NAME, "issuer in {event}");
    anyhow::ensure!(event["subject"] == signer.client_id(), "subject in {event}");
    anyhow::ensure!(
        event["client_id"] == signer.client_id(),
        "client_id in {event}"
    );
    anyhow::ensure!(
        event["scopes"]
            .as_array()
            .is_some_and(|s| s.iter().any(|s| s == POSTGRES.scope)),
        "scopes in {event}"
    );
    anyhow::ensure!(
        event["jti"] == claims["jti"] && event["jti"].is_string(),
        "jti in {event}"
    );
    anyhow::ensure!(
        event["token_hash"] == token_hash(token),
        "token_hash in {event}"
    );
    Ok(())
}

/// No event, agent stderr line or `portguard open` output holds the token or its signature.
fn assert_token_never_written(host: &GatedHost, token: &str, also: &[&str]) {
    let signature = token.rsplit('.').next().unwrap_or(token);
    for event in host.agent.events() {
        let text = event.to_string();
        assert!(
            !text.contains(token) && !text.contains(signature),
            "an event holds the token: {text}"
        );
    }
    let stderr = host.agent.other_output();
    assert!(
        !stderr.contains(signature),
        "the agent's stderr holds the token:\n{stderr}"
    );
    for output in also {
        assert!(
            !output.contains(signature),
            "output holds the token: {output}"
        );
    }
}

/// The whole flow for one signing algorithm: shut, then open for the token's holder on both
/// families, still shut for the client's other address, logged with who and why.
fn token_opens_gate_for_its_holder_only(signer: Signer) -> anyhow::Result<()> {
    let test = format!("{}_token_opens_gate", signer.alg());
    let mut host = start(&test)?;
    let token = host.token(signer, "db:connect")?;
    assert_eq!(jwt_part(&token, 0)?["alg"], signer.alg());

    for family in Family::BOTH {
        assert_eq!(
            tcp_probe(&host.lab.client, family.host(5432), FILTERED_WAIT),
            Probe::Filtered,
            "{family:?} 5432 before any grant\n{}",
            host.report()
        );
    }

    let (mut outputs, mut rules) = (Vec::new(), Vec::new());
    for family in Family::BOTH {
        let client = family.client(0).ip().to_string();
        let opened = host.open(family, &token, &["--port", "5432/tcp"])?;
        assert!(
            opened.line.contains("5432/tcp") && opened.line.contains(&client),
            "portguard open printed {:?}",
            opened.line
        );
        outputs.push(opened.line.clone());

        assert_eq!(
            tcp_probe(&host.lab.client, family.host(5432), ANSWER_WAIT),
            Probe::Open,
            "{family:?} 5432 from the holder's address\n{}",
            host.report()
        );
        assert_eq!(
            tcp_probe_from(
                &host.lab.client,
                family.client_other(),
                family.host(5432),
                FILTERED_WAIT
            ),
            Probe::Filtered,
            "{family:?} 5432 from the client's other address\n{}",
            host.report()
        );

        let accepted =
            host.agent
                .wait_for(&format!("token.accepted from {client}"), ANSWER_WAIT, |e| {
                    e["event"] == "token.accepted" && e["source"] == client.as_str()
                })?;
        names_holder(&accepted, &token, signer)?;
        let granted =
            host.agent
                .wait_for(&format!("grant.opened {}", opened.id), ANSWER_WAIT, |e| {
                    e["event"] == "grant.opened" && e["grant"] == opened.id.as_str()
                })?;
        names_holder(&granted, &token, signer)?;
        assert_eq!(granted["source"], client.as_str(), "{granted}");
        assert_eq!(granted["ports"], json!(["5432/tcp"]), "{granted}");
        assert_eq!(granted["gates"], json!([POSTGRES.name]), "{granted}");

        let allowed = host.agent.wait_for(
            &format!("flow.allowed {family:?} 5432 by a grant"),
            ANSWER_WAIT,
            |e| {
                e["event"] == "flow.allowed"
                    && e["destination_port"] == 5432
                    && e["source"] == client.as_str()
            },
        )?;
        assert_eq!(allowed["reason"], "grant", "{allowed}");
        rules.push((allowed["rule"].clone(), format!("grant:{}", opened.id)));
    }

    let outputs: Vec<&str> = outputs.iter().map(String::as_str).collect();
    assert_token_never_written(&host, &token, &outputs);
    // Last, so that a wrong spelling of the rule does not hide the checks above.
    for (rule, expected) in rules {
        assert_eq!(
            rule, expected,
            "flow.allowed names the grant by another id than the API and grant events use"
        );
    }
    Ok(())
}

#[test]
fn rs256_token_opens_gate_for_its_holder_only() -> anyhow::Result<()> {
    token_opens_gate_for_its_holder_only(Signer::Rs256)
}

#[test]
fn es256_token_opens_gate_for_its_holder_only() -> anyhow::Result<()> {
    token_opens_gate_for_its_holder_only(Signer::Es256)
}

#[test]
fn eddsa_token_opens_gate_for_its_holder_only() -> anyhow::Result<()> {
    token_opens_gate_for_its_holder_only(Signer::EdDsa)
}

/// Presents `token` over both families and checks the answer and the logged reason; nothing
/// opens and no grant is recorded.
fn assert_refused(
    host: &mut GatedHost,
    token: &str,
    status: u16,
    error: &str,
    reason: &str,
) -> anyhow::Result<()> {
    for family in Family::BOTH {
        let client = family.client(0).ip().to_string();
        let answer = host.post_grant(family, token, &ports_body(&["5432/tcp"]))?;
        assert_eq!(
            answer.status,
            status,
            "{family:?}: {}\n{}",
            answer.text(),
            host.report()
        );
        let challenge = answer.header("www-authenticate").unwrap_or_default();
        assert!(
            challenge.starts_with("Bearer") && challenge.contains(&format!("error=\"{error}\"")),
            "{family:?}: WWW-Authenticate {challenge:?}"
        );
        assert_eq!(answer.json()?["error"], error, "{}", answer.text());

        let rejected = host.agent.wait_for(
            &format!("token.rejected ({reason}) from {client}"),
            ANSWER_WAIT,
            |e| e["event"] == "token.rejected" && e["source"] == client.as_str(),
        )?;
        assert_eq!(rejected["reason"], reason, "{rejected}");

        assert_eq!(
            tcp_probe(&host.lab.client, family.host(5432), FILTERED_WAIT),
            Probe::Filtered,
            "{family:?} 5432 after a refused token\n{}",
            host.report()
        );
    }
    assert!(
        host.agent.events_named("grant.opened").is_empty(),
        "{}",
        host.report()
    );
    assert_eq!(host.grants()?, Vec::<Value>::new());
    Ok(())
}

#[test]
fn token_for_another_audience_is_refused_as_invalid() -> anyhow::Result<()> {
    let mut host = start("token_for_another_audience")?;
    let token = host
        .provider
        .token(Signer::Rs256, "db:connect", OTHER_AUDIENCE)?;
    assert_eq!(jwt_part(&token, 1)?["aud"], OTHER_AUDIENCE);

    assert_refused(&mut host, &token, 401, "invalid_token", "wrong_audience")?;
    assert_token_never_written(&host, &token, &[]);
    Ok(())
}

#[test]
fn token_without_the_gate_scope_is_refused_as_insufficient() -> anyhow::Result<()> {
    let mut host = start("token_without_the_gate_scope")?;
    let token = host.token(Signer::Es256, "ssh:login")?;
    assert_eq!(jwt_part(&token, 1)?["scope"], "ssh:login");

    assert_refused(
        &mut host,
        &token,
        403,
        "insufficient_scope",
        "insufficient_scope",
    )?;
    assert_token_never_written(&host, &token, &[]);
    Ok(())
}

#[test]
fn junk_token_is_refused_as_malformed() -> anyhow::Result<()> {
    let mut host = start("junk_token")?;
    assert_refused(
        &mut host,
        "not-a.jwt-at.all!",
        401,
        "invalid_token",
        "malformed",
    )
}

/// The provider's clock runs ten minutes slow, so its five-minute tokens expired five
/// minutes ago: well past the agent's 60 s of leeway. (A token that expires by waiting would
/// need over a minute of leeway to pass.)
#[test]
fn expired_token_is_refused() -> anyhow::Result<()> {
    let options = ProviderOptions {
        clock_offset_seconds: -600,
        ..ProviderOptions::default()
    };
    let mut host = GatedHost::start("expired_token", &[POSTGRES], &options)?;
    let token = host.token(Signer::EdDsa, "db:connect")?;
    let exp = jwt_part(&token, 1)?["exp"].as_u64().unwrap_or(u64::MAX);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_secs();
    assert!(
        exp + 120 < now,
        "the token is not old enough: exp {exp}, now {now}"
    );

    assert_refused(&mut host, &token, 401, "invalid_token", "expired")?;
    assert_token_never_written(&host, &token, &[]);
    Ok(())
}

#[test]
fn rotated_provider_key_is_followed_without_restart() -> anyhow::Result<()> {
    let mut host = start("rotated_provider_key")?;
    let loaded_at = Instant::now();
    let before = host.token(Signer::Rs256, "db:connect")?;
    host.open(Family::V4, &before, &["--port", "5432/tcp"])?;
    let old_kid = jwt_part(&before, 0)?["kid"].clone();

    let rotated = host.provider.rotate(true)?;
    let new_kid = rotated["signing_kids"]["RS256"].clone();
    assert_ne!(new_kid, old_kid, "{rotated}");
    assert!(
        !rotated["kids"]
            .as_array()
            .is_some_and(|kids| kids.contains(&old_kid)),
        "the old key is still published: {rotated}"
    );

    // The agent fetches again for an unknown kid at most once per interval, counted from its
    // start-up fetch: wait that out, so that the first token with the new kid is the test.
    if let Some(wait) = (loaded_at + UNKNOWN_KID_INTERVAL + Duration::from_millis(500))
        .checked_duration_since(Instant::now())
    {
        thread::sleep(wait);
    }
    let after = host.token(Signer::Rs256, "db:connect")?;
    assert_eq!(jwt_part(&after, 0)?["kid"], new_kid);
    assert_eq!(
        tcp_probe(&host.lab.client, Family::V6.host(5432), FILTERED_WAIT),
        Probe::Filtered
    );

    let opened = host.open(Family::V6, &after, &["--port", "5432/tcp"])?;
    let refetched =
        host.agent
            .wait_for("issuer.keys_loaded for an unknown kid", ANSWER_WAIT, |e| {
                e["event"] == "issuer.keys_loaded" && e["trigger"] == "unknown_kid"
            })?;
    assert!(
        refetched["kids"]
            .as_array()
            .is_some_and(|kids| kids.contains(&new_kid)),
        "{refetched}"
    );
    assert_eq!(
        tcp_probe(&host.lab.client, Family::V6.host(5432), ANSWER_WAIT),
        Probe::Open,
        "grant {} with the new key\n{}",
        opened.id,
        host.report()
    );
    assert!(
        host.agent.events_named("agent.started").len() == 1,
        "the agent restarted"
    );
    Ok(())
}
