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
mod shared;
mod sse;
mod streams;

use std::sync::Arc;
use std::time::Duration;

use axum::extract::DefaultBodyLimit;
use axum::http::StatusCode;
use axum::routing::{delete, get, post};
use axum::Router;

use crate::engine::Engine;
use error::ApiError;
pub use shared::AppState;
use shared::MAX_BODY_BYTES;

/// How long a unary request's body may take to arrive, by default.
pub const DEFAULT_BODY_READ_TIMEOUT: Duration = Duration::from_secs(60);

/// The router, with a request body timeout: a unary request whose body
/// has not fully arrived within `body_read_timeout` gets `408` (sessions
/// stream their bodies and are not bound by it).
pub fn router(engine: Arc<Engine>, body_read_timeout: Duration) -> Router {
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
        .with_state(AppState {
            engine,
            body_read_timeout,
        })
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
