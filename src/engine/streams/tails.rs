//! Where streams' tails are, told to whoever listens: a cluster's owner
//! sends these to its followers (`src/cluster/`), which serve long polls
//! and read sessions themselves (`replica.rs`).
//!
//! A stream's task publishes a notice each time its visible state moves
//! (from the commit's completion, right after its own readers are told);
//! the committer publishes one when a commit deletes a stream (its state
//! key). A server with no listener pays one atomic load per commit.

use tokio::sync::broadcast;

use super::streamer::Visible;

/// Notices held for a listener that falls behind; past them it is told
/// it lagged, and catches up from storage.
const BACKLOG: usize = 16 * 1024;

/// A stream's visible state moved, or the stream is gone.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TailNotice {
    /// The stream's id (ids are never reused).
    pub id: u64,
    /// `None`: a commit deleted the stream.
    pub visible: Option<Visible>,
}

/// The notices of every stream of one engine.
#[derive(Clone)]
pub struct TailFeed {
    sender: broadcast::Sender<TailNotice>,
}

impl Default for TailFeed {
    fn default() -> Self {
        Self {
            sender: broadcast::Sender::new(BACKLOG),
        }
    }
}

impl TailFeed {
    /// Whether anyone listens (else nothing need be published).
    pub(super) fn listened(&self) -> bool {
        self.sender.receiver_count() > 0
    }

    pub(super) fn publish(&self, notice: TailNotice) {
        if self.listened() {
            let _ = self.sender.send(notice);
        }
    }

    /// Every notice from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<TailNotice> {
        self.sender.subscribe()
    }
}
