//! Reads: unary (with optional long poll) and sessions that follow live.
//!
//! Readers never talk to the stream task. They read storage directly, up to
//! the stream's *visible* tail (what is durable), and wait on the stream's
//! `watch` channel for it to move.

use std::ops::ControlFlow;
use std::sync::Arc;
use std::time::Duration;

use rand::Rng;
use tokio::sync::watch;
use tokio::time::Instant;

use super::core::{CreateIf, StreamCore};
use super::keys;
use super::streamer::StreamHandle;
use super::tails::Visible;
use super::types::*;
use crate::engine::error::{EngineError, EngineResult};
use crate::metrics::usage::Series;
use crate::metrics::Metrics;
use crate::storage::{Keyspace, Storage, StorageError};

/// Longest long poll for a unary read.
pub const MAX_UNARY_WAIT: Duration = Duration::from_secs(60);

#[derive(Clone, Copy, Debug, Default)]
pub struct ReadRequest {
    /// Where to start; `None` means at the tail.
    pub start: Option<ReadStart>,
    /// Start at the tail instead of failing when the start is beyond it.
    pub clamp: bool,
    pub limits: ReadLimits,
    /// How long to wait for new records when caught up. `None`: 0 if any
    /// limit is set, else forever (sessions) / 0 (unary).
    pub wait: Option<Duration>,
}

impl ReadRequest {
    fn bounded(&self) -> bool {
        self.limits.count.is_some() || self.limits.bytes.is_some() || self.limits.until.is_some()
    }
}

/// What a read session yields.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SessionEvent {
    Batch(ReadBatch),
    /// Nothing new; sent when the session catches up and then every 5–15 s.
    Heartbeat(StreamPosition),
}

impl StreamCore {
    /// A unary read: at most 1000 records or 1 MiB.
    pub async fn read(
        &self,
        basin: &str,
        stream: &str,
        req: ReadRequest,
    ) -> EngineResult<ReadBatch> {
        let handle = self.stream(basin, stream, CreateIf::OnRead).await?;
        let wait = req.wait.unwrap_or(Duration::ZERO).min(MAX_UNARY_WAIT);
        let mut visible = handle.subscribe();
        let start = resolve_start(&self.storage, &handle, &req, !wait.is_zero()).await?;
        let limits = ReadLimits {
            count: Some(
                req.limits
                    .count
                    .unwrap_or(MAX_BATCH_RECORDS as u64)
                    .min(MAX_BATCH_RECORDS as u64),
            ),
            bytes: Some(
                req.limits
                    .bytes
                    .unwrap_or(MAX_BATCH_BYTES as u64)
                    .min(MAX_BATCH_BYTES as u64),
            ),
            until: req.limits.until,
        };
        let deadline = Instant::now() + wait;
        let mut closing = self.closing.subscribe();
        loop {
            let now_visible = *visible.borrow_and_update();
            let from = start.max(now_visible.trim_point);
            let scan = scan_records(
                &self.storage,
                handle.id,
                from,
                now_visible.tail.seq_num,
                limits,
            )
            .await?;
            let done = !scan.records.is_empty()
                || scan.hit_until
                || scan.hit_bytes
                || Instant::now() >= deadline;
            if done || limits.count == Some(0) || limits.bytes == Some(0) {
                count_read(&self.metrics, (basin, stream), &scan.records, true);
                return Ok(batch_with_tail(scan.records, now_visible));
            }
            if *closing.borrow() {
                // A waiting long poll is cut short: said, as sessions say
                // it, rather than answered as if the wait had run out.
                return Err(EngineError::Unavailable);
            }
            tokio::select! {
                changed = visible.changed() => {
                    if changed.is_err() {
                        return Err(EngineError::StreamNotFound(stream.into()));
                    }
                }
                _ = tokio::time::sleep_until(deadline) => {}
                _ = closing.changed() => {}
            }
        }
    }

    /// Starts a read session, checking the start position up front so that
    /// errors (404, 416) surface before any data is sent.
    pub async fn read_session(
        &self,
        basin: &str,
        stream: &str,
        req: ReadRequest,
    ) -> EngineResult<ReadSession> {
        let handle = self.stream(basin, stream, CreateIf::OnRead).await?;
        // Without an explicit wait, a bounded session stops at the tail and an
        // unbounded one follows forever.
        let wait = match req.wait {
            Some(wait) => Some(wait),
            None if req.bounded() => Some(Duration::ZERO),
            None => None,
        };
        let can_follow = wait != Some(Duration::ZERO);
        let start = resolve_start(&self.storage, &handle, &req, can_follow).await?;
        Ok(ReadSession {
            storage: self.storage.clone(),
            visible: handle.subscribe(),
            closing: self.closing.subscribe(),
            stream_name: stream.into(),
            basin: basin.into(),
            metrics: self.metrics.clone(),
            handle,
            next_seq: start,
            remaining: req.limits,
            wait,
            deadline: wait.map(|w| Instant::now() + w),
            following: false,
            next_heartbeat: Instant::now(),
            done: false,
            started: Instant::now(),
            ops_counted: 0,
        })
    }
}

