//! The layer itself: opening a stream by its name (checking its expiry),
//! and deleting it.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use super::meta::{self, Settings, BASIN};
use crate::engine::error::{EngineError, EngineResult};
use crate::engine::streams::keys;
use crate::engine::streams::streamer::StreamHandle;
use crate::engine::streams::tails::Visible;
use crate::engine::streams::{delete_stream_ops, CreateIf, StreamCore};
use crate::storage::{Keyspace, WriteBatch};

/// The Durable Streams layer.
pub struct DurableStreams {
    pub(super) core: Arc<StreamCore>,
    /// Serializes creations and deletions, so that two `PUT`s of one path
    /// never both create it, and an expiry never deletes a stream made
    /// again in its place.
    pub(super) admin: tokio::sync::Mutex<()>,
    /// How each stream with a sliding TTL was last used, by stream id (in
    /// memory: after a restart the countdown starts again).
    pub(super) used: Mutex<HashMap<u64, Use>>,
}

/// How a stream with a sliding TTL was last used (`expiry.rs`).
pub(super) struct Use {
    pub(super) last: std::time::Instant,
    /// Live readers waiting on it now.
    pub(super) live: usize,
}

/// A stream that exists, as of its opening.
pub struct DurableStream {
    pub name: String,
    /// Its S2 stream's id: unique to this stream, never reused.
    pub id: u64,
    pub settings: Settings,
    /// All this layer keeps of it, as of its opening.
    pub(super) meta: meta::DurableMeta,
    pub(super) handle: Arc<StreamHandle>,
}

impl DurableStream {
    /// What is durable now: tail, trim point, closed.
    pub fn visible(&self) -> Visible {
        self.handle.visible()
    }
}

impl DurableStreams {
    pub fn new(core: Arc<StreamCore>) -> Arc<Self> {
        Arc::new(Self {
            core,
            admin: tokio::sync::Mutex::new(()),
            used: Mutex::new(HashMap::new()),
        })
    }

    /// The stream at `name`, if it exists and has not expired (one that
    /// has is deleted now). `touch` restarts a sliding TTL (reads and
    /// appends do; `HEAD` does not).
    pub async fn open(&self, name: &str, touch: bool) -> EngineResult<DurableStream> {
        match self.lookup(name, touch).await? {
            Lookup::Found(stream) => Ok(stream),
            Lookup::Missing | Lookup::Unready(_) => Err(EngineError::StreamNotFound(name.into())),
            Lookup::Deleted => Err(EngineError::StreamDeleted(name.into())),
            Lookup::Expired(id) => {
                self.delete_expired(name, id).await?;
                Err(self.gone_or_kept(name, id)?)
            }
        }
    }

    /// What is at `name`; callers that hold `admin` act on an expired,
    /// unready or deleted stream themselves.
    pub(super) async fn lookup(&self, name: &str, touch: bool) -> EngineResult<Lookup> {
        let Some((id, meta)) = self.meta(name)? else {
            return Ok(Lookup::Missing);
        };
        if let Some(unusable) = self.unusable(id, &meta) {
            return Ok(unusable);
        }
        if touch {
            self.touch(id, meta.settings.expiry);
        }
        self.found(name, id, meta).await
    }

    /// What keeps stream `id` from being used, from its meta alone.
    pub(super) fn unusable(&self, id: u64, meta: &meta::DurableMeta) -> Option<Lookup> {
        if !meta.ready {
            Some(Lookup::Unready(id))
        } else if meta.deleted {
            Some(Lookup::Deleted)
        } else if self.has_expired(id, meta.settings.expiry) {
            Some(Lookup::Expired(id))
        } else {
            None
        }
    }

    /// The stream `id` at `name`, with its task.
    pub(super) async fn found(
        &self,
        name: &str,
        id: u64,
        meta: meta::DurableMeta,
    ) -> EngineResult<Lookup> {
        let handle = self.core.stream(BASIN, name, CreateIf::Never).await?;
        if handle.id != id {
            // Deleted and made again between the two looks.
            return Ok(Lookup::Missing);
        }
        Ok(Lookup::Found(DurableStream {
            name: name.to_string(),
            id,
            settings: meta.settings.clone(),
            meta,
            handle,
        }))
    }

