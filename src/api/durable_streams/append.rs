//! `POST`: append (and close). The order of the checks is the protocol's:
//! malformed headers and bodies first (`400`), then a closed stream
//! (`409` with `Stream-Closed`), the content type, and what the stream's
//! task decides: producer sequence, writer sequence, closure.

use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};

use super::create::messages;
use super::headers;
use super::shared::{bad_request, conflict, engine_error, fail, open, stream_name, Failure, Reply};
use crate::api::auth::Principal;
use crate::api::extract::{read_body, Path};
use crate::api::shared::AppState;
use crate::engine::error::EngineError;
use crate::engine::streams::terms::AppendTerms;
use crate::engine::streams::types::AppendRefusal;
use crate::wire::durable_streams::offset;

pub async fn post(
    State(state): State<AppState>,
    principal: Principal,
    Path(path): Path<String>,
    request_headers: HeaderMap,
    body: Body,
) -> Response {
    let reply: Reply = async {
        let name = stream_name(&principal, path)?;
        let producer = headers::producer(&request_headers).map_err(bad_request)?;
        let writer_seq = headers::writer_seq(&request_headers).map_err(bad_request)?;
        let close = headers::closes(&request_headers);
        let body = read_body(&request_headers, &state, body)
            .await
            .map_err(Failure::from)?;
        if body.is_empty() && !close {
            return Err(bad_request(
                "an append needs a body (only a close, with Stream-Closed: true, may have none)",
            ));
        }
        let stream = open(&state, &name, true).await?;
        let records = if body.is_empty() {
            Vec::new()
        } else if stream.visible().closed {
            // Refused, or a retry of the closing append, whatever the body:
            // the stream's task answers which.
            vec![body]
        } else {
            let Some(content_type) = headers::content_type(&request_headers) else {
                return Err(bad_request("an append with a body needs a Content-Type"));
            };
            if content_type != stream.settings.content_type {
                return Err(conflict(format!(
                    "the stream's content type is {}, not {content_type}",
                    stream.settings.content_type
                )));
            }
            let records = messages(body, &stream.settings.content_type)?;
            if records.is_empty() {
                return Err(bad_request("an empty JSON array appends nothing"));
            }
            records
        };
        let appends = !records.is_empty();
        let terms = AppendTerms {
            producer: producer.clone(),
            writer_seq,
            close,
            ..Default::default()
        };
        let result = state
            .engine
            .durable_streams()
            .append(&stream, records, terms)
            .await;
        let ack = match result {
            Ok(ack) => ack,
            Err(EngineError::AppendRefused(refusal)) => return Ok(refused(refusal)),
            Err(err) => return Err(engine_error(err)),
        };
        // 200 says a producer's append is new (204 would be a duplicate).
        let status = if producer.is_some() && appends {
            StatusCode::OK
        } else {
            StatusCode::NO_CONTENT
        };
        let mut response = status.into_response();
        let out = response.headers_mut();
        headers::set(out, headers::NEXT_OFFSET, offset(ack.end.seq_num));
        if close {
            headers::set(out, headers::CLOSED, "true");
        }
        if let Some(claim) = producer {
            headers::set(out, headers::PRODUCER_EPOCH, claim.epoch);
            headers::set(out, headers::PRODUCER_SEQ, claim.seq);
        }
        Ok(response)
    }
    .await;
    reply.unwrap_or_else(IntoResponse::into_response)
}

/// The protocol's answer to an append the stream's task did not apply:
/// some are successes (a duplicate, a close of a closed stream).
fn refused(refusal: AppendRefusal) -> Response {
    let message = refusal.to_string();
    let done = || StatusCode::NO_CONTENT.into_response();
    match refusal {
        AppendRefusal::AlreadyClosed { tail } => {
            let mut response = done();
            headers::set(response.headers_mut(), headers::CLOSED, "true");
            headers::set(response.headers_mut(), headers::NEXT_OFFSET, offset(tail));
            response
        }
        AppendRefusal::Duplicate {
            epoch,
            seq,
            tail,
            closed,
        } => {
            let mut response = done();
            let out = response.headers_mut();
            headers::set(out, headers::PRODUCER_EPOCH, epoch);
            headers::set(out, headers::PRODUCER_SEQ, seq);
            headers::set(out, headers::NEXT_OFFSET, offset(tail));
            if closed {
                headers::set(out, headers::CLOSED, "true");
            }
            response
        }
        AppendRefusal::Closed { tail } => fail(StatusCode::CONFLICT, "stream_closed", message)
            .with(headers::CLOSED, "true")
            .with(headers::NEXT_OFFSET, offset(tail))
            .into_response(),
        AppendRefusal::StaleEpoch { current } => {
            fail(StatusCode::FORBIDDEN, "stale_producer_epoch", message)
                .with(headers::PRODUCER_EPOCH, current)
                .into_response()
        }
        AppendRefusal::NewEpochNotAtZero => bad_request(message).into_response(),
        AppendRefusal::SeqGap { expected, received } => {
            fail(StatusCode::CONFLICT, "producer_seq_gap", message)
                .with(headers::PRODUCER_EXPECTED_SEQ, expected)
                .with(headers::PRODUCER_RECEIVED_SEQ, received)
                .into_response()
        }
        AppendRefusal::WriterSeqRegression { .. } => {
            fail(StatusCode::CONFLICT, "writer_seq_regression", message).into_response()
        }
    }
}
