//! Tombstone expiry: deleted records stay visible on the records stream
//! for the collection's retention, then upkeep removes them behind a
//! published horizon.

use std::ops::ControlFlow;

use serde_json::Map;

use super::keys::{self, Doc};
use super::layer::Collections;
use super::types::EXPIRY_CHUNK;
use super::types::{Horizon, RecordView};
use crate::engine::error::EngineResult;
use crate::engine::locks::lock;
use crate::engine::streams::types::now_ms;
use crate::storage::{Keyspace, WriteBatch};

/// A tombstone on the records stream: its key and the deleted record.
type Tombstone = (Vec<u8>, RecordView);

impl Collections {
    /// Removes tombstones older than the collection's retention, in bounded
    /// chunks under the write lock. Each chunk first publishes the new
    /// horizon (so a reader racing with the removal gets a 410, not a gap),
    /// then removes the tombstones, keeping a small stub of each record so
    /// that versions never restart. The horizon moves only past tombstones
    /// actually removed.
    pub(super) async fn expire_tombstones(&self, basin: &str, name: &str) -> EngineResult<()> {
        use std::sync::atomic::Ordering;
        let Some(meta) = self.collection_meta(basin, name)? else {
            return Ok(());
        };
        let handle = self.handle(basin, name).await?;
        if handle.id != meta.id {
            return Ok(());
        }
        let retention_ms = meta.config.tombstone_retention_secs.saturating_mul(1000);
        let cutoff = now_ms().saturating_sub(retention_ms);
        let scanned = handle.expiry_scanned.load(Ordering::Acquire);
        if cutoff <= scanned {
            return Ok(());
        }
        let _write = handle.write_lock.lock().await;
        // No new write can start now; let the ones committing finish, so
        // the documents in storage are current (else skip this pass).
        let mut waited = 0;
        while !lock(&handle.clock).in_flight.is_empty() {
            if waited >= 200 {
                return Ok(());
            }
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
            waited += 1;
        }
        let mut start = keys::records_stream_key(meta.id, scanned, "");
        let end = keys::records_stream_key(meta.id, cutoff, "");
        loop {
            let (doomed, last_key) = self.tombstone_chunk(&start, &end)?;
            let Some(last_removed) = doomed.last().map(|(_, v)| v.updated_at) else {
                break; // no more tombstones below the cutoff
            };
            let horizon = Horizon {
                below: lock(&handle.horizon).below.max(last_removed + 1),
                moved_at: now_ms(),
            };
            *lock(&handle.horizon) = horizon;
            let batch = removal_batch(meta.id, &doomed, &horizon);
            self.core.committer().commit(batch).await?;
            match last_key {
                Some(mut key) => {
                    key.push(0);
                    start = key;
                }
                None => break,
            }
        }
        handle.expiry_scanned.store(cutoff, Ordering::Release);
        Ok(())
    }

    /// Up to [`EXPIRY_CHUNK`] tombstones of the records stream in
    /// `[start, end)`, with their keys, and the last key the scan looked at.
    fn tombstone_chunk(
        &self,
        start: &[u8],
        end: &[u8],
    ) -> EngineResult<(Vec<Tombstone>, Option<Vec<u8>>)> {
        let mut doomed: Vec<Tombstone> = Vec::new();
        let mut last_key = None;
        let mut corrupt = None;
        self.core
            .storage()
            .scan(Keyspace::RecordsStream, start, end, &mut |key, value| {
                last_key = Some(key.to_vec());
                match keys::decode_json::<RecordView>(value) {
                    Ok(view) if view.deleted => doomed.push((key.to_vec(), view)),
                    Ok(_) => {}
                    Err(err) => corrupt = Some(err),
                }
                if doomed.len() >= EXPIRY_CHUNK || corrupt.is_some() {
                    ControlFlow::Break(())
                } else {
                    ControlFlow::Continue(())
                }
            })?;
        match corrupt {
            Some(err) => Err(err.into()),
            None => Ok((doomed, last_key)),
        }
    }
}

/// The writes that remove `doomed` tombstones of collection `id` and
/// persist the new `horizon`: each record keeps a stub with its version,
/// so a later create continues the version sequence.
fn removal_batch(id: u64, doomed: &[Tombstone], horizon: &Horizon) -> WriteBatch {
    let mut batch = WriteBatch::default();
    for (key, view) in doomed {
        batch.delete(Keyspace::RecordsStream, key.clone());
        let stub = Doc {
            data: Map::new(),
            version: view.version,
            created_at: view.created_at,
            updated_at: view.updated_at,
            deleted: true,
            expired: true,
        };
        batch.put(
            Keyspace::Docs,
            keys::doc_key(id, &view.id),
            keys::encode_json(&stub),
        );
    }
    batch.put(
        Keyspace::Meta,
        keys::tombstone_horizon_key(id),
        keys::encode_json(horizon),
    );
    batch
}
