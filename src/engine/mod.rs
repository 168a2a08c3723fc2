//! The stream engine: basins, streams, appends and reads over [`Storage`].
//!
//! The HTTP layer calls only the methods of [`Engine`]. Inside, admin
//! operations (create, reconfigure, delete) are serialized by one lock and
//! write metadata through the committer; appends go to the stream's task
//! ([`streamer`]); reads go straight to storage, bounded by the stream's
//! durable tail.

pub mod collections;
pub mod committer;
pub mod config;
pub mod consumers;
pub mod error;
pub mod keys;
pub mod names;
mod read;
mod retention;
pub mod streamer;
mod tokens;
pub mod types;

use std::collections::{BTreeMap, HashMap};
use std::ops::ControlFlow;
use std::sync::{Arc, Mutex, RwLock};

use committer::Committer;
use config::{BasinConfig, BasinConfigPatch, StreamConfig, StreamConfigPatch};
use error::{EngineError, EngineResult};
use keys::{BasinMeta, StreamMeta, StreamState};
use streamer::{Command, StreamHandle};
use types::*;

pub use read::{ReadRequest, ReadSession, SessionEvent};

use crate::storage::{Keyspace, Storage, WriteBatch};

/// A basin as listed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BasinInfo {
    pub name: String,
    pub created_at: u64,
}

/// A stream as listed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StreamInfo {
    pub name: String,
    pub created_at: u64,
}

/// What an ensure (`PUT`) did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Provision {
    Created,
    Updated,
    Unchanged,
}

/// Bounds for list operations.
#[derive(Clone, Debug, Default)]
pub struct ListRequest {
    pub prefix: String,
    pub start_after: String,
    pub limit: Option<usize>,
}

pub const MAX_LIST_LIMIT: usize = 1000;

impl ListRequest {
    fn validate(&self) -> EngineResult<usize> {
        if !self.start_after.is_empty() && !self.prefix.is_empty() && self.start_after < self.prefix
        {
            return Err(EngineError::Invalid(
                "`start_after` must be greater than or equal to the `prefix`".into(),
            ));
        }
        Ok(match self.limit {
            Some(n) if n > 0 && n <= MAX_LIST_LIMIT => n,
            _ => MAX_LIST_LIMIT,
        })
    }
}

type StreamKey = (String, String);

pub struct Engine {
    storage: Arc<dyn Storage>,
    committer: Committer,
    committer_thread: Mutex<Option<std::thread::JoinHandle<()>>>,
    /// Serializes admin operations and the starting of stream tasks, so
    /// metadata read-modify-writes never interleave.
    admin: tokio::sync::Mutex<()>,
    /// All basins; there are few, and every request checks one.
    basins: RwLock<BTreeMap<String, BasinMeta>>,
    /// Streams with a running task.
    streams: Mutex<HashMap<StreamKey, Arc<StreamHandle>>>,
    /// Collections in use.
    collections: Mutex<HashMap<StreamKey, Arc<collections::CollectionHandle>>>,
    /// Consumers in use.
    consumers: Mutex<consumers::ConsumerMap>,
    /// Set when shutdown begins, so long polls and sessions end and let the
    /// HTTP server drain.
    closing: tokio::sync::watch::Sender<bool>,
    /// Per stream id, the trim point up to which records are already
    /// removed (in memory only: after a restart the first pass redoes it).
    purged: Mutex<HashMap<u64, u64>>,
}

impl Engine {
    /// Opens the engine over `storage`, recovering basins from it. Stream
    /// tasks start lazily, on first use, from their durable state.
    pub fn open(storage: Arc<dyn Storage>) -> EngineResult<Arc<Self>> {
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
        let (committer, thread) = Committer::start(storage.clone());
        Ok(Arc::new(Self {
            storage,
            committer,
            committer_thread: Mutex::new(Some(thread)),
            admin: tokio::sync::Mutex::new(()),
            basins: RwLock::new(basins),
            streams: Mutex::new(HashMap::new()),
            collections: Mutex::new(HashMap::new()),
            consumers: Mutex::new(HashMap::new()),
            purged: Mutex::new(HashMap::new()),
            closing: tokio::sync::watch::Sender::new(false),
        }))
    }

    /// Ends every read session and long poll (with `unavailable`), so that
    /// their connections close. Appends still work until [`Self::shutdown`].
    pub fn begin_shutdown(&self) {
        self.closing.send_replace(true);
    }

