//! OIDC discovery: from an issuer's url to the url of its key set, believed only when the
//! document names the issuer that was asked for.

use reqwest::Url;
use serde::Deserialize;

use super::fetch::{self, FetchError, Fetcher, MAX_RESPONSE_BYTES};

/// Where an issuer publishes its metadata, below its url (OIDC Discovery 1.0, section 4).
const WELL_KNOWN: &str = "/.well-known/openid-configuration";

/// Why an issuer's metadata was not believed.
#[derive(Debug, thiserror::Error)]
pub enum DiscoveryError {
    #[error("fetch the discovery document")]
    Fetch(#[source] FetchError),
    #[error("discovery document {url} is malformed: {reason}")]
    Malformed { url: Url, reason: String },
    #[error("discovery document names issuer {found:?}, not the configured {expected:?}")]
    IssuerMismatch { expected: String, found: String },
    #[error("discovery document's jwks_uri is refused")]
    JwksUri(#[source] FetchError),
}

/// What discovery tells: the exact `iss` of the issuer's tokens, and where its keys are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Discovered {
    pub issuer: String,
    pub jwks_uri: Url,
}

/// The part of the discovery document portguard reads; the rest is ignored.
#[derive(Deserialize)]
struct Document {
    issuer: String,
    jwks_uri: String,
}

/// Fetches and checks the discovery document of the issuer at `issuer_url`.
pub(super) async fn discover(
    fetcher: &Fetcher,
    issuer_url: &str,
) -> Result<Discovered, DiscoveryError> {
    let url = document_url(issuer_url).map_err(DiscoveryError::Fetch)?;
    let body = fetcher
        .get(&url, MAX_RESPONSE_BYTES)
        .await
        .map_err(DiscoveryError::Fetch)?;
    read_document(issuer_url, &url, &body)
}

/// `<issuer>/.well-known/openid-configuration`, with the issuer's trailing slash dropped.
pub(super) fn document_url(issuer_url: &str) -> Result<Url, FetchError> {
    let base = issuer_url.strip_suffix('/').unwrap_or(issuer_url);
    fetch::parse_url(&format!("{base}{WELL_KNOWN}"))
}

/// Checks a discovery document fetched from `url` for the issuer configured as `configured`.
pub(super) fn read_document(
    configured: &str,
    url: &Url,
    body: &[u8],
) -> Result<Discovered, DiscoveryError> {
    let document: Document =
        serde_json::from_slice(body).map_err(|error| DiscoveryError::Malformed {
            url: url.clone(),
            reason: error.to_string(),
        })?;

    // A document served for one issuer but naming another would let a provider (or whoever
    // controls its path) vouch for tokens that are not its own.
    if !same_issuer(configured, &document.issuer) {
        return Err(DiscoveryError::IssuerMismatch {
            expected: configured.to_owned(),
            found: document.issuer,
        });
    }

    let jwks_uri = fetch::parse_url(&document.jwks_uri).map_err(DiscoveryError::JwksUri)?;
    if jwks_uri.scheme() == "http" && !issuer_is_loopback(configured) {
        // Plain http is for an issuer on this host; a remote one may not send keys there.
        return Err(DiscoveryError::JwksUri(FetchError::Insecure {
            url: jwks_uri,
        }));
    }
    Ok(Discovered {
        issuer: document.issuer,
        jwks_uri,
    })
}

/// Whether two issuer urls are the same, allowing one trailing slash on either.
fn same_issuer(configured: &str, found: &str) -> bool {
    let trim = |url: &str| url.strip_suffix('/').unwrap_or(url).to_owned();
    trim(configured) == trim(found)
}

fn issuer_is_loopback(issuer_url: &str) -> bool {
    Url::parse(issuer_url).is_ok_and(|url| fetch::is_loopback(&url))
}

#[cfg(test)]
mod tests {
    use super::*;

    const REMOTE: &str = "https://idp.example.com/realms/corp";

    fn read(configured: &str, body: &str) -> Result<Discovered, DiscoveryError> {
        let url = document_url(configured).expect("a valid issuer url");
        read_document(configured, &url, body.as_bytes())
    }

    #[test]
    fn document_url_is_below_the_issuer_path() {
        let url = |issuer| document_url(issuer).map(|url| url.to_string()).ok();
        let expected = "https://idp.example.com/realms/corp/.well-known/openid-configuration";
        assert_eq!(url(REMOTE).as_deref(), Some(expected));
        assert_eq!(
            url("https://idp.example.com/realms/corp/").as_deref(),
            Some(expected)
        );
        assert!(url("http://idp.example.com").is_none());
    }

    #[test]
    fn issuer_may_differ_by_one_trailing_slash() {
        let body = r#"{"issuer": "https://idp.example.com/realms/corp/",
                       "jwks_uri": "https://keys.example.net/corp"}"#;
        let discovered = read(REMOTE, body).expect("the same issuer");
        assert_eq!(discovered.issuer, "https://idp.example.com/realms/corp/");
        assert_eq!(
            discovered.jwks_uri.as_str(),
            "https://keys.example.net/corp"
        );
    }

    #[test]
    fn another_issuer_is_refused() {
        for found in [
            "https://idp.example.com/realms/other",
            "https://idp.example.com/realms/corp//",
            "https://IDP.example.com/realms/corp",
            "https://idp.example.com/realms",
        ] {
            let body =
                format!(r#"{{"issuer": "{found}", "jwks_uri": "https://idp.example.com/k"}}"#);
            let error = read(REMOTE, &body).expect_err(found);
            assert!(
                matches!(error, DiscoveryError::IssuerMismatch { .. }),
                "{found}"
            );
        }
    }

    #[test]
    fn remote_issuer_may_not_send_keys_over_http() {
        for jwks_uri in ["http://keys.example.com/jwks", "http://127.0.0.1:8080/jwks"] {
            let body = format!(r#"{{"issuer": "{REMOTE}", "jwks_uri": "{jwks_uri}"}}"#);
            let error = read(REMOTE, &body).expect_err(jwks_uri);
            assert!(matches!(error, DiscoveryError::JwksUri(_)), "{jwks_uri}");
        }
    }

    #[test]
    fn document_without_jwks_uri_is_malformed() {
        let error = read(REMOTE, &format!(r#"{{"issuer": "{REMOTE}"}}"#)).expect_err("no jwks");
        assert!(matches!(error, DiscoveryError::Malformed { .. }));
        let error = read(REMOTE, "[]").expect_err("not an object");
        assert!(matches!(error, DiscoveryError::Malformed { .. }));
    }
}
