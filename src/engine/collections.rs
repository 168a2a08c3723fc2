//! Collections: keyed JSON records, with a records stream and an events
//! stream that change atomically with every write.
//!
//! A write to a collection takes the collection's write lock, reads the
//! current documents, computes the new versions and one change event per
//! record, and appends the events to the collection's events stream *with*
//! the document and index updates in the same atomic batch (through the
//! events stream's task, so seq nums and durability work as for any
//! stream). The records stream is the `changes` index: one entry per record
//! at `(updated_at, id)`, moved on every write.
//!
//! ## The cursor rule
//!
//! `/updated` pages by `(updated_at, id)`. The classic failure is a write
//! that lands at or below a position a reader already paged past. Rill
//! rules it out: `updated_at` is assigned by the server under the write
//! lock, never decreases, and a reader only ever sees records *below the
//! watermark*: the smallest `updated_at` any write not yet durable has, or
//! could still get. Reading the watermark also raises the floor for future
//! writes to it. So everything below the watermark is final, and a cursor
//! never passes a position where a record could still appear. A write
//! shows on `/updated` once its millisecond is closed: at once for a reader
//! that asks after it (the reader closes the millisecond), or within 1 ms
//! when writes are so dense that the clock runs that far ahead.

use std::collections::HashMap;
use std::ops::ControlFlow;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::config::{InfiniteRetention, RetentionPolicy, StreamConfigPatch};
use super::error::{EngineError, EngineResult};
use super::keys::{self, CollectionMeta, Doc};
use super::streamer::StreamHandle;
use super::types::{now_ms, AppendInput, AppendRecord, Header, MAX_BATCH_BYTES};
use super::{lock, names, prefix_end, CreateIf, Engine, ListRequest, Provision};
use crate::storage::{Keyspace, WriteBatch};

/// Writes per batch request.
pub const MAX_WRITE_OPS: usize = 1000;
/// Longest record id, in bytes.
pub const MAX_RECORD_ID_BYTES: usize = 512;
/// Largest record data, as JSON.
pub const MAX_RECORD_BYTES: usize = 256 * 1024;
/// Records per `/updated` page.
pub const MAX_PAGE: usize = 1000;
pub const DEFAULT_PAGE: usize = 100;
/// Tombstones removed per committed batch.
const EXPIRY_CHUNK: usize = 4096;
/// Streams whose names start with this belong to collections.
pub const EVENTS_STREAM_PREFIX: &str = "_collections/";

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CollectionConfig {
    /// How long deleted records stay visible as tombstones.
    pub tombstone_retention_secs: u64,
}

impl Default for CollectionConfig {
    fn default() -> Self {
        Self {
            tombstone_retention_secs: 7 * 24 * 3600,
        }
    }
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CollectionConfigPatch {
    #[serde(default)]
    pub tombstone_retention_secs: Option<u64>,
}

impl CollectionConfig {
    pub fn apply(mut self, patch: &CollectionConfigPatch) -> Self {
        if let Some(secs) = patch.tombstone_retention_secs {
            self.tombstone_retention_secs = secs;
        }
        self
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CollectionInfo {
    pub name: String,
    pub config: CollectionConfig,
    pub created_at: u64,
    pub events_stream: String,
}

/// A record as clients see it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RecordView {
    pub collection: String,
    pub id: String,
    pub data: Map<String, Value>,
    pub version: u64,
    pub created_at: u64,
    pub updated_at: u64,
    pub deleted: bool,
}

impl RecordView {
    fn new(collection: &str, id: &str, doc: Doc) -> Self {
        Self {
            collection: collection.to_string(),
            id: id.to_string(),
            data: doc.data,
            version: doc.version,
            created_at: doc.created_at,
            updated_at: doc.updated_at,
            deleted: doc.deleted,
        }
    }
}

/// A record as the records stream stores it: its position, and the JSON a
/// client gets, kept ready so that paging copies bytes instead of decoding
/// and re-encoding every record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RawRecord {
    pub updated_at: u64,
    pub id: String,
    /// A [`RecordView`] as JSON.
    pub json: Bytes,
}

impl RawRecord {
    pub fn view(&self) -> EngineResult<RecordView> {
        Ok(keys::decode_json(&self.json)?)
    }
}

/// One write in a batch.
#[derive(Clone, Debug)]
pub enum WriteOp {
    Upsert {
        id: String,
        data: Map<String, Value>,
        expected_version: Option<u64>,
    },
    Delete {
        id: String,
        expected_version: Option<u64>,
    },
}

impl WriteOp {
    fn id(&self) -> &str {
        match self {
            WriteOp::Upsert { id, .. } | WriteOp::Delete { id, .. } => id,
        }
    }
}

/// A change event, as stored in the events stream (the record body).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Event {
    pub event: EventKind,
    pub id: String,
    /// The new version, or for a delete the version deleted.
    pub data: Map<String, Value>,
    /// For updates: the previous values of the top-level fields that
    /// changed (`null` for fields that were added).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub changes: Option<Map<String, Value>>,
    pub version: u64,
    pub updated_at: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EventKind {
    Created,
    Updated,
    Deleted,
}

/// A position in the records stream: strictly after `(updated_at, id)`;
/// without an id, strictly after every record at `updated_at`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Cursor {
    pub updated_after: u64,
    pub after_id: Option<String>,
    /// When the consumer's sync began (epoch ms), carried in the opaque
    /// token; 0 when unknown (the cursor pair form). See [`Horizon`].
    pub started_at: u64,
}

