//! What the collections layer takes and gives: configs, records as
//! clients see them, write operations, change events, cursors.

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::engine::error::{EngineError, EngineResult};
use crate::engine::streams::names::{name_type, validate_stream_name};
use crate::engine::streams::types::SequencedRecord;
use crate::storage::StorageError;

/// Writes per batch request.
pub const MAX_WRITE_OPS: usize = 1000;
/// Longest record id, in bytes.
pub const MAX_RECORD_ID_BYTES: usize = 512;
/// Largest record data, as JSON.
pub const MAX_RECORD_BYTES: usize = 256 * 1024;
/// Records per `/updated` page.
pub const MAX_PAGE: usize = 1000;
pub const DEFAULT_PAGE: usize = 100;
/// Tombstones removed per committed batch.
pub(super) const EXPIRY_CHUNK: usize = 4096;
/// Streams whose names start with this belong to collections.
pub const EVENTS_STREAM_PREFIX: &str = "_collections/";

/// The stream that holds `collection`'s change events.
pub fn events_stream_name(collection: &str) -> String {
    format!("{EVENTS_STREAM_PREFIX}{collection}/events")
}

name_type!(
    /// A collection name: a stream name without `/` (its events stream is
    /// `_collections/{name}/events`).
    CollectionName,
    validate_collection_name
);

fn validate_collection_name(name: &str) -> EngineResult<()> {
    validate_stream_name(name)?;
    if name.contains('/') {
        return Err(EngineError::Invalid(
            "a collection name may not contain `/`".into(),
        ));
    }
    Ok(())
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CollectionConfig {
    /// How long deleted records stay visible as tombstones.
    pub tombstone_retention_secs: u64,
}

impl Default for CollectionConfig {
    fn default() -> Self {
        Self {
            tombstone_retention_secs: 7 * 24 * 3600,
        }
    }
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CollectionConfigPatch {
    #[serde(default)]
    pub tombstone_retention_secs: Option<u64>,
}

impl CollectionConfig {
    pub fn apply(mut self, patch: &CollectionConfigPatch) -> Self {
        if let Some(secs) = patch.tombstone_retention_secs {
            self.tombstone_retention_secs = secs;
        }
        self
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CollectionInfo {
    pub name: String,
    pub config: CollectionConfig,
    pub created_at: u64,
    pub events_stream: String,
}

// A record as clients see it, and as the records stream stores it; and a
// change event, as the events stream stores it (the record body). Their
// JSON is shared with the client: `rill-protocol` defines it.
pub use rill_protocol::collections::{Event, EventKind, Record as RecordView};

/// A record as the records stream stores it: its position, and the JSON a
/// client gets, kept ready so that paging copies bytes instead of decoding
/// and re-encoding every record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RawRecord {
    pub updated_at: u64,
    pub id: String,
    /// A [`RecordView`] as JSON.
    pub json: Bytes,
}

impl RawRecord {
    pub fn view(&self) -> EngineResult<RecordView> {
        Ok(crate::engine::streams::keys::decode_json(&self.json)?)
    }
}

/// One write in a batch.
#[derive(Clone, Debug)]
pub enum WriteOp {
    Upsert {
        id: String,
        data: Map<String, Value>,
        expected_version: Option<u64>,
    },
    Delete {
        id: String,
        expected_version: Option<u64>,
    },
}

impl WriteOp {
    pub(super) fn id(&self) -> &str {
        match self {
            WriteOp::Upsert { id, .. } | WriteOp::Delete { id, .. } => id,
        }
    }
}

/// An events-stream record as the event clients see: the stored event
/// with the record's `seq_num` and `timestamp` added. The events endpoint
/// and consumers of an events feed both read events this way.
pub fn event_json(record: &SequencedRecord) -> EngineResult<Map<String, Value>> {
    let mut event: Map<String, Value> = serde_json::from_slice(&record.body)
        .map_err(|e| StorageError::Corrupt(format!("a stored event is malformed: {e}")))?;
    event.insert("seq_num".into(), record.seq_num.into());
    event.insert("timestamp".into(), record.timestamp.into());
    Ok(event)
}

/// A position in the records stream: strictly after `(updated_at, id)`;
/// without an id, strictly after every record at `updated_at`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Cursor {
    pub updated_after: u64,
    pub after_id: Option<String>,
    /// When the consumer's sync began (epoch ms), carried in the opaque
    /// token; 0 when unknown (the cursor pair form). See [`Horizon`].
    pub started_at: u64,
}

impl Cursor {
    /// A cursor at the very beginning: a full sync, always allowed.
    pub fn is_start(&self) -> bool {
        self.updated_after == 0 && self.after_id.is_none()
    }
}

/// A position across collections: strictly after `(updated_after,
/// collection, id)`; without `after`, strictly after every record at
/// `updated_after`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct UnifiedCursor {
    pub updated_after: u64,
    pub after: Option<(String, String)>,
    /// As in [`Cursor`].
    pub started_at: u64,
}

impl UnifiedCursor {
    pub fn is_start(&self) -> bool {
        self.updated_after == 0 && self.after.is_none()
    }
}

/// How far a collection's tombstones have been removed: those with
/// `updated_at` below `below` are gone, the last of them removed at
/// `moved_at`. A consumer that began its sync before `moved_at` and is
/// still below `below` may have missed a deletion: it gets a 410. One that
/// began after never knew the removed records, so it may go on.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Horizon {
    pub below: u64,
    pub moved_at: u64,
}

