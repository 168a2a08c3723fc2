//! The collections layer's on-disk layout. `docs/ARCHITECTURE.md`
//! describes the same layout in prose; change both together.
//!
//! A collection's keys in the `docs` and records-stream keyspaces start
//! with its id, which comes from the core's id counter: the core's purge
//! marker for that id removes them after the collection is deleted.

use serde::{Deserialize, Serialize};

use super::types::{CollectionConfig, RecordView};
use crate::engine::streams::keys::{basin_scoped_key, basin_scoped_prefix, read_u64, tagged_id};

pub use crate::engine::streams::keys::{decode_json, encode_json};

// Tags of the collections layer's keys in the meta keyspace.
const COLLECTION_TAG: u8 = b'C';
const TOMBSTONE_HORIZON_TAG: u8 = b'K';

/// Every meta-keyspace tag this layer uses.
pub const META_TAGS: &[u8] = &[COLLECTION_TAG, TOMBSTONE_HORIZON_TAG];

/// `C{basin}\0{collection}` → [`CollectionMeta`] as JSON.
pub fn collection_key(basin: &str, collection: &str) -> Vec<u8> {
    basin_scoped_key(COLLECTION_TAG, basin, collection)
}

pub fn collection_prefix(basin: &str) -> Vec<u8> {
    basin_scoped_prefix(COLLECTION_TAG, basin)
}

/// `K{collection id}` → the collection's tombstone horizon (JSON): how far
/// tombstones have been removed, and when.
pub fn tombstone_horizon_key(collection_id: u64) -> Vec<u8> {
    tagged_id(TOMBSTONE_HORIZON_TAG, collection_id)
}

/// Docs keyspace: `{collection id}{record id}` → [`Doc`] as JSON.
pub fn doc_key(collection_id: u64, record_id: &str) -> Vec<u8> {
    let mut key = Vec::with_capacity(8 + record_id.len());
    key.extend_from_slice(&collection_id.to_be_bytes());
    key.extend_from_slice(record_id.as_bytes());
    key
}

/// Records-stream keyspace: `{collection id}{updated_at}{record id}` → the
/// record as clients see it. One entry per record, at its latest change:
/// this is the records stream, ordered by `(updated_at, id)` as the
/// `/updated` cursor pages it.
pub fn records_stream_key(collection_id: u64, updated_at: u64, record_id: &str) -> Vec<u8> {
    let mut key = Vec::with_capacity(16 + record_id.len());
    key.extend_from_slice(&collection_id.to_be_bytes());
    key.extend_from_slice(&updated_at.to_be_bytes());
    key.extend_from_slice(record_id.as_bytes());
    key
}

/// The (updated_at, record id) of a records-stream key.
pub fn parse_records_stream_key(key: &[u8]) -> Option<(u64, String)> {
    let updated_at = read_u64(key.get(8..16)?)?;
    let id = std::str::from_utf8(key.get(16..)?).ok()?.to_string();
    Some((updated_at, id))
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CollectionMeta {
    pub id: u64,
    pub config: CollectionConfig,
    pub created_at: u64,
    /// The stream that holds the collection's change events.
    pub events_stream: String,
}

/// A collection record as stored: its latest version.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Doc {
    pub data: serde_json::Map<String, serde_json::Value>,
    pub version: u64,
    pub created_at: u64,
    pub updated_at: u64,
    pub deleted: bool,
    /// A deleted record whose tombstone has expired: only its version is
    /// kept, so that a later create continues from it.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub expired: bool,
}

impl Doc {
    /// The record `id` of `collection` as clients see it, in this version.
    pub(super) fn view(self, collection: &str, id: &str) -> RecordView {
        RecordView {
            collection: collection.to_string(),
            id: id.to_string(),
            data: self.data,
            version: self.version,
            created_at: self.created_at,
            updated_at: self.updated_at,
            deleted: self.deleted,
        }
    }
}
