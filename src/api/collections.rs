//! `/v1/collections`: collections, their records, and the `/updated`
//! cursor over the records stream.

use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};

use super::error::{ApiError, ApiResult};
use super::extract::{Basin, Json, OptionalJson, Path, Query};
use super::{detached, provision_response, AppState, ListParams};
use crate::engine::collections::{
    CollectionConfig, CollectionConfigPatch, CollectionInfo, Cursor, RecordView, WriteOp,
    DEFAULT_PAGE,
};
use crate::engine::collections::{RawRecord, UnifiedCursor};
use crate::engine::streams::types::ReadBatch;
use crate::wire::json::rfc3339;

#[derive(Serialize)]
pub struct CollectionJson {
    name: String,
    config: CollectionConfig,
    created_at: String,
    /// The stream of change events, readable with the stream API.
    events_stream: String,
}

impl From<CollectionInfo> for CollectionJson {
    fn from(info: CollectionInfo) -> Self {
        Self {
            name: info.name,
            config: info.config,
            created_at: rfc3339(info.created_at),
            events_stream: info.events_stream,
        }
    }
}

pub async fn list(
    State(state): State<AppState>,
    Basin(basin): Basin,
    Query(params): Query<ListParams>,
) -> ApiResult<axum::Json<Value>> {
    let (collections, has_more) = state
        .engine
        .collections()
        .list_collections(&basin, &params.into())?;
    let collections: Vec<CollectionJson> = collections.into_iter().map(Into::into).collect();
    Ok(axum::Json(
        json!({ "collections": collections, "has_more": has_more }),
    ))
}

pub async fn ensure(
    State(state): State<AppState>,
    Basin(basin): Basin,
    Path(name): Path<String>,
    OptionalJson(patch): OptionalJson<CollectionConfigPatch>,
) -> ApiResult<Response> {
    let engine = state.engine;
    let (info, provision) = detached(async move {
        engine
            .collections()
            .ensure_collection(&basin, &name, &patch.unwrap_or_default())
            .await
    })
    .await?;
    Ok(provision_response(provision, CollectionJson::from(info)))
}

pub async fn reconfigure(
    State(state): State<AppState>,
    Basin(basin): Basin,
    Path(name): Path<String>,
    Json(patch): Json<CollectionConfigPatch>,
) -> ApiResult<axum::Json<CollectionJson>> {
    let engine = state.engine;
    let info = detached(async move {
        engine
            .collections()
            .reconfigure_collection(&basin, &name, &patch)
            .await
    })
    .await?;
    Ok(axum::Json(info.into()))
}

pub async fn get(
    State(state): State<AppState>,
    Basin(basin): Basin,
    Path(name): Path<String>,
) -> ApiResult<axum::Json<CollectionJson>> {
    Ok(axum::Json(
        state
            .engine
            .collections()
            .collection_info(&basin, &name)?
            .into(),
    ))
}

pub async fn delete(
    State(state): State<AppState>,
    Basin(basin): Basin,
    Path(name): Path<String>,
) -> ApiResult<StatusCode> {
    let engine = state.engine;
    detached(async move { engine.collections().delete_collection(&basin, &name).await }).await?;
    Ok(StatusCode::ACCEPTED)
}

#[derive(Deserialize, Default)]
pub struct WriteParams {
    /// The write applies only if the record is at this version (0: absent).
    expected_version: Option<u64>,
}

fn object(data: Value) -> ApiResult<Map<String, Value>> {
    match data {
        Value::Object(map) => Ok(map),
        other => Err(ApiError::invalid(format!(
            "record data must be a JSON object, got {}",
            match other {
                Value::Null => "null",
                Value::Bool(_) => "a boolean",
                Value::Number(_) => "a number",
                Value::String(_) => "a string",
                Value::Array(_) => "an array",
                Value::Object(_) => "an object",
            }
        ))),
    }
}

async fn write_one(
    state: AppState,
    basin: String,
    collection: String,
    op: WriteOp,
) -> ApiResult<axum::Json<RecordView>> {
    let engine = state.engine;
    let mut views = detached(async move {
        engine
            .collections()
            .write_records(&basin, &collection, vec![op])
            .await
    })
    .await?;
    Ok(axum::Json(views.remove(0)))
}

pub async fn put_record(
    State(state): State<AppState>,
    Basin(basin): Basin,
    Path((collection, id)): Path<(String, String)>,
    Query(params): Query<WriteParams>,
    Json(data): Json<Value>,
) -> ApiResult<axum::Json<RecordView>> {
    let op = WriteOp::Upsert {
        id,
        data: object(data)?,
        expected_version: params.expected_version,
    };
    write_one(state, basin, collection, op).await
}

