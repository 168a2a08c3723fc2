//! Replaying dead letters: a message that went to the consumer's
//! dead-letter stream after `max_deliver` attempts becomes pending again,
//! due at once, with its attempts counted from zero, so that workers get
//! it again once whatever failed it is fixed.
//!
//! A dead letter names the message by its position in the source (its
//! `position` header), so replaying reads the message from the source
//! again: one trimmed since, or a collection record changed since (the
//! records feed delivers the latest version, under a new position), is
//! gone and is reported so. The dead letter itself stays in its stream:
//! that stream is a log of what failed.

use super::config::{dead_letter_stream, AckPolicy};
use super::layer::Consumers;
use super::pending::Entry;
use super::position::Position;
use super::state::StateWrites;
use crate::engine::error::{EngineError, EngineResult};
use crate::engine::streams::keys;
use crate::engine::streams::types::now_ms;
use crate::engine::streams::CreateIf;
use crate::storage::Keyspace;

/// At most this many dead letters per request.
pub const MAX_REPLAY: usize = 1000;

/// What a replay did with each dead letter asked for.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Replayed {
    /// Pending again.
    pub replayed: Vec<u64>,
    /// Pending already (replayed before, and not yet acked).
    pub already_pending: Vec<u64>,
    /// Its message is no longer in the source, or the dead letter is not
    /// in the stream (trimmed, never written, or another consumer's).
    pub gone: Vec<u64>,
}

impl Consumers {
    /// Makes the dead letters at `seq_nums` (in the consumer's dead-letter
    /// stream) pending again.
    pub async fn replay(
        &self,
        basin: &str,
        name: &str,
        seq_nums: &[u64],
    ) -> EngineResult<Replayed> {
        if seq_nums.is_empty() || seq_nums.len() > MAX_REPLAY {
            return Err(EngineError::Invalid(format!(
                "dead_letters must name 1 to {MAX_REPLAY} seq nums"
            )));
        }
        let handle = self.consumer(basin, name).await?;
        if handle.state.lock().await.config.ack_policy != AckPolicy::Explicit {
            return Err(EngineError::Invalid(
                "this consumer has ack_policy \"cursor\": it keeps no dead letters".into(),
            ));
        }
        let dead = self
            .core
            .stream(basin, &dead_letter_stream(name), CreateIf::Never)
            .await?;
        let source = self.consumer_source(basin, name, &handle).await?;
        let visible = dead.visible();
        let mut outcome = Replayed::default();
        let mut found = Vec::new();
        for &seq in seq_nums {
            let in_stream = (visible.trim_point..visible.tail.seq_num).contains(&seq);
            let value = match in_stream {
                true => self
                    .core
                    .storage()
                    .get(Keyspace::StreamRecords, &keys::record_key(dead.id, seq))?,
                false => None,
            };
            let position = value
                .map(|v| keys::decode_record(seq, &v))
                .transpose()?
                .and_then(|record| dead_letter_position(&record.headers, handle.id));
            let message = match position {
                Some(position) => self.load(&source, &position).await?,
                None => None,
            };
            match message {
                Some(message) => found.push((seq, message)),
                None => outcome.gone.push(seq),
            }
        }

        let mut state = handle.state.lock().await;
        state.check_live(name)?;
        let mut changes = StateWrites::default();
        let now = now_ms();
        for (seq, message) in found {
            if state.pending.get(&message.position).is_some() {
                outcome.already_pending.push(seq);
                continue;
            }
            let entry = Entry {
                deliveries: 0,
                in_flight: false,
                due_at: now,
                key: message.key.clone(),
            };
            state.pending.insert(message.position.clone(), entry);
            changes.positions.push(message.position);
            outcome.replayed.push(seq);
        }
        if changes.positions.is_empty() {
            return Ok(outcome);
        }
        self.write_and_wake(&handle, state, changes).await?;
        Ok(outcome)
    }
}

/// The source position a dead letter of consumer `consumer_id` names, from
/// the headers `receive.rs` gives it.
fn dead_letter_position(
    headers: &[crate::engine::streams::types::Header],
    consumer_id: u64,
) -> Option<Position> {
    let value = |name: &str| {
        headers
            .iter()
            .find(|h| h.name.as_ref() == name.as_bytes())
            .map(|h| h.value.clone())
    };
    let owner = value("consumer_id")?;
    if owner.as_ref() != consumer_id.to_string().as_bytes() {
        return None; // a consumer of the same name, deleted since
    }
    serde_json::from_slice(&value("position")?).ok()
}
