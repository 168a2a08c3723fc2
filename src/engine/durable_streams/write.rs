//! `POST`: appends, with the terms the protocol adds (producer, writer
//! sequence, close), which the stream's task checks.

use bytes::Bytes;

use super::layer::{DurableStream, DurableStreams};
use crate::engine::error::EngineResult;
use crate::engine::streams::terms::{AppendTerms, BatchLimits};
use crate::engine::streams::types::{AppendAck, AppendInput, AppendRecord};
use crate::storage::WriteBatch;

/// The most one record may hold: S2's record limit (1 MiB metered) less
/// the 8 bytes every record is metered for. Byte-mode appends are cut
/// into records of this size; a larger JSON message is refused.
pub const MAX_MESSAGE_BYTES: usize = 1024 * 1024 - 8;

/// The most records one append may hold: more than S2's 1000, as a JSON
/// batch of small messages may (the official client sends up to 1 MiB of
/// them at once).
pub const MAX_MESSAGES: usize = 100_000;

/// What one append may hold: [`MAX_MESSAGES`] records, each within S2's
/// limit; the bytes are bounded by the request body before they get here.
pub(super) const LIMITS: BatchLimits = BatchLimits {
    records: MAX_MESSAGES,
    bytes: 64 * 1024 * 1024,
};

impl DurableStreams {
    /// Appends `messages` to `stream` on `terms`: durable when this
    /// returns, or refused (`EngineError::AppendRefused`) with nothing
    /// applied.
    pub async fn append(
        &self,
        stream: &DurableStream,
        messages: Vec<Bytes>,
        mut terms: AppendTerms,
    ) -> EngineResult<AppendAck> {
        self.core.check_writable(&stream.name)?;
        self.touch(stream.id, stream.settings.expiry);
        terms.limits = LIMITS;
        stream
            .handle
            .submit_with_terms(input(messages), terms, WriteBatch::default())
            .await?
            .await
    }
}

pub(super) fn input(messages: Vec<Bytes>) -> AppendInput {
    AppendInput {
        records: messages
            .into_iter()
            .map(|body| AppendRecord {
                headers: Vec::new(),
                body,
                timestamp: None,
            })
            .collect(),
        ..Default::default()
    }
}
