//! `PUT`: create a stream (with content, closed or not), or confirm the
//! one there.

use axum::body::{Body, Bytes};
use axum::extract::{OriginalUri, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};

use super::headers;
use super::shared::{
    bad_request, conflict, describe, engine_error, fail, stream_name, Failure, Reply,
};
use crate::api::auth::Principal;
use crate::api::extract::{read_body, Path};
use crate::api::shared::{detached, AppState};
use crate::engine::durable_streams::meta::DEFAULT_CONTENT_TYPE;
use crate::engine::durable_streams::{Creation, Settings, MAX_MESSAGE_BYTES};
use crate::wire::durable_streams::json_messages;

pub async fn put(
    State(state): State<AppState>,
    principal: Principal,
    Path(path): Path<String>,
    OriginalUri(uri): OriginalUri,
    request_headers: HeaderMap,
    body: Body,
) -> Response {
    let reply: Reply = async {
        let name = stream_name(&principal, path)?;
        if request_headers.contains_key(headers::FORKED_FROM) {
            return Err(fail(
                StatusCode::NOT_IMPLEMENTED,
                "not_implemented",
                "forks are not implemented yet",
            ));
        }
        let settings = Settings {
            content_type: headers::content_type(&request_headers)
                .unwrap_or_else(|| DEFAULT_CONTENT_TYPE.into()),
            expiry: headers::expiry(&request_headers).map_err(bad_request)?,
        };
        let closed = headers::closes(&request_headers);
        let body = read_body(&request_headers, &state, body)
            .await
            .map_err(Failure::from)?;
        let messages = messages(body, settings.is_json())?;
        let engine = state.engine.clone();
        let creation = detached(async move {
            engine
                .durable_streams()
                .create(&name, settings, closed, messages)
                .await
        })
        .await
        .map_err(engine_error)?;
        let (status, stream) = match creation {
            Creation::Created(stream) => (StatusCode::CREATED, stream),
            Creation::Exists(stream) => (StatusCode::OK, stream),
            Creation::Conflict(why) => return Err(conflict(why)),
        };
        let mut response = status.into_response();
        let out = response.headers_mut();
        describe(out, &stream);
        if status == StatusCode::CREATED {
            if let Ok(location) = HeaderValue::from_str(&location(&state, &request_headers, &uri)) {
                out.insert(header::LOCATION, location);
            }
        }
        Ok(response)
    }
    .await;
    reply.unwrap_or_else(IntoResponse::into_response)
}

/// The stream's absolute URL, from the `Host` the client used.
fn location(state: &AppState, request_headers: &HeaderMap, uri: &axum::http::Uri) -> String {
    let host = request_headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .or(uri.authority().map(|a| a.as_str()))
        .unwrap_or("localhost");
    let scheme = if state.tls { "https" } else { "http" };
    format!("{scheme}://{host}{}", uri.path())
}

/// The records an append's body becomes: in JSON mode its messages (a
/// top-level array flattened one level), else its bytes, cut into
/// records S2 can hold.
pub(super) fn messages(body: Bytes, json: bool) -> Result<Vec<Bytes>, Failure> {
    if !json {
        let mut pieces = Vec::with_capacity(body.len().div_ceil(MAX_MESSAGE_BYTES));
        let mut rest = body;
        while !rest.is_empty() {
            let piece = rest.split_to(rest.len().min(MAX_MESSAGE_BYTES));
            pieces.push(piece);
        }
        return Ok(pieces);
    }
    if body.is_empty() {
        return Ok(Vec::new());
    }
    let messages = json_messages(&body).map_err(|e| bad_request(format!("invalid JSON: {e}")))?;
    if messages.iter().any(|m| m.len() > MAX_MESSAGE_BYTES) {
        return Err(fail(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
            format!("a JSON message may be at most {MAX_MESSAGE_BYTES} bytes"),
        ));
    }
    Ok(messages)
}
