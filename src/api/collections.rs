//! `/v1/collections`: collections, their records, and the `/updated`
//! cursor over the records stream.

use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{json, Value};

use super::admission::SessionKind;
use super::auth::{permission_denied, GuardedSession, Principal, Resource};
use super::error::{ApiError, ApiResult};
use super::extract::{Basin, Json, NamePath, OptionalJson, Path, Query};
use super::records::long_poll;
use super::shared::{detached, provision_response, AppState, ListParams};
use crate::engine::collections::{
    CollectionConfigPatch, CollectionInfo, CollectionName, Cursor, Filter, RecordView,
    UnifiedCursor, WriteOp, DEFAULT_PAGE, MAX_PAGE, SCAN_BUDGET,
};
use crate::engine::streams::types::ReadStart;
use crate::engine::streams::{ReadRequest, MAX_UNARY_WAIT};
use crate::wire::collections::{
    events_batch, events_page, record_data, records_page, unified_page, BatchWrite, CollectionJson,
};
use crate::wire::cursor::{decode_cursor, decode_unified_cursor, parse_time};
use crate::wire::filter::filter_from_query;

pub async fn list(
    State(state): State<AppState>,
    principal: Principal,
    Basin(basin): Basin,
    Query(params): Query<ListParams>,
) -> ApiResult<axum::Json<Value>> {
    let (collections, has_more) = principal.list(
        Resource::Collections,
        params.into(),
        |c: &CollectionInfo| &c.name,
        |req| state.engine.collections().list_collections(&basin, req),
    )?;
    let collections: Vec<CollectionJson> = collections.into_iter().map(Into::into).collect();
    Ok(axum::Json(
        json!({ "collections": collections, "has_more": has_more }),
    ))
}

