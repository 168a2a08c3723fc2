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

    pub(super) fn follow(
        &self,
        id: u64,
        (basin, name): (&str, &str),
        visible: Visible,
    ) -> Arc<StreamHandle> {
        let mut followed = lock(&self.followed);
        let key = (basin.to_string(), name.to_string());
        if let Some(handle) = followed.by_name.get(&key) {
            if handle.id == id {
                if let Some(sender) = followed.by_id.get(&id) {
                    raise(sender, visible);
                }
                return handle.clone();
            }
        }
        let receiver = match followed.by_id.get(&id) {
            Some(sender) => {
                raise(sender, visible);
                sender.subscribe()
            }
            None => {
                let (sender, receiver) = watch::channel(visible);
                followed.by_id.insert(id, sender);
                receiver
            }
        };
        let handle = streamer::replica_handle(id, (basin, name), receiver);
        followed.by_name.insert(key, handle.clone());
        handle
    }

    /// Forgets the streams no reader uses (the handle kept here holds one
    /// receiver of its own).
    pub(super) fn forget_unused(&self) {
        let mut followed = lock(&self.followed);
        let unused: Vec<u64> = followed
            .by_name
            .values()
            .filter(|handle| Arc::strong_count(handle) == 1)
            .map(|handle| handle.id)
            .filter(|id| {
                followed
                    .by_id
                    .get(id)
                    .is_none_or(|sender| sender.receiver_count() <= 1)
            })
            .collect();
        for id in unused {
            followed.close(id);
        }
    }

    pub(super) fn followed(&self) -> Vec<(u64, String, String)> {
        lock(&self.followed)
            .by_name
            .iter()
            .map(|((basin, name), handle)| (handle.id, basin.clone(), name.clone()))
            .collect()
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
