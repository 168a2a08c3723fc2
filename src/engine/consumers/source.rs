//! Reading a consumer's source: the next messages after its frontier, and
//! one message again by position (for redelivery).
//!
//! Sources are read exactly as other readers read them: a stream up to its
//! durable tail, a records feed below the collection's watermark. So a
//! consumer's frontier never passes a position where a message could still
//! appear, which is what lets it keep no more than a frontier.

use std::sync::Arc;

use bytes::Bytes;
use serde_json::Value;

use super::config::{Feed, Source};
use super::layer::Consumers;
use super::message::{Message, Payload};
use super::position::{Frontier, Position};
use super::state::ConsumerHandle;
use crate::engine::collections::{self, CollectionHandle, RawRecord};
use crate::engine::error::{EngineError, EngineResult};
use crate::engine::streams::keys;
use crate::engine::streams::streamer::StreamHandle;
use crate::engine::streams::tails::Visible;
use crate::engine::streams::types::{ReadLimits, SequencedRecord, MAX_BATCH_BYTES};
use crate::engine::streams::{count_read, scan_records, CreateIf};
use crate::storage::{Keyspace, StorageError};

/// A consumer's source, resolved to the running handles that serve it.
#[derive(Clone)]
pub enum SourceHandle {
    Stream(Arc<StreamHandle>),
    Events(Arc<StreamHandle>),
    Records(Arc<CollectionHandle>),
}

/// The header whose value orders a stream consumer's messages by key.
const KEY_HEADER: &[u8] = b"key";

impl SourceHandle {
    /// Resolves once the source may have something new (or soon after, for
    /// a records feed whose newest write waits for the clock).
    pub async fn changed(&self, mark: &mut SourceMark) {
        match (self, mark) {
            (SourceHandle::Stream(_) | SourceHandle::Events(_), SourceMark::Stream(rx)) => {
                if rx.changed().await.is_err() {
                    // The stream's task ended (deleted or stopped): the next
                    // read finds out why; don't spin meanwhile.
                    std::future::pending::<()>().await;
                }
            }
            (SourceHandle::Records(handle), SourceMark::Records(rx)) => {
                if handle.settling() {
                    tokio::time::sleep(std::time::Duration::from_millis(1)).await;
                } else if rx.changed().await.is_err() {
                    std::future::pending::<()>().await;
                }
            }
            _ => std::future::pending::<()>().await,
        }
    }

    /// Marks "now", so that [`Self::changed`] reports only later changes.
    /// Take it before reading, so no change slips in between.
    pub fn mark(&self) -> SourceMark {
        match self {
            SourceHandle::Stream(h) | SourceHandle::Events(h) => {
                let mut rx = h.subscribe();
                rx.borrow_and_update();
                SourceMark::Stream(rx)
            }
            SourceHandle::Records(h) => {
                let mut rx = h.written.subscribe();
                rx.borrow_and_update();
                SourceMark::Records(rx)
            }
        }
    }
}

pub enum SourceMark {
    Stream(tokio::sync::watch::Receiver<Visible>),
    Records(tokio::sync::watch::Receiver<u64>),
}

impl Consumers {
    /// The consumer's source, checked to be the one it was made on.
    pub(super) async fn consumer_source(
        &self,
        basin: &str,
        name: &str,
        handle: &ConsumerHandle,
    ) -> EngineResult<SourceHandle> {
        match self.resolve_source(basin, &handle.source).await {
            Ok((source, id)) if id == handle.source_id => Ok(source),
            Ok(_)
            | Err(EngineError::StreamNotFound(_))
            | Err(EngineError::CollectionNotFound(_)) => {
                Err(EngineError::ConsumerSourceGone(name.into()))
            }
            Err(err) => Err(err),
        }
    }

    /// The running handle of `source` and its id (stream id, or collection
    /// id for collection sources).
    pub(super) async fn resolve_source(
        &self,
        basin: &str,
        source: &Source,
    ) -> EngineResult<(SourceHandle, u64)> {
        Ok(match source {
            Source::Stream { stream } => {
                let handle = self.core.stream(basin, stream, CreateIf::Never).await?;
                let id = handle.id;
                (SourceHandle::Stream(handle), id)
            }
            Source::Collection { collection, feed } => {
                let handle = self.collections.handle(basin, collection).await?;
                let id = handle.id;
                match feed {
                    Feed::Events => (SourceHandle::Events(handle.events.clone()), id),
                    Feed::Records => (SourceHandle::Records(handle), id),
                }
            }
        })
    }

