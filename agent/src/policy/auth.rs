//! The `[auth]` table and the `[[issuer]]` tables: where tokens are presented, and whose
//! tokens are believed.

use std::ffi::OsString;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;

use toml::Spanned;

use super::error::Problems;
use super::fields::{Table, each, name, non_empty};
use super::network;
use super::raw::{RawAuth, RawIssuer, Text, TextList};

/// What `tls_cert` and `tls_key` start with to name a systemd credential instead of a file:
/// `"credential:tls.key"` is the file `tls.key` in `$CREDENTIALS_DIRECTORY`, where systemd puts
/// what the unit's `LoadCredential=tls.key:/etc/portguard/tls.key` loads.
pub const CREDENTIAL_PREFIX: &str = "credential:";

/// The variable where systemd tells a service the folder of its credentials.
const CREDENTIALS_DIRECTORY: &str = "CREDENTIALS_DIRECTORY";

/// The `[auth]` table: the agent's HTTPS endpoint where clients present tokens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Auth {
    /// Never empty; these ports are opened automatically.
    pub listen: Vec<SocketAddr>,
    /// The certificate chain (PEM); a `"credential:NAME"` in the file is resolved here already.
    pub tls_cert: PathBuf,
    /// The private key (PEM); a `"credential:NAME"` in the file is resolved here already.
    pub tls_key: PathBuf,
    /// The `aud` a token must carry.
    pub audience: String,
}

/// An `[[issuer]]`: an identity provider whose signed tokens open gates.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Issuer {
    pub name: String,
    /// The issuer URL; discovery reads `<url>/.well-known/openid-configuration`.
    pub url: String,
    /// The signature algorithms accepted from this issuer, never empty.
    pub algorithms: Vec<Algorithm>,
    /// Keys read from this file instead of fetched from the issuer.
    pub jwks_file: Option<PathBuf>,
}

/// A JWS signature algorithm verified with the issuer's public keys.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Algorithm {
    Rs256,
    Rs384,
    Rs512,
    Ps256,
    Ps384,
    Ps512,
    Es256,
    Es384,
    EdDsa,
}

impl Algorithm {
    pub const ALL: [Algorithm; 9] = [
        Self::Rs256,
        Self::Rs384,
        Self::Rs512,
        Self::Ps256,
        Self::Ps384,
        Self::Ps512,
        Self::Es256,
        Self::Es384,
        Self::EdDsa,
    ];

    /// What an issuer accepts when its table has no `algorithms`.
    pub const DEFAULT: [Algorithm; 3] = [Self::Rs256, Self::Es256, Self::EdDsa];

    /// The name in a token's `alg` header and in the policy file.
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::Rs256 => "RS256",
            Self::Rs384 => "RS384",
            Self::Rs512 => "RS512",
            Self::Ps256 => "PS256",
            Self::Ps384 => "PS384",
            Self::Ps512 => "PS512",
            Self::Es256 => "ES256",
            Self::Es384 => "ES384",
            Self::EdDsa => "EdDSA",
        }
    }

    pub fn from_name(name: &str) -> Option<Algorithm> {
        Self::ALL
            .into_iter()
            .find(|algorithm| algorithm.as_str() == name)
    }
}

pub(super) fn auth(problems: &mut Problems, raw: &Spanned<RawAuth>) -> Option<Auth> {
    let (table, fields) = (Table::new(raw, "[auth]"), raw.get_ref());
    let listen = table.required(problems, "listen", &fields.listen);
    let tls_cert = table.required(problems, "tls_cert", &fields.tls_cert);
    let tls_key = table.required(problems, "tls_key", &fields.tls_key);
    let audience = table.required(problems, "audience", &fields.audience);

    let listen = listen.map(|list| listen_addresses(problems, list));
    let tls_cert = tls_cert.and_then(|path| tls_file(problems, "tls_cert", path));
    let tls_key = tls_key.and_then(|path| tls_file(problems, "tls_key", path));
    let audience = audience.and_then(|text| non_empty(problems, "audience", text, "an audience"));

    Some(Auth {
        listen: listen?,
        tls_cert: tls_cert?,
        tls_key: tls_key?,
        audience: audience?,
    })
}

