//! Streams: list, create, ensure, reconfigure and delete, and starting a
//! stream's task on first use.

use std::sync::Arc;

use super::config::{StreamConfig, StreamConfigPatch};
use super::core::{is_retry, CreateIf, Provision, StreamCore};
use super::keys::{self, StreamMeta, StreamState};
use super::list::ListRequest;
use super::names::StreamName;
use super::streamer::{self, Command, StreamHandle};
use super::types::now_ms;
use crate::engine::error::{EngineError, EngineResult};
use crate::engine::locks::lock;
use crate::storage::{Keyspace, WriteBatch};

/// A stream as listed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StreamInfo {
    pub name: String,
    pub created_at: u64,
}

impl StreamInfo {
    fn new(name: &str, meta: &StreamMeta) -> Self {
        Self {
            name: name.into(),
            created_at: meta.created_at,
        }
    }
}

impl StreamCore {
    pub fn list_streams(
        &self,
        basin: &str,
        req: &ListRequest,
    ) -> EngineResult<(Vec<StreamInfo>, bool)> {
        self.basin_meta(basin)?;
        let (found, has_more) =
            self.list_named_meta::<StreamMeta>(&keys::stream_prefix(basin), req)?;
        let page = found
            .iter()
            .map(|(name, meta)| StreamInfo::new(name, meta))
            .collect();
        Ok((page, has_more))
    }

    /// Creates a stream; `request_token` works as in [`Self::create_basin`].
    pub async fn create_stream(
        &self,
        basin: &str,
        name: &StreamName,
        patch: &StreamConfigPatch,
        request_token: Option<&str>,
    ) -> EngineResult<(StreamInfo, Provision)> {
        self.check_writable(name)?;
        let _admin = self.admin.lock().await;
        let basin_meta = self.basin_meta(basin)?;
        if let Some(meta) = self.stream_meta(basin, name)? {
            if is_retry(meta.request_token.as_deref(), request_token) {
                return Ok((StreamInfo::new(name, &meta), Provision::Unchanged));
            }
            return Err(EngineError::StreamExists(name.into()));
        }
        let config = basin_meta
            .config
            .default_stream_config
            .apply(patch)
            .map_err(EngineError::Invalid)?;
        let info = self
            .insert_stream(basin, name, config, request_token)
            .await?;
        Ok((info, Provision::Created))
    }

    /// Creates the stream, or brings an existing one's config in line with
    /// `patch`.
    pub async fn ensure_stream(
        &self,
        basin: &str,
        name: &StreamName,
        patch: &StreamConfigPatch,
    ) -> EngineResult<(StreamInfo, Provision)> {
        self.check_writable(name)?;
        let _admin = self.admin.lock().await;
        let basin_meta = self.basin_meta(basin)?;
        match self.stream_meta(basin, name)? {
            Some(meta) => {
                let info = StreamInfo::new(name, &meta);
                let config = meta.config.apply(patch).map_err(EngineError::Invalid)?;
                if config == meta.config {
                    return Ok((info, Provision::Unchanged));
                }
                self.update_stream_config(basin, name, meta, config).await?;
                Ok((info, Provision::Updated))
            }
            None => {
                let config = basin_meta
                    .config
                    .default_stream_config
                    .apply(patch)
                    .map_err(EngineError::Invalid)?;
                let info = self.insert_stream(basin, name, config, None).await?;
                Ok((info, Provision::Created))
            }
        }
    }

    pub fn stream_config(&self, basin: &str, name: &str) -> EngineResult<StreamConfig> {
        Ok(self.existing_stream(basin, name)?.config)
    }

    pub async fn reconfigure_stream(
        &self,
        basin: &str,
        name: &str,
        patch: &StreamConfigPatch,
    ) -> EngineResult<StreamConfig> {
        self.check_writable(name)?;
        let _admin = self.admin.lock().await;
        let meta = self.existing_stream(basin, name)?;
        let config = meta.config.apply(patch).map_err(EngineError::Invalid)?;
        self.update_stream_config(basin, name, meta, config).await?;
        Ok(config)
    }

    /// Deletes the stream at once; its records are removed in the background.
    pub async fn delete_stream(&self, basin: &str, name: &str) -> EngineResult<()> {
        self.check_writable(name)?;
        let _admin = self.admin.lock().await;
        let meta = self.existing_stream(basin, name)?;
        self.stop_stream(basin, name).await;
        let mut batch = WriteBatch::default();
        delete_stream_ops(&mut batch, basin, name, meta.id);
        self.committer.commit(batch).await?;
        self.metrics.streams.forget_stream(basin, name);
        Ok(())
    }

    async fn insert_stream(
        &self,
        basin: &str,
        name: &str,
        config: StreamConfig,
        request_token: Option<&str>,
    ) -> EngineResult<StreamInfo> {
        let mut batch = WriteBatch::default();
        let [id] = self.allocate_ids(&mut batch)?;
        let info = stream_creation_ops(&mut batch, basin, name, config, request_token, id);
        self.committer.commit(batch).await?;
        Ok(info)
    }

    async fn update_stream_config(
        &self,
        basin: &str,
        name: &str,
        mut meta: StreamMeta,
        config: StreamConfig,
    ) -> EngineResult<()> {
        meta.config = config;
        let mut batch = WriteBatch::default();
        batch.put(
            Keyspace::Meta,
            keys::stream_key(basin, name),
            keys::encode_json(&meta),
        );
        self.committer.commit(batch).await?;
        let handle = lock(&self.tasks)
            .get(&(basin.to_string(), name.to_string()))
            .cloned();
        if let Some(handle) = handle {
            handle.send(Command::Reconfigure(config)).await?;
        }
        Ok(())
    }