pub async fn ensure(
    State(state): State<AppState>,
    Basin(basin): Basin,
    NamePath(name): NamePath<CollectionName>,
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
        data: record_data(data)?,
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

pub async fn write_batch(
    State(state): State<AppState>,
    Basin(basin): Basin,
    Path(collection): Path<String>,
    Json(batch): Json<BatchWrite>,
) -> ApiResult<axum::Json<Value>> {
    let ops = batch.into_ops()?;
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

/// A sync that starts at the very beginning starts now; a cursor pair from
/// elsewhere carries no start time (0): see `Horizon` in the engine.
fn stamp_start(started_at: &mut u64, is_start: bool) {
    if is_start {
        *started_at = crate::engine::streams::types::now_ms();
    }
}

/// A page size: 1 to [`MAX_PAGE`], [`DEFAULT_PAGE`] if not given.
fn page_limit(limit: Option<usize>) -> ApiResult<usize> {
    match limit.unwrap_or(DEFAULT_PAGE) {
        limit @ 1..=MAX_PAGE => Ok(limit),
        _ => Err(ApiError::invalid(format!("limit must be 1 to {MAX_PAGE}"))),
    }
}

pub async fn updated(
    State(state): State<AppState>,
    principal: Principal,
    Basin(basin): Basin,
    Path(collection): Path<String>,
    Query(params): Query<UpdatedParams>,
    Query(pairs): Query<Vec<(String, String)>>,
) -> ApiResult<Response> {
    let filter = filter_from_query(&pairs)?;
    if let Some(filter) = &filter {
        filter.validate(false)?;
    }
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
    let limit = page_limit(params.limit)?;
    let wait = std::time::Duration::from_secs(params.wait.unwrap_or(0).into());
    let _poll = long_poll(&state, &principal, Some(wait))?;
    let updated = async {
        let engine = state.engine.collections();
        Ok(engine
            .updated(&basin, &collection, &cursor, limit, filter.as_ref(), wait)
            .await?)
    };
    let page = principal.unless_lost(updated).await?;
    Ok(json_response(records_page(
        &page.records,
        &page.next,
        page.caught_up,
    )))
}

/// The read parameters of a stream read (the filter is read apart).
#[derive(Deserialize, Default)]
pub struct EventsParams {
    seq_num: Option<u64>,
    timestamp: Option<u64>,
    tail_offset: Option<u64>,
    clamp: Option<bool>,
    count: Option<u64>,
    until: Option<u64>,
    wait: Option<u32>,
    // The filter (`event=`, `id_prefix`, `data.FIELD`, `where`, `filter`)
    // is read from the same query by `filter_from_query`.
}

/// `GET /v1/collections/{c}/events`: the events stream, read like a stream
/// (from a seq num, a timestamp or the tail, with `count`, `until` and
/// `wait`), each record decoded into its event.
pub async fn events(
    State(state): State<AppState>,
    principal: Principal,
    Basin(basin): Basin,
    Path(collection): Path<String>,
    Query(params): Query<EventsParams>,
    Query(pairs): Query<Vec<(String, String)>>,
    headers: HeaderMap,
) -> ApiResult<Response> {
    // `event=` is one part of the filter.
    let filter = filter_from_query(&pairs)?;
    if let Some(filter) = &filter {
        filter.validate(true)?;
    }
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
        let permit = state.admission.admit(SessionKind::Read, &principal)?;
        let session = state
            .engine
            .streams()
            .read_session(&basin, &info.events_stream, req)
            .await?;
        let render: super::sse::RenderBatch =
            Box::new(move |batch| events_batch(batch, filter.as_ref()).to_string());
        let session = GuardedSession::new(session, principal, permit);
        let stall = state.write_stall_timeout;
        return Ok(super::sse::respond(session, render, resume, stall));
    }
    let _poll = long_poll(&state, &principal, req.wait)?;
    let read = read_events(&state, &basin, &info.events_stream, req, filter.as_ref());
    let page = principal.unless_lost(read).await?;
    Ok(axum::Json(page).into_response())
}

/// A unary read of an events stream through `filter`. A read whose
/// records the filter all left out reads on (within the request's `count`
/// and `bytes`, and at most [`SCAN_BUDGET`] records), and a long poll goes
/// on waiting: it answers with the first events that match, or empty, past
/// everything it read, when the wait or the budget runs out.
async fn read_events(
    state: &AppState,
    basin: &str,
    stream: &str,
    mut req: ReadRequest,
    filter: Option<&Filter>,
) -> ApiResult<Value> {
    let engine = state.engine.streams();
    let deadline = req
        .wait
        .map(|wait| tokio::time::Instant::now() + wait.min(MAX_UNARY_WAIT));
    let (mut scanned, mut next_seq_num) = (0, None);
    loop {
        let batch = engine.read(basin, stream, req).await?;
        let events = crate::wire::collections::events(&batch, filter)?;
        let Some(last) = batch.records.last() else {
            // Caught up (or the wait ran out, or `until` was reached).
            return Ok(events_page(events, next_seq_num, batch.tail));
        };
        next_seq_num = Some(last.seq_num + 1);
        scanned += batch.records.len();
        let read_bytes: u64 = batch.records.iter().map(|r| r.metered_size() as u64).sum();
        let limits = &mut req.limits;
        limits.count = limits
            .count
            .map(|c| c.saturating_sub(batch.records.len() as u64));
        limits.bytes = limits.bytes.map(|b| b.saturating_sub(read_bytes));
        let spent = limits.count == Some(0) || limits.bytes == Some(0);
        if !events.is_empty() || spent || scanned >= SCAN_BUDGET {
            return Ok(events_page(events, next_seq_num, batch.tail));
        }
        // At the tail with no wait left, reading on would be a read beyond
        // the tail (416): the page ends here.
        let wait_left = deadline.map(|d| d.saturating_duration_since(tokio::time::Instant::now()));
        // A batch carries the tail only when it reached it.
        let at_tail = batch.tail.is_some();
        if at_tail && wait_left.is_none_or(|w| w.is_zero()) {
            return Ok(events_page(events, next_seq_num, batch.tail));
        }
        req.start = Some(ReadStart::SeqNum(last.seq_num + 1));
        req.wait = wait_left;
    }
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
    principal: Principal,
    Basin(basin): Basin,
    Query(params): Query<UnifiedParams>,
    Query(pairs): Query<Vec<(String, String)>>,
) -> ApiResult<Response> {
    let filter = filter_from_query(&pairs)?;
    if let Some(filter) = &filter {
        filter.validate(false)?;
    }
    let cursor = match (&params.cursor, &params.updated_after) {
        (Some(token), None) if params.after_id.is_none() && params.after_collection.is_none() => {
            decode_unified_cursor(token)?
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
    let limit = page_limit(params.limit)?;
    let names = params.collections.as_ref().map(|list| {
        list.split(',')
            .map(|n| n.trim().to_string())
            .filter(|n| !n.is_empty())
            .collect::<Vec<_>>()
    });
    // Every collection named must be readable; all of them (no list) only
    // by a token whose scope covers every collection.
    match &names {
        Some(names) => {
            for name in names {
                principal.check(Resource::Collections, name)?;
            }
        }
        None if !principal.sees_all_collections() => {
            return Err(permission_denied(
                "reading every collection: name the ones it may read with `collections=`",
            ))
        }
        None => {}
    }
    let wait = std::time::Duration::from_secs(params.wait.unwrap_or(0).into());
    let _poll = long_poll(&state, &principal, Some(wait))?;
    let updated = async {
        let engine = state.engine.collections();
        Ok(engine
            .updated_across(&basin, names, &cursor, limit, filter.as_ref(), wait)
            .await?)
    };
    let page = principal.unless_lost(updated).await?;
    Ok(json_response(unified_page(
        &page.records,
        &page.next,
        page.caught_up,
    )))
}

/// A JSON body built by the wire layer.
fn json_response(body: Vec<u8>) -> Response {
    ([(header::CONTENT_TYPE, "application/json")], body).into_response()
}
