//! The consumers layer: its state (a handle per consumer in use), loading
//! handles, and its part in a basin's deletion.

use std::collections::HashMap;
use std::ops::ControlFlow;
use std::sync::{Arc, Mutex};

use tokio::sync::watch;

use super::config::DEAD_LETTER_PREFIX;
use super::keys;
use super::pending::{Entry, Pending};
use super::position::Position;
use super::state::{ConsumerHandle, ConsumerProgress, CursorLease, State, StateWrites};
use crate::engine::collections::Collections;
use crate::engine::error::{EngineError, EngineResult};
use crate::engine::locks::lock;
use crate::engine::streams::{ScopedName, StreamCore};
use crate::storage::{prefix_end, Keyspace, WriteBatch};

/// The consumers layer, over the stream core and the collections layer
/// (whose feeds consumers read).
pub struct Consumers {
    pub(super) core: Arc<StreamCore>,
    pub(super) collections: Arc<Collections>,
    /// Consumers in use.
    pub(super) handles: Mutex<HashMap<ScopedName, Arc<ConsumerHandle>>>,
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
        self.core.storage().scan(
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
}

impl Consumers {
    /// Queues `changes` while the consumer's lock is still held (so that
    /// writes reach the disk in the order their changes were made), lets
    /// the lock go, waits until they are durable, and wakes the receives
    /// waiting for something to deliver.
    pub(super) async fn write_and_wake(
        &self,
        handle: &ConsumerHandle,
        state: tokio::sync::MutexGuard<'_, State>,
        changes: StateWrites,
    ) -> EngineResult<()> {
        let durable = self
            .core
            .committer()
            .queue(changes.batch(handle.id, &state));
        drop(state);
        durable.await?;
        handle.changed.send_modify(|n| *n += 1);
        Ok(())
    }
}
