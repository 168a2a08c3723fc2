//! The sources layer: a source keeps a collection equal to data that lives
//! elsewhere. This layer keeps their definitions and cursors; the workers
//! that poll live outside the engine (`src/sources/`), and learn of
//! changes through [`Sources::subscribe`].
//!
//! A source's cursor is written in the same atomic batch as the collection
//! writes it covers ([`Sources::apply`]), so that after a crash the source
//! asks again for exactly what it had not yet written: nothing skipped,
//! nothing applied twice.

use std::sync::Arc;

use tokio::sync::watch;

use super::config::{SourceConfig, SourceName};
use super::keys::{self, SourceCursor, SourceMeta};
use crate::engine::collections::{CollectionConfigPatch, CollectionName, Collections, WriteOp};
use crate::engine::error::{EngineError, EngineResult};
use crate::engine::streams::types::now_ms;
use crate::engine::streams::{ListRequest, Provision, StreamCore};
use crate::storage::{Keyspace, WriteBatch};

/// A source as the API shows it (secrets are the API's to hide).
#[derive(Clone, Debug)]
pub struct SourceInfo {
    pub basin: String,
    pub name: String,
    pub config: SourceConfig,
    pub created_at: u64,
}

pub struct Sources {
    core: Arc<StreamCore>,
    collections: Arc<Collections>,
    /// Bumped on every change of any source.
    changed: watch::Sender<u64>,
}

impl Sources {
    pub(crate) fn new(core: Arc<StreamCore>, collections: Arc<Collections>) -> Arc<Self> {
        Arc::new(Self {
            core,
            collections,
            changed: watch::Sender::new(0),
        })
    }

