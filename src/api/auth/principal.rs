//! Who a request is from, and what that lets it do: the checks handlers
//! and the route policy call, and the narrowing of listings to what a
//! token may see.

use std::sync::Arc;
use std::time::SystemTime;

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::StatusCode;

use crate::api::error::{ApiError, ApiResult};
use crate::engine::collections::{events_stream_name, EVENTS_STREAM_PREFIX};
use crate::engine::error::EngineResult;
use crate::engine::streams::scope::{set_matches, Operation, ResourceSet, Scope};
use crate::engine::streams::token_index::AccessToken;
use crate::engine::streams::types::AppendInput;
use crate::engine::streams::ListRequest;

/// The caller of a request. With auth off, everyone is `Root`.
#[derive(Clone, Debug)]
pub enum Principal {
    Root,
    Token(Arc<AccessToken>),
}

/// The kinds of named resource a scope holds a set for.
#[derive(Clone, Copy, Debug)]
pub enum Resource {
    Basins,
    Streams,
    AccessTokens,
    /// Seen through the scope's streams: a collection is its events
    /// stream, `_collections/{name}/events`.
    Collections,
}

pub fn unauthenticated(message: &str) -> ApiError {
    ApiError::new(StatusCode::UNAUTHORIZED, "unauthenticated", message)
}

pub fn permission_denied(what: impl std::fmt::Display) -> ApiError {
    ApiError::new(
        StatusCode::FORBIDDEN,
        "permission_denied",
        format!("the access token does not allow {what}"),
    )
}

impl Principal {
    fn scope(&self) -> Option<&Scope> {
        match self {
            Principal::Root => None,
            Principal::Token(token) => Some(&token.info.scope),
        }
    }

    /// Still usable: not revoked, not expired.
    pub fn is_live(&self) -> bool {
        match self {
            Principal::Root => true,
            Principal::Token(token) => token.is_live(SystemTime::now()),
        }
    }

    /// When the principal's access ends, if it does.
    pub fn expires(&self) -> Option<SystemTime> {
        match self {
            Principal::Root => None,
            Principal::Token(token) => token.expires,
        }
    }

    pub fn require(&self, op: Operation) -> ApiResult<()> {
        match self.scope() {
            Some(scope) if !scope.permits(op) => {
                Err(permission_denied(format_args!("`{}`", op.name())))
            }
            _ => Ok(()),
        }
    }

    fn set(&self, resource: Resource) -> Option<Option<&ResourceSet>> {
        let scope = self.scope()?;
        Some(match resource {
            Resource::Basins => scope.basins.as_ref(),
            Resource::Streams | Resource::Collections => scope.streams.as_ref(),
            Resource::AccessTokens => scope.access_tokens.as_ref(),
        })
    }

    /// Whether the scope's set of `resource` holds `name`.
    pub fn can_see(&self, resource: Resource, name: &str) -> bool {
        let matches = |set| match resource {
            Resource::Collections => set_matches(set, &events_stream_name(name)),
            _ => set_matches(set, name),
        };
        self.set(resource).is_none_or(matches)
    }

    /// Refuses `name` outside the scope, without saying whether it exists.
    pub fn check(&self, resource: Resource, name: &str) -> ApiResult<()> {
        if self.can_see(resource, name) {
            return Ok(());
        }
        let what = match resource {
            Resource::Basins => "this basin",
            Resource::Streams => "this stream",
            Resource::AccessTokens => "this access token",
            Resource::Collections => "this collection",
        };
        Err(permission_denied(what))
    }

    /// Command records need their own operations besides `append`: a
    /// fence needs `fence`, a trim `trim`.
    pub fn check_commands(&self, input: &AppendInput) -> ApiResult<()> {
        if input.has_command(b"fence") {
            self.require(Operation::Fence)?;
        }
        if input.has_command(b"trim") {
            self.require(Operation::Trim)?;
        }
        Ok(())
    }

    /// Whether the scope's streams cover every collection's events stream.
    pub fn sees_all_collections(&self) -> bool {
        self.set(Resource::Streams).is_none_or(|set| {
            set.is_some_and(|set| set.covers(&ResourceSet::Prefix(EVENTS_STREAM_PREFIX.into())))
        })
    }

    /// The stream prefix of an `auto_prefix_streams` token.
    fn stream_prefix(&self) -> Option<&str> {
        match self {
            Principal::Root => None,
            Principal::Token(token) => token.info.stream_prefix(),
        }
    }

    /// A stream name as the client gave it, made absolute: an
    /// `auto_prefix_streams` token's names are relative to its prefix.
    pub fn stream_name(&self, given: String) -> String {
        match self.stream_prefix() {
            Some(prefix) => format!("{prefix}{given}"),
            None => given,
        }
    }

    /// A stream name as the client should see it (the inverse).
    pub fn shown_stream_name(&self, name: String) -> String {
        match self.stream_prefix() {
            Some(prefix) => name
                .strip_prefix(prefix)
                .map(str::to_string)
                .unwrap_or(name),
            None => name,
        }
    }

    /// Narrows a list request of `resource` to the scope; `None` when the
    /// scope sees nothing the request could list. Stream listings are
    /// made absolute for `auto_prefix_streams` tokens.
    pub fn narrow(&self, resource: Resource, mut req: ListRequest) -> Option<Narrowed> {
        if matches!(resource, Resource::Streams) {
            if let Some(prefix) = self.stream_prefix() {
                req.prefix = format!("{prefix}{}", req.prefix);
                if !req.start_after.is_empty() {
                    req.start_after = format!("{prefix}{}", req.start_after);
                }
            }
        }
        match (self.set(resource), resource) {
            (None, _) => Some(Narrowed { req, exact: false }),
            (Some(set), Resource::Collections) => narrow_to(&collection_set(set?)?, req),
            (Some(set), _) => narrow_to(set?, req),
        }
    }