impl Cursor {
    /// A cursor at the very beginning: a full sync, always allowed.
    pub fn is_start(&self) -> bool {
        self.updated_after == 0 && self.after_id.is_none()
    }
}

/// A position across collections: strictly after `(updated_after,
/// collection, id)`; without `after`, strictly after every record at
/// `updated_after`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct UnifiedCursor {
    pub updated_after: u64,
    pub after: Option<(String, String)>,
    /// As in [`Cursor`].
    pub started_at: u64,
}

impl UnifiedCursor {
    pub fn is_start(&self) -> bool {
        self.updated_after == 0 && self.after.is_none()
    }
}

/// How far a collection's tombstones have been removed: those with
/// `updated_at` below `below` are gone, the last of them removed at
/// `moved_at`. A consumer that began its sync before `moved_at` and is
/// still below `below` may have missed a deletion: it gets a 410. One that
/// began after never knew the removed records, so it may go on.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Horizon {
    pub below: u64,
    pub moved_at: u64,
}

impl Horizon {
    fn check(&self, position: u64, started_at: u64, is_start: bool) -> EngineResult<()> {
        if is_start || self.below == 0 || started_at >= self.moved_at || position >= self.below {
            Ok(())
        } else {
            Err(EngineError::CursorExpired(self.below))
        }
    }
}

/// A write ready to commit.
struct PreparedWrite {
    views: Vec<RecordView>,
    /// `None` when nothing changes.
    commit: Option<Commit>,
}

/// What a write commits: the events, the other writes to commit with
/// them, and the new documents by id.
type Commit = (AppendInput, WriteBatch, Vec<(String, Doc)>);

/// A write handed to the events stream and not yet durable: registered in
/// the clock (for the watermark) and in the pending documents, and
/// unregistered when dropped, whatever happens to the write.
struct PendingWrite {
    handle: Arc<CollectionHandle>,
    updated_at: u64,
    ids: Vec<String>,
}

impl PendingWrite {
    /// Assigns the write its `updated_at` and registers it as in flight in
    /// one step under the clock lock: a reader can never compute a
    /// watermark between the two and serve past this write's position.
    fn begin(handle: &Arc<CollectionHandle>) -> Self {
        let mut clock = lock(&handle.clock);
        let updated_at = now_ms().max(clock.last).max(clock.floor);
        clock.last = updated_at;
        *clock.in_flight.entry(updated_at).or_default() += 1;
        Self {
            handle: handle.clone(),
            updated_at,
            ids: Vec::new(),
        }
    }

    /// Makes the write's new documents visible to the writes prepared next.
    /// Should a write fail after later ones were prepared on its documents,
    /// those fail too: a stream's appends fail in a cascade (a storage
    /// failure stops the committer; a deleted stream refuses everything).
    fn hold_docs(&mut self, docs: Vec<(String, Doc)>) {
        let mut pending = lock(&self.handle.pending);
        for (id, doc) in docs {
            let entry = pending.entry(id.clone()).or_insert((doc.clone(), 0));
            entry.0 = doc;
            entry.1 += 1;
            self.ids.push(id);
        }
    }
}

impl Drop for PendingWrite {
    fn drop(&mut self) {
        {
            let mut clock = lock(&self.handle.clock);
            if let Some(count) = clock.in_flight.get_mut(&self.updated_at) {
                *count -= 1;
                if *count == 0 {
                    clock.in_flight.remove(&self.updated_at);
                }
            }
        }
        let mut pending = lock(&self.handle.pending);
        for id in &self.ids {
            if let Some(entry) = pending.get_mut(id) {
                entry.1 -= 1;
                if entry.1 == 0 {
                    pending.remove(id);
                }
            }
        }
    }
}

/// Where the writer's clock stands; see the module docs.
#[derive(Default)]
struct Clock {
    /// The `updated_at` of the last write handed to the events stream.
    last: u64,
    /// No future write gets an `updated_at` below this.
    floor: u64,
    /// Writes handed to the events stream but not yet durable, by
    /// `updated_at` (a count per time).
    in_flight: std::collections::BTreeMap<u64, usize>,
}

/// Documents written by writes that are not yet durable, so that the next
/// write (prepared while they commit) builds on them. Each entry counts the
/// pending writes of that id and holds the newest version.
type PendingDocs = HashMap<String, (Doc, usize)>;

/// A collection in use.
pub struct CollectionHandle {
    pub(super) id: u64,
    name: String,
    pub(super) events: Arc<StreamHandle>,
    /// Serializes the preparation of writes (reading current documents and
    /// queueing the events); several writes may be committing at once.
    write_lock: tokio::sync::Mutex<()>,
    clock: Mutex<Clock>,
    pending: Mutex<PendingDocs>,
    /// Bumped after every durable write, for long polls.
    pub(super) written: tokio::sync::watch::Sender<u64>,
    /// See [`Horizon`]; persisted at [`keys::tombstone_horizon_key`].
    horizon: Mutex<Horizon>,
    /// How far (by `updated_at`) expiry has looked for tombstones; in
    /// memory only, so a restart looks again from the horizon.
    expiry_scanned: std::sync::atomic::AtomicU64,
}

