//! A collection in use: its events stream, its writer's clock (which
//! decides the watermark), and the documents of writes not yet durable.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use super::keys::Doc;
use super::types::{Horizon, RecordView};
use crate::engine::locks::lock;
use crate::engine::streams::streamer::StreamHandle;
use crate::engine::streams::types::{now_ms, AppendInput};
use crate::storage::WriteBatch;

/// A write ready to commit.
pub(crate) struct PreparedWrite {
    pub(crate) views: Vec<RecordView>,
    /// `None` when nothing changes.
    pub(crate) commit: Option<Commit>,
}

/// What a write commits: the events, the other writes to commit with
/// them, and the new documents by id.
pub(crate) type Commit = (AppendInput, WriteBatch, Vec<(String, Doc)>);

/// A write handed to the events stream and not yet durable: registered in
/// the clock (for the watermark) and in the pending documents, and
/// unregistered when dropped, whatever happens to the write.
pub(crate) struct PendingWrite {
    handle: Arc<CollectionHandle>,
    pub(crate) updated_at: u64,
    ids: Vec<String>,
}

impl PendingWrite {
    /// Assigns the write its `updated_at` and registers it as in flight in
    /// one step under the clock lock: a reader can never compute a
    /// watermark between the two and serve past this write's position.
    pub(crate) fn begin(handle: &Arc<CollectionHandle>) -> Self {
        let mut clock = lock(&handle.clock);
        let updated_at = now_ms().max(clock.last).max(clock.floor);
        clock.last = updated_at;
        *clock.in_flight.entry(updated_at).or_default() += 1;
        Self {
            handle: handle.clone(),
            updated_at,
            ids: Vec::new(),
        }
    }

    /// Makes the write's new documents visible to the writes prepared next.
    /// Should a write fail after later ones were prepared on its documents,
    /// those fail too: a stream's appends fail in a cascade (a storage
    /// failure stops the committer; a deleted stream refuses everything).
    pub(crate) fn hold_docs(&mut self, docs: Vec<(String, Doc)>) {
        let mut pending = lock(&self.handle.pending);
        for (id, doc) in docs {
            let entry = pending.entry(id.clone()).or_insert((doc.clone(), 0));
            entry.0 = doc;
            entry.1 += 1;
            self.ids.push(id);
        }
    }
}

impl Drop for PendingWrite {
    fn drop(&mut self) {
        {
            let mut clock = lock(&self.handle.clock);
            if let Some(count) = clock.in_flight.get_mut(&self.updated_at) {
                *count -= 1;
                if *count == 0 {
                    clock.in_flight.remove(&self.updated_at);
                }
            }
        }
        let mut pending = lock(&self.handle.pending);
        for id in &self.ids {
            if let Some(entry) = pending.get_mut(id) {
                entry.1 -= 1;
                if entry.1 == 0 {
                    pending.remove(id);
                }
            }
        }
    }
}

/// Where the writer's clock stands; see the module docs.
#[derive(Default)]
pub(crate) struct Clock {
    /// The `updated_at` of the last write handed to the events stream.
    pub(crate) last: u64,
    /// No future write gets an `updated_at` below this.
    pub(crate) floor: u64,
    /// Writes handed to the events stream but not yet durable, by
    /// `updated_at` (a count per time).
    pub(crate) in_flight: std::collections::BTreeMap<u64, usize>,
}

/// Documents written by writes that are not yet durable, so that the next
/// write (prepared while they commit) builds on them. Each entry counts the
/// pending writes of that id and holds the newest version.
pub(crate) type PendingDocs = HashMap<String, (Doc, usize)>;

/// A collection in use.
pub struct CollectionHandle {
    pub(crate) id: u64,
    pub(crate) name: String,
    pub(crate) events: Arc<StreamHandle>,
    /// Serializes the preparation of writes (reading current documents and
    /// queueing the events); several writes may be committing at once.
    pub(crate) write_lock: tokio::sync::Mutex<()>,
    pub(crate) clock: Mutex<Clock>,
    pub(crate) pending: Mutex<PendingDocs>,
    /// Bumped after every durable write, for long polls.
    pub(crate) written: tokio::sync::watch::Sender<u64>,
    /// See [`Horizon`]; persisted at [`super::keys::tombstone_horizon_key`].
    pub(crate) horizon: Mutex<Horizon>,
    /// How far (by `updated_at`) expiry has looked for tombstones; in
    /// memory only, so a restart looks again from the horizon.
    pub(crate) expiry_scanned: std::sync::atomic::AtomicU64,
}

impl CollectionHandle {
    /// Whether a write landed in a millisecond the clock has not reached:
    /// it shows on the records stream once the clock gets there.
    pub(crate) fn settling(&self) -> bool {
        lock(&self.clock).last > now_ms()
    }

    /// Everything with `updated_at` below the returned value is final.
    pub(crate) fn watermark(&self) -> u64 {
        let mut clock = lock(&self.clock);
        if let Some((&t, _)) = clock.in_flight.first_key_value() {
            // Should that write fail, later ones still must not land below.
            clock.floor = clock.floor.max(t);
            return t;
        }
        let now = now_ms();
        let mut watermark = now.max(clock.last).max(clock.floor);
        // The last write landed in the current millisecond: close that
        // millisecond now (later writes go to the next one) so a reader
        // sees its own write at once. The floor never gets more than 1 ms
        // ahead of the wall clock this way.
        if watermark == clock.last && clock.last <= now {
            watermark = clock.last + 1;
        }
        clock.floor = clock.floor.max(watermark);
        watermark
    }
}
