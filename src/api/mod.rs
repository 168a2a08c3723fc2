//! The HTTP API: thin axum handlers over the [`Engine`].
//!
//! Handlers parse and validate the request shape, call one engine method,
//! and render the result; everything about streams lives in the engine.
//! Every routed request passes the authorization layer ([`auth`]) first.

mod account;
pub mod auth;
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
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::{delete, get, post, MethodRouter};
use axum::Router;

use crate::engine::Engine;
pub use auth::Auth;
use error::ApiError;
pub use shared::AppState;
use shared::MAX_BODY_BYTES;

/// How long a unary request's body may take to arrive, by default.
pub const DEFAULT_BODY_READ_TIMEOUT: Duration = Duration::from_secs(60);

/// What the router is built with.
#[derive(Clone)]
pub struct ApiConfig {
    /// A unary request whose body has not fully arrived within this gets
    /// `408` (sessions stream their bodies and are not bound by it).
    pub body_read_timeout: Duration,
    pub auth: Auth,
}

impl Default for ApiConfig {
    fn default() -> Self {
        Self {
            body_read_timeout: DEFAULT_BODY_READ_TIMEOUT,
            auth: Auth::Off,
        }
    }
}

/// The router: every route of [`v1_routes`] and `/health`, behind the
/// authorization layer.
pub fn router(engine: Arc<Engine>, config: ApiConfig) -> Router {
    let state = AppState {
        engine,
        body_read_timeout: config.body_read_timeout,
        auth: config.auth,
    };
    let (v1, _) = v1_routes();
    Router::new()
        .nest("/v1", v1)
        .route("/health", get(health))
        // Only matched routes pass through it; the fallbacks check
        // the token themselves.
        .route_layer(axum::middleware::from_fn_with_state(
            state.clone(),
            auth::authorize,
        ))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .with_state(state)
}

/// Every path the router serves, `/health` included. The access matrix
/// test walks these, so that no route escapes it.
pub fn route_paths() -> Vec<String> {
    let (_, paths) = v1_routes();
    let mut all: Vec<String> = paths.iter().map(|p| format!("/v1{p}")).collect();
    all.push("/health".into());
    all
}

/// The `/v1` routes, and their paths as registered.
fn v1_routes() -> (Router<AppState>, Vec<&'static str>) {
    let mut paths = Vec::new();
    let mut router = Router::new();
    let mut route = |path: &'static str, methods: MethodRouter<AppState>| {
        paths.push(path);
        router = std::mem::take(&mut router).route(path, methods);
    };
    route("/basins", get(basins::list).post(basins::create));
    route(
        "/basins/{basin}",
        get(basins::get_config)
            .put(basins::ensure)
            .patch(basins::reconfigure)
            .delete(basins::delete),
    );
    route("/streams", get(streams::list).post(streams::create));
    route(
        "/streams/{stream}",
        get(streams::get_config)
            .put(streams::ensure)
            .patch(streams::reconfigure)
            .delete(streams::delete),
    );
    route(
        "/streams/{stream}/records",
        get(records::read).post(records::append),
    );
    route("/streams/{stream}/records/tail", get(records::check_tail));
    route(
        "/access-tokens",
        get(account::list_tokens).post(account::issue_token),
    );
    route("/access-tokens/{id}", delete(account::revoke_token));
    route("/collections", get(collections::list));
    route(
        "/collections/{collection}",
        get(collections::get)
            .put(collections::ensure)
            .patch(collections::reconfigure)
            .delete(collections::delete),
    );
    route(
        "/collections/{collection}/records",
        post(collections::write_batch),
    );
    route(
        "/collections/{collection}/records/{id}",
        get(collections::get_record)
            .put(collections::put_record)
            .delete(collections::delete_record),
    );
    route(
        "/collections/{collection}/updated",
        get(collections::updated),
    );
    route("/collections/{collection}/events", get(collections::events));
    route("/updated", get(collections::updated_across));
    route("/consumers", get(consumers::list));
    route(
        "/consumers/{consumer}",
        get(consumers::get)
            .put(consumers::ensure)
            .patch(consumers::reconfigure)
            .delete(consumers::delete),
    );
    route("/consumers/{consumer}/receive", post(consumers::receive));
    route("/consumers/{consumer}/ack", post(consumers::ack));
    route("/consumers/{consumer}/nack", post(consumers::nack));
    route("/consumers/{consumer}/extend", post(consumers::extend));
    route("/consumers/{consumer}/commit", post(consumers::commit));
    route("/metrics", get(account::account_metrics));
    route("/metrics/{basin}", get(account::basin_metrics));
    route("/metrics/{basin}/{stream}", get(account::stream_metrics));
    (router, paths)
}

/// Whether the server is up, and whether it checks tokens.
async fn health(State(state): State<AppState>) -> axum::Json<serde_json::Value> {
    axum::Json(serde_json::json!({ "status": "ok", "auth": state.auth.is_on() }))
}

/// An unknown path is `404` only to a client that could use a known one;
/// without a valid token it is `401` like everything else.
async fn not_found(State(state): State<AppState>, headers: HeaderMap) -> ApiError {
    if let Err(err) = state.auth.authenticate(&headers, &state.engine) {
        return err;
    }
    ApiError::new(StatusCode::NOT_FOUND, "not_found", "no such endpoint")
}

async fn method_not_allowed(State(state): State<AppState>, headers: HeaderMap) -> ApiError {
    if let Err(err) = state.auth.authenticate(&headers, &state.engine) {
        return err;
    }
    ApiError::method_not_allowed()
}
