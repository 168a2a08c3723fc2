//! Receives: one pass at a time over the pending messages and the source,
//! long-polling when there is nothing to deliver; dead letters.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tokio::time::Instant;

use super::config::{dead_letter_stream, MAX_EXAMINED_PER_PASS, MAX_RECEIVE_BATCH};
use super::config::{AckPolicy, ConsumerConfig};
use super::layer::Consumers;
use super::message::{Message, Payload};
use super::pending::Entry;
use super::source::SourceHandle;
use super::state::{AckId, ConsumerHandle, Delivery, State, StateWrites};
use crate::engine::error::{EngineError, EngineResult};
use crate::engine::locks::lock;
use crate::engine::streams::streamer::StreamHandle;
use crate::engine::streams::types::{
    metered_size, now_ms, AppendInput, AppendRecord, Header, MAX_BATCH_BYTES, MAX_BATCH_RECORDS,
};
use crate::engine::streams::{CreateIf, MAX_UNARY_WAIT};

impl Consumers {
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
        let mut closing = self.core.closing();
        let mut changed = handle.changed.subscribe();
        loop {
            let source = self.consumer_source(basin, name, &handle).await?;
            let wants_dead_letters = handle.state.lock().await.config.max_deliver.is_some();
            let dead_letters = match wants_dead_letters {
                true => Some(
                    self.core
                        .stream(basin, &dead_letter_stream(name), CreateIf::Never)
                        .await?,
                ),
                false => None,
            };
            // Marked before reading, so a change during the read wakes us.
            let mut source_mark = source.mark();
            changed.borrow_and_update();

            let pass = Pass {
                handle: &handle,
                source: &source,
                batch_size,
                now: now_ms(),
            };
            let round = self.run_pass(basin, name, &pass, dead_letters).await?;
            if !round.deliveries.is_empty() || Instant::now() >= deadline {
                return Ok(round.deliveries);
            }
            if *closing.borrow() {
                // A waiting receive is cut short: said, as sessions say it.
                return Err(EngineError::Unavailable);
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

    /// One pass under the consumer's mutex: decides what to deliver,
    /// queues the state change (with any dead letters, in one atomic
    /// batch) and waits until it is durable — outside the mutex, unless
    /// dead letters are appended (see the module docs).
    async fn run_pass(
        &self,
        basin: &str,
        name: &str,
        pass: &Pass<'_>,
        dead_letters: Option<Arc<StreamHandle>>,
    ) -> EngineResult<Round> {
        let mut state = pass.handle.state.lock().await;
        state.check_live(name)?;
        // A pass that fails has changed nothing in memory.
        let mut round = match state.config.ack_policy {
            AckPolicy::Explicit => {
                self.receive_explicit(pass, &mut state, dead_letters.is_some())
                    .await?
            }
            AckPolicy::Cursor => self.receive_cursor(pass, &mut state).await?,
        };
        if round.changes.is_empty() && round.dead.is_empty() {
            return Ok(round);
        }
        let batch = round.changes.batch(pass.handle.id, &state);
        let dead = std::mem::take(&mut round.dead);
        if dead.is_empty() {
            let durable = self.core.committer().queue(batch);
            drop(state);
            durable.await?;
        } else {
            let dead_letters = dead_letters.ok_or(EngineError::Unavailable)?;
            let input = AppendInput {
                records: dead,
                ..Default::default()
            };
            // Waited for under the mutex: see the module docs.
            let appended = match dead_letters.submit_with(input, batch).await {
                Ok(ack) => ack.await.map(|_| ()),
                Err(err) => Err(err),
            };
            if let Err(err) = appended {
                // The state in memory is ahead of the disk: retire it, so
                // the next operation reloads what is durable.
                self.retire(basin, name, pass.handle, &mut state).await;
                return Err(err);
            }
            drop(state);
        }
        if round.freed {
            pass.handle.changed.send_modify(|n| *n += 1);
        }
        Ok(round)
    }

    /// One pass of an explicit-ack receive. Fails only before it changes
    /// anything; a failure after that ends the pass early instead, so what
    /// was changed is always queued.
    async fn receive_explicit(
        &self,
        pass: &Pass<'_>,
        state: &mut State,
        can_dead_letter: bool,
    ) -> EngineResult<Round> {
        let mut round = Round::default();
        self.deliver_due(pass, state, &mut round, can_dead_letter)
            .await?;
        self.deliver_new(pass, state, &mut round).await?;
        // Removing a message may have freed its key for the next one.
        round.more |= round.freed && round.deliveries.is_empty();
        round.full = state.pending.len() >= state.config.max_ack_pending as usize;
        round.next_due = state.pending.next_due(pass.now);
        Ok(round)
    }

    /// Delivers what is due: redeliveries, nacked messages after their
    /// delay, and messages that waited for their key; dead-letters those
    /// past `max_deliver`, and drops those the source no longer holds.
    async fn deliver_due(
        &self,
        pass: &Pass<'_>,
        state: &mut State,
        round: &mut Round,
        can_dead_letter: bool,
    ) -> EngineResult<()> {
        let ack_wait = state.config.ack_wait_ms;
        let ordered = state.config.ordered_by_key;
        let max_deliver = state.config.max_deliver;
        let mut dead_bytes = 0usize;
        for position in state.pending.deliverable(pass.now, ordered) {
            if round.deliveries.len() >= pass.batch_size {
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
            let message = match self.load(pass.source, &position).await {
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
                let record = dead_letter(pass.handle.id, &message, entry.deliveries);
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
                .push(self.deliver(pass.handle, state, message, pass.now, ack_wait));
            round.changes.positions.push(position);
            round.changes.progress = true;
        }
        Ok(())
    }

    /// Reads new messages from the source while there is room. A pass
    /// looks at a bounded number of messages, so that a filter that
    /// passes over a long backlog does not hold the mutex throughout.
    async fn deliver_new(
        &self,
        pass: &Pass<'_>,
        state: &mut State,
        round: &mut Round,
    ) -> EngineResult<()> {
        let ack_wait = state.config.ack_wait_ms;
        let ordered = state.config.ordered_by_key;
        let max_pending = state.config.max_ack_pending as usize;
        let mut examined = 0usize;
        'fetch: while round.deliveries.len() < pass.batch_size && state.pending.len() < max_pending
        {
            if examined >= MAX_EXAMINED_PER_PASS {
                round.more = true;
                break;
            }
            let want = (pass.batch_size - round.deliveries.len()).max(16);
            let started_at = pass.handle.created_at;
            let (messages, from) = match self
                .fetch(pass.source, &state.progress.frontier, started_at, want)
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
                if round.deliveries.len() >= pass.batch_size || state.pending.len() >= max_pending {
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
                    round.deliveries.push(self.deliver(
                        pass.handle,
                        state,
                        message,
                        pass.now,
                        ack_wait,
                    ));
                }
            }
        }
        Ok(())
    }

    /// Marks `message` delivered (it is pending) and makes its delivery.
    pub(super) fn deliver(
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
            ack_id: Some(AckId {
                consumer_id: handle.id,
                deliveries,
                position: message.position.clone(),
            }),
            delivery_count: deliveries,
            message,
        }
    }

    /// Takes a consumer whose in-memory state may be ahead of the disk out
    /// of use: once everything queued before is durable, the next operation
    /// loads it again from storage. Called with its mutex held.
    pub(super) async fn retire(
        &self,
        basin: &str,
        name: &str,
        handle: &Arc<ConsumerHandle>,
        state: &mut State,
    ) {
        let _ = self.core.committer().barrier().await;
        state.retired = true;
        let key = (basin.to_string(), name.to_string());
        let mut consumers = lock(&self.handles);
        if consumers.get(&key).is_some_and(|h| Arc::ptr_eq(h, handle)) {
            consumers.remove(&key);
        }
        drop(consumers);
        handle.changed.send_modify(|n| *n += 1);
    }
}

/// What one receive pass works on.
pub(super) struct Pass<'a> {
    pub(super) handle: &'a Arc<ConsumerHandle>,
    pub(super) source: &'a SourceHandle,
    /// Messages to deliver, at most.
    pub(super) batch_size: usize,
    /// The pass's time (epoch ms).
    pub(super) now: u64,
}

/// What one pass of a receive did.
#[derive(Default)]
pub(super) struct Round {
    pub(super) deliveries: Vec<Delivery>,
    /// Messages to move to the dead-letter stream.
    pub(super) dead: Vec<AppendRecord>,
    pub(super) changes: StateWrites,
    /// When a pending message next becomes deliverable (epoch ms).
    pub(super) next_due: Option<u64>,
    /// The pass stopped early: run another at once.
    pub(super) more: bool,
    /// Pending messages were removed (dead-lettered or dropped): waiting
    /// receives may have something now.
    pub(super) freed: bool,
    /// `max_ack_pending` is reached.
    pub(super) full: bool,
}

impl Round {
    pub(super) fn is_empty(&self) -> bool {
        self.deliveries.is_empty() && self.dead.is_empty() && self.changes.is_empty()
    }
}

pub(super) fn passes(config: &ConsumerConfig, message: &Message) -> EngineResult<bool> {
    match &config.filter {
        None => Ok(true),
        Some(filter) => {
            let fields = message.filter_fields()?;
            Ok(filter.matches(&fields.candidate()))
        }
    }
}

/// A dead-letter record: headers say where it came from, the body is the
/// message's payload as delivered (a stream record's body, with its headers,
/// or the event or record JSON), so a consumer of the dead-letter stream can
/// replay it. A command record's header (empty name) is kept as `command`,
/// since an empty name would make the record a command; a body too large to
/// go with the added headers is left out (header `body_dropped`).
pub(super) fn dead_letter(consumer_id: u64, message: &Message, deliveries: u32) -> AppendRecord {
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
