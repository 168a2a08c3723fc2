//! Background upkeep: age-based retention, delete-on-empty, and removing
//! the records of trimmed ranges and deleted streams.
//!
//! Trimming is logical first: the trim point moves (durably, through the
//! stream task) and reads never go below it. Removing the bytes happens
//! here, later, in bounded batches; if the server stops half way, the next
//! pass simply finds the remaining keys and continues.

use std::ops::ControlFlow;
use std::sync::Arc;

use super::config::RetentionPolicy;
use super::core::{CreateIf, StreamCore};
use super::keys::{self, StreamMeta, StreamState};
use super::read::first_seq_arrived_at_or_after;
use super::size_counters::count_purged;
use super::streamer::{Command, StreamHandle};
use crate::engine::error::EngineResult;
use crate::engine::locks::lock;
use crate::storage::{prefix_end, Keyspace, WriteBatch};

/// Keys removed per committed batch while purging.
const PURGE_CHUNK: usize = 4096;

impl StreamCore {
    /// One pass of upkeep over every stream. A failure on one stream is
    /// logged and does not stop the others.
    pub(crate) async fn upkeep_once(&self) {
        let _one_pass_at_a_time = self.upkeep.lock().await;
        for basin in self.basin_names() {
            let streams = match self.all_stream_metas(&basin) {
                Ok(streams) => streams,
                Err(err) => {
                    tracing::warn!(basin, error = %err, "upkeep could not list streams");
                    continue;
                }
            };
            for (name, meta) in streams {
                if *self.closing.borrow() {
                    return; // shutting down: no new work
                }
                if let Err(err) = self.upkeep_stream(&basin, &name, &meta).await {
                    tracing::warn!(basin, stream = name, error = %err, "upkeep failed; retrying next round");
                }
            }
        }
        if let Err(err) = self.purge_deleted_streams().await {
            tracing::warn!(error = %err, "purging deleted streams failed; retrying next round");
        }
    }

    /// The running task of the stream `meta` describes, if it is still that
    /// stream: the list upkeep works from may be stale, and a stream of the
    /// same name may have been deleted and created again since.
    async fn same_stream(
        &self,
        basin: &str,
        name: &str,
        meta: &StreamMeta,
    ) -> EngineResult<Option<Arc<StreamHandle>>> {
        let handle = self.stream(basin, name, CreateIf::Never).await?;
        Ok((handle.id == meta.id).then_some(handle))
    }

    async fn upkeep_stream(&self, basin: &str, name: &str, meta: &StreamMeta) -> EngineResult<()> {
        let running = self.running_stream(basin, name);
        if running.as_ref().is_some_and(|h| h.id != meta.id) {
            return Ok(()); // stale entry: the name now belongs to a new stream
        }
        let (tail, trim_point, last_write_at) = match &running {
            Some(handle) => {
                let visible = handle.visible();
                (
                    visible.tail.seq_num,
                    visible.trim_point,
                    visible.last_write_at,
                )
            }
            None => {
                let Some(state) = self.get_meta::<StreamState>(&keys::state_key(meta.id))? else {
                    return Ok(());
                };
                (state.next_seq_num, state.trim_point, state.last_write_at)
            }
        };
        let now = super::types::now_ms();

        // Age is measured from when records arrived, as in S2: client
        // timestamps may be anything (the S2 CLI's bench uses microseconds
        // since its start).
        if let RetentionPolicy::Age(age_secs) = meta.config.retention_policy {
            let cutoff = now.saturating_sub(age_secs.saturating_mul(1000));
            let keep_from = first_seq_arrived_at_or_after(&*self.storage, meta.id, cutoff, tail)?;
            if keep_from > trim_point {
                if let Some(handle) = self.same_stream(basin, name, meta).await? {
                    handle
                        .send(Command::Trim {
                            keep_from,
                            age_secs,
                        })
                        .await?;
                }
            }
        }

        let min_idle_ms = meta
            .config
            .delete_on_empty
            .min_age_secs
            .saturating_mul(1000);
        if min_idle_ms > 0 && trim_point >= tail && now.saturating_sub(last_write_at) >= min_idle_ms
        {
            return self.delete_stream_if_empty(basin, name, meta).await;
        }

        self.purge_below(meta.id, trim_point).await
    }

    /// Deletes the stream if, checked by its own task, it is still empty and
    /// idle; an append racing with this either lands first (and the stream
    /// stays) or finds the stream gone.
    async fn delete_stream_if_empty(
        &self,
        basin: &str,
        name: &str,
        meta: &StreamMeta,
    ) -> EngineResult<()> {
        let Some(handle) = self.same_stream(basin, name, meta).await? else {
            return Ok(());
        };
        let id = meta.id;
        let _admin = self.admin.lock().await;
        // The config may have changed since upkeep listed the streams.
        let min_idle_ms = match self.stream_meta(basin, name)? {
            Some(current) if current.id == id => current
                .config
                .delete_on_empty
                .min_age_secs
                .saturating_mul(1000),
            _ => return Ok(()),
        };
        if min_idle_ms == 0 {
            return Ok(());
        }
        let current = self.running_stream(basin, name);
        if !current.is_some_and(|c| Arc::ptr_eq(&c, &handle)) {
            return Ok(()); // deleted or restarted meanwhile; next round decides
        }
        let (reply, stopped) = tokio::sync::oneshot::channel();
        handle
            .send(Command::StopIfEmpty { min_idle_ms, reply })
            .await?;
        if !stopped.await.unwrap_or(false) {
            return Ok(());
        }
        lock(&self.tasks).remove(&(basin.to_string(), name.to_string()));
        tracing::info!(basin, stream = name, "deleting empty stream");
        let mut batch = WriteBatch::default();
        super::admin::delete_stream_ops(&mut batch, basin, name, id);
        self.committer.commit(batch).await?;
        self.metrics.streams.forget_stream(basin, name);
        Ok(())
    }

