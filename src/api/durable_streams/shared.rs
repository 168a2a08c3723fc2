//! What the handlers share: the answers of failures, the stream a path
//! names, and the headers that describe a stream.

use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};

use super::headers;
use crate::api::auth::Principal;
use crate::api::error::ApiError;
use crate::api::shared::AppState;
use crate::engine::durable_streams::DurableStream;
use crate::engine::error::EngineError;
use crate::engine::streams::names::StreamName;
use crate::wire::durable_streams::offset;

/// Where the protocol is served.
pub const PREFIX: &str = "/v1/stream/";

/// A handler's answer.
pub(super) type Reply = Result<Response, Failure>;

/// A request that failed: Rill's `{"code", "message"}`, and the headers
/// the protocol adds to it (`Stream-Closed`, `Producer-Epoch`, …).
pub(super) struct Failure {
    error: ApiError,
    headers: Vec<(&'static str, String)>,
}

impl Failure {
    pub(super) fn with(mut self, name: &'static str, value: impl ToString) -> Self {
        self.headers.push((name, value.to_string()));
        self
    }
}

impl From<ApiError> for Failure {
    fn from(error: ApiError) -> Self {
        Self {
            error,
            headers: Vec::new(),
        }
    }
}

impl IntoResponse for Failure {
    fn into_response(self) -> Response {
        let mut response = self.error.into_response();
        for (name, value) in self.headers {
            headers::set(response.headers_mut(), name, value);
        }
        response
    }
}

pub(super) fn fail(status: StatusCode, code: &'static str, message: impl Into<String>) -> Failure {
    ApiError::new(status, code, message).into()
}

pub(super) fn bad_request(message: impl Into<String>) -> Failure {
    fail(StatusCode::BAD_REQUEST, "bad_request", message)
}

pub(super) fn conflict(message: impl Into<String>) -> Failure {
    fail(StatusCode::CONFLICT, "conflict", message)
}

/// An engine error as the protocol answers it.
pub(super) fn engine_error(err: EngineError) -> Failure {
    match err {
        EngineError::StreamNotFound(name) | EngineError::BasinNotFound(name) => fail(
            StatusCode::NOT_FOUND,
            "stream_not_found",
            format!("no stream at {name:?}"),
        ),
        // The protocol's word for a request it cannot take (a fork
        // offset past the tail, …) is 400.
        EngineError::Invalid(why) => bad_request(why),
        EngineError::StreamExists(name) => conflict(format!("a stream {name:?} exists")),
        other => ApiError::from(other).into(),
    }
}

/// The stream name a path names, for this principal; the protocol's
/// reserved `__ds` paths answer `501`.
pub(super) fn stream_name(principal: &Principal, path: String) -> Result<StreamName, Failure> {
    if path == "__ds" || path.starts_with("__ds/") {
        return Err(fail(
            StatusCode::NOT_IMPLEMENTED,
            "not_implemented",
            "the Durable Streams subscription APIs are not implemented",
        ));
    }
    StreamName::parse(principal.stream_name(path))
        .map_err(|err| bad_request(format!("not a stream path: {err}")))
}

/// Opens the stream for a request; `touch`: the request counts as a read
/// or write for a sliding TTL.
pub(super) async fn open(
    state: &AppState,
    name: &str,
    touch: bool,
) -> Result<DurableStream, Failure> {
    state
        .engine
        .durable_streams()
        .open(name, touch)
        .await
        .map_err(engine_error)
}

/// What `HEAD` and creation answers say of a stream.
pub(super) fn describe(out: &mut HeaderMap, stream: &DurableStream) {
    use crate::engine::durable_streams::Expiry;
    let visible = stream.visible();
    headers::set(out, "content-type", &stream.settings.content_type);
    headers::set(out, headers::NEXT_OFFSET, offset(visible.tail.seq_num));
    match stream.settings.expiry {
        Expiry::Never => {}
        Expiry::Ttl(secs) => headers::set(out, headers::TTL, secs),
        Expiry::At(ms) => headers::set(out, headers::EXPIRES_AT, crate::wire::json::rfc3339(ms)),
    }
    if visible.closed {
        headers::set(out, headers::CLOSED, "true");
    }
}

pub(super) fn no_store(out: &mut HeaderMap) {
    out.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
}
