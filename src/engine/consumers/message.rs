//! A message: what a consumer reads from its source and hands out.

use serde_json::{Map, Value};

use super::position::Position;
use crate::engine::collections::RawRecord;
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

impl Message {
    /// The event type (events feed), record id and data, for filters.
    pub fn filter_fields(&self) -> EngineResult<(Option<String>, String, Map<String, Value>)> {
        match &self.payload {
            Payload::Event(event) => Ok((
                event
                    .get("event")
                    .and_then(Value::as_str)
                    .map(str::to_owned),
                event
                    .get("id")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_owned(),
                event
                    .get("data")
                    .and_then(Value::as_object)
                    .cloned()
                    .unwrap_or_default(),
            )),
            Payload::Doc(record) => {
                let view = record.view()?;
                Ok((None, view.id, view.data))
            }
            Payload::Record(_) => Ok((None, String::new(), Map::new())),
        }
    }
}
