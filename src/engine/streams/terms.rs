//! What an append may ask of its stream beyond S2's conditions: that an
//! idempotent producer's sequence admits it, that a writer sequence moves
//! forward, and that the stream be closed with it. Durable Streams asks
//! all three (`Producer-Id`/`-Epoch`/`-Seq`, `Stream-Seq`,
//! `Stream-Closed`); the stream's task checks them against the state it
//! owns, so the check and the append are one step, and what they change
//! is written in the append's own batch: a retry after a crash is still
//! recognised.
//!
//! A closed stream refuses every append, S2's included.

use std::collections::HashMap;
use std::sync::Arc;

use super::keys::{self, StreamState};
use super::types::{
    AppendRefusal, ProducerClaim, ProducerState, MAX_BATCH_BYTES, MAX_BATCH_RECORDS,
};
use crate::engine::error::EngineResult;
use crate::storage::{Keyspace, Storage, WriteBatch};

/// How much one append may hold.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BatchLimits {
    pub records: usize,
    /// Metered bytes.
    pub bytes: usize,
}

impl Default for BatchLimits {
    /// S2's.
    fn default() -> Self {
        Self {
            records: MAX_BATCH_RECORDS,
            bytes: MAX_BATCH_BYTES,
        }
    }
}

#[derive(Clone, Debug, Default)]
pub struct AppendTerms {
    pub producer: Option<ProducerClaim>,
    /// Must be bytewise greater than the last one the stream took.
    pub writer_seq: Option<String>,
    /// Close the stream with this append; with no records, close only.
    pub close: bool,
    pub limits: BatchLimits,
}

/// Producers' places in one stream, read from storage on first use and
/// kept as assigned (ahead of what is durable) by the stream's task.
pub(super) struct Producers {
    stream_id: u64,
    storage: Arc<dyn Storage>,
    known: HashMap<String, ProducerState>,
}

/// Producers a task keeps in memory before it forgets them (see
/// [`Producers::is_full`]).
const PRODUCERS_KEPT: usize = 10_000;

impl Producers {
    pub(super) fn new(stream_id: u64, storage: Arc<dyn Storage>) -> Self {
        Self {
            stream_id,
            storage,
            known: HashMap::new(),
        }
    }

    pub(super) fn get(&mut self, producer: &str) -> EngineResult<Option<ProducerState>> {
        if let Some(state) = self.known.get(producer) {
            return Ok(Some(*state));
        }
        let key = keys::producer_key(self.stream_id, producer);
        let Some(bytes) = self.storage.get(Keyspace::Meta, &key)? else {
            return Ok(None);
        };
        let state: ProducerState = keys::decode_json(&bytes)?;
        self.known.insert(producer.to_string(), state);
        Ok(Some(state))
    }

    /// Takes the producer's new place, and adds its write to `batch`.
    pub(super) fn set(&mut self, producer: &str, state: ProducerState, batch: &mut WriteBatch) {
        batch.put(
            Keyspace::Meta,
            keys::producer_key(self.stream_id, producer),
            keys::encode_json(&state),
        );
        self.known.insert(producer.to_string(), state);
    }

    /// Whether the task should forget what it knows. It may only once all
    /// it assigned is durable, since storage is then read again: the task
    /// waits for that, then calls [`Self::forget`].
    pub(super) fn is_full(&self) -> bool {
        self.known.len() >= PRODUCERS_KEPT
    }

    pub(super) fn forget(&mut self) {
        self.known.clear();
    }
}

/// Checks `terms` against the stream's assigned state and, for a producer
/// claim, the producer's `current` place. Returns the producer's place
/// after the append, to be written with it.
pub(super) fn admit(
    state: &StreamState,
    terms: &AppendTerms,
    current: Option<ProducerState>,
    has_records: bool,
) -> Result<Option<ProducerState>, AppendRefusal> {
    let tail = state.next_seq_num;
    if let Some(closure) = &state.closed {
        if terms.producer.is_some() && closure.by == terms.producer {
            let claim = terms.producer.as_ref().map_or((0, 0), |c| (c.epoch, c.seq));
            return Err(AppendRefusal::Duplicate {
                epoch: claim.0,
                seq: claim.1,
                tail,
                closed: true,
            });
        }
        if terms.close && !has_records && terms.producer.is_none() {
            return Err(AppendRefusal::AlreadyClosed { tail });
        }
        return Err(AppendRefusal::Closed { tail });
    }
    let next = match &terms.producer {
        None => None,
        Some(claim) => Some(next_producer_state(claim, current, state)?),
    };
    if let (Some(given), Some(last)) = (&terms.writer_seq, &state.writer_seq) {
        if given.as_bytes() <= last.as_bytes() {
            return Err(AppendRefusal::WriterSeqRegression { last: last.clone() });
        }
    }
    Ok(next)
}

