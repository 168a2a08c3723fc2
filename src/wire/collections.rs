//! The JSON shapes of collections: a collection, batch writes, pages of
//! the records stream, and change events.

use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};

use super::cursor::{encode_cursor, encode_unified_cursor};
use super::json::{rfc3339, Position};
use crate::engine::collections::{
    event_json, Candidate, CollectionConfig, CollectionInfo, Cursor, Filter, RawRecord,
    UnifiedCursor, WriteOp,
};
use crate::engine::error::{EngineError, EngineResult};
use crate::engine::streams::types::{ReadBatch, StreamPosition};

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

/// A record's data: a JSON object, nothing else.
pub fn record_data(data: Value) -> EngineResult<Map<String, Value>> {
    match data {
        Value::Object(map) => Ok(map),
        other => Err(EngineError::Invalid(format!(
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

/// `POST /v1/collections/{c}/records`: upserts and deletes, all or nothing.
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

impl BatchWrite {
    /// The engine's write operations: upserts first, then deletes.
    pub fn into_ops(self) -> EngineResult<Vec<WriteOp>> {
        let mut ops = Vec::with_capacity(self.upserts.len() + self.deletes.len());
        for upsert in self.upserts {
            ops.push(WriteOp::Upsert {
                id: upsert.id,
                data: record_data(upsert.data)?,
                expected_version: upsert.expected_version,
            });
        }
        for delete in self.deletes {
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
        Ok(ops)
    }
}

/// A page of one collection's records stream:
/// `{"records": [...], "next": {"updated_after", "after_id"}, "cursor",
/// "caught_up"}`.
pub fn records_page(records: &[RawRecord], next: &Cursor, caught_up: bool) -> Vec<u8> {
    let next_json = json!({ "updated_after": next.updated_after, "after_id": next.after_id });
    page(records, &next_json, &encode_cursor(next), caught_up)
}

/// A page across collections: as [`records_page`], with `next` also
/// naming the collection.
pub fn unified_page(records: &[RawRecord], next: &UnifiedCursor, caught_up: bool) -> Vec<u8> {
    let (after_collection, after_id) = match &next.after {
        Some((c, i)) => (Some(c), Some(i)),
        None => (None, None),
    };
    let next_json = json!({
        "updated_after": next.updated_after,
        "after_collection": after_collection,
        "after_id": after_id,
    });
    page(records, &next_json, &encode_unified_cursor(next), caught_up)
}

/// Each record's stored JSON is copied in as it is: paging never decodes
/// a record.
fn page(records: &[RawRecord], next: &Value, cursor: &str, caught_up: bool) -> Vec<u8> {
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
    body.extend_from_slice(format!(",\"caught_up\":{caught_up}}}").as_bytes());
    body
}

/// The `event=` filter of the events endpoint: comma-separated types.
pub fn parse_event_kinds(list: &str) -> EngineResult<Vec<String>> {
    let kinds: Vec<String> = list.split(',').map(|k| k.trim().to_string()).collect();
    if let Some(bad) = kinds
        .iter()
        .find(|k| !["created", "updated", "deleted"].contains(&k.as_str()))
    {
        return Err(EngineError::Invalid(format!(
            "unknown event type `{bad}`; expected created, updated or deleted"
        )));
    }
    Ok(kinds)
}

/// The change events of a batch of events-stream records, keeping only
/// the `wanted` types.
pub fn events(batch: &ReadBatch, filter: Option<&Filter>) -> EngineResult<Vec<Value>> {
    let mut events = Vec::with_capacity(batch.records.len());
    for record in &batch.records {
        let event = event_json(record)?;
        if let Some(filter) = filter {
            let empty = Map::new();
            let object = |key: &str| event.get(key).and_then(Value::as_object);
            let candidate = Candidate {
                event: event.get("event").and_then(Value::as_str),
                id: event.get("id").and_then(Value::as_str).unwrap_or_default(),
                data: object("data").unwrap_or(&empty),
                changes: object("changes"),
            };
            if !filter.matches(&candidate) {
                continue;
            }
        }
        events.push(Value::Object(event));
    }
    Ok(events)
}

/// A read of the events stream: `{"events", "next_seq_num", "tail"}`;
/// `next_seq_num` is past every event read, shown or filtered out.
pub fn events_page(
    events: Vec<Value>,
    next_seq_num: Option<u64>,
    tail: Option<StreamPosition>,
) -> Value {
    json!({
        "events": events,
        "next_seq_num": next_seq_num,
        "tail": tail.map(Position::from),
    })
}

/// One batch of an events session (SSE): `{"events", "tail"}`. A session
/// has no way to fail one batch, so a malformed stored event (which only
/// a damaged disk makes) is logged and the batch's events left out.
pub fn events_batch(batch: &ReadBatch, filter: Option<&Filter>) -> Value {
    let events = events(batch, filter).unwrap_or_else(|err| {
        tracing::error!(error = %err, "an events session skipped a batch it could not decode");
        Vec::new()
    });
    json!({ "events": events, "tail": batch.tail.map(Position::from) })
}
