//! Writes: point reads, and atomic batches of upserts and deletes whose
//! change events go to the events stream in the same atomic batch.

use std::collections::HashMap;

use bytes::Bytes;
use serde_json::{Map, Value};

use super::handle::{CollectionHandle, PendingWrite, PreparedWrite};
use super::keys::{self, Doc};
use super::layer::Collections;
use super::types::{Event, EventKind, RecordView, WriteOp};
use super::types::{MAX_RECORD_BYTES, MAX_RECORD_ID_BYTES, MAX_WRITE_OPS};
use crate::engine::error::{EngineError, EngineResult};
use crate::engine::locks::lock;
use crate::engine::streams::types::{AppendInput, AppendRecord, Header, MAX_BATCH_BYTES};
use crate::storage::{Keyspace, WriteBatch};

impl Collections {
    pub async fn get_record(
        &self,
        basin: &str,
        collection: &str,
        id: &str,
    ) -> EngineResult<RecordView> {
        let handle = self.handle(basin, collection).await?;
        match self
            .core
            .storage()
            .get(Keyspace::Docs, &keys::doc_key(handle.id, id))?
        {
            Some(bytes) => {
                let doc: Doc = keys::decode_json(&bytes)?;
                if doc.expired {
                    return Err(EngineError::RecordNotFound(id.into()));
                }
                Ok(doc.view(collection, id))
            }
            None => Err(EngineError::RecordNotFound(id.into())),
        }
    }

    /// Applies `ops` atomically: all of them, with their events, or none.
    /// Returns the resulting record for each op, in order.
    pub async fn write_records(
        &self,
        basin: &str,
        collection: &str,
        ops: Vec<WriteOp>,
    ) -> EngineResult<Vec<RecordView>> {
        self.write_records_with(basin, collection, ops, WriteBatch::default())
            .await
    }

    /// [`Self::write_records`], with `also` written in the same atomic
    /// batch (a source's cursor beside the changes it covers), even when
    /// the ops change nothing or are none.
    ///
    /// With `also`, the ops are compared with durable documents only: it
    /// waits for the writes in flight first. Were they compared with a
    /// pending write's documents and found unchanged, `also` would be
    /// committed on its own and could become durable before that write,
    /// which a crash could then lose, with `also` saying it was applied.
    pub async fn write_records_with(
        &self,
        basin: &str,
        collection: &str,
        ops: Vec<WriteOp>,
        also: WriteBatch,
    ) -> EngineResult<Vec<RecordView>> {
        // No ops is a write of `also` alone.
        if !ops.is_empty() || also.is_empty() {
            validate_ops(&ops)?;
        }
        let handle = self.handle(basin, collection).await?;
        let write = handle.write_lock.lock().await;
        if !also.is_empty() {
            // No write is queued while the lock is held: the pending ones
            // only finish (durable, or failed and dropped).
            while !lock(&handle.pending).is_empty() {
                tokio::time::sleep(std::time::Duration::from_millis(1)).await;
            }
            if ops.is_empty() {
                self.core.committer().commit(also).await?;
                return Ok(Vec::new());
            }
        }

        let current = self.current_docs(&handle, &ops)?;

        // In flight from the moment it has a time, so readers' watermark
        // stays below it until it is durable (or, dropped, until it is not
        // going to happen).
        let mut guard = PendingWrite::begin(&handle);
        let prepared = self.prepare_write(&handle, ops, current, guard.updated_at)?;
        let Some((input, mut extra, written)) = prepared.commit else {
            // Nothing changed: answered all the same, and counted so.
            if !also.is_empty() {
                self.core.committer().commit(also).await?;
            }
            self.count_write(basin, 0);
            return Ok(prepared.views);
        };
        extra.extend(also);
        // One event per record the write changed.
        let changed = input.records.len() as u64;
        guard.hold_docs(written);
        let ack = handle.events.submit_with(input, extra).await?;
        // The next write may be prepared while this one commits: it reads
        // the pending documents, and its events queue behind these.
        drop(write);
        // The write is queued and will commit (or fail) whatever the caller
        // does now, so its bookkeeping must not hang on the caller's future:
        // it is released by a task of its own once the write's fate is known.
        let finish = tokio::spawn(async move {
            let result = ack.await;
            drop(guard);
            if result.is_ok() {
                handle.written.send_modify(|n| *n += 1);
            }
            result
        });
        match finish.await {
            Ok(result) => result.map(|_| {
                self.count_write(basin, changed);
                prepared.views
            }),
            Err(err) => std::panic::resume_unwind(err.into_panic()),
        }
    }

