//! A message: what a consumer reads from its source and hands out.

use serde_json::{Map, Value};

use super::position::Position;
use crate::engine::collections::{Candidate, RawRecord};
use crate::engine::error::EngineResult;
use crate::engine::streams::types::SequencedRecord;

/// One message read from a source.
#[derive(Clone, Debug)]
pub struct Message {
    pub position: Position,
    /// The record's timestamp; for the records feed, its `updated_at`.
    pub timestamp: u64,
    /// The ordering key: the record id, or a stream record's `key` header.
    pub key: Option<String>,
    pub payload: Payload,
}

#[derive(Clone, Debug)]
pub enum Payload {
    /// A stream record, as a stream read returns it.
    Record(SequencedRecord),
    /// A change event, with its `seq_num` and `timestamp` filled in.
    Event(Map<String, Value>),
    /// The latest version of a collection record, as `/updated` returns it.
    Doc(RawRecord),
}

/// What a filter looks at in a message (owned: a record's data is
/// decoded for it).
pub struct FilterFields {
    event: Option<String>,
    id: String,
    data: Map<String, Value>,
    changes: Option<Map<String, Value>>,
}

impl FilterFields {
    pub fn candidate(&self) -> Candidate<'_> {
        Candidate {
            event: self.event.as_deref(),
            id: &self.id,
            data: &self.data,
            changes: self.changes.as_ref(),
        }
    }
}

impl Message {
    /// The event type and changes (events feed), record id and data, for
    /// filters.
    pub fn filter_fields(&self) -> EngineResult<FilterFields> {
        let object = |event: &Map<String, Value>, key: &str| {
            event.get(key).and_then(Value::as_object).cloned()
        };
        match &self.payload {
            Payload::Event(event) => Ok(FilterFields {
                event: event
                    .get("event")
                    .and_then(Value::as_str)
                    .map(str::to_owned),
                id: event
                    .get("id")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_owned(),
                data: object(event, "data").unwrap_or_default(),
                changes: object(event, "changes"),
            }),
            Payload::Doc(record) => {
                let view = record.view()?;
                Ok(FilterFields {
                    event: None,
                    id: view.id,
                    data: view.data,
                    changes: None,
                })
            }
            Payload::Record(_) => Ok(FilterFields {
                event: None,
                id: String::new(),
                data: Map::new(),
                changes: None,
            }),
        }
    }
}
