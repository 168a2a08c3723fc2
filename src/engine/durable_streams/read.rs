//! `GET`: a chunk of records from an offset, waiting for one when asked
//! (long poll, SSE).

use std::time::Duration;

use tokio::time::Instant;

use super::layer::{DurableStream, DurableStreams};
use super::meta::BASIN;
use crate::engine::error::{EngineError, EngineResult};
use crate::engine::streams::tails::Visible;
use crate::engine::streams::types::{ReadLimits, SequencedRecord, MAX_BATCH_BYTES};
use crate::engine::streams::{count_read, scan_records};

/// Records per chunk, at most: a JSON stream of small messages answers
/// more than S2's 1000 per read; 1 MiB bounds the chunk anyway.
const CHUNK_RECORDS: u64 = 10_000;

/// One read's answer.
pub struct Chunk {
    /// From the offset asked for, in order, without a gap.
    pub records: Vec<SequencedRecord>,
    /// The offset after them.
    pub next: u64,
    /// The stream as of the read: its tail, trim point, whether closed.
    pub visible: Visible,
}

impl Chunk {
    /// The reader has everything there is.
    pub fn up_to_date(&self) -> bool {
        self.next >= self.visible.tail.seq_num
    }

    /// The reader has everything there will ever be.
    pub fn at_end(&self) -> bool {
        self.visible.closed && self.up_to_date()
    }
}

impl DurableStreams {
    /// Reads from `from` (at most the tail: the caller checks), waiting up
    /// to `wait` for records if there are none yet and the stream is
    /// open. Records below the trim point are gone: `CursorExpired`.
    pub async fn read(
        &self,
        stream: &DurableStream,
        from: u64,
        wait: Duration,
    ) -> EngineResult<Chunk> {
        let deadline = Instant::now() + wait;
        // Every read restarts a sliding TTL; and a stream with a live
        // reader waiting does not expire (§5.1).
        let expiry = stream.settings.expiry;
        self.touch(stream.id, expiry);
        let _live = (!wait.is_zero())
            .then(|| self.live_reader(stream.id, expiry))
            .flatten();
        let mut visible = stream.handle.subscribe();
        let mut closing = self.core.closing();
        loop {
            let now = *visible.borrow_and_update();
            if from < now.trim_point {
                return Err(EngineError::CursorExpired(now.trim_point));
            }
            if from < now.tail.seq_num {
                let limits = ReadLimits {
                    count: Some(CHUNK_RECORDS),
                    bytes: Some(MAX_BATCH_BYTES as u64),
                    until: None,
                };
                let scan = scan_records(
                    self.core.storage(),
                    stream.id,
                    from,
                    now.tail.seq_num,
                    limits,
                )
                .await?;
                if scan.records.is_empty() {
                    // Below the tail, yet nothing: the stream was deleted
                    // (or trimmed) and its records removed meanwhile.
                    let now = stream.visible();
                    if from < now.trim_point {
                        return Err(EngineError::CursorExpired(now.trim_point));
                    }
                    return Err(EngineError::StreamNotFound(stream.name.clone()));
                }
                count_read(
                    &self.core.metrics,
                    (BASIN, &stream.name),
                    &scan.records,
                    true,
                );
                let next = scan.records.last().map_or(from, |r| r.seq_num + 1);
                return Ok(Chunk {
                    records: scan.records,
                    next,
                    visible: now,
                });
            }
            if now.closed || Instant::now() >= deadline || *closing.borrow() {
                return Ok(Chunk {
                    records: Vec::new(),
                    next: from,
                    visible: now,
                });
            }
            tokio::select! {
                changed = visible.changed() => {
                    if changed.is_err() {
                        return Err(EngineError::StreamNotFound(stream.name.clone()));
                    }
                }
                _ = tokio::time::sleep_until(deadline) => {}
                _ = closing.changed() => {}
            }
        }
    }
}