    /// One page of a listing of `resource`, holding only what the scope
    /// sees: the request is narrowed first, so pages stay full, and what
    /// comes back is filtered again, so nothing outside can show.
    pub fn list<T>(
        &self,
        resource: Resource,
        req: ListRequest,
        name: impl Fn(&T) -> &str,
        list: impl FnOnce(&ListRequest) -> EngineResult<(Vec<T>, bool)>,
    ) -> ApiResult<(Vec<T>, bool)> {
        let Some(narrowed) = self.narrow(resource, req) else {
            return Ok((Vec::new(), false));
        };
        let (mut items, has_more) = list(&narrowed.req)?;
        items.retain(|item| self.can_see(resource, name(item)));
        Ok((items, has_more && !narrowed.exact))
    }
}

/// A list request narrowed to a scope.
pub struct Narrowed {
    pub req: ListRequest,
    /// The scope names one resource: the page holds it or nothing, and
    /// there is never more.
    pub exact: bool,
}

fn narrow_to(set: &ResourceSet, mut req: ListRequest) -> Option<Narrowed> {
    match set {
        ResourceSet::Prefix(scope) => {
            if req.prefix.starts_with(scope.as_str()) {
                // Already within the scope.
            } else if scope.starts_with(&req.prefix) {
                req.prefix = scope.clone();
                if req.start_after < req.prefix {
                    // Every name under the scope comes after it.
                    req.start_after.clear();
                }
            } else {
                return None;
            }
            Some(Narrowed { req, exact: false })
        }
        ResourceSet::Exact(name) => {
            let listable = !name.is_empty()
                && name.starts_with(&req.prefix)
                && name.as_str() > req.start_after.as_str();
            listable.then(|| Narrowed {
                req: ListRequest {
                    prefix: name.clone(),
                    start_after: String::new(),
                    limit: Some(1),
                },
                exact: true,
            })
        }
    }
}

/// The collections whose events streams a stream set holds, as a set of
/// collection names (which never hold `/`).
fn collection_set(streams: &ResourceSet) -> Option<ResourceSet> {
    let events_name = |rest: &str| -> Option<String> {
        let (name, tail) = rest.split_once('/')?;
        (!name.is_empty() && "events".starts_with(tail)).then(|| name.to_string())
    };
    match streams {
        ResourceSet::Prefix(prefix) => match prefix.strip_prefix(EVENTS_STREAM_PREFIX) {
            None if EVENTS_STREAM_PREFIX.starts_with(prefix.as_str()) => {
                Some(ResourceSet::Prefix(String::new()))
            }
            None => None,
            Some(rest) if !rest.contains('/') => Some(ResourceSet::Prefix(rest.into())),
            Some(rest) => events_name(rest).map(ResourceSet::Exact),
        },
        ResourceSet::Exact(exact) => {
            let rest = exact.strip_prefix(EVENTS_STREAM_PREFIX)?;
            let (name, tail) = rest.split_once('/')?;
            (tail == "events").then(|| ResourceSet::Exact(name.into()))
        }
    }
}

impl<S: Send + Sync> FromRequestParts<S> for Principal {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, ApiError> {
        // The authorization layer puts it there for every routed request;
        // if it is missing, refuse rather than assume anything.
        parts
            .extensions
            .get::<Principal>()
            .cloned()
            .ok_or_else(|| permission_denied("this request (no access check ran)"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn list(prefix: &str, start_after: &str) -> ListRequest {
        ListRequest {
            prefix: prefix.into(),
            start_after: start_after.into(),
            limit: None,
        }
    }

    #[test]
    fn narrowing_keeps_listings_inside_the_scope() {
        let p = |s: &str| ResourceSet::Prefix(s.into());
        let n = narrow_to(&p("a/"), list("", "")).unwrap();
        assert_eq!(n.req.prefix, "a/");
        let n = narrow_to(&p("a/"), list("a/b", "a/b1")).unwrap();
        assert_eq!(
            (n.req.prefix.as_str(), n.req.start_after.as_str()),
            ("a/b", "a/b1")
        );
        let n = narrow_to(&p("b"), list("", "a")).unwrap();
        assert_eq!(
            (n.req.prefix.as_str(), n.req.start_after.as_str()),
            ("b", "")
        );
        assert!(narrow_to(&p("b"), list("a", "")).is_none());
        let e = ResourceSet::Exact("abc".into());
        assert!(narrow_to(&e, list("ab", "")).unwrap().exact);
        assert!(narrow_to(&e, list("ab", "abc")).is_none());
        assert!(narrow_to(&ResourceSet::Exact("".into()), list("", "")).is_none());
    }

    #[test]
    fn collections_are_seen_through_their_events_streams() {
        let p = |s: &str| ResourceSet::Prefix(s.into());
        let e = |s: &str| ResourceSet::Exact(s.into());
        assert_eq!(collection_set(&p("")), Some(p("")));
        assert_eq!(collection_set(&p("_coll")), Some(p("")));
        assert_eq!(collection_set(&p("_collections/or")), Some(p("or")));
        assert_eq!(
            collection_set(&p("_collections/orders/")),
            Some(e("orders"))
        );
        assert_eq!(
            collection_set(&p("_collections/orders/ev")),
            Some(e("orders"))
        );
        assert_eq!(collection_set(&p("_collections/orders/x")), None);
        assert_eq!(collection_set(&p("orders")), None);
        assert_eq!(
            collection_set(&e("_collections/orders/events")),
            Some(e("orders"))
        );
        assert_eq!(collection_set(&e("orders")), None);
    }
}