    fn count_write(&self, basin: &str, changed: u64) {
        let metrics = &self.core.metrics.collections;
        metrics.writes.with_label_values(&[basin]).inc();
        let records = metrics.written_records.with_label_values(&[basin]);
        records.inc_by(changed);
    }

    /// The current version of each record `ops` touch (a pending write's
    /// first, then storage), with the ops' conditions checked against them.
    /// The caller holds the write lock.
    fn current_docs(
        &self,
        handle: &CollectionHandle,
        ops: &[WriteOp],
    ) -> EngineResult<HashMap<String, Option<Doc>>> {
        let mut current: HashMap<String, Option<Doc>> = HashMap::new();
        for op in ops {
            let pending = lock(&handle.pending)
                .get(op.id())
                .map(|(doc, _)| doc.clone());
            let doc = match pending {
                Some(doc) => Some(doc),
                None => match self
                    .core
                    .storage()
                    .get(Keyspace::Docs, &keys::doc_key(handle.id, op.id()))?
                {
                    Some(bytes) => Some(keys::decode_json::<Doc>(&bytes)?),
                    None => None,
                },
            };
            let (expected, is_delete) = match op {
                WriteOp::Upsert {
                    expected_version, ..
                } => (*expected_version, false),
                WriteOp::Delete {
                    expected_version, ..
                } => (*expected_version, true),
            };
            let live = doc.as_ref().filter(|d| !d.deleted);
            if is_delete && live.is_none() {
                return Err(EngineError::RecordNotFound(op.id().into()));
            }
            if let Some(expected) = expected {
                // A deleted record counts as absent: version 0.
                let actual = live.map_or(0, |d| d.version);
                if expected != actual {
                    return Err(EngineError::VersionMismatch {
                        id: op.id().into(),
                        expected,
                        actual,
                    });
                }
            }
            current.insert(op.id().to_string(), doc);
        }
        Ok(current)
    }

    /// Builds one write: the records to return, and (unless nothing
    /// changes) the events and the document and index updates to commit.
    fn prepare_write(
        &self,
        handle: &CollectionHandle,
        ops: Vec<WriteOp>,
        current: HashMap<String, Option<Doc>>,
        updated_at: u64,
    ) -> EngineResult<PreparedWrite> {
        let mut extra = WriteBatch::default();
        let mut events = Vec::new();
        let mut written = Vec::new();
        let mut views = Vec::with_capacity(ops.len());
        for op in ops {
            let id = op.id().to_string();
            let old = current.get(&id).cloned().flatten();
            let Some(NewVersion { doc, kind, changes }) =
                next_version(op, old.as_ref(), updated_at)?
            else {
                // Nothing changes: no new version, no event.
                if let Some(old) = old {
                    views.push(old.view(&handle.name, &id));
                }
                continue;
            };
            if let Some(old) = &old {
                extra.delete(
                    Keyspace::RecordsStream,
                    keys::records_stream_key(handle.id, old.updated_at, &id),
                );
            }
            written.push((id.clone(), doc.clone()));
            let view = doc.clone().view(&handle.name, &id);
            extra.put(
                Keyspace::RecordsStream,
                keys::records_stream_key(handle.id, updated_at, &id),
                keys::encode_json(&view),
            );
            extra.put(
                Keyspace::Docs,
                keys::doc_key(handle.id, &id),
                keys::encode_json(&doc),
            );
            events.push(Event {
                event: kind,
                id: id.clone(),
                data: doc.data.clone(),
                changes,
                version: doc.version,
                updated_at,
            });
            views.push(view);
        }
        if events.is_empty() {
            return Ok(PreparedWrite {
                views,
                commit: None,
            });
        }
        let input = events_input(&events)?;
        Ok(PreparedWrite {
            views,
            commit: Some((input, extra, written)),
        })
    }
}

/// What `op` makes of the record whose current version is `old`: the new
/// version, its event kind and, for an update, the previous values of the
/// fields it changes; `None` if it changes nothing.
fn next_version(
    op: WriteOp,
    old: Option<&Doc>,
    updated_at: u64,
) -> EngineResult<Option<NewVersion>> {
    let (doc, kind, changes) = match op {
        WriteOp::Upsert { data, .. } => match old {
            Some(old) if !old.deleted && old.data == data => return Ok(None),
            Some(old) if !old.deleted => {
                let changes = changed_fields(&old.data, &data);
                let doc = Doc {
                    data,
                    version: old.version + 1,
                    created_at: old.created_at,
                    updated_at,
                    deleted: false,
                    expired: false,
                };
                (doc, EventKind::Updated, Some(changes))
            }
            _ => {
                let doc = Doc {
                    data,
                    version: old.map_or(1, |o| o.version + 1),
                    created_at: updated_at,
                    updated_at,
                    deleted: false,
                    expired: false,
                };
                (doc, EventKind::Created, None)
            }
        },
        WriteOp::Delete { id, .. } => {
            let Some(old) = old else {
                return Err(EngineError::RecordNotFound(id));
            };
            let doc = Doc {
                data: old.data.clone(),
                version: old.version + 1,
                created_at: old.created_at,
                updated_at,
                deleted: true,
                expired: false,
            };
            (doc, EventKind::Deleted, None)
        }
    };
    Ok(Some(NewVersion { doc, kind, changes }))
}

