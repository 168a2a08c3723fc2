//! Consumers: the server keeps a reader's position, so that workers (a
//! stateless function included) consume with plain HTTP.
//!
//! A consumer reads its source (a stream, or a collection's events or
//! records feed) from its *frontier* onwards, and hands messages out:
//!
//! - **explicit** ack policy: every message delivered is *pending* until
//!   acked. A pending message comes back after `ack_wait_ms` (or a nack's
//!   delay), goes to the dead-letter stream after `max_deliver` deliveries,
//!   and at most `max_ack_pending` are pending at once. With
//!   `ordered_by_key`, a message waits while an earlier one of its key is
//!   pending. See [`pending`].
//! - **cursor** ack policy: workers commit a position; everything before it
//!   is done. Positions handed out but not committed within `ack_wait_ms`
//!   are handed out again, as a Kafka consumer group rebalances.
//!
//! ## Durability and ordering
//!
//! Each consumer's state sits behind one async mutex. An operation changes
//! the state in memory and queues its writes on the committer *while it
//! holds the mutex*, then waits for them outside it. The committer makes
//! writes durable in the order they were queued, so the state on disk is
//! always the in-memory state as of some operation, and no client is told
//! of an outcome before it, and everything it depends on, is durable.
//! Dead-lettering appends to the dead-letter stream with the state change
//! in the same atomic batch, and waits for it under the mutex, so that too
//! keeps its place in line.
//!
//! Lock order: the engine's admin lock before a consumer's mutex, never the
//! other way round; so everything that may take the admin lock (resolving
//! streams and collections) happens before the mutex is taken.

mod config;
mod pending;
mod position;
mod source;

use std::collections::HashMap;
use std::ops::ControlFlow;
use std::sync::Arc;
use std::time::Duration;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use bytes::Bytes;
use serde::{Deserialize, Serialize};
use tokio::sync::watch;
use tokio::time::Instant;

pub use config::{AckPolicy, ConsumerConfig, ConsumerConfigPatch, Feed, Filter, Source, Start};
pub use position::{Frontier, Position};
pub use source::{Message, Payload};

use super::config::{DeleteOnEmptyConfig, StreamConfig, TimestampingConfig, TimestampingMode};
use super::error::{EngineError, EngineResult};
use super::keys::{self, ConsumerMeta};
use super::read::{first_seq_at_or_after, MAX_UNARY_WAIT};
use super::types::{
    metered_size, now_ms, AppendInput, AppendRecord, Header, MAX_BATCH_BYTES, MAX_BATCH_RECORDS,
};
use super::{lock, prefix_end, stream_creation_ops, CreateIf, Engine, ListRequest, Provision};
use crate::storage::{Keyspace, WriteBatch};
use pending::{Entry, Pending, Standing};
use source::SourceHandle;

/// Messages per receive, at most.
pub const MAX_RECEIVE_BATCH: usize = 1000;
/// Source messages one receive pass looks at, at most.
const MAX_EXAMINED_PER_PASS: usize = 10_000;
/// Streams whose names start with this belong to consumers.
pub const DEAD_LETTER_PREFIX: &str = "_consumers/";
const MAX_CONSUMER_NAME_BYTES: usize = 256;

/// The stream where `consumer` puts messages that reached `max_deliver`.
pub fn dead_letter_stream(consumer: &str) -> String {
    format!("{DEAD_LETTER_PREFIX}{consumer}/dead_letters")
}

/// The dead-letter stream keeps the basin's retention but is never deleted
/// for being empty, and stamps records on arrival (its records are made by
/// the server, never with client timestamps).
fn dead_letter_config(mut config: StreamConfig) -> StreamConfig {
    config.delete_on_empty = DeleteOnEmptyConfig::default();
    config.timestamping = TimestampingConfig {
        mode: TimestampingMode::Arrival,
        uncapped: false,
    };
    config
}

/// What is durable about a consumer besides its config: how far it has
/// read (explicit) or committed (cursor), and running totals.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Progress {
    pub frontier: Frontier,
    #[serde(default)]
    pub delivered: u64,
    #[serde(default)]
    pub redelivered: u64,
    #[serde(default)]
    pub acked: u64,
    #[serde(default)]
    pub nacked: u64,
    #[serde(default)]
    pub dead_lettered: u64,
    /// Pending messages that vanished from the source before they were
    /// acked: trimmed from a stream, or superseded by a newer version of
    /// the record (records feed; the newer version is delivered instead).
    #[serde(default)]
    pub dropped: u64,
}

/// A consumer as listed, and with `stats` as got.
#[derive(Clone, Debug)]
pub struct ConsumerInfo {
    pub name: String,
    pub created_at: u64,
    pub config: ConsumerConfig,
    pub dead_letter_stream: String,
    pub stats: Option<ConsumerStats>,
}

