//! Settling explicit-ack deliveries: ack, nack (deliver again after a
//! delay) and extend.

use super::ack_id::decode_ack_id;
use super::config::{self, AckPolicy};
use super::pending::Standing;
use super::state::{Settle, StateWrites};
use super::{Consumers, MAX_RECEIVE_BATCH};
use crate::engine::error::{EngineError, EngineResult};
use crate::engine::streams::types::now_ms;

impl Consumers {
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
        let mut changes = StateWrites {
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
            let durable = self.committer.barrier();
            drop(state);
            durable.await?;
            return Ok((0, deadline));
        }
        let durable = self.committer.queue(changes.batch(handle.id, &state));
        drop(state);
        durable.await?;
        handle.changed.send_modify(|n| *n += 1);
        Ok((affected, deadline))
    }
}