    /// Stops every stream task and waits until everything they accepted is
    /// durable, then stops the committer. Writes that arrive afterwards fail
    /// with `unavailable`; the storage is released once the engine drops.
    pub async fn shutdown(&self) {
        self.begin_shutdown();
        let _admin = self.admin.lock().await;
        let handles: Vec<_> = lock(&self.streams).drain().map(|(_, h)| h).collect();
        for handle in handles {
            let (tx, rx) = tokio::sync::oneshot::channel();
            if handle.send(Command::Stop(tx)).await.is_ok() {
                let _ = rx.await;
            }
        }
        // The committer runs in order: it exits only after everything
        // submitted before the close is durable.
        self.committer.close();
        let thread = lock(&self.committer_thread).take();
        if let Some(thread) = thread {
            let _ = tokio::task::spawn_blocking(move || thread.join()).await;
        }
    }

    // ---- basins ----

    pub fn list_basins(&self, req: &ListRequest) -> EngineResult<(Vec<BasinInfo>, bool)> {
        let limit = req.validate()?;
        let basins = read_lock(&self.basins);
        let mut matching = basins
            .iter()
            .filter(|(name, _)| name.starts_with(&req.prefix))
            .filter(|(name, _)| name.as_str() > req.start_after.as_str())
            .map(|(name, meta)| BasinInfo {
                name: name.clone(),
                created_at: meta.created_at,
            });
        let page: Vec<_> = matching.by_ref().take(limit).collect();
        let has_more = matching.next().is_some();
        Ok((page, has_more))
    }

    /// Creates a basin. A retry carrying the same `request_token` as the
    /// create that made the basin succeeds with [`Provision::Unchanged`].
    pub async fn create_basin(
        &self,
        name: &str,
        patch: &BasinConfigPatch,
        request_token: Option<&str>,
    ) -> EngineResult<(BasinInfo, Provision)> {
        names::validate_basin_name(name)?;
        let _admin = self.admin.lock().await;
        if let Ok(meta) = self.basin_meta(name) {
            if request_token.is_some() && meta.request_token.as_deref() == request_token {
                let info = BasinInfo {
                    name: name.into(),
                    created_at: meta.created_at,
                };
                return Ok((info, Provision::Unchanged));
            }
            return Err(EngineError::BasinExists(name.into()));
        }
        let meta = BasinMeta {
            config: BasinConfig::default()
                .apply(patch)
                .map_err(EngineError::Invalid)?,
            created_at: now_ms(),
            request_token: request_token.map(str::to_owned),
        };
        Ok((self.put_basin(name, meta).await?, Provision::Created))
    }

    /// Creates the basin, or brings an existing one's config in line with
    /// `patch`.
    pub async fn ensure_basin(
        &self,
        name: &str,
        patch: &BasinConfigPatch,
    ) -> EngineResult<(BasinInfo, Provision)> {
        names::validate_basin_name(name)?;
        let _admin = self.admin.lock().await;
        match self.basin_meta(name) {
            Ok(meta) => {
                let config = meta.config.apply(patch).map_err(EngineError::Invalid)?;
                if config == meta.config {
                    let info = BasinInfo {
                        name: name.into(),
                        created_at: meta.created_at,
                    };
                    return Ok((info, Provision::Unchanged));
                }
                let info = self.put_basin(name, BasinMeta { config, ..meta }).await?;
                Ok((info, Provision::Updated))
            }
            Err(_) => {
                let config = BasinConfig::default()
                    .apply(patch)
                    .map_err(EngineError::Invalid)?;
                let meta = BasinMeta {
                    config,
                    created_at: now_ms(),
                    request_token: None,
                };
                let info = self.put_basin(name, meta).await?;
                Ok((info, Provision::Created))
            }
        }
    }

    pub fn basin_config(&self, name: &str) -> EngineResult<BasinConfig> {
        Ok(self.basin_meta(name)?.config)
    }

    pub async fn reconfigure_basin(
        &self,
        name: &str,
        patch: &BasinConfigPatch,
    ) -> EngineResult<BasinConfig> {
        let _admin = self.admin.lock().await;
        let meta = self.basin_meta(name)?;
        let config = meta.config.apply(patch).map_err(EngineError::Invalid)?;
        self.put_basin(name, BasinMeta { config, ..meta }).await?;
        Ok(config)
    }

