//! The auth endpoint's routes: `POST /v1/grants` (a token opens ports for the caller's
//! address), `DELETE /v1/grants/{id}` (its holder closes a grant early) and `GET /healthz`.
//! Each step of a token's flow leaves an event, with who, what and why; never the token.

use std::{
    net::IpAddr,
    time::{Instant, SystemTime},
};

use axum::{
    Extension, Json,
    body::Bytes,
    extract::{Path, State},
    http::{HeaderMap, StatusCode, header},
};
use serde::Deserialize;
use serde_json::{Value, json};

use super::{App, errors::ApiError};
use crate::{
    events::Event,
    grants::{Grant, PlanError, Requested, plan},
    policy::Protocol,
    tokens::{AccessToken, Reason, Rejection},
};

/// The TCP peer of the connection a request came on: the only address a grant is ever for.
#[derive(Clone, Copy, Debug)]
pub struct Peer(pub IpAddr);

/// The optional body of `POST /v1/grants`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct GrantRequest {
    #[serde(default)]
    ports: Vec<String>,
    ttl: Option<String>,
}

pub async fn healthz() -> Json<Value> {
    Json(json!({ "status": "ok" }))
}

pub async fn create_grant(
    State(app): State<App>,
    Extension(Peer(source)): Extension<Peer>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    if let Err(wait) = app.limiter.check(source, Instant::now()) {
        app.log.emit(
            Event::new("request.limited")
                .with("source", source.to_string())
                .with("path", "/v1/grants"),
        );
        return Err(ApiError::RateLimited(wait.as_secs().max(1)));
    }
    let token = authenticate(&app, &headers, source).await?;
    let requested = parse_request(&body)?;

    let now = SystemTime::now();
    let gates = app.gates.current();
    let grant = match plan(&gates, &token, source, &requested, now) {
        Ok(grant) => grant,
        Err(refusal) => return Err(refuse(&app, &token, source, refusal)),
    };
    app.log.emit(accepted(&token, source));

    let opened = app.engine.open(grant, now).map_err(|error| {
        tracing::error!(error = %anyhow::Error::from(error), "record a grant");
        ApiError::Internal
    })?;
    app.log.emit(
        opened
            .grant
            .event("grant.opened")
            .with("extended", opened.extended),
    );
    Ok((
        StatusCode::CREATED,
        Json(describe(&opened.grant, opened.extended)),
    ))
}

pub async fn delete_grant(
    State(app): State<App>,
    Extension(Peer(source)): Extension<Peer>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<StatusCode, ApiError> {
    if let Err(wait) = app.limiter.check(source, Instant::now()) {
        return Err(ApiError::RateLimited(wait.as_secs().max(1)));
    }
    let token = authenticate(&app, &headers, source).await?;

    // Only the holder may close a grant; to anyone else it does not exist.
    let held = app
        .engine
        .grant(&id)
        .filter(|g| g.issuer == token.issuer_name && g.subject == token.subject);
    if held.is_none() {
        return Err(ApiError::NotFound);
    }
    let grant = app
        .engine
        .revoke(&id, SystemTime::now())
        .map_err(|_| ApiError::NotFound)?;
    app.log.emit(
        grant
            .event("grant.revoked")
            .with("by", "holder")
            .with("request_source", source.to_string()),
    );
    Ok(StatusCode::NO_CONTENT)
}

/// Validates the bearer token; an unknown key id earns one rate-limited refetch of the
/// issuer's keys before the token is refused.
async fn authenticate(
    app: &App,
    headers: &HeaderMap,
    source: IpAddr,
) -> Result<AccessToken, ApiError> {
    let token = bearer(headers)?;
    if let Some(holder) = app.cache.get(token, SystemTime::now()) {
        return Ok(holder);
    }
    #[expect(
        clippy::result_large_err,
        reason = "a rejection is logged whole right below; boxing it saves nothing"
    )]
    let validate = || {
        app.validator
            .validate(token, &app.issuers.trusted(), SystemTime::now())
    };

    let mut result = validate();
    if let Err(Rejection {
        reason: Reason::UnknownKey,
        issuer: Some(issuer),
        kid: Some(kid),
        ..
    }) = &result
        && app.issuers.refresh_for_unknown_kid(issuer, kid).await
    {
        result = validate();
    }
    match result {
        Ok(holder) => {
            app.cache.insert(token, &holder, SystemTime::now());
            Ok(holder)
        }
        Err(rejection) => {
            app.log.emit(rejected(&rejection, source));
            Err(ApiError::InvalidToken)
        }
    }
}

