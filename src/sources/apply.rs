//! How a source writes what it took from its upstream: a batch of
//! changes (an id with its data, or `None` for a delete) becomes
//! collection writes, the source's cursor in the last of them.
//!
//! The same id twice keeps its last change; a delete of a record the
//! collection does not hold is dropped (it was deleted here already, or
//! never came). Changes too many or too large for one write go in
//! several, the cursor with the last: a crash between them makes the
//! source take them again, and what the first writes wrote then changes
//! nothing (each id is in one of them, with its final value).

use std::collections::HashMap;

use serde_json::{Map, Value};

use crate::engine::collections::{WriteOp, MAX_WRITE_OPS};
use crate::engine::error::EngineError;
use crate::engine::sources::{SourceCursor, SourceInfo};
use crate::engine::Engine;

/// What one collection write may hold, by a generous estimate of its
/// events' size (each carries the data, and an update the old values
/// too): half of what one write takes.
pub const CHUNK_BYTES: usize = crate::engine::streams::types::MAX_BATCH_BYTES / 2;

/// A record's id and its new data, or `None` when it is deleted.
pub type Change = (String, Option<Map<String, Value>>);

/// Writes `changes` to `collection` (one of the source's), and `cursor`
/// with the last write when there is one (alone if nothing is left to
/// write). Returns how many writes it took.
pub async fn write_changes(
    engine: &Engine,
    source: &SourceInfo,
    collection: &str,
    changes: Vec<Change>,
    cursor: Option<&SourceCursor>,
) -> Result<usize, String> {
    let ops = write_ops(engine, &source.basin, collection, changes).await?;
    let chunks = chunked(ops);
    let last = chunks.len() - 1;
    let mut writes = 0;
    for (at, chunk) in chunks.into_iter().enumerate() {
        let result = match (at == last, cursor) {
            (true, Some(cursor)) => {
                engine
                    .sources()
                    .apply(source, collection, chunk, cursor)
                    .await
            }
            _ if chunk.is_empty() => continue,
            _ => engine
                .collections()
                .write_records(&source.basin, collection, chunk)
                .await
                .map(drop),
        };
        result.map_err(|e| format!("writing to collection `{collection}`: {e}"))?;
        writes += 1;
    }
    Ok(writes)
}

/// How many bytes `op` is taken to add to a write (see [`CHUNK_BYTES`]).
pub fn op_bytes(op_id: &str, data: Option<&Map<String, Value>>) -> usize {
    match data {
        Some(data) => 2 * serde_json::to_vec(data).map_or(0, |d| d.len()) + op_id.len() + 256,
        None => 2 * op_id.len() + 256,
    }
}

/// The page's changes as collection writes: each id's last change, in the
/// order of those last changes, and no delete of a record not held here.
async fn write_ops(
    engine: &Engine,
    basin: &str,
    collection: &str,
    changes: Vec<Change>,
) -> Result<Vec<WriteOp>, String> {
    let mut last: HashMap<&str, usize> = HashMap::new();
    for (at, (id, _)) in changes.iter().enumerate() {
        last.insert(id, at);
    }
    let collections = engine.collections();
    let mut ops = Vec::with_capacity(last.len());
    for (at, (id, data)) in changes.iter().enumerate() {
        if last[id.as_str()] != at {
            continue;
        }
        match data {
            Some(data) => ops.push(WriteOp::Upsert {
                id: id.clone(),
                data: data.clone(),
                expected_version: None,
            }),
            None => match collections.get_record(basin, collection, id).await {
                Ok(record) if !record.deleted => ops.push(WriteOp::Delete {
                    id: id.clone(),
                    expected_version: None,
                }),
                Ok(_) | Err(EngineError::RecordNotFound(_)) => {}
                Err(err) => return Err(format!("reading collection `{collection}`: {err}")),
            },
        }
    }
    Ok(ops)
}

/// `ops` in writes of at most `MAX_WRITE_OPS` and about `CHUNK_BYTES`
/// each; always at least one (maybe empty: the cursor alone).
pub fn chunked(ops: Vec<WriteOp>) -> Vec<Vec<WriteOp>> {
    let size = |op: &WriteOp| match op {
        WriteOp::Upsert { id, data, .. } => op_bytes(id, Some(data)),
        WriteOp::Delete { id, .. } => op_bytes(id, None),
    };
    let mut chunks: Vec<Vec<WriteOp>> = vec![Vec::new()];
    let mut bytes = 0;
    for op in ops {
        let op_bytes = size(&op);
        let full = chunks.last().is_some_and(|c| {
            !c.is_empty() && (c.len() >= MAX_WRITE_OPS || bytes + op_bytes > CHUNK_BYTES)
        });
        if full {
            chunks.push(Vec::new());
            bytes = 0;
        }
        bytes += op_bytes;
        if let Some(chunk) = chunks.last_mut() {
            chunk.push(op);
        }
    }
    chunks
}

#[cfg(test)]
mod tests {
    use super::*;

    fn upsert(id: usize, bytes: usize) -> WriteOp {
        let mut data = Map::new();
        data.insert("v".into(), Value::String("x".repeat(bytes)));
        WriteOp::Upsert {
            id: format!("r{id}"),
            data,
            expected_version: None,
        }
    }

    #[test]
    fn pages_are_cut_into_writes_that_fit_in_order() {
        // Nothing to write is still one (empty) write: the cursor's.
        assert_eq!(chunked(Vec::new()).len(), 1);
        // By count: 2500 small ops in writes of at most MAX_WRITE_OPS.
        let chunks = chunked((0..2500).map(|i| upsert(i, 1)).collect());
        let sizes: Vec<usize> = chunks.iter().map(Vec::len).collect();
        assert_eq!(sizes, [MAX_WRITE_OPS, MAX_WRITE_OPS, 500]);
        // By bytes: records of 200 KiB go a few at a time, never none, and
        // every op is kept, in order.
        let chunks = chunked((0..10).map(|i| upsert(i, 200 * 1024)).collect());
        assert!(chunks.len() > 1 && chunks.iter().all(|c| !c.is_empty()));
        let ids: Vec<String> = chunks
            .iter()
            .flatten()
            .map(|op| match op {
                WriteOp::Upsert { id, .. } | WriteOp::Delete { id, .. } => id.clone(),
            })
            .collect();
        let wanted: Vec<String> = (0..10).map(|i| format!("r{i}")).collect();
        assert_eq!(ids, wanted);
    }
}