impl CollectionHandle {
    /// Whether a write landed in a millisecond the clock has not reached:
    /// it shows on the records stream once the clock gets there.
    pub(super) fn settling(&self) -> bool {
        lock(&self.clock).last > now_ms()
    }

    /// Everything with `updated_at` below the returned value is final.
    pub(super) fn watermark(&self) -> u64 {
        let mut clock = lock(&self.clock);
        if let Some((&t, _)) = clock.in_flight.first_key_value() {
            // Should that write fail, later ones still must not land below.
            clock.floor = clock.floor.max(t);
            return t;
        }
        let now = now_ms();
        let mut watermark = now.max(clock.last).max(clock.floor);
        // The last write landed in the current millisecond: close that
        // millisecond now (later writes go to the next one) so a reader
        // sees its own write at once. The floor never gets more than 1 ms
        // ahead of the wall clock this way.
        if watermark == clock.last && clock.last <= now {
            watermark = clock.last + 1;
        }
        clock.floor = clock.floor.max(watermark);
        watermark
    }
}

fn validate_record_id(id: &str) -> EngineResult<()> {
    if id.is_empty() || id.len() > MAX_RECORD_ID_BYTES {
        return Err(EngineError::Invalid(format!(
            "a record id must be 1 to {MAX_RECORD_ID_BYTES} bytes"
        )));
    }
    if id.chars().any(char::is_control) {
        return Err(EngineError::Invalid(
            "a record id may not contain control characters".into(),
        ));
    }
    Ok(())
}

pub(super) fn events_stream_name(collection: &str) -> String {
    format!("{EVENTS_STREAM_PREFIX}{collection}/events")
}

/// The previous values of the top-level fields that differ.
fn changed_fields(old: &Map<String, Value>, new: &Map<String, Value>) -> Map<String, Value> {
    let mut changes = Map::new();
    for (key, old_value) in old {
        if new.get(key) != Some(old_value) {
            changes.insert(key.clone(), old_value.clone());
        }
    }
    for key in new.keys() {
        if !old.contains_key(key) {
            changes.insert(key.clone(), Value::Null);
        }
    }
    changes
}

impl Engine {
    // ---- collections ----

    /// Changes an existing collection's config (`PATCH`).
    pub async fn reconfigure_collection(
        &self,
        basin: &str,
        name: &str,
        patch: &CollectionConfigPatch,
    ) -> EngineResult<CollectionInfo> {
        let _admin = self.admin.lock().await;
        self.basin_meta(basin)?;
        let meta = self
            .collection_meta(basin, name)?
            .ok_or_else(|| EngineError::CollectionNotFound(name.into()))?;
        Ok(self.patch_collection(basin, name, meta, patch).await?.0)
    }

    /// Applies `patch` to a collection's stored config. The caller holds
    /// the admin lock.
    async fn patch_collection(
        &self,
        basin: &str,
        name: &str,
        mut meta: CollectionMeta,
        patch: &CollectionConfigPatch,
    ) -> EngineResult<(CollectionInfo, Provision)> {
        let config = meta.config.apply(patch);
        if config == meta.config {
            return Ok((info(name, &meta), Provision::Unchanged));
        }
        meta.config = config;
        let mut batch = WriteBatch::default();
        batch.put(
            Keyspace::Meta,
            keys::collection_key(basin, name),
            keys::encode_json(&meta),
        );
        self.committer.commit(batch).await?;
        Ok((info(name, &meta), Provision::Updated))
    }

    pub async fn ensure_collection(
        &self,
        basin: &str,
        name: &str,
        patch: &CollectionConfigPatch,
    ) -> EngineResult<(CollectionInfo, Provision)> {
        names::validate_stream_name(name)?;
        if name.contains('/') {
            return Err(EngineError::Invalid(
                "a collection name may not contain `/`".into(),
            ));
        }
        let _admin = self.admin.lock().await;
        self.basin_meta(basin)?;
        if let Some(meta) = self.collection_meta(basin, name)? {
            return self.patch_collection(basin, name, meta, patch).await;
        }
        // The events stream keeps every change: infinite retention.
        let events_stream = events_stream_name(name);
        let stream_patch = StreamConfigPatch {
            retention_policy: Some(RetentionPolicy::Infinite(InfiniteRetention {})),
            ..Default::default()
        };
        let stream_config = super::config::StreamConfig::default()
            .apply(&stream_patch)
            .map_err(EngineError::Invalid)?;
        let mut batch = WriteBatch::default();
        if let Some(orphan) = self.stream_meta(basin, &events_stream)? {
            // Left by a collection of this name deleted before its stream
            // was: replace it.
            self.stop_stream(basin, &events_stream).await;
            super::delete_stream_ops(&mut batch, basin, &events_stream, orphan.id);
        }
        // One batch: the collection and its events stream exist together
        // or not at all.
        let [stream_id, id] = self.allocate_ids(&mut batch)?;
        super::stream_creation_ops(
            &mut batch,
            basin,
            &events_stream,
            stream_config,
            None,
            stream_id,
        );
        let meta = CollectionMeta {
            id,
            config: CollectionConfig::default().apply(patch),
            created_at: now_ms(),
            events_stream,
        };
        batch.put(
            Keyspace::Meta,
            keys::collection_key(basin, name),
            keys::encode_json(&meta),
        );
        self.committer.commit(batch).await?;
        Ok((info(name, &meta), Provision::Created))
    }