    /// Deletes the basin and all its streams.
    pub async fn delete_basin(&self, name: &str) -> EngineResult<()> {
        let _admin = self.admin.lock().await;
        self.basin_meta(name)?;
        let streams = self.scan_stream_metas(name, "", "", usize::MAX)?;
        let mut batch = WriteBatch::default();
        for (stream, meta) in &streams {
            self.stop_stream(name, stream).await;
            delete_stream_ops(&mut batch, name, stream, meta.id);
        }
        for (collection, id) in self.collection_ids(name)? {
            lock(&self.collections).remove(&(name.to_string(), collection.clone()));
            batch.delete(Keyspace::Meta, keys::collection_key(name, &collection));
            batch.delete(Keyspace::Meta, keys::tombstone_horizon_key(id));
            batch.put(Keyspace::Meta, keys::purge_key(id), Vec::new());
        }
        for (consumer, id) in self.consumer_ids(name)? {
            self.delete_consumer_ops(&mut batch, name, &consumer, id)
                .await?;
        }
        batch.delete(Keyspace::Meta, keys::basin_key(name));
        self.committer.commit(batch).await?;
        write_lock(&self.basins).remove(name);
        Ok(())
    }

    async fn put_basin(&self, name: &str, meta: BasinMeta) -> EngineResult<BasinInfo> {
        let created_at = meta.created_at;
        let mut batch = WriteBatch::default();
        batch.put(
            Keyspace::Meta,
            keys::basin_key(name),
            keys::encode_json(&meta),
        );
        self.committer.commit(batch).await?;
        write_lock(&self.basins).insert(name.into(), meta);
        Ok(BasinInfo {
            name: name.into(),
            created_at,
        })
    }

    fn basin_meta(&self, name: &str) -> EngineResult<BasinMeta> {
        read_lock(&self.basins)
            .get(name)
            .cloned()
            .ok_or_else(|| EngineError::BasinNotFound(name.into()))
    }

    // ---- streams ----

    pub fn list_streams(
        &self,
        basin: &str,
        req: &ListRequest,
    ) -> EngineResult<(Vec<StreamInfo>, bool)> {
        self.basin_meta(basin)?;
        let (found, has_more) =
            self.list_named_meta::<StreamMeta>(&keys::stream_prefix(basin), req)?;
        let page = found
            .into_iter()
            .map(|(name, meta)| StreamInfo {
                name,
                created_at: meta.created_at,
            })
            .collect();
        Ok((page, has_more))
    }

    /// Creates a stream; `request_token` works as in [`Self::create_basin`].
    pub async fn create_stream(
        &self,
        basin: &str,
        name: &str,
        patch: &StreamConfigPatch,
        request_token: Option<&str>,
    ) -> EngineResult<(StreamInfo, Provision)> {
        names::validate_stream_name(name)?;
        Self::check_writable(name)?;
        let _admin = self.admin.lock().await;
        let basin_meta = self.basin_meta(basin)?;
        if let Some(meta) = self.stream_meta(basin, name)? {
            if request_token.is_some() && meta.request_token.as_deref() == request_token {
                let info = StreamInfo {
                    name: name.into(),
                    created_at: meta.created_at,
                };
                return Ok((info, Provision::Unchanged));
            }
            return Err(EngineError::StreamExists(name.into()));
        }
        let config = basin_meta
            .config
            .default_stream_config
            .apply(patch)
            .map_err(EngineError::Invalid)?;
        let info = self
            .insert_stream(basin, name, config, request_token)
            .await?;
        Ok((info, Provision::Created))
    }

    /// Creates the stream, or brings an existing one's config in line with
    /// `patch`.
    pub async fn ensure_stream(
        &self,
        basin: &str,
        name: &str,
        patch: &StreamConfigPatch,
    ) -> EngineResult<(StreamInfo, Provision)> {
        names::validate_stream_name(name)?;
        Self::check_writable(name)?;
        let _admin = self.admin.lock().await;
        let basin_meta = self.basin_meta(basin)?;
        match self.stream_meta(basin, name)? {
            Some(meta) => {
                let info = StreamInfo {
                    name: name.into(),
                    created_at: meta.created_at,
                };
                let config = meta.config.apply(patch).map_err(EngineError::Invalid)?;
                if config == meta.config {
                    return Ok((info, Provision::Unchanged));
                }
                self.update_stream_config(basin, name, meta, config).await?;
                Ok((info, Provision::Updated))
            }
            None => {
                let config = basin_meta
                    .config
                    .default_stream_config
                    .apply(patch)
                    .map_err(EngineError::Invalid)?;
                let info = self.insert_stream(basin, name, config, None).await?;
                Ok((info, Provision::Created))
            }
        }
    }

