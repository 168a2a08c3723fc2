//! `/v1/consumers`: server-tracked consumers. Admin (ensure, get, list,
//! reconfigure, delete) and data (receive, ack, nack, extend, commit).
//!
//! The data operations change a consumer's state in several steps and are
//! run detached, so that a client hanging up cannot stop one half way.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use serde::Deserialize;
use serde_json::{json, Value};

use super::collections::{decode_cursor, encode_cursor};
use super::error::{ApiError, ApiResult};
use super::extract::{Basin, Json, OptionalJson, Path, Query, RecordFormat};
use super::{detached, provision_response, AppState, ListParams};
use crate::engine::collections::Cursor;
use crate::engine::consumers::{
    ConsumerConfig, ConsumerConfigPatch, ConsumerInfo, Delivery, Frontier, Payload, Position,
    Settle,
};
use crate::wire::json::{rfc3339, Format, Record};

/// A frontier as the API shows it: a seq num, or a records-feed cursor.
fn frontier_json(frontier: &Frontier) -> Value {
    match frontier {
        Frontier::Seq(seq) => json!({ "seq_num": seq }),
        Frontier::Change {
            updated_after,
            after_id,
        } => json!({
            "updated_after": updated_after,
            "after_id": after_id,
            "cursor": encode_cursor(&Cursor {
                updated_after: *updated_after,
                after_id: after_id.clone(),
                started_at: 0,
            }),
        }),
    }
}

fn position_json(position: &Position) -> Value {
    match position {
        Position::Seq(seq) => json!({ "seq_num": seq }),
        Position::Change(updated_at, id) => json!({ "updated_at": updated_at, "id": id }),
    }
}

fn info_json(info: &ConsumerInfo) -> Value {
    let mut out = json!({
        "name": info.name,
        "created_at": rfc3339(info.created_at),
        "config": info.config,
        "dead_letter_stream": info.dead_letter_stream,
    });
    if let Some(stats) = &info.stats {
        let p = &stats.progress;
        out["state"] = json!({
            "ack_floor": stats.ack_floor.as_ref().map(position_json),
            "frontier": frontier_json(&stats.frontier),
            "pending": stats.pending,
            "in_flight": stats.in_flight,
            "delivered": p.delivered,
            "redelivered": p.redelivered,
            "acked": p.acked,
            "nacked": p.nacked,
            "dead_lettered": p.dead_lettered,
            "dropped": p.dropped,
            "lag": stats.lag,
        });
    }
    out
}

fn delivery_json(delivery: &Delivery, format: Format) -> ApiResult<Value> {
    let message = &delivery.message;
    let mut out = json!({
        "delivery_count": delivery.delivery_count,
        "timestamp": message.timestamp,
    });
    if let Some(ack_id) = &delivery.ack_id {
        out["ack_id"] = json!(ack_id);
    }
    match &message.payload {
        Payload::Record(record) => {
            out["seq_num"] = json!(record.seq_num);
            out["record"] = json!(Record::from_engine(record, format));
        }
        Payload::Event(event) => {
            out["seq_num"] = event.get("seq_num").cloned().unwrap_or(Value::Null);
            out["event"] = Value::Object(event.clone());
        }
        Payload::Doc(record) => {
            out["cursor"] = json!(encode_cursor(&Cursor {
                updated_after: record.updated_at,
                after_id: Some(record.id.clone()),
                started_at: 0,
            }));
            out["record"] = serde_json::from_slice(&record.json).map_err(|e| {
                ApiError::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "storage",
                    format!("a stored record is malformed: {e}"),
                )
            })?;
        }
    }
    Ok(out)
}

pub async fn list(
    State(state): State<AppState>,
    Basin(basin): Basin,
    Query(params): Query<ListParams>,
) -> ApiResult<axum::Json<Value>> {
    let (consumers, has_more) = state
        .engine
        .consumers()
        .list_consumers(&basin, &params.into())?;
    let consumers: Vec<Value> = consumers.iter().map(info_json).collect();
    Ok(axum::Json(
        json!({ "consumers": consumers, "has_more": has_more }),
    ))
}

pub async fn ensure(
    State(state): State<AppState>,
    Basin(basin): Basin,
    Path(name): Path<String>,
    Json(config): Json<ConsumerConfig>,
) -> ApiResult<Response> {
    let engine = state.engine;
    let (info, provision) = detached(async move {
        engine
            .consumers()
            .ensure_consumer(&basin, &name, config)
            .await
    })
    .await?;
    Ok(provision_response(provision, info_json(&info)))
}

pub async fn get(
    State(state): State<AppState>,
    Basin(basin): Basin,
    Path(name): Path<String>,
) -> ApiResult<axum::Json<Value>> {
    let info = state
        .engine
        .consumers()
        .consumer_info(&basin, &name)
        .await?;
    Ok(axum::Json(info_json(&info)))
}