/// A live read: yields batches as records become durable.
pub struct ReadSession {
    storage: Arc<dyn Storage>,
    handle: Arc<StreamHandle>,
    visible: watch::Receiver<Visible>,
    closing: watch::Receiver<bool>,
    stream_name: String,
    /// Its basin, and where the records it reads are counted.
    basin: String,
    metrics: Arc<Metrics>,
    next_seq: u64,
    /// What is left of the count and bytes limits, and the until bound.
    remaining: ReadLimits,
    /// Longest gap between batches; `None` means forever.
    wait: Option<Duration>,
    deadline: Option<Instant>,
    following: bool,
    next_heartbeat: Instant,
    done: bool,
    /// Read operations are counted as S2 meters them: one per minute, or
    /// part of one, that the session lasts (see [`Self::count_ops`]).
    started: Instant,
    ops_counted: u64,
}

impl Drop for ReadSession {
    fn drop(&mut self) {
        self.count_ops();
    }
}

impl ReadSession {
    /// The seq num the next record returned will have (at least).
    pub fn position(&self) -> u64 {
        self.next_seq
    }

    /// Counts the streaming read operations due so far: one for each
    /// minute begun since the session started. Called at each event (a
    /// following session sends a heartbeat at least every 15 s) and at
    /// the end, so that operations land in about the minute they belong to.
    fn count_ops(&mut self) {
        let due = self.started.elapsed().as_secs() / 60 + 1;
        if due > self.ops_counted {
            let series = Series::STREAMING_READ;
            let ops = due - self.ops_counted;
            self.metrics.usage.count(&self.basin, series, ops);
            self.ops_counted = due;
        }
    }

    /// The next event, or `None` once a stop condition is met.
    pub async fn next(&mut self) -> Option<EngineResult<SessionEvent>> {
        self.count_ops();
        loop {
            if self.done || self.remaining.count == Some(0) || self.remaining.bytes == Some(0) {
                self.done = true;
                return None;
            }
            if *self.closing.borrow_and_update() {
                self.done = true;
                return Some(Err(EngineError::Unavailable));
            }
            let visible = *self.visible.borrow_and_update();
            let from = self.next_seq.max(visible.trim_point);
            if from < visible.tail.seq_num {
                match self.read_batch(from, visible).await {
                    ControlFlow::Break(event) => return event,
                    ControlFlow::Continue(()) => continue,
                }
            }

            // Caught up with the tail.
            if self.deadline.is_some_and(|d| Instant::now() >= d) {
                self.done = true;
                return None;
            }
            if !self.following {
                self.following = true;
                self.next_heartbeat = Instant::now() + heartbeat_gap();
                return Some(Ok(SessionEvent::Heartbeat(visible.tail)));
            }
            let deadline = self.deadline;
            tokio::select! {
                changed = self.visible.changed() => {
                    if changed.is_err() {
                        self.done = true;
                        return Some(Err(EngineError::StreamNotFound(self.stream_name.clone())));
                    }
                }
                _ = tokio::time::sleep_until(self.next_heartbeat) => {
                    self.next_heartbeat = Instant::now() + heartbeat_gap();
                    return Some(Ok(SessionEvent::Heartbeat(self.visible.borrow().tail)));
                }
                _ = self.closing.changed() => {}
                _ = sleep_until_opt(deadline) => {
                    self.done = true;
                    return None;
                }
            }
        }
    }

