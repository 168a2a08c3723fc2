//! Consumers: create, get (with their state), list, reconfigure, delete.

use std::ops::ControlFlow;

use super::config::{dead_letter_config, dead_letter_stream, ConsumerName};
use super::config::{AckPolicy, ConsumerConfig, ConsumerConfigPatch, Source, Start};
use super::keys::{self, ConsumerMeta};
use super::lag;
use super::layer::Consumers;
use super::position::Frontier;
use super::source::SourceHandle;
use super::state::{ConsumerInfo, ConsumerProgress, ConsumerStats};
use crate::engine::error::{EngineError, EngineResult};
use crate::engine::locks::lock;
use crate::engine::streams::types::now_ms;
use crate::engine::streams::{
    delete_stream_ops, first_seq_timestamped_at_or_after, stream_creation_ops, ListRequest,
    Provision, MAX_LIST_LIMIT,
};
use crate::metrics::ConsumerSample;
use crate::storage::{prefix_end, Keyspace, WriteBatch};

impl Consumers {
    /// Creates the consumer, or brings an existing one's adjustable settings
    /// in line with `config`.
    pub async fn ensure_consumer(
        &self,
        basin: &str,
        name: &ConsumerName,
        config: ConsumerConfig,
    ) -> EngineResult<(ConsumerInfo, Provision)> {
        config.validate()?;
        self.core.basin_meta(basin)?;
        // A conflict is a conflict even if the new source does not exist.
        if let Some(meta) = self.consumer_meta(basin, name)? {
            if !meta.config.same_identity(&config) {
                return Err(EngineError::ConsumerConflict(name.into()));
            }
        }
        // Resolving may start the source's task, which takes the admin lock.
        let (source, source_id) = self.resolve_source(basin, &config.source).await?;
        let _admin = self.core.lock_admin().await;
        let basin_meta = self.core.basin_meta(basin)?;
        if let Some(meta) = self.consumer_meta(basin, name)? {
            if !meta.config.same_identity(&config) {
                return Err(EngineError::ConsumerConflict(name.into()));
            }
            if meta.config == config {
                return Ok((ConsumerInfo::new(name, &meta), Provision::Unchanged));
            }
            let meta = self.put_consumer_config(basin, name, meta, config).await?;
            return Ok((ConsumerInfo::new(name, &meta), Provision::Updated));
        }
        let frontier = self.start_frontier(&source, &config.start)?;
        let mut batch = WriteBatch::default();
        let [id, dead_letter_id] = self.core.allocate_ids(&mut batch)?;
        let meta = ConsumerMeta {
            id,
            config,
            created_at: now_ms(),
            source_id,
        };
        batch.put(
            Keyspace::Meta,
            keys::consumer_key(basin, name),
            keys::encode_json(&meta),
        );
        batch.put(
            Keyspace::Meta,
            keys::consumer_progress_key(id),
            keys::encode_json(&ConsumerProgress {
                frontier,
                delivered: 0,
                redelivered: 0,
                acked: 0,
                nacked: 0,
                dead_lettered: 0,
                dropped: 0,
            }),
        );
        let dead_letters = dead_letter_stream(name);
        if self.core.stream_meta(basin, &dead_letters)?.is_none() {
            stream_creation_ops(
                &mut batch,
                basin,
                &dead_letters,
                dead_letter_config(basin_meta.config.default_stream_config),
                None,
                dead_letter_id,
            );
        }
        self.core.committer().commit(batch).await?;
        Ok((ConsumerInfo::new(name, &meta), Provision::Created))
    }

    /// Where the consumer's messages come from: what a client must be
    /// allowed to read to receive them.
    pub async fn source_of(&self, basin: &str, name: &str) -> EngineResult<Source> {
        Ok(self.consumer(basin, name).await?.source.clone())
    }