pub async fn delete_record(
    State(state): State<AppState>,
    Basin(basin): Basin,
    Path((collection, id)): Path<(String, String)>,
    Query(params): Query<WriteParams>,
) -> ApiResult<axum::Json<RecordView>> {
    let op = WriteOp::Delete {
        id,
        expected_version: params.expected_version,
    };
    write_one(state, basin, collection, op).await
}

pub async fn get_record(
    State(state): State<AppState>,
    Basin(basin): Basin,
    Path((collection, id)): Path<(String, String)>,
) -> ApiResult<axum::Json<RecordView>> {
    Ok(axum::Json(
        state
            .engine
            .collections()
            .get_record(&basin, &collection, &id)
            .await?,
    ))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BatchWrite {
    #[serde(default)]
    upserts: Vec<BatchUpsert>,
    #[serde(default)]
    deletes: Vec<BatchDelete>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct BatchUpsert {
    id: String,
    data: Value,
    #[serde(default)]
    expected_version: Option<u64>,
}

/// A record id, or `{"id", "expected_version"}`.
#[derive(Deserialize)]
#[serde(untagged)]
enum BatchDelete {
    Id(String),
    Conditional {
        id: String,
        expected_version: Option<u64>,
    },
}

pub async fn write_batch(
    State(state): State<AppState>,
    Basin(basin): Basin,
    Path(collection): Path<String>,
    Json(batch): Json<BatchWrite>,
) -> ApiResult<axum::Json<Value>> {
    let mut ops = Vec::with_capacity(batch.upserts.len() + batch.deletes.len());
    for upsert in batch.upserts {
        ops.push(WriteOp::Upsert {
            id: upsert.id,
            data: object(upsert.data)?,
            expected_version: upsert.expected_version,
        });
    }
    for delete in batch.deletes {
        let (id, expected_version) = match delete {
            BatchDelete::Id(id) => (id, None),
            BatchDelete::Conditional {
                id,
                expected_version,
            } => (id, expected_version),
        };
        ops.push(WriteOp::Delete {
            id,
            expected_version,
        });
    }
    let engine = state.engine;
    let records = detached(async move {
        engine
            .collections()
            .write_records(&basin, &collection, ops)
            .await
    })
    .await?;
    Ok(axum::Json(json!({ "records": records })))
}

#[derive(Deserialize, Default)]
pub struct UpdatedParams {
    /// Epoch milliseconds or RFC 3339.
    updated_after: Option<String>,
    after_id: Option<String>,
    cursor: Option<String>,
    limit: Option<usize>,
    /// Seconds to wait for changes when caught up (at most 60).
    wait: Option<u32>,
}

/// Epoch milliseconds, or an RFC 3339 time.
fn parse_time(text: &str) -> ApiResult<u64> {
    if let Ok(ms) = text.parse::<u64>() {
        return Ok(ms);
    }
    let time = humantime::parse_rfc3339_weak(text).map_err(|_| {
        ApiError::invalid(format!(
            "updated_after `{text}` is neither epoch milliseconds nor an RFC 3339 time"
        ))
    })?;
    let since_epoch = time
        .duration_since(std::time::UNIX_EPOCH)
        .map_err(|_| ApiError::invalid("updated_after is before 1970"))?;
    Ok(since_epoch.as_millis() as u64)
}

/// The opaque cursor: base64url of `[updated_after, after_id]`.
pub(super) fn encode_cursor(cursor: &Cursor) -> String {
    URL_SAFE_NO_PAD
        .encode(json!([cursor.updated_after, cursor.after_id, cursor.started_at]).to_string())
}

pub(super) fn decode_cursor(text: &str) -> ApiResult<Cursor> {
    let bad = || ApiError::invalid("malformed cursor: pass back a `cursor` exactly as returned");
    let bytes = URL_SAFE_NO_PAD.decode(text).map_err(|_| bad())?;
    let (updated_after, after_id, started_at): (u64, Option<String>, u64) =
        serde_json::from_slice(&bytes).map_err(|_| bad())?;
    Ok(Cursor {
        updated_after,
        after_id,
        started_at,
    })
}

/// A sync that starts at the very beginning starts now; a cursor pair from
/// elsewhere carries no start time (0): see `Horizon` in the engine.
fn stamp_start(started_at: &mut u64, is_start: bool) {
    if is_start {
        *started_at = crate::engine::streams::types::now_ms();
    }
}

pub async fn updated(
    State(state): State<AppState>,
    Basin(basin): Basin,
    Path(collection): Path<String>,
    Query(params): Query<UpdatedParams>,
) -> ApiResult<Response> {
    let cursor = match (&params.cursor, &params.updated_after, &params.after_id) {
        (Some(token), None, None) => decode_cursor(token)?,
        (Some(_), _, _) => {
            return Err(ApiError::invalid(
                "pass either `cursor` or `updated_after` (+ `after_id`), not both",
            ))
        }
        (None, Some(after), id) => Cursor {
            updated_after: parse_time(after)?,
            after_id: id.clone(),
            started_at: 0,
        },
        (None, None, Some(_)) => return Err(ApiError::invalid("`after_id` needs `updated_after`")),
        (None, None, None) => Cursor::default(),
    };
    let mut cursor = cursor;
    let is_start = cursor.is_start();
    stamp_start(&mut cursor.started_at, is_start);
    let limit = params.limit.unwrap_or(DEFAULT_PAGE);
    if limit == 0 || limit > crate::engine::collections::MAX_PAGE {
        return Err(ApiError::invalid(format!(
            "limit must be 1 to {}",
            crate::engine::collections::MAX_PAGE
        )));
    }
    let wait = std::time::Duration::from_secs(params.wait.unwrap_or(0).into());
    let (records, next) = state
        .engine
        .collections()
        .updated(&basin, &collection, &cursor, limit, wait)
        .await?;
    let next_json = json!({ "updated_after": next.updated_after, "after_id": next.after_id });
    Ok(page_response(&records, &next_json, &encode_cursor(&next)))
}

/// `{"records": [...], "next": ..., "cursor": ...}`, with each record's
/// stored JSON copied in as it is: paging never decodes a record.
fn page_response(records: &[RawRecord], next: &Value, cursor: &str) -> Response {
    let size: usize = records.iter().map(|r| r.json.len() + 1).sum();
    let mut body = Vec::with_capacity(size + 256);
    body.extend_from_slice(b"{\"records\":[");
    for (i, record) in records.iter().enumerate() {
        if i > 0 {
            body.push(b',');
        }
        body.extend_from_slice(&record.json);
    }
    body.extend_from_slice(b"],\"next\":");
    body.extend_from_slice(next.to_string().as_bytes());
    body.extend_from_slice(b",\"cursor\":");
    body.extend_from_slice(json!(cursor).to_string().as_bytes());
    body.push(b'}');
    ([(header::CONTENT_TYPE, "application/json")], body).into_response()
}

/// The read parameters of a stream read, plus an event-type filter.
#[derive(Deserialize, Default)]
pub struct EventsParams {
    seq_num: Option<u64>,
    timestamp: Option<u64>,
    tail_offset: Option<u64>,
    clamp: Option<bool>,
    count: Option<u64>,
    until: Option<u64>,
    wait: Option<u32>,
    /// Comma-separated event types to keep: `created`, `updated`, `deleted`.
    event: Option<String>,
}

/// `GET /v1/collections/{c}/events`: the events stream, read like a stream
/// (from a seq num, a timestamp or the tail, with `count`, `until` and
/// `wait`), each record decoded into its event.
pub async fn events(
    State(state): State<AppState>,
    Basin(basin): Basin,
    Path(collection): Path<String>,
    Query(params): Query<EventsParams>,
    headers: HeaderMap,
) -> ApiResult<Response> {
    let wanted: Option<Vec<String>> = match &params.event {
        None => None,
        Some(list) => {
            let kinds: Vec<String> = list.split(',').map(|k| k.trim().to_string()).collect();
            if let Some(bad) = kinds
                .iter()
                .find(|k| !["created", "updated", "deleted"].contains(&k.as_str()))
            {
                return Err(ApiError::invalid(format!(
                    "unknown event type `{bad}`; expected created, updated or deleted"
                )));
            }
            Some(kinds)
        }
    };
    let info = state
        .engine
        .collections()
        .collection_info(&basin, &collection)?;
    let req = super::records::ReadParams {
        seq_num: params.seq_num,
        timestamp: params.timestamp,
        tail_offset: params.tail_offset,
        clamp: params.clamp,
        count: params.count,
        bytes: None,
        until: params.until,
        wait: params.wait,
    }
    .into_request()?;
    if super::records::header_has(&headers, header::ACCEPT, "text/event-stream") {
        let mut req = req;
        let resume = super::sse::SessionResume::from_headers(&headers)?;
        resume.apply(&mut req);
        let session = state
            .engine
            .streams()
            .read_session(&basin, &info.events_stream, req)
            .await?;
        let render: super::sse::RenderBatch = Box::new(move |batch| {
            let events = decode_events(batch, wanted.as_deref()).unwrap_or_default();
            json!({ "events": events, "tail": batch.tail.map(crate::wire::json::Position::from) })
                .to_string()
        });
        return Ok(super::sse::respond(session, render, resume));
    }
    let batch = state
        .engine
        .streams()
        .read(&basin, &info.events_stream, req)
        .await?;
    let events = decode_events(&batch, wanted.as_deref())?;
    let next_seq_num = batch.records.last().map(|r| r.seq_num + 1);
    Ok(axum::Json(json!({
        "events": events,
        "next_seq_num": next_seq_num,
        "tail": batch.tail.map(crate::wire::json::Position::from),
    }))
    .into_response())
}

/// The change events of a batch of events-stream records, with their seq
/// nums and timestamps, keeping only the `wanted` types.
fn decode_events(batch: &ReadBatch, wanted: Option<&[String]>) -> ApiResult<Vec<Value>> {
    let mut events = Vec::with_capacity(batch.records.len());
    for record in &batch.records {
        let mut event: Value = serde_json::from_slice(&record.body).map_err(|e| {
            ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "storage",
                format!("a stored event is malformed: {e}"),
            )
        })?;
        let kind = event["event"].as_str().unwrap_or_default();
        if wanted.is_some_and(|w| !w.iter().any(|k| k == kind)) {
            continue;
        }
        if let Value::Object(map) = &mut event {
            map.insert("seq_num".into(), json!(record.seq_num));
            map.insert("timestamp".into(), json!(record.timestamp));
        }
        events.push(event);
    }
    Ok(events)
}

#[derive(Deserialize, Default)]
pub struct UnifiedParams {
    /// Comma-separated collection names; all of the basin's if absent.
    collections: Option<String>,
    updated_after: Option<String>,
    after_collection: Option<String>,
    after_id: Option<String>,
    cursor: Option<String>,
    limit: Option<usize>,
    wait: Option<u32>,
}

/// `GET /v1/updated`: one cursor over several collections, ordered by
/// `(updated_at, collection, id)`.
pub async fn updated_across(
    State(state): State<AppState>,
    Basin(basin): Basin,
    Query(params): Query<UnifiedParams>,
) -> ApiResult<Response> {
    let cursor = match (&params.cursor, &params.updated_after) {
        (Some(token), None) if params.after_id.is_none() && params.after_collection.is_none() => {
            let bad = || ApiError::invalid("malformed cursor: pass back a `cursor` exactly as returned");
            let bytes = URL_SAFE_NO_PAD.decode(token).map_err(|_| bad())?;
            let (updated_after, after, started_at): (u64, Option<(String, String)>, u64) =
                serde_json::from_slice(&bytes).map_err(|_| bad())?;
            UnifiedCursor {
                updated_after,
                after,
                started_at,
            }
        }
        (Some(_), _) => {
            return Err(ApiError::invalid(
                "pass either `cursor` or `updated_after` (+ `after_collection` and `after_id`), not both",
            ))
        }
        (None, after) => {
            let updated_after = match after {
                Some(text) => parse_time(text)?,
                None if params.after_id.is_some() || params.after_collection.is_some() => {
                    return Err(ApiError::invalid("`after_collection` and `after_id` need `updated_after`"))
                }
                None => 0,
            };
            let after = match (&params.after_collection, &params.after_id) {
                (Some(c), Some(i)) => Some((c.clone(), i.clone())),
                (None, None) => None,
                _ => {
                    return Err(ApiError::invalid(
                        "`after_collection` and `after_id` go together",
                    ))
                }
            };
            UnifiedCursor {
                updated_after,
                after,
                started_at: 0,
            }
        }
    };
    let mut cursor = cursor;
    let is_start = cursor.is_start();
    stamp_start(&mut cursor.started_at, is_start);
    let limit = params.limit.unwrap_or(DEFAULT_PAGE);
    if limit == 0 || limit > crate::engine::collections::MAX_PAGE {
        return Err(ApiError::invalid(format!(
            "limit must be 1 to {}",
            crate::engine::collections::MAX_PAGE
        )));
    }
    let names = params.collections.as_ref().map(|list| {
        list.split(',')
            .map(|n| n.trim().to_string())
            .filter(|n| !n.is_empty())
            .collect::<Vec<_>>()
    });
    let wait = std::time::Duration::from_secs(params.wait.unwrap_or(0).into());
    let (records, next) = state
        .engine
        .collections()
        .updated_across(&basin, names, &cursor, limit, wait)
        .await?;
    let token = URL_SAFE_NO_PAD
        .encode(json!([next.updated_after, next.after, next.started_at]).to_string());
    let (after_collection, after_id) = match next.after {
        Some((c, i)) => (Some(c), Some(i)),
        None => (None, None),
    };
    let next_json = json!({
        "updated_after": next.updated_after,
        "after_collection": after_collection,
        "after_id": after_id,
    });
    Ok(page_response(&records, &next_json, &token))
}
