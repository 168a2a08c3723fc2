//! A consumer's state: what is durable about it, what a handle holds in
//! memory, and what operations hand back.

use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use super::config::{ConsumerConfig, Source};
use super::keys;
use super::message::Message;
use super::pending::Pending;
use super::position::{Frontier, Position};
use crate::engine::error::{EngineError, EngineResult};
use crate::storage::{Keyspace, WriteBatch};

/// What is durable about a consumer besides its config: how far it has
/// read (explicit) or committed (cursor), and running totals.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConsumerProgress {
    pub frontier: Frontier,
    #[serde(default)]
    pub delivered: u64,
    #[serde(default)]
    pub redelivered: u64,
    #[serde(default)]
    pub acked: u64,
    #[serde(default)]
    pub nacked: u64,
    #[serde(default)]
    pub dead_lettered: u64,
    /// Pending messages that vanished from the source before they were
    /// acked: trimmed from a stream, or superseded by a newer version of
    /// the record (records feed; the newer version is delivered instead).
    #[serde(default)]
    pub dropped: u64,
}

/// A records feed's lag is counted by scanning the feed (see `lag.rs`), up
/// to this many: a consumer further behind says this many. Its
/// `seconds` still tells how far behind it is.
pub const MAX_COUNTED_LAG: u64 = 10_000;

/// How far behind a consumer is.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Lag {
    /// Messages not yet done with, filtered ones included (a records feed
    /// counts up to [`MAX_COUNTED_LAG`]).
    pub messages: u64,
    /// How long the first of them has waited since it entered the source
    /// (its timestamp; a record's `updated_at`), in seconds; 0 with none.
    pub seconds: f64,
}

/// A consumer as listed, and with `stats` as got.
#[derive(Clone, Debug)]
pub struct ConsumerInfo {
    pub name: String,
    pub created_at: u64,
    pub config: ConsumerConfig,
    pub dead_letter_stream: String,
    pub stats: Option<ConsumerStats>,
}

#[derive(Clone, Debug)]
pub struct ConsumerStats {
    /// Explicit: the first message not yet acked (`None`: all read is
    /// acked). Cursor: not set.
    pub ack_floor: Option<Position>,
    /// Explicit: how far the source has been read. Cursor: the committed
    /// position.
    pub frontier: Frontier,
    pub pending: usize,
    pub in_flight: usize,
    pub progress: ConsumerProgress,
    /// How far behind it is (see `lag.rs`); `None` when its source is
    /// gone.
    pub lag: Option<Lag>,
}

/// Which delivery an ack settles: the consumer, the message, and which
/// delivery of it. Once the message is delivered again, the id is
/// expired. The wire layer makes it the opaque id workers pass back.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AckId {
    pub consumer_id: u64,
    pub deliveries: u32,
    pub position: Position,
}

/// A message handed to a worker.
#[derive(Clone, Debug)]
pub struct Delivery {
    /// What acks, nacks or extends this delivery (explicit ack policy).
    pub ack_id: Option<AckId>,
    pub delivery_count: u32,
    pub message: Message,
}

/// How a worker settles delivered messages.
#[derive(Clone, Copy, Debug)]
pub enum Settle {
    Ack,
    Nack {
        delay_ms: u64,
    },
    Extend,
    /// To the dead-letter stream at once (`reject.rs`).
    Reject,
}

pub struct ConsumerHandle {
    pub(super) id: u64,
    pub(super) source: Source,
    pub(super) source_id: u64,
    pub(super) created_at: u64,
    pub(super) state: tokio::sync::Mutex<State>,
    /// Bumped when an ack, nack, commit or reconfiguration may let a
    /// waiting receive deliver.
    pub(super) changed: watch::Sender<u64>,
}

pub(super) struct State {
    pub(super) config: ConsumerConfig,
    pub(super) deleted: bool,
    /// Taken out of use after a failure (see `retire`): operations that
    /// still hold this handle ask the client to try again.
    pub(super) retired: bool,
    pub(super) progress: ConsumerProgress,
    pub(super) pending: Pending,
    pub(super) lease: CursorLease,
}

impl State {
    pub(super) fn check_live(&self, name: &str) -> EngineResult<()> {
        if self.deleted {
            Err(EngineError::ConsumerNotFound(name.into()))
        } else if self.retired {
            Err(EngineError::Unavailable)
        } else {
            Ok(())
        }
    }
}

/// A cursor consumer's hand-outs since its last commit (memory only: after
/// a restart, workers resume at the committed position).
pub(super) struct CursorLease {
    /// The next position to hand out.
    pub(super) fetch: Frontier,
    /// The furthest position ever handed out; below it is a redelivery.
    pub(super) highest: Frontier,
    /// When positions past the committed one were first handed out.
    pub(super) since: Option<u64>,
    /// Times the hand-outs were taken back since the last commit past
    /// `highest`.
    pub(super) resets: u32,
}

impl CursorLease {
    pub(super) fn new(committed: &Frontier) -> Self {
        Self {
            fetch: committed.clone(),
            highest: committed.clone(),
            since: None,
            resets: 0,
        }
    }
}

/// The writes an operation queues for its state change.
#[derive(Default)]
pub(super) struct StateWrites {
    pub(super) positions: Vec<Position>,
    pub(super) progress: bool,
}

impl StateWrites {
    pub(super) fn is_empty(&self) -> bool {
        self.positions.is_empty() && !self.progress
    }

    pub(super) fn batch(&self, consumer_id: u64, state: &State) -> WriteBatch {
        let mut batch = WriteBatch::default();
        for position in &self.positions {
            let key = keys::consumer_pending_key(consumer_id, &position.to_bytes());
            match state.pending.get(position) {
                Some(entry) => batch.put(Keyspace::Meta, key, keys::encode_json(entry)),
                None => batch.delete(Keyspace::Meta, key),
            }
        }
        batch.put(
            Keyspace::Meta,
            keys::consumer_progress_key(consumer_id),
            keys::encode_json(&state.progress),
        );
        batch
    }
}
