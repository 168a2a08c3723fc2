//! The collections layer: its state (a handle per collection in use),
//! loading handles, and its part in a basin's deletion and in upkeep.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use super::handle::{Clock, CollectionHandle};
use super::keys::{self, CollectionMeta};
use super::types::{Horizon, EVENTS_STREAM_PREFIX};
use crate::engine::error::{EngineError, EngineResult};
use crate::engine::locks::lock;
use crate::engine::streams::{CreateIf, ScopedName, StreamCore};
use crate::storage::{prefix_end, Keyspace, WriteBatch};

/// The collections layer, over the stream core.
pub struct Collections {
    pub(super) core: Arc<StreamCore>,
    /// Collections in use.
    pub(super) handles: Mutex<HashMap<ScopedName, Arc<CollectionHandle>>>,
}

impl Collections {
    /// The collections layer over `core`; reserves the events streams'
    /// names, which only collections write.
    pub(crate) fn new(core: Arc<StreamCore>) -> Arc<Self> {
        core.reserve_names(
            EVENTS_STREAM_PREFIX,
            "holds a collection's events and is written only through the collection",
        );
        Arc::new(Self {
            core,
            handles: Mutex::new(HashMap::new()),
        })
    }

    /// Adds to `batch` the writes that delete every collection of `basin`
    /// (their events streams are the basin's streams, deleted by the core).
    /// Called under the admin lock by the basin's deletion.
    pub(crate) fn delete_basin_ops(&self, basin: &str, batch: &mut WriteBatch) -> EngineResult<()> {
        for (collection, id) in self.collection_ids(basin)? {
            lock(&self.handles).remove(&(basin.to_string(), collection.clone()));
            batch.delete(Keyspace::Meta, keys::collection_key(basin, &collection));
            batch.delete(Keyspace::Meta, keys::tombstone_horizon_key(id));
            batch.put(
                Keyspace::Meta,
                crate::engine::streams::keys::purge_key(id),
                Vec::new(),
            );
        }
        Ok(())
    }

    /// One pass of upkeep: expires tombstones in every collection. A
    /// failure on one is logged and does not stop the others.
    pub(crate) async fn upkeep_once(&self) {
        for basin in self.core.basin_names() {
            for (name, _) in self.collection_ids(&basin).unwrap_or_default() {
                if self.core.is_closing() {
                    return; // shutting down: no new work
                }
                if let Err(err) = self.expire_tombstones(&basin, &name).await {
                    tracing::warn!(basin, collection = name, error = %err, "expiring tombstones failed; retrying next round");
                }
            }
        }
    }

    /// Every collection of `basin`, by name, with its id.
    pub(super) fn collection_ids(&self, basin: &str) -> EngineResult<Vec<(String, u64)>> {
        let all: Vec<(String, CollectionMeta)> =
            self.core.all_named_meta(&keys::collection_prefix(basin))?;
        Ok(all
            .into_iter()
            .map(|(name, meta)| (name, meta.id))
            .collect())
    }

    pub(super) fn collection_meta(
        &self,
        basin: &str,
        name: &str,
    ) -> EngineResult<Option<CollectionMeta>> {
        self.core.get_meta(&keys::collection_key(basin, name))
    }

    /// The collection's in-memory handle, loading it on first use.
    pub(crate) async fn handle(
        &self,
        basin: &str,
        name: &str,
    ) -> EngineResult<Arc<CollectionHandle>> {
        let key = (basin.to_string(), name.to_string());
        self.core.basin_meta(basin)?;
        // The metadata decides, not the cache: a handle cached while the
        // collection was being deleted (or before it was recreated under
        // the same name) has another id and must not be used.
        let meta = self
            .collection_meta(basin, name)?
            .ok_or_else(|| EngineError::CollectionNotFound(name.into()))?;
        if let Some(handle) = lock(&self.handles).get(&key) {
            if handle.id == meta.id {
                return Ok(handle.clone());
            }
        }
        let events = self
            .core
            .stream(basin, &meta.events_stream, CreateIf::Never)
            .await?;
        // The newest entry of the records stream is the last write.
        let last = self
            .core
            .storage()
            .last_in_range(
                Keyspace::RecordsStream,
                &meta.id.to_be_bytes(),
                &prefix_end(&meta.id.to_be_bytes()),
            )?
            .and_then(|(k, _)| keys::parse_records_stream_key(&k))
            .map_or(0, |(t, _)| t);
        let horizon: Horizon = self
            .core
            .get_meta(&keys::tombstone_horizon_key(meta.id))?
            .unwrap_or_default();
        let handle = Arc::new(CollectionHandle {
            id: meta.id,
            name: name.to_string(),
            events,
            write_lock: tokio::sync::Mutex::new(()),
            clock: Mutex::new(Clock {
                last,
                floor: last,
                in_flight: Default::default(),
            }),
            pending: Mutex::new(HashMap::new()),
            written: tokio::sync::watch::Sender::new(0),
            horizon: Mutex::new(horizon),
            expiry_scanned: std::sync::atomic::AtomicU64::new(horizon.below),
        });
        let mut cache = lock(&self.handles);
        match cache.get(&key) {
            Some(existing) if existing.id == handle.id => Ok(existing.clone()),
            _ => {
                cache.insert(key, handle.clone());
                Ok(handle)
            }
        }
    }
}