    pub fn collection_info(&self, basin: &str, name: &str) -> EngineResult<CollectionInfo> {
        self.basin_meta(basin)?;
        let meta = self
            .collection_meta(basin, name)?
            .ok_or_else(|| EngineError::CollectionNotFound(name.into()))?;
        Ok(info(name, &meta))
    }

    pub fn list_collections(
        &self,
        basin: &str,
        req: &ListRequest,
    ) -> EngineResult<(Vec<CollectionInfo>, bool)> {
        self.basin_meta(basin)?;
        let (found, has_more) =
            self.list_named_meta::<CollectionMeta>(&keys::collection_prefix(basin), req)?;
        Ok((
            found.iter().map(|(name, meta)| info(name, meta)).collect(),
            has_more,
        ))
    }

    /// Deletes the collection, its records and its events stream.
    pub async fn delete_collection(&self, basin: &str, name: &str) -> EngineResult<()> {
        let _admin = self.admin.lock().await;
        self.basin_meta(basin)?;
        let meta = self
            .collection_meta(basin, name)?
            .ok_or_else(|| EngineError::CollectionNotFound(name.into()))?;
        lock(&self.collections).remove(&(basin.to_string(), name.to_string()));
        self.stop_stream(basin, &meta.events_stream).await;
        let mut batch = WriteBatch::default();
        batch.delete(Keyspace::Meta, keys::collection_key(basin, name));
        batch.delete(Keyspace::Meta, keys::tombstone_horizon_key(meta.id));
        // Documents and changes are keyed by the collection id, which the
        // purge marker covers in every keyspace.
        batch.put(Keyspace::Meta, keys::purge_key(meta.id), Vec::new());
        if let Some(stream) = self.stream_meta(basin, &meta.events_stream)? {
            super::delete_stream_ops(&mut batch, basin, &meta.events_stream, stream.id);
        }
        self.committer.commit(batch).await?;
        lock(&self.collections).remove(&(basin.to_string(), name.to_string()));
        Ok(())
    }

    /// Every collection of `basin`, by name, with its id.
    pub(super) fn collection_ids(&self, basin: &str) -> EngineResult<Vec<(String, u64)>> {
        let all: Vec<(String, CollectionMeta)> =
            self.scan_named_meta(&keys::collection_prefix(basin), "", "", usize::MAX)?;
        Ok(all
            .into_iter()
            .map(|(name, meta)| (name, meta.id))
            .collect())
    }

    pub(super) fn collection_meta(
        &self,
        basin: &str,
        name: &str,
    ) -> EngineResult<Option<CollectionMeta>> {
        match self
            .storage
            .get(Keyspace::Meta, &keys::collection_key(basin, name))?
        {
            Some(bytes) => Ok(Some(keys::decode_json(&bytes)?)),
            None => Ok(None),
        }
    }

    /// The collection's in-memory handle, loading it on first use.
    pub(super) async fn collection(
        &self,
        basin: &str,
        name: &str,
    ) -> EngineResult<Arc<CollectionHandle>> {
        let key = (basin.to_string(), name.to_string());
        self.basin_meta(basin)?;
        // The metadata decides, not the cache: a handle cached while the
        // collection was being deleted (or before it was recreated under
        // the same name) has another id and must not be used.
        let meta = self
            .collection_meta(basin, name)?
            .ok_or_else(|| EngineError::CollectionNotFound(name.into()))?;
        if let Some(handle) = lock(&self.collections).get(&key) {
            if handle.id == meta.id {
                return Ok(handle.clone());
            }
        }
        let events = self
            .stream(basin, &meta.events_stream, CreateIf::Never)
            .await?;
        // The newest entry of the records stream is the last write.
        let last = self
            .storage
            .last_in_range(
                Keyspace::Changes,
                &meta.id.to_be_bytes(),
                &prefix_end(&meta.id.to_be_bytes()),
            )?
            .and_then(|(k, _)| keys::parse_change_key(&k))
            .map_or(0, |(t, _)| t);
        let horizon: Horizon = match self
            .storage
            .get(Keyspace::Meta, &keys::tombstone_horizon_key(meta.id))?
        {
            Some(bytes) => keys::decode_json(&bytes)?,
            None => Horizon::default(),
        };
        let handle = Arc::new(CollectionHandle {
            id: meta.id,
            name: name.to_string(),
            events,
            write_lock: tokio::sync::Mutex::new(()),
            clock: Mutex::new(Clock {
                last,
                floor: last,
                in_flight: Default::default(),
            }),
            pending: Mutex::new(HashMap::new()),
            written: tokio::sync::watch::Sender::new(0),
            horizon: Mutex::new(horizon),
            expiry_scanned: std::sync::atomic::AtomicU64::new(horizon.below),
        });
        let mut cache = lock(&self.collections);
        match cache.get(&key) {
            Some(existing) if existing.id == handle.id => Ok(existing.clone()),
            _ => {
                cache.insert(key, handle.clone());
                Ok(handle)
            }
        }
    }

