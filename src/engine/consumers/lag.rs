//! How far behind a consumer is: the messages from the first one it has
//! not finished with (the ack floor, or with none pending the frontier; for
//! the cursor policy, the committed position) to the end of its source,
//! and how long that first one has waited. Read from storage directly, and
//! not counted as reads: looking at a consumer is not consuming.

use std::ops::ControlFlow;

use super::position::{Frontier, Position};
use super::source::SourceHandle;
use crate::engine::collections::keys as collection_keys;
use crate::engine::error::EngineResult;
use crate::engine::streams::keys;
use crate::storage::{Keyspace, Storage};

use super::state::{Lag, MAX_COUNTED_LAG};

/// The lag of a consumer whose first unfinished message is at `first` (an
/// ack floor), or else at its `frontier`.
pub(super) fn lag(
    storage: &dyn Storage,
    source: &SourceHandle,
    first: Option<&Position>,
    frontier: &Frontier,
    now_ms: u64,
) -> EngineResult<Lag> {
    let age = |timestamp: u64| now_ms.saturating_sub(timestamp) as f64 / 1000.0;
    match source {
        SourceHandle::Stream(h) | SourceHandle::Events(h) => {
            let from = match (first, frontier) {
                (Some(Position::Seq(seq)), _) | (None, Frontier::Seq(seq)) => *seq,
                _ => return Ok(Lag::default()),
            };
            let visible = h.visible();
            let from = from.max(visible.trim_point);
            let tail = visible.tail.seq_num;
            if from >= tail {
                return Ok(Lag::default());
            }
            // The first record there is: purging may have removed `from`
            // since the trim point was read.
            let mut first = None;
            storage.scan(
                Keyspace::StreamRecords,
                &keys::record_key(h.id, from),
                &keys::record_key(h.id, tail),
                &mut |key, value| {
                    if let Some(seq) = keys::parse_record_key(key) {
                        first = Some(keys::decode_record(seq, value));
                    }
                    ControlFlow::Break(())
                },
            )?;
            let seconds = first.transpose()?.map_or(0.0, |r| age(r.timestamp));
            Ok(Lag {
                messages: tail - from,
                seconds,
            })
        }
        SourceHandle::Records(h) => {
            let start = match (first, frontier) {
                (Some(Position::Change(updated_at, id)), _) => {
                    collection_keys::records_stream_key(h.id, *updated_at, id)
                }
                (
                    None,
                    Frontier::Change {
                        updated_after,
                        after_id,
                    },
                ) => match after_id {
                    Some(id) => {
                        let mut key = collection_keys::records_stream_key(h.id, *updated_after, id);
                        key.push(0); // strictly after this id
                        key
                    }
                    None => match updated_after.checked_add(1) {
                        Some(t) => collection_keys::records_stream_key(h.id, t, ""),
                        None => return Ok(Lag::default()),
                    },
                },
                _ => return Ok(Lag::default()),
            };
            // Only what is final: what a consumer could be handed now.
            let end = collection_keys::records_stream_key(h.id, h.watermark(), "");
            if start >= end {
                return Ok(Lag::default());
            }
            let mut lag = Lag::default();
            storage.scan(Keyspace::RecordsStream, &start, &end, &mut |key, _| {
                if lag.messages == 0 {
                    if let Some((updated_at, _)) = collection_keys::parse_records_stream_key(key) {
                        lag.seconds = age(updated_at);
                    }
                }
                lag.messages += 1;
                if lag.messages >= MAX_COUNTED_LAG {
                    ControlFlow::Break(())
                } else {
                    ControlFlow::Continue(())
                }
            })?;
            Ok(lag)
        }
    }
}