pub(super) fn issuer(problems: &mut Problems, raw: &Spanned<RawIssuer>) -> Option<Issuer> {
    let (table, fields) = (Table::new(raw, "[[issuer]]"), raw.get_ref());
    let issuer_name = table.required(problems, "name", &fields.name);
    let url = table.required(problems, "url", &fields.url);

    let issuer_name = issuer_name.and_then(|text| name(problems, text));
    let url = url.and_then(|text| {
        issuer_url(text.get_ref())
            .map(|()| text.get_ref().clone())
            .map_err(|message| problems.push(&text.span(), message))
            .ok()
    });
    let algorithms = match &fields.algorithms {
        Some(list) => algorithms(problems, list),
        None => Algorithm::DEFAULT.to_vec(),
    };
    let jwks_file = fields
        .jwks_file
        .as_ref()
        .and_then(|path| non_empty(problems, "jwks_file", path, "a file path"))
        .map(PathBuf::from);

    Some(Issuer {
        name: issuer_name?,
        url: url?,
        algorithms,
        jwks_file,
    })
}

/// A file path, or `"credential:NAME"`: the credential `NAME` that systemd loaded for the
/// service (`LoadCredential=`), in `$CREDENTIALS_DIRECTORY`.
fn tls_file(problems: &mut Problems, key: &str, text: &Text) -> Option<PathBuf> {
    let value = non_empty(problems, key, text, "a file path or \"credential:NAME\"")?;
    let Some(name) = value.strip_prefix(CREDENTIAL_PREFIX) else {
        return Some(value.into());
    };
    credential_path(key, name, credentials_directory())
        .map_err(|message| problems.push(&text.span(), message))
        .ok()
}

/// Where the credential `name` is, given the value of `$CREDENTIALS_DIRECTORY`.
fn credential_path(key: &str, name: &str, directory: Option<OsString>) -> Result<PathBuf, String> {
    // systemd's rule for credential names: a file name, at most NAME_MAX bytes.
    if name.is_empty() || name == "." || name == ".." || name.contains('/') || name.len() > 255 {
        return Err(format!(
            "{key}: expected a credential name after \"{CREDENTIAL_PREFIX}\", a file name such \
             as \"{CREDENTIAL_PREFIX}tls.key\", found {name:?}"
        ));
    }
    let Some(directory) = directory.filter(|directory| !directory.is_empty()) else {
        return Err(format!(
            "{key}: \"{CREDENTIAL_PREFIX}{name}\" names a systemd credential, but \
             ${CREDENTIALS_DIRECTORY} is not set: run portguard as a systemd service whose unit \
             has LoadCredential={name}:/path/to/file (or write the file's path here)"
        ));
    };
    let directory = PathBuf::from(directory);
    if !directory.is_absolute() {
        return Err(format!(
            "{key}: \"{CREDENTIAL_PREFIX}{name}\" names a systemd credential, but \
             ${CREDENTIALS_DIRECTORY} is {:?}, not an absolute path",
            directory.display().to_string()
        ));
    }
    Ok(directory.join(name))
}

/// `$CREDENTIALS_DIRECTORY`, or in tests the folder that [`with_credentials_directory`] set.
fn credentials_directory() -> Option<OsString> {
    #[cfg(test)]
    if let Some(directory) = testing::DIRECTORY.with(|set| set.borrow().clone()) {
        return directory;
    }
    std::env::var_os(CREDENTIALS_DIRECTORY)
}

/// Runs `parse` as if `$CREDENTIALS_DIRECTORY` were `directory` (unset for `None`), on this
/// thread only: tests run in parallel, and changing the real environment would race.
#[cfg(test)]
pub(super) fn with_credentials_directory<T>(
    directory: Option<&std::path::Path>,
    parse: impl FnOnce() -> T,
) -> T {
    testing::DIRECTORY.with(|set| *set.borrow_mut() = Some(directory.map(OsString::from)));
    let _reset = testing::Reset;
    parse()
}

#[cfg(test)]
mod testing {
    use std::cell::RefCell;
    use std::ffi::OsString;

    thread_local! {
        /// `Some(value)` while a test stands in for `$CREDENTIALS_DIRECTORY`.
        pub(super) static DIRECTORY: RefCell<Option<Option<OsString>>> = const { RefCell::new(None) };
    }

    /// Puts the real environment back when a test's parse ends, even by a panic.
    pub(super) struct Reset;

