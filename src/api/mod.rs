//! The HTTP API: thin axum handlers over the [`Engine`].
//!
//! Handlers parse and validate the request shape, call one engine method,
//! and render the result; everything about streams lives in the engine.
//! Every routed request passes the authorization layer ([`auth`]) first.

pub mod access_log;
mod account;
pub mod admission;
pub mod auth;
mod basins;
mod collections;
mod console;
mod consumers;
pub mod durable_streams;
pub mod error;
mod extract;
mod metric_sets;
mod observe;
mod records;
mod s2s;
mod shared;
mod sinks;
mod sources;
mod sse;
mod streams;

use std::sync::Arc;
use std::time::Duration;

use axum::extract::DefaultBodyLimit;
use axum::extract::State;
use axum::handler::Handler;
use axum::http::{HeaderMap, Method, StatusCode};
use axum::routing::{get, on, MethodFilter};
use axum::Router;

use crate::engine::Engine;
pub use access_log::AccessLog;
pub use admission::SessionLimits;
pub use auth::Auth;
use error::ApiError;
pub use shared::AppState;
pub use shared::DEFAULT_MAX_BODY_BYTES;

/// How long a unary request's body may take to arrive, by default.
pub const DEFAULT_BODY_READ_TIMEOUT: Duration = Duration::from_secs(60);

/// What the router is built with.
#[derive(Clone)]
pub struct ApiConfig {
    /// A unary request whose body has not fully arrived within this gets
    /// `408` (sessions stream their bodies and are not bound by it).
    pub body_read_timeout: Duration,
    /// A session whose client takes nothing for this long is cut off.
    pub write_stall_timeout: Duration,
    /// A unary request's body may be at most this (`413`).
    pub max_body_bytes: usize,
    pub auth: Auth,
    pub sessions: SessionLimits,
    /// The level every request is logged at.
    pub access_log: AccessLog,
    /// The sinks' workers, whose status `GET /v1/sinks/{name}` shows.
    pub sinks: Arc<crate::sinks::SinkRuntime>,
    /// The sources' pollers, whose status `GET /v1/sources/{name}` shows.
    pub sources: Arc<crate::sources::SourceRuntime>,
    /// The server speaks TLS (the URLs it gives out are `https://`).
    pub tls: bool,
    /// How long a Durable Streams long poll waits for records.
    pub durable_streams_long_poll: Duration,
}

/// How long a Durable Streams long poll waits, by default.
pub const DEFAULT_DURABLE_STREAMS_LONG_POLL: Duration = Duration::from_secs(30);

impl Default for ApiConfig {
    fn default() -> Self {
        Self {
            body_read_timeout: DEFAULT_BODY_READ_TIMEOUT,
            write_stall_timeout: Duration::from_secs(60),
            max_body_bytes: DEFAULT_MAX_BODY_BYTES,
            auth: Auth::Off,
            sessions: SessionLimits::default(),
            access_log: AccessLog::default(),
            sinks: Arc::default(),
            sources: Arc::default(),
            tls: false,
            durable_streams_long_poll: DEFAULT_DURABLE_STREAMS_LONG_POLL,
        }
    }
}

/// The router: every route of [`routes`] and `/health`, behind the
/// authorization layer.
pub fn router(engine: Arc<Engine>, config: ApiConfig) -> Router {
    routers(engine, config).0
}

/// [`router`], and a router that serves only `/metrics`, without a token
/// (for `--metrics-listen`, an address only the scraper reaches).
pub fn routers(engine: Arc<Engine>, config: ApiConfig) -> (Router, Router) {
    let state = AppState {
        engine,
        body_read_timeout: config.body_read_timeout,
        write_stall_timeout: config.write_stall_timeout,
        max_body_bytes: config.max_body_bytes,
        auth: config.auth,
        admission: admission::Admission::new(config.sessions),
        sinks: config.sinks,
        sources: config.sources,
        tls: config.tls,
        durable_streams_long_poll: config.durable_streams_long_poll,
    };
    let max_body_bytes = state.max_body_bytes;
    let access_log = config.access_log;
    let (v1, _) = v1_routes();
    let app = Router::new()
        .nest("/v1", v1)
        .route("/health", get(health))
        .route("/ready", get(ready))
        .route("/openapi.json", get(openapi))
        .route("/metrics", get(observe::scrape))
        .route("/", get(console::index))
        .route("/console", get(console::index))
        .route("/console/", get(console::index))
        .route("/console/{file}", get(console::asset))
        // Only matched routes pass through it; the fallbacks check
        // the token themselves.
        .route_layer(axum::middleware::from_fn_with_state(
            state.clone(),
            auth::authorize,
        ))
        .route_layer(axum::middleware::from_fn_with_state(
            state.clone(),
            observe::note_route,
        ))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(max_body_bytes))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            observe::count,
        ))
        .layer(axum::middleware::from_fn(durable_streams::browser_headers))
        // Outermost: every request is logged, refused ones too.
        .layer(axum::middleware::from_fn(move |request, next| {
            access_log::record(access_log, request, next)
        }))
        .with_state(state.clone());
    let metrics_only = Router::new()
        .route("/metrics", get(observe::scrape))
        .with_state(state);
    (app, metrics_only)
}

