//! How many bytes each stream stores: the metered size of its records
//! still on disk, for the metrics API's `storage` sets and the console.
//!
//! Counted as it changes, never found by scanning on demand: a stream's
//! state carries the metered bytes of every record ever appended to it
//! (`appended_bytes`, written by its task in the batch that writes the
//! records), and `Y{id}` the bytes purging has removed (written by upkeep
//! in the batch that deletes them). What the stream stores is the
//! difference. Each counter has one writer (the stream's task; upkeep,
//! one pass at a time), so neither needs a lock of its own; the
//! difference read between two commits is exact for the durable state.
//!
//! Records below the trim point count until purging removes them: they
//! take space until then.

use std::collections::BTreeMap;

use super::core::StreamCore;
use super::keys::{self, StreamState};
use super::size_counters::purged_bytes;
use crate::engine::error::EngineResult;

/// Stored bytes by basin, then by stream.
pub type StoredBytes = BTreeMap<String, BTreeMap<String, u64>>;

impl StreamCore {
    /// The metered bytes the stream stores; `None` if it does not exist.
    pub fn stored_bytes(&self, basin: &str, stream: &str) -> EngineResult<Option<u64>> {
        let Some(meta) = self.stream_meta(basin, stream)? else {
            return Ok(None);
        };
        self.stored_bytes_of(meta.id).map(Some)
    }

    /// The metered bytes a basin's streams store together.
    pub fn basin_stored_bytes(&self, basin: &str) -> EngineResult<u64> {
        let mut total = 0;
        for (_, meta) in self.all_stream_metas(basin)? {
            total += self.stored_bytes_of(meta.id)?;
        }
        Ok(total)
    }

    /// The basins that hold at least one stream now.
    pub fn basins_with_streams(&self) -> EngineResult<Vec<String>> {
        let mut found = Vec::new();
        for basin in self.basin_names() {
            let any: Vec<(String, serde_json::Value)> =
                self.scan_named_meta(&keys::stream_prefix(&basin), "", "", 1)?;
            if !any.is_empty() {
                found.push(basin);
            }
        }
        Ok(found)
    }

    /// Every stream's stored bytes (internal streams too: a collection's
    /// events stream and a consumer's dead letters take space as well).
    pub fn all_stored_bytes(&self) -> EngineResult<StoredBytes> {
        let mut all = StoredBytes::new();
        for basin in self.basin_names() {
            let mut streams = BTreeMap::new();
            for (name, meta) in self.all_stream_metas(&basin)? {
                streams.insert(name, self.stored_bytes_of(meta.id)?);
            }
            all.insert(basin, streams);
        }
        Ok(all)
    }

    fn stored_bytes_of(&self, id: u64) -> EngineResult<u64> {
        let appended = self
            .get_meta::<StreamState>(&keys::state_key(id))?
            .and_then(|state| state.appended_bytes)
            .unwrap_or(0);
        Ok(appended.saturating_sub(purged_bytes(&*self.storage, id)?))
    }
}