impl Horizon {
    pub(super) fn check(&self, position: u64, started_at: u64, is_start: bool) -> EngineResult<()> {
        if is_start || self.below == 0 || started_at >= self.moved_at || position >= self.below {
            Ok(())
        } else {
            Err(EngineError::CursorExpired(self.below))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn object(value: Value) -> Map<String, Value> {
        value.as_object().cloned().expect("an object")
    }

    /// Records-stream entries and stored events are this JSON on disk: the
    /// bytes must not change (field names and order included).
    #[test]
    fn stored_json_is_unchanged() {
        let view = RecordView {
            collection: "users".into(),
            id: "u1".into(),
            data: object(json!({ "name": "Ada", "age": 36 })),
            version: 2,
            created_at: 1_700_000_000_000,
            updated_at: 1_700_000_000_005,
            deleted: false,
        };
        let view_json = r#"{"collection":"users","id":"u1","data":{"age":36,"name":"Ada"},"version":2,"created_at":1700000000000,"updated_at":1700000000005,"deleted":false}"#;
        assert_eq!(serde_json::to_string(&view).unwrap(), view_json);
        assert_eq!(serde_json::from_str::<RecordView>(view_json).unwrap(), view);

        let updated = Event {
            event: EventKind::Updated,
            id: "u1".into(),
            data: object(json!({ "name": "Ada", "age": 36 })),
            changes: Some(object(json!({ "age": 35, "email": null }))),
            version: 2,
            updated_at: 1_700_000_000_005,
        };
        let updated_json = r#"{"event":"updated","id":"u1","data":{"age":36,"name":"Ada"},"changes":{"age":35,"email":null},"version":2,"updated_at":1700000000005}"#;
        assert_eq!(serde_json::to_string(&updated).unwrap(), updated_json);
        assert_eq!(
            serde_json::from_str::<Event>(updated_json).unwrap(),
            updated
        );

        for (kind, name) in [
            (EventKind::Created, "created"),
            (EventKind::Deleted, "deleted"),
        ] {
            let event = Event {
                event: kind,
                id: "u2".into(),
                data: Map::new(),
                changes: None,
                version: 1,
                updated_at: 7,
            };
            let json =
                format!(r#"{{"event":"{name}","id":"u2","data":{{}},"version":1,"updated_at":7}}"#);
            assert_eq!(serde_json::to_string(&event).unwrap(), json);
            assert_eq!(serde_json::from_str::<Event>(&json).unwrap(), event);
        }
    }
}
