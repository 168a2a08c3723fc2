//! Settling explicit-ack deliveries: ack, nack (deliver again after a
//! delay) and extend.

use std::sync::Arc;

use super::config::MAX_RECEIVE_BATCH;
use super::config::{self, AckPolicy};
use super::layer::Consumers;
use super::pending::Standing;
use super::position::Position;
use super::state::{AckId, ConsumerHandle, Settle, State, StateWrites};
use crate::engine::error::{EngineError, EngineResult};
use crate::engine::streams::types::now_ms;

impl Consumers {
    /// Acks, nacks, extends or rejects delivered messages. Returns how
    /// many were affected (ids of messages already settled count as
    /// none), and for an extend the new deadline. An expired id fails the
    /// whole request.
    pub async fn settle(
        &self,
        basin: &str,
        name: &str,
        ack_ids: &[AckId],
        action: Settle,
    ) -> EngineResult<(usize, Option<u64>)> {
        if let Settle::Reject = action {
            return Ok((self.reject(basin, name, ack_ids).await?, None));
        }
        if let Settle::Nack { delay_ms } = action {
            if delay_ms > config::MAX_ACK_WAIT_MS {
                return Err(EngineError::Invalid(format!(
                    "delay_ms must be at most {}",
                    config::MAX_ACK_WAIT_MS
                )));
            }
        }
        let handle = self.consumer_of_ids(basin, name, ack_ids).await?;
        let now = now_ms();
        let mut state = handle.state.lock().await;
        state.check_live(name)?;
        check_explicit(&state)?;
        let current = current_positions(&state, ack_ids)?;
        let (changes, affected, deadline) = apply(&mut state, current, action, now);
        if affected == 0 {
            // Repeats of settled ids: answer once the first settling (maybe
            // still on its way to disk) is durable.
            let durable = self.core.committer().barrier();
            drop(state);
            durable.await?;
            return Ok((0, deadline));
        }
        self.write_and_wake(&handle, state, changes).await?;
        Ok((affected, deadline))
    }
}

impl Consumers {
    /// The consumer whose deliveries `ack_ids` name: at most
    /// [`MAX_RECEIVE_BATCH`] of them, every one its own.
    pub(super) async fn consumer_of_ids(
        &self,
        basin: &str,
        name: &str,
        ack_ids: &[AckId],
    ) -> EngineResult<Arc<ConsumerHandle>> {
        if ack_ids.len() > MAX_RECEIVE_BATCH {
            return Err(EngineError::Invalid(format!(
                "ack_ids may hold at most {MAX_RECEIVE_BATCH} ids"
            )));
        }
        let handle = self.consumer(basin, name).await?;
        if let Some(index) = ack_ids.iter().position(|id| id.consumer_id != handle.id) {
            return Err(EngineError::BadAckId {
                index,
                problem: "belongs to another consumer",
            });
        }
        Ok(handle)
    }
}

/// Deliveries are settled one by one only under explicit acks.
pub(super) fn check_explicit(state: &State) -> EngineResult<()> {
    if state.config.ack_policy != AckPolicy::Explicit {
        return Err(EngineError::Invalid(
            "this consumer has ack_policy \"cursor\": commit a position instead".into(),
        ));
    }
    Ok(())
}

/// The positions of the ack ids that name a current delivery. An id whose
/// message was delivered again since fails the whole request (all such
/// ids are named); ids of messages already settled count as none.
pub(super) fn current_positions(state: &State, ack_ids: &[AckId]) -> EngineResult<Vec<Position>> {
    let mut current = Vec::new();
    let mut expired = Vec::new();
    for (index, id) in ack_ids.iter().enumerate() {
        let read = state.progress.frontier.is_past(&id.position);
        match state.pending.standing(&id.position, id.deliveries, read) {
            Standing::Current => current.push(id.position.clone()),
            Standing::Done => {}
            Standing::Superseded => expired.push(index),
            Standing::Unknown => {
                return Err(EngineError::BadAckId {
                    index,
                    problem: "names no message this consumer delivered",
                })
            }
        }
    }
    if !expired.is_empty() {
        return Err(EngineError::AckExpired {
            indexes: expired,
            ids: Vec::new(),
        });
    }
    Ok(current)
}

/// Applies `action` to each position; returns the writes to queue, how
/// many messages it affected, and for an extend the new deadline.
fn apply(
    state: &mut State,
    positions: Vec<Position>,
    action: Settle,
    now: u64,
) -> (StateWrites, usize, Option<u64>) {
    let mut changes = StateWrites {
        progress: true,
        ..Default::default()
    };
    let mut affected = 0;
    let mut deadline = None;
    for position in positions {
        let done = match action {
            Settle::Ack => state.pending.remove(&position).is_some().then(|| {
                state.progress.acked += 1;
            }),
            Settle::Nack { delay_ms } => state.pending.get(&position).is_some().then(|| {
                state.pending.nack(&position, now, delay_ms);
                state.progress.nacked += 1;
            }),
            // Handled by `reject` before anything here.
            Settle::Reject => None,
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
    (changes, affected, deadline)
}

impl Consumers {
    /// Gives back every delivery in flight, due at once. For a consumer
    /// with one worker of its own (a sink's) that starts again: what its
    /// earlier run held will never be settled, and waiting out `ack_wait`
    /// would only hold the sink up.
    pub async fn release_in_flight(&self, basin: &str, name: &str) -> EngineResult<usize> {
        let handle = self.consumer(basin, name).await?;
        let mut state = handle.state.lock().await;
        state.check_live(name)?;
        let held: Vec<Position> = state
            .pending
            .positions()
            .filter(|p| state.pending.get(p).is_some_and(|e| e.in_flight))
            .cloned()
            .collect();
        if held.is_empty() {
            return Ok(0);
        }
        let now = now_ms();
        for position in &held {
            state.pending.nack(position, now, 0);
        }
        let count = held.len();
        let changes = StateWrites {
            positions: held,
            ..Default::default()
        };
        self.write_and_wake(&handle, state, changes).await?;
        Ok(count)
    }
}
