//! Fetching an issuer's documents over HTTP: TLS unless the host is this one, no redirect to
//! another origin, and a time and size limit on every response.

use std::error::Error;
use std::net::IpAddr;
use std::time::Duration;

use reqwest::header::ACCEPT;
use reqwest::{Client, StatusCode, Url, redirect};

/// The largest response read from an issuer; the body is read in pieces and dropped past it.
pub const MAX_RESPONSE_BYTES: usize = 1024 * 1024;

/// Redirects followed within one origin, as some providers move `/jwks` to `/jwks/`.
const MAX_REDIRECTS: usize = 3;

const USER_AGENT: &str = concat!("portguard/", env!("CARGO_PKG_VERSION"));

/// The HTTP client for issuers could not be set up.
#[derive(Debug, thiserror::Error)]
#[error("build the http client for issuers")]
pub struct ClientError(#[source] reqwest::Error);

/// Why a document could not be fetched.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    #[error("{url:?} is not a url: {reason}")]
    BadUrl { url: String, reason: String },
    #[error("refused {url}: keys come over https, or over http from a loopback host only")]
    Insecure { url: Url },
    #[error("refused {url}: a url with credentials would send them to the issuer")]
    Credentials { url: Url },
    #[error("request {url}")]
    Request {
        url: Url,
        #[source]
        source: reqwest::Error,
    },
    #[error("{url} answered {status}")]
    Status { url: Url, status: StatusCode },
    #[error("{url} sent more than the {limit} bytes accepted")]
    TooLarge { url: Url, limit: usize },
}

/// Two HTTP clients with the same limits: one honours the proxy variables of the
/// environment for remote issuers, the other goes straight to loopback ones.
#[derive(Debug)]
pub(super) struct Fetcher {
    remote: Client,
    local: Client,
}

impl Fetcher {
    pub fn new(timeout: Duration) -> Result<Self, ClientError> {
        let builder = || {
            Client::builder()
                .user_agent(USER_AGENT)
                .timeout(timeout)
                .connect_timeout(timeout)
                .redirect(same_origin_redirects())
        };
        Ok(Self {
            remote: builder().build().map_err(ClientError)?,
            local: builder().no_proxy().build().map_err(ClientError)?,
        })
    }

    /// GETs `url` and returns its body, refusing more than `limit` bytes.
    pub async fn get(&self, url: &Url, limit: usize) -> Result<Vec<u8>, FetchError> {
        check(url)?;
        let client = if is_loopback(url) {
            &self.local
        } else {
            &self.remote
        };
        // The url is in this error's message already; its cause need not repeat it.
        let failed = |source: reqwest::Error| FetchError::Request {
            url: url.clone(),
            source: source.without_url(),
        };

        let mut response = client
            .get(url.clone())
            .header(ACCEPT, "application/json")
            .send()
            .await
            .map_err(failed)?;
        let status = response.status();
        if status != StatusCode::OK {
            return Err(FetchError::Status {
                url: url.clone(),
                status,
            });
        }

        // The announced length is a hint; the count below is what holds the limit.
        let too_large = || FetchError::TooLarge {
            url: url.clone(),
            limit,
        };
        if response
            .content_length()
            .is_some_and(|len| len > limit as u64)
        {
            return Err(too_large());
        }
        let mut body = Vec::new();
        while let Some(chunk) = response.chunk().await.map_err(failed)? {
            if body.len() + chunk.len() > limit {
                return Err(too_large());
            }
            body.extend_from_slice(&chunk);
        }
        Ok(body)
    }
}

/// Parses a url that keys or metadata will be read from, and checks it.
pub(super) fn parse_url(text: &str) -> Result<Url, FetchError> {
    let url = Url::parse(text).map_err(|error| FetchError::BadUrl {
        url: text.to_owned(),
        reason: error.to_string(),
    })?;
    check(&url)?;
    Ok(url)
}

/// https anywhere, http only to this host; never credentials in the url.
pub(super) fn check(url: &Url) -> Result<(), FetchError> {
    match url.scheme() {
        "https" => {}
        "http" if is_loopback(url) => {}
        _ => return Err(FetchError::Insecure { url: url.clone() }),
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(FetchError::Credentials { url: url.clone() });
    }
    Ok(())
}

/// Whether the url's host is `localhost` or a loopback address.
pub(super) fn is_loopback(url: &Url) -> bool {
    let Some(host) = url.host_str() else {
        return false;
    };
    let bare = host
        .strip_prefix('[')
        .and_then(|rest| rest.strip_suffix(']'))
        .unwrap_or(host);
    host.eq_ignore_ascii_case("localhost")
        || bare
            .parse::<IpAddr>()
            .is_ok_and(|address| address.is_loopback())
}

/// An error and its causes on one line, for `last_error` and events.
pub(super) fn chain(error: &dyn Error) -> String {
    let mut text = error.to_string();
    let mut cause = error.source();
    while let Some(inner) = cause {
        let message = inner.to_string();
        // reqwest repeats its cause in its own message at times; say each thing once.
        if !text.ends_with(&message) {
            text.push_str(": ");
            text.push_str(&message);
        }
        cause = inner.source();
    }
    text
}

/// Follows a few redirects within the origin of the first request, and refuses any other.
fn same_origin_redirects() -> redirect::Policy {
    redirect::Policy::custom(|attempt| {
        let Some(first) = attempt.previous().first() else {
            return attempt.stop();
        };
        if attempt.previous().len() > MAX_REDIRECTS {
            return attempt.error(format!("more than {MAX_REDIRECTS} redirects"));
        }
        if attempt.url().origin() != first.origin() {
            let message = format!("redirect from {first} to another origin, {}", attempt.url());
            return attempt.error(message);
        }
        attempt.follow()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn allowed(text: &str) -> bool {
        parse_url(text).is_ok()
    }

    #[test]
    fn https_is_allowed_anywhere() {
        assert!(allowed("https://idp.example.com/jwks"));
        assert!(allowed("https://203.0.113.9:8443/jwks"));
    }

    #[test]
    fn http_is_allowed_to_loopback_only() {
        assert!(allowed("http://127.0.0.1:8080/jwks"));
        assert!(allowed("http://127.9.9.9/jwks"));
        assert!(allowed("http://[::1]:8080/jwks"));
        assert!(allowed("http://LOCALHOST:8080/jwks"));
        assert!(!allowed("http://idp.example.com/jwks"));
        assert!(!allowed("http://localhost.evil.example/jwks"));
        assert!(!allowed("http://127.0.0.1.evil.example/jwks"));
        assert!(!allowed("http://[::ffff:127.0.0.1]/jwks"));
        assert!(!allowed("ftp://127.0.0.1/jwks"));
        assert!(!allowed("file:///etc/jwks.json"));
    }

    #[test]
    fn credentials_in_urls_are_refused() {
        assert!(!allowed("https://user:secret@idp.example.com/jwks"));
        assert!(!allowed("http://127.0.0.1@evil.example/jwks"));
    }

    #[test]
    fn error_chains_name_each_cause_once() {
        let io = std::io::Error::other("connection refused");
        let error = FetchError::BadUrl {
            url: "x".into(),
            reason: chain(&io),
        };
        assert_eq!(chain(&error), "\"x\" is not a url: connection refused");
    }
}