    pub fn stream_config(&self, basin: &str, name: &str) -> EngineResult<StreamConfig> {
        self.basin_meta(basin)?;
        Ok(self
            .stream_meta(basin, name)?
            .ok_or_else(|| EngineError::StreamNotFound(name.into()))?
            .config)
    }

    pub async fn reconfigure_stream(
        &self,
        basin: &str,
        name: &str,
        patch: &StreamConfigPatch,
    ) -> EngineResult<StreamConfig> {
        Self::check_writable(name)?;
        let _admin = self.admin.lock().await;
        self.basin_meta(basin)?;
        let meta = self
            .stream_meta(basin, name)?
            .ok_or_else(|| EngineError::StreamNotFound(name.into()))?;
        let config = meta.config.apply(patch).map_err(EngineError::Invalid)?;
        self.update_stream_config(basin, name, meta, config).await?;
        Ok(config)
    }

    /// Deletes the stream at once; its records are removed in the background.
    pub async fn delete_stream(&self, basin: &str, name: &str) -> EngineResult<()> {
        Self::check_writable(name)?;
        let _admin = self.admin.lock().await;
        self.basin_meta(basin)?;
        let meta = self
            .stream_meta(basin, name)?
            .ok_or_else(|| EngineError::StreamNotFound(name.into()))?;
        self.stop_stream(basin, name).await;
        let mut batch = WriteBatch::default();
        delete_stream_ops(&mut batch, basin, name, meta.id);
        self.committer.commit(batch).await?;
        Ok(())
    }

    async fn insert_stream(
        &self,
        basin: &str,
        name: &str,
        config: StreamConfig,
        request_token: Option<&str>,
    ) -> EngineResult<StreamInfo> {
        let mut batch = WriteBatch::default();
        let [id] = self.allocate_ids(&mut batch)?;
        let info = stream_creation_ops(&mut batch, basin, name, config, request_token, id);
        self.committer.commit(batch).await?;
        Ok(info)
    }

    /// Takes `N` fresh ids from the counter shared by streams and
    /// collections; the counter's update goes into `batch`. Callers hold
    /// the admin lock, so no two batches take the same ids.
    fn allocate_ids<const N: usize>(&self, batch: &mut WriteBatch) -> EngineResult<[u64; N]> {
        let next = match self
            .storage
            .get(Keyspace::Meta, &keys::next_stream_id_key())?
        {
            Some(bytes) => u64::from_be_bytes(bytes.as_slice().try_into().map_err(|_| {
                crate::storage::StorageError::Corrupt("next stream id is malformed".into())
            })?),
            None => 1,
        };
        batch.put(
            Keyspace::Meta,
            keys::next_stream_id_key(),
            (next + N as u64).to_be_bytes().to_vec(),
        );
        Ok(std::array::from_fn(|i| next + i as u64))
    }

    async fn update_stream_config(
        &self,
        basin: &str,
        name: &str,
        mut meta: StreamMeta,
        config: StreamConfig,
    ) -> EngineResult<()> {
        meta.config = config;
        let mut batch = WriteBatch::default();
        batch.put(
            Keyspace::Meta,
            keys::stream_key(basin, name),
            keys::encode_json(&meta),
        );
        self.committer.commit(batch).await?;
        let handle = lock(&self.streams)
            .get(&(basin.to_string(), name.to_string()))
            .cloned();
        if let Some(handle) = handle {
            handle.send(Command::Reconfigure(config)).await?;
        }
        Ok(())
    }

    /// Stops the stream's task, if running, once everything it accepted has
    /// been handed to the committer.
    async fn stop_stream(&self, basin: &str, name: &str) {
        let key = (basin.to_string(), name.to_string());
        let handle = lock(&self.streams).get(&key).cloned();
        if let Some(handle) = handle {
            let (tx, rx) = tokio::sync::oneshot::channel();
            if handle.send(Command::Stop(tx)).await.is_ok() {
                let _ = rx.await;
            }
            // Only now, with the old task's writes durable, may the stream
            // be started again from its state key.
            lock(&self.streams).remove(&key);
        }
    }

    fn stream_meta(&self, basin: &str, name: &str) -> EngineResult<Option<StreamMeta>> {
        match self
            .storage
            .get(Keyspace::Meta, &keys::stream_key(basin, name))?
        {
            Some(bytes) => Ok(Some(keys::decode_json(&bytes)?)),
            None => Ok(None),
        }
    }