#[derive(Clone, Debug)]
pub struct ConsumerStats {
    /// Explicit: the first message not yet acked (`None`: all read is
    /// acked). Cursor: not set.
    pub ack_floor: Option<Position>,
    /// Explicit: how far the source has been read. Cursor: the committed
    /// position.
    pub frontier: Frontier,
    pub pending: usize,
    pub in_flight: usize,
    pub progress: Progress,
    /// Messages in a stream source after the ack floor (or committed
    /// position), filtered ones included; `None` for a records feed.
    pub lag: Option<u64>,
}

/// A message handed to a worker.
#[derive(Clone, Debug)]
pub struct Delivery {
    /// What acks, nacks or extends this delivery (explicit ack policy).
    pub ack_id: Option<String>,
    pub delivery_count: u32,
    pub message: Message,
}

/// How a worker settles delivered messages.
#[derive(Clone, Copy, Debug)]
pub enum Settle {
    Ack,
    Nack { delay_ms: u64 },
    Extend,
}

pub struct ConsumerHandle {
    id: u64,
    source: Source,
    source_id: u64,
    created_at: u64,
    state: tokio::sync::Mutex<State>,
    /// Bumped when an ack, nack, commit or reconfiguration may let a
    /// waiting receive deliver.
    changed: watch::Sender<u64>,
}

struct State {
    config: ConsumerConfig,
    deleted: bool,
    /// Taken out of use after a failure (see `retire`): operations that
    /// still hold this handle ask the client to try again.
    retired: bool,
    progress: Progress,
    pending: Pending,
    lease: CursorLease,
}

impl State {
    fn check_live(&self, name: &str) -> EngineResult<()> {
        if self.deleted {
            Err(EngineError::ConsumerNotFound(name.into()))
        } else if self.retired {
            Err(EngineError::Unavailable)
        } else {
            Ok(())
        }
    }
}

/// A cursor consumer's hand-outs since its last commit (memory only: after
/// a restart, workers resume at the committed position).
struct CursorLease {
    /// The next position to hand out.
    fetch: Frontier,
    /// The furthest position ever handed out; below it is a redelivery.
    highest: Frontier,
    /// When positions past the committed one were first handed out.
    since: Option<u64>,
    /// Times the hand-outs were taken back since the last commit past
    /// `highest`.
    resets: u32,
}

impl CursorLease {
    fn new(committed: &Frontier) -> Self {
        Self {
            fetch: committed.clone(),
            highest: committed.clone(),
            since: None,
            resets: 0,
        }
    }
}

/// The writes an operation queues for its state change.
#[derive(Default)]
struct Changes {
    positions: Vec<Position>,
    progress: bool,
}

impl Changes {
    fn is_empty(&self) -> bool {
        self.positions.is_empty() && !self.progress
    }

    fn batch(&self, consumer_id: u64, state: &State) -> WriteBatch {
        let mut batch = WriteBatch::default();
        for position in &self.positions {
            let key = keys::consumer_pending_key(consumer_id, &position.to_bytes());
            match state.pending.get(position) {
                Some(entry) => batch.put(Keyspace::Meta, key, keys::encode_json(entry)),
                None => batch.delete(Keyspace::Meta, key),
            }
        }
        batch.put(
            Keyspace::Meta,
            keys::consumer_progress_key(consumer_id),
            keys::encode_json(&state.progress),
        );
        batch
    }
}

/// The id a worker passes back to ack a delivery: which consumer, which
/// message, which delivery of it.
fn encode_ack_id(consumer_id: u64, deliveries: u32, position: &Position) -> String {
    URL_SAFE_NO_PAD
        .encode(serde_json::to_vec(&(consumer_id, deliveries, position)).unwrap_or_default())
}

fn decode_ack_id(consumer_id: u64, text: &str) -> EngineResult<(u32, Position)> {
    let bad = || {
        EngineError::Invalid(format!(
            "malformed ack id `{text}`: pass it back exactly as received"
        ))
    };
    let bytes = URL_SAFE_NO_PAD.decode(text).map_err(|_| bad())?;
    let (id, deliveries, position): (u64, u32, Position) =
        serde_json::from_slice(&bytes).map_err(|_| bad())?;
    if id != consumer_id {
        return Err(EngineError::Invalid(format!(
            "ack id `{text}` belongs to another consumer"
        )));
    }
    Ok((deliveries, position))
}

fn validate_consumer_name(name: &str) -> EngineResult<()> {
    if name.is_empty() || name.len() > MAX_CONSUMER_NAME_BYTES {
        return Err(EngineError::Invalid(format!(
            "a consumer name must be 1 to {MAX_CONSUMER_NAME_BYTES} bytes"
        )));
    }
    if name == "." || name == ".." || name.chars().any(char::is_control) || name.contains('/') {
        return Err(EngineError::Invalid(
            "a consumer name may not be `.` or `..`, or contain `/` or control characters".into(),
        ));
    }
    Ok(())
}

impl Engine {
    // ---- admin ----

