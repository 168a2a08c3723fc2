//! `GET /metrics` (Prometheus text), and the counting of every request.
//!
//! Requests are counted by the route they matched (its template, such as
//! `/v1/streams/{stream}/records`, never the path itself, which would give
//! every stream a series of its own), their method and status; error
//! answers also by their stable `code`. The route is only known inside the
//! router, so a layer there notes it on the response, where the outer
//! layer, which sees every answer, refusals included, picks it up.

use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::http::header::CONTENT_TYPE;
use axum::http::Method;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::auth::policy;
use super::error::ErrorCode;
use super::extract::basin_from_headers;
use super::shared::AppState;
use crate::engine::streams::scope::Operation as Op;
use crate::metrics::usage::{Series, ACCOUNT};
use crate::metrics::{Snapshot, CONTENT_TYPE as METRICS_CONTENT_TYPE};

/// The route a response answered, set by [`note_route`].
#[derive(Clone, Debug)]
struct Route(MatchedPath);

/// Every figure, the state ones read now.
pub async fn scrape(State(state): State<AppState>) -> Response {
    let [read_sessions, append_sessions, long_polls] = state.admission.open();
    // A directory walk of the data: off the async workers.
    let engine = state.engine.clone();
    let storage_bytes = tokio::task::spawn_blocking(move || engine.storage_bytes())
        .await
        .unwrap_or(None);
    // A cluster follower's replica: the consumers' figures are the
    // owner's to give.
    let consumers = match state.engine.is_replica() {
        true => Vec::new(),
        false => state.engine.consumers().samples().await,
    };
    let snapshot = Snapshot {
        read_sessions,
        append_sessions,
        long_polls,
        storage_bytes,
        writable: state.engine.streams().write_failure().is_none(),
        consumers,
    };
    // Rendering reads /proc (the process figures): off the async workers too.
    let engine = state.engine.clone();
    let text = tokio::task::spawn_blocking(move || engine.metrics().render(&snapshot))
        .await
        .unwrap_or_default();
    ([(CONTENT_TYPE, METRICS_CONTENT_TYPE)], text).into_response()
}

/// Inside the router: notes the matched route on the response, and
/// counts a request that succeeded as an operation of S2's `account-ops`
/// or `basin-ops` sets (see [`Operation`]).
pub async fn note_route(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let route = request.extensions().get::<MatchedPath>().cloned();
    let operation = route
        .as_ref()
        .and_then(|route| Operation::of(request.method(), route.as_str(), request.headers()));
    let mut response = next.run(request).await;
    if let (Some(operation), true) = (operation, response.status().is_success()) {
        operation.count(&state);
    }
    if let Some(route) = route {
        response.extensions_mut().insert(Route(route));
    }
    response
}

/// A request S2 meters as an account or basin operation, named as its
/// access policy names it. Appends and reads are not among them: the
/// engine counts those (`append-ops`, `read-ops`).
enum Operation {
    Account(&'static str),
    Basin(String, &'static str),
}

impl Operation {
    /// Looked at before the request runs, and only for routes that are
    /// operations: an append pays nothing for it.
    fn of(method: &Method, route: &str, headers: &axum::http::HeaderMap) -> Option<Self> {
        let first = *policy(method, route)?.ops.first()?; // none: a public route
        if matches!(first, Op::Append | Op::Read) || route == "/metrics" {
            return None;
        }
        let account_route = ["/v1/basins", "/v1/access-tokens", "/v1/metrics"]
            .iter()
            .any(|prefix| route.starts_with(prefix));
        if account_route {
            return Some(Self::Account(first.name()));
        }
        let basin = basin_from_headers(headers).ok()?;
        Some(Self::Basin(basin, first.name()))
    }

    /// Counted only once it succeeded, so that a made-up basin name never
    /// gets a series.
    fn count(self, state: &AppState) {
        let usage = &state.engine.metrics().usage;
        match self {
            Self::Account(name) => usage.count(ACCOUNT, Series::account_op(name), 1),
            Self::Basin(basin, name) => usage.count(&basin, Series::basin_op(name), 1),
        }
    }
}

/// The method as a label: one of the standard ones, or `other`. Any token
/// is a valid method, and a label per made-up method would give a client
/// without a token a way to grow the server's memory.
fn method_label(method: &Method) -> &'static str {
    match *method {
        Method::GET => "GET",
        Method::HEAD => "HEAD",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::PATCH => "PATCH",
        Method::DELETE => "DELETE",
        Method::OPTIONS => "OPTIONS",
        _ => "other",
    }
}

/// Outside the router: counts the request once its response began.
pub async fn count(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let started = Instant::now();
    let method = method_label(request.method());
    let response = next.run(request).await;
    let http = &state.engine.metrics().http;
    let route = response
        .extensions()
        .get::<Route>()
        .map_or("unmatched", |route| route.0.as_str());
    http.requests
        .with_label_values(&[method, route, response.status().as_str()])
        .inc();
    http.durations
        .with_label_values(&[method, route])
        .observe(started.elapsed().as_secs_f64());
    if let Some(ErrorCode(code)) = response.extensions().get::<ErrorCode>() {
        http.errors.with_label_values(&[code]).inc();
    }
    response
}