    // ---- records ----

    pub async fn get_record(
        &self,
        basin: &str,
        collection: &str,
        id: &str,
    ) -> EngineResult<RecordView> {
        let handle = self.collection(basin, collection).await?;
        match self
            .storage
            .get(Keyspace::Docs, &keys::doc_key(handle.id, id))?
        {
            Some(bytes) => {
                let doc: Doc = keys::decode_json(&bytes)?;
                if doc.expired {
                    return Err(EngineError::RecordNotFound(id.into()));
                }
                Ok(RecordView::new(collection, id, doc))
            }
            None => Err(EngineError::RecordNotFound(id.into())),
        }
    }

    /// Applies `ops` atomically: all of them, with their events, or none.
    /// Returns the resulting record for each op, in order.
    pub async fn write_records(
        &self,
        basin: &str,
        collection: &str,
        ops: Vec<WriteOp>,
    ) -> EngineResult<Vec<RecordView>> {
        if ops.is_empty() {
            return Err(EngineError::Invalid(
                "a write needs at least one upsert or delete".into(),
            ));
        }
        if ops.len() > MAX_WRITE_OPS {
            return Err(EngineError::Invalid(format!(
                "a write may hold at most {MAX_WRITE_OPS} upserts and deletes, got {}",
                ops.len()
            )));
        }
        let mut seen = std::collections::HashSet::new();
        for op in &ops {
            validate_record_id(op.id())?;
            if !seen.insert(op.id()) {
                return Err(EngineError::Invalid(format!(
                    "record `{}` appears twice in one write",
                    op.id()
                )));
            }
            if let WriteOp::Upsert { data, id, .. } = op {
                let size = serde_json::to_vec(data).map_or(0, |v| v.len());
                if size > MAX_RECORD_BYTES {
                    return Err(EngineError::Invalid(format!(
                        "record `{id}` is {size} bytes; at most {MAX_RECORD_BYTES} are allowed"
                    )));
                }
            }
        }

        let handle = self.collection(basin, collection).await?;
        let write = handle.write_lock.lock().await;

        // Current versions (pending writes first), and the conditions on them.
        let mut current: HashMap<String, Option<Doc>> = HashMap::new();
        for op in &ops {
            let pending = lock(&handle.pending)
                .get(op.id())
                .map(|(doc, _)| doc.clone());
            let doc = match pending {
                Some(doc) => Some(doc),
                None => match self
                    .storage
                    .get(Keyspace::Docs, &keys::doc_key(handle.id, op.id()))?
                {
                    Some(bytes) => Some(keys::decode_json::<Doc>(&bytes)?),
                    None => None,
                },
            };
            let (expected, is_delete) = match op {
                WriteOp::Upsert {
                    expected_version, ..
                } => (*expected_version, false),
                WriteOp::Delete {
                    expected_version, ..
                } => (*expected_version, true),
            };
            let live = doc.as_ref().filter(|d| !d.deleted);
            if is_delete && live.is_none() {
                return Err(EngineError::RecordNotFound(op.id().into()));
            }
            if let Some(expected) = expected {
                // A deleted record counts as absent: version 0.
                let actual = live.map_or(0, |d| d.version);
                if expected != actual {
                    return Err(EngineError::VersionMismatch {
                        id: op.id().into(),
                        expected,
                        actual,
                    });
                }
            }
            current.insert(op.id().to_string(), doc);
        }

        // In flight from the moment it has a time, so readers' watermark
        // stays below it until it is durable (or, dropped, until it is not
        // going to happen).
        let mut guard = PendingWrite::begin(&handle);
        let prepared = self.prepare_write(&handle, ops, current, guard.updated_at)?;
        let Some((input, extra, written)) = prepared.commit else {
            return Ok(prepared.views);
        };
        guard.hold_docs(written);
        let ack = handle.events.submit_with(input, extra).await?;
        // The next write may be prepared while this one commits: it reads
        // the pending documents, and its events queue behind these.
        drop(write);
        // The write is queued and will commit (or fail) whatever the caller
        // does now, so its bookkeeping must not hang on the caller's future:
        // it is released by a task of its own once the write's fate is known.
        let finish = tokio::spawn(async move {
            let result = ack.await;
            drop(guard);
            if result.is_ok() {
                handle.written.send_modify(|n| *n += 1);
            }
            result
        });
        match finish.await {
            Ok(result) => result.map(|_| prepared.views),
            Err(err) => std::panic::resume_unwind(err.into_panic()),
        }
    }

