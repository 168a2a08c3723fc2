//! One task per active stream: it owns the stream's tail.
//!
//! Every append to a stream goes through its task, which checks the
//! append's conditions (`fencing_token`, `match_seq_num`, and the terms of
//! `terms.rs`: closure, producers, writer sequence), assigns seq nums and
//! timestamps, applies command records, and hands the encoded batch to the
//! [`Committer`]. The task never waits for the fsync: it keeps an
//! *assigned* state that runs ahead of what is durable, so a client that
//! pipelines appends is not limited to one append per fsync.
//!
//! What readers may see is the *visible* state, published through a `watch`
//! channel by the committer thread once a batch is durable. Commits complete
//! in submission order, so the visible tail only moves forward and never
//! passes a record that is not on disk. When the task ends (the stream was
//! deleted, or the server stops) the channel closes and readers stop.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

use tokio::sync::{mpsc, oneshot, watch};

use super::committer::Committer;
use super::config::{RetentionPolicy, StreamConfig, TimestampingMode};
use super::keys::{self, StreamState};
use super::tails::Visible;
use super::tails::{TailFeed, TailNotice};
use super::terms::{self, AppendTerms, Producers};
use super::types::*;
use super::validate::{validate_batch, CommandRecord};
use crate::engine::error::{EngineError, EngineResult};
use crate::metrics::Metrics;
use crate::storage::{Keyspace, Storage, WriteBatch};

pub enum Command {
    Append {
        input: AppendInput,
        /// Other writes to commit in the same atomic batch as the records
        /// (a collection's documents and index, with its change events).
        extra: WriteBatch,
        /// What the append asks beyond S2's conditions (see `terms.rs`).
        terms: AppendTerms,
        /// Set for appends of an append session: once one of its appends
        /// fails, the flag is raised and its later appends are refused, so
        /// a session never applies an append after a failed one.
        session: Option<Arc<AtomicBool>>,
        reply: oneshot::Sender<EngineResult<AppendAck>>,
    },
    Reconfigure(StreamConfig),
    /// Trim by age retention: raise the trim point to `keep_from` (never
    /// beyond the tail), computed for a retention age of `age_secs`. Applied
    /// only if the stream's current retention is no longer than that, so a
    /// decision made just before a reconfigure never trims too much.
    Trim {
        keep_from: u64,
        age_secs: u64,
    },
    /// Stop taking commands. Replies once everything accepted so far is
    /// durable (or has failed).
    Stop(oneshot::Sender<()>),
    /// Stop, like `Stop`, but only if the stream holds no records and has
    /// not been written for `min_idle_ms`; replies whether it stopped.
    /// Deciding inside the task means no append can slip in between.
    StopIfEmpty {
        min_idle_ms: u64,
        reply: oneshot::Sender<bool>,
    },
}

/// A handle to a running stream task.
pub struct StreamHandle {
    pub id: u64,
    pub basin: String,
    pub name: String,
    commands: mpsc::Sender<Command>,
    visible: watch::Receiver<Visible>,
}

impl StreamHandle {
    pub fn visible(&self) -> Visible {
        *self.visible.borrow()
    }

    /// A receiver that wakes on every durable change; closed when the stream
    /// task ends.
    pub fn subscribe(&self) -> watch::Receiver<Visible> {
        self.visible.clone()
    }

    pub async fn append(&self, input: AppendInput) -> EngineResult<AppendAck> {
        self.submit(input, None).await?.await
    }

    /// Queues `input` to be appended with `extra` committed in the same
    /// atomic batch: both become durable (and visible) together, or neither
    /// does. Like [`Self::submit`], returns once queued, with a future of
    /// the acknowledgement.
    pub async fn submit_with(
        &self,
        input: AppendInput,
        extra: WriteBatch,
    ) -> EngineResult<impl std::future::Future<Output = EngineResult<AppendAck>> + use<>> {
        self.submit_with_terms(input, AppendTerms::default(), extra)
            .await
    }

