//! The HTTP API: thin axum handlers over the [`Engine`].
//!
//! Handlers parse and validate the request shape, call one engine method,
//! and render the result; everything about streams lives in the engine.
//! Bearer tokens are accepted and, for now, not checked.

mod account;
mod basins;
mod collections;
mod consumers;
pub mod error;
mod extract;
mod records;
mod s2s;
mod sse;
mod streams;

use std::sync::Arc;

use axum::extract::DefaultBodyLimit;
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::Router;
use serde::{Deserialize, Serialize};

use crate::engine::streams::{ListRequest, Provision};
use crate::engine::Engine;
use error::ApiError;

/// Request bodies larger than this are refused before parsing. A full
/// append (1 MiB metered) in base64 JSON stays well under it.
pub(crate) const MAX_BODY_BYTES: usize = 4 * 1024 * 1024;

#[derive(Clone)]
pub struct AppState {
    pub engine: Arc<Engine>,
}

pub fn router(engine: Arc<Engine>) -> Router {
    let v1 = Router::new()
        .route("/basins", get(basins::list).post(basins::create))
        .route(
            "/basins/{basin}",
            get(basins::get_config)
                .put(basins::ensure)
                .patch(basins::reconfigure)
                .delete(basins::delete),
        )
        .route("/streams", get(streams::list).post(streams::create))
        .route(
            "/streams/{stream}",
            get(streams::get_config)
                .put(streams::ensure)
                .patch(streams::reconfigure)
                .delete(streams::delete),
        )
        .route(
            "/streams/{stream}/records",
            get(records::read).post(records::append),
        )
        .route("/streams/{stream}/records/tail", get(records::check_tail))
        .route(
            "/access-tokens",
            get(account::list_tokens).post(account::issue_token),
        )
        .route("/access-tokens/{id}", delete(account::revoke_token))
        .route("/collections", get(collections::list))
        .route(
            "/collections/{collection}",
            get(collections::get)
                .put(collections::ensure)
                .patch(collections::reconfigure)
                .delete(collections::delete),
        )
        .route(
            "/collections/{collection}/records",
            post(collections::write_batch),
        )
        .route(
            "/collections/{collection}/records/{id}",
            get(collections::get_record)
                .put(collections::put_record)
                .delete(collections::delete_record),
        )
        .route(
            "/collections/{collection}/updated",
            get(collections::updated),
        )
        .route("/collections/{collection}/events", get(collections::events))
        .route("/updated", get(collections::updated_across))
        .route("/consumers", get(consumers::list))
        .route(
            "/consumers/{consumer}",
            get(consumers::get)
                .put(consumers::ensure)
                .patch(consumers::reconfigure)
                .delete(consumers::delete),
        )
        .route("/consumers/{consumer}/receive", post(consumers::receive))
        .route("/consumers/{consumer}/ack", post(consumers::ack))
        .route("/consumers/{consumer}/nack", post(consumers::nack))
        .route("/consumers/{consumer}/extend", post(consumers::extend))
        .route("/consumers/{consumer}/commit", post(consumers::commit))
        .route("/metrics", get(account::account_metrics))
        .route("/metrics/{basin}", get(account::basin_metrics))
        .route("/metrics/{basin}/{stream}", get(account::stream_metrics));
    Router::new()
        .nest("/v1", v1)
        .route("/health", get(health))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .with_state(AppState { engine })
}

/// Runs an engine operation to completion even if the client goes away.
/// axum drops a handler's future when its connection closes; admin
/// operations take several steps (stop a stream task, commit metadata,
/// update caches) and must not stop half way.
async fn detached<T: Send + 'static>(
    operation: impl std::future::Future<Output = T> + Send + 'static,
) -> T {
    match tokio::spawn(operation).await {
        Ok(value) => value,
        // Only when the runtime shuts down, and the caller with it.
        Err(err) if err.is_cancelled() => std::future::pending().await,
        Err(err) => std::panic::resume_unwind(err.into_panic()),
    }
}

async fn health() -> axum::Json<serde_json::Value> {
    axum::Json(serde_json::json!({ "status": "ok" }))
}

async fn not_found() -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, "not_found", "no such endpoint")
}

async fn method_not_allowed() -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        "this endpoint does not support that method",
    )
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
fn provision_response<T: Serialize>(provision: Provision, body: T) -> Response {
    let status = match provision {
        Provision::Created => StatusCode::CREATED,
        Provision::Updated | Provision::Unchanged => StatusCode::OK,
    };
    with_provision_result(status, provision, body)
}

/// A create (`POST`): 201, also for a retry with the same request token.
fn created_response<T: Serialize>(provision: Provision, body: T) -> Response {
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