/// Every route the router serves, as `(method, path)`, `/health`
/// included. The access matrix test walks these, so that no route escapes
/// it.
pub fn routes() -> Vec<(Method, String)> {
    let (_, routes) = v1_routes();
    let mut all: Vec<(Method, String)> = routes
        .into_iter()
        .map(|(method, path)| (method, format!("/v1{path}")))
        .collect();
    all.push((Method::GET, "/health".into()));
    all.push((Method::GET, "/ready".into()));
    all.push((Method::GET, "/openapi.json".into()));
    all.push((Method::GET, "/metrics".into()));
    for console in ["/", "/console", "/console/", "/console/{file}"] {
        all.push((Method::GET, console.into()));
    }
    all
}

/// The OpenAPI document of what Rill adds to S2 (`docs/openapi.json`; a
/// test checks it against [`routes`]).
pub const OPENAPI: &str = include_str!("../../docs/openapi.json");

async fn openapi() -> impl axum::response::IntoResponse {
    (
        [(axum::http::header::CONTENT_TYPE, "application/json")],
        OPENAPI,
    )
}

/// The `/v1` routes, one per method, each with an access policy.
fn v1_routes() -> (Router<AppState>, Vec<(Method, &'static str)>) {
    use Method as M;
    let routes = Routes::default()
        .add(M::GET, "/basins", basins::list)
        .add(M::POST, "/basins", basins::create)
        .add(M::GET, "/basins/{basin}", basins::get_config)
        .add(M::PUT, "/basins/{basin}", basins::ensure)
        .add(M::PATCH, "/basins/{basin}", basins::reconfigure)
        .add(M::DELETE, "/basins/{basin}", basins::delete)
        .add(M::GET, "/streams", streams::list)
        .add(M::POST, "/streams", streams::create)
        .add(M::GET, "/streams/{stream}", streams::get_config)
        .add(M::PUT, "/streams/{stream}", streams::ensure)
        .add(M::PATCH, "/streams/{stream}", streams::reconfigure)
        .add(M::DELETE, "/streams/{stream}", streams::delete)
        .add(M::GET, "/streams/{stream}/records", records::read)
        .add(M::POST, "/streams/{stream}/records", records::append)
        .add(
            M::GET,
            "/streams/{stream}/records/tail",
            records::check_tail,
        )
        .add(M::GET, "/access-tokens", account::list_tokens)
        .add(M::POST, "/access-tokens", account::issue_token)
        .add(M::DELETE, "/access-tokens/{id}", account::revoke_token)
        .add(M::GET, "/collections", collections::list)
        .add(M::GET, "/collections/{collection}", collections::get)
        .add(M::PUT, "/collections/{collection}", collections::ensure)
        .add(
            M::PATCH,
            "/collections/{collection}",
            collections::reconfigure,
        )
        .add(M::DELETE, "/collections/{collection}", collections::delete)
        .add(
            M::POST,
            "/collections/{collection}/records",
            collections::write_batch,
        )
        .add(
            M::GET,
            "/collections/{collection}/records/{id}",
            collections::get_record,
        )
        .add(
            M::PUT,
            "/collections/{collection}/records/{id}",
            collections::put_record,
        )
        .add(
            M::DELETE,
            "/collections/{collection}/records/{id}",
            collections::delete_record,
        )
        .add(
            M::GET,
            "/collections/{collection}/updated",
            collections::updated,
        )
        .add(
            M::GET,
            "/collections/{collection}/events",
            collections::events,
        )
        .add(M::GET, "/updated", collections::updated_across)
        .add(M::GET, "/consumers", consumers::list)
        .add(M::GET, "/consumers/{consumer}", consumers::get)
        .add(M::PUT, "/consumers/{consumer}", consumers::ensure)
        .add(M::PATCH, "/consumers/{consumer}", consumers::reconfigure)
        .add(M::DELETE, "/consumers/{consumer}", consumers::delete)
        .add(M::POST, "/consumers/{consumer}/receive", consumers::receive)
        .add(M::POST, "/consumers/{consumer}/ack", consumers::ack)
        .add(M::POST, "/consumers/{consumer}/nack", consumers::nack)
        .add(M::POST, "/consumers/{consumer}/extend", consumers::extend)
        .add(M::POST, "/consumers/{consumer}/commit", consumers::commit)
        .add(M::POST, "/consumers/{consumer}/reject", consumers::reject)
        .add(M::POST, "/consumers/{consumer}/replay", consumers::replay)
        .add(M::GET, "/sinks", sinks::list)
        .add(M::GET, "/sinks/{sink}", sinks::get)
        .add(M::PUT, "/sinks/{sink}", sinks::ensure)
        .add(M::PATCH, "/sinks/{sink}", sinks::reconfigure)
        .add(M::DELETE, "/sinks/{sink}", sinks::delete)
        .add(M::POST, "/sinks/{sink}/pause", sinks::pause)
        .add(M::POST, "/sinks/{sink}/resume", sinks::resume)
        .add(M::GET, "/sources", sources::list)
        .add(M::GET, "/sources/{source}", sources::get)
        .add(M::PUT, "/sources/{source}", sources::ensure)
        .add(M::DELETE, "/sources/{source}", sources::delete)
        .add(M::PUT, "/stream/{*path}", durable_streams::put)
        .add(M::POST, "/stream/{*path}", durable_streams::post)
        .add(M::GET, "/stream/{*path}", durable_streams::get)
        .add(M::DELETE, "/stream/{*path}", durable_streams::delete)
        .add(M::OPTIONS, "/stream/{*path}", durable_streams::preflight)
        .add(M::GET, "/metrics", metric_sets::account_metrics)
        .add(M::GET, "/metrics/{basin}", metric_sets::basin_metrics)
        .add(
            M::GET,
            "/metrics/{basin}/{stream}",
            metric_sets::stream_metrics,
        );
    (routes.router, routes.list)
}

/// Builds the router one route at a time, refusing (at build time, so
/// any test shows it) a route without an access policy.
#[derive(Default)]
struct Routes {
    router: Router<AppState>,
    list: Vec<(Method, &'static str)>,
}

impl Routes {
    fn add<H, T>(mut self, method: Method, path: &'static str, handler: H) -> Self
    where
        H: Handler<T, AppState>,
        T: 'static,
    {
        assert!(
            auth::policy(&method, &format!("/v1{path}")).is_some(),
            "route {method} /v1{path} has no access policy"
        );
        let filter = MethodFilter::try_from(method.clone()).expect("a standard method");
        self.router = self.router.route(path, on(filter, handler));
        self.list.push((method, path));
        self
    }
}

/// Whether the server is up (always, if it answers), whether it can make
/// writes durable, and whether it checks tokens.
async fn health(State(state): State<AppState>) -> axum::Json<serde_json::Value> {
    let failure = state.engine.streams().write_failure();
    axum::Json(serde_json::json!({
        "status": "ok",
        "auth": state.auth.is_on(),
        "writable": failure.is_none(),
        "storage_error": failure.map(|e| e.to_string()),
        "storage_restarts": state.engine.restarts(),
    }))
}

/// Ready to take writes: `200`, or `503 not_ready` while writes cannot be
/// made durable (a full disk, a failed fsync), so that a load balancer
/// stops sending writes until the engine has reopened its storage.
async fn ready(State(state): State<AppState>) -> Result<axum::Json<serde_json::Value>, ApiError> {
    match state.engine.streams().write_failure() {
        None => Ok(axum::Json(serde_json::json!({ "status": "ready" }))),
        Some(failure) => Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "not_ready",
            format!("writes cannot be made durable: {failure}"),
        )),
    }
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
