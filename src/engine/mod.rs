//! The engine, in layers:
//!
//! - [`streams`], the stream core: basins, streams, appends, reads,
//!   retention, the committer and the core's on-disk layout. It knows
//!   nothing of the layers above.
//! - [`collections`]: keyed records with a records stream and an events
//!   stream, over the core.
//! - [`consumers`]: server-tracked readers of streams and collection
//!   feeds, over the core and collections.
//! - [`sinks`]: the definitions of sinks (a consumer and a destination),
//!   over consumers; `src/sinks/` runs them.
//! - [`sources`]: the definitions and cursors of sources (collections kept
//!   equal to data elsewhere), over collections; `src/sources/` runs them.
//! - [`durable_streams`]: the streams of the Durable Streams protocol, over
//!   the core.
//!
//! [`Engine`] opens the layers together and does the little that spans
//! them: a basin's deletion, upkeep, shutdown. The HTTP layer reaches each
//! layer through it.

pub mod collections;
pub mod consumers;
pub mod durable_streams;
pub mod error;
pub(crate) mod locks;
mod restart;
pub mod settings;
pub mod sinks;
pub mod sources;
pub mod streams;
mod usage;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use collections::Collections;
use consumers::Consumers;
use durable_streams::DurableStreams;
use error::EngineResult;
use sinks::Sinks;
use sources::Sources;
use streams::tails::{TailFeed, TailNotice};
use streams::StreamCore;

use crate::metrics::{self, Metrics};
use crate::storage::Storage;

/// The engine's layers, opened together over one storage.
pub struct Engine {
    storage: Arc<dyn Storage>,
    /// Outlives restarts: the figures count across them.
    metrics: Arc<Metrics>,
    /// Replaced whole when the engine restarts after a failed write (see
    /// [`restart`]); callers take the current ones per call.
    layers: ArcSwap<Layers>,
    /// Held while a restart or shutdown runs, so they never interleave.
    restarting: tokio::sync::Mutex<()>,
    /// In-process restarts so far.
    restarts: AtomicU64,
    /// Set when shutdown begins; a restart then tells the new layers too.
    closing: AtomicBool,
    /// What S2's metrics API answers from (`usage.rs`).
    usage: usage::UsageHistory,
    /// Where streams' tails are told to other nodes; outlives restarts.
    tails: TailFeed,
}

/// One opening of the layers.
struct Layers {
    core: Arc<StreamCore>,
    collections: Arc<Collections>,
    consumers: Arc<Consumers>,
    sinks: Arc<Sinks>,
    sources: Arc<Sources>,
    durable_streams: Arc<DurableStreams>,
}

impl Layers {
    fn open(
        storage: Arc<dyn Storage>,
        metrics: Arc<Metrics>,
        tails: &TailFeed,
    ) -> EngineResult<Self> {
        Self::over(StreamCore::open(storage, metrics, tails.clone())?)
    }

    fn over(core: Arc<StreamCore>) -> EngineResult<Self> {
        let collections = Collections::new(core.clone());
        let consumers = Consumers::new(core.clone(), collections.clone());
        let sinks = Sinks::new(core.clone(), consumers.clone());
        let sources = Sources::new(core.clone(), collections.clone());
        let durable_streams = DurableStreams::new(core.clone());
        Ok(Self {
            core,
            collections,
            consumers,
            sinks,
            sources,
            durable_streams,
        })
    }
}

impl Engine {
    /// Opens the engine over `storage`, recovering what it holds. Stream
    /// tasks and collection and consumer handles start lazily, on first
    /// use, from their durable state.
    pub fn open(storage: Arc<dyn Storage>) -> EngineResult<Arc<Self>> {
        Self::open_with_metrics(storage, Arc::new(Metrics::default()))
    }

    /// [`Self::open`], counting into the server's `metrics`.
    pub fn open_with_metrics(
        storage: Arc<dyn Storage>,
        metrics: Arc<Metrics>,
    ) -> EngineResult<Arc<Self>> {
        let tails = TailFeed::default();
        let layers = Layers::open(storage.clone(), metrics.clone(), &tails)?;
        Self::over(storage, metrics, layers, tails)
    }

    /// Opens the engine over `storage` as a replica: it reads streams
    /// another node owns, writes nothing, and learns their tails from
    /// [`Self::apply_tail_notice`] and [`Self::refresh_replica`] (see
    /// `streams/replica.rs`). Only reads of streams are meant for it; no
    /// background work runs over it.
    pub fn open_replica(
        storage: Arc<dyn Storage>,
        metrics: Arc<Metrics>,
    ) -> EngineResult<Arc<Self>> {
        let core = StreamCore::open_replica(storage.clone(), metrics.clone())?;
        Self::over(storage, metrics, Layers::over(core)?, TailFeed::default())
    }