    /// Like [`Self::submit_with`], for an append with [`AppendTerms`]: a
    /// refusal of its terms is the error [`EngineError::AppendRefused`].
    pub async fn submit_with_terms(
        &self,
        input: AppendInput,
        terms: AppendTerms,
        extra: WriteBatch,
    ) -> EngineResult<impl std::future::Future<Output = EngineResult<AppendAck>> + use<>> {
        let (reply, rx) = oneshot::channel();
        self.send(Command::Append {
            input,
            extra,
            terms,
            session: None,
            reply,
        })
        .await?;
        let name = self.name.clone();
        Ok(async move { rx.await.map_err(|_| EngineError::StreamNotFound(name))? })
    }

    /// Queues an append behind all earlier ones and returns, without waiting
    /// for it to be durable, a future of its acknowledgement. Appends are
    /// sequenced and acknowledged in the order they are submitted.
    pub async fn submit(
        &self,
        input: AppendInput,
        session: Option<Arc<AtomicBool>>,
    ) -> EngineResult<impl std::future::Future<Output = EngineResult<AppendAck>> + use<>> {
        let (reply, rx) = oneshot::channel();
        self.send(Command::Append {
            input,
            extra: WriteBatch::default(),
            terms: AppendTerms::default(),
            session,
            reply,
        })
        .await?;
        let name = self.name.clone();
        Ok(async move { rx.await.map_err(|_| EngineError::StreamNotFound(name))? })
    }

    /// Stops the task once everything it accepted has been handed to the
    /// committer and is durable (or has failed). Stopping a task that has
    /// already ended does nothing.
    pub async fn stop(&self) {
        let (tx, rx) = oneshot::channel();
        if self.send(Command::Stop(tx)).await.is_ok() {
            let _ = rx.await;
        }
    }

    pub async fn send(&self, command: Command) -> EngineResult<()> {
        self.commands
            .send(command)
            .await
            .map_err(|_| EngineError::StreamNotFound(self.name.clone()))
    }
}

/// A handle to a stream another node owns (`replica.rs`): its visible
/// state comes from `visible`, and it takes no commands (they fail as if
/// the stream were gone; a follower never sends it any).
pub(super) fn replica_handle(
    id: u64,
    (basin, name): (&str, &str),
    visible: watch::Receiver<Visible>,
) -> Arc<StreamHandle> {
    let (commands, _) = mpsc::channel(1);
    Arc::new(StreamHandle {
        id,
        basin: basin.into(),
        name: name.into(),
        commands,
        visible,
    })
}

/// Commands queued per stream before appenders wait; bounds memory per stream.
const COMMAND_QUEUE: usize = 1024;

/// Starts the task for a stream whose durable state is `state`.
pub fn spawn(
    id: u64,
    (basin, name): (&str, &str),
    config: StreamConfig,
    state: StreamState,
    (committer, storage): (Committer, Arc<dyn Storage>),
    metrics: Arc<Metrics>,
    tails: TailFeed,
) -> Arc<StreamHandle> {
    let (commands_tx, commands_rx) = mpsc::channel(COMMAND_QUEUE);
    let (visible_tx, visible_rx) = watch::channel(Visible::of(&state));
    let task = StreamTask {
        id,
        label: format!("stream {name:?} of basin {basin:?}"),
        names: (basin.into(), name.into()),
        metrics,
        config,
        state,
        unindexed: TIMESTAMP_INDEX_STRIDE,
        producers: Producers::new(id, storage),
        committer,
        visible: Arc::new(visible_tx),
        tails,
    };
    tokio::spawn(task.run(commands_rx));
    Arc::new(StreamHandle {
        id,
        basin: basin.into(),
        name: name.into(),
        commands: commands_tx,
        visible: visible_rx,
    })
}

