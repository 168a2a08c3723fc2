//! The sinks layer: a sink is a consumer (`_sink.{name}`) plus where its
//! messages go. This layer keeps the definitions; the workers that deliver
//! live outside the engine (`src/sinks/`), and learn of changes through
//! [`Sinks::subscribe`].
//!
//! A sink is made in two durable steps, its consumer then its metadata, and
//! removed in the reverse order; a crash between them leaves a consumer no
//! sink uses, never a sink without its consumer. The next `PUT` of that
//! name adopts the consumer (if it reads the same source) and a `DELETE`
//! removes it.

use std::sync::Arc;

use tokio::sync::watch;

use super::config::{sink_consumer, SinkConfig, SinkConfigPatch, SinkName, SINK_CONSUMER_PREFIX};
use super::keys::{self, SinkMeta};
use crate::engine::consumers::{ConsumerConfigPatch, ConsumerName, Consumers};
use crate::engine::error::{EngineError, EngineResult};
use crate::engine::streams::types::now_ms;
use crate::engine::streams::{ListRequest, Provision, StreamCore};
use crate::storage::{Keyspace, WriteBatch};

/// A sink as the API shows it (secrets are the API's to hide).
#[derive(Clone, Debug)]
pub struct SinkInfo {
    pub basin: String,
    pub name: String,
    pub config: SinkConfig,
    pub created_at: u64,
}

impl SinkInfo {
    /// The consumer it reads through.
    pub fn consumer(&self) -> String {
        sink_consumer(&self.name)
    }
}

pub struct Sinks {
    core: Arc<StreamCore>,
    consumers: Arc<Consumers>,
    /// Bumped on every change of any sink.
    changed: watch::Sender<u64>,
}

impl Sinks {
    pub(crate) fn new(core: Arc<StreamCore>, consumers: Arc<Consumers>) -> Arc<Self> {
        Arc::new(Self {
            core,
            consumers,
            changed: watch::Sender::new(0),
        })
    }

    /// Whether `consumer` belongs to a sink (clients may look, not use).
    pub fn owns_consumer(consumer: &str) -> bool {
        consumer.starts_with(SINK_CONSUMER_PREFIX)
    }