    /// Streams of `basin` whose names start with `prefix` and sort after
    /// `start_after`, in name order, at most `limit`.
    fn scan_stream_metas(
        &self,
        basin: &str,
        prefix: &str,
        start_after: &str,
        limit: usize,
    ) -> EngineResult<Vec<(String, StreamMeta)>> {
        self.scan_named_meta(&keys::stream_prefix(basin), prefix, start_after, limit)
    }

    /// One page of a list operation over the JSON values under `base`: at
    /// most `req`'s limit, and whether there are more.
    fn list_named_meta<T: serde::de::DeserializeOwned>(
        &self,
        base: &[u8],
        req: &ListRequest,
    ) -> EngineResult<(Vec<(String, T)>, bool)> {
        let limit = req.validate()?;
        let mut found = self.scan_named_meta(base, &req.prefix, &req.start_after, limit + 1)?;
        let has_more = found.len() > limit;
        found.truncate(limit);
        Ok((found, has_more))
    }

    /// The JSON values under `base` in the meta keyspace whose names (the
    /// rest of the key) start with `prefix` and sort after `start_after`,
    /// in name order, at most `limit`. Every list operation is this.
    fn scan_named_meta<T: serde::de::DeserializeOwned>(
        &self,
        base: &[u8],
        prefix: &str,
        start_after: &str,
        limit: usize,
    ) -> EngineResult<Vec<(String, T)>> {
        let key = |name: &str| [base, name.as_bytes()].concat();
        let mut start = key(prefix);
        if !start_after.is_empty() && start_after >= prefix {
            start = key(start_after);
            start.push(0); // strictly after: names never hold a NUL
        }
        let end = prefix_end(&key(prefix));
        let mut found = Vec::new();
        let mut corrupt = None;
        self.storage
            .scan(Keyspace::Meta, &start, &end, &mut |key, value| {
                let name = String::from_utf8_lossy(&key[base.len()..]).into_owned();
                match keys::decode_json(value) {
                    Ok(meta) => found.push((name, meta)),
                    Err(err) => {
                        corrupt = Some(err);
                        return ControlFlow::Break(());
                    }
                }
                if found.len() >= limit {
                    ControlFlow::Break(())
                } else {
                    ControlFlow::Continue(())
                }
            })?;
        match corrupt {
            Some(err) => Err(err.into()),
            None => Ok(found),
        }
    }

    /// The running task of a stream, started from its durable state if need
    /// be. With `create`, a missing stream is created with the basin's
    /// default config (`create_stream_on_append` / `_on_read`).
    async fn stream(
        &self,
        basin: &str,
        name: &str,
        create: CreateIf,
    ) -> EngineResult<Arc<StreamHandle>> {
        let key = (basin.to_string(), name.to_string());
        if let Some(handle) = lock(&self.streams).get(&key) {
            return Ok(handle.clone());
        }
        let _admin = self.admin.lock().await;
        if let Some(handle) = lock(&self.streams).get(&key) {
            return Ok(handle.clone());
        }
        if *self.closing.borrow() {
            // No new stream tasks once shutdown has begun: they would not be
            // among those it stops.
            return Err(EngineError::Unavailable);
        }
        let basin_meta = self.basin_meta(basin)?;
        let meta = match self.stream_meta(basin, name)? {
            Some(meta) => meta,
            None => {
                let allowed = match create {
                    CreateIf::Never => false,
                    CreateIf::OnAppend => basin_meta.config.create_stream_on_append,
                    CreateIf::OnRead => basin_meta.config.create_stream_on_read,
                };
                // A collection's events stream and a consumer's dead
                // letters are only ever made with them.
                if !allowed || Self::check_writable(name).is_err() {
                    return Err(EngineError::StreamNotFound(name.into()));
                }
                names::validate_stream_name(name)?;
                self.insert_stream(basin, name, basin_meta.config.default_stream_config, None)
                    .await?;
                self.stream_meta(basin, name)?
                    .ok_or_else(|| EngineError::StreamNotFound(name.into()))?
            }
        };
        let state: StreamState = match self
            .storage
            .get(Keyspace::Meta, &keys::state_key(meta.id))?
        {
            Some(bytes) => keys::decode_json(&bytes)?,
            None => StreamState::default(),
        };
        let handle = streamer::spawn(
            meta.id,
            name.into(),
            meta.config,
            state,
            self.committer.clone(),
        );
        lock(&self.streams).insert(key, handle.clone());
        Ok(handle)
    }

    // ---- records ----