/// How far apart entries of the Timestamps index may be: a read by
/// timestamp reads at most this far past its index lookup (see
/// `first_seq_timestamped_at_or_after`). An entry for every new timestamp
/// would double the writes per record for a client that gives each record
/// its own timestamp (the S2 CLI's bench does, in microseconds).
const TIMESTAMP_INDEX_STRIDE: Unindexed = Unindexed {
    records: 256,
    bytes: 1024 * 1024,
};

/// Records appended since the stream's last Timestamps index entry.
#[derive(Clone, Copy, Default)]
struct Unindexed {
    records: u64,
    bytes: u64,
}

impl Unindexed {
    /// Whether the next record gets an index entry.
    fn is_full(&self) -> bool {
        self.records >= TIMESTAMP_INDEX_STRIDE.records || self.bytes >= TIMESTAMP_INDEX_STRIDE.bytes
    }
}

/// An append whose batch is on its way to the disk.
struct PendingAck {
    reply: oneshot::Sender<EngineResult<AppendAck>>,
    ack: AppendAck,
    /// Metered bytes of its records, and when it reached the task: what
    /// the metrics count once it is durable.
    bytes: u64,
    reached: Instant,
}

struct StreamTask {
    id: u64,
    /// Names the stream in the notes of its commits (see `WriteBatch`).
    label: String,
    /// Basin and stream, for the metrics (shared by every append's
    /// completion, hence not `String`s).
    names: (Arc<str>, Arc<str>),
    metrics: Arc<Metrics>,
    config: StreamConfig,
    /// Assigned state: includes appends that are not yet durable.
    state: StreamState,
    /// Since the last Timestamps index entry this task wrote (counted from
    /// full when it starts, so that its first append writes one).
    unindexed: Unindexed,
    /// Idempotent producers' places, as assigned.
    producers: Producers,
    committer: Committer,
    visible: Arc<watch::Sender<Visible>>,
    /// Told each new visible state too, for other nodes (`tails.rs`).
    tails: TailFeed,
}

impl StreamTask {
    async fn run(mut self, mut commands: mpsc::Receiver<Command>) {
        while let Some(command) = commands.recv().await {
            match command {
                Command::Append {
                    input,
                    extra,
                    terms,
                    session,
                    reply,
                } => {
                    if session.as_ref().is_some_and(|s| s.load(Ordering::Acquire)) {
                        let _ = reply.send(Err(EngineError::SessionAborted));
                        continue;
                    }
                    if terms.producer.is_some() && self.producers.is_full() {
                        // What it forgets must be read back from storage
                        // as it was assigned.
                        let (durable, wait) = oneshot::channel();
                        self.reply_when_durable(durable, ());
                        let _ = wait.await;
                        self.producers.forget();
                    }
                    let reached = Instant::now();
                    let bytes = input.records.iter().map(|r| r.metered_size() as u64).sum();
                    match self.append(input, &terms) {
                        Ok((mut batch, ack)) => {
                            batch.extend(extra);
                            let pending = PendingAck {
                                reply,
                                ack,
                                bytes,
                                reached,
                            };
                            self.submit(batch, Some(pending), session)
                        }
                        Err(err) => {
                            if let Some(session) = session {
                                session.store(true, Ordering::Release);
                            }
                            self.refuse(reply, err);
                        }
                    }
                }
                Command::Reconfigure(config) => self.config = config,
                Command::Trim {
                    keep_from,
                    age_secs,
                } => {
                    let still_applies = matches!(
                        self.config.retention_policy,
                        RetentionPolicy::Age(current) if current <= age_secs
                    );
                    if !still_applies {
                        continue;
                    }
                    let trim_point = keep_from.min(self.state.next_seq_num);
                    if trim_point > self.state.trim_point {
                        self.state.trim_point = trim_point;
                        let mut batch = WriteBatch::default();
                        self.put_state(&mut batch);
                        self.submit(batch, None, None);
                    }
                }
                Command::Stop(reply) => {
                    self.reply_when_durable(reply, ());
                    return;
                }
                Command::StopIfEmpty { min_idle_ms, reply } => {
                    let empty = self.state.trim_point >= self.state.next_seq_num;
                    let idle = now_ms().saturating_sub(self.state.last_write_at) >= min_idle_ms;
                    if empty && idle {
                        self.reply_when_durable(reply, true);
                        return;
                    }
                    let _ = reply.send(false);
                }
            }
        }
    }

