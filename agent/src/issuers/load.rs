//! Reading one issuer's key set from where the policy says it is: a JWKS file on this host,
//! or the issuer itself, through discovery.

use std::io;
use std::path::{Path, PathBuf};

use tokio::io::AsyncReadExt as _;

use super::discovery::{self, Discovered, DiscoveryError};
use super::fetch::{FetchError, Fetcher, MAX_RESPONSE_BYTES};
use crate::policy::Issuer;
use crate::tokens::{JwksError, KeyProblem, KeySet, MAX_JWKS_BYTES};

/// The most bytes of a key set read, from the network or a file.
const JWKS_LIMIT: usize = if MAX_JWKS_BYTES < MAX_RESPONSE_BYTES {
    MAX_JWKS_BYTES
} else {
    MAX_RESPONSE_BYTES
};

/// A key set as read, with where it came from.
#[derive(Debug)]
pub(super) struct Loaded {
    /// The `iss` of the issuer's tokens: from discovery, or the configured url for a file.
    pub issuer: String,
    /// Where the keys were read, for logs: the `jwks_uri` or the file's path.
    pub source: String,
    /// The discovery that led to the keys, kept to refetch them alone.
    pub discovered: Option<Discovered>,
    pub keys: KeySet,
    pub problems: Vec<KeyProblem>,
}

/// Why no key set was read. The last good keys stay in use.
#[derive(Debug, thiserror::Error)]
pub(super) enum LoadError {
    #[error(transparent)]
    Discovery(DiscoveryError),
    #[error("fetch the key set")]
    Fetch(#[source] FetchError),
    #[error("read key set file {path}")]
    File {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("key set from {source_name} is refused")]
    Refused {
        source_name: String,
        #[source]
        source: JwksError,
    },
}

impl LoadError {
    /// Whether the issuer answered with something that is not a key set, rather than not
    /// answering: that is reported as `issuer.keys_rejected`, not `issuer.unreachable`.
    pub fn is_refusal(&self) -> bool {
        matches!(self, Self::Refused { .. })
    }
}

/// Reads the key set of `config`. `known` is the result of an earlier discovery: when given,
/// only the key set is fetched again.
pub(super) async fn load(
    fetcher: &Fetcher,
    config: &Issuer,
    known: Option<Discovered>,
) -> Result<Loaded, LoadError> {
    if let Some(path) = &config.jwks_file {
        let body = read_file(path).await?;
        return parse(config, path.display().to_string(), None, &body);
    }

    let discovered = match known {
        Some(discovered) => discovered,
        None => discovery::discover(fetcher, &config.url)
            .await
            .map_err(LoadError::Discovery)?,
    };
    let body = fetcher
        .get(&discovered.jwks_uri, JWKS_LIMIT)
        .await
        .map_err(LoadError::Fetch)?;
    parse(
        config,
        discovered.jwks_uri.to_string(),
        Some(discovered),
        &body,
    )
}

fn parse(
    config: &Issuer,
    source: String,
    discovered: Option<Discovered>,
    body: &[u8],
) -> Result<Loaded, LoadError> {
    let (keys, problems) =
        KeySet::parse(body, &config.algorithms).map_err(|error| LoadError::Refused {
            source_name: source.clone(),
            source: error,
        })?;
    let issuer = discovered
        .as_ref()
        .map_or_else(|| config.url.clone(), |found| found.issuer.clone());
    Ok(Loaded {
        issuer,
        source,
        discovered,
        keys,
        problems,
    })
}

/// Reads at most one byte more than a key set may have, so that `KeySet::parse` can say the
/// file is too large without the whole of it being read.
async fn read_file(path: &Path) -> Result<Vec<u8>, LoadError> {
    let failed = |source| LoadError::File {
        path: path.to_owned(),
        source,
    };
    let file = tokio::fs::File::open(path).await.map_err(failed)?;
    let mut body = Vec::new();
    file.take(JWKS_LIMIT as u64 + 1)
        .read_to_end(&mut body)
        .await
        .map_err(failed)?;
    Ok(body)
}