/// Durable Streams' producer rules (§5.2.1): epochs only move forward and
/// begin at seq 0; within one, seqs follow one another, and one already
/// seen is a duplicate.
fn next_producer_state(
    claim: &ProducerClaim,
    current: Option<ProducerState>,
    state: &StreamState,
) -> Result<ProducerState, AppendRefusal> {
    let accepted = ProducerState {
        epoch: claim.epoch,
        seq: claim.seq,
    };
    let Some(current) = current else {
        return if claim.seq == 0 {
            Ok(accepted)
        } else {
            Err(AppendRefusal::SeqGap {
                expected: 0,
                received: claim.seq,
            })
        };
    };
    if claim.epoch < current.epoch {
        return Err(AppendRefusal::StaleEpoch {
            current: current.epoch,
        });
    }
    if claim.epoch > current.epoch {
        return if claim.seq == 0 {
            Ok(accepted)
        } else {
            Err(AppendRefusal::NewEpochNotAtZero)
        };
    }
    if claim.seq <= current.seq {
        return Err(AppendRefusal::Duplicate {
            epoch: current.epoch,
            seq: current.seq,
            tail: state.next_seq_num,
            closed: false,
        });
    }
    if claim.seq == current.seq + 1 {
        return Ok(accepted);
    }
    Err(AppendRefusal::SeqGap {
        expected: current.seq + 1,
        received: claim.seq,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::streams::types::Closure;

    fn claim(epoch: u64, seq: u64) -> AppendTerms {
        AppendTerms {
            producer: Some(ProducerClaim {
                id: "p".into(),
                epoch,
                seq,
            }),
            ..Default::default()
        }
    }

    fn at(epoch: u64, seq: u64) -> Option<ProducerState> {
        Some(ProducerState { epoch, seq })
    }

    #[test]
    fn producers_follow_the_protocol_table() {
        let state = StreamState {
            next_seq_num: 7,
            ..Default::default()
        };
        let check = |terms: AppendTerms, current| admit(&state, &terms, current, true);
        // A new producer starts at seq 0, in any epoch.
        assert_eq!(check(claim(0, 0), None), Ok(at(0, 0)));
        assert_eq!(check(claim(3, 0), None), Ok(at(3, 0)));
        assert_eq!(
            check(claim(0, 2), None),
            Err(AppendRefusal::SeqGap {
                expected: 0,
                received: 2
            })
        );
        // Within an epoch: next, duplicate, gap.
        assert_eq!(check(claim(1, 5), at(1, 4)), Ok(at(1, 5)));
        let duplicate = AppendRefusal::Duplicate {
            epoch: 1,
            seq: 4,
            tail: 7,
            closed: false,
        };
        assert_eq!(check(claim(1, 4), at(1, 4)), Err(duplicate.clone()));
        assert_eq!(check(claim(1, 0), at(1, 4)), Err(duplicate));
        assert_eq!(
            check(claim(1, 6), at(1, 4)),
            Err(AppendRefusal::SeqGap {
                expected: 5,
                received: 6
            })
        );
        // Epochs: older fenced, newer from 0 only.
        assert_eq!(
            check(claim(0, 9), at(1, 4)),
            Err(AppendRefusal::StaleEpoch { current: 1 })
        );
        assert_eq!(check(claim(2, 0), at(1, 4)), Ok(at(2, 0)));
        assert_eq!(
            check(claim(2, 1), at(1, 4)),
            Err(AppendRefusal::NewEpochNotAtZero)
        );
    }

    #[test]
    fn a_closed_stream_takes_nothing_but_the_retry_of_its_close() {
        let closing = claim(0, 3);
        let state = StreamState {
            next_seq_num: 4,
            closed: Some(Closure {
                by: closing.producer.clone(),
            }),
            ..Default::default()
        };
        assert_eq!(
            admit(&state, &closing, at(0, 3), true),
            Err(AppendRefusal::Duplicate {
                epoch: 0,
                seq: 3,
                tail: 4,
                closed: true
            })
        );
        assert_eq!(
            admit(&state, &claim(0, 4), at(0, 3), true),
            Err(AppendRefusal::Closed { tail: 4 })
        );
        let close_only = AppendTerms {
            close: true,
            ..Default::default()
        };
        assert_eq!(
            admit(&state, &close_only, None, false),
            Err(AppendRefusal::AlreadyClosed { tail: 4 })
        );
        assert_eq!(
            admit(&state, &AppendTerms::default(), None, true),
            Err(AppendRefusal::Closed { tail: 4 })
        );
    }

    #[test]
    fn writer_sequences_move_forward_bytewise() {
        let state = StreamState {
            writer_seq: Some("b".into()),
            ..Default::default()
        };
        let with = |seq: &str| AppendTerms {
            writer_seq: Some(seq.into()),
            ..Default::default()
        };
        assert_eq!(admit(&state, &with("ba"), None, true), Ok(None));
        for stale in ["b", "a", "B"] {
            assert_eq!(
                admit(&state, &with(stale), None, true),
                Err(AppendRefusal::WriterSeqRegression { last: "b".into() })
            );
        }
        // A retried producer append is a duplicate before its writer
        // sequence is looked at.
        let retry = AppendTerms {
            writer_seq: Some("b".into()),
            ..claim(0, 1)
        };
        assert!(matches!(
            admit(&state, &retry, at(0, 1), true),
            Err(AppendRefusal::Duplicate { .. })
        ));
    }
}
