//! Access tokens: issued, listed and revoked as S2 does, and looked up by
//! secret on every request when auth is on.
//!
//! A secret is 256 random bits, shown once when issued. Only its SHA-256
//! digest is stored (`A{id}` → [`StoredToken`]); the in-memory
//! [`TokenIndex`](super::token_index::TokenIndex) answers lookups.
//! Revoking removes the token from the index and marks it revoked, so
//! sessions that hold it can notice and end.

use std::sync::Arc;
use std::time::SystemTime;

use serde::{Deserialize, Serialize};

use super::core::StreamCore;
use super::keys;
use super::list::ListRequest;
use super::token_index::{
    digest, from_hex, hex, new_secret, AccessToken, AccessTokenInfo, SecretDigest,
};
use crate::engine::error::{EngineError, EngineResult};
use crate::storage::{Keyspace, WriteBatch};

/// How a token is stored: its info and its secret's digest, never the
/// secret.
#[derive(Serialize, Deserialize)]
struct StoredToken {
    info: AccessTokenInfo,
    /// Hex SHA-256 of the secret.
    secret_sha256: String,
}

impl StreamCore {
    /// Loads every stored token into the index (at open).
    pub(super) fn load_access_tokens(&self) -> EngineResult<()> {
        let stored = self.all_named_meta::<serde_json::Value>(&keys::access_token_key(""))?;
        self.hold_access_tokens(stored);
        Ok(())
    }

    /// Makes the tokens held those storage holds now: revoked ones go
    /// (their sessions end), new ones come, those held stay as they are
    /// (their sessions keep watching them). A replica's tokens are issued
    /// and revoked by the owner (`replica.rs`).
    pub(super) fn reload_access_tokens(&self) -> EngineResult<()> {
        let stored = self.all_named_meta::<serde_json::Value>(&keys::access_token_key(""))?;
        // By id and secret: a token revoked and issued again under the
        // same id is another token.
        let stored_digests: std::collections::HashMap<&str, Option<SecretDigest>> = stored
            .iter()
            .map(|(id, value)| {
                let digest = value["secret_sha256"].as_str().and_then(from_hex);
                (id.as_str(), digest)
            })
            .collect();
        let mut kept = std::collections::HashSet::new();
        for (id, digest) in self.tokens.held() {
            if stored_digests.get(id.as_str()) == Some(&Some(digest)) {
                kept.insert(id);
            } else {
                self.tokens.remove(&id);
            }
        }
        self.hold_access_tokens(stored.into_iter().filter(|(id, _)| !kept.contains(id)));
        Ok(())
    }

    fn hold_access_tokens(&self, stored: impl IntoIterator<Item = (String, serde_json::Value)>) {
        for (id, value) in stored {
            // Tokens recorded before secrets were kept (as digests) cannot
            // be used, and are only listed.
            let Ok(token) = serde_json::from_value::<StoredToken>(value) else {
                tracing::debug!(id, "access token without a secret digest");
                continue;
            };
            let (Some(digest), Ok(expires)) =
                (from_hex(&token.secret_sha256), token.info.validate())
            else {
                tracing::warn!(id, "access token record is malformed; it is ignored");
                continue;
            };
            self.tokens
                .insert(digest, AccessToken::new(token.info, expires));
        }
    }

    /// The live token whose secret has this digest, if any.
    pub fn find_access_token(&self, digest: &SecretDigest) -> Option<Arc<AccessToken>> {
        self.tokens
            .find(digest)
            .filter(|token| token.is_live(SystemTime::now()))
    }

    /// Records `info` and returns the new token's secret (the only time it
    /// is ever seen). Whether the issuer may issue it is the caller's call.
    pub async fn issue_access_token(&self, info: AccessTokenInfo) -> EngineResult<String> {
        let expires = info.validate()?;
        let _admin = self.admin.lock().await;
        let key = keys::access_token_key(&info.id);
        if self.storage.get(Keyspace::Meta, &key)?.is_some() {
            return Err(EngineError::AccessTokenExists(info.id));
        }
        let secret = new_secret();
        let digest = digest(&secret);
        let stored = StoredToken {
            info,
            secret_sha256: hex(&digest),
        };
        let mut batch = WriteBatch::default();
        batch.put(Keyspace::Meta, key, keys::encode_json(&stored));
        self.committer.commit(batch).await?;
        self.tokens
            .insert(digest, AccessToken::new(stored.info, expires));
        Ok(secret)
    }

    pub async fn revoke_access_token(&self, id: &str) -> EngineResult<()> {
        let _admin = self.admin.lock().await;
        let key = keys::access_token_key(id);
        if self.storage.get(Keyspace::Meta, &key)?.is_none() {
            return Err(EngineError::AccessTokenNotFound(id.into()));
        }
        let mut batch = WriteBatch::default();
        batch.delete(Keyspace::Meta, key);
        self.committer.commit(batch).await?;
        self.tokens.remove(id);
        Ok(())
    }

    /// One page of tokens' info (never their digests).
    pub fn list_access_tokens(
        &self,
        req: &ListRequest,
    ) -> EngineResult<(Vec<serde_json::Value>, bool)> {
        let (found, has_more) =
            self.list_named_meta::<serde_json::Value>(&keys::access_token_key(""), req)?;
        let infos = found
            .into_iter()
            .map(|(_, mut value)| {
                let mut info = if value.get("secret_sha256").is_some() {
                    value
                        .get_mut("info")
                        .map(serde_json::Value::take)
                        .unwrap_or_default()
                } else {
                    value // recorded before digests were kept
                };
                // S2 clients decode `auto_prefix_streams` as a boolean.
                if let Some(info) = info.as_object_mut() {
                    let on = info.get("auto_prefix_streams").and_then(|v| v.as_bool());
                    info.insert("auto_prefix_streams".into(), on.unwrap_or(false).into());
                }
                info
            })
            .collect();
        Ok((infos, has_more))
    }
}
