//! The stream core's state and the calls the layers above it use: the
//! admin lock, id allocation, the committer, metadata reads, reserved
//! names, shutdown.

use std::collections::{BTreeMap, HashMap};
use std::ops::ControlFlow;
use std::sync::{Arc, Mutex, RwLock};

use super::committer::Committer;
use super::followed::FollowedStreams;
use super::keys::{self, BasinMeta};
use super::streamer::StreamHandle;
use super::tails::TailFeed;
use crate::engine::error::{EngineError, EngineResult};
use crate::engine::locks::{lock, read_lock, write_lock};
use crate::metrics::Metrics;
use crate::storage::{prefix_end, Keyspace, Storage};

/// What an ensure (`PUT`) did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Provision {
    Created,
    Updated,
    Unchanged,
}

/// A name within a basin: `(basin, name)`. Keys the in-memory maps of
/// streams, collections and consumers.
pub(crate) type ScopedName = (String, String);

/// Whether [`StreamCore::stream`] may create a missing stream.
#[derive(Clone, Copy)]
pub(crate) enum CreateIf {
    Never,
    OnAppend,
    OnRead,
}

/// Stream names that belong to an upper layer: streams under `prefix` are
/// written only by it, and are never created implicitly.
struct Reservation {
    prefix: &'static str,
    /// Completes "stream `name` …" in the error a client gets.
    why: &'static str,
}

pub struct StreamCore {
    pub(super) storage: Arc<dyn Storage>,
    pub(super) committer: Committer,
    pub(super) committer_thread: Mutex<Option<std::thread::JoinHandle<()>>>,
    /// The server's figures: appends, reads, group commits.
    pub(crate) metrics: Arc<Metrics>,
    /// Serializes admin operations and the starting of stream tasks, so
    /// metadata read-modify-writes never interleave. Upper layers take it
    /// for their own admin operations ([`Self::lock_admin`]).
    pub(super) admin: tokio::sync::Mutex<()>,
    /// All basins; there are few, and every request checks one.
    pub(super) basins: RwLock<BTreeMap<String, BasinMeta>>,
    /// Streams with a running task.
    pub(super) tasks: Mutex<HashMap<ScopedName, Arc<StreamHandle>>>,
    /// Set when shutdown begins, so long polls and sessions end and let the
    /// HTTP server drain.
    pub(super) closing: tokio::sync::watch::Sender<bool>,
    /// Per stream id, the trim point up to which records are already
    /// removed (in memory only: after a restart the first pass redoes it).
    pub(super) purged: Mutex<HashMap<u64, u64>>,
    /// Held through an upkeep pass: purges count what they delete
    /// (`sizes.rs`), and two at once would count the same keys twice.
    pub(super) upkeep: tokio::sync::Mutex<()>,
    /// See [`Self::reserve_names`].
    reserved: RwLock<Vec<Reservation>>,
    /// Access tokens by their secret's digest.
    pub(super) tokens: super::token_index::TokenIndex,
    /// Where the tails of this core's streams are told to other nodes.
    pub(super) tails: TailFeed,
    /// Set for a core that follows streams another node owns
    /// (`replica.rs`): it writes nothing.
    pub(super) replica: Option<FollowedStreams>,
}

/// Held while an admin operation runs; see [`StreamCore::lock_admin`].
pub(crate) type AdminGuard<'a> = tokio::sync::MutexGuard<'a, ()>;

impl StreamCore {
    /// Opens the core over `storage`, recovering basins from it. Stream
    /// tasks start lazily, on first use, from their durable state.
    pub(crate) fn open(
        storage: Arc<dyn Storage>,
        metrics: Arc<Metrics>,
        tails: TailFeed,
    ) -> EngineResult<Arc<Self>> {
        Self::open_as(storage, metrics, tails, None)
    }

    /// Opens a core that only reads `storage`, as a replica of the streams
    /// another node owns (`replica.rs`).
    pub(crate) fn open_replica(
        storage: Arc<dyn Storage>,
        metrics: Arc<Metrics>,
    ) -> EngineResult<Arc<Self>> {
        Self::open_as(
            storage,
            metrics,
            TailFeed::default(),
            Some(FollowedStreams::default()),
        )
    }

    fn open_as(
        storage: Arc<dyn Storage>,
        metrics: Arc<Metrics>,
        tails: TailFeed,
        replica: Option<FollowedStreams>,
    ) -> EngineResult<Arc<Self>> {
        let mut basins = BTreeMap::new();
        let mut corrupt = None;
        storage.scan(
            Keyspace::Meta,
            &keys::basin_prefix(),
            &prefix_end(&keys::basin_prefix()),
            &mut |key, value| {
                match (keys::basin_name_from_key(key), keys::decode_json(value)) {
                    (Some(name), Ok(meta)) => {
                        basins.insert(name.to_string(), meta);
                    }
                    (_, Err(err)) => corrupt = Some(err),
                    (None, _) => {}
                }
                ControlFlow::Continue(())
            },
        )?;
        if let Some(err) = corrupt {
            return Err(err.into());
        }
        if replica.is_none() {
            super::size_counters::count_uncounted(&*storage)?;
        }
        let (committer, thread) = Committer::start(storage.clone(), metrics.clone(), tails.clone());
        let core = Arc::new(Self {
            storage,
            committer,
            committer_thread: Mutex::new(Some(thread)),
            metrics,
            admin: tokio::sync::Mutex::new(()),
            basins: RwLock::new(basins),
            tasks: Mutex::new(HashMap::new()),
            purged: Mutex::new(HashMap::new()),
            upkeep: tokio::sync::Mutex::new(()),
            closing: tokio::sync::watch::Sender::new(false),
            reserved: RwLock::new(Vec::new()),
            tokens: Default::default(),
            tails,
            replica,
        });
        core.load_access_tokens()?;
        Ok(core)
    }