    /// Streams that belong to a collection or a consumer are written only
    /// through it.
    fn check_writable(stream: &str) -> EngineResult<()> {
        if stream.starts_with(collections::EVENTS_STREAM_PREFIX) {
            return Err(EngineError::Invalid(format!(
                "stream `{stream}` holds a collection's events and is written only through the collection"
            )));
        }
        if stream.starts_with(consumers::DEAD_LETTER_PREFIX) {
            return Err(EngineError::Invalid(format!(
                "stream `{stream}` holds a consumer's dead letters and is written only by the consumer"
            )));
        }
        Ok(())
    }

    pub async fn append(
        &self,
        basin: &str,
        stream: &str,
        input: AppendInput,
    ) -> EngineResult<AppendAck> {
        Self::check_writable(stream)?;
        // Reject a malformed batch before it can create a stream.
        streamer::validate_batch(&input, config::TimestampingMode::ClientPrefer)?;
        self.stream(basin, stream, CreateIf::OnAppend)
            .await?
            .append(input)
            .await
    }

    /// Opens an append session: appends submitted through it are pipelined
    /// (many may be in flight) and applied in order, and none is applied
    /// after one fails.
    pub async fn append_session(&self, basin: &str, stream: &str) -> EngineResult<AppendSession> {
        Self::check_writable(stream)?;
        Ok(AppendSession {
            handle: self.stream(basin, stream, CreateIf::OnAppend).await?,
            aborted: Arc::default(),
            closing: self.closing.subscribe(),
        })
    }

    pub async fn check_tail(&self, basin: &str, stream: &str) -> EngineResult<StreamPosition> {
        Ok(self
            .stream(basin, stream, CreateIf::OnRead)
            .await?
            .visible()
            .tail)
    }
}

/// See [`Engine::append_session`].
pub struct AppendSession {
    handle: Arc<StreamHandle>,
    aborted: Arc<std::sync::atomic::AtomicBool>,
    closing: tokio::sync::watch::Receiver<bool>,
}

impl AppendSession {
    /// Queues `input`; the returned future resolves to its acknowledgement.
    pub async fn submit(
        &self,
        input: AppendInput,
    ) -> EngineResult<impl std::future::Future<Output = EngineResult<AppendAck>> + use<>> {
        self.handle.submit(input, Some(self.aborted.clone())).await
    }

    /// Resolves once the server begins to shut down, so that open sessions
    /// end and let it drain.
    pub async fn shutting_down(&self) {
        let mut closing = self.closing.clone();
        let _ = closing.wait_for(|closing| *closing).await;
    }
}

#[derive(Clone, Copy)]
enum CreateIf {
    Never,
    OnAppend,
    OnRead,
}

/// The writes that create a stream with id `id`.
fn stream_creation_ops(
    batch: &mut WriteBatch,
    basin: &str,
    name: &str,
    config: StreamConfig,
    request_token: Option<&str>,
    id: u64,
) -> StreamInfo {
    let created_at = now_ms();
    let meta = StreamMeta {
        id,
        config,
        created_at,
        request_token: request_token.map(str::to_owned),
    };
    let state = StreamState {
        last_write_at: created_at,
        ..Default::default()
    };
    batch.put(
        Keyspace::Meta,
        keys::stream_key(basin, name),
        keys::encode_json(&meta),
    );
    batch.put(
        Keyspace::Meta,
        keys::state_key(id),
        keys::encode_json(&state),
    );
    StreamInfo {
        name: name.into(),
        created_at,
    }
}

fn delete_stream_ops(batch: &mut WriteBatch, basin: &str, name: &str, id: u64) {
    batch.delete(Keyspace::Meta, keys::stream_key(basin, name));
    batch.delete(Keyspace::Meta, keys::state_key(id));
    batch.put(Keyspace::Meta, keys::purge_key(id), Vec::new());
}

/// The smallest key greater than every key that starts with `prefix`.
pub(crate) fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < u8::MAX {
            end.push(last + 1);
            return end;
        }
    }
    // All 0xFF: no finite upper bound; use a key longer than any real one.
    vec![u8::MAX; prefix.len() + 1024]
}

// A poisoned lock means a thread panicked while holding it; the data it
// guards (maps of handles and metadata) is still consistent per operation.
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn read_lock<T>(m: &RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    m.read().unwrap_or_else(|e| e.into_inner())
}

fn write_lock<T>(m: &RwLock<T>) -> std::sync::RwLockWriteGuard<'_, T> {
    m.write().unwrap_or_else(|e| e.into_inner())
}
