//! `/v1/streams/{stream}/records`: append, read (unary or SSE session) and
//! check-tail.

use std::time::Duration;

use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;

use super::error::{ApiError, ApiResult};
use super::extract::{Basin, Json, Path, Query, RecordFormat};
use super::sse::{self, SessionResume};
use super::AppState;
use crate::engine::types::{ReadLimits, ReadStart};
use crate::engine::ReadRequest;
use crate::wire::json::{self, Ack, Batch, TailResponse};

pub async fn append(
    State(state): State<AppState>,
    Basin(basin): Basin,
    Path(stream): Path<String>,
    RecordFormat(format): RecordFormat,
    Json(input): Json<json::AppendInput>,
) -> ApiResult<axum::Json<Ack>> {
    let input = input.into_engine(format).map_err(ApiError::invalid)?;
    let ack = state.engine.append(&basin, &stream, input).await?;
    Ok(axum::Json(ack.into()))
}

pub async fn check_tail(
    State(state): State<AppState>,
    Basin(basin): Basin,
    Path(stream): Path<String>,
) -> ApiResult<axum::Json<TailResponse>> {
    let tail = state.engine.check_tail(&basin, &stream).await?;
    Ok(axum::Json(TailResponse { tail: tail.into() }))
}

#[derive(Debug, Default, Deserialize)]
pub struct ReadParams {
    seq_num: Option<u64>,
    timestamp: Option<u64>,
    tail_offset: Option<u64>,
    clamp: Option<bool>,
    count: Option<u64>,
    bytes: Option<u64>,
    until: Option<u64>,
    /// Seconds.
    wait: Option<u32>,
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
    Basin(basin): Basin,
    Path(stream): Path<String>,
    RecordFormat(format): RecordFormat,
    Query(params): Query<ReadParams>,
    headers: HeaderMap,
) -> ApiResult<Response> {
    let mut req = params.into_request()?;
    if wants_event_stream(&headers) {
        let resume = SessionResume::from_headers(&headers)?;
        resume.apply(&mut req);
        let session = state.engine.read_session(&basin, &stream, req).await?;
        return Ok(sse::respond(session, format, resume));
    }
    let batch = state.engine.read(&basin, &stream, req).await?;
    Ok(axum::Json(Batch::from_engine(&batch, format)).into_response())
}

fn wants_event_stream(headers: &HeaderMap) -> bool {
    headers
        .get_all(axum::http::header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| v.contains("text/event-stream"))
}
