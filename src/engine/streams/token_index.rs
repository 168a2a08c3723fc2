//! What an access token is (S2's `AccessTokenInfo`, and the token as the
//! server holds it), how its secret is made and hashed, and the in-memory
//! index that finds a token by its secret without touching storage.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::time::SystemTime;

use base64::Engine as _;
use rand::RngCore;
use serde::{Deserialize, Deserializer, Serialize};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::scope::{ResourceSet, Scope};
use crate::engine::error::{EngineError, EngineResult};
use crate::engine::locks::{read_lock, write_lock};

const MAX_TOKEN_ID_BYTES: usize = 96;
/// The longest name a scope may hold (stream names are at most 512 bytes).
const MAX_RESOURCE_NAME_BYTES: usize = 512;
/// More than every operation there is, to allow for repeats.
const MAX_SCOPE_OPS: usize = 64;

/// What secrets start with, so that secret scanners and people can tell
/// one when they see it.
pub const SECRET_PREFIX: &str = "rill_";

/// S2's `AccessTokenInfo`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AccessTokenInfo {
    pub id: String,
    /// RFC 3339; absent means the issuer's expiry (none for the root).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<String>,
    /// Stream names are relative to the scope's stream prefix.
    #[serde(default, deserialize_with = "null_as_false")]
    pub auto_prefix_streams: bool,
    pub scope: Scope,
}

fn null_as_false<'de, D: Deserializer<'de>>(d: D) -> Result<bool, D::Error> {
    Ok(Option::<bool>::deserialize(d)?.unwrap_or(false))
}

impl AccessTokenInfo {
    /// Checks what S2 requires of a token, and returns its expiry.
    pub fn validate(&self) -> EngineResult<Option<SystemTime>> {
        if self.id.is_empty() || self.id.len() > MAX_TOKEN_ID_BYTES {
            return Err(EngineError::Invalid(format!(
                "an access token id must be 1 to {MAX_TOKEN_ID_BYTES} bytes"
            )));
        }
        if self.id.chars().any(char::is_control) {
            return Err(EngineError::Invalid(
                "an access token id cannot hold control characters".into(),
            ));
        }
        if self.auto_prefix_streams && !matches!(self.scope.streams, Some(ResourceSet::Prefix(_))) {
            return Err(EngineError::Invalid(
                "`auto_prefix_streams` needs the scope's `streams` to be a prefix".into(),
            ));
        }
        let sets = [
            &self.scope.basins,
            &self.scope.streams,
            &self.scope.access_tokens,
        ];
        let longest = sets
            .into_iter()
            .flatten()
            .map(|set| match set {
                ResourceSet::Exact(name) | ResourceSet::Prefix(name) => name.len(),
            })
            .max()
            .unwrap_or(0);
        if longest > MAX_RESOURCE_NAME_BYTES {
            return Err(EngineError::Invalid(format!(
                "a scope's names and prefixes may be at most {MAX_RESOURCE_NAME_BYTES} bytes"
            )));
        }
        if self
            .scope
            .ops
            .as_ref()
            .is_some_and(|ops| ops.len() > MAX_SCOPE_OPS)
        {
            return Err(EngineError::Invalid(format!(
                "a scope lists at most {MAX_SCOPE_OPS} operations"
            )));
        }
        if self.scope.permitted().next().is_none() {
            return Err(EngineError::Invalid(
                "the scope permits no operation: give `ops` or `op_groups`".into(),
            ));
        }
        self.expires_at.as_deref().map(parse_time).transpose()
    }

    /// The prefix given to stream names on the way in and taken off on the
    /// way out, when `auto_prefix_streams` is on.
    pub fn stream_prefix(&self) -> Option<&str> {
        match (&self.scope.streams, self.auto_prefix_streams) {
            (Some(ResourceSet::Prefix(prefix)), true) => Some(prefix),
            _ => None,
        }
    }
}

/// Parses an RFC 3339 time, with `Z` or a numeric offset.
pub fn parse_time(text: &str) -> EngineResult<SystemTime> {
    let invalid = || {
        EngineError::Invalid(format!(
            "`{text}` is not an RFC 3339 time such as 2027-01-01T00:00:00Z"
        ))
    };
    // humantime reads UTC (`Z`) only; an offset is applied by hand.
    let split = text
        .len()
        .checked_sub(6)
        .and_then(|i| Some((text.get(..i)?, text.get(i..)?)));
    let (utc, offset_secs) = match split {
        Some((time, offset))
            if (offset.starts_with('+') || offset.starts_with('-'))
                && offset.as_bytes()[3] == b':' =>
        {
            let hours: u64 = offset[1..3].parse().map_err(|_| invalid())?;
            let minutes: u64 = offset[4..6].parse().map_err(|_| invalid())?;
            if hours > 23 || minutes > 59 {
                return Err(invalid());
            }
            let secs = hours * 3600 + minutes * 60;
            let signed = if offset.starts_with('+') {
                secs as i64
            } else {
                -(secs as i64)
            };
            (format!("{time}Z"), signed)
        }
        _ => (text.to_string(), 0),
    };
    let local = humantime::parse_rfc3339(&utc).map_err(|_| invalid())?;
    let shift = std::time::Duration::from_secs(offset_secs.unsigned_abs());
    let time = if offset_secs >= 0 {
        local.checked_sub(shift)
    } else {
        local.checked_add(shift)
    };
    // Past the last second RFC 3339 can write, a time could not be
    // shown again (a child token inherits its issuer's expiry as text).
    let last = humantime::parse_rfc3339("9999-12-31T23:59:59Z").map_err(|_| invalid())?;
    time.filter(|t| *t <= last).ok_or_else(invalid)
}