    /// Builds one write: the records to return, and (unless nothing
    /// changes) the events and the document and index updates to commit.
    fn prepare_write(
        &self,
        handle: &CollectionHandle,
        ops: Vec<WriteOp>,
        current: HashMap<String, Option<Doc>>,
        updated_at: u64,
    ) -> EngineResult<PreparedWrite> {
        let mut extra = WriteBatch::default();
        let mut events = Vec::new();
        let mut written = Vec::new();
        let mut views = Vec::with_capacity(ops.len());
        for op in ops {
            let id = op.id().to_string();
            let old = current.get(&id).cloned().flatten();
            let (doc, event) = match op {
                WriteOp::Upsert { data, .. } => match &old {
                    Some(old) if !old.deleted && old.data == data => {
                        // Nothing changes: no new version, no event.
                        views.push(RecordView::new(&handle.name, &id, old.clone()));
                        continue;
                    }
                    Some(old) if !old.deleted => {
                        let changes = changed_fields(&old.data, &data);
                        let doc = Doc {
                            data,
                            version: old.version + 1,
                            created_at: old.created_at,
                            updated_at,
                            deleted: false,
                            expired: false,
                        };
                        (doc, (EventKind::Updated, Some(changes)))
                    }
                    _ => {
                        let doc = Doc {
                            data,
                            version: old.as_ref().map_or(1, |o| o.version + 1),
                            created_at: updated_at,
                            updated_at,
                            deleted: false,
                            expired: false,
                        };
                        (doc, (EventKind::Created, None))
                    }
                },
                WriteOp::Delete { .. } => {
                    let Some(old) = &old else {
                        return Err(EngineError::RecordNotFound(id));
                    };
                    let doc = Doc {
                        data: old.data.clone(),
                        version: old.version + 1,
                        created_at: old.created_at,
                        updated_at,
                        deleted: true,
                        expired: false,
                    };
                    (doc, (EventKind::Deleted, None))
                }
            };
            if let Some(old) = &old {
                extra.delete(
                    Keyspace::Changes,
                    keys::change_key(handle.id, old.updated_at, &id),
                );
            }
            written.push((id.clone(), doc.clone()));
            let view = RecordView::new(&handle.name, &id, doc.clone());
            extra.put(
                Keyspace::Changes,
                keys::change_key(handle.id, updated_at, &id),
                keys::encode_json(&view),
            );
            extra.put(
                Keyspace::Docs,
                keys::doc_key(handle.id, &id),
                keys::encode_json(&doc),
            );
            let (kind, changes) = event;
            events.push(Event {
                event: kind,
                id: id.clone(),
                data: doc.data.clone(),
                changes,
                version: doc.version,
                updated_at,
            });
            views.push(view);
        }
        if events.is_empty() {
            return Ok(PreparedWrite {
                views,
                commit: None,
            });
        }
        let records: Vec<AppendRecord> = events
            .iter()
            .map(|event| AppendRecord {
                timestamp: None,
                headers: vec![Header {
                    name: Bytes::from_static(b"event"),
                    value: Bytes::from(
                        serde_json::to_string(&event.event)
                            .unwrap_or_default()
                            .trim_matches('"')
                            .to_string(),
                    ),
                }],
                body: Bytes::from(keys::encode_json(event)),
            })
            .collect();
        let size: usize = records.iter().map(AppendRecord::metered_size).sum();
        if size > MAX_BATCH_BYTES {
            return Err(EngineError::Invalid(format!(
                "this write's change events come to {size} bytes; one write may produce at most \
                 {MAX_BATCH_BYTES} (1 MiB): split it into smaller writes"
            )));
        }
        let input = AppendInput {
            records,
            ..Default::default()
        };
        Ok(PreparedWrite {
            views,
            commit: Some((input, extra, written)),
        })
    }

    /// A page of the records stream strictly after `cursor`, at most
    /// `limit` records, and the cursor to continue from. With a `wait`, an
    /// empty page is held until something is written (long poll).
    pub async fn updated(
        &self,
        basin: &str,
        collection: &str,
        cursor: &Cursor,
        limit: usize,
        wait: std::time::Duration,
    ) -> EngineResult<(Vec<RawRecord>, Cursor)> {
        let handle = self.collection(basin, collection).await?;
        let deadline = tokio::time::Instant::now() + wait.min(super::read::MAX_UNARY_WAIT);
        let mut written = handle.written.subscribe();
        let mut closing = self.closing.subscribe();
        loop {
            written.borrow_and_update();
            let page = self.updated_page(&handle, cursor, limit)?;
            if !page.0.is_empty() || tokio::time::Instant::now() >= deadline || *closing.borrow() {
                return Ok(page);
            }
            tokio::select! {
                _ = written.changed() => {}
                _ = closing.changed() => {}
                // A write in a millisecond the clock has not reached yet
                // shows once it has.
                _ = tokio::time::sleep(std::time::Duration::from_millis(1)), if lock(&handle.clock).last > now_ms() => {}
                _ = tokio::time::sleep_until(deadline) => {}
            }
        }
    }

