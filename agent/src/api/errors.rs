//! Every error of the auth endpoint mapped to an HTTP answer in one place: a status, the
//! RFC 6750 `WWW-Authenticate` challenge where it applies, and a short JSON body. Causes go to
//! the event log, never to the client.

use axum::{
    Json,
    http::{HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
};
use serde_json::json;

/// Why a request is answered with an error.
#[derive(Debug)]
pub enum ApiError {
    /// No `Authorization: Bearer` header at all (RFC 6750 3.1: no error code).
    NoToken,
    /// The header is there but not a bearer token.
    BadAuthorization,
    /// The token was refused; the reason code is logged, not sent.
    InvalidToken,
    /// A valid token whose scopes open none of the asked ports.
    InsufficientScope(String),
    /// A body or parameter that cannot be understood.
    BadRequest(String),
    NotFound,
    /// Too many grant requests from this source; retry after this many seconds.
    RateLimited(u64),
    /// The grant could not be recorded; details are in the log.
    Internal,
}

const REALM: &str = "portguard";

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let retry_after = match self {
            ApiError::RateLimited(seconds) => Some(seconds),
            _ => None,
        };
        let (status, challenge, error, description) = match self {
            ApiError::NoToken => (
                StatusCode::UNAUTHORIZED,
                Some(format!("Bearer realm=\"{REALM}\"")),
                "invalid_request",
                "a bearer token is required".to_owned(),
            ),
            ApiError::BadAuthorization => (
                StatusCode::BAD_REQUEST,
                Some(format!(
                    "Bearer realm=\"{REALM}\", error=\"invalid_request\""
                )),
                "invalid_request",
                "the Authorization header must be `Bearer <token>`".to_owned(),
            ),
            ApiError::InvalidToken => (
                StatusCode::UNAUTHORIZED,
                Some(format!("Bearer realm=\"{REALM}\", error=\"invalid_token\"")),
                "invalid_token",
                "the access token is not valid here".to_owned(),
            ),
            ApiError::InsufficientScope(what) => (
                StatusCode::FORBIDDEN,
                Some(format!(
                    "Bearer realm=\"{REALM}\", error=\"insufficient_scope\""
                )),
                "insufficient_scope",
                what,
            ),
            ApiError::BadRequest(what) => (StatusCode::BAD_REQUEST, None, "invalid_request", what),
            ApiError::NotFound => (
                StatusCode::NOT_FOUND,
                None,
                "not_found",
                "no such grant".to_owned(),
            ),
            ApiError::RateLimited(_) => (
                StatusCode::TOO_MANY_REQUESTS,
                None,
                "rate_limited",
                "too many requests from this address".to_owned(),
            ),
            ApiError::Internal => (
                StatusCode::INTERNAL_SERVER_ERROR,
                None,
                "server_error",
                "the grant could not be recorded".to_owned(),
            ),
        };
        let mut response = (
            status,
            Json(json!({ "error": error, "error_description": description })),
        )
            .into_response();
        if let Some(challenge) = challenge.and_then(|c| HeaderValue::from_str(&c).ok()) {
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, challenge);
        }
        if let Some(seconds) = retry_after {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(seconds));
        }
        response
    }
}