    /// Reads the next batch from `from` up to the visible tail. Breaks with
    /// what [`Self::next`] returns, or continues when purging removed the
    /// range under a newer trim point (look again from there).
    async fn read_batch(
        &mut self,
        from: u64,
        visible: Visible,
    ) -> ControlFlow<Option<EngineResult<SessionEvent>>> {
        let limits = ReadLimits {
            count: Some(cap(self.remaining.count, MAX_BATCH_RECORDS)),
            bytes: Some(cap(self.remaining.bytes, MAX_BATCH_BYTES)),
            until: self.remaining.until,
        };
        let scan = match scan_records(
            &self.storage,
            self.handle.id,
            from,
            visible.tail.seq_num,
            limits,
        )
        .await
        {
            Ok(scan) => scan,
            Err(err) => {
                self.done = true;
                return ControlFlow::Break(Some(Err(err)));
            }
        };
        // `until` reached, or the next record exceeds what the session
        // has left (not merely what fits in one batch).
        let bytes_left_exhausted = scan.hit_bytes
            && self
                .remaining
                .bytes
                .is_some_and(|b| b <= MAX_BATCH_BYTES as u64);
        if scan.hit_until || bytes_left_exhausted {
            self.done = true;
        }
        if scan.records.is_empty() {
            // Either a bound ended the session, or background purging
            // removed the range after a newer trim point was
            // published: then look again from that trim point.
            let trim_point = self.visible.borrow().trim_point;
            if !self.done && trim_point > from {
                return ControlFlow::Continue(());
            }
            self.done = true;
            return ControlFlow::Break(None);
        }
        let bytes = count_read(
            &self.metrics,
            (&self.basin, &self.stream_name),
            &scan.records,
            false,
        );
        self.remaining.count = self.remaining.count.map(|c| c - scan.records.len() as u64);
        self.remaining.bytes = self.remaining.bytes.map(|b| b - bytes);
        self.next_seq = scan.records.last().map_or(from, |r| r.seq_num + 1);
        self.deadline = self.wait.map(|w| Instant::now() + w);
        // A batch carries the tail, so a session that is following stays
        // following: it sends no heartbeat after each live batch (the spec
        // sends one "whenever a switch to following happens"), only once
        // it has been idle for a gap. A batch that left records behind it
        // unread means the session fell behind, and catching up again is a
        // switch.
        if self.next_seq < visible.tail.seq_num {
            self.following = false;
        } else if self.following {
            self.next_heartbeat = Instant::now() + heartbeat_gap();
        }
        ControlFlow::Break(Some(Ok(SessionEvent::Batch(batch_with_tail(
            scan.records,
            visible,
        )))))
    }
}

async fn sleep_until_opt(deadline: Option<Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}

/// Randomized so that many idle sessions do not wake in lockstep.
fn heartbeat_gap() -> Duration {
    Duration::from_millis(rand::rng().random_range(5_000..15_000))
}

fn cap(limit: Option<u64>, max: usize) -> u64 {
    limit.unwrap_or(max as u64).min(max as u64)
}

fn batch_with_tail(records: Vec<SequencedRecord>, visible: Visible) -> ReadBatch {
    // The tail is included when the batch reaches it: the reader is live.
    let at_tail = records
        .last()
        .is_none_or(|r| r.seq_num + 1 >= visible.tail.seq_num);
    ReadBatch {
        records,
        tail: at_tail.then_some(visible.tail),
    }
}

/// Turns the requested start into a seq num, applying S2's rules: a start
/// past the tail is a 416 unless `clamp`; a start at the tail is a 416 when
/// the read could not wait there.
async fn resolve_start(
    storage: &Arc<dyn Storage>,
    handle: &StreamHandle,
    req: &ReadRequest,
    can_follow: bool,
) -> EngineResult<u64> {
    let visible = handle.visible();
    let tail = visible.tail;
    let start = match req.start.unwrap_or(ReadStart::TailOffset(0)) {
        ReadStart::SeqNum(seq) => {
            if seq > tail.seq_num && !req.clamp {
                return Err(EngineError::BeyondTail(tail));
            }
            seq.min(tail.seq_num)
        }
        ReadStart::TailOffset(offset) => tail.seq_num.saturating_sub(offset),
        ReadStart::Timestamp(ts) => {
            if let Some(until) = req.limits.until {
                if ts >= until {
                    return Err(EngineError::Invalid(
                        "start `timestamp` must be less than `until`".into(),
                    ));
                }
            }
            if ts > tail.timestamp && !req.clamp {
                return Err(EngineError::BeyondTail(tail));
            }
            let (storage, id) = (storage.clone(), handle.id);
            blocking(move || first_seq_timestamped_at_or_after(&*storage, id, ts, visible)).await?
        }
    };
    if start >= tail.seq_num && !can_follow {
        return Err(EngineError::BeyondTail(tail));
    }
    Ok(start)
}

/// The seq num of the first record that arrived at or after `time` (by
/// the Arrivals index, which has an entry wherever the arrival time
/// grows), or `tail` if there is none.
pub(crate) fn first_seq_arrived_at_or_after(
    storage: &dyn Storage,
    id: u64,
    time: u64,
    tail: u64,
) -> EngineResult<u64> {
    let mut found = None;
    storage.scan(
        Keyspace::Arrivals,
        &keys::index_key(id, time, 0),
        &keys::index_key(id, u64::MAX, u64::MAX),
        &mut |key, _| {
            found = keys::parse_index_key(key).map(|(_, seq)| seq);
            ControlFlow::Break(())
        },
    )?;
    Ok(found.unwrap_or(tail).min(tail))
}