    fn over(
        storage: Arc<dyn Storage>,
        metrics: Arc<Metrics>,
        layers: Layers,
        tails: TailFeed,
    ) -> EngineResult<Arc<Self>> {
        let usage = usage::UsageHistory::load(&*storage)?;
        Ok(Arc::new(Self {
            storage,
            metrics,
            layers: ArcSwap::from_pointee(layers),
            restarting: tokio::sync::Mutex::new(()),
            restarts: AtomicU64::new(0),
            closing: AtomicBool::new(false),
            usage,
            tails,
        }))
    }

    /// Whether this engine is a replica ([`Self::open_replica`]).
    pub fn is_replica(&self) -> bool {
        self.streams().is_replica()
    }

    /// Every change of a stream's visible tail from now on, and every
    /// stream deleted: what a cluster's owner tells its followers.
    pub fn tail_notices(&self) -> tokio::sync::broadcast::Receiver<TailNotice> {
        self.tails.subscribe()
    }

    /// A replica learns a tail from the owner (see [`Self::open_replica`]).
    pub fn apply_tail_notice(&self, notice: TailNotice) {
        self.streams().apply_tail_notice(notice);
    }

    /// A replica reads the tails of the streams it follows, and the access
    /// tokens, from storage again: for when notices may have been missed.
    /// Blocks on storage.
    pub fn refresh_replica(&self) -> EngineResult<()> {
        self.streams().refresh_replica()
    }

    /// Basins, streams, records and access tokens.
    pub fn streams(&self) -> Arc<StreamCore> {
        self.layers.load().core.clone()
    }

    pub fn collections(&self) -> Arc<Collections> {
        self.layers.load().collections.clone()
    }

    pub fn consumers(&self) -> Arc<Consumers> {
        self.layers.load().consumers.clone()
    }

    pub fn sinks(&self) -> Arc<Sinks> {
        self.layers.load().sinks.clone()
    }

    pub fn sources(&self) -> Arc<Sources> {
        self.layers.load().sources.clone()
    }

    pub fn durable_streams(&self) -> Arc<DurableStreams> {
        self.layers.load().durable_streams.clone()
    }

    /// The server's figures.
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// The bytes the storage takes on disk, if it is on disk.
    pub fn storage_bytes(&self) -> Option<u64> {
        self.storage.disk_space()
    }

    /// How many times the engine restarted in-process after a failed write.
    pub fn restarts(&self) -> u64 {
        self.restarts.load(Ordering::Relaxed)
    }

    /// Deletes the basin with everything in it: its streams, collections
    /// and consumers, in one atomic batch.
    pub async fn delete_basin(&self, name: &str) -> EngineResult<()> {
        let layers = self.layers.load_full();
        layers
            .core
            .delete_basin(name, async |batch: &mut crate::storage::WriteBatch| {
                layers.collections.delete_basin_ops(name, batch)?;
                layers.sinks.delete_basin_ops(name, batch)?;
                layers.sources.delete_basin_ops(name, batch)?;
                layers.consumers.delete_basin_ops(name, batch).await
            })
            .await
    }

    /// Ends every read session and long poll (with `unavailable`), so that
    /// their connections close. Appends still work until [`Self::shutdown`].
    pub fn begin_shutdown(&self) {
        self.closing.store(true, Ordering::Release);
        self.layers.load().core.begin_shutdown();
    }

    /// Stops every stream task and waits until everything they accepted is
    /// durable, then stops the committer.
    pub async fn shutdown(&self) {
        self.closing.store(true, Ordering::Release);
        let _no_restart = self.restarting.lock().await;
        let core = self.layers.load_full().core.clone();
        core.stop_streams().await;
        // Every append is acknowledged by now: write the counts of the
        // minute in progress (which a crash would lose) before the
        // committer closes.
        self.usage_tick(false).await;
        core.close_committer().await;
    }

    /// Runs upkeep every `interval` until the engine is dropped or the task
    /// aborted.
    pub fn spawn_upkeep(self: &Arc<Self>, interval: Duration) -> tokio::task::JoinHandle<()> {
        self.spawn_every(interval, "upkeep", |engine| async move {
            engine.upkeep_once().await
        })
    }

    /// Runs [`Self::usage_tick`] every `interval` until the engine is
    /// dropped or the task aborted.
    pub fn spawn_usage(self: &Arc<Self>, interval: Duration) -> tokio::task::JoinHandle<()> {
        self.spawn_every(interval, "usage tick", |engine| async move {
            engine.usage_tick(true).await
        })
    }

