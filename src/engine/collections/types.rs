//! What the collections layer takes and gives: configs, records as
//! clients see them, write operations, change events, cursors.

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::keys::{self, Doc};
use crate::engine::error::{EngineError, EngineResult};
use crate::engine::streams::types::SequencedRecord;
use crate::storage::StorageError;

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

/// A record as clients see it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RecordView {
    pub collection: String,
    pub id: String,
    pub data: Map<String, Value>,
    pub version: u64,
    pub created_at: u64,
    pub updated_at: u64,
    pub deleted: bool,
}

impl RecordView {
    pub(super) fn new(collection: &str, id: &str, doc: Doc) -> Self {
        Self {
            collection: collection.to_string(),
            id: id.to_string(),
            data: doc.data,
            version: doc.version,
            created_at: doc.created_at,
            updated_at: doc.updated_at,
            deleted: doc.deleted,
        }
    }
}

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
        Ok(keys::decode_json(&self.json)?)
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

/// A change event, as stored in the events stream (the record body).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Event {
    pub event: EventKind,
    pub id: String,
    /// The new version, or for a delete the version deleted.
    pub data: Map<String, Value>,
    /// For updates: the previous values of the top-level fields that
    /// changed (`null` for fields that were added).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub changes: Option<Map<String, Value>>,
    pub version: u64,
    pub updated_at: u64,
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

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EventKind {
    Created,
    Updated,
    Deleted,
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
