//! The streams a replica follows (`replica.rs`), by name for its readers
//! and by id for the owner's notices, each with the visible state its
//! readers wait on.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::watch;

use super::streamer::{self, StreamHandle};
use super::tails::{TailNotice, Visible};
use crate::engine::locks::lock;

/// The streams a replica follows.
#[derive(Default)]
pub(crate) struct FollowedStreams {
    followed: Mutex<Followed>,
    /// When the access tokens were last read.
    tokens_read: Mutex<Option<Instant>>,
}

#[derive(Default)]
struct Followed {
    by_name: HashMap<(String, String), Arc<StreamHandle>>,
    by_id: HashMap<u64, watch::Sender<Visible>>,
}

impl Followed {
    fn close(&mut self, id: u64) {
        // Dropping the sender ends the readers: the stream is gone.
        self.by_id.remove(&id);
        self.by_name.retain(|_, handle| handle.id != id);
    }
}

impl FollowedStreams {
    /// Whether the access tokens were read longer than `every` ago (or
    /// never); if so, they count as read now.
    pub(super) fn tokens_due(&self, every: Duration) -> bool {
        let mut read = lock(&self.tokens_read);
        let due = read.is_none_or(|at| at.elapsed() >= every);
        if due {
            *read = Some(Instant::now());
        }
        due
    }

    /// Raises the visible state of the stream `notice` is about, or ends
    /// its readers if it was deleted. Streams not followed are ignored.
    pub(crate) fn apply(&self, notice: TailNotice) {
        let mut followed = lock(&self.followed);
        match notice.visible {
            Some(visible) => {
                if let Some(sender) = followed.by_id.get(&notice.id) {
                    raise(sender, visible);
                }
            }
            None => followed.close(notice.id),
        }
    }

    pub(super) fn handle(&self, basin: &str, name: &str) -> Option<Arc<StreamHandle>> {
        lock(&self.followed)
            .by_name
            .get(&(basin.to_string(), name.to_string()))
            .cloned()
    }

    /// The handle of stream `id`, followed from now on. Its visible state
    /// starts empty: the caller reads the stream's and raises it.
    pub(super) fn follow(&self, id: u64, (basin, name): (&str, &str)) -> Arc<StreamHandle> {
        let mut followed = lock(&self.followed);
        let key = (basin.to_string(), name.to_string());
        if let Some(handle) = followed.by_name.get(&key).filter(|h| h.id == id) {
            return handle.clone();
        }
        let receiver = match followed.by_id.get(&id) {
            Some(sender) => sender.subscribe(),
            None => {
                let (sender, receiver) = watch::channel(Visible::default());
                followed.by_id.insert(id, sender);
                receiver
            }
        };
        let handle = streamer::replica_handle(id, (basin, name), receiver);
        followed.by_name.insert(key, handle.clone());
        handle
    }

    /// Forgets the streams no reader uses: no one holds their handles
    /// but this map, and their channels have no receiver but those
    /// handles'.
    pub(super) fn forget_unused(&self) {
        let mut followed = lock(&self.followed);
        // Per id: how many handles this map keeps, and whether any is
        // held elsewhere too.
        let mut kept: HashMap<u64, (usize, bool)> = HashMap::new();
        for handle in followed.by_name.values() {
            let entry = kept.entry(handle.id).or_default();
            entry.0 += 1;
            entry.1 |= Arc::strong_count(handle) > 1;
        }
        let unused: Vec<u64> = followed
            .by_id
            .iter()
            .filter(|(id, sender)| {
                let (handles, held) = kept.get(id).copied().unwrap_or_default();
                !held && sender.receiver_count() <= handles
            })
            .map(|(id, _)| *id)
            .collect();
        for id in unused {
            followed.close(id);
        }
    }

    /// The ids of the streams followed.
    pub(super) fn followed(&self) -> Vec<u64> {
        lock(&self.followed).by_id.keys().copied().collect()
    }
}

/// Moves `sender`'s state forward to `new`, never back: each part of a
/// visible state only grows, and notices and reads of storage may arrive
/// out of order.
fn raise(sender: &watch::Sender<Visible>, new: Visible) {
    sender.send_if_modified(|current| {
        let mut merged = *current;
        if (new.tail.seq_num, new.tail.timestamp) > (merged.tail.seq_num, merged.tail.timestamp) {
            merged.tail = new.tail;
        }
        merged.trim_point = merged.trim_point.max(new.trim_point);
        merged.last_write_at = merged.last_write_at.max(new.last_write_at);
        merged.closed |= new.closed;
        let changed = merged != *current;
        *current = merged;
        changed
    });
}
