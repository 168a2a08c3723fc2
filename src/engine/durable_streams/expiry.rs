//! Expiry: a stream with `Stream-Expires-At` goes at that time; one with
//! `Stream-TTL` after that long without a read or an append, and never
//! while a live reader (long poll, SSE) waits on it. Checked on every
//! access (an expired stream is deleted then, and its path is free at
//! once) and swept by upkeep, so that expired streams give their space
//! back though no one asks for them.
//!
//! The sliding TTL's last access is kept in memory only (writing it on
//! every read would make reads cost a write). After a restart a TTL
//! counts from the first time the stream is seen: a stream may outlive
//! its TTL by the server's downtime, never the other way.

use std::time::{Duration, Instant};

use super::layer::{DurableStreams, Lookup, Use};
use super::meta::{meta_key, DurableMeta, Expiry, BASIN};
use crate::engine::error::EngineResult;
use crate::engine::locks::lock;
use crate::engine::streams::types::now_ms;

/// Held by a live read; the stream does not expire while it is.
pub(super) struct LiveReader<'a> {
    streams: &'a DurableStreams,
    id: u64,
}

impl Drop for LiveReader<'_> {
    fn drop(&mut self) {
        let mut used = lock(&self.streams.used);
        if let Some(entry) = used.get_mut(&self.id) {
            entry.live = entry.live.saturating_sub(1);
            // Its TTL counts from when the last reader left.
            entry.last = Instant::now();
        }
    }
}

impl DurableStreams {
    pub(super) fn has_expired(&self, id: u64, expiry: Expiry) -> bool {
        match expiry {
            Expiry::Never => false,
            Expiry::At(at) => now_ms() >= at,
            Expiry::Ttl(secs) => {
                let mut used = lock(&self.used);
                let entry = used.entry(id).or_insert_with(|| Use {
                    last: Instant::now(),
                    live: 0,
                });
                entry.live == 0 && entry.last.elapsed() >= Duration::from_secs(secs)
            }
        }
    }

    pub(super) fn touch(&self, id: u64, expiry: Expiry) {
        if let Expiry::Ttl(_) = expiry {
            lock(&self.used)
                .entry(id)
                .and_modify(|entry| entry.last = Instant::now())
                .or_insert_with(|| Use {
                    last: Instant::now(),
                    live: 0,
                });
        }
    }

    /// Marks a live reader of stream `id` until the guard drops (streams
    /// with a sliding TTL only: no other needs the mark).
    pub(super) fn live_reader(&self, id: u64, expiry: Expiry) -> Option<LiveReader<'_>> {
        if !matches!(expiry, Expiry::Ttl(_)) {
            return None;
        }
        lock(&self.used)
            .entry(id)
            .or_insert_with(|| Use {
                last: Instant::now(),
                live: 0,
            })
            .live += 1;
        Some(LiveReader { streams: self, id })
    }

    pub(super) fn forget(&self, id: u64) {
        lock(&self.used).remove(&id);
    }

    /// Deletes stream `id` at `name` if it is still there and expired.
    pub(super) async fn delete_expired(&self, name: &str, id: u64) -> EngineResult<()> {
        let _admin = self.admin.lock().await;
        match self.lookup(name, false).await? {
            Lookup::Expired(current) if current == id => self.remove(name, id).await,
            _ => Ok(()),
        }
    }

    /// Upkeep: deletes every expired stream, and any a crash cut off
    /// while it was made; decided from their meta alone (no stream task
    /// is started). Skipped while a creation or deletion runs (a fork
    /// copying a long stream, say): the next round does it.
    pub async fn sweep(&self) -> EngineResult<()> {
        if self.core.basin_meta(BASIN).is_err() {
            return Ok(());
        }
        let Ok(_admin) = self.admin.try_lock() else {
            return Ok(());
        };
        for (name, stream) in self.core.all_stream_metas(BASIN)? {
            // A stream made through S2 has no meta: it never expires.
            let meta: Option<DurableMeta> = self.core.get_meta(&meta_key(stream.id))?;
            let Some(meta) = meta else { continue };
            // Holding `admin`, no `PUT` is under way: unready is a crash's
            // leftover.
            if let Some(Lookup::Expired(id) | Lookup::Unready(id)) = self.unusable(stream.id, &meta)
            {
                if let Err(err) = self.remove(&name, id).await {
                    tracing::warn!(stream = %name, error = %err, "deleting an expired Durable Streams stream failed; retrying next round");
                }
            }
        }
        Ok(())
    }
}
