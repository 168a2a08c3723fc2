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
//!   pending. See [`pending`].
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
mod pending;
mod position;
mod receive;
mod settle;
mod source;
mod state;

use std::collections::HashMap;
use std::ops::ControlFlow;
use std::sync::{Arc, Mutex};

use tokio::sync::watch;

pub use config::{AckPolicy, ConsumerConfig, ConsumerConfigPatch, Feed, Filter, Source, Start};
pub use position::{Frontier, Position};
pub use source::{Message, Payload};
pub use state::{AckId, ConsumerInfo, ConsumerProgress, ConsumerStats, Delivery, Settle};

use pending::{Entry, Pending};
use source::SourceHandle;
use state::{ConsumerHandle, CursorLease, State};

use crate::engine::collections::Collections;
use crate::engine::error::{EngineError, EngineResult};
use crate::engine::locks::lock;
use crate::engine::streams::committer::Committer;
use crate::engine::streams::config::{
    DeleteOnEmptyConfig, StreamConfig, TimestampingConfig, TimestampingMode,
};
use crate::engine::streams::{ScopedName, StreamCore};
use crate::storage::{prefix_end, Keyspace, Storage, WriteBatch};

/// Messages per receive, at most.
pub const MAX_RECEIVE_BATCH: usize = 1000;
/// Source messages one receive pass looks at, at most.
const MAX_EXAMINED_PER_PASS: usize = 10_000;
/// Streams whose names start with this belong to consumers.
pub const DEAD_LETTER_PREFIX: &str = "_consumers/";
const MAX_CONSUMER_NAME_BYTES: usize = 256;

/// The stream where `consumer` puts messages that reached `max_deliver`.
pub fn dead_letter_stream(consumer: &str) -> String {
    format!("{DEAD_LETTER_PREFIX}{consumer}/dead_letters")
}

/// The dead-letter stream keeps the basin's retention but is never deleted
/// for being empty, and stamps records on arrival (its records are made by
/// the server, never with client timestamps).
fn dead_letter_config(mut config: StreamConfig) -> StreamConfig {
    config.delete_on_empty = DeleteOnEmptyConfig::default();
    config.timestamping = TimestampingConfig {
        mode: TimestampingMode::Arrival,
        uncapped: false,
    };
    config
}

crate::engine::streams::names::name_type!(
    /// A consumer name: 1–256 bytes, not `.` or `..`, without `/` or
    /// control characters (its dead letters go to
    /// `_consumers/{name}/dead_letters`).
    ConsumerName,
    validate_consumer_name
);

fn validate_consumer_name(name: &str) -> EngineResult<()> {
    if name.is_empty() || name.len() > MAX_CONSUMER_NAME_BYTES {
        return Err(EngineError::Invalid(format!(
            "a consumer name must be 1 to {MAX_CONSUMER_NAME_BYTES} bytes"
        )));
    }
    if name == "." || name == ".." || name.chars().any(char::is_control) || name.contains('/') {
        return Err(EngineError::Invalid(
            "a consumer name may not be `.` or `..`, or contain `/` or control characters".into(),
        ));
    }
    Ok(())
}

/// The consumers layer, over the stream core and the collections layer
/// (whose feeds consumers read).
pub struct Consumers {
    core: Arc<StreamCore>,
    collections: Arc<Collections>,
    /// The core's storage and committer, at hand.
    storage: Arc<dyn Storage>,
    committer: Committer,
    /// Consumers in use.
    handles: Mutex<HashMap<ScopedName, Arc<ConsumerHandle>>>,
}

impl Consumers {
    /// The consumers layer; reserves the dead-letter streams' names, which
    /// only consumers write.
    pub(crate) fn new(core: Arc<StreamCore>, collections: Arc<Collections>) -> Arc<Self> {
        core.reserve_names(
            DEAD_LETTER_PREFIX,
            "holds a consumer's dead letters and is written only by the consumer",
        );
        Arc::new(Self {
            storage: core.storage().clone(),
            committer: core.committer().clone(),
            core,
            collections,
            handles: Mutex::new(HashMap::new()),
        })
    }

    /// Adds to `batch` the writes that delete every consumer of `basin`
    /// (their dead-letter streams are the basin's streams, deleted by the
    /// core). Called under the admin lock by the basin's deletion.
    pub(crate) async fn delete_basin_ops(
        &self,
        basin: &str,
        batch: &mut WriteBatch,
    ) -> EngineResult<()> {
        for (consumer, id) in self.consumer_ids(basin)? {
            self.delete_consumer_ops(batch, basin, &consumer, id)
                .await?;
        }
        Ok(())
    }

    /// The consumer's handle, loaded from storage on first use.
    pub(super) async fn consumer(
        &self,
        basin: &str,
        name: &str,
    ) -> EngineResult<Arc<ConsumerHandle>> {
        let key = (basin.to_string(), name.to_string());
        if let Some(handle) = lock(&self.handles).get(&key) {
            return Ok(handle.clone());
        }
        let _admin = self.core.lock_admin().await;
        if let Some(handle) = lock(&self.handles).get(&key) {
            return Ok(handle.clone());
        }
        self.core.basin_meta(basin)?;
        let meta = self
            .consumer_meta(basin, name)?
            .ok_or_else(|| EngineError::ConsumerNotFound(name.into()))?;
        let progress: ConsumerProgress = self
            .core
            .get_meta(&keys::consumer_progress_key(meta.id))?
            .ok_or_else(|| {
                crate::storage::StorageError::Corrupt(format!(
                    "consumer `{name}` has no progress record"
                ))
            })?;
        let prefix = keys::consumer_pending_prefix(meta.id);
        let mut entries = Vec::new();
        let mut corrupt = None;
        self.storage.scan(
            Keyspace::Meta,
            &prefix,
            &prefix_end(&prefix),
            &mut |key, value| {
                let position = Position::from_bytes(&key[prefix.len()..]);
                match (position, keys::decode_json::<Entry>(value)) {
                    (Some(position), Ok(entry)) => entries.push((position, entry)),
                    (_, Err(err)) => corrupt = Some(err),
                    (None, _) => {
                        corrupt = Some(crate::storage::StorageError::Corrupt(
                            "a pending message key is malformed".into(),
                        ))
                    }
                }
                ControlFlow::Continue(())
            },
        )?;
        if let Some(err) = corrupt {
            return Err(err.into());
        }
        let handle = Arc::new(ConsumerHandle {
            id: meta.id,
            source: meta.config.source.clone(),
            source_id: meta.source_id,
            created_at: meta.created_at,
            state: tokio::sync::Mutex::new(State {
                lease: CursorLease::new(&progress.frontier),
                config: meta.config,
                deleted: false,
                retired: false,
                progress,
                pending: Pending::from_entries(entries),
            }),
            changed: watch::Sender::new(0),
        });
        lock(&self.handles).insert(key, handle.clone());
        Ok(handle)
    }

    /// The consumer's source, checked to be the one it was made on.
    pub(super) async fn consumer_source(
        &self,
        basin: &str,
        name: &str,
        handle: &ConsumerHandle,
    ) -> EngineResult<SourceHandle> {
        match self.resolve_source(basin, &handle.source).await {
            Ok((source, id)) if id == handle.source_id => Ok(source),
            Ok(_)
            | Err(EngineError::StreamNotFound(_))
            | Err(EngineError::CollectionNotFound(_)) => {
                Err(EngineError::ConsumerSourceGone(name.into()))
            }
            Err(err) => Err(err),
        }
    }
}