    /// Up to `limit` messages after `frontier`, and the frontier to read
    /// from (moved past trimmed records, if any).
    pub(super) async fn fetch(
        &self,
        source: &SourceHandle,
        frontier: &Frontier,
        started_at: u64,
        limit: usize,
    ) -> EngineResult<(Vec<Message>, Frontier)> {
        match (source, frontier) {
            (SourceHandle::Stream(h) | SourceHandle::Events(h), Frontier::Seq(next)) => {
                let visible = h.visible();
                let from = (*next).max(visible.trim_point);
                let limits = ReadLimits {
                    count: Some(limit as u64),
                    bytes: Some(MAX_BATCH_BYTES as u64),
                    until: None,
                };
                let scan = scan_records(
                    self.core.storage(),
                    h.id,
                    from,
                    visible.tail.seq_num,
                    limits,
                )
                .await?;
                // A consumer's read of its source that hands out records
                // counts as a unary read (one receive may look many times).
                let op = !scan.records.is_empty();
                count_read(&self.core.metrics, (&h.basin, &h.name), &scan.records, op);
                let events = matches!(source, SourceHandle::Events(_));
                let messages = scan
                    .records
                    .into_iter()
                    .map(|r| stream_message(r, events))
                    .collect::<EngineResult<_>>()?;
                Ok((messages, Frontier::Seq(from)))
            }
            (SourceHandle::Records(h), Frontier::Change { .. }) => {
                let cursor = frontier.to_cursor(started_at);
                let (records, _) = self.collections.updated_page(h, &cursor, limit)?;
                let messages = records.into_iter().map(doc_message).collect();
                Ok((messages, frontier.clone()))
            }
            _ => Err(mismatch()),
        }
    }

    /// The message at `position`, if the source still holds it: a stream
    /// record not yet trimmed, or a collection record not changed since.
    pub(super) async fn load(
        &self,
        source: &SourceHandle,
        position: &Position,
    ) -> EngineResult<Option<Message>> {
        match (source, position) {
            (SourceHandle::Stream(h) | SourceHandle::Events(h), Position::Seq(seq)) => {
                if *seq < h.visible().trim_point {
                    return Ok(None);
                }
                let Some(value) = self
                    .core
                    .storage()
                    .get(Keyspace::StreamRecords, &keys::record_key(h.id, *seq))?
                else {
                    return Ok(None);
                };
                let record = keys::decode_record(*seq, &value)?;
                let records = std::slice::from_ref(&record);
                count_read(&self.core.metrics, (&h.basin, &h.name), records, false);
                Ok(Some(stream_message(
                    record,
                    matches!(source, SourceHandle::Events(_)),
                )?))
            }
            (SourceHandle::Records(h), Position::Change(updated_at, id)) => {
                // The changes index holds each record once, at its latest
                // change: if it is still there, this is the latest version.
                let key = collections::keys::records_stream_key(h.id, *updated_at, id);
                Ok(self
                    .core
                    .storage()
                    .get(Keyspace::RecordsStream, &key)?
                    .map(|json| {
                        doc_message(RawRecord {
                            updated_at: *updated_at,
                            id: id.clone(),
                            json: Bytes::from(json),
                        })
                    }))
            }
            _ => Err(mismatch()),
        }
    }
}

fn mismatch() -> EngineError {
    EngineError::Storage(StorageError::Corrupt(
        "a consumer's position does not fit its source".into(),
    ))
}

fn stream_message(record: SequencedRecord, events: bool) -> EngineResult<Message> {
    let position = Position::Seq(record.seq_num);
    let timestamp = record.timestamp;
    if events {
        let event = collections::event_json(&record)?;
        let key = event.get("id").and_then(Value::as_str).map(str::to_owned);
        return Ok(Message {
            position,
            timestamp,
            key,
            payload: Payload::Event(event),
        });
    }
    let key = record
        .headers
        .iter()
        .find(|h| h.name.as_ref() == KEY_HEADER)
        .map(|h| String::from_utf8_lossy(&h.value).into_owned());
    Ok(Message {
        position,
        timestamp,
        key,
        payload: Payload::Record(record),
    })
}

fn doc_message(record: RawRecord) -> Message {
    Message {
        position: Position::Change(record.updated_at, record.id.clone()),
        timestamp: record.updated_at,
        key: Some(record.id.clone()),
        payload: Payload::Doc(record),
    }
}