    pub(super) fn updated_page(
        &self,
        handle: &CollectionHandle,
        cursor: &Cursor,
        limit: usize,
    ) -> EngineResult<(Vec<RawRecord>, Cursor)> {
        let check = |cursor: &Cursor| {
            let horizon = *lock(&handle.horizon);
            horizon.check(cursor.updated_after, cursor.started_at, cursor.is_start())
        };
        check(cursor)?;
        let limit = limit.clamp(1, MAX_PAGE);
        let watermark = handle.watermark();
        let start = match &cursor.after_id {
            Some(id) => {
                let mut key = keys::change_key(handle.id, cursor.updated_after, id);
                key.push(0); // strictly after this id
                key
            }
            None => match cursor.updated_after.checked_add(1) {
                Some(t) => keys::change_key(handle.id, t, ""),
                None => return Ok((Vec::new(), cursor.clone())),
            },
        };
        let end = keys::change_key(handle.id, watermark, "");
        let mut records = Vec::new();
        self.storage
            .scan(Keyspace::Changes, &start, &end, &mut |key, value| {
                if let Some((updated_at, id)) = keys::parse_change_key(key) {
                    records.push(RawRecord {
                        updated_at,
                        id,
                        json: Bytes::copy_from_slice(value),
                    });
                }
                if records.len() >= limit {
                    ControlFlow::Break(())
                } else {
                    ControlFlow::Continue(())
                }
            })?;
        // Expiry publishes its horizon before removing anything, so a scan
        // that raced with a removal sees the new horizon here.
        check(cursor)?;
        let next = match records.last() {
            Some(last) => Cursor {
                updated_after: last.updated_at,
                after_id: Some(last.id.clone()),
                started_at: cursor.started_at,
            },
            None => cursor.clone(),
        };
        Ok((records, next))
    }

    /// One page across several collections (all of the basin's if `names`
    /// is `None`), ordered by `(updated_at, collection, id)`, strictly after
    /// `cursor`. Only records below every collection's watermark (and below
    /// the wall clock, for collections created later) are served, so no
    /// write to any of them can land behind the returned cursor.
    pub async fn updated_across(
        &self,
        basin: &str,
        names: Option<Vec<String>>,
        cursor: &UnifiedCursor,
        limit: usize,
        wait: std::time::Duration,
    ) -> EngineResult<(Vec<RawRecord>, UnifiedCursor)> {
        let deadline = tokio::time::Instant::now() + wait.min(super::read::MAX_UNARY_WAIT);
        loop {
            let page = self
                .updated_across_page(basin, names.as_deref(), cursor, limit)
                .await?;
            if !page.0.is_empty()
                || tokio::time::Instant::now() >= deadline
                || *self.closing.borrow()
            {
                return Ok(page);
            }
            tokio::time::sleep(std::time::Duration::from_millis(25)).await;
        }
    }

    async fn updated_across_page(
        &self,
        basin: &str,
        names: Option<&[String]>,
        cursor: &UnifiedCursor,
        limit: usize,
    ) -> EngineResult<(Vec<RawRecord>, UnifiedCursor)> {
        self.basin_meta(basin)?;
        let limit = limit.clamp(1, MAX_PAGE);
        let explicit = names.is_some();
        let mut names: Vec<String> = match names {
            Some(names) => names.to_vec(),
            None => self
                .collection_ids(basin)?
                .into_iter()
                .map(|(n, _)| n)
                .collect(),
        };
        names.sort();
        names.dedup();
        let mut handles: Vec<(String, Arc<CollectionHandle>)> = Vec::with_capacity(names.len());
        let mut watermark = now_ms();
        for name in &names {
            let handle = match self.collection(basin, name).await {
                Ok(handle) => handle,
                // Deleted since the listing: nothing of it to serve.
                Err(EngineError::CollectionNotFound(_)) if !explicit => continue,
                Err(err) => return Err(err),
            };
            watermark = watermark.min(handle.watermark());
            handles.push((name.clone(), handle));
        }
        let check = |handles: &[(String, Arc<CollectionHandle>)]| -> EngineResult<()> {
            for (_, handle) in handles {
                let horizon = *lock(&handle.horizon);
                horizon.check(cursor.updated_after, cursor.started_at, cursor.is_start())?;
            }
            Ok(())
        };
        check(&handles)?;
        // Up to `limit` candidates from each collection, then merge.
        let mut entries: Vec<(u64, String, RawRecord)> = Vec::new();
        for (name, handle) in &handles {
            let start = match &cursor.after {
                Some((after_collection, after_id)) if name == after_collection => {
                    let mut key = keys::change_key(handle.id, cursor.updated_after, after_id);
                    key.push(0);
                    key
                }
                Some((after_collection, _)) if name > after_collection => {
                    keys::change_key(handle.id, cursor.updated_after, "")
                }
                _ => match cursor.updated_after.checked_add(1) {
                    Some(t) => keys::change_key(handle.id, t, ""),
                    None => continue,
                },
            };
            let end = keys::change_key(handle.id, watermark, "");
            let mut taken = 0;
            self.storage
                .scan(Keyspace::Changes, &start, &end, &mut |key, value| {
                    if let Some((updated_at, id)) = keys::parse_change_key(key) {
                        let json = Bytes::copy_from_slice(value);
                        entries.push((
                            updated_at,
                            name.clone(),
                            RawRecord {
                                updated_at,
                                id,
                                json,
                            },
                        ));
                        taken += 1;
                    }
                    if taken >= limit {
                        ControlFlow::Break(())
                    } else {
                        ControlFlow::Continue(())
                    }
                })?;
        }
        check(&handles)?;
        entries.sort_by(|a, b| (a.0, &a.1, &a.2.id).cmp(&(b.0, &b.1, &b.2.id)));
        entries.truncate(limit);
        let next = match entries.last() {
            Some((t, name, record)) => UnifiedCursor {
                updated_after: *t,
                after: Some((name.clone(), record.id.clone())),
                started_at: cursor.started_at,
            },
            None => cursor.clone(),
        };
        Ok((entries.into_iter().map(|(_, _, r)| r).collect(), next))
    }

