//! Access tokens: issued, listed and revoked as S2 does. Rill does not yet
//! enforce them (any bearer token is accepted); this keeps the API whole so
//! S2 tools that manage tokens work, and gives enforcement a place to live.

use base64::Engine as _;
use rand::RngCore;
use serde_json::Value;

use super::core::StreamCore;
use super::keys;
use super::list::ListRequest;
use crate::engine::error::{EngineError, EngineResult};
use crate::storage::{Keyspace, WriteBatch};

const MAX_TOKEN_ID_BYTES: usize = 96;

impl StreamCore {
    /// Records `info` (an S2 `AccessTokenInfo`) and returns a new secret.
    pub async fn issue_access_token(&self, mut info: Value) -> EngineResult<String> {
        if info
            .get("auto_prefix_streams")
            .is_some_and(|v| !v.is_null() && !v.is_boolean())
        {
            return Err(EngineError::Invalid(
                "`auto_prefix_streams` must be a boolean".into(),
            ));
        }
        with_defaults(&mut info);
        let id = info
            .get("id")
            .and_then(Value::as_str)
            .ok_or_else(|| EngineError::Invalid("an access token needs a string `id`".into()))?
            .to_string();
        if id.is_empty() || id.len() > MAX_TOKEN_ID_BYTES {
            return Err(EngineError::Invalid(format!(
                "an access token id must be 1 to {MAX_TOKEN_ID_BYTES} bytes"
            )));
        }
        if !info.get("scope").is_some_and(Value::is_object) {
            return Err(EngineError::Invalid(
                "an access token needs a `scope` object".into(),
            ));
        }
        let _admin = self.admin.lock().await;
        if self
            .storage
            .get(Keyspace::Meta, &keys::access_token_key(&id))?
            .is_some()
        {
            return Err(EngineError::AccessTokenExists(id));
        }
        let mut batch = WriteBatch::default();
        batch.put(
            Keyspace::Meta,
            keys::access_token_key(&id),
            keys::encode_json(&info),
        );
        self.committer.commit(batch).await?;
        let mut secret = [0u8; 32];
        rand::rng().fill_bytes(&mut secret);
        Ok(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(secret))
    }

    pub async fn revoke_access_token(&self, id: &str) -> EngineResult<()> {
        let _admin = self.admin.lock().await;
        if self
            .storage
            .get(Keyspace::Meta, &keys::access_token_key(id))?
            .is_none()
        {
            return Err(EngineError::AccessTokenNotFound(id.into()));
        }
        let mut batch = WriteBatch::default();
        batch.delete(Keyspace::Meta, keys::access_token_key(id));
        self.committer.commit(batch).await?;
        Ok(())
    }

    pub fn list_access_tokens(&self, req: &ListRequest) -> EngineResult<(Vec<Value>, bool)> {
        let (found, has_more) = self.list_named_meta::<Value>(&keys::access_token_key(""), req)?;
        let tokens = found
            .into_iter()
            .map(|(_, mut info)| {
                with_defaults(&mut info); // tokens stored before the defaults were
                info
            })
            .collect();
        Ok((tokens, has_more))
    }
}

/// Fills in what S2's `AccessTokenInfo` defaults: `auto_prefix_streams`
/// is a boolean, `false` unless given (clients decode it as one, and some
/// send `null`).
fn with_defaults(info: &mut Value) {
    if let Some(info) = info.as_object_mut() {
        let auto_prefix = info.get("auto_prefix_streams").and_then(Value::as_bool);
        info.insert(
            "auto_prefix_streams".into(),
            Value::Bool(auto_prefix.unwrap_or(false)),
        );
    }
}