    /// Notified whenever a sink is made, changed or removed.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.changed.subscribe()
    }

    fn notify(&self) {
        self.changed.send_modify(|n| *n += 1);
    }

    /// Creates the sink, or brings an existing one in line with `config`
    /// (what it reads cannot change: that is a conflict).
    pub async fn ensure_sink(
        &self,
        basin: &str,
        name: &SinkName,
        config: SinkConfig,
    ) -> EngineResult<(SinkInfo, Provision)> {
        config.validate()?;
        let consumer = ConsumerName::parse(sink_consumer(name))?;
        let existing = self.sink_meta(basin, name)?;
        // Made (or brought in line) even when the sink is unchanged: the
        // consumer is what a crash could have left missing.
        let ensured = self
            .consumers
            .ensure_consumer(basin, &consumer, config.consumer_config())
            .await;
        match ensured {
            Err(EngineError::ConsumerConflict(_)) => {
                return Err(EngineError::SinkConflict(name.to_string()))
            }
            other => other?,
        };
        if let Some(meta) = existing.as_ref().filter(|m| m.config == config) {
            return Ok((info(basin, name, meta.clone()), Provision::Unchanged));
        }
        let meta = SinkMeta {
            created_at: existing.as_ref().map_or_else(now_ms, |m| m.created_at),
            config,
        };
        self.put_meta(basin, name, &meta).await?;
        let provision = match existing {
            Some(_) => Provision::Updated,
            None => Provision::Created,
        };
        Ok((info(basin, name, meta), provision))
    }

    pub fn get_sink(&self, basin: &str, name: &str) -> EngineResult<SinkInfo> {
        self.core.basin_meta(basin)?;
        let meta = self
            .sink_meta(basin, name)?
            .ok_or_else(|| EngineError::SinkNotFound(name.into()))?;
        Ok(info(basin, name, meta))
    }

    pub fn list_sinks(
        &self,
        basin: &str,
        req: &ListRequest,
    ) -> EngineResult<(Vec<SinkInfo>, bool)> {
        self.core.basin_meta(basin)?;
        let (found, has_more) = self
            .core
            .list_named_meta::<SinkMeta>(&keys::sink_prefix(basin), req)?;
        let sinks = found
            .into_iter()
            .map(|(name, meta)| info(basin, &name, meta))
            .collect();
        Ok((sinks, has_more))
    }

    /// Every sink of every basin, for the workers.
    pub fn all_sinks(&self) -> EngineResult<Vec<SinkInfo>> {
        let mut all = Vec::new();
        for basin in self.core.basin_names() {
            let found = self
                .core
                .all_named_meta::<SinkMeta>(&keys::sink_prefix(&basin))?;
            all.extend(
                found
                    .into_iter()
                    .map(|(name, meta)| info(&basin, &name, meta)),
            );
        }
        Ok(all)
    }

    /// Changes what `PATCH` may change (pausing and resuming included).
    pub async fn reconfigure_sink(
        &self,
        basin: &str,
        name: &str,
        patch: &SinkConfigPatch,
    ) -> EngineResult<SinkInfo> {
        let current = self.get_sink(basin, name)?;
        let config = current.config.apply(patch)?;
        // The consumer's ack wait follows the timeout, linger and backoff.
        let consumer_patch = ConsumerConfigPatch {
            ack_wait_ms: Some(config.ack_wait_ms()),
            ..Default::default()
        };
        self.consumers
            .reconfigure_consumer(basin, &sink_consumer(name), &consumer_patch)
            .await?;
        let meta = SinkMeta {
            config,
            created_at: current.created_at,
        };
        self.put_meta(basin, name, &meta).await?;
        Ok(info(basin, name, meta))
    }

    /// Removes the sink, then its consumer (its dead letters with it); a
    /// consumer a crash left without its sink goes too.
    pub async fn delete_sink(&self, basin: &str, name: &str) -> EngineResult<()> {
        self.core.basin_meta(basin)?;
        let found = self.sink_meta(basin, name)?.is_some();
        if found {
            let mut batch = WriteBatch::default();
            batch.delete(Keyspace::Meta, keys::sink_key(basin, name));
            let _admin = self.core.lock_admin().await;
            self.core.committer().commit(batch).await?;
            drop(_admin);
            self.notify();
        }
        let consumer = sink_consumer(name);
        match self.consumers.delete_consumer(basin, &consumer).await {
            Ok(()) => Ok(()),
            Err(EngineError::ConsumerNotFound(_)) if found => Ok(()),
            Err(EngineError::ConsumerNotFound(_)) => Err(EngineError::SinkNotFound(name.into())),
            Err(err) => Err(err),
        }
    }

    /// Adds to `batch` the writes that remove every sink of `basin` (their
    /// consumers go with the consumers layer's part of the same batch).
    pub(crate) fn delete_basin_ops(&self, basin: &str, batch: &mut WriteBatch) -> EngineResult<()> {
        let prefix = keys::sink_prefix(basin);
        for (name, _) in self.core.all_named_meta::<SinkMeta>(&prefix)? {
            batch.delete(Keyspace::Meta, keys::sink_key(basin, &name));
        }
        self.notify();
        Ok(())
    }

    fn sink_meta(&self, basin: &str, name: &str) -> EngineResult<Option<SinkMeta>> {
        self.core.get_meta(&keys::sink_key(basin, name))
    }

    async fn put_meta(&self, basin: &str, name: &str, meta: &SinkMeta) -> EngineResult<()> {
        let mut batch = WriteBatch::default();
        batch.put(
            Keyspace::Meta,
            keys::sink_key(basin, name),
            keys::encode_json(meta),
        );
        let _admin = self.core.lock_admin().await;
        // The basin may have gone since the consumer was made.
        self.core.basin_meta(basin)?;
        self.core.committer().commit(batch).await?;
        drop(_admin);
        self.notify();
        Ok(())
    }
}

fn info(basin: &str, name: &str, meta: SinkMeta) -> SinkInfo {
    SinkInfo {
        basin: basin.into(),
        name: name.into(),
        config: meta.config,
        created_at: meta.created_at,
    }
}
