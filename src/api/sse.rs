//! Read sessions over Server-Sent Events, in S2's event vocabulary:
//!
//! - `batch`: `id: {last seq num},{records so far},{metered bytes so far}`,
//!   data a read batch;
//! - `ping`: data `{"timestamp": now, "tail": …}`, when the session catches
//!   up and then every 5–15 s while idle;
//! - `error`: data an error body; the session ends;
//! - `data: [DONE]`: the session met its stop condition.
//!
//! A client that reconnects with `Last-Event-ID` resumes after the last
//! record it saw, with its count and bytes limits reduced by what it got;
//! the running totals in the ids carry on from the resumed values.

use std::convert::Infallible;
use std::time::Duration;

use axum::http::HeaderMap;
use axum::response::sse::{Event, Sse};
use axum::response::{IntoResponse, Response};
use futures::stream::{self, Stream};
use serde_json::json;

use super::auth::{pumped, GuardedSession};
use super::error::{ApiError, ApiResult};
use crate::engine::streams::types::ReadBatch;
use crate::engine::streams::types::{now_ms, ReadStart};
use crate::engine::streams::{ReadRequest, SessionEvent};
use crate::wire::json::{Batch, Format, Position};

/// Where a resumed session left off, from `Last-Event-ID`.
#[derive(Clone, Copy, Debug, Default)]
pub struct SessionResume {
    last_seq_num: Option<u64>,
    count: u64,
    bytes: u64,
}

impl SessionResume {
    pub fn from_headers(headers: &HeaderMap) -> ApiResult<Self> {
        let Some(value) = headers.get("last-event-id") else {
            return Ok(Self::default());
        };
        let bad = || ApiError::bad_header("Last-Event-ID must be `seq_num,count,bytes`");
        let text = value.to_str().map_err(|_| bad())?;
        let parts: Vec<u64> = text
            .split(',')
            .map(|p| p.trim().parse::<u64>())
            .collect::<Result<_, _>>()
            .map_err(|_| bad())?;
        let [seq, count, bytes] = parts[..] else {
            return Err(bad());
        };
        Ok(Self {
            last_seq_num: Some(seq),
            count,
            bytes,
        })
    }

    /// Rewrites the request to continue after the resumed position.
    pub fn apply(&self, req: &mut ReadRequest) {
        let Some(seq) = self.last_seq_num else { return };
        req.start = Some(ReadStart::SeqNum(seq.saturating_add(1)));
        req.clamp = true;
        req.limits.count = req.limits.count.map(|c| c.saturating_sub(self.count));
        req.limits.bytes = req.limits.bytes.map(|b| b.saturating_sub(self.bytes));
    }
}

/// Renders a batch as the data of a `batch` event.
pub type RenderBatch = Box<dyn Fn(&ReadBatch) -> String + Send>;

/// Stream records as S2 read batches, in the given record format.
pub fn render_records(format: Format) -> RenderBatch {
    Box::new(move |batch| {
        serde_json::to_string(&Batch::from_engine(batch, format)).unwrap_or_default()
    })
}

struct SessionState {
    session: GuardedSession,
    render: RenderBatch,
    count: u64,
    bytes: u64,
    finished: bool,
}

/// An SSE response for `session`; a client that takes nothing for `stall`
/// is cut off.
pub fn respond(
    session: GuardedSession,
    render: RenderBatch,
    resume: SessionResume,
    stall: Duration,
) -> Response {
    let principal = session.principal().clone();
    let state = SessionState {
        session,
        render,
        count: resume.count,
        bytes: resume.bytes,
        finished: false,
    };
    Sse::new(pumped(events(state), principal, stall)).into_response()
}

fn events(state: SessionState) -> impl Stream<Item = Result<Event, Infallible>> {
    stream::unfold(state, |mut state| async move {
        if state.finished {
            return None;
        }
        let event = match state.session.next().await {
            Some(Ok(SessionEvent::Batch(batch))) => {
                // Saturating: a client's Last-Event-ID sets the starting
                // totals, and may be anything.
                state.count = state.count.saturating_add(batch.records.len() as u64);
                state.bytes = state.bytes.saturating_add(
                    batch
                        .records
                        .iter()
                        .map(|r| r.metered_size() as u64)
                        .sum::<u64>(),
                );
                let last = batch.records.last().map_or(0, |r| r.seq_num);
                let data = (state.render)(&batch);
                Event::default()
                    .event("batch")
                    .id(format!("{last},{},{}", state.count, state.bytes))
                    .data(data)
            }
            Some(Ok(SessionEvent::Heartbeat(tail))) => Event::default()
                .event("ping")
                .data(json!({ "timestamp": now_ms(), "tail": Position::from(tail) }).to_string()),
            Some(Err(err)) => {
                state.finished = true;
                Event::default().event("error").data(err.body().to_string())
            }
            None => {
                state.finished = true;
                Event::default().data("[DONE]")
            }
        };
        Some((Ok(event), state))
    })
}
