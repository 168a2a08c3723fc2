//! Whether a server checks tokens, and who a request's bearer token
//! says it is from.

use std::sync::Arc;

use axum::http::{header, HeaderMap};

use super::principal::{unauthenticated, Principal};
use crate::api::error::ApiResult;
use crate::engine::streams::token_index::{digest, same_digest};
use crate::engine::Engine;

/// Whether requests must be authenticated, and the root token if so.
#[derive(Clone, Default, Debug)]
pub enum Auth {
    /// Everyone is root: the embedded default, for loopback use.
    #[default]
    Off,
    /// Only the SHA-256 digest of the root token is kept.
    On { root: Arc<RootDigest> },
}

/// The root token's digest; its `Debug` does not print it.
pub struct RootDigest([u8; 32]);

impl std::fmt::Debug for RootDigest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RootDigest(..)")
    }
}

impl Auth {
    pub fn with_root_token(secret: &str) -> Self {
        Auth::On {
            root: Arc::new(RootDigest(digest(secret))),
        }
    }

    pub fn is_on(&self) -> bool {
        matches!(self, Auth::On { .. })
    }

    /// The principal a request's bearer token names.
    pub fn authenticate(&self, headers: &HeaderMap, engine: &Engine) -> ApiResult<Principal> {
        let Auth::On { root } = self else {
            return Ok(Principal::Root);
        };
        let secret = bearer_token(headers).ok_or_else(|| {
            unauthenticated("this server requires an access token: send `Authorization: Bearer …`")
        })?;
        // Hashed once: compared with the root's in constant time, then
        // looked up among issued tokens.
        let presented = digest(secret);
        if same_digest(&root.0, &presented) {
            return Ok(Principal::Root);
        }
        engine
            .streams()
            .find_access_token(&presented)
            .map(Principal::Token)
            .ok_or_else(|| unauthenticated("the access token is unknown, revoked or expired"))
    }
}

fn bearer_token(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.trim().split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}
