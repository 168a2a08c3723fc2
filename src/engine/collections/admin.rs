//! Collections: create (with their events stream), reconfigure, list,
//! get and delete.

use super::keys::{self, CollectionMeta};
use super::layer::Collections;
use super::types::events_stream_name;
use super::types::{CollectionConfig, CollectionConfigPatch, CollectionInfo, CollectionName};
use crate::engine::error::{EngineError, EngineResult};
use crate::engine::locks::lock;
use crate::engine::streams::config::{
    InfiniteRetention, RetentionPolicy, StreamConfig, StreamConfigPatch,
};
use crate::engine::streams::types::now_ms;
use crate::engine::streams::{delete_stream_ops, stream_creation_ops, ListRequest, Provision};
use crate::storage::{Keyspace, WriteBatch};

impl Collections {
    /// Changes an existing collection's config (`PATCH`).
    pub async fn reconfigure_collection(
        &self,
        basin: &str,
        name: &str,
        patch: &CollectionConfigPatch,
    ) -> EngineResult<CollectionInfo> {
        let _admin = self.core.lock_admin().await;
        self.core.basin_meta(basin)?;
        let meta = self
            .collection_meta(basin, name)?
            .ok_or_else(|| EngineError::CollectionNotFound(name.into()))?;
        Ok(self.patch_collection(basin, name, meta, patch).await?.0)
    }

    /// Applies `patch` to a collection's stored config. The caller holds
    /// the admin lock.
    async fn patch_collection(
        &self,
        basin: &str,
        name: &str,
        mut meta: CollectionMeta,
        patch: &CollectionConfigPatch,
    ) -> EngineResult<(CollectionInfo, Provision)> {
        let config = meta.config.apply(patch);
        if config == meta.config {
            return Ok((CollectionInfo::new(name, &meta), Provision::Unchanged));
        }
        meta.config = config;
        let mut batch = WriteBatch::default();
        batch.put(
            Keyspace::Meta,
            keys::collection_key(basin, name),
            keys::encode_json(&meta),
        );
        self.core.committer().commit(batch).await?;
        Ok((CollectionInfo::new(name, &meta), Provision::Updated))
    }

    pub async fn ensure_collection(
        &self,
        basin: &str,
        name: &CollectionName,
        patch: &CollectionConfigPatch,
    ) -> EngineResult<(CollectionInfo, Provision)> {
        let _admin = self.core.lock_admin().await;
        self.core.basin_meta(basin)?;
        if let Some(meta) = self.collection_meta(basin, name)? {
            return self.patch_collection(basin, name, meta, patch).await;
        }
        // The events stream keeps every change: infinite retention.
        let events_stream = events_stream_name(name);
        let stream_patch = StreamConfigPatch {
            retention_policy: Some(RetentionPolicy::Infinite(InfiniteRetention {})),
            ..Default::default()
        };
        let stream_config = StreamConfig::default()
            .apply(&stream_patch)
            .map_err(EngineError::Invalid)?;
        let mut batch = WriteBatch::default();
        if let Some(orphan) = self.core.stream_meta(basin, &events_stream)? {
            // Left by a collection of this name deleted before its stream
            // was: replace it.
            self.core.stop_stream(basin, &events_stream).await;
            delete_stream_ops(&mut batch, basin, &events_stream, orphan.id);
        }
        // One batch: the collection and its events stream exist together
        // or not at all.
        let [stream_id, id] = self.core.allocate_ids(&mut batch)?;
        stream_creation_ops(
            &mut batch,
            basin,
            &events_stream,
            stream_config,
            None,
            stream_id,
        );
        let meta = CollectionMeta {
            id,
            config: CollectionConfig::default().apply(patch),
            created_at: now_ms(),
            events_stream,
        };
        batch.put(
            Keyspace::Meta,
            keys::collection_key(basin, name),
            keys::encode_json(&meta),
        );
        self.core.committer().commit(batch).await?;
        Ok((CollectionInfo::new(name, &meta), Provision::Created))
    }

    pub fn collection_info(&self, basin: &str, name: &str) -> EngineResult<CollectionInfo> {
        self.core.basin_meta(basin)?;
        let meta = self
            .collection_meta(basin, name)?
            .ok_or_else(|| EngineError::CollectionNotFound(name.into()))?;
        Ok(CollectionInfo::new(name, &meta))
    }

    pub fn list_collections(
        &self,
        basin: &str,
        req: &ListRequest,
    ) -> EngineResult<(Vec<CollectionInfo>, bool)> {
        self.core.basin_meta(basin)?;
        let (found, has_more) = self
            .core
            .list_named_meta::<CollectionMeta>(&keys::collection_prefix(basin), req)?;
        Ok((
            found
                .iter()
                .map(|(name, meta)| CollectionInfo::new(name, meta))
                .collect(),
            has_more,
        ))
    }

    /// Deletes the collection, its records and its events stream.
    pub async fn delete_collection(&self, basin: &str, name: &str) -> EngineResult<()> {
        let _admin = self.core.lock_admin().await;
        self.core.basin_meta(basin)?;
        let meta = self
            .collection_meta(basin, name)?
            .ok_or_else(|| EngineError::CollectionNotFound(name.into()))?;
        lock(&self.handles).remove(&(basin.to_string(), name.to_string()));
        self.core.stop_stream(basin, &meta.events_stream).await;
        let mut batch = WriteBatch::default();
        batch.delete(Keyspace::Meta, keys::collection_key(basin, name));
        batch.delete(Keyspace::Meta, keys::tombstone_horizon_key(meta.id));
        // Documents and changes are keyed by the collection id, which the
        // purge marker covers in every keyspace.
        batch.put(
            Keyspace::Meta,
            crate::engine::streams::keys::purge_key(meta.id),
            Vec::new(),
        );
        if let Some(stream) = self.core.stream_meta(basin, &meta.events_stream)? {
            delete_stream_ops(&mut batch, basin, &meta.events_stream, stream.id);
        }
        self.core.committer().commit(batch).await?;
        let metrics = &self.core.metrics.streams;
        metrics.forget_stream(basin, &meta.events_stream);
        lock(&self.handles).remove(&(basin.to_string(), name.to_string()));
        Ok(())
    }
}

impl CollectionInfo {
    fn new(name: &str, meta: &CollectionMeta) -> Self {
        Self {
            name: name.to_string(),
            config: meta.config,
            created_at: meta.created_at,
            events_stream: meta.events_stream.clone(),
        }
    }
}