    /// Removes tombstones older than the collection's retention, in bounded
    /// chunks under the write lock. Each chunk first publishes the new
    /// horizon (so a reader racing with the removal gets a 410, not a gap),
    /// then removes the tombstones, keeping a small stub of each record so
    /// that versions never restart. The horizon moves only past tombstones
    /// actually removed.
    pub(super) async fn expire_tombstones(&self, basin: &str, name: &str) -> EngineResult<()> {
        use std::sync::atomic::Ordering;
        let Some(meta) = self.collection_meta(basin, name)? else {
            return Ok(());
        };
        let handle = self.collection(basin, name).await?;
        if handle.id != meta.id {
            return Ok(());
        }
        let retention_ms = meta.config.tombstone_retention_secs.saturating_mul(1000);
        let cutoff = now_ms().saturating_sub(retention_ms);
        let scanned = handle.expiry_scanned.load(Ordering::Acquire);
        if cutoff <= scanned {
            return Ok(());
        }
        let _write = handle.write_lock.lock().await;
        // No new write can start now; let the ones committing finish, so
        // the documents in storage are current (else skip this pass).
        let mut waited = 0;
        while !lock(&handle.clock).in_flight.is_empty() {
            if waited >= 200 {
                return Ok(());
            }
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
            waited += 1;
        }
        let mut start = keys::change_key(meta.id, scanned, "");
        let end = keys::change_key(meta.id, cutoff, "");
        loop {
            // One chunk of tombstones, and where the scan got to.
            let mut doomed: Vec<(Vec<u8>, RecordView)> = Vec::new();
            let mut last_key = None;
            let mut corrupt = None;
            self.storage
                .scan(Keyspace::Changes, &start, &end, &mut |key, value| {
                    last_key = Some(key.to_vec());
                    match keys::decode_json::<RecordView>(value) {
                        Ok(view) if view.deleted => doomed.push((key.to_vec(), view)),
                        Ok(_) => {}
                        Err(err) => corrupt = Some(err),
                    }
                    if doomed.len() >= EXPIRY_CHUNK || corrupt.is_some() {
                        ControlFlow::Break(())
                    } else {
                        ControlFlow::Continue(())
                    }
                })?;
            if let Some(err) = corrupt {
                return Err(err.into());
            }
            let Some(last_removed) = doomed.last().map(|(_, v)| v.updated_at) else {
                break; // no more tombstones below the cutoff
            };
            let horizon = Horizon {
                below: lock(&handle.horizon).below.max(last_removed + 1),
                moved_at: now_ms(),
            };
            *lock(&handle.horizon) = horizon;
            let mut batch = WriteBatch::default();
            for (key, view) in &doomed {
                batch.delete(Keyspace::Changes, key.clone());
                let stub = Doc {
                    data: Map::new(),
                    version: view.version,
                    created_at: view.created_at,
                    updated_at: view.updated_at,
                    deleted: true,
                    expired: true,
                };
                batch.put(
                    Keyspace::Docs,
                    keys::doc_key(meta.id, &view.id),
                    keys::encode_json(&stub),
                );
            }
            batch.put(
                Keyspace::Meta,
                keys::tombstone_horizon_key(meta.id),
                keys::encode_json(&horizon),
            );
            self.committer.commit(batch).await?;
            match last_key {
                Some(mut key) => {
                    key.push(0);
                    start = key;
                }
                None => break,
            }
        }
        handle.expiry_scanned.store(cutoff, Ordering::Release);
        Ok(())
    }
}

fn info(name: &str, meta: &CollectionMeta) -> CollectionInfo {
    CollectionInfo {
        name: name.to_string(),
        config: meta.config,
        created_at: meta.created_at,
        events_stream: meta.events_stream.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn changes_hold_previous_values() {
        let old = json!({"a": 1, "b": 2, "gone": true})
            .as_object()
            .unwrap()
            .clone();
        let new = json!({"a": 1, "b": 3, "added": "x"})
            .as_object()
            .unwrap()
            .clone();
        let changes = changed_fields(&old, &new);
        assert_eq!(
            Value::Object(changes),
            json!({"b": 2, "gone": true, "added": null})
        );
    }

    #[test]
    fn record_ids() {
        assert!(validate_record_id("user-1").is_ok());
        assert!(validate_record_id("").is_err());
        assert!(validate_record_id(&"x".repeat(513)).is_err());
        assert!(validate_record_id("a\nb").is_err());
    }
}