/// A record's next version, as [`next_version`] makes it.
struct NewVersion {
    doc: Doc,
    kind: EventKind,
    /// For an update: the previous values of the fields it changes.
    changes: Option<Map<String, Value>>,
}

/// The events stream append that carries `events`: one record each, with
/// an `event` header naming its kind. All of a write's events go in one
/// append, so they must fit in one batch.
fn events_input(events: &[Event]) -> EngineResult<AppendInput> {
    let records: Vec<AppendRecord> = events
        .iter()
        .map(|event| AppendRecord {
            timestamp: None,
            headers: vec![Header {
                name: Bytes::from_static(b"event"),
                value: Bytes::from_static(event.event.as_str().as_bytes()),
            }],
            body: Bytes::from(keys::encode_json(event)),
        })
        .collect();
    let size: usize = records.iter().map(AppendRecord::metered_size).sum();
    if size > MAX_BATCH_BYTES {
        return Err(EngineError::Invalid(format!(
            "this write's change events come to {size} bytes; one write may produce at most \
             {MAX_BATCH_BYTES} (1 MiB): split it into smaller writes"
        )));
    }
    Ok(AppendInput {
        records,
        ..Default::default()
    })
}

/// The checks a write passes before it touches anything: op count, record
/// ids (valid, each once) and record sizes.
fn validate_ops(ops: &[WriteOp]) -> EngineResult<()> {
    if ops.is_empty() {
        return Err(EngineError::Invalid(
            "a write needs at least one upsert or delete".into(),
        ));
    }
    if ops.len() > MAX_WRITE_OPS {
        return Err(EngineError::Invalid(format!(
            "a write may hold at most {MAX_WRITE_OPS} upserts and deletes, got {}",
            ops.len()
        )));
    }
    let mut seen = std::collections::HashSet::new();
    for op in ops {
        validate_record_id(op.id())?;
        if !seen.insert(op.id()) {
            return Err(EngineError::Invalid(format!(
                "record `{}` appears twice in one write",
                op.id()
            )));
        }
        if let WriteOp::Upsert { data, id, .. } = op {
            let size = serde_json::to_vec(data).map_or(0, |v| v.len());
            if size > MAX_RECORD_BYTES {
                return Err(EngineError::Invalid(format!(
                    "record `{id}` is {size} bytes; at most {MAX_RECORD_BYTES} are allowed"
                )));
            }
        }
    }

    Ok(())
}

fn validate_record_id(id: &str) -> EngineResult<()> {
    if id.is_empty() || id.len() > MAX_RECORD_ID_BYTES {
        return Err(EngineError::Invalid(format!(
            "a record id must be 1 to {MAX_RECORD_ID_BYTES} bytes"
        )));
    }
    if id.chars().any(char::is_control) {
        return Err(EngineError::Invalid(
            "a record id may not contain control characters".into(),
        ));
    }
    Ok(())
}

/// The previous values of the top-level fields that differ.
fn changed_fields(old: &Map<String, Value>, new: &Map<String, Value>) -> Map<String, Value> {
    let mut changes = Map::new();
    for (key, old_value) in old {
        if new.get(key) != Some(old_value) {
            changes.insert(key.clone(), old_value.clone());
        }
    }
    for key in new.keys() {
        if !old.contains_key(key) {
            changes.insert(key.clone(), Value::Null);
        }
    }
    changes
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn changes_hold_previous_values() {
        let old = json!({"a": 1, "b": 2, "gone": true})
            .as_object()
            .unwrap()
            .clone();
        let new = json!({"a": 1, "b": 3, "added": "x"})
            .as_object()
            .unwrap()
            .clone();
        let changes = changed_fields(&old, &new);
        assert_eq!(
            Value::Object(changes),
            json!({"b": 2, "gone": true, "added": null})
        );
    }

    #[test]
    fn record_ids() {
        assert!(validate_record_id("user-1").is_ok());
        assert!(validate_record_id("").is_err());
        assert!(validate_record_id(&"x".repeat(513)).is_err());
        assert!(validate_record_id("a\nb").is_err());
    }
}