    /// Removes records below `trim_point`, and index entries whose whole run
    /// of records lies below it (an entry that starts a run continuing past
    /// the trim point stays: lookups still need it).
    async fn purge_below(&self, id: u64, trim_point: u64) -> EngineResult<()> {
        // Scanning a purged range still walks its tombstones; skip streams
        // whose trim point has not moved since their last purge.
        let already = lock(&self.purged).get(&id).copied().unwrap_or(0);
        if already >= trim_point && already > 0 {
            return Ok(());
        }
        self.delete_range(
            Keyspace::StreamRecords,
            keys::record_key(id, already),
            &keys::record_key(id, trim_point),
            Some(id),
        )
        .await?;
        for index in [Keyspace::Timestamps, Keyspace::Arrivals] {
            self.purge_index_below(index, id, trim_point).await?;
        }
        lock(&self.purged).insert(id, trim_point);
        Ok(())
    }

    /// Removes the entries of `index` whose whole run of records lies below
    /// `trim_point`: every entry followed by one that starts at or below it.
    async fn purge_index_below(
        &self,
        index: Keyspace,
        id: u64,
        trim_point: u64,
    ) -> EngineResult<()> {
        let end = keys::index_key(id, u64::MAX, u64::MAX);
        let mut start = keys::index_key(id, 0, 0);
        loop {
            let mut batch = WriteBatch::default();
            let mut previous: Option<Vec<u8>> = None;
            let mut more = false;
            self.storage.scan(index, &start, &end, &mut |key, _| {
                let Some((_, seq)) = keys::parse_index_key(key) else {
                    return ControlFlow::Continue(());
                };
                if seq > trim_point {
                    return ControlFlow::Break(());
                }
                if batch.ops.len() >= PURGE_CHUNK {
                    more = true;
                    return ControlFlow::Break(());
                }
                // The next run starts at or below the trim point, so the
                // previous run is wholly trimmed.
                if let Some(prev) = previous.replace(key.to_vec()) {
                    batch.delete(index, prev);
                }
                ControlFlow::Continue(())
            })?;
            if batch.is_empty() {
                return Ok(());
            }
            self.committer.commit(batch).await?;
            match previous {
                // Not deleted yet: the next scan starts with it.
                Some(kept) if more => start = kept,
                _ => return Ok(()),
            }
        }
    }

    /// Deletes every key in `start..end` of `keyspace`, in committed
    /// batches of [`PURGE_CHUNK`]. Each scan starts after the last key
    /// deleted: starting over would walk every tombstone already written,
    /// which makes a large purge quadratic. With `counted`, the keys are
    /// records of that live stream, and each batch also counts the bytes
    /// it removes (`sizes.rs`).
    async fn delete_range(
        &self,
        keyspace: Keyspace,
        mut start: Vec<u8>,
        end: &[u8],
        counted: Option<u64>,
    ) -> EngineResult<()> {
        loop {
            let mut batch = WriteBatch::default();
            let mut last = None;
            let mut bytes = 0;
            self.storage
                .scan(keyspace, &start, end, &mut |key, value| {
                    batch.delete(keyspace, key.to_vec());
                    bytes += keys::stored_metered_size(value).unwrap_or(0);
                    if batch.ops.len() >= PURGE_CHUNK {
                        last = Some(key.to_vec());
                        ControlFlow::Break(())
                    } else {
                        ControlFlow::Continue(())
                    }
                })?;
            if !batch.is_empty() {
                if let Some(id) = counted {
                    count_purged(&*self.storage, &mut batch, id, bytes)?;
                }
                self.committer.commit(batch).await?;
            }
            let Some(mut last) = last else {
                return Ok(()); // the scan reached `end`
            };
            last.push(0); // the smallest key after it
            start = last;
        }
    }

    /// Removes everything keyed by the id of a deleted stream (or of an
    /// upper layer's deleted object: see [`keys::purge_key`]).
    async fn purge_deleted_streams(&self) -> EngineResult<()> {
        let mut ids = Vec::new();
        self.storage.scan(
            Keyspace::Meta,
            &keys::purge_prefix(),
            &prefix_end(&keys::purge_prefix()),
            &mut |key, _| {
                if let Some(id) = keys::purge_id_from_key(key) {
                    ids.push(id);
                }
                ControlFlow::Continue(())
            },
        )?;
        for id in ids {
            // Every key of a stream starts with its id, in every keyspace.
            let (start, end) = (id.to_be_bytes().to_vec(), prefix_end(&id.to_be_bytes()));
            // Upper layers key their data by ids from the same counter and
            // purge it with the same marker, so every keyspace is swept.
            for keyspace in Keyspace::ALL {
                if keyspace != Keyspace::Meta {
                    self.delete_range(keyspace, start.clone(), &end, None)
                        .await?;
                }
            }
            // And in meta, what the stream carried besides its records.
            let attachments = keys::attachment_prefix(id);
            let attachments_end = prefix_end(&attachments);
            self.delete_range(Keyspace::Meta, attachments, &attachments_end, None)
                .await?;
            let mut batch = WriteBatch::default();
            // Upkeep purges one stream at a time, so a purge of this stream
            // that ran on as it was deleted has written its count by now.
            batch.delete(Keyspace::Meta, keys::purged_bytes_key(id));
            batch.delete(Keyspace::Meta, keys::purge_key(id));
            self.committer.commit(batch).await?;
        }
        Ok(())
    }
}
