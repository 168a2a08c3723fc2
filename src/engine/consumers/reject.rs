//! Rejecting deliveries: a worker that knows a message will never succeed
//! (it is malformed, say, or a webhook answered 400) sends it to the
//! dead-letter stream at once, instead of nacking it until `max_deliver`
//! runs out. The message leaves the pending set and its dead letter is
//! appended in one atomic batch, as `max_deliver` dead-letters it.

use super::config::dead_letter_stream;
use super::layer::Consumers;
use super::position::Position;
use super::receive::dead_letter;
use super::settle::{check_explicit, current_positions};
use super::state::{AckId, StateWrites};
use crate::engine::error::EngineResult;
use crate::engine::streams::types::{
    AppendInput, AppendRecord, MAX_BATCH_BYTES, MAX_BATCH_RECORDS,
};
use crate::engine::streams::CreateIf;

impl Consumers {
    /// Dead-letters the messages `ack_ids` name; returns how many (ids of
    /// messages already settled count as none). A message the source no
    /// longer holds is dropped, as a redelivery would drop it.
    pub(super) async fn reject(
        &self,
        basin: &str,
        name: &str,
        ack_ids: &[AckId],
    ) -> EngineResult<usize> {
        let handle = self.consumer_of_ids(basin, name, ack_ids).await?;
        let source = self.consumer_source(basin, name, &handle).await?;
        let dead_letters = self
            .core
            .stream(basin, &dead_letter_stream(name), CreateIf::Never)
            .await?;
        let mut state = handle.state.lock().await;
        state.check_live(name)?;
        check_explicit(&state)?;
        let current = current_positions(&state, ack_ids)?;

        // Read every message first: a failure here changes nothing.
        let mut found: Vec<(Position, Option<AppendRecord>)> = Vec::new();
        for position in current {
            let Some(entry) = state.pending.get(&position).cloned() else {
                continue;
            };
            let record = self
                .load(&source, &position)
                .await?
                .map(|message| dead_letter(handle.id, &message, entry.deliveries));
            found.push((position, record));
        }
        let rejected = found.len();
        if rejected == 0 {
            // Repeats of settled ids: answer once the first settling is
            // durable.
            let durable = self.core.committer().barrier();
            drop(state);
            durable.await?;
            return Ok(0);
        }

        // In appends that fit a batch, each with the state change it makes.
        for chunk in chunks(found) {
            let mut changes = StateWrites {
                progress: true,
                ..Default::default()
            };
            let mut records = Vec::new();
            for (position, record) in chunk {
                state.pending.remove(&position);
                match record {
                    Some(record) => {
                        state.progress.dead_lettered += 1;
                        records.push(record);
                    }
                    None => state.progress.dropped += 1,
                }
                changes.positions.push(position);
            }
            let batch = changes.batch(handle.id, &state);
            let written = if records.is_empty() {
                self.core.committer().queue(batch).await.map_err(Into::into)
            } else {
                let input = AppendInput {
                    records,
                    ..Default::default()
                };
                match dead_letters.submit_with(input, batch).await {
                    Ok(ack) => ack.await.map(|_| ()),
                    Err(err) => Err(err),
                }
            };
            if let Err(err) = written {
                // Memory is ahead of the disk: reload what is durable.
                self.retire(basin, name, &handle, &mut state).await;
                return Err(err);
            }
        }
        drop(state);
        handle.changed.send_modify(|n| *n += 1);
        Ok(rejected)
    }
}

/// Splits what to dead-letter into groups whose records fit one append.
fn chunks(
    found: Vec<(Position, Option<AppendRecord>)>,
) -> Vec<Vec<(Position, Option<AppendRecord>)>> {
    let mut out: Vec<Vec<_>> = vec![Vec::new()];
    let (mut count, mut bytes) = (0usize, 0usize);
    for (position, record) in found {
        let size = record.as_ref().map_or(0, AppendRecord::metered_size);
        let full = count + 1 > MAX_BATCH_RECORDS || bytes + size > MAX_BATCH_BYTES;
        if full && out.last().is_some_and(|c| !c.is_empty()) {
            out.push(Vec::new());
            (count, bytes) = (0, 0);
        }
        count += usize::from(record.is_some());
        bytes += size;
        if let Some(last) = out.last_mut() {
            last.push((position, record));
        }
    }
    out
}
