//! Giving the disk space of deleted data back (fjall).
//!
//! In an LSM tree a delete writes a tombstone; the value it shadows stays
//! in an older table file until a compaction merges the two. fjall's
//! leveled compaction only runs when a level outgrows its target size,
//! which deletes alone never cause, so a server that deleted most of what
//! it held (a trimmed or deleted stream, expired collection tombstones, a
//! purged collection) would keep the space until enough new data pushed
//! the old tables down — possibly never.
//!
//! So upkeep asks each keyspace, about once a second, how much of it is
//! garbage: its tombstones (in its tables, plus the deletes written since
//! its memtable was last flushed here) times its average entry size. When
//! that reaches a quarter of the keyspace and at least [`MIN_GARBAGE`],
//! the memtable is flushed (so that its tombstones are in tables, and the
//! journal holding them can be let go) and the keyspace is compacted
//! whole: a major compaction into the last level, which drops every
//! shadowed value and then the tombstones themselves. Rewriting the live
//! data is the cost; at a garbage ratio of at least a quarter it is at
//! most three times what is freed, and it happens only after deletes.
//! (The average entry size is an estimate: a keyspace whose large values
//! were deleted and small ones kept is compacted a little late.)
//!
//! While it runs, fjall's other compactions of that keyspace wait (writes
//! go on; after about 20 flushes without compaction fjall slows them).
//!
//! The tombstone counts come from fjall's table metadata, so nothing
//! needs keeping across restarts: tombstones left by a crash are found
//! again.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Instant;

use fjall::AbstractTree;

use super::kv::{Keyspace, StorageError, StorageResult};

/// Less garbage than this is not worth a flush and a compaction.
const MIN_GARBAGE: u64 = 16 << 20;

/// Per keyspace: what upkeep needs to decide when to reclaim.
#[derive(Default)]
pub(super) struct Reclaimer {
    /// Deletes written since the memtable was last flushed for reclaiming.
    unflushed_deletes: [AtomicU64; Keyspace::ALL.len()],
    /// Tombstones left in the tables right after the last compaction
    /// (ones fjall could not drop yet), so that a compaction that could
    /// not drop them is not repeated every second.
    left_after_compaction: Mutex<[u64; Keyspace::ALL.len()]>,
}

impl Reclaimer {
    /// Counts the deletes of a batch written to `keyspace`.
    pub(super) fn deleted(&self, keyspace: Keyspace, count: u64) {
        self.unflushed_deletes[keyspace.index()].fetch_add(count, Ordering::Relaxed);
    }

    /// Flushes (with `flush`) and compacts the keyspaces that deletes left
    /// mostly garbage (see the module). Blocking: compactions can take
    /// seconds. Whether it compacted any.
    pub(super) fn run(
        &self,
        keyspaces: &[fjall::Keyspace],
        flush: impl Fn(&fjall::Keyspace) -> StorageResult<()>,
        explain: impl Fn(fjall::Error) -> StorageError,
    ) -> StorageResult<bool> {
        let mut compacted = false;
        for keyspace in Keyspace::ALL {
            let tree = &keyspaces[keyspace.index()];
            let unflushed = &self.unflushed_deletes[keyspace.index()];
            let entries = tree.tree.approximate_len() as u64;
            let bytes_before = tree.disk_space();
            let entry_bytes = bytes_before / entries.max(1);
            let tombstones = tree.tree.tombstone_count() + unflushed.load(Ordering::Relaxed);
            let mut left = self.left_after(keyspace);
            if tombstones < left {
                // fjall's own compactions dropped some since.
                left = tombstones;
                self.set_left_after(keyspace, left);
            }
            let garbage = (tombstones - left).saturating_mul(entry_bytes);
            if garbage < MIN_GARBAGE || tombstones.saturating_mul(4) < entries {
                continue;
            }
            let started = Instant::now();
            if unflushed.swap(0, Ordering::Relaxed) > 0 {
                flush(tree)?;
            }
            tree.major_compact().map_err(&explain)?;
            compacted = true;
            let left = tree.tree.tombstone_count();
            self.set_left_after(keyspace, left);
            tracing::info!(
                keyspace = keyspace.name(),
                tombstones,
                entries,
                mib_before = bytes_before >> 20,
                mib_after = tree.disk_space() >> 20,
                tombstones_left = left,
                ms = started.elapsed().as_millis() as u64,
                "compacted a keyspace to give deleted data's space back"
            );
        }
        Ok(compacted)
    }

    fn left_after(&self, keyspace: Keyspace) -> u64 {
        self.left_after_compaction
            .lock()
            .unwrap_or_else(|e| e.into_inner())[keyspace.index()]
    }

    fn set_left_after(&self, keyspace: Keyspace, left: u64) {
        self.left_after_compaction
            .lock()
            .unwrap_or_else(|e| e.into_inner())[keyspace.index()] = left;
    }
}
