//! The counters behind `sizes.rs` that live beside the stream state:
//! the bytes purging removed (`Y{id}`), and the one-time count for
//! streams written before Rill counted (run as the core opens).

use std::ops::ControlFlow;

use super::keys::{self, StreamState};
use crate::engine::error::EngineResult;
use crate::storage::{prefix_end, Keyspace, Storage, WriteBatch};

/// The bytes purging has removed from stream `id` so far.
pub(super) fn purged_bytes(storage: &dyn Storage, id: u64) -> EngineResult<u64> {
    let value = storage.get(Keyspace::Meta, &keys::purged_bytes_key(id))?;
    Ok(value.and_then(|v| keys::read_u64(&v)).unwrap_or(0))
}

/// Adds to `batch` the write that counts `bytes` more purged from `id`.
pub(super) fn count_purged(
    storage: &dyn Storage,
    batch: &mut WriteBatch,
    id: u64,
    bytes: u64,
) -> EngineResult<()> {
    let total = purged_bytes(storage, id)? + bytes;
    batch.put(
        Keyspace::Meta,
        keys::purged_bytes_key(id),
        total.to_be_bytes().to_vec(),
    );
    Ok(())
}

/// Counts, once, the appended bytes of streams whose state was written
/// before Rill counted them, by summing the records they still hold (with
/// nothing purged yet, that is what they have appended as far as the
/// difference is concerned). Runs as the core opens, before any stream
/// task starts, and writes directly: nothing else writes yet.
pub(super) fn count_uncounted(storage: &dyn Storage) -> EngineResult<usize> {
    let prefix = keys::state_prefix();
    let mut uncounted = Vec::new();
    let mut corrupt = None;
    storage.scan(
        Keyspace::Meta,
        &prefix,
        &prefix_end(&prefix),
        &mut |key, value| {
            match (keys::state_id_from_key(key), keys::decode_json(value)) {
                (
                    Some(id),
                    Ok(
                        state @ StreamState {
                            appended_bytes: None,
                            ..
                        },
                    ),
                ) => uncounted.push((id, state)),
                (_, Err(err)) => corrupt = Some(err),
                _ => {}
            }
            ControlFlow::Continue(())
        },
    )?;
    if let Some(err) = corrupt {
        return Err(err.into());
    }
    if uncounted.is_empty() {
        return Ok(0);
    }
    tracing::info!(
        streams = uncounted.len(),
        "counting the stored bytes of streams written by an earlier version (once)"
    );
    let mut batch = WriteBatch::default();
    for (id, mut state) in uncounted.iter().cloned() {
        let (start, end) = (keys::record_key(id, 0), prefix_end(&id.to_be_bytes()));
        let mut bytes = purged_bytes(storage, id)?;
        storage.scan(Keyspace::StreamRecords, &start, &end, &mut |_, value| {
            bytes += keys::stored_metered_size(value).unwrap_or(0);
            ControlFlow::Continue(())
        })?;
        state.appended_bytes = Some(bytes);
        batch.put(
            Keyspace::Meta,
            keys::state_key(id),
            keys::encode_json(&state),
        );
    }
    storage.write(batch)?;
    Ok(uncounted.len())
}