    /// Stops the stream's task, if running, once everything it accepted has
    /// been handed to the committer.
    pub(crate) async fn stop_stream(&self, basin: &str, name: &str) {
        let key = (basin.to_string(), name.to_string());
        let handle = lock(&self.tasks).get(&key).cloned();
        if let Some(handle) = handle {
            handle.stop().await;
            // Only now, with the old task's writes durable, may the stream
            // be started again from its state key.
            lock(&self.tasks).remove(&key);
        }
    }

    /// The stream's metadata, if it exists (the basin is not checked).
    pub(crate) fn stream_meta(&self, basin: &str, name: &str) -> EngineResult<Option<StreamMeta>> {
        self.get_meta(&keys::stream_key(basin, name))
    }

    /// The metadata of a stream that must exist: `basin_not_found` or
    /// `stream_not_found` otherwise.
    fn existing_stream(&self, basin: &str, name: &str) -> EngineResult<StreamMeta> {
        self.basin_meta(basin)?;
        self.stream_meta(basin, name)?
            .ok_or_else(|| EngineError::StreamNotFound(name.into()))
    }

    /// Every stream of `basin`, in name order.
    pub(crate) fn all_stream_metas(&self, basin: &str) -> EngineResult<Vec<(String, StreamMeta)>> {
        self.all_named_meta(&keys::stream_prefix(basin))
    }

    /// The running task of a stream, started from its durable state if need
    /// be. With `create`, a missing stream is created with the basin's
    /// default config (`create_stream_on_append` / `_on_read`).
    pub(crate) async fn stream(
        &self,
        basin: &str,
        name: &str,
        create: CreateIf,
    ) -> EngineResult<Arc<StreamHandle>> {
        if let Some(replica) = &self.replica {
            return self.replica_stream(replica, basin, name);
        }
        let key = (basin.to_string(), name.to_string());
        if let Some(handle) = lock(&self.tasks).get(&key) {
            return Ok(handle.clone());
        }
        let _admin = self.admin.lock().await;
        if let Some(handle) = lock(&self.tasks).get(&key) {
            return Ok(handle.clone());
        }
        if *self.closing.borrow() {
            // No new stream tasks once shutdown has begun: they would not be
            // among those it stops.
            return Err(EngineError::Unavailable);
        }
        let basin_meta = self.basin_meta(basin)?;
        let meta = match self.stream_meta(basin, name)? {
            Some(meta) => meta,
            None => {
                let allowed = match create {
                    CreateIf::Never => false,
                    CreateIf::OnAppend => basin_meta.config.create_stream_on_append,
                    CreateIf::OnRead => basin_meta.config.create_stream_on_read,
                };
                // Reserved streams are only ever made by their layer.
                if !allowed || self.check_writable(name).is_err() {
                    return Err(EngineError::StreamNotFound(name.into()));
                }
                StreamName::parse(name)?;
                self.insert_stream(basin, name, basin_meta.config.default_stream_config, None)
                    .await?;
                self.stream_meta(basin, name)?
                    .ok_or_else(|| EngineError::StreamNotFound(name.into()))?
            }
        };
        let state: StreamState = self
            .get_meta(&keys::state_key(meta.id))?
            .unwrap_or_default();
        let handle = streamer::spawn(
            meta.id,
            (basin, name),
            meta.config,
            state,
            (self.committer.clone(), self.storage.clone()),
            self.metrics.clone(),
            self.tails.clone(),
        );
        lock(&self.tasks).insert(key, handle.clone());
        Ok(handle)
    }

    /// The running task of `(basin, name)`, if one runs; starts none.
    pub(super) fn running_stream(&self, basin: &str, name: &str) -> Option<Arc<StreamHandle>> {
        lock(&self.tasks)
            .get(&(basin.to_string(), name.to_string()))
            .cloned()
    }
}

/// The writes that create a stream with id `id`.
pub(crate) fn stream_creation_ops(
    batch: &mut WriteBatch,
    basin: &str,
    name: &str,
    config: StreamConfig,
    request_token: Option<&str>,
    id: u64,
) -> StreamInfo {
    let created_at = now_ms();
    let meta = StreamMeta {
        id,
        config,
        created_at,
        request_token: request_token.map(str::to_owned),
    };
    let state = StreamState {
        last_write_at: created_at,
        appended_bytes: Some(0),
        ..Default::default()
    };
    batch.put(
        Keyspace::Meta,
        keys::stream_key(basin, name),
        keys::encode_json(&meta),
    );
    batch.put(
        Keyspace::Meta,
        keys::state_key(id),
        keys::encode_json(&state),
    );
    StreamInfo::new(name, &meta)
}

/// The writes that delete the stream `id`: its metadata and state at once,
/// and a purge marker under which upkeep removes its records.
pub(crate) fn delete_stream_ops(batch: &mut WriteBatch, basin: &str, name: &str, id: u64) {
    batch.delete(Keyspace::Meta, keys::stream_key(basin, name));
    batch.delete(Keyspace::Meta, keys::state_key(id));
    batch.put(Keyspace::Meta, keys::purge_key(id), Vec::new());
}
