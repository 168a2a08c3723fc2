//! `PUT`: create a stream (with content, closed or not), or confirm the
//! one there.

use axum::body::{Body, Bytes};
use axum::extract::{OriginalUri, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};

use super::headers;
use super::shared::{
    bad_request, conflict, describe, engine_error, fail, stream_name, Failure, Reply, PREFIX,
};
use crate::api::auth::{Principal, Resource};
use crate::api::extract::{read_body, Path};
use crate::api::shared::{detached, AppState};
use crate::engine::durable_streams::meta::DEFAULT_CONTENT_TYPE;
use crate::engine::durable_streams::{
    CreateRequest, Creation, ForkRequest, MAX_MESSAGES, MAX_MESSAGE_BYTES,
};
use crate::engine::streams::scope::Operation;
use crate::wire::durable_streams::{char_boundary, json_messages, parse_offset, Offset};

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
        let fork = fork_request(&principal, &request_headers)?;
        let content_type = headers::content_type(&request_headers);
        let expiry = if request_headers.contains_key(headers::TTL)
            || request_headers.contains_key(headers::EXPIRES_AT)
        {
            Some(headers::expiry(&request_headers).map_err(bad_request)?)
        } else {
            None
        };
        let closed = headers::closes(&request_headers);
        let body = read_body(&request_headers, &state, body)
            .await
            .map_err(Failure::from)?;
        // The body is parsed as the stream's content type: the one given,
        // or a fork's source's (which the engine checks again).
        let parsed_as = match (&content_type, &fork) {
            (Some(content_type), _) => content_type.clone(),
            (None, Some(fork)) => state
                .engine
                .durable_streams()
                .open(&fork.source, false)
                .await
                .map_or_else(
                    |_| DEFAULT_CONTENT_TYPE.into(),
                    |source| source.settings.content_type,
                ),
            (None, None) => DEFAULT_CONTENT_TYPE.into(),
        };
        let request = CreateRequest {
            content_type,
            expiry,
            closed,
            initial: messages(body, &parsed_as)?,
            fork,
        };
        let engine = state.engine.clone();
        let creation =
            detached(async move { engine.durable_streams().create(&name, request).await })
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

const JSON: &str = "application/json";

/// `Stream-Forked-From` (a path on this server), `Stream-Fork-Offset` and
/// `Stream-Fork-Sub-Offset`. Making a fork reads its source: it needs
/// `read` on it.
fn fork_request(
    principal: &Principal,
    request_headers: &HeaderMap,
) -> Result<Option<ForkRequest>, Failure> {
    let text = |name: &'static str| {
        request_headers
            .get(name)
            .map(|v| v.to_str().map(str::trim))
            .transpose()
            .map_err(|_| bad_request(format!("{name} is not text")))
    };
    let source = text(headers::FORKED_FROM)?;
    let offset = text(headers::FORK_OFFSET)?;
    let sub_offset = text(headers::FORK_SUB_OFFSET)?;
    let Some(source) = source else {
        if offset.is_some() || sub_offset.is_some() {
            return Err(bad_request(
                "Stream-Fork-Offset and Stream-Fork-Sub-Offset need Stream-Forked-From",
            ));
        }
        return Ok(None);
    };
    let path = source
        .strip_prefix(PREFIX)
        .unwrap_or(source.trim_start_matches('/'));
    let path = percent_encoding::percent_decode_str(path)
        .decode_utf8()
        .map_err(|_| bad_request("Stream-Forked-From is not a UTF-8 path"))?;
    let source = stream_name(principal, path.into_owned())?;
    principal
        .require(Operation::Read)
        .and_then(|()| principal.check(Resource::Streams, &source))
        .map_err(Failure::from)?;
    let offset = match offset {
        None => None,
        Some(text) => match parse_offset(text) {
            Some(Offset::At(seq)) => Some(seq),
            _ => {
                return Err(bad_request(format!(
                    "Stream-Fork-Offset {text:?} is not an offset this server gave"
                )))
            }
        },
    };
    let sub_offset = match sub_offset {
        None => 0,
        Some(text) => headers::plain_integer(text).ok_or_else(|| {
            bad_request(format!(
                "Stream-Fork-Sub-Offset must be a plain non-negative integer, got {text:?}"
            ))
        })?,
    };
    if sub_offset > 0 && offset.is_none() {
        return Err(bad_request(
            "Stream-Fork-Sub-Offset needs Stream-Fork-Offset",
        ));
    }
    Ok(Some(ForkRequest {
        source: source.to_string(),
        offset,
        sub_offset,
    }))
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
/// records S2 can hold (between characters, for `text/*`).
pub(super) fn messages(body: Bytes, content_type: &str) -> Result<Vec<Bytes>, Failure> {
    let too_large = |what: String| fail(StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large", what);
    if content_type != JSON {
        let text = content_type.starts_with("text/");
        let mut pieces = Vec::with_capacity(body.len().div_ceil(MAX_MESSAGE_BYTES));
        let mut rest = body;
        while !rest.is_empty() {
            let cut = if text {
                char_boundary(&rest, MAX_MESSAGE_BYTES)
            } else {
                rest.len().min(MAX_MESSAGE_BYTES)
            };
            pieces.push(rest.split_to(cut));
        }
        return Ok(pieces);
    }
    if body.is_empty() {
        return Ok(Vec::new());
    }
    let messages = json_messages(&body).map_err(|e| bad_request(format!("invalid JSON: {e}")))?;
    if messages.len() > MAX_MESSAGES {
        return Err(too_large(format!(
            "an append may hold at most {MAX_MESSAGES} JSON messages"
        )));
    }
    if messages.iter().any(|m| m.len() > MAX_MESSAGE_BYTES) {
        return Err(too_large(format!(
            "a JSON message may be at most {MAX_MESSAGE_BYTES} bytes"
        )));
    }
    Ok(messages)
}
