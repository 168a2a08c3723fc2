//! Basins: list, create, ensure, reconfigure and delete.

use super::config::{BasinConfig, BasinConfigPatch};
use super::core::{is_retry, Provision, StreamCore};
use super::keys::{self, BasinMeta};
use super::list::ListRequest;
use super::names::BasinName;
use super::types::now_ms;
use crate::engine::error::{EngineError, EngineResult};
use crate::engine::locks::{read_lock, write_lock};
use crate::storage::{Keyspace, WriteBatch};

/// A basin as listed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BasinInfo {
    pub name: String,
    pub created_at: u64,
}

impl BasinInfo {
    fn new(name: &str, meta: &BasinMeta) -> Self {
        Self {
            name: name.into(),
            created_at: meta.created_at,
        }
    }
}

impl StreamCore {
    pub fn list_basins(&self, req: &ListRequest) -> EngineResult<(Vec<BasinInfo>, bool)> {
        let limit = req.validate()?;
        let basins = read_lock(&self.basins);
        let mut matching = basins
            .iter()
            .filter(|(name, _)| name.starts_with(&req.prefix))
            .filter(|(name, _)| name.as_str() > req.start_after.as_str())
            .map(|(name, meta)| BasinInfo::new(name, meta));
        let page: Vec<_> = matching.by_ref().take(limit).collect();
        let has_more = matching.next().is_some();
        Ok((page, has_more))
    }

    /// Every basin's name, in order.
    pub(crate) fn basin_names(&self) -> Vec<String> {
        read_lock(&self.basins).keys().cloned().collect()
    }

    /// Creates a basin. A retry carrying the same `request_token` as the
    /// create that made the basin succeeds with [`Provision::Unchanged`].
    pub async fn create_basin(
        &self,
        name: &BasinName,
        patch: &BasinConfigPatch,
        request_token: Option<&str>,
    ) -> EngineResult<(BasinInfo, Provision)> {
        let _admin = self.admin.lock().await;
        if let Ok(meta) = self.basin_meta(name) {
            if is_retry(meta.request_token.as_deref(), request_token) {
                return Ok((BasinInfo::new(name, &meta), Provision::Unchanged));
            }
            return Err(EngineError::BasinExists(name.into()));
        }
        let meta = BasinMeta {
            config: BasinConfig::default()
                .apply(patch)
                .map_err(EngineError::Invalid)?,
            created_at: now_ms(),
            request_token: request_token.map(str::to_owned),
        };
        Ok((self.put_basin(name, meta).await?, Provision::Created))
    }

    /// Creates the basin, or brings an existing one's config in line with
    /// `patch`.
    pub async fn ensure_basin(
        &self,
        name: &BasinName,
        patch: &BasinConfigPatch,
    ) -> EngineResult<(BasinInfo, Provision)> {
        let _admin = self.admin.lock().await;
        match self.basin_meta(name) {
            Ok(meta) => {
                let config = meta.config.apply(patch).map_err(EngineError::Invalid)?;
                if config == meta.config {
                    return Ok((BasinInfo::new(name, &meta), Provision::Unchanged));
                }
                let info = self.put_basin(name, BasinMeta { config, ..meta }).await?;
                Ok((info, Provision::Updated))
            }
            Err(_) => {
                let config = BasinConfig::default()
                    .apply(patch)
                    .map_err(EngineError::Invalid)?;
                let meta = BasinMeta {
                    config,
                    created_at: now_ms(),
                    request_token: None,
                };
                let info = self.put_basin(name, meta).await?;
                Ok((info, Provision::Created))
            }
        }
    }

    pub fn basin_config(&self, name: &str) -> EngineResult<BasinConfig> {
        Ok(self.basin_meta(name)?.config)
    }

    pub async fn reconfigure_basin(
        &self,
        name: &str,
        patch: &BasinConfigPatch,
    ) -> EngineResult<BasinConfig> {
        let _admin = self.admin.lock().await;
        let meta = self.basin_meta(name)?;
        let config = meta.config.apply(patch).map_err(EngineError::Invalid)?;
        self.put_basin(name, BasinMeta { config, ..meta }).await?;
        Ok(config)
    }

    /// Deletes the basin and all its streams. The layers above the core
    /// keep things in a basin too: `members` adds the writes that delete
    /// those to the same atomic batch. It runs under the admin lock, after
    /// the basin's stream tasks have stopped, and must not take the lock.
    pub(crate) async fn delete_basin(
        &self,
        name: &str,
        members: impl AsyncFnOnce(&mut WriteBatch) -> EngineResult<()>,
    ) -> EngineResult<()> {
        let _admin = self.admin.lock().await;
        self.basin_meta(name)?;
        let streams = self.all_stream_metas(name)?;
        let mut batch = WriteBatch::default();
        for (stream, meta) in &streams {
            self.stop_stream(name, stream).await;
            super::admin::delete_stream_ops(&mut batch, name, stream, meta.id);
        }
        members(&mut batch).await?;
        batch.delete(Keyspace::Meta, keys::basin_key(name));
        self.committer.commit(batch).await?;
        write_lock(&self.basins).remove(name);
        for (stream, _) in &streams {
            self.metrics.streams.forget_stream(name, stream);
        }
        self.metrics.streams.forget_basin(name);
        Ok(())
    }

    async fn put_basin(&self, name: &str, meta: BasinMeta) -> EngineResult<BasinInfo> {
        let mut batch = WriteBatch::default();
        batch.put(
            Keyspace::Meta,
            keys::basin_key(name),
            keys::encode_json(&meta),
        );
        self.committer.commit(batch).await?;
        let info = BasinInfo::new(name, &meta);
        write_lock(&self.basins).insert(name.into(), meta);
        Ok(info)
    }

    /// The basin's metadata, or `basin_not_found`.
    pub(crate) fn basin_meta(&self, name: &str) -> EngineResult<BasinMeta> {
        read_lock(&self.basins)
            .get(name)
            .cloned()
            .ok_or_else(|| EngineError::BasinNotFound(name.into()))
    }
}
