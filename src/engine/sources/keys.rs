//! The sources layer's on-disk layout (the meta keyspace).
//! `docs/ARCHITECTURE.md` describes the same layout in prose; change both
//! together.

use serde::{Deserialize, Serialize};

use super::config::SourceConfig;
use crate::engine::streams::keys::{basin_scoped_key, basin_scoped_prefix};

pub use crate::engine::streams::keys::{decode_json, encode_json};

const SOURCE_TAG: u8 = b'F';
const SOURCE_CURSOR_TAG: u8 = b'G';
const SOURCE_CLEANUP_TAG: u8 = b'H';

/// Every meta-keyspace tag this layer uses.
pub const META_TAGS: &[u8] = &[SOURCE_TAG, SOURCE_CURSOR_TAG, SOURCE_CLEANUP_TAG];

/// `F{basin}\0{source}` → [`SourceMeta`] as JSON.
pub fn source_key(basin: &str, source: &str) -> Vec<u8> {
    basin_scoped_key(SOURCE_TAG, basin, source)
}

pub fn source_prefix(basin: &str) -> Vec<u8> {
    basin_scoped_prefix(SOURCE_TAG, basin)
}

/// `G{basin}\0{source}` → [`SourceCursor`] as JSON: written in the same
/// batch as the collection writes it covers.
pub fn cursor_key(basin: &str, source: &str) -> Vec<u8> {
    basin_scoped_key(SOURCE_CURSOR_TAG, basin, source)
}

/// `H{basin}\0{source}\0{created_at}` → [`SourceMeta`]: a deleted source
/// whose traces upstream (a Postgres replication slot, the publication it
/// made) are still to be removed. Written in the batch that deletes the
/// source, so a crash right after cannot leave a slot that makes Postgres
/// keep its WAL forever; removed once the traces are gone.
pub fn cleanup_key(basin: &str, source: &str, created_at: u64) -> Vec<u8> {
    basin_scoped_key(
        SOURCE_CLEANUP_TAG,
        basin,
        &format!("{source}\0{created_at}"),
    )
}

/// What every [`cleanup_key`] starts with, of every basin.
pub fn cleanup_prefix() -> Vec<u8> {
    vec![SOURCE_CLEANUP_TAG]
}

/// A source's metadata: its config, secrets included.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct SourceMeta {
    pub config: SourceConfig,
    pub created_at: u64,
}

/// Where a source is in its upstream: what to ask for next.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SourceCursor {
    /// The opaque token to send next (token style).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
    /// The last record's `updated_at` and id (updated-after style), as
    /// the upstream wrote them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub updated_after: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub after_id: Option<String>,
    /// Changes taken from the upstream so far.
    #[serde(default)]
    pub changes: u64,
    /// When the cursor last moved (ms since the epoch).
    #[serde(default)]
    pub moved_at: u64,
    /// The `created_at` of the source that wrote it: a cursor a deleted
    /// source's last write left behind is not the new one's.
    #[serde(default)]
    pub source_created_at: u64,
    /// The `created_at` of the collection it was written to: a collection
    /// deleted and made again holds none of what the cursor covers, so the
    /// source starts over.
    #[serde(default)]
    pub collection_created_at: u64,
    /// Postgres: whether the first copy of the tables is done.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub backfilled: bool,
    /// Postgres: the WAL position everything before which is written here
    /// (the end of the last transaction taken, or where the slot began).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lsn: Option<u64>,
    /// Postgres: the tables' oids when they were copied, in the source's
    /// order: a table renamed since is still found.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub table_oids: Vec<u32>,
}
