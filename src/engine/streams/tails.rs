//! Where streams' tails are, told to whoever listens: a cluster's owner
//! sends these to its followers (`src/cluster/`), which serve long polls
//! and read sessions themselves (`replica.rs`).
//!
//! A stream's task publishes a notice each time its visible state moves
//! (from the commit's completion, right after its own readers are told);
//! the committer publishes one when a commit deletes a stream (its state
//! key). A server with no listener pays a look at the listener count
//! per commit.

use tokio::sync::broadcast;

use super::keys::StreamState;
use super::types::StreamPosition;

/// Notices held for a listener that falls behind; past them it is told
/// it lagged, and catches up from storage.
const BACKLOG: usize = 4096;

/// The part of a stream's state that readers may rely on: all durable.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Visible {
    /// The next seq num, and the timestamp of the last record.
    pub tail: StreamPosition,
    /// Records below this seq num are trimmed and never returned.
    pub trim_point: u64,
    /// Arrival time of the last durable append (or of creation).
    pub last_write_at: u64,
    /// The stream is closed: the tail is final.
    pub closed: bool,
}

impl Visible {
    pub(super) fn of(state: &StreamState) -> Self {
        Self {
            tail: StreamPosition {
                seq_num: state.next_seq_num,
                timestamp: state.last_timestamp,
            },
            trim_point: state.trim_point,
            last_write_at: state.last_write_at,
            closed: state.closed.is_some(),
        }
    }
}

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
