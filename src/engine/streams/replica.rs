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

use std::sync::Arc;

use super::core::StreamCore;
use super::followed::FollowedStreams;
use super::keys::{self, BasinMeta, StreamState};
use super::streamer::StreamHandle;
use super::tails::{TailNotice, Visible};
use crate::engine::error::{EngineError, EngineResult};

/// How often a replica reads the access tokens again (the owner issues
/// and revokes them): how long a revoked token may still open a session
/// on a follower.
pub const TOKENS_RELOADED_EVERY: std::time::Duration = std::time::Duration::from_secs(1);

impl StreamCore {
    /// The stream `(basin, name)` as a replica follows it: looked up in
    /// storage the first time (`basin_not_found`, `stream_not_found`: not
    /// there yet, as far as this node can tell), and its state read again
    /// every time: a read starts from a tail at least as recent as every
    /// append acknowledged before it began (an acknowledgement follows its
    /// commit), not from the last notice heard.
    pub(super) fn replica_stream(
        &self,
        replica: &FollowedStreams,
        basin: &str,
        name: &str,
    ) -> EngineResult<Arc<StreamHandle>> {
        let handle = match replica.handle(basin, name) {
            Some(handle) => handle,
            None => {
                self.get_meta::<BasinMeta>(&keys::basin_key(basin))?
                    .ok_or_else(|| EngineError::BasinNotFound(basin.into()))?;
                let meta = self
                    .stream_meta(basin, name)?
                    .ok_or_else(|| EngineError::StreamNotFound(name.into()))?;
                // Followed first, read after: a notice sent in between is
                // applied, and the read covers anything before it.
                replica.follow(meta.id, (basin, name))
            }
        };
        let state = self.get_meta::<StreamState>(&keys::state_key(handle.id))?;
        // `None`: deleted since; its readers end.
        replica.apply(TailNotice {
            id: handle.id,
            visible: state.as_ref().map(Visible::of),
        });
        match state {
            Some(_) => Ok(handle),
            None => Err(EngineError::StreamNotFound(name.into())),
        }
    }

    /// Whether this core is a replica's.
    pub fn is_replica(&self) -> bool {
        self.replica.is_some()
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
    /// the access tokens, if `TOKENS_RELOADED_EVERY` has passed. For
    /// when notices may have been missed: the owner's feed (re)started,
    /// fell behind, or is down. Blocks on storage.
    pub fn refresh_replica(&self) -> EngineResult<()> {
        let Some(replica) = &self.replica else {
            return Ok(());
        };
        replica.forget_unused();
        for id in replica.followed() {
            // A stream's state key goes with the stream (and ids are never
            // reused): its absence says the stream was deleted.
            match self.get_meta::<StreamState>(&keys::state_key(id)) {
                Ok(state) => replica.apply(TailNotice {
                    id,
                    visible: state.as_ref().map(Visible::of),
                }),
                // Read again next time; the others are read meanwhile.
                Err(err) => tracing::warn!(%err, id, "reading a followed stream's state failed"),
            }
        }
        if replica.tokens_due(TOKENS_RELOADED_EVERY) {
            self.reload_access_tokens()?;
        }
        Ok(())
    }
}
