//! `GET`: catch-up reads and long polls; SSE is `sse.rs`.

use std::time::Duration;

use axum::extract::{RawQuery, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};

use super::cursor;
use super::headers;
use super::shared::{bad_request, engine_error, fail, no_store, open, stream_name, Failure, Reply};
use super::sse;
use crate::api::admission::SessionKind;
use crate::api::auth::Principal;
use crate::api::extract::Path;
use crate::api::shared::AppState;
use crate::engine::durable_streams::{Chunk, DurableStream};
use crate::engine::error::EngineError;
use crate::wire::durable_streams::{body, offset, parse_offset, Offset};

/// The query of a read. Unknown parameters are ignored, as the protocol
/// asks; one given twice is refused.
#[derive(Default)]
struct ReadQuery {
    offset: Option<String>,
    live: Option<String>,
    cursor: Option<String>,
}

impl ReadQuery {
    fn parse(raw: Option<&str>) -> Result<Self, Failure> {
        let mut query = Self::default();
        for (key, value) in form_urlencoded::parse(raw.unwrap_or("").as_bytes()) {
            let slot = match key.as_ref() {
                "offset" => &mut query.offset,
                "live" => &mut query.live,
                "cursor" => &mut query.cursor,
                _ => continue,
            };
            if slot.replace(value.into_owned()).is_some() {
                return Err(bad_request(format!("`{key}` is given more than once")));
            }
        }
        Ok(query)
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Live {
    No,
    LongPoll,
    Sse,
}

/// `GET`, and `HEAD` (which axum routes here).
pub async fn get(
    State(state): State<AppState>,
    principal: Principal,
    Path(path): Path<String>,
    method: Method,
    RawQuery(raw): RawQuery,
    request_headers: HeaderMap,
) -> Response {
    if method == Method::HEAD {
        return super::admin::head(state, principal, path).await;
    }
    let reply: Reply = async {
        let name = stream_name(&principal, path)?;
        let query = ReadQuery::parse(raw.as_deref())?;
        let start = match &query.offset {
            None => None,
            Some(text) => Some(parse_offset(text).ok_or_else(|| {
                bad_request(format!("{text:?} is not an offset this server gave"))
            })?),
        };
        let live = match query.live.as_deref() {
            None => Live::No,
            Some("long-poll") => Live::LongPoll,
            Some("sse") => Live::Sse,
            Some(other) => {
                return Err(bad_request(format!(
                    "live must be long-poll or sse, not {other:?}"
                )))
            }
        };
        if live != Live::No && start.is_none() {
            return Err(bad_request("a live read needs an offset"));
        }
        let stream = open(&state, &name, true).await?;
        let visible = stream.visible();
        let from = match start {
            None | Some(Offset::Start) => visible.trim_point,
            Some(Offset::Now) => visible.tail.seq_num,
            Some(Offset::At(seq)) if seq > visible.tail.seq_num => {
                return Err(bad_request("the offset is beyond the stream's tail"))
            }
            Some(Offset::At(seq)) if seq < visible.trim_point => {
                return Err(gone(visible.trim_point))
            }
            Some(Offset::At(seq)) => seq,
        };
        let echoed = query.cursor.as_deref();
        match live {
            Live::Sse => {
                let permit = state
                    .admission
                    .admit(SessionKind::Read, &principal)
                    .map_err(Failure::from)?;
                Ok(sse::respond(&state, stream, from, echoed, permit))
            }
            Live::LongPoll => long_poll(&state, &principal, &stream, from, echoed).await,
            Live::No if start == Some(Offset::Now) => Ok(at_now(&stream)),
            Live::No => {
                let chunk = read(&state, &stream, from, Duration::ZERO).await?;
                Ok(chunk_response(
                    &state,
                    &stream,
                    from,
                    &chunk,
                    &request_headers,
                    None,
                ))
            }
        }
    }
    .await;
    reply.unwrap_or_else(IntoResponse::into_response)
}

async fn read(
    state: &AppState,
    stream: &DurableStream,
    from: u64,
    wait: Duration,
) -> Result<Chunk, Failure> {
    match state
        .engine
        .durable_streams()
        .read(stream, from, wait)
        .await
    {
        Ok(chunk) => Ok(chunk),
        // Trimmed (an S2 retention policy) while we read.
        Err(EngineError::CursorExpired(trim_point)) => Err(gone(trim_point)),
        Err(err) => Err(engine_error(err)),
    }
}

fn gone(trim_point: u64) -> Failure {
    fail(
        StatusCode::GONE,
        "offset_gone",
        format!(
            "the stream's records before offset {} are gone",
            offset(trim_point)
        ),
    )
}

/// `offset=now`, not live: nothing, and where the tail is.
fn at_now(stream: &DurableStream) -> Response {
    let visible = stream.visible();
    let empty = if stream.settings.is_json() { "[]" } else { "" };
    let mut response = empty.into_response();
    let out = response.headers_mut();
    headers::set(out, "content-type", &stream.settings.content_type);
    headers::set(out, headers::NEXT_OFFSET, offset(visible.tail.seq_num));
    headers::set(out, headers::UP_TO_DATE, "true");
    if visible.closed {
        headers::set(out, headers::CLOSED, "true");
    }
    no_store(out);
    response
}

/// Waits for records past `from` (the tail, usually) for up to the
/// server's long-poll timeout: `200` with them, or `204`.
async fn long_poll(
    state: &AppState,
    principal: &Principal,
    stream: &DurableStream,
    from: u64,
    echoed: Option<&str>,
) -> Reply {
    let visible = stream.visible();
    // A closed stream at its end has nothing to wait for.
    let wait = if visible.closed {
        Duration::ZERO
    } else {
        state.durable_streams_long_poll
    };
    let _permit = if wait.is_zero() {
        None
    } else {
        Some(
            state
                .admission
                .admit(SessionKind::LongPoll, principal)
                .map_err(Failure::from)?,
        )
    };
    let chunk = read(state, stream, from, wait).await?;
    let cursor = cursor::next(echoed).to_string();
    if chunk.records.is_empty() {
        let mut response = StatusCode::NO_CONTENT.into_response();
        let out = response.headers_mut();
        headers::set(out, headers::NEXT_OFFSET, offset(chunk.next));
        headers::set(out, headers::UP_TO_DATE, "true");
        if chunk.at_end() {
            headers::set(out, headers::CLOSED, "true");
        } else {
            headers::set(out, headers::CURSOR, cursor);
        }
        no_store(out);
        return Ok(response);
    }
    let no_headers = HeaderMap::new();
    Ok(chunk_response(
        state,
        stream,
        from,
        &chunk,
        &no_headers,
        Some(cursor),
    ))
}

/// A chunk of records as a `200` (or `304`, if the client holds it).
fn chunk_response(
    state: &AppState,
    stream: &DurableStream,
    from: u64,
    chunk: &Chunk,
    request_headers: &HeaderMap,
    cursor: Option<String>,
) -> Response {
    // The same chunk of the same stream is the same bytes; its closure
    // changes the answer (`Stream-Closed`), so it changes the tag.
    let closed = if chunk.at_end() { ":c" } else { "" };
    let etag = format!("\"{}:{}:{}{closed}\"", stream.id, from, chunk.next);
    let held = request_headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|tags| tags.split(',').any(|tag| tag.trim() == etag));
    let mut response = if held {
        StatusCode::NOT_MODIFIED.into_response()
    } else {
        body(&chunk.records, stream.settings.is_json()).into_response()
    };
    let out = response.headers_mut();
    headers::set(out, "content-type", &stream.settings.content_type);
    headers::set(out, header::ETAG.as_str(), etag);
    headers::set(out, headers::NEXT_OFFSET, offset(chunk.next));
    if chunk.up_to_date() {
        headers::set(out, headers::UP_TO_DATE, "true");
    }
    if chunk.at_end() {
        headers::set(out, headers::CLOSED, "true");
    }
    if let Some(cursor) = cursor {
        headers::set(out, headers::CURSOR, cursor);
    }
    let cache = if chunk.records.is_empty() {
        // Nothing yet: a cached copy would hide what comes next.
        "no-store"
    } else if state.auth.is_on() {
        "private, max-age=60, stale-while-revalidate=300"
    } else {
        "public, max-age=60, stale-while-revalidate=300"
    };
    out.insert(header::CACHE_CONTROL, HeaderValue::from_static(cache));
    response
}