    /// Creates the consumer, or brings an existing one's adjustable settings
    /// in line with `config`.
    pub async fn ensure_consumer(
        &self,
        basin: &str,
        name: &str,
        config: ConsumerConfig,
    ) -> EngineResult<(ConsumerInfo, Provision)> {
        validate_consumer_name(name)?;
        config.validate()?;
        self.basin_meta(basin)?;
        // A conflict is a conflict even if the new source does not exist.
        if let Some(meta) = self.consumer_meta(basin, name)? {
            if !meta.config.same_identity(&config) {
                return Err(EngineError::ConsumerConflict(name.into()));
            }
        }
        // Resolving may start the source's task, which takes the admin lock.
        let (source, source_id) = self.resolve_source(basin, &config.source).await?;
        let _admin = self.admin.lock().await;
        let basin_meta = self.basin_meta(basin)?;
        if let Some(meta) = self.consumer_meta(basin, name)? {
            if !meta.config.same_identity(&config) {
                return Err(EngineError::ConsumerConflict(name.into()));
            }
            if meta.config == config {
                return Ok((info(name, &meta), Provision::Unchanged));
            }
            let meta = self.put_consumer_config(basin, name, meta, config).await?;
            return Ok((info(name, &meta), Provision::Updated));
        }
        let frontier = self.start_frontier(&source, &config.start)?;
        let mut batch = WriteBatch::default();
        let [id, dead_letter_id] = self.allocate_ids(&mut batch)?;
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
            keys::encode_json(&Progress {
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
        if self.stream_meta(basin, &dead_letters)?.is_none() {
            stream_creation_ops(
                &mut batch,
                basin,
                &dead_letters,
                dead_letter_config(basin_meta.config.default_stream_config),
                None,
                dead_letter_id,
            );
        }
        self.committer.commit(batch).await?;
        Ok((info(name, &meta), Provision::Created))
    }

    /// The consumer, with its current state.
    pub async fn consumer_info(&self, basin: &str, name: &str) -> EngineResult<ConsumerInfo> {
        let handle = self.consumer(basin, name).await?;
        let tail = match self.resolve_source(basin, &handle.source).await {
            Ok((source, id)) if id == handle.source_id => source.tail_seq(),
            _ => None,
        };
        let state = handle.state.lock().await;
        state.check_live(name)?;
        let now = now_ms();
        let ack_floor = match state.config.ack_policy {
            AckPolicy::Explicit => state.pending.floor().cloned(),
            AckPolicy::Cursor => None,
        };
        let done_below = match (&ack_floor, &state.progress.frontier) {
            (Some(Position::Seq(seq)), _) => Some(*seq),
            (None, Frontier::Seq(seq)) => Some(*seq),
            _ => None,
        };
        let stats = ConsumerStats {
            ack_floor,
            frontier: state.progress.frontier.clone(),
            pending: state.pending.len(),
            in_flight: state.pending.in_flight(now),
            progress: state.progress.clone(),
            lag: tail
                .zip(done_below)
                .map(|(tail, done)| tail.saturating_sub(done)),
        };
        Ok(ConsumerInfo {
            name: name.into(),
            created_at: handle.created_at,
            config: state.config.clone(),
            dead_letter_stream: dead_letter_stream(name),
            stats: Some(stats),
        })
    }

    pub fn list_consumers(
        &self,
        basin: &str,
        req: &ListRequest,
    ) -> EngineResult<(Vec<ConsumerInfo>, bool)> {
        self.basin_meta(basin)?;
        let (found, has_more) =
            self.list_named_meta::<ConsumerMeta>(&keys::consumer_prefix(basin), req)?;
        Ok((
            found.iter().map(|(name, meta)| info(name, meta)).collect(),
            has_more,
        ))
    }

    pub async fn reconfigure_consumer(
        &self,
        basin: &str,
        name: &str,
        patch: &ConsumerConfigPatch,
    ) -> EngineResult<ConsumerInfo> {
        let _admin = self.admin.lock().await;
        self.basin_meta(basin)?;
        let meta = self
            .consumer_meta(basin, name)?
            .ok_or_else(|| EngineError::ConsumerNotFound(name.into()))?;
        let config = meta.config.apply(patch)?;
        let meta = self.put_consumer_config(basin, name, meta, config).await?;
        Ok(info(name, &meta))
    }

    /// Deletes the consumer, its pending state and its dead-letter stream.
    pub async fn delete_consumer(&self, basin: &str, name: &str) -> EngineResult<()> {
        let _admin = self.admin.lock().await;
        self.basin_meta(basin)?;
        let meta = self
            .consumer_meta(basin, name)?
            .ok_or_else(|| EngineError::ConsumerNotFound(name.into()))?;
        let mut batch = WriteBatch::default();
        self.delete_consumer_ops(&mut batch, basin, name, meta.id)
            .await?;
        let dead_letters = dead_letter_stream(name);
        if let Some(stream) = self.stream_meta(basin, &dead_letters)? {
            self.stop_stream(basin, &dead_letters).await;
            super::delete_stream_ops(&mut batch, basin, &dead_letters, stream.id);
        }
        self.committer.commit(batch).await?;
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
        let handle = lock(&self.consumers).remove(&(basin.to_string(), name.to_string()));
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
        self.storage.scan(
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
            self.scan_named_meta(&keys::consumer_prefix(basin), "", "", usize::MAX)?;
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
        let handle = lock(&self.consumers)
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
        self.committer.commit(batch).await?;
        if let (Some(state), Some(handle)) = (state.as_mut(), &handle) {
            state.config = meta.config.clone();
            handle.changed.send_modify(|n| *n += 1);
        }
        Ok(meta)
    }

    fn consumer_meta(&self, basin: &str, name: &str) -> EngineResult<Option<ConsumerMeta>> {
        match self
            .storage
            .get(Keyspace::Meta, &keys::consumer_key(basin, name))?
        {
            Some(bytes) => Ok(Some(keys::decode_json(&bytes)?)),
            None => Ok(None),
        }
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
                    Start::Timestamp { timestamp } => first_seq_at_or_after(
                        &*self.storage,
                        Keyspace::Timestamps,
                        h.id,
                        *timestamp,
                        tail,
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

    /// The consumer's handle, loaded from storage on first use.
    async fn consumer(&self, basin: &str, name: &str) -> EngineResult<Arc<ConsumerHandle>> {
        let key = (basin.to_string(), name.to_string());
        if let Some(handle) = lock(&self.consumers).get(&key) {
            return Ok(handle.clone());
        }
        let _admin = self.admin.lock().await;
        if let Some(handle) = lock(&self.consumers).get(&key) {
            return Ok(handle.clone());
        }
        self.basin_meta(basin)?;
        let meta = self
            .consumer_meta(basin, name)?
            .ok_or_else(|| EngineError::ConsumerNotFound(name.into()))?;
        let progress: Progress = match self
            .storage
            .get(Keyspace::Meta, &keys::consumer_progress_key(meta.id))?
        {
            Some(bytes) => keys::decode_json(&bytes)?,
            None => {
                return Err(EngineError::Storage(crate::storage::StorageError::Corrupt(
                    format!("consumer `{name}` has no progress record"),
                )))
            }
        };
        let prefix = keys::consumer_pending_prefix(meta.id);
        let mut entries = Vec::new();
        let mut corrupt = None;
        self.storage.scan(
            Keyspace::Meta,
            &prefix,
            &prefix_end(&prefix),
            &mut |key, value| {
                let position = Position::from_bytes(&key[prefix.len()..]);
                match (position, keys::decode_json::<Entry>(value)) {
                    (Some(position), Ok(entry)) => entries.push((position, entry)),
                    (_, Err(err)) => corrupt = Some(err),
                    (None, _) => {
                        corrupt = Some(crate::storage::StorageError::Corrupt(
                            "a pending message key is malformed".into(),
                        ))
                    }
                }
                ControlFlow::Continue(())
            },
        )?;
        if let Some(err) = corrupt {
            return Err(err.into());
        }
        let handle = Arc::new(ConsumerHandle {
            id: meta.id,
            source: meta.config.source.clone(),
            source_id: meta.source_id,
            created_at: meta.created_at,
            state: tokio::sync::Mutex::new(State {
                lease: CursorLease::new(&progress.frontier),
                config: meta.config,
                deleted: false,
                retired: false,
                progress,
                pending: Pending::from_entries(entries),
            }),
            changed: watch::Sender::new(0),
        });
        lock(&self.consumers).insert(key, handle.clone());
        Ok(handle)
    }

    /// The consumer's source, checked to be the one it was made on.
    async fn consumer_source(
        &self,
        basin: &str,
        name: &str,
        handle: &ConsumerHandle,
    ) -> EngineResult<SourceHandle> {
        match self.resolve_source(basin, &handle.source).await {
            Ok((source, id)) if id == handle.source_id => Ok(source),
            Ok(_)
            | Err(EngineError::StreamNotFound(_))
            | Err(EngineError::CollectionNotFound(_)) => {
                Err(EngineError::ConsumerSourceGone(name.into()))
            }
            Err(err) => Err(err),
        }
    }

    // ---- data ----

    /// Up to `batch_size` messages; with a `wait`, holds an empty answer
    /// until there is something to deliver (long poll).
    pub async fn receive(
        &self,
        basin: &str,
        name: &str,
        batch_size: usize,
        wait: Duration,
    ) -> EngineResult<Vec<Delivery>> {
        if batch_size == 0 || batch_size > MAX_RECEIVE_BATCH {
            return Err(EngineError::Invalid(format!(
                "batch_size must be 1 to {MAX_RECEIVE_BATCH}"
            )));
        }
        let handle = self.consumer(basin, name).await?;
        let deadline = Instant::now() + wait.min(MAX_UNARY_WAIT);
        let mut closing = self.closing.subscribe();
        let mut changed = handle.changed.subscribe();
        loop {
            let source = self.consumer_source(basin, name, &handle).await?;
            let wants_dead_letters = handle.state.lock().await.config.max_deliver.is_some();
            let dead_letters = match wants_dead_letters {
                true => Some(
                    self.stream(basin, &dead_letter_stream(name), CreateIf::Never)
                        .await?,
                ),
                false => None,
            };
            // Marked before reading, so a change during the read wakes us.
            let mut source_mark = source.mark();
            changed.borrow_and_update();

            let now = now_ms();
            let mut state = handle.state.lock().await;
            state.check_live(name)?;
            let round = match state.config.ack_policy {
                AckPolicy::Explicit => {
                    let can_dead_letter = dead_letters.is_some();
                    self.receive_explicit(
                        &handle,
                        &mut state,
                        &source,
                        batch_size,
                        now,
                        can_dead_letter,
                    )
                    .await
                }
                AckPolicy::Cursor => {
                    self.receive_cursor(&handle, &mut state, &source, batch_size, now)
                        .await
                }
            };
            // A pass that fails has changed nothing in memory.
            let round = round?;
            if !round.changes.is_empty() || !round.dead.is_empty() {
                let batch = round.changes.batch(handle.id, &state);
                if round.dead.is_empty() {
                    let durable = self.queue(batch);
                    drop(state);
                    durable.await?;
                } else {
                    let dead_letters = dead_letters.ok_or(EngineError::Unavailable)?;
                    let input = AppendInput {
                        records: round.dead,
                        ..Default::default()
                    };
                    // Waited for under the mutex: see the module docs.
                    let appended = match dead_letters.submit_with(input, batch).await {
                        Ok(ack) => ack.await.map(|_| ()),
                        Err(err) => Err(err),
                    };
                    if let Err(err) = appended {
                        // The state in memory is ahead of the disk: retire
                        // it, so the next operation reloads what is durable.
                        self.retire(basin, name, &handle, &mut state).await;
                        return Err(err);
                    }
                    drop(state);
                }
                if round.freed {
                    handle.changed.send_modify(|n| *n += 1);
                }
            } else {
                drop(state);
            }
            if !round.deliveries.is_empty() || Instant::now() >= deadline || *closing.borrow() {
                return Ok(round.deliveries);
            }
            if round.more {
                continue;
            }
            let wake = match round.next_due {
                Some(due) => deadline
                    .min(Instant::now() + Duration::from_millis(due.saturating_sub(now_ms()))),
                None => deadline,
            };
            tokio::select! {
                // With max_ack_pending reached, new source records change
                // nothing; only acks (`changed`) and due times do.
                _ = source.changed(&mut source_mark), if !round.full => {}
                _ = changed.changed() => {}
                _ = tokio::time::sleep_until(wake) => {}
                _ = closing.changed() => {}
            }
        }
    }

    /// Takes a consumer whose in-memory state may be ahead of the disk out
    /// of use: once everything queued before is durable, the next operation
    /// loads it again from storage. Called with its mutex held.
    async fn retire(
        &self,
        basin: &str,
        name: &str,
        handle: &Arc<ConsumerHandle>,
        state: &mut State,
    ) {
        let _ = self.queue(WriteBatch::default()).await;
        state.retired = true;
        let key = (basin.to_string(), name.to_string());
        let mut consumers = lock(&self.consumers);
        if consumers.get(&key).is_some_and(|h| Arc::ptr_eq(h, handle)) {
            consumers.remove(&key);
        }
        drop(consumers);
        handle.changed.send_modify(|n| *n += 1);
    }

    /// Queues `batch` on the committer and returns a future of its
    /// durability. Queue under the consumer's mutex; wait outside it.
    fn queue(&self, batch: WriteBatch) -> impl std::future::Future<Output = EngineResult<()>> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.committer.submit(
            batch,
            Box::new(move |result| {
                let _ = tx.send(result);
            }),
        );
        async move {
            rx.await
                .unwrap_or(Err(crate::storage::StorageError::Closed))
                .map_err(EngineError::from)
        }
    }

    /// One pass of an explicit-ack receive. Fails only before it changes
    /// anything; a failure after that ends the pass early instead, so what
    /// was changed is always queued.
    async fn receive_explicit(
        &self,
        handle: &ConsumerHandle,
        state: &mut State,
        source: &SourceHandle,
        batch_size: usize,
        now: u64,
        can_dead_letter: bool,
    ) -> EngineResult<Round> {
        let mut round = Round::default();
        let ack_wait = state.config.ack_wait_ms;
        let ordered = state.config.ordered_by_key;
        let max_pending = state.config.max_ack_pending as usize;
        let max_deliver = state.config.max_deliver;
        let mut dead_bytes = 0usize;

        // Due messages first: redeliveries, and messages that waited for
        // their key.
        for position in state.pending.deliverable(now, ordered) {
            if round.deliveries.len() >= batch_size {
                break;
            }
            let Some(entry) = state.pending.get(&position).cloned() else {
                continue;
            };
            let exhausted = max_deliver.is_some_and(|max| entry.deliveries >= max);
            if exhausted && !can_dead_letter {
                // max_deliver was just set: the next pass has the stream.
                round.more = true;
                continue;
            }
            let message = match self.load(source, &position).await {
                Ok(Some(message)) => message,
                Ok(None) => {
                    state.pending.remove(&position);
                    state.progress.dropped += 1;
                    round.changes.positions.push(position);
                    round.changes.progress = true;
                    round.freed = true;
                    continue;
                }
                Err(err) if round.is_empty() => return Err(err),
                Err(_) => break,
            };
            if exhausted {
                let record = dead_letter(handle.id, &message, entry.deliveries);
                let size = record.metered_size();
                if round.dead.len() >= MAX_BATCH_RECORDS || dead_bytes + size > MAX_BATCH_BYTES {
                    round.more = true;
                    break;
                }
                dead_bytes += size;
                round.dead.push(record);
                state.pending.remove(&position);
                state.progress.dead_lettered += 1;
                round.changes.positions.push(position);
                round.changes.progress = true;
                round.freed = true;
                continue;
            }
            round
                .deliveries
                .push(self.deliver(handle, state, message, now, ack_wait));
            round.changes.positions.push(position);
            round.changes.progress = true;
        }

        // Then new messages from the source, while there is room. A pass
        // looks at a bounded number of messages, so that a filter that
        // passes over a long backlog does not hold the mutex throughout.
        let mut examined = 0usize;
        'fetch: while round.deliveries.len() < batch_size && state.pending.len() < max_pending {
            if examined >= MAX_EXAMINED_PER_PASS {
                round.more = true;
                break;
            }
            let want = (batch_size - round.deliveries.len()).max(16);
            let started_at = handle.created_at;
            let (messages, from) = match self
                .fetch(source, &state.progress.frontier, started_at, want)
                .await
            {
                Ok(fetched) => fetched,
                Err(err) if round.is_empty() => return Err(err),
                Err(_) => break,
            };
            if from.is_ahead_of(&state.progress.frontier) {
                state.progress.frontier = from;
                round.changes.progress = true;
            }
            if messages.is_empty() {
                break;
            }
            for message in messages {
                if round.deliveries.len() >= batch_size || state.pending.len() >= max_pending {
                    break 'fetch;
                }
                examined += 1;
                let passes = match passes(&state.config, &message) {
                    Ok(passes) => passes,
                    Err(err) if round.is_empty() => return Err(err),
                    Err(_) => break 'fetch,
                };
                state.progress.frontier = message.position.next();
                round.changes.progress = true;
                if !passes {
                    continue;
                }
                let position = message.position.clone();
                let held = ordered
                    && message
                        .key
                        .as_deref()
                        .is_some_and(|key| state.pending.key_busy(key));
                state.pending.insert(
                    position.clone(),
                    Entry {
                        deliveries: 0,
                        in_flight: false,
                        due_at: 0,
                        key: message.key.clone(),
                    },
                );
                round.changes.positions.push(position);
                if !held {
                    round
                        .deliveries
                        .push(self.deliver(handle, state, message, now, ack_wait));
                }
            }
        }
        // Removing a message may have freed its key for the next one.
        round.more |= round.freed && round.deliveries.is_empty();
        round.full = state.pending.len() >= max_pending;
        round.next_due = state.pending.next_due(now);
        Ok(round)
    }

    /// Marks `message` delivered (it is pending) and makes its delivery.
    fn deliver(
        &self,
        handle: &ConsumerHandle,
        state: &mut State,
        message: Message,
        now: u64,
        ack_wait: u64,
    ) -> Delivery {
        let deliveries = state
            .pending
            .deliver(&message.position, now, ack_wait)
            .map_or(1, |e| e.deliveries);
        state.progress.delivered += 1;
        if deliveries > 1 {
            state.progress.redelivered += 1;
        }
        Delivery {
            ack_id: Some(encode_ack_id(handle.id, deliveries, &message.position)),
            delivery_count: deliveries,
            message,
        }
    }

    async fn receive_cursor(
        &self,
        handle: &ConsumerHandle,
        state: &mut State,
        source: &SourceHandle,
        batch_size: usize,
        now: u64,
    ) -> EngineResult<Round> {
        let mut round = Round::default();
        let ack_wait = state.config.ack_wait_ms;
        let State {
            lease,
            progress,
            config,
            ..
        } = state;
        // Handed out and not committed in time: the worker is gone; hand
        // the same positions out again.
        if lease
            .since
            .is_some_and(|since| now >= since.saturating_add(ack_wait))
        {
            lease.fetch = progress.frontier.clone();
            lease.since = None;
            lease.resets += 1;
        }
        'fetch: while round.deliveries.len() < batch_size {
            let want = batch_size - round.deliveries.len();
            let (messages, from) = match self
                .fetch(source, &lease.fetch, handle.created_at, want)
                .await
            {
                Ok(fetched) => fetched,
                Err(err) if round.deliveries.is_empty() => return Err(err),
                Err(_) => break,
            };
            if from.is_ahead_of(&lease.fetch) {
                lease.fetch = from;
            }
            if messages.is_empty() {
                break;
            }
            for message in messages {
                let passes = match passes(config, &message) {
                    Ok(passes) => passes,
                    Err(err) if round.deliveries.is_empty() => return Err(err),
                    Err(_) => break 'fetch,
                };
                lease.fetch = message.position.next();
                if !passes {
                    continue;
                }
                let delivery_count = if lease.highest.is_past(&message.position) {
                    1 + lease.resets
                } else {
                    1
                };
                progress.delivered += 1;
                if delivery_count > 1 {
                    progress.redelivered += 1;
                }
                round.deliveries.push(Delivery {
                    ack_id: None,
                    delivery_count,
                    message,
                });
                if round.deliveries.len() >= batch_size {
                    break 'fetch;
                }
            }
        }
        if lease.fetch.is_ahead_of(&lease.highest) {
            lease.highest = lease.fetch.clone();
        }
        if !round.deliveries.is_empty() && lease.since.is_none() {
            lease.since = Some(now);
        }
        round.next_due = lease.since.map(|since| since.saturating_add(ack_wait));
        Ok(round)
    }

    /// Acks, nacks or extends delivered messages. Returns how many were
    /// affected (ids of messages already acked count as none), and for an
    /// extend the new deadline. An expired id fails the whole request.
    pub async fn settle(
        &self,
        basin: &str,
        name: &str,
        ack_ids: &[String],
        action: Settle,
    ) -> EngineResult<(usize, Option<u64>)> {
        if ack_ids.len() > MAX_RECEIVE_BATCH {
            return Err(EngineError::Invalid(format!(
                "ack_ids may hold at most {MAX_RECEIVE_BATCH} ids"
            )));
        }
        if let Settle::Nack { delay_ms } = action {
            if delay_ms > config::MAX_ACK_WAIT_MS {
                return Err(EngineError::Invalid(format!(
                    "delay_ms must be at most {}",
                    config::MAX_ACK_WAIT_MS
                )));
            }
        }
        let handle = self.consumer(basin, name).await?;
        let parsed = ack_ids
            .iter()
            .map(|id| decode_ack_id(handle.id, id))
            .collect::<EngineResult<Vec<_>>>()?;
        let now = now_ms();
        let mut state = handle.state.lock().await;
        state.check_live(name)?;
        if state.config.ack_policy != AckPolicy::Explicit {
            return Err(EngineError::Invalid(
                "this consumer has ack_policy \"cursor\": commit a position instead".into(),
            ));
        }
        let mut current = Vec::new();
        let mut expired = Vec::new();
        for ((deliveries, position), text) in parsed.into_iter().zip(ack_ids) {
            let read = state.progress.frontier.is_past(&position);
            match state.pending.standing(&position, deliveries, read) {
                Standing::Current => current.push(position),
                Standing::Done => {}
                Standing::Superseded => expired.push(text.clone()),
                Standing::Unknown => {
                    return Err(EngineError::Invalid(format!(
                        "ack id `{text}` names no message this consumer delivered"
                    )))
                }
            }
        }
        if !expired.is_empty() {
            return Err(EngineError::AckExpired(expired));
        }
        let mut changes = Changes {
            progress: true,
            ..Default::default()
        };
        let mut affected = 0;
        let mut deadline = None;
        for position in current {
            let done = match action {
                Settle::Ack => state.pending.remove(&position).is_some().then(|| {
                    state.progress.acked += 1;
                }),
                Settle::Nack { delay_ms } => state.pending.get(&position).is_some().then(|| {
                    state.pending.nack(&position, now, delay_ms);
                    state.progress.nacked += 1;
                }),
                Settle::Extend => {
                    let ack_wait = state.config.ack_wait_ms;
                    state.pending.extend(&position, now, ack_wait).map(|due| {
                        deadline = Some(due);
                    })
                }
            };
            if done.is_some() {
                affected += 1;
                changes.positions.push(position);
            }
        }
        if affected == 0 {
            // Repeats of settled ids: answer once the first settling (maybe
            // still on its way to disk) is durable.
            let durable = self.queue(WriteBatch::default());
            drop(state);
            durable.await?;
            return Ok((0, deadline));
        }
        let durable = self.queue(changes.batch(handle.id, &state));
        drop(state);
        durable.await?;
        handle.changed.send_modify(|n| *n += 1);
        Ok((affected, deadline))
    }

    /// Moves a cursor consumer's committed position to `position` (never
    /// back). Returns the committed position.
    pub async fn commit_consumer(
        &self,
        basin: &str,
        name: &str,
        position: Frontier,
    ) -> EngineResult<Frontier> {
        let handle = self.consumer(basin, name).await?;
        let source = self.consumer_source(basin, name, &handle).await?;
        let now = now_ms();
        let mut state = handle.state.lock().await;
        state.check_live(name)?;
        if state.config.ack_policy != AckPolicy::Cursor {
            return Err(EngineError::Invalid(
                "this consumer has ack_policy \"explicit\": ack messages instead".into(),
            ));
        }
        match (&position, &source) {
            (Frontier::Seq(seq), SourceHandle::Stream(h) | SourceHandle::Events(h)) => {
                let tail = h.visible().tail.seq_num;
                if *seq > tail {
                    return Err(EngineError::Invalid(format!(
                        "cannot commit seq_num {seq}: the source's tail is {tail}"
                    )));
                }
            }
            (Frontier::Change { .. }, SourceHandle::Records(_)) => {}
            (Frontier::Seq(_), _) => {
                return Err(EngineError::Invalid(
                    "this consumer reads a records feed: commit a `cursor`".into(),
                ))
            }
            (Frontier::Change { .. }, _) => {
                return Err(EngineError::Invalid(
                    "this consumer reads a stream: commit a `seq_num`".into(),
                ))
            }
        }
        if !position.is_ahead_of(&state.progress.frontier) {
            // As for repeated acks: answer once the commit it repeats is
            // durable.
            let committed = state.progress.frontier.clone();
            let durable = self.queue(WriteBatch::default());
            drop(state);
            durable.await?;
            return Ok(committed);
        }
        let State {
            lease, progress, ..
        } = &mut *state;
        progress.frontier = position.clone();
        if position.is_ahead_of(&lease.fetch) {
            lease.fetch = position.clone();
        }
        if !lease.highest.is_ahead_of(&position) {
            lease.highest = position.clone();
            lease.resets = 0;
        }
        lease.since = lease.fetch.is_ahead_of(&progress.frontier).then_some(now);
        let changes = Changes {
            progress: true,
            ..Default::default()
        };
        let durable = self.queue(changes.batch(handle.id, &state));
        drop(state);
        durable.await?;
        handle.changed.send_modify(|n| *n += 1);
        Ok(position)
    }
}

/// What one pass of a receive did.
#[derive(Default)]
struct Round {
    deliveries: Vec<Delivery>,
    /// Messages to move to the dead-letter stream.
    dead: Vec<AppendRecord>,
    changes: Changes,
    /// When a pending message next becomes deliverable (epoch ms).
    next_due: Option<u64>,
    /// The pass stopped early: run another at once.
    more: bool,
    /// Pending messages were removed (dead-lettered or dropped): waiting
    /// receives may have something now.
    freed: bool,
    /// `max_ack_pending` is reached.
    full: bool,
}

impl Round {
    fn is_empty(&self) -> bool {
        self.deliveries.is_empty() && self.dead.is_empty() && self.changes.is_empty()
    }
}

fn passes(config: &ConsumerConfig, message: &Message) -> EngineResult<bool> {
    match &config.filter {
        None => Ok(true),
        Some(filter) => {
            let (event, id, data) = message.filter_fields()?;
            Ok(filter.matches(event.as_deref(), &id, &data))
        }
    }
}

/// A dead-letter record: headers say where it came from, the body is the
/// message's payload as delivered (a stream record's body, with its headers,
/// or the event or record JSON), so a consumer of the dead-letter stream can
/// replay it. A command record's header (empty name) is kept as `command`,
/// since an empty name would make the record a command; a body too large to
/// go with the added headers is left out (header `body_dropped`).
fn dead_letter(consumer_id: u64, message: &Message, deliveries: u32) -> AppendRecord {
    let header = |name: &str, value: String| Header {
        name: Bytes::copy_from_slice(name.as_bytes()),
        value: Bytes::from(value),
    };
    let mut headers = vec![
        header("consumer_id", consumer_id.to_string()),
        header("delivery_count", deliveries.to_string()),
        header(
            "position",
            serde_json::to_string(&message.position).unwrap_or_default(),
        ),
    ];
    let mut body = match &message.payload {
        Payload::Record(record) => {
            headers.extend(record.headers.iter().map(|h| Header {
                name: if h.name.is_empty() {
                    Bytes::from_static(b"command")
                } else {
                    h.name.clone()
                },
                value: h.value.clone(),
            }));
            record.body.clone()
        }
        Payload::Event(event) => Bytes::from(serde_json::to_vec(event).unwrap_or_default()),
        Payload::Doc(record) => record.json.clone(),
    };
    if metered_size(&headers, &body) > MAX_BATCH_BYTES {
        body = Bytes::new();
        headers.push(header("body_dropped", "too large".into()));
    }
    AppendRecord {
        timestamp: None,
        headers,
        body,
    }
}

/// The handle map's key type is the engine's; this names it for clarity.
pub(super) type ConsumerMap = HashMap<(String, String), Arc<ConsumerHandle>>;

fn info(name: &str, meta: &ConsumerMeta) -> ConsumerInfo {
    ConsumerInfo {
        name: name.into(),
        created_at: meta.created_at,
        config: meta.config.clone(),
        dead_letter_stream: dead_letter_stream(name),
        stats: None,
    }
}
