//! Streams as a follower sees them: a cluster node that does not own the
//! database serves long polls and read sessions itself (`src/cluster/`),
//! reading records from the shared storage up to tails the owner tells it
//! of (`tails.rs`).
//!
//! A core opened as a replica writes nothing. A stream it is asked for is
//! looked up in storage, not in memory (its basins and streams may have
//! been made after it started), and followed: its visible state starts as
//! storage has it and only moves forward, raised by the owner's notices or
//! by reading storage again ([`StreamCore::refresh_replica`], which the
//! node calls when the feed from the owner (re)starts or is down). A
//! notice that a commit deleted the stream ends its readers, as on the
//! owner.
//!
//! A visible state read from storage can be ahead of what the owner has
//! acknowledged (its commit is durable, the completion not yet run), never
//! ahead of what is durable, so a follower never shows a record that could
//! be lost.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio::sync::watch;

use super::core::StreamCore;
use super::keys::{self, BasinMeta, StreamState};
use super::streamer::{self, StreamHandle, Visible};
use super::tails::TailNotice;
use crate::engine::error::{EngineError, EngineResult};
use crate::engine::locks::lock;

/// The streams a replica follows.
#[derive(Default)]
pub(crate) struct Replica {
    followed: Mutex<Followed>,
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

impl Replica {
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

    fn handle(&self, basin: &str, name: &str) -> Option<Arc<StreamHandle>> {
        lock(&self.followed)
            .by_name
            .get(&(basin.to_string(), name.to_string()))
            .cloned()
    }

    fn follow(&self, id: u64, (basin, name): (&str, &str), visible: Visible) -> Arc<StreamHandle> {
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
    fn forget_unused(&self) {
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

    fn followed(&self) -> Vec<(u64, String, String)> {
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

impl StreamCore {
    /// The stream `(basin, name)` as a replica follows it: looked up in
    /// storage the first time (`basin_not_found`, `stream_not_found`: not
    /// there yet, as far as this node can tell).
    pub(super) fn replica_stream(
        &self,
        replica: &Replica,
        basin: &str,
        name: &str,
    ) -> EngineResult<Arc<StreamHandle>> {
        if let Some(handle) = replica.handle(basin, name) {
            return Ok(handle);
        }
        self.get_meta::<BasinMeta>(&keys::basin_key(basin))?
            .ok_or_else(|| EngineError::BasinNotFound(basin.into()))?;
        let meta = self
            .stream_meta(basin, name)?
            .ok_or_else(|| EngineError::StreamNotFound(name.into()))?;
        let state: StreamState = self
            .get_meta(&keys::state_key(meta.id))?
            .ok_or_else(|| EngineError::StreamNotFound(name.into()))?;
        Ok(replica.follow(meta.id, (basin, name), Visible::of(&state)))
    }

    /// Tells a replica of a notice from the owner (nothing, if this core
    /// is not one).
    pub fn apply_tail_notice(&self, notice: TailNotice) {
        if let Some(replica) = &self.replica {
            replica.apply(notice);
        }
    }

    /// Reads the state of every stream a replica follows again, ending
    /// the readers of those deleted, and forgets those no one reads; then
    /// the access tokens. For when notices may have been missed: the
    /// owner's feed (re)started, fell behind, or is down. Blocks on
    /// storage.
    pub fn refresh_replica(&self) -> EngineResult<()> {
        let Some(replica) = &self.replica else {
            return Ok(());
        };
        replica.forget_unused();
        for (id, basin, name) in replica.followed() {
            let state = match self.stream_meta(&basin, &name)? {
                Some(meta) if meta.id == id => {
                    self.get_meta::<StreamState>(&keys::state_key(id))?
                }
                _ => None,
            };
            replica.apply(TailNotice {
                id,
                visible: state.as_ref().map(Visible::of),
            });
        }
        self.reload_access_tokens()
    }
}
