//! A cache of tokens already validated, so that a client presenting the same token again (a
//! retry, a renewal of its grant) costs a hash instead of a signature check. Entries live at
//! most [`CACHE_TTL`] and never past the token's expiry; the table is bounded.

use std::{
    collections::HashMap,
    sync::Mutex,
    time::{Duration, SystemTime},
};

use aws_lc_rs::digest;

use super::AccessToken;

/// How long a validation is trusted again; a key the issuer withdraws stops counting then.
pub const CACHE_TTL: Duration = Duration::from_secs(60);
/// Tokens remembered at most.
pub const CACHE_ENTRIES: usize = 4096;

type Digest = [u8; 32];

pub struct TokenCache {
    entries: Mutex<HashMap<Digest, (AccessToken, SystemTime)>>,
}

impl Default for TokenCache {
    fn default() -> Self {
        Self {
            entries: Mutex::new(HashMap::new()),
        }
    }
}

impl TokenCache {
    /// The holder of `token`, if it was validated within the cache lifetime and is still
    /// unexpired at `now`.
    pub fn get(&self, token: &str, now: SystemTime) -> Option<AccessToken> {
        let key = key(token);
        let entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        let (holder, until) = entries.get(&key)?;
        (now < *until && now < holder.expires_at).then(|| holder.clone())
    }

    pub fn insert(&self, token: &str, holder: &AccessToken, now: SystemTime) {
        let until = (now + CACHE_TTL).min(holder.expires_at);
        let mut entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        if entries.len() >= CACHE_ENTRIES {
            entries.retain(|_, (_, until)| *until > now);
            if entries.len() >= CACHE_ENTRIES {
                entries.clear();
            }
        }
        entries.insert(key(token), (holder.clone(), until));
    }
}

fn key(token: &str) -> Digest {
    let mut key = [0u8; 32];
    key.copy_from_slice(digest::digest(&digest::SHA256, token.as_bytes()).as_ref());
    key
}

#[cfg(test)]
mod tests {
    use super::*;

    fn holder(expires_at: SystemTime) -> AccessToken {
        AccessToken {
            issuer_name: "corp".into(),
            issuer: "https://idp".into(),
            subject: "ci".into(),
            client_id: None,
            scopes: vec!["db".into()],
            jti: None,
            expires_at,
            issued_at: None,
            token_hash: "00".into(),
        }
    }

    #[test]
    fn a_cached_token_is_served_until_the_cache_ttl_or_its_expiry() {
        let (cache, now) = (TokenCache::default(), SystemTime::now());
        cache.insert("a.b.c", &holder(now + Duration::from_secs(3600)), now);
        assert!(cache.get("a.b.c", now).is_some());
        assert!(cache.get("a.b.d", now).is_none());
        assert!(cache.get("a.b.c", now + CACHE_TTL).is_none());

        cache.insert("x.y.z", &holder(now + Duration::from_secs(5)), now);
        assert!(cache.get("x.y.z", now + Duration::from_secs(6)).is_none());
    }
}
