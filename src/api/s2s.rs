//! S2S sessions (`Content-Type: s2s/proto`): framed protobuf messages over
//! a streaming HTTP body, on HTTP/1.1 or HTTP/2.
//!
//! An append session reads `AppendInput` messages from the request body and
//! answers each with an `AppendAck`, in order. Inputs are pipelined: each is
//! queued to the stream as soon as it is decoded, and a second task sends
//! the acknowledgements as they become durable. The first failure (a bad
//! frame, a failed condition, a storage error) ends the session with a
//! terminal message carrying the status and the JSON error; appends queued
//! behind a failed one are not applied.
//!
//! A read session streams `ReadBatch` messages; an empty batch with the tail
//! is a heartbeat. A session that meets its stop condition simply ends.

use std::convert::Infallible;
use std::time::Duration;

use axum::body::Body;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::Response;
use bytes::Bytes;
use futures::StreamExt;
use std::sync::Arc;

use tokio::sync::{mpsc, Semaphore};

use super::admission::SessionPermit;
use super::auth::{pumped, revoked, GuardedSession, Principal};
use super::error::ApiError;
use crate::engine::error::EngineResult;
use crate::engine::streams::types::AppendAck;
use crate::engine::streams::{AppendSession, SessionEvent};
use crate::wire::proto;
use crate::wire::s2s::{self, Compression, Frame};

/// Appends in flight per session (queued or being made durable) before the
/// session stops reading input: bounds how far a client may run ahead of
/// durability, by count and by bytes.
const MAX_IN_FLIGHT: usize = 256;
const MAX_IN_FLIGHT_BYTES: usize = 16 * 1024 * 1024;

pub fn response_compression(headers: &HeaderMap) -> Compression {
    let accept: Vec<&str> = headers
        .get_all(header::ACCEPT_ENCODING)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .collect();
    Compression::negotiate(Some(&accept.join(",")))
}

fn streaming_response(body: Body) -> Response {
    let mut response = Response::new(body);
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("s2s/proto"));
    headers.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("no-cache, no-transform"),
    );
    response
}

fn terminal(err: &ApiError) -> Bytes {
    s2s::encode_terminal(err.status().as_u16(), err.body().to_string().as_bytes())
}

fn bad_frame(message: impl Into<String>) -> ApiError {
    ApiError::new(StatusCode::BAD_REQUEST, "bad_frame", message)
}

pub fn append_session(
    session: AppendSession,
    principal: Principal,
    permit: SessionPermit,
    body: Body,
    compression: Compression,
    stall: Duration,
) -> Response {
    let holder = principal.clone();
    let (frames_tx, frames_rx) = mpsc::channel::<Bytes>(16);
    let (acks_tx, mut acks_rx) = mpsc::channel(MAX_IN_FLIGHT);

    // Reader: decode inputs and queue them to the stream, in order.
    tokio::spawn(async move {
        if let Some(error) = read_inputs(&session, &principal, body, &acks_tx).await {
            // Behind the acks queued so far, so those go out first.
            let _ = acks_tx.send(Err(error)).await;
        }
    });

    // Writer: acknowledgements, in order, as they become durable. It ends
    // last, so it holds the session's place.
    tokio::spawn(async move {
        let _permit = permit;
        while let Some(pending) = acks_rx.recv().await {
            let frame = match pending {
                Ok(ack) => match ack.await {
                    Ok(ack) => s2s::encode_message(&proto::AppendAck::from(ack), compression),
                    Err(err) => {
                        let _ = frames_tx.send(terminal(&ApiError::from(err))).await;
                        return;
                    }
                },
                Err(err) => {
                    let _ = frames_tx.send(terminal(&err)).await;
                    return;
                }
            };
            // A client that takes no acks for `stall`, or whose token is
            // revoked, is cut off; so is one that went away.
            tokio::select! {
                biased;
                sent = tokio::time::timeout(stall, frames_tx.send(frame)) => {
                    if !matches!(sent, Ok(Ok(()))) {
                        return;
                    }
                }
                () = holder.lost() => return,
            }
        }
    });

    let body = tokio_stream::wrappers::ReceiverStream::new(frames_rx).map(Ok::<_, Infallible>);
    streaming_response(Body::from_stream(body))
}

