//! Which operation each route needs, and on which resource: the table the
//! authorization layer checks before any handler runs. A route missing
//! from it is refused to everyone, the root included, so a new route
//! cannot go unchecked.
//!
//! Collections count as their events stream (`_collections/{c}/events`):
//! reading records or events is `read`, writing records is `append`, and
//! admin is the stream admin operations. Consumers are basin resources:
//! seeing them needs `get-basin-config`, managing them
//! `reconfigure-basin`, and both managing and using them need `read` on
//! their source (checked against the source they already have, or, when
//! one is created, by the handler against the source it names).

use axum::http::Method;

use crate::engine::streams::scope::Operation::{self, *};

/// Where the resource a route acts on is named.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Target {
    /// No check at all (`/health`).
    Public,
    /// Nothing beyond the operation; listings are narrowed by the handler.
    Account,
    /// The `{basin}` path segment.
    BasinPath,
    /// The basin the request is addressed to (`s2-basin` or the host).
    Basin,
    /// The basin addressed, and the `{stream}` path segment.
    Stream,
    /// The `{basin}` and `{stream}` path segments.
    BasinAndStreamPath,
    /// The basin addressed, and the `{collection}`'s events stream.
    Collection,
    /// The basin addressed, and the source of the `{consumer}`.
    ConsumerSource,
    /// The `{id}` path segment, an access token id.
    AccessTokenPath,
    /// Named in the body or the query: the handler checks it.
    Handler,
    /// The basin addressed; the handler checks what the body names.
    BasinThenHandler,
    /// A Durable Streams stream: the `{path}` in the Durable Streams
    /// basin (a fork's source is checked by the handler).
    DurableStream,
}

#[derive(Clone, Copy, Debug)]
pub struct Policy {
    /// Every one of these must be permitted.
    pub ops: &'static [Operation],
    pub target: Target,
}

const fn p(ops: &'static [Operation], target: Target) -> Option<Policy> {
    Some(Policy { ops, target })
}

