//! What the handlers share: the app state, running an operation detached
//! from its request, list parameters, and the responses of creates.

use std::sync::Arc;
use std::time::Duration;

use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};

use crate::engine::streams::{ListRequest, Provision};
use crate::engine::Engine;

/// Request bodies larger than this are refused before parsing, by
/// default (`--max-body-bytes`). A full append (1 MiB metered) in base64
/// JSON stays well under it.
pub const DEFAULT_MAX_BODY_BYTES: usize = 4 * 1024 * 1024;

#[derive(Clone)]
pub struct AppState {
    pub engine: Arc<Engine>,
    /// A unary request's whole body must arrive within this.
    pub body_read_timeout: Duration,
    /// A session whose client takes nothing for this long is cut off.
    pub write_stall_timeout: Duration,
    /// A unary request's body (decompressed, too) may be at most this.
    pub max_body_bytes: usize,
    pub auth: super::auth::mode::Auth,
    /// Open sessions and long polls, against their limits.
    pub admission: std::sync::Arc<super::admission::Admission>,
    /// The sinks' workers (their status).
    pub sinks: Arc<crate::sinks::SinkRuntime>,
    pub sources: Arc<crate::sources::SourceRuntime>,
    /// URLs the server gives out are `https://`.
    pub tls: bool,
    /// How long a Durable Streams long poll waits for records.
    pub durable_streams_long_poll: Duration,
}

/// Runs an engine operation to completion even if the client goes away.
/// axum drops a handler's future when its connection closes; admin
/// operations take several steps (stop a stream task, commit metadata,
/// update caches) and must not stop half way.
pub(super) async fn detached<T: Send + 'static>(
    operation: impl std::future::Future<Output = T> + Send + 'static,
) -> T {
    match tokio::spawn(operation).await {
        Ok(value) => value,
        // Only when the runtime shuts down, and the caller with it.
        Err(err) if err.is_cancelled() => std::future::pending().await,
        Err(err) => std::panic::resume_unwind(err.into_panic()),
    }
}

/// `prefix`, `start_after`, `limit` of the list endpoints.
#[derive(Debug, Default, Deserialize)]
pub struct ListParams {
    #[serde(default)]
    prefix: String,
    #[serde(default)]
    start_after: String,
    limit: Option<usize>,
}

impl From<ListParams> for ListRequest {
    fn from(p: ListParams) -> Self {
        ListRequest {
            prefix: p.prefix,
            start_after: p.start_after,
            limit: p.limit,
        }
    }
}

/// An ensure (`PUT`): 201 for a new resource, 200 otherwise, with S2's
/// `s2-provision-result`.
pub(super) fn provision_response<T: Serialize>(provision: Provision, body: T) -> Response {
    let status = match provision {
        Provision::Created => StatusCode::CREATED,
        Provision::Updated | Provision::Unchanged => StatusCode::OK,
    };
    with_provision_result(status, provision, body)
}

/// A create (`POST`): 201, also for a retry with the same request token.
pub(super) fn created_response<T: Serialize>(provision: Provision, body: T) -> Response {
    with_provision_result(StatusCode::CREATED, provision, body)
}

fn with_provision_result<T: Serialize>(
    status: StatusCode,
    provision: Provision,
    body: T,
) -> Response {
    let result = match provision {
        Provision::Created => "created",
        Provision::Updated => "updated",
        Provision::Unchanged => "noop",
    };
    let mut response = (status, axum::Json(body)).into_response();
    response
        .headers_mut()
        .insert("s2-provision-result", HeaderValue::from_static(result));
    response
}