    /// Notified whenever a source is made or removed.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.changed.subscribe()
    }

    fn notify(&self) {
        self.changed.send_modify(|n| *n += 1);
    }

    /// Creates the source (and its collection, if missing). A source
    /// cannot change: what it read so far is of its upstream, so a `PUT`
    /// with other settings is a conflict (delete it and make it again).
    pub async fn ensure_source(
        &self,
        basin: &str,
        name: &SourceName,
        config: SourceConfig,
    ) -> EngineResult<(SourceInfo, Provision)> {
        config.validate()?;
        if let Some(meta) = self.source_meta(basin, name)? {
            return match meta.config == config {
                true => Ok((info(basin, name, meta), Provision::Unchanged)),
                false => Err(EngineError::SourceConflict(name.to_string())),
            };
        }
        self.ensure_collections(basin, &config).await?;
        let meta = SourceMeta {
            created_at: now_ms(),
            config,
        };
        let mut batch = WriteBatch::default();
        batch.put(
            Keyspace::Meta,
            keys::source_key(basin, name),
            keys::encode_json(&meta),
        );
        // A cursor a deleted source's last write may have left: this
        // source starts from the beginning.
        batch.delete(Keyspace::Meta, keys::cursor_key(basin, name));
        let _admin = self.core.lock_admin().await;
        self.core.basin_meta(basin)?;
        // Made meanwhile by another request: the same answer as above.
        if let Some(made) = self.source_meta(basin, name)? {
            return match made.config == meta.config {
                true => Ok((info(basin, name, made), Provision::Unchanged)),
                false => Err(EngineError::SourceConflict(name.to_string())),
            };
        }
        self.core.committer().commit(batch).await?;
        drop(_admin);
        self.notify();
        Ok((info(basin, name, meta), Provision::Created))
    }

    /// Makes the source's collections that are missing (a source whose
    /// collection was deleted makes it again, and starts over).
    pub async fn ensure_collections(&self, basin: &str, config: &SourceConfig) -> EngineResult<()> {
        for collection in config.collections() {
            let collection = CollectionName::parse(collection.to_string())?;
            self.collections
                .ensure_collection(basin, &collection, &CollectionConfigPatch::default())
                .await?;
        }
        Ok(())
    }

    pub fn get_source(&self, basin: &str, name: &str) -> EngineResult<SourceInfo> {
        self.core.basin_meta(basin)?;
        let meta = self
            .source_meta(basin, name)?
            .ok_or_else(|| EngineError::SourceNotFound(name.into()))?;
        Ok(info(basin, name, meta))
    }

    pub fn list_sources(
        &self,
        basin: &str,
        req: &ListRequest,
    ) -> EngineResult<(Vec<SourceInfo>, bool)> {
        self.core.basin_meta(basin)?;
        let (found, has_more) = self
            .core
            .list_named_meta::<SourceMeta>(&keys::source_prefix(basin), req)?;
        let sources = found
            .into_iter()
            .map(|(name, meta)| info(basin, &name, meta))
            .collect();
        Ok((sources, has_more))
    }

    /// Every source of every basin, for the workers.
    pub fn all_sources(&self) -> EngineResult<Vec<SourceInfo>> {
        let mut all = Vec::new();
        for basin in self.core.basin_names() {
            let found = self
                .core
                .all_named_meta::<SourceMeta>(&keys::source_prefix(&basin))?;
            all.extend(
                found
                    .into_iter()
                    .map(|(name, meta)| info(&basin, &name, meta)),
            );
        }
        Ok(all)
    }

    /// Removes the source and its cursor (not its collection, nor what it
    /// wrote there).
    pub async fn delete_source(&self, basin: &str, name: &str) -> EngineResult<()> {
        self.core.basin_meta(basin)?;
        let Some(meta) = self.source_meta(basin, name)? else {
            return Err(EngineError::SourceNotFound(name.into()));
        };
        let mut batch = WriteBatch::default();
        delete_ops(basin, name, &meta, &mut batch);
        let _admin = self.core.lock_admin().await;
        self.core.committer().commit(batch).await?;
        drop(_admin);
        self.notify();
        Ok(())
    }

    /// Adds to `batch` the writes that remove every source of `basin`.
    pub(crate) fn delete_basin_ops(&self, basin: &str, batch: &mut WriteBatch) -> EngineResult<()> {
        let prefix = keys::source_prefix(basin);
        for (name, meta) in self.core.all_named_meta::<SourceMeta>(&prefix)? {
            delete_ops(basin, &name, &meta, batch);
        }
        self.notify();
        Ok(())
    }

    /// Deleted sources whose traces upstream are still to be removed (see
    /// [`keys::cleanup_key`]), each with the key that says so.
    pub fn cleanups(&self) -> EngineResult<Vec<(Vec<u8>, SourceInfo)>> {
        let found = self
            .core
            .all_named_meta::<SourceMeta>(&keys::cleanup_prefix())?;
        Ok(found
            .into_iter()
            .filter_map(|(rest, meta)| {
                // `{basin}\0{source}\0{created_at}`
                let mut parts = rest.splitn(3, '\0');
                let (basin, name) = (parts.next()?, parts.next()?);
                let mut key = keys::cleanup_prefix();
                key.extend_from_slice(rest.as_bytes());
                Some((key, info(basin, name, meta)))
            })
            .collect())
    }

    /// The traces of a deleted source are gone.
    pub async fn cleaned(&self, key: Vec<u8>) -> EngineResult<()> {
        let mut batch = WriteBatch::default();
        batch.delete(Keyspace::Meta, key);
        self.core.committer().commit(batch).await?;
        Ok(())
    }

    /// Where the source is in its upstream: the beginning if it never
    /// wrote, or if what is kept was written by an earlier source of its
    /// name, or into an earlier collection of its collection's name.
    pub fn cursor(&self, source: &SourceInfo) -> EngineResult<SourceCursor> {
        let kept: Option<SourceCursor> = self
            .core
            .get_meta(&keys::cursor_key(&source.basin, &source.name))?;
        // The newest of its collections: any of them deleted and made
        // again is newer than what the cursor was written with.
        let mut collection_created_at = 0;
        for collection in source.config.collections() {
            let info = self
                .collections
                .collection_info(&source.basin, collection)?;
            collection_created_at = collection_created_at.max(info.created_at);
        }
        let fresh = SourceCursor {
            source_created_at: source.created_at,
            collection_created_at,
            ..Default::default()
        };
        Ok(kept
            .filter(|kept| {
                kept.source_created_at == source.created_at
                    && kept.collection_created_at == collection_created_at
            })
            .unwrap_or(fresh))
    }

    /// Writes `ops` to `collection` (one of the source's) and moves the
    /// source's cursor to `cursor`, all in one atomic batch.
    pub async fn apply(
        &self,
        source: &SourceInfo,
        collection: &str,
        ops: Vec<WriteOp>,
        cursor: &SourceCursor,
    ) -> EngineResult<()> {
        let mut also = WriteBatch::default();
        also.put(
            Keyspace::Meta,
            keys::cursor_key(&source.basin, &source.name),
            keys::encode_json(cursor),
        );
        self.collections
            .write_records_with(&source.basin, collection, ops, also)
            .await?;
        Ok(())
    }

    fn source_meta(&self, basin: &str, name: &str) -> EngineResult<Option<SourceMeta>> {
        self.core.get_meta(&keys::source_key(basin, name))
    }
}

/// The writes that delete a source: its definition and cursor, and for a
/// source that leaves traces upstream, the note to remove them.
fn delete_ops(basin: &str, name: &str, meta: &SourceMeta, batch: &mut WriteBatch) {
    batch.delete(Keyspace::Meta, keys::source_key(basin, name));
    batch.delete(Keyspace::Meta, keys::cursor_key(basin, name));
    if matches!(meta.config, SourceConfig::Postgres(_)) {
        batch.put(
            Keyspace::Meta,
            keys::cleanup_key(basin, name, meta.created_at),
            keys::encode_json(meta),
        );
    }
}

fn info(basin: &str, name: &str, meta: SourceMeta) -> SourceInfo {
    SourceInfo {
        basin: basin.into(),
        name: name.into(),
        config: meta.config,
        created_at: meta.created_at,
    }
}
