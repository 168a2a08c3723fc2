//! The layer itself: opening a stream by its name (checking its expiry),
//! and deleting it.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use super::meta::{self, Settings, BASIN};
use crate::engine::error::{EngineError, EngineResult};
use crate::engine::streams::streamer::{StreamHandle, Visible};
use crate::engine::streams::{CreateIf, StreamCore};

/// The Durable Streams layer.
pub struct DurableStreams {
    pub(super) core: Arc<StreamCore>,
    /// Serializes creations and deletions, so that two `PUT`s of one path
    /// never both create it, and an expiry never deletes a stream made
    /// again in its place.
    pub(super) admin: tokio::sync::Mutex<()>,
    /// When each stream with a sliding TTL was last read or written, by
    /// stream id (in memory: after a restart the countdown starts again).
    pub(super) touched: Mutex<HashMap<u64, Instant>>,
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
            touched: Mutex::new(HashMap::new()),
        })
    }

    /// The stream at `name`, if it exists and has not expired (one that
    /// has is deleted now). `touch` restarts a sliding TTL (reads and
    /// appends do; `HEAD` does not).
    pub async fn open(&self, name: &str, touch: bool) -> EngineResult<DurableStream> {
        match self.lookup(name, touch).await? {
            Lookup::Found(stream) => Ok(stream),
            Lookup::Missing => Err(EngineError::StreamNotFound(name.into())),
            Lookup::Deleted => Err(EngineError::StreamDeleted(name.into())),
            Lookup::Expired(id) => {
                self.delete_expired(name, id).await?;
                Err(EngineError::StreamNotFound(name.into()))
            }
        }
    }

    /// [`Self::open`] for callers holding `admin`, which delete an expired
    /// stream themselves.
    pub(super) async fn lookup(&self, name: &str, touch: bool) -> EngineResult<Lookup> {
        let Some((id, meta)) = self.meta(name)? else {
            return Ok(Lookup::Missing);
        };
        if !meta.ready {
            return Ok(Lookup::Missing);
        }
        if meta.deleted {
            return Ok(Lookup::Deleted);
        }
        if self.has_expired(id, meta.settings.expiry) {
            return Ok(Lookup::Expired(id));
        }
        if touch {
            self.touch(id, meta.settings.expiry);
        }
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
        let _admin = self.admin.lock().await;
        match self.lookup(name, false).await? {
            Lookup::Found(stream) => self.remove(name, stream.id).await,
            Lookup::Missing => Err(EngineError::StreamNotFound(name.into())),
            Lookup::Deleted => Err(EngineError::StreamDeleted(name.into())),
            Lookup::Expired(id) => {
                self.remove(name, id).await?;
                Err(EngineError::StreamNotFound(name.into()))
            }
        }
    }
}

/// What is at a name.
pub(super) enum Lookup {
    Found(DurableStream),
    Missing,
    /// Deleted while it had forks, which keep it.
    Deleted,
    /// A stream, expired: the caller deletes it.
    Expired(u64),
}
