//! What every destination takes from a delivered message: its JSON (as a
//! consumer's message is shown), its position as bytes ordered as
//! positions are, and the names a sink is known by at its destination.

use ring::digest;
use serde_json::Value;

use crate::engine::consumers::{Delivery, Payload};
use crate::engine::sinks::SinkInfo;
use crate::engine::streams::token_index::hex;
use crate::wire::consumers::delivery_json;
use crate::wire::json::Format;

/// The message as a consumer's `receive` shows it, less what only a
/// consumer's client can use (its ack id). `None` if it cannot be written.
pub fn message_json(delivery: &Delivery, format: Format) -> Option<Value> {
    let mut message = delivery_json(delivery, format).ok()?;
    message.as_object_mut()?.remove("ack_id");
    Some(message)
}

/// The message's position, as bytes that sort as positions do (what a
/// destination that keeps the sink's position compares).
pub fn position_bytes(delivery: &Delivery) -> Vec<u8> {
    delivery.message.position.to_bytes()
}

/// [`position_bytes`] as hex, which sorts as the bytes do: for
/// destinations that keep text.
pub fn position_hex(delivery: &Delivery) -> String {
    hex(&position_bytes(delivery))
}

/// The sink as its destination knows it: basin, name and when it was made,
/// so that a sink deleted and made again under the same name starts
/// afresh rather than from the old one's position.
pub fn sink_identity(sink: &SinkInfo) -> String {
    format!("{}/{}/{}", sink.basin, sink.name, sink.created_at)
}

/// An id that is the same for every attempt at the same messages: a
/// digest of the sink and their positions.
pub fn batch_id(sink: &SinkInfo, batch: &[Delivery]) -> String {
    let mut context = digest::Context::new(&digest::SHA256);
    context.update(sink.name.as_bytes());
    for delivery in batch {
        context.update(b"\n");
        context.update(&position_bytes(delivery));
    }
    let digest = context.finish();
    format!("msg_{}", hex(&digest.as_ref()[..16]))
}

/// A collection change as destinations that keep records apply it: the
/// record's id, data (JSON text), version and `updated_at`, and whether
/// it deletes. Read from a records-feed record or a change event.
pub struct Change {
    pub id: String,
    pub data: String,
    pub version: u64,
    pub updated_at: u64,
    pub deleted: bool,
}

impl Change {
    /// `Err` says why the message is no change (a stream record, or
    /// malformed).
    pub fn of(delivery: &Delivery) -> Result<Self, String> {
        let (id, data, version, updated_at, deleted) = match &delivery.message.payload {
            Payload::Doc(record) => {
                let view = record.view().map_err(|e| e.to_string())?;
                (
                    view.id,
                    Value::Object(view.data),
                    view.version,
                    view.updated_at,
                    view.deleted,
                )
            }
            Payload::Event(event) => {
                let text = |key: &str| event.get(key).and_then(Value::as_str);
                let number = |key: &str| event.get(key).and_then(Value::as_u64);
                let (Some(id), Some(version), Some(updated_at)) =
                    (text("id"), number("version"), number("updated_at"))
                else {
                    return Err("a change event lacks its id, version or updated_at".into());
                };
                let data = event.get("data").cloned().unwrap_or(Value::Null);
                let deleted = text("event") == Some("deleted");
                (id.to_string(), data, version, updated_at, deleted)
            }
            Payload::Record(_) => return Err("a stream record is not a collection change".into()),
        };
        Ok(Self {
            id,
            data: data.to_string(),
            version,
            updated_at,
            deleted,
        })
    }
}

/// The last change per record id, in the order of their first appearance:
/// one statement may touch a row once, and the last change is the newest.
pub fn latest_per_id(changes: Vec<Change>) -> Vec<Change> {
    let mut index: std::collections::HashMap<String, usize> = Default::default();
    let mut out: Vec<Change> = Vec::with_capacity(changes.len());
    for change in changes {
        match index.get(&change.id) {
            Some(&at) if out[at].version <= change.version => out[at] = change,
            Some(_) => {}
            None => {
                index.insert(change.id.clone(), out.len());
                out.push(change);
            }
        }
    }
    out
}