    /// The stream's id and what this layer keeps of it; a stream made
    /// through S2 gets the defaults.
    pub(super) fn meta(&self, name: &str) -> EngineResult<Option<(u64, meta::DurableMeta)>> {
        let Some(stream) = self.core.stream_meta(BASIN, name)? else {
            return Ok(None);
        };
        let meta = self
            .core
            .get_meta(&meta::meta_key(stream.id))?
            .unwrap_or_else(meta::DurableMeta::of_s2_stream);
        Ok(Some((stream.id, meta)))
    }

    /// Deletes the stream (`DELETE`).
    pub async fn delete(&self, name: &str) -> EngineResult<()> {
        self.core.check_writable(name)?;
        let _admin = self.admin.lock().await;
        match self.lookup(name, false).await? {
            Lookup::Found(stream) => self.remove(name, stream.id).await,
            Lookup::Missing | Lookup::Unready(_) => Err(EngineError::StreamNotFound(name.into())),
            Lookup::Deleted => Err(EngineError::StreamDeleted(name.into())),
            Lookup::Expired(id) => {
                self.remove(name, id).await?;
                Err(self.gone_or_kept(name, id)?)
            }
        }
    }

    /// Why stream `id`, just removed, is not found: gone, or kept (deleted)
    /// for its forks.
    pub(super) fn gone_or_kept(&self, name: &str, id: u64) -> EngineResult<EngineError> {
        Ok(match self.meta(name)? {
            Some((current, meta)) if current == id && meta.deleted => {
                EngineError::StreamDeleted(name.into())
            }
            _ => EngineError::StreamNotFound(name.into()),
        })
    }

    /// Deletes stream `id` at `name`, if it is still the one there: only
    /// marks it deleted while it has forks; else deletes it, and its
    /// source counts one fork less (and goes too, if it was deleted and
    /// that was its last; and so on up). One batch: a crash, or a client
    /// gone, leaves all of it done or none. The caller holds `admin`.
    pub(super) async fn remove(&self, name: &str, id: u64) -> EngineResult<()> {
        let mut batch = WriteBatch::default();
        // What the batch has changed so far, by stream id.
        let mut changed: HashMap<u64, meta::DurableMeta> = HashMap::new();
        let mut removed = Vec::new();
        let mut next = Some((name.to_string(), id));
        let _core_admin = self.core.lock_admin().await;
        while let Some((name, id)) = next.take() {
            let Some((current, stored)) = self.meta(&name)? else {
                break;
            };
            if current != id {
                break;
            }
            let mut meta = changed.remove(&id).unwrap_or(stored);
            if meta.forks > 0 {
                meta.deleted = true;
                batch.put(Keyspace::Meta, meta::meta_key(id), keys::encode_json(&meta));
                break;
            }
            self.core.stop_stream(BASIN, &name).await;
            delete_stream_ops(&mut batch, BASIN, &name, id);
            removed.push((name, id));
            let Some(origin) = meta.fork else { break };
            let Some((source_id, stored)) = self.meta(&origin.source)? else {
                break;
            };
            if source_id != origin.source_id {
                break;
            }
            let mut source = changed.remove(&source_id).unwrap_or(stored);
            source.forks = source.forks.saturating_sub(1);
            if source.deleted && source.forks == 0 {
                next = Some((origin.source, source_id));
            } else {
                batch.put(
                    Keyspace::Meta,
                    meta::meta_key(source_id),
                    keys::encode_json(&source),
                );
            }
            changed.insert(source_id, source);
        }
        self.core.committer().commit(batch).await?;
        for (name, id) in removed {
            self.core.metrics.streams.forget_stream(BASIN, &name);
            self.forget(id);
        }
        Ok(())
    }
}

/// What is at a name.
pub(super) enum Lookup {
    Found(DurableStream),
    Missing,
    /// Made by a `PUT` not yet done, or cut off by a crash: not shown.
    Unready(u64),
    /// Deleted while it had forks, which keep it.
    Deleted,
    /// A stream, expired: the caller deletes it.
    Expired(u64),
}
