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
//! It needs free space for the live data it rewrites: without that much
//! (and a margin) it is not started, and it is retried a minute later, as
//! after a failed one, so that a nearly full disk is not filled by the
//! very compaction meant to free it.
//!
//! The tombstone counts come from fjall's table metadata, so nothing
//! needs keeping across restarts: tombstones left by a crash are found
//! again.

use std::path::Path;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use fjall::AbstractTree;

use super::kv::{Keyspace, StorageError, StorageResult};

/// Less garbage than this is not worth a flush and a compaction.
const MIN_GARBAGE: u64 = 16 << 20;

/// A compaction writes the live data anew before it lets the old files
/// go: it is started only with this much more free space than that.
const FREE_SPACE_MARGIN: u64 = 256 << 20;

/// After a failed flush or compaction, or one skipped for want of space,
/// reclaiming waits this long before it tries that keyspace again.
const BACKOFF: Duration = Duration::from_secs(60);

/// What upkeep needs, per keyspace, to decide when to reclaim.
#[derive(Default)]
pub(super) struct Reclaimer {
    keyspaces: Mutex<[Track; Keyspace::ALL.len()]>,
}

#[derive(Clone, Copy, Default)]
struct Track {
    /// Deletes written into the active memtable `memtable` (fjall's id):
    /// tombstones no table counts yet. Once that memtable is flushed,
    /// fjall's own table metadata counts them.
    memtable: u64,
    unflushed_deletes: u64,
    /// Tombstones left in the tables right after the last compaction
    /// (ones fjall could not drop yet), so that a compaction that could
    /// not drop them is not repeated every second.
    left_after_compaction: u64,
    /// Not before then, after a failure (see [`BACKOFF`]).
    retry_at: Option<Instant>,
}

impl Reclaimer {
    /// Counts the deletes of a batch just written to `keyspace`.
    pub(super) fn deleted(&self, keyspace: Keyspace, tree: &fjall::Keyspace, count: u64) {
        let memtable = tree.tree.active_memtable().id();
        let mut tracks = self.tracks();
        let track = &mut tracks[keyspace.index()];
        if track.memtable != memtable {
            // fjall rotated it: the deletes counted so far are in tables
            // (or about to be), where `tombstone_count` sees them.
            (track.memtable, track.unflushed_deletes) = (memtable, 0);
        }
        track.unflushed_deletes += count;
    }

    fn tracks(&self) -> std::sync::MutexGuard<'_, [Track; Keyspace::ALL.len()]> {
        self.keyspaces.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Flushes (with `flush`) and compacts the keyspaces that deletes left
    /// mostly garbage (see the module), if the disk under `dir` has room
    /// for the rewrite. Blocking: compactions can take seconds. Whether
    /// it compacted any; a failure in one keyspace does not stop the
    /// others (the first is returned after them).
    pub(super) fn run(
        &self,
        dir: &Path,
        keyspaces: &[fjall::Keyspace],
        flush: impl Fn(&fjall::Keyspace) -> StorageResult<()>,
        explain: impl Fn(fjall::Error) -> StorageError,
    ) -> (bool, StorageResult<()>) {
        let (mut compacted, mut first_error) = (false, None);
        for keyspace in Keyspace::ALL {
            match self.run_one(
                dir,
                keyspace,
                &keyspaces[keyspace.index()],
                &flush,
                &explain,
            ) {
                Ok(done) => compacted |= done,
                Err(err) => {
                    self.tracks()[keyspace.index()].retry_at = Some(Instant::now() + BACKOFF);
                    first_error.get_or_insert(err);
                }
            }
        }
        (compacted, first_error.map_or(Ok(()), Err))
    }

    fn run_one(
        &self,
        dir: &Path,
        keyspace: Keyspace,
        tree: &fjall::Keyspace,
        flush: &impl Fn(&fjall::Keyspace) -> StorageResult<()>,
        explain: &impl Fn(fjall::Error) -> StorageError,
    ) -> StorageResult<bool> {
        let track = self.tracks()[keyspace.index()];
        if track.retry_at.is_some_and(|at| Instant::now() < at) {
            return Ok(false);
        }
        let unflushed = if track.memtable == tree.tree.active_memtable().id() {
            track.unflushed_deletes
        } else {
            0
        };
        let entries = tree.tree.approximate_len() as u64;
        let bytes_before = tree.disk_space();
        let entry_bytes = bytes_before / entries.max(1);
        let tombstones = tree.tree.tombstone_count() + unflushed;
        let left = track.left_after_compaction.min(tombstones);
        let garbage = (tombstones - left).saturating_mul(entry_bytes);
        if garbage < MIN_GARBAGE || tombstones.saturating_mul(4) < entries {
            self.tracks()[keyspace.index()].left_after_compaction = left;
            return Ok(false);
        }
        // The rewrite needs room for the live data before the old files go.
        let live = bytes_before.saturating_sub(garbage);
        let free = free_bytes(dir)?;
        if free < live + FREE_SPACE_MARGIN {
            tracing::warn!(
                keyspace = keyspace.name(),
                mib_of_garbage = garbage >> 20,
                mib_free = free >> 20,
                mib_needed = (live + FREE_SPACE_MARGIN) >> 20,
                "not enough free disk space to compact deleted data away; trying again later"
            );
            self.tracks()[keyspace.index()].retry_at = Some(Instant::now() + BACKOFF);
            return Ok(false);
        }
        let started = Instant::now();
        if unflushed > 0 {
            flush(tree)?;
        }
        tree.major_compact().map_err(explain)?;
        let left = tree.tree.tombstone_count();
        {
            let mut tracks = self.tracks();
            let track = &mut tracks[keyspace.index()];
            track.left_after_compaction = left;
            track.retry_at = None;
            if track.memtable == tree.tree.active_memtable().id() {
                // Counted deletes written since the flush stay counted.
                track.unflushed_deletes = track.unflushed_deletes.saturating_sub(unflushed);
            }
        }
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
        Ok(true)
    }
}

/// Free bytes on the file system holding `dir`, for this (unprivileged)
/// process.
fn free_bytes(dir: &Path) -> StorageResult<u64> {
    let stat = rustix::fs::statvfs(dir).map_err(|e| {
        StorageError::Io(format!("cannot read free space of {}: {e}", dir.display()))
    })?;
    Ok(stat.f_bavail.saturating_mul(stat.f_frsize))
}