    /// The consumer, with its current state.
    pub async fn consumer_info(&self, basin: &str, name: &str) -> EngineResult<ConsumerInfo> {
        let handle = self.consumer(basin, name).await?;
        let source = match self.resolve_source(basin, &handle.source).await {
            Ok((source, id)) if id == handle.source_id => Some(source),
            _ => None,
        };
        let state = handle.state.lock().await;
        state.check_live(name)?;
        let now = now_ms();
        let ack_floor = match state.config.ack_policy {
            AckPolicy::Explicit => state.pending.floor().cloned(),
            AckPolicy::Cursor => None,
        };
        let mut stats = ConsumerStats {
            ack_floor,
            frontier: state.progress.frontier.clone(),
            pending: state.pending.len(),
            in_flight: state.pending.in_flight(now),
            progress: state.progress.clone(),
            lag: None,
        };
        let config = state.config.clone();
        drop(state);
        // A records feed's lag is a scan: off the async workers, and
        // without the consumer's lock (it is a reading, not a promise).
        if let Some(source) = source {
            let storage = self.core.storage().clone();
            let (first, frontier) = (stats.ack_floor.clone(), stats.frontier.clone());
            let measured = tokio::task::spawn_blocking(move || {
                lag::lag(storage.as_ref(), &source, first.as_ref(), &frontier, now)
            })
            .await;
            // A reading that failed leaves the lag unknown, not the
            // consumer unreadable.
            stats.lag = match measured {
                Ok(Ok(lag)) => Some(lag),
                Ok(Err(err)) => {
                    tracing::warn!(basin, consumer = name, %err, "cannot tell a consumer's lag");
                    None
                }
                Err(err) if err.is_panic() => std::panic::resume_unwind(err.into_panic()),
                Err(_) => None, // shutting down
            };
        }
        Ok(ConsumerInfo {
            name: name.into(),
            created_at: handle.created_at,
            config,
            dead_letter_stream: dead_letter_stream(name),
            stats: Some(stats),
        })
    }

    /// Every consumer of every basin, with its figures, for the metrics.
    /// One being deleted is left out; one whose source is gone has no lag.
    pub async fn samples(&self) -> Vec<ConsumerSample> {
        let mut samples = Vec::new();
        for basin in self.core.basin_names() {
            let mut req = ListRequest {
                limit: Some(MAX_LIST_LIMIT),
                ..Default::default()
            };
            // Until the basin has no more (or went meanwhile).
            while let Ok((page, has_more)) = self.list_consumers(&basin, &req) {
                for listed in &page {
                    let Ok(info) = self.consumer_info(&basin, &listed.name).await else {
                        continue;
                    };
                    if let Some(stats) = info.stats {
                        samples.push(sample(&basin, &info.name, &stats));
                    }
                }
                match page.last() {
                    Some(last) if has_more => req.start_after = last.name.clone(),
                    _ => break,
                }
            }
        }
        samples
    }

    pub fn list_consumers(
        &self,
        basin: &str,
        req: &ListRequest,
    ) -> EngineResult<(Vec<ConsumerInfo>, bool)> {
        self.core.basin_meta(basin)?;
        let (found, has_more) = self
            .core
            .list_named_meta::<ConsumerMeta>(&keys::consumer_prefix(basin), req)?;
        Ok((
            found
                .iter()
                .map(|(name, meta)| ConsumerInfo::new(name, meta))
                .collect(),
            has_more,
        ))
    }

    pub async fn reconfigure_consumer(
        &self,
        basin: &str,
        name: &str,
        patch: &ConsumerConfigPatch,
    ) -> EngineResult<ConsumerInfo> {
        let _admin = self.core.lock_admin().await;
        self.core.basin_meta(basin)?;
        let meta = self
            .consumer_meta(basin, name)?
            .ok_or_else(|| EngineError::ConsumerNotFound(name.into()))?;
        let config = meta.config.apply(patch)?;
        let meta = self.put_consumer_config(basin, name, meta, config).await?;
        Ok(ConsumerInfo::new(name, &meta))
    }

    /// Deletes the consumer, its pending state and its dead-letter stream.
    pub async fn delete_consumer(&self, basin: &str, name: &str) -> EngineResult<()> {
        let _admin = self.core.lock_admin().await;
        self.core.basin_meta(basin)?;
        let meta = self
            .consumer_meta(basin, name)?
            .ok_or_else(|| EngineError::ConsumerNotFound(name.into()))?;
        let mut batch = WriteBatch::default();
        self.delete_consumer_ops(&mut batch, basin, name, meta.id)
            .await?;
        let dead_letters = dead_letter_stream(name);
        if let Some(stream) = self.core.stream_meta(basin, &dead_letters)? {
            self.core.stop_stream(basin, &dead_letters).await;
            delete_stream_ops(&mut batch, basin, &dead_letters, stream.id);
        }
        self.core.committer().commit(batch).await?;
        let metrics = &self.core.metrics.streams;
        metrics.forget_stream(basin, &dead_letters);
        Ok(())
    }

