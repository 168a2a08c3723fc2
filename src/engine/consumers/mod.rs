//! Consumers: the server keeps a reader's position, so that workers (a
//! stateless function included) consume with plain HTTP.
//!
//! A consumer reads its source (a stream, or a collection's events or
//! records feed) from its *frontier* onwards, and hands messages out:
//!
//! - **explicit** ack policy: every message delivered is *pending* until
//!   acked. A pending message comes back after `ack_wait_ms` (or a nack's
//!   delay), goes to the dead-letter stream after `max_deliver` deliveries,
//!   and at most `max_ack_pending` are pending at once. With
//!   `ordered_by_key`, a message waits while an earlier one of its key is
//!   pending. See `pending.rs`.
//! - **cursor** ack policy: workers commit a position; everything before it
//!   is done. Positions handed out but not committed within `ack_wait_ms`
//!   are handed out again, as a Kafka consumer group rebalances.
//!
//! ## Durability and ordering
//!
//! Each consumer's state sits behind one async mutex. An operation changes
//! the state in memory and queues its writes on the committer *while it
//! holds the mutex*, then waits for them outside it. The committer makes
//! writes durable in the order they were queued, so the state on disk is
//! always the in-memory state as of some operation, and no client is told
//! of an outcome before it, and everything it depends on, is durable.
//! Dead-lettering appends to the dead-letter stream with the state change
//! in the same atomic batch, and waits for it under the mutex, so that too
//! keeps its place in line.
//!
//! Lock order: the engine's admin lock before a consumer's mutex, never the
//! other way round; so everything that may take the admin lock (resolving
//! streams and collections) happens before the mutex is taken.

mod admin;
mod config;
mod cursor;
pub mod keys;
mod lag;
mod layer;
mod message;
mod pending;
mod position;
mod receive;
mod reject;
mod replay;
mod settle;
mod source;
mod state;

pub use config::{
    dead_letter_stream, AckPolicy, ConsumerConfig, ConsumerConfigPatch, ConsumerName, Feed, Filter,
    Source, Start, DEAD_LETTER_PREFIX, MAX_ACK_WAIT_MS, MAX_RECEIVE_BATCH,
};
pub use layer::Consumers;
pub use message::{Message, Payload};
pub use position::{Frontier, Position};
pub use replay::{Replayed, MAX_REPLAY};
pub use state::{
    AckId, ConsumerInfo, ConsumerProgress, ConsumerStats, Delivery, Lag, Settle, MAX_COUNTED_LAG,
};