    /// Runs `work` every `interval`. The work does blocking storage scans,
    /// so each run goes on a blocking thread rather than on the async
    /// workers that serve requests.
    fn spawn_every<F, Fut>(
        self: &Arc<Self>,
        interval: Duration,
        what: &'static str,
        work: F,
    ) -> tokio::task::JoinHandle<()>
    where
        F: Fn(Arc<Self>) -> Fut + Send + 'static,
        Fut: std::future::Future<Output = ()> + Send + 'static,
    {
        let engine = Arc::downgrade(self);
        tokio::spawn(async move {
            let mut ticker = tokio::time::interval(interval);
            ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                ticker.tick().await;
                let Some(engine) = engine.upgrade() else {
                    return;
                };
                let runtime = tokio::runtime::Handle::current();
                let run = work(engine);
                if tokio::task::spawn_blocking(move || runtime.block_on(run))
                    .await
                    .is_err()
                {
                    tracing::error!("a run of {what} panicked");
                }
            }
        })
    }

    /// Answers `query` from the usage history behind S2's metrics API,
    /// the counts made so far included.
    pub fn usage<T>(&self, query: impl FnOnce(&metrics::history::History) -> T) -> T {
        self.usage.query(&self.metrics, query)
    }

    /// Moves the usage counts into the history, samples stored bytes once
    /// an hour, and writes what changed (`usage.rs`).
    /// With `lags`, each consumer's lag is sampled too (not at shutdown:
    /// that would start stream tasks again).
    pub async fn usage_tick(&self, lags: bool) {
        let lags = match lags {
            true => self.consumers().samples().await,
            false => Vec::new(),
        };
        let lags = lags
            .into_iter()
            .filter_map(|s| Some(((s.basin, s.consumer), s.lag_messages?)))
            .collect();
        self.usage.tick(&self.metrics, &self.streams(), lags).await
    }

    /// One pass of upkeep: tombstone expiry in collections, then retention,
    /// delete-on-empty and purging in the core, then giving the space of
    /// what they deleted back. A failure on one object is logged and does
    /// not stop the others.
    pub async fn upkeep_once(&self) {
        let layers = self.layers.load_full();
        layers.collections.upkeep_once().await;
        if let Err(err) = layers.durable_streams.sweep().await {
            tracing::warn!(error = %err, "deleting expired Durable Streams streams failed; retrying next round");
        }
        layers.core.upkeep_once().await;
        if self.closing.load(Ordering::Acquire) {
            return; // a compaction now would hold up the exit
        }
        if let Err(err) = self.storage.reclaim_space() {
            tracing::warn!(error = %err, "giving deleted data's space back failed; retrying next round");
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::streams::scope::{Operation, Scope};
    use super::streams::token_index::{digest, AccessTokenInfo};
    use super::Engine;
    use crate::metrics::Metrics;
    use crate::storage::{MemoryStorage, Storage};

    fn info(id: &str) -> AccessTokenInfo {
        AccessTokenInfo {
            id: id.into(),
            expires_at: None,
            auto_prefix_streams: false,
            scope: Scope {
                ops: Some(Operation::ALL.to_vec()),
                ..Scope::default()
            },
        }
    }

    /// A token revoked and issued again under the same id is another
    /// token: the replica drops the old secret and takes the new one.
    #[tokio::test]
    async fn a_replica_follows_the_owners_tokens_by_secret() {
        let storage: Arc<dyn Storage> = Arc::new(MemoryStorage::default());
        let owner = Engine::open(storage.clone()).unwrap();
        let replica = Engine::open_replica(storage, Arc::new(Metrics::default())).unwrap();
        let old = owner.streams().issue_access_token(info("t")).await.unwrap();
        replica.refresh_replica().unwrap();
        let held = |secret: &str| {
            replica
                .streams()
                .find_access_token(&digest(secret))
                .is_some()
        };
        assert!(held(&old));

        owner.streams().revoke_access_token("t").await.unwrap();
        let new = owner.streams().issue_access_token(info("t")).await.unwrap();
        tokio::time::sleep(super::streams::TOKENS_RELOADED_EVERY).await;
        replica.refresh_replica().unwrap();
        assert!(!held(&old), "a revoked secret still works on the replica");
        assert!(
            held(&new),
            "the secret issued since is unknown to the replica"
        );
    }

    /// Each layer keeps its own tags in the meta keyspace; two sharing one
    /// would read each other's keys.
    #[test]
    fn meta_tags_are_distinct_across_layers() {
        let mut tags: Vec<u8> = [
            super::streams::keys::META_TAGS,
            super::collections::keys::META_TAGS,
            super::consumers::keys::META_TAGS,
            super::sinks::keys::META_TAGS,
            super::sources::keys::META_TAGS,
            &[super::usage::USAGE_TAG],
        ]
        .concat();
        let count = tags.len();
        tags.sort_unstable();
        tags.dedup();
        assert_eq!(tags.len(), count, "a meta tag is used twice");
    }
}
