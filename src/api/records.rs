//! `/v1/streams/{stream}/records`: append and read, unary (JSON or
//! protobuf) or as a session (SSE, or S2S framed protobuf), and check-tail.

use std::time::Duration;

use axum::body::Body;
use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;

use super::admission::{SessionKind, SessionPermit};
use super::auth::{GuardedSession, Principal, StreamPath};
use super::error::{ApiError, ApiResult};
use super::extract::{read_body, Basin, Query, RecordFormat};
use super::s2s;
use super::shared::AppState;
use super::sse::{self, SessionResume};
use crate::engine::streams::types::{ReadLimits, ReadStart};
use crate::engine::streams::ReadRequest;
use crate::wire::json::{self, Ack, Batch, TailResponse};

/// The body formats of the records endpoints, by `Content-Type`/`Accept`.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Encoding {
    Json,
    Proto,
    Session,
}

/// Whether any value of header `name` contains `needle` (case-insensitive).
pub(super) fn header_has(headers: &HeaderMap, name: header::HeaderName, needle: &str) -> bool {
    headers
        .get_all(name)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| v.to_ascii_lowercase().contains(needle))
}

fn request_encoding(headers: &HeaderMap) -> Encoding {
    if header_has(headers, header::CONTENT_TYPE, "s2s/proto") {
        Encoding::Session
    } else if header_has(headers, header::CONTENT_TYPE, "protobuf") {
        Encoding::Proto
    } else {
        Encoding::Json
    }
}

/// Protobuf if the client asks for it, or sent protobuf and did not ask for
/// JSON; JSON otherwise.
fn wants_proto(headers: &HeaderMap) -> bool {
    header_has(headers, header::ACCEPT, "protobuf")
        || (request_encoding(headers) == Encoding::Proto
            && !header_has(headers, header::ACCEPT, "json"))
}

fn proto_response(message: &impl prost::Message) -> Response {
    (
        [(header::CONTENT_TYPE, "application/protobuf")],
        message.encode_to_vec(),
    )
        .into_response()
}

pub async fn append(
    State(state): State<AppState>,
    principal: Principal,
    Basin(basin): Basin,
    StreamPath(stream): StreamPath,
    RecordFormat(format): RecordFormat,
    headers: HeaderMap,
    body: Body,
) -> ApiResult<Response> {
    let input = match request_encoding(&headers) {
        Encoding::Session => {
            let permit = state.admission.admit(SessionKind::Append, &principal)?;
            let session = state
                .engine
                .streams()
                .append_session(&basin, &stream)
                .await?;
            return Ok(s2s::append_session(
                session,
                principal,
                permit,
                body,
                s2s::response_compression(&headers),
                state.write_stall_timeout,
            ));
        }
        Encoding::Proto => {
            let bytes = read_body(&headers, &state, body).await?;
            crate::wire::proto::decode_append_input(bytes)
                .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, "bad_proto", e))?
        }
        Encoding::Json => {
            let bytes = read_body(&headers, &state, body).await?;
            let input: json::AppendInput = serde_json::from_slice(&bytes)
                .map_err(|e| ApiError::bad_json(format!("invalid append JSON: {e}")))?;
            input.into_engine(format).map_err(ApiError::invalid)?
        }
    };
    principal.check_commands(&input)?;
    let ack = state
        .engine
        .streams()
        .append(&basin, &stream, input)
        .await?;
    if wants_proto(&headers) {
        return Ok(proto_response(&crate::wire::proto::AppendAck::from(ack)));
    }
    Ok(axum::Json(Ack::from(ack)).into_response())
}

pub async fn check_tail(
    State(state): State<AppState>,
    Basin(basin): Basin,
    StreamPath(stream): StreamPath,
) -> ApiResult<axum::Json<TailResponse>> {
    let tail = state.engine.streams().check_tail(&basin, &stream).await?;
    Ok(axum::Json(TailResponse { tail: tail.into() }))
}

#[derive(Debug, Default, Deserialize)]
pub struct ReadParams {
    pub(super) seq_num: Option<u64>,
    pub(super) timestamp: Option<u64>,
    pub(super) tail_offset: Option<u64>,
    pub(super) clamp: Option<bool>,
    pub(super) count: Option<u64>,
    pub(super) bytes: Option<u64>,
    pub(super) until: Option<u64>,
    /// Seconds.
    pub(super) wait: Option<u32>,
}

impl ReadParams {
    pub fn into_request(self) -> ApiResult<ReadRequest> {
        let starts = [
            self.seq_num.map(ReadStart::SeqNum),
            self.timestamp.map(ReadStart::Timestamp),
            self.tail_offset.map(ReadStart::TailOffset),
        ];
        let mut given = starts.into_iter().flatten();
        let start = given.next();
        if given.next().is_some() {
            return Err(ApiError::invalid(
                "only one of seq_num, timestamp, or tail_offset can be provided",
            ));
        }
        Ok(ReadRequest {
            start,
            clamp: self.clamp.unwrap_or(false),
            limits: ReadLimits {
                count: self.count,
                bytes: self.bytes,
                until: self.until,
            },
            wait: self.wait.map(|secs| Duration::from_secs(secs.into())),
        })
    }
}

pub async fn read(
    State(state): State<AppState>,
    principal: Principal,
    Basin(basin): Basin,
    StreamPath(stream): StreamPath,
    RecordFormat(format): RecordFormat,
    Query(params): Query<ReadParams>,
    headers: HeaderMap,
) -> ApiResult<Response> {
    let mut req = params.into_request()?;
    if request_encoding(&headers) == Encoding::Session {
        let permit = state.admission.admit(SessionKind::Read, &principal)?;
        let session = state
            .engine
            .streams()
            .read_session(&basin, &stream, req)
            .await?;
        return Ok(s2s::read_session(
            GuardedSession::new(session, principal, permit),
            s2s::response_compression(&headers),
            state.write_stall_timeout,
        ));
    }
    if header_has(&headers, header::ACCEPT, "text/event-stream") {
        let resume = SessionResume::from_headers(&headers)?;
        resume.apply(&mut req);
        let permit = state.admission.admit(SessionKind::Read, &principal)?;
        let session = state
            .engine
            .streams()
            .read_session(&basin, &stream, req)
            .await?;
        let session = GuardedSession::new(session, principal, permit);
        let render = sse::render_records(format);
        return Ok(sse::respond(
            session,
            render,
            resume,
            state.write_stall_timeout,
        ));
    }
    let _poll = long_poll(&state, &principal, req.wait)?;
    let read = async { Ok(state.engine.streams().read(&basin, &stream, req).await?) };
    let batch = principal.unless_lost(read).await?;
    if wants_proto(&headers) {
        return Ok(proto_response(&crate::wire::proto::ReadBatch::from(&batch)));
    }
    Ok(axum::Json(Batch::from_engine(&batch, format)).into_response())
}

/// A place among the server's long polls, if the request waits.
pub(super) fn long_poll(
    state: &AppState,
    principal: &Principal,
    wait: Option<Duration>,
) -> ApiResult<Option<SessionPermit>> {
    match wait {
        Some(wait) if !wait.is_zero() => state
            .admission
            .admit(SessionKind::LongPoll, principal)
            .map(Some),
        _ => Ok(None),
    }
}
