//! Cursor consumers: hand out consecutive ranges, take them back when no
//! commit comes in time, and commit a position.

use super::config::AckPolicy;
use super::layer::Consumers;
use super::position::Frontier;
use super::receive::{passes, Pass, Round};
use super::source::SourceHandle;
use super::state::{Delivery, State, StateWrites};
use crate::engine::error::{EngineError, EngineResult};
use crate::engine::streams::types::now_ms;

impl Consumers {
    pub(super) async fn receive_cursor(
        &self,
        pass: &Pass<'_>,
        state: &mut State,
    ) -> EngineResult<Round> {
        let (batch_size, now) = (pass.batch_size, pass.now);
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
                .fetch(pass.source, &lease.fetch, pass.handle.created_at, want)
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
            let durable = self.core.committer().barrier();
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
        let changes = StateWrites {
            progress: true,
            ..Default::default()
        };
        self.write_and_wake(&handle, state, changes).await?;
        Ok(position)
    }
}