    /// Replies once everything this task submitted is durable: an empty
    /// batch through the FIFO committer is a barrier. A task that stops
    /// replies this way, so whoever starts the stream again reads a state
    /// key that covers every append the old task accepted.
    fn reply_when_durable<T: Send + 'static>(&self, reply: oneshot::Sender<T>, value: T) {
        self.committer.submit(
            WriteBatch::default(),
            Box::new(move |_| {
                let _ = reply.send(value);
            }),
        );
    }

    fn put_state(&self, batch: &mut WriteBatch) {
        batch.put(
            Keyspace::Meta,
            keys::state_key(self.id),
            keys::encode_json(&self.state),
        );
    }

    /// Hands `batch` to the committer; once durable, publishes the state as
    /// it is now and acknowledges the append, if any.
    fn submit(
        &self,
        mut batch: WriteBatch,
        append: Option<PendingAck>,
        session: Option<Arc<AtomicBool>>,
    ) {
        if let Some(PendingAck { ack, .. }) = &append {
            batch.note(format!(
                "{}: seq nums {}..{}",
                self.label, ack.start.seq_num, ack.end.seq_num
            ));
        }
        let (metrics, (basin, stream)) = (self.metrics.clone(), self.names.clone());
        let storage_class = self.config.storage_class.name();
        let visible = Visible::of(&self.state);
        let sender = self.visible.clone();
        let (tails, id) = (self.tails.clone(), self.id);
        self.committer.submit(
            batch,
            Box::new(move |result| match result {
                Ok(()) => {
                    sender.send_replace(visible);
                    tails.publish(TailNotice {
                        id,
                        visible: Some(visible),
                    });
                    if let Some(pending) = append {
                        let records = pending.ack.end.seq_num - pending.ack.start.seq_num;
                        metrics.appended(
                            (&basin, &stream, storage_class),
                            records,
                            pending.bytes,
                            pending.reached.elapsed(),
                        );
                        let _ = pending.reply.send(Ok(pending.ack));
                    }
                }
                Err(err) => {
                    if let Some(session) = session {
                        session.store(true, Ordering::Release);
                    }
                    if let Some(pending) = append {
                        let _ = pending.reply.send(Err(err.into()));
                    }
                }
            }),
        );
    }

    /// Answers an append that was refused. A failed condition reports the
    /// stream's state as sequenced, which may include appends not yet
    /// durable: that answer waits until they are (an empty batch through
    /// the FIFO committer), so that no one told "the next seq num is N"
    /// can then read a tail below N. (The linearizability checker found
    /// this.) If those appends fail instead, so does this answer.
    fn refuse(&self, reply: oneshot::Sender<EngineResult<AppendAck>>, err: EngineError) {
        if !matches!(
            err,
            EngineError::SeqNumMismatch(_)
                | EngineError::FencingTokenMismatch(_)
                | EngineError::AppendRefused(_)
        ) {
            let _ = reply.send(Err(err));
            return;
        }
        self.committer.submit(
            WriteBatch::default(),
            Box::new(move |result| {
                let _ = reply.send(Err(match result {
                    Ok(()) => err,
                    Err(failed) => failed.into(),
                }));
            }),
        );
    }

    /// Checks and sequences one append, advancing the assigned state. On
    /// error nothing has changed.
    fn append(
        &mut self,
        input: AppendInput,
        terms: &AppendTerms,
    ) -> EngineResult<(WriteBatch, AppendAck)> {
        // Only a close may come without records.
        if !(terms.close && input.records.is_empty()) {
            validate_batch(&input, self.config.timestamping.mode, terms.limits)?;
        }
        let producer = match &terms.producer {
            Some(claim) => self.producers.get(&claim.id)?,
            None => None,
        };
        let producer = terms::admit(&self.state, terms, producer, !input.records.is_empty())
            .map_err(EngineError::AppendRefused)?;
        if let Some(token) = &input.fencing_token {
            if *token != self.state.fencing_token {
                return Err(EngineError::FencingTokenMismatch(
                    self.state.fencing_token.clone(),
                ));
            }
        }
        if let Some(expected) = input.match_seq_num {
            if expected != self.state.next_seq_num {
                return Err(EngineError::SeqNumMismatch(self.state.next_seq_num));
            }
        }

        // Kept monotonic, like timestamps, so the arrivals index stays sorted
        // even if the wall clock steps back.
        let arrival = now_ms().max(self.state.last_write_at);
        let start_seq = self.state.next_seq_num;
        let mut batch = WriteBatch::default();
        if let (Some(claim), Some(place)) = (&terms.producer, producer) {
            self.producers.set(&claim.id, place, &mut batch);
        }
        if terms.writer_seq.is_some() {
            self.state.writer_seq.clone_from(&terms.writer_seq);
        }
        if terms.close {
            self.state.closed = Some(Closure {
                by: terms.producer.clone(),
            });
        }
        if !input.records.is_empty() && (start_seq == 0 || arrival > self.state.last_write_at) {
            batch.put(
                Keyspace::Arrivals,
                keys::index_key(self.id, arrival, start_seq),
                Vec::new(),
            );
        }
        let mut first_timestamp = None;
        for record in input.records {
            let seq_num = self.state.next_seq_num;
            let timestamp = self.assign_timestamp(record.timestamp, arrival);
            if seq_num == 0 || self.unindexed.is_full() {
                batch.put(
                    Keyspace::Timestamps,
                    keys::index_key(self.id, timestamp, seq_num),
                    Vec::new(),
                );
                self.unindexed = Unindexed::default();
            }
            self.unindexed.records += 1;
            let size = record.metered_size() as u64;
            self.unindexed.bytes += size;
            if let Some(command) = CommandRecord::parse(&record) {
                match command {
                    CommandRecord::Fence(token) => self.state.fencing_token = token,
                    // A trim may remove records up to and including
                    // itself, never any later one.
                    CommandRecord::Trim(point) => {
                        self.state.trim_point = self.state.trim_point.max(point.min(seq_num + 1))
                    }
                }
            }
            batch.put(
                Keyspace::StreamRecords,
                keys::record_key(self.id, seq_num),
                keys::encode_record(timestamp, &record.headers, &record.body),
            );
            first_timestamp.get_or_insert(timestamp);
            let counted = self.state.appended_bytes.unwrap_or(0);
            self.state.appended_bytes = Some(counted + size);
            self.state.last_timestamp = timestamp;
            self.state.next_seq_num += 1;
        }
        self.state.last_write_at = arrival;
        self.put_state(&mut batch);

        let end = StreamPosition {
            seq_num: self.state.next_seq_num,
            timestamp: self.state.last_timestamp,
        };
        let ack = AppendAck {
            start: StreamPosition {
                seq_num: start_seq,
                timestamp: first_timestamp.unwrap_or(self.state.last_timestamp),
            },
            end,
            tail: end,
        };
        Ok((batch, ack))
    }

    /// Applies the stream's timestamping mode, then keeps timestamps from
    /// ever going backwards.
    fn assign_timestamp(&self, client: Option<u64>, arrival: u64) -> u64 {
        let ts = &self.config.timestamping;
        let mut timestamp = match (ts.mode, client) {
            (TimestampingMode::Arrival, _) | (_, None) => arrival,
            (_, Some(client)) if ts.uncapped => client,
            (_, Some(client)) => client.min(arrival),
        };
        if self.state.next_seq_num > 0 {
            timestamp = timestamp.max(self.state.last_timestamp);
        }
        timestamp
    }
}