    /// Why durable writes stopped, if they did (see the committer).
    pub fn write_failure(&self) -> Option<crate::storage::StorageError> {
        self.committer.failure()
    }

    /// Resolves once a durable write has failed, or shutdown has begun.
    pub(crate) fn write_failed_or_closing(&self) -> impl std::future::Future<Output = ()> + use<> {
        let failed = self.committer.failed();
        let mut closing = self.closing();
        async move {
            tokio::select! {
                () = failed => {}
                _ = closing.wait_for(|closing| *closing) => {}
            }
        }
    }

    /// What the core holds, for the log at start: basins, streams, and
    /// access tokens.
    pub fn census(&self) -> EngineResult<(usize, usize, usize)> {
        let basins = read_lock(&self.basins).len();
        let count = |prefix: Vec<u8>| -> EngineResult<usize> {
            let mut n = 0;
            self.storage.scan(
                Keyspace::Meta,
                &prefix,
                &prefix_end(&prefix),
                &mut |_, _| {
                    n += 1;
                    ControlFlow::Continue(())
                },
            )?;
            Ok(n)
        };
        let streams = count(keys::all_streams_prefix())?;
        let tokens = count(keys::access_token_key(""))?;
        Ok((basins, streams, tokens))
    }

    /// Ends every read session and long poll (with `unavailable`), so that
    /// their connections close. Appends still work until [`Self::shutdown`].
    pub(crate) fn begin_shutdown(&self) {
        self.closing.send_replace(true);
    }

    /// Stops every stream task and waits until everything they accepted is
    /// durable, then stops the committer. Writes that arrive afterwards fail
    /// with `unavailable`; the storage is released once the core drops.
    pub(crate) async fn shutdown(&self) {
        self.stop_streams().await;
        self.close_committer().await;
    }

    /// The first half of [`Self::shutdown`]: stops every stream task once
    /// what it accepted is submitted. The committer still takes writes
    /// (the engine's last usage figures).
    pub(crate) async fn stop_streams(&self) {
        self.begin_shutdown();
        let _admin = self.admin.lock().await;
        let handles: Vec<_> = lock(&self.tasks).drain().map(|(_, h)| h).collect();
        for handle in handles {
            handle.stop().await;
        }
    }

    /// The second half of [`Self::shutdown`].
    pub(crate) async fn close_committer(&self) {
        // The committer runs in order: it exits only after everything
        // submitted before the close is durable.
        self.committer.close();
        let thread = lock(&self.committer_thread).take();
        if let Some(thread) = thread {
            let _ = tokio::task::spawn_blocking(move || thread.join()).await;
        }
    }

    /// Reserves the stream names under `prefix` for an upper layer: clients
    /// cannot append to, reconfigure, delete or implicitly create them.
    /// `why` completes the error message "stream `name` …".
    pub(crate) fn reserve_names(&self, prefix: &'static str, why: &'static str) {
        write_lock(&self.reserved).push(Reservation { prefix, why });
    }

    /// Refuses streams that an upper layer reserved.
    pub(crate) fn check_writable(&self, stream: &str) -> EngineResult<()> {
        let reserved = read_lock(&self.reserved);
        match reserved.iter().find(|r| stream.starts_with(r.prefix)) {
            Some(r) => Err(EngineError::Invalid(format!("stream `{stream}` {}", r.why))),
            None => Ok(()),
        }
    }

    /// Takes the admin lock. Upper layers hold it while they change their
    /// metadata, so it never interleaves with stream and basin changes.
    pub(crate) async fn lock_admin(&self) -> AdminGuard<'_> {
        self.admin.lock().await
    }

    pub(crate) fn storage(&self) -> &Arc<dyn Storage> {
        &self.storage
    }

    pub(crate) fn committer(&self) -> &Committer {
        &self.committer
    }

    /// Whether shutdown has begun.
    pub(crate) fn is_closing(&self) -> bool {
        *self.closing.borrow()
    }

    /// A receiver that changes to `true` when shutdown begins.
    pub(crate) fn closing(&self) -> tokio::sync::watch::Receiver<bool> {
        self.closing.subscribe()
    }

    /// Takes `N` fresh ids from the counter shared by streams, collections
    /// and consumers; the counter's update goes into `batch`. Callers hold
    /// the admin lock, so no two batches take the same ids.
    pub(crate) fn allocate_ids<const N: usize>(
        &self,
        batch: &mut crate::storage::WriteBatch,
    ) -> EngineResult<[u64; N]> {
        let next = match self.storage.get(Keyspace::Meta, &keys::next_id_key())? {
            Some(bytes) => u64::from_be_bytes(bytes.as_slice().try_into().map_err(|_| {
                crate::storage::StorageError::Corrupt("next id is malformed".into())
            })?),
            None => 1,
        };
        batch.put(
            Keyspace::Meta,
            keys::next_id_key(),
            (next + N as u64).to_be_bytes().to_vec(),
        );
        Ok(std::array::from_fn(|i| next + i as u64))
    }

    /// Reads one JSON value from the meta keyspace.
    pub(crate) fn get_meta<T: serde::de::DeserializeOwned>(
        &self,
        key: &[u8],
    ) -> EngineResult<Option<T>> {
        match self.storage.get(Keyspace::Meta, key)? {
            Some(bytes) => Ok(Some(keys::decode_json(&bytes)?)),
            None => Ok(None),
        }
    }
}

/// Whether a create carrying `given` repeats the create that stored
/// `stored`: the same `s2-request-token` makes a retry succeed instead of
/// failing with "already exists".
pub(super) fn is_retry(stored: Option<&str>, given: Option<&str>) -> bool {
    given.is_some() && stored == given
}