    /// The writes that delete a consumer's keys; also retires its handle,
    /// so that operations waiting on it fail with "not found". The caller
    /// holds the admin lock.
    pub(super) async fn delete_consumer_ops(
        &self,
        batch: &mut WriteBatch,
        basin: &str,
        name: &str,
        id: u64,
    ) -> EngineResult<()> {
        let handle = lock(&self.handles).remove(&(basin.to_string(), name.to_string()));
        if let Some(handle) = handle {
            let mut state = handle.state.lock().await;
            state.deleted = true;
            // Pending keys queued but not yet on disk are not in the scan
            // below; delete them by what memory holds.
            for position in state.pending.positions() {
                batch.delete(
                    Keyspace::Meta,
                    keys::consumer_pending_key(id, &position.to_bytes()),
                );
            }
            drop(state);
            handle.changed.send_modify(|n| *n += 1);
        }
        batch.delete(Keyspace::Meta, keys::consumer_key(basin, name));
        batch.delete(Keyspace::Meta, keys::consumer_progress_key(id));
        let prefix = keys::consumer_pending_prefix(id);
        self.core.storage().scan(
            Keyspace::Meta,
            &prefix,
            &prefix_end(&prefix),
            &mut |key, _| {
                batch.delete(Keyspace::Meta, key.to_vec());
                ControlFlow::Continue(())
            },
        )?;
        Ok(())
    }

    /// The consumers of `basin`, by name and id.
    pub(super) fn consumer_ids(&self, basin: &str) -> EngineResult<Vec<(String, u64)>> {
        let found: Vec<(String, ConsumerMeta)> =
            self.core.all_named_meta(&keys::consumer_prefix(basin))?;
        Ok(found
            .into_iter()
            .map(|(name, meta)| (name, meta.id))
            .collect())
    }

    async fn put_consumer_config(
        &self,
        basin: &str,
        name: &str,
        mut meta: ConsumerMeta,
        config: ConsumerConfig,
    ) -> EngineResult<ConsumerMeta> {
        let handle = lock(&self.handles)
            .get(&(basin.to_string(), name.to_string()))
            .cloned();
        // Under the consumer's mutex, so that no operation runs with the
        // old settings after the new ones are durable.
        let mut state = match &handle {
            Some(handle) => Some(handle.state.lock().await),
            None => None,
        };
        meta.config = config;
        let mut batch = WriteBatch::default();
        batch.put(
            Keyspace::Meta,
            keys::consumer_key(basin, name),
            keys::encode_json(&meta),
        );
        self.core.committer().commit(batch).await?;
        if let (Some(state), Some(handle)) = (state.as_mut(), &handle) {
            state.config = meta.config.clone();
            handle.changed.send_modify(|n| *n += 1);
        }
        Ok(meta)
    }

    pub(super) fn consumer_meta(
        &self,
        basin: &str,
        name: &str,
    ) -> EngineResult<Option<ConsumerMeta>> {
        self.core.get_meta(&keys::consumer_key(basin, name))
    }

    /// Where a new consumer starts reading.
    fn start_frontier(&self, source: &SourceHandle, start: &Start) -> EngineResult<Frontier> {
        Ok(match source {
            SourceHandle::Stream(h) | SourceHandle::Events(h) => {
                let tail = h.visible().tail.seq_num;
                Frontier::Seq(match start {
                    Start::Beginning => 0,
                    Start::Tail => tail,
                    Start::SeqNum { seq_num } if *seq_num > tail => {
                        return Err(EngineError::Invalid(format!(
                            "start seq_num {seq_num} is beyond the tail ({tail})"
                        )))
                    }
                    Start::SeqNum { seq_num } => *seq_num,
                    Start::Timestamp { timestamp } => first_seq_timestamped_at_or_after(
                        &**self.core.storage(),
                        h.id,
                        *timestamp,
                        h.visible(),
                    )?,
                })
            }
            SourceHandle::Records(h) => Frontier::Change {
                updated_after: match start {
                    Start::Beginning => 0,
                    // Everything below the watermark is final: what comes
                    // later lands above it.
                    Start::Tail => h.watermark().saturating_sub(1),
                    Start::Timestamp { timestamp } => timestamp.saturating_sub(1),
                    Start::SeqNum { .. } => {
                        return Err(EngineError::Invalid(
                            "the records feed has no seq nums".into(),
                        ))
                    }
                },
                after_id: None,
            },
        })
    }
}

fn sample(basin: &str, name: &str, stats: &ConsumerStats) -> ConsumerSample {
    let p = &stats.progress;
    ConsumerSample {
        basin: basin.into(),
        consumer: name.into(),
        delivered: p.delivered,
        redelivered: p.redelivered,
        acked: p.acked,
        nacked: p.nacked,
        dead_lettered: p.dead_lettered,
        dropped: p.dropped,
        pending: stats.pending as u64,
        in_flight: stats.in_flight as u64,
        lag_messages: stats.lag.map(|lag| lag.messages),
        lag_seconds: stats.lag.map(|lag| lag.seconds),
    }
}

impl ConsumerInfo {
    fn new(name: &str, meta: &ConsumerMeta) -> Self {
        Self {
            name: name.into(),
            created_at: meta.created_at,
            config: meta.config.clone(),
            dead_letter_stream: dead_letter_stream(name),
            stats: None,
        }
    }
}
