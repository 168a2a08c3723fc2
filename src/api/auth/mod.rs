//! Access control. With a root token configured, every request but
//! `/health` must carry a bearer token: the root token, or a token issued
//! through `/v1/access-tokens`. The authorization layer finds the route's
//! [`policy`], refuses what the token's scope does not allow, and hands
//! the [`Principal`] to the handler, which narrows listings and checks
//! names that only the body holds.
//!
//! Refusals never say whether a resource exists: a missing or unknown
//! token is `401 unauthenticated` (with `WWW-Authenticate: Bearer`); a
//! valid token out of scope is `403 permission_denied`, decided from names
//! alone before anything is looked up.

pub(super) mod mode;
mod policy;
pub(super) mod principal;
mod session;

use std::collections::HashMap;

use axum::extract::{FromRequestParts, MatchedPath, Request, State};
use axum::http::request::Parts;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::error::{ApiError, ApiResult};
use super::extract::{basin_from_headers, Path};
use super::shared::AppState;
use crate::engine::collections::events_stream_name;
use crate::engine::consumers::Source;
pub use mode::{Auth, RootDigest};
pub use policy::{policy, Policy, Target};
pub use principal::{permission_denied, unauthenticated, Narrowed, Principal, Resource};
pub use session::{pumped, revoked, GuardedSession};

/// The authorization layer: runs after routing, before every handler.
pub async fn authorize(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let (mut parts, body) = request.into_parts();
    match check(&state, &mut parts).await {
        Ok(principal) => {
            parts.extensions.insert(principal);
            next.run(Request::from_parts(parts, body)).await
        }
        Err(err) => err.into_response(),
    }
}

async fn check(state: &AppState, parts: &mut Parts) -> ApiResult<Principal> {
    let route = parts
        .extensions
        .get::<MatchedPath>()
        .map(|m| m.as_str().to_string())
        .unwrap_or_default();
    let Some(policy) = policy(&parts.method, &route) else {
        // The route layer also sees methods a path does not serve. Those,
        // and any a route would serve without a policy (the access test
        // fails on that), get 405: nothing runs unchecked.
        state.auth.authenticate(&parts.headers, &state.engine)?;
        return Err(ApiError::method_not_allowed());
    };
    if policy.target == Target::Public {
        return Ok(Principal::Root);
    }
    let principal = state.auth.authenticate(&parts.headers, &state.engine)?;
    if matches!(principal, Principal::Root) {
        return Ok(principal);
    }
    for op in policy.ops {
        principal.require(*op)?;
    }
    let params = if route.contains('{') {
        let Path(params) = Path::<HashMap<String, String>>::from_request_parts(parts, &()).await?;
        params
    } else {
        HashMap::new()
    };
    let param = |name: &str| params.get(name).cloned().unwrap_or_default();
    let basin = || basin_from_headers(&parts.headers);
    match policy.target {
        Target::Public | Target::Account | Target::Handler => {}
        Target::BasinPath => principal.check(Resource::Basins, &param("basin"))?,
        Target::Basin | Target::BasinThenHandler => principal.check(Resource::Basins, &basin()?)?,
        Target::Stream => {
            let stream = principal.stream_name(param("stream"));
            principal.check(Resource::Basins, &basin()?)?;
            principal.check(Resource::Streams, &stream)?;
        }
        Target::BasinAndStreamPath => {
            let stream = principal.stream_name(param("stream"));
            principal.check(Resource::Basins, &param("basin"))?;
            principal.check(Resource::Streams, &stream)?;
        }
        Target::Collection => {
            principal.check(Resource::Basins, &basin()?)?;
            let stream = events_stream_name(&param("collection"));
            principal.check(Resource::Streams, &stream)?;
        }
        Target::ConsumerSource => {
            let basin = basin()?;
            principal.check(Resource::Basins, &basin)?;
            // The consumer's existence is not hidden from a token that may
            // use the basin: consumers are basin resources.
            let source = state
                .engine
                .consumers()
                .source_of(&basin, &param("consumer"))
                .await?;
            check_source(&principal, &source)?;
        }
        Target::AccessTokenPath => principal.check(Resource::AccessTokens, &param("id"))?,
        Target::DurableStream => {
            let stream = principal.stream_name(param("path"));
            principal.check(Resource::Basins, crate::engine::durable_streams::BASIN)?;
            principal.check(Resource::Streams, &stream)?;
        }
    }
    Ok(principal)
}

/// A consumer's source must be readable by whoever manages or uses it.
pub fn check_source(principal: &Principal, source: &Source) -> ApiResult<()> {
    let stream = match source {
        Source::Stream { stream } => stream.clone(),
        Source::Collection { collection, .. } => events_stream_name(collection),
    };
    principal.check(Resource::Streams, &stream)
}

/// The `{stream}` path segment as an absolute stream name: a token with
/// `auto_prefix_streams` names streams relative to its prefix.
pub struct StreamPath(pub String);

impl<S: Send + Sync> FromRequestParts<S> for StreamPath {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        let Path(given) = Path::<String>::from_request_parts(parts, state).await?;
        let principal = Principal::from_request_parts(parts, state).await?;
        Ok(StreamPath(principal.stream_name(given)))
    }
}
