//! Expiry: a stream with `Stream-Expires-At` goes at that time; one with
//! `Stream-TTL` after that long without a read or an append. Checked on
//! every access (an expired stream is deleted then, and its path is free
//! at once) and swept by upkeep, so that expired streams give their space
//! back though no one asks for them.
//!
//! The sliding TTL's last access is kept in memory only (writing it on
//! every read would make reads cost a write). After a restart a TTL
//! counts from the first time the stream is seen: a stream may outlive
//! its TTL by the server's downtime, never the other way.

use std::time::{Duration, Instant};

use super::layer::DurableStreams;
use super::meta::DurableMeta;
use super::meta::{Expiry, BASIN};
use crate::engine::error::EngineResult;
use crate::engine::locks::lock;
use crate::engine::streams::types::now_ms;

impl DurableStreams {
    pub(super) fn has_expired(&self, id: u64, expiry: Expiry) -> bool {
        match expiry {
            Expiry::Never => false,
            Expiry::At(at) => now_ms() >= at,
            Expiry::Ttl(secs) => {
                let mut touched = lock(&self.touched);
                let last = *touched.entry(id).or_insert_with(Instant::now);
                last.elapsed() >= Duration::from_secs(secs)
            }
        }
    }

    pub(super) fn touch(&self, id: u64, expiry: Expiry) {
        if let Expiry::Ttl(_) = expiry {
            lock(&self.touched).insert(id, Instant::now());
        }
    }

    pub(super) fn forget(&self, id: u64) {
        lock(&self.touched).remove(&id);
    }

    /// Deletes stream `id` at `name` if it is still there and expired.
    pub(super) async fn delete_expired(&self, name: &str, id: u64) -> EngineResult<()> {
        let _admin = self.admin.lock().await;
        match self.meta(name)? {
            Some((current, meta))
                if current == id && self.has_expired(id, meta.settings.expiry) =>
            {
                self.remove(name, id).await
            }
            _ => Ok(()),
        }
    }

    /// Deletes every expired stream (upkeep).
    pub async fn sweep_expired(&self) -> EngineResult<()> {
        if self.core.basin_meta(BASIN).is_err() {
            return Ok(());
        }
        for (name, stream) in self.core.all_stream_metas(BASIN)? {
            let meta: Option<DurableMeta> =
                self.core.get_meta(&super::meta::meta_key(stream.id))?;
            if let Some(meta) = meta {
                if self.has_expired(stream.id, meta.settings.expiry) {
                    self.delete_expired(&name, stream.id).await?;
                }
            }
        }
        Ok(())
    }
}