/// An append queued to its stream, resolving once it is durable.
type PendingAck =
    std::pin::Pin<Box<dyn std::future::Future<Output = EngineResult<AppendAck>> + Send>>;

/// Reads and submits inputs until the body ends; returns the error that
/// ended the session early, if any.
async fn read_inputs(
    session: &AppendSession,
    principal: &Principal,
    body: Body,
    acks: &mpsc::Sender<Result<PendingAck, ApiError>>,
) -> Option<ApiError> {
    let mut decoder = s2s::Decoder::default();
    let mut stream = body.into_data_stream();
    let budget = Arc::new(Semaphore::new(MAX_IN_FLIGHT_BYTES));
    loop {
        loop {
            let frame = match decoder.next_frame() {
                Ok(Some(frame)) => frame,
                Ok(None) => break,
                Err(err) => return Some(bad_frame(err.to_string())),
            };
            let message = match frame {
                Frame::Message(message) => message,
                Frame::Terminal { .. } => {
                    return Some(bad_frame("a client may not send a terminal message"))
                }
            };
            let input = match proto::decode_append_input(message) {
                Ok(input) => input,
                Err(err) => return Some(ApiError::new(StatusCode::BAD_REQUEST, "bad_proto", err)),
            };
            if !principal.is_live() {
                return Some(revoked());
            }
            if let Err(err) = principal.check_commands(&input) {
                return Some(err);
            }
            // Held until the append is acknowledged (or fails).
            let size: usize = input.records.iter().map(|r| r.metered_size()).sum();
            let Ok(permit) = budget
                .clone()
                .acquire_many_owned(size.min(MAX_IN_FLIGHT_BYTES) as u32)
                .await
            else {
                return None;
            };
            match session.submit(input).await {
                Ok(ack) => {
                    let ack = async move {
                        let result = ack.await;
                        drop(permit);
                        result
                    };
                    if acks.send(Ok(Box::pin(ack))).await.is_err() {
                        return None; // the writer stopped: the session is over
                    }
                }
                Err(err) => return Some(err.into()),
            }
        }
        let next = tokio::select! {
            next = stream.next() => next,
            () = principal.lost() => return Some(revoked()),
            () = session.shutting_down() => {
                return Some(ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "unavailable",
                    "the server is shutting down",
                ));
            }
        };
        match next {
            Some(Ok(chunk)) => decoder.push(&chunk),
            Some(Err(err)) => return Some(bad_frame(format!("the request body failed: {err}"))),
            None => return decoder.finish().err().map(|err| bad_frame(err.to_string())),
        }
    }
}

/// A read session's S2S response; a client that takes nothing for
/// `stall` is cut off.
pub fn read_session(
    session: GuardedSession,
    compression: Compression,
    stall: Duration,
) -> Response {
    let principal = session.principal().clone();
    let frames = futures::stream::unfold(Some(session), move |session| async move {
        let mut session = session?;
        match session.next().await {
            Some(Ok(SessionEvent::Batch(batch))) => {
                let message = proto::ReadBatch::from(&batch);
                Some((s2s::encode_message(&message, compression), Some(session)))
            }
            Some(Ok(SessionEvent::Heartbeat(tail))) => {
                let message = proto::heartbeat(tail);
                Some((s2s::encode_message(&message, compression), Some(session)))
            }
            Some(Err(err)) => Some((terminal(&err), None)),
            None => None,
        }
    });
    let frames = pumped(frames, principal, stall);
    streaming_response(Body::from_stream(frames.map(Ok::<_, Infallible>)))
}