/// The seq num of the first record whose timestamp is at or after
/// `timestamp`, or `tail` if there is none.
///
/// The Timestamps index is sparse (see `TIMESTAMP_INDEX_STRIDE` in the
/// streamer): each entry is some record's `(timestamp, seq num)`. Records
/// are in timestamp order, so everything before the last entry older than
/// `timestamp` is older too, and the answer lies between that entry and
/// the next: at most a stride of records is read to find it.
pub(crate) fn first_seq_timestamped_at_or_after(
    storage: &dyn Storage,
    id: u64,
    timestamp: u64,
    visible: Visible,
) -> EngineResult<u64> {
    let tail = visible.tail.seq_num;
    let from = storage
        .last_in_range(
            Keyspace::Timestamps,
            &keys::index_key(id, 0, 0),
            &keys::index_key(id, timestamp, 0),
        )?
        .and_then(|(key, _)| keys::parse_index_key(&key).map(|(_, seq)| seq))
        .unwrap_or(0)
        // Records below the trim point are gone (or going): no scan over
        // what deleting them left behind.
        .max(visible.trim_point);
    let mut found = None;
    let mut damaged = None;
    storage.scan(
        Keyspace::StreamRecords,
        &keys::record_key(id, from),
        &keys::record_key(id, tail),
        &mut |key, value| {
            let seq = keys::parse_record_key(key);
            match (seq, value.get(..8).and_then(keys::read_u64)) {
                (Some(seq), Some(t)) if t >= timestamp => found = Some(seq),
                (Some(_), Some(_)) => return ControlFlow::Continue(()),
                (seq, _) => damaged = Some(seq),
            }
            ControlFlow::Break(())
        },
    )?;
    if let Some(seq) = damaged {
        return Err(StorageError::Corrupt(format!(
            "a record of stream {id} (seq num {seq:?}) is malformed"
        ))
        .into());
    }
    Ok(found.unwrap_or(tail).min(tail))
}

pub(crate) struct Scan {
    pub(crate) records: Vec<SequencedRecord>,
    /// The scan ended at a record at or past `until`.
    hit_until: bool,
    /// The scan ended at a record that did not fit in the bytes limit.
    hit_bytes: bool,
}

/// Reads records `[from, to)` within `limits` (count and bytes must be set).
pub(crate) async fn scan_records(
    storage: &Arc<dyn Storage>,
    id: u64,
    from: u64,
    to: u64,
    limits: ReadLimits,
) -> EngineResult<Scan> {
    let storage = storage.clone();
    blocking(move || {
        let max_count = limits.count.unwrap_or(u64::MAX);
        let max_bytes = limits.bytes.unwrap_or(u64::MAX);
        let mut records = Vec::new();
        let mut bytes = 0u64;
        let (mut hit_until, mut hit_bytes) = (false, false);
        let mut error = None;
        if max_count == 0 || from >= to {
            return Ok(Scan {
                records,
                hit_until,
                hit_bytes,
            });
        }
        storage.scan(
            Keyspace::StreamRecords,
            &keys::record_key(id, from),
            &keys::record_key(id, to),
            &mut |key, value| {
                let Some(seq) = keys::parse_record_key(key) else {
                    return ControlFlow::Continue(());
                };
                let record = match keys::decode_record(seq, value) {
                    Ok(record) => record,
                    Err(err) => {
                        error = Some(err);
                        return ControlFlow::Break(());
                    }
                };
                if limits.until.is_some_and(|until| record.timestamp >= until) {
                    hit_until = true;
                    return ControlFlow::Break(());
                }
                let size = record.metered_size() as u64;
                if bytes + size > max_bytes {
                    hit_bytes = true;
                    return ControlFlow::Break(());
                }
                bytes += size;
                records.push(record);
                if records.len() as u64 >= max_count {
                    ControlFlow::Break(())
                } else {
                    ControlFlow::Continue(())
                }
            },
        )?;
        match error {
            Some(err) => Err(err.into()),
            None => Ok(Scan {
                records,
                hit_until,
                hit_bytes,
            }),
        }
    })
    .await
}

/// Runs blocking storage work off the async worker threads.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> EngineResult<T> + Send + 'static,
) -> EngineResult<T> {
    tokio::task::spawn_blocking(f).await.unwrap_or_else(|e| {
        Err(EngineError::Storage(crate::storage::StorageError::Io(
            e.to_string(),
        )))
    })
}

/// Counts `records` as read from a stream, and returns their metered
/// bytes. With `unary_op`, the read also counts as one unary read
/// operation (a session counts its operations by the minute instead).
pub(crate) fn count_read(
    metrics: &Metrics,
    (basin, stream): (&str, &str),
    records: &[SequencedRecord],
    unary_op: bool,
) -> u64 {
    let bytes = records.iter().map(|r| r.metered_size() as u64).sum();
    metrics.read(basin, stream, records.len() as u64, bytes);
    if unary_op {
        metrics.usage.count(basin, Series::UNARY_READ, 1);
    }
    bytes
}