fn bearer(headers: &HeaderMap) -> Result<&str, ApiError> {
    let Some(value) = headers.get(header::AUTHORIZATION) else {
        return Err(ApiError::NoToken);
    };
    let value = value.to_str().map_err(|_| ApiError::BadAuthorization)?;
    match value.split_once(' ') {
        Some((scheme, token))
            if scheme.eq_ignore_ascii_case("bearer") && !token.trim().is_empty() =>
        {
            Ok(token.trim())
        }
        _ => Err(ApiError::BadAuthorization),
    }
}

fn parse_request(body: &[u8]) -> Result<Requested, ApiError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(Requested::default());
    }
    let request: GrantRequest =
        serde_json::from_slice(body).map_err(|e| ApiError::BadRequest(format!("body: {e}")))?;
    let ports = request
        .ports
        .iter()
        .map(|p| parse_port(p))
        .collect::<Result<Vec<_>, _>>()?;
    let ttl = match request.ttl {
        Some(text) => Some(
            humantime::parse_duration(&text)
                .map_err(|e| ApiError::BadRequest(format!("ttl {text:?}: {e}")))?,
        ),
        None => None,
    };
    Ok(Requested { ports, ttl })
}

/// `5432/tcp`, `53/udp`, or a bare `5432` (TCP).
pub fn parse_port(text: &str) -> Result<(u16, Protocol), ApiError> {
    let bad = || ApiError::BadRequest(format!("port {text:?}: expected PORT/tcp or PORT/udp"));
    let (port, protocol) = match text.split_once('/') {
        Some((port, "tcp")) => (port, Protocol::Tcp),
        Some((port, "udp")) => (port, Protocol::Udp),
        Some(_) => return Err(bad()),
        None => (text, Protocol::Tcp),
    };
    match port.parse::<u16>() {
        Ok(port) if port > 0 => Ok((port, protocol)),
        _ => Err(bad()),
    }
}

fn refuse(app: &App, token: &AccessToken, source: IpAddr, refusal: PlanError) -> ApiError {
    let reason = match &refusal {
        PlanError::InsufficientScope(_) => "insufficient_scope",
        PlanError::ExpiresNow => "expired",
        PlanError::BadRequest(_) => "bad_request",
    };
    app.log.emit(
        token_event("token.rejected", token, source)
            .with("reason", reason)
            .with("detail", refusal.to_string()),
    );
    match refusal {
        PlanError::InsufficientScope(what) => ApiError::InsufficientScope(what),
        PlanError::ExpiresNow => ApiError::InvalidToken,
        PlanError::BadRequest(what) => ApiError::BadRequest(what),
    }
}

fn token_event(name: &str, token: &AccessToken, source: IpAddr) -> Event {
    Event::new(name)
        .with("source", source.to_string())
        .with("issuer", &token.issuer_name)
        .with("subject", &token.subject)
        .with("client_id", &token.client_id)
        .with("scopes", &token.scopes)
        .with("jti", &token.jti)
        .with("token_hash", &token.token_hash)
}

fn accepted(token: &AccessToken, source: IpAddr) -> Event {
    token_event("token.accepted", token, source).with(
        "expires_at",
        humantime::format_rfc3339_seconds(token.expires_at).to_string(),
    )
}

fn rejected(rejection: &Rejection, source: IpAddr) -> Event {
    Event::new("token.rejected")
        .with("source", source.to_string())
        .with("reason", rejection.reason.as_str())
        .with("detail", &rejection.detail)
        .with("issuer", &rejection.issuer)
        .with("kid", &rejection.kid)
        .with("subject", &rejection.subject)
        .with("client_id", &rejection.client_id)
        .with("jti", &rejection.jti)
        .with("token_hash", &rejection.token_hash)
}

/// The answer to a grant request: what opened, for whom, until when.
pub fn describe(grant: &Grant, extended: bool) -> Value {
    let ttl = grant
        .expires_at()
        .duration_since(SystemTime::now())
        .unwrap_or_default();
    json!({
        "id": grant.id,
        "source": grant.source.to_string(),
        "ports": grant.ports.iter().map(|p| p.label()).collect::<Vec<_>>(),
        "gates": grant.gates(),
        "expires_at": humantime::format_rfc3339_seconds(grant.expires_at()).to_string(),
        "ttl_seconds": ttl.as_secs(),
        "extended": extended,
    })
}