/// The policy of a route, by method and matched path.
pub fn policy(method: &Method, path: &str) -> Option<Policy> {
    use Target::*;
    let method = if method == Method::HEAD {
        &Method::GET
    } else {
        method
    };
    let m = method.as_str();
    match (m, path) {
        ("GET", "/health" | "/ready" | "/openapi.json") => p(&[], Public),
        // The console's files hold no data; its API calls carry a token.
        ("GET", "/" | "/console" | "/console/" | "/console/{file}") => p(&[], Public),

        ("GET", "/v1/basins") => p(&[ListBasins], Account),
        ("POST", "/v1/basins") => p(&[CreateBasin], Handler),
        ("GET", "/v1/basins/{basin}") => p(&[GetBasinConfig], BasinPath),
        // An ensure may create or change the basin.
        ("PUT", "/v1/basins/{basin}") => p(&[CreateBasin, ReconfigureBasin], BasinPath),
        ("PATCH", "/v1/basins/{basin}") => p(&[ReconfigureBasin], BasinPath),
        ("DELETE", "/v1/basins/{basin}") => p(&[DeleteBasin], BasinPath),

        ("GET", "/v1/streams") => p(&[ListStreams], Basin),
        ("POST", "/v1/streams") => p(&[CreateStream], BasinThenHandler),
        ("GET", "/v1/streams/{stream}") => p(&[GetStreamConfig], Stream),
        ("PUT", "/v1/streams/{stream}") => p(&[CreateStream, ReconfigureStream], Stream),
        ("PATCH", "/v1/streams/{stream}") => p(&[ReconfigureStream], Stream),
        ("DELETE", "/v1/streams/{stream}") => p(&[DeleteStream], Stream),
        // Trims and fences (command records) also need `trim` / `fence`,
        // checked by the append path, which sees the records.
        ("GET", "/v1/streams/{stream}/records") => p(&[Read], Stream),
        ("POST", "/v1/streams/{stream}/records") => p(&[Append], Stream),
        ("GET", "/v1/streams/{stream}/records/tail") => p(&[CheckTail], Stream),

        // Durable Streams. A `PUT` may carry content, so it appends too;
        // a CORS preflight carries no token, and does nothing.
        ("PUT", "/v1/stream/{*path}") => p(&[CreateStream, Append], DurableStream),
        ("POST", "/v1/stream/{*path}") => p(&[Append], DurableStream),
        ("GET", "/v1/stream/{*path}") => p(&[Read], DurableStream),
        ("DELETE", "/v1/stream/{*path}") => p(&[DeleteStream], DurableStream),
        ("OPTIONS", "/v1/stream/{*path}") => p(&[], Public),

        ("GET", "/v1/access-tokens") => p(&[ListAccessTokens], Account),
        ("POST", "/v1/access-tokens") => p(&[IssueAccessToken], Handler),
        ("DELETE", "/v1/access-tokens/{id}") => p(&[RevokeAccessToken], AccessTokenPath),

        ("GET", "/v1/collections") => p(&[ListStreams], Basin),
        ("GET", "/v1/collections/{collection}") => p(&[GetStreamConfig], Collection),
        ("PUT", "/v1/collections/{collection}") => {
            p(&[CreateStream, ReconfigureStream], Collection)
        }
        ("PATCH", "/v1/collections/{collection}") => p(&[ReconfigureStream], Collection),
        ("DELETE", "/v1/collections/{collection}") => p(&[DeleteStream], Collection),
        ("POST", "/v1/collections/{collection}/records") => p(&[Append], Collection),
        ("GET", "/v1/collections/{collection}/records/{id}") => p(&[Read], Collection),
        ("PUT" | "DELETE", "/v1/collections/{collection}/records/{id}") => p(&[Append], Collection),
        ("GET", "/v1/collections/{collection}/updated") => p(&[Read], Collection),
        ("GET", "/v1/collections/{collection}/events") => p(&[Read], Collection),
        // Which collections it reads is in the query.
        ("GET", "/v1/updated") => p(&[Read], BasinThenHandler),

        ("GET", "/v1/consumers") => p(&[GetBasinConfig], Basin),
        ("GET", "/v1/consumers/{consumer}") => p(&[GetBasinConfig], Basin),
        ("PUT", "/v1/consumers/{consumer}") => p(&[ReconfigureBasin, Read], BasinThenHandler),
        ("PATCH", "/v1/consumers/{consumer}") => p(&[ReconfigureBasin, Read], ConsumerSource),
        ("DELETE", "/v1/consumers/{consumer}") => p(&[ReconfigureBasin], Basin),
        (
            "POST",
            "/v1/consumers/{consumer}/receive"
            | "/v1/consumers/{consumer}/ack"
            | "/v1/consumers/{consumer}/nack"
            | "/v1/consumers/{consumer}/extend"
            | "/v1/consumers/{consumer}/commit"
            | "/v1/consumers/{consumer}/reject"
            | "/v1/consumers/{consumer}/replay",
        ) => p(&[Read], ConsumerSource),

        // Sinks are basin resources, as consumers are; making one needs
        // `read` on its source (checked by the handler).
        ("GET", "/v1/sinks" | "/v1/sinks/{sink}") => p(&[GetBasinConfig], Basin),
        ("PUT", "/v1/sinks/{sink}") => p(&[ReconfigureBasin, Read], BasinThenHandler),
        ("PATCH" | "DELETE", "/v1/sinks/{sink}") => p(&[ReconfigureBasin], Basin),
        ("POST", "/v1/sinks/{sink}/pause" | "/v1/sinks/{sink}/resume") => {
            p(&[ReconfigureBasin], Basin)
        }

        // Sources are basin resources too; making one needs `append` on the
        // collection it writes (checked by the handler), and `create-stream`
        // as it makes that collection if it is missing.
        ("GET", "/v1/sources" | "/v1/sources/{source}") => p(&[GetBasinConfig], Basin),
        ("PUT", "/v1/sources/{source}") => {
            p(&[ReconfigureBasin, Append, CreateStream], BasinThenHandler)
        }
        ("DELETE", "/v1/sources/{source}") => p(&[ReconfigureBasin], Basin),

        // Prometheus's scrape: everything the server counts.
        ("GET", "/metrics" | "/v1/metrics") => p(&[AccountMetrics], Account),
        ("GET", "/v1/metrics/{basin}") => p(&[BasinMetrics], BasinPath),
        ("GET", "/v1/metrics/{basin}/{stream}") => p(&[StreamMetrics], BasinAndStreamPath),
        _ => None,
    }
}