    impl Drop for Reset {
        fn drop(&mut self) {
            DIRECTORY.with(|set| *set.borrow_mut() = None);
        }
    }
}

fn listen_addresses(problems: &mut Problems, list: &TextList) -> Vec<SocketAddr> {
    if list.get_ref().is_empty() {
        problems.push(
            &list.span(),
            "listen: expected at least one address such as \"[::]:8443\"",
        );
    }

    each(problems, list, |text| {
        network::listen_address("listen", text)
    })
}

fn algorithms(problems: &mut Problems, list: &TextList) -> Vec<Algorithm> {
    if list.get_ref().is_empty() {
        problems.push(
            &list.span(),
            "algorithms: expected at least one algorithm; leave the key out for the default \
             [\"RS256\", \"ES256\", \"EdDSA\"]",
        );
    }

    // A name listed twice is harmless; keep the first.
    let mut accepted = Vec::new();
    for algorithm in each(problems, list, algorithm) {
        if !accepted.contains(&algorithm) {
            accepted.push(algorithm);
        }
    }
    accepted
}

fn algorithm(name: &str) -> Result<Algorithm, String> {
    if let Some(algorithm) = Algorithm::from_name(name) {
        return Ok(algorithm);
    }

    let upper = name.to_ascii_uppercase();
    if upper == "NONE" {
        return Err(format!(
            "algorithms: {name:?} is refused: it accepts unsigned tokens, which anyone can forge"
        ));
    }
    if upper.starts_with("HS") {
        return Err(format!(
            "algorithms: {name:?} is refused: hmac needs a secret shared with the issuer, and \
             tokens are verified with the issuer's public keys"
        ));
    }

    let known: Vec<String> = Algorithm::ALL
        .iter()
        .map(|algorithm| format!("{:?}", algorithm.as_str()))
        .collect();
    Err(format!(
        "algorithms: expected one of {}, found {name:?}",
        known.join(", ")
    ))
}

/// Checks that tokens' keys come over TLS: https, or http to this host itself.
fn issuer_url(url: &str) -> Result<(), String> {
    let (scheme, rest) = url.split_once("://").unwrap_or(("", url));
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    let host_and_port = authority
        .rsplit_once('@')
        .map_or(authority, |(_, host)| host);
    let host = match host_and_port.strip_prefix('[') {
        Some(bracketed) => bracketed.split(']').next().unwrap_or_default(),
        None => host_and_port.split(':').next().unwrap_or_default(),
    };

    if host.is_empty() {
        return Err(format!(
            "url: expected a url such as \"https://idp.example.com\", found {url:?}"
        ));
    }
    let loopback = host.eq_ignore_ascii_case("localhost")
        || host
            .parse::<IpAddr>()
            .is_ok_and(|address| address.is_loopback());
    match scheme.to_ascii_lowercase().as_str() {
        "https" => Ok(()),
        "http" if loopback => Ok(()),
        _ => Err(format!(
            "url: expected an https url (http only to a loopback host), found {url:?}"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn issuer_url_must_be_https() {
        assert!(issuer_url("https://idp.example.com").is_ok());
        assert!(issuer_url("https://idp.example.com:8443/realms/corp").is_ok());
        assert!(issuer_url("http://idp.example.com").is_err());
        assert!(issuer_url("ftp://idp.example.com").is_err());
        assert!(issuer_url("idp.example.com").is_err());
        assert!(issuer_url("https://").is_err());
    }

    #[test]
    fn issuer_url_may_be_http_on_loopback() {
        assert!(issuer_url("http://127.0.0.1:8080").is_ok());
        assert!(issuer_url("http://127.3.4.5/realm").is_ok());
        assert!(issuer_url("http://[::1]:8080").is_ok());
        assert!(issuer_url("http://LocalHost:8080").is_ok());
        assert!(issuer_url("http://localhost.evil.example").is_err());
        assert!(issuer_url("http://127.0.0.1@evil.example").is_err());
    }

    #[test]
    fn algorithm_names_round_trip() {
        for algorithm in Algorithm::ALL {
            assert_eq!(Algorithm::from_name(algorithm.as_str()), Some(algorithm));
        }
        assert_eq!(Algorithm::from_name("rs256"), None);
    }
}
