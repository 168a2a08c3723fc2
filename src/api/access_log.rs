//! One log line per request: method, path, status and how long until the
//! response began (for a session, how long it took to open, not how long
//! it lasted). At `debug` level on the `rill::access` target, so
//! `RUST_LOG=rill::access=debug` shows them; `rill serve --access-log`
//! writes them at `info`, where the default log level shows them.
//!
//! The query string is left out: it may carry cursors and positions that
//! say more about a user's data than an operator's log needs.

use std::time::Instant;

use axum::extract::Request;
use axum::middleware::Next;
use axum::response::Response;

/// Whether every request is logged at `info` (`--access-log`) or `debug`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum AccessLog {
    #[default]
    Debug,
    Info,
}

/// The middleware: serves the request, then logs it.
pub async fn record(level: AccessLog, request: Request, next: Next) -> Response {
    let started = Instant::now();
    let method = request.method().clone();
    let path = request.uri().path().to_owned();
    let response = next.run(request).await;
    let status = response.status().as_u16();
    let ms = started.elapsed().as_secs_f64() * 1000.0;
    match level {
        AccessLog::Info => {
            tracing::info!(target: "rill::access", %method, path, status, ms = format!("{ms:.1}"))
        }
        AccessLog::Debug => {
            tracing::debug!(target: "rill::access", %method, path, status, ms = format!("{ms:.1}"))
        }
    }
    response
}