/// A token as the server holds it in memory.
#[derive(Debug)]
pub struct AccessToken {
    pub info: AccessTokenInfo,
    pub expires: Option<SystemTime>,
    revoked: AtomicBool,
}

impl AccessToken {
    pub(super) fn new(info: AccessTokenInfo, expires: Option<SystemTime>) -> Self {
        Self {
            info,
            expires,
            revoked: AtomicBool::new(false),
        }
    }
}

impl AccessToken {
    /// Neither revoked nor expired at `now`.
    pub fn is_live(&self, now: SystemTime) -> bool {
        !self.revoked.load(Ordering::Acquire) && self.expires.is_none_or(|at| now < at)
    }
}

pub type SecretDigest = [u8; 32];

/// The SHA-256 digest of a secret.
pub fn digest(secret: &str) -> SecretDigest {
    Sha256::digest(secret.as_bytes()).into()
}

/// Compares two digests in constant time.
pub fn same_digest(a: &SecretDigest, b: &SecretDigest) -> bool {
    a.ct_eq(b).into()
}

/// A new secret: [`SECRET_PREFIX`] and 256 random bits in base64url.
pub fn new_secret() -> String {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    format!(
        "{SECRET_PREFIX}{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
    )
}

/// Bytes as lowercase hex (two digits a byte: it sorts as the bytes do).
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

pub(super) fn from_hex(text: &str) -> Option<SecretDigest> {
    let mut out = [0u8; 32];
    if text.len() != 64 {
        return None;
    }
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(text.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(out)
}

/// Live tokens by their secret's digest, and digests by token id.
#[derive(Default)]
pub(super) struct TokenIndex {
    maps: RwLock<TokenMaps>,
}

#[derive(Default)]
struct TokenMaps {
    by_digest: HashMap<SecretDigest, Arc<AccessToken>>,
    digest_by_id: HashMap<String, SecretDigest>,
}

impl TokenIndex {
    pub(super) fn insert(&self, digest: SecretDigest, token: AccessToken) {
        let mut maps = write_lock(&self.maps);
        maps.digest_by_id.insert(token.info.id.clone(), digest);
        maps.by_digest.insert(digest, Arc::new(token));
    }

    pub(super) fn remove(&self, id: &str) {
        let mut maps = write_lock(&self.maps);
        if let Some(digest) = maps.digest_by_id.remove(id) {
            if let Some(token) = maps.by_digest.remove(&digest) {
                token.revoked.store(true, Ordering::Release);
            }
        }
    }

    /// The tokens held: id and secret digest.
    pub(super) fn held(&self) -> Vec<(String, SecretDigest)> {
        read_lock(&self.maps)
            .digest_by_id
            .iter()
            .map(|(id, digest)| (id.clone(), *digest))
            .collect()
    }

    /// Found by the digest of the presented secret: a lookup's timing
    /// depends on digests, which no one can steer towards a stored one.
    pub(super) fn find(&self, digest: &SecretDigest) -> Option<Arc<AccessToken>> {
        read_lock(&self.maps).by_digest.get(digest).cloned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_are_long_random_and_hash_stably() {
        let a = new_secret();
        let b = new_secret();
        assert_ne!(a, b);
        assert!(a.starts_with(SECRET_PREFIX));
        assert_eq!(a.len(), SECRET_PREFIX.len() + 43); // 32 bytes in base64url
        assert!(same_digest(&digest(&a), &digest(&a)));
        assert!(!same_digest(&digest(&a), &digest(&b)));
        assert_eq!(from_hex(&hex(&digest(&a))), Some(digest(&a)));
    }

    #[test]
    fn times_with_offsets_are_the_same_instant() {
        let utc = parse_time("2027-01-01T00:00:00Z").unwrap();
        assert_eq!(parse_time("2027-01-01T02:00:00+02:00").unwrap(), utc);
        assert_eq!(parse_time("2026-12-31T23:30:00-00:30").unwrap(), utc);
        assert!(parse_time("tomorrow").is_err());
        assert!(parse_time("2027-01-01T00:00:00+2:000").is_err());
        assert!(parse_time("2027-01-01T00:00:00+99:99").is_err());
        assert!(parse_time("9999-12-31T23:59:59-23:59").is_err());
        assert!(parse_time("9999-12-31T23:59:59Z").is_ok());
    }
}