pub async fn reconfigure(
    State(state): State<AppState>,
    Basin(basin): Basin,
    Path(name): Path<String>,
    Json(patch): Json<ConsumerConfigPatch>,
) -> ApiResult<axum::Json<Value>> {
    let engine = state.engine;
    let info = detached(async move {
        engine
            .consumers()
            .reconfigure_consumer(&basin, &name, &patch)
            .await
    })
    .await?;
    Ok(axum::Json(info_json(&info)))
}

pub async fn delete(
    State(state): State<AppState>,
    Basin(basin): Basin,
    Path(name): Path<String>,
) -> ApiResult<StatusCode> {
    let engine = state.engine;
    detached(async move { engine.consumers().delete_consumer(&basin, &name).await }).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct ReceiveRequest {
    batch_size: Option<usize>,
    /// How long to wait for messages when there are none (at most 60 000).
    wait_ms: Option<u64>,
}

pub async fn receive(
    State(state): State<AppState>,
    Basin(basin): Basin,
    Path(name): Path<String>,
    RecordFormat(format): RecordFormat,
    OptionalJson(req): OptionalJson<ReceiveRequest>,
) -> ApiResult<axum::Json<Value>> {
    let req = req.unwrap_or_default();
    let batch_size = req.batch_size.unwrap_or(1);
    let wait = std::time::Duration::from_millis(req.wait_ms.unwrap_or(0));
    let engine = state.engine;
    let deliveries = detached(async move {
        engine
            .consumers()
            .receive(&basin, &name, batch_size, wait)
            .await
    })
    .await?;
    let messages = deliveries
        .iter()
        .map(|d| delivery_json(d, format))
        .collect::<ApiResult<Vec<_>>>()?;
    Ok(axum::Json(json!({ "messages": messages })))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SettleRequest {
    ack_ids: Vec<String>,
    /// For a nack: how long before the messages may be delivered again.
    #[serde(default)]
    delay_ms: Option<u64>,
}

async fn settle(
    state: AppState,
    basin: String,
    name: String,
    req: SettleRequest,
    action: Settle,
) -> ApiResult<(usize, Option<u64>)> {
    let engine = state.engine;
    Ok(detached(async move {
        engine
            .consumers()
            .settle(&basin, &name, &req.ack_ids, action)
            .await
    })
    .await?)
}

pub async fn ack(
    State(state): State<AppState>,
    Basin(basin): Basin,
    Path(name): Path<String>,
    Json(req): Json<SettleRequest>,
) -> ApiResult<axum::Json<Value>> {
    if req.delay_ms.is_some() {
        return Err(ApiError::invalid("`delay_ms` applies to nack only"));
    }
    let (acked, _) = settle(state, basin, name, req, Settle::Ack).await?;
    Ok(axum::Json(json!({ "acked": acked })))
}

pub async fn nack(
    State(state): State<AppState>,
    Basin(basin): Basin,
    Path(name): Path<String>,
    Json(req): Json<SettleRequest>,
) -> ApiResult<axum::Json<Value>> {
    let delay_ms = req.delay_ms.unwrap_or(0);
    let (nacked, _) = settle(state, basin, name, req, Settle::Nack { delay_ms }).await?;
    Ok(axum::Json(json!({ "nacked": nacked })))
}

pub async fn extend(
    State(state): State<AppState>,
    Basin(basin): Basin,
    Path(name): Path<String>,
    Json(req): Json<SettleRequest>,
) -> ApiResult<axum::Json<Value>> {
    if req.delay_ms.is_some() {
        return Err(ApiError::invalid("`delay_ms` applies to nack only"));
    }
    let (extended, deadline) = settle(state, basin, name, req, Settle::Extend).await?;
    Ok(axum::Json(
        json!({ "extended": extended, "deadline": deadline }),
    ))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CommitRequest {
    /// Streams and events feeds: the seq num after the last one processed.
    seq_num: Option<u64>,
    /// Records feeds: the `cursor` of the last message processed.
    cursor: Option<String>,
}

pub async fn commit(
    State(state): State<AppState>,
    Basin(basin): Basin,
    Path(name): Path<String>,
    Json(req): Json<CommitRequest>,
) -> ApiResult<axum::Json<Value>> {
    let position = match (req.seq_num, req.cursor) {
        (Some(seq), None) => Frontier::Seq(seq),
        (None, Some(token)) => {
            let cursor = decode_cursor(&token)?;
            Frontier::Change {
                updated_after: cursor.updated_after,
                after_id: cursor.after_id,
            }
        }
        _ => {
            return Err(ApiError::invalid(
                "pass exactly one of `seq_num` and `cursor`",
            ))
        }
    };
    let engine = state.engine;
    let committed = detached(async move {
        engine
            .consumers()
            .commit_consumer(&basin, &name, position)
            .await
    })
    .await?;
    Ok(axum::Json(
        json!({ "committed": frontier_json(&committed) }),
    ))
}
