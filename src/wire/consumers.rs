//! The JSON shapes of consumers: a consumer with its state, deliveries,
//! positions, and the request bodies of the data operations.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use serde::Deserialize;
use serde_json::{json, Value};

use super::cursor::{decode_cursor, encode_cursor};
use super::json::{rfc3339, Format, Record};
use crate::engine::collections::Cursor;
use crate::engine::consumers::{AckId, ConsumerInfo, Delivery, Frontier, Payload, Position};
use crate::engine::error::{EngineError, EngineResult};
use crate::storage::StorageError;

/// A frontier as the API shows it: a seq num, or a records-feed cursor.
pub fn frontier_json(frontier: &Frontier) -> Value {
    match frontier {
        Frontier::Seq(seq) => json!({ "seq_num": seq }),
        Frontier::Change {
            updated_after,
            after_id,
        } => json!({
            "updated_after": updated_after,
            "after_id": after_id,
            "cursor": encode_cursor(&Cursor {
                updated_after: *updated_after,
                after_id: after_id.clone(),
                started_at: 0,
            }),
        }),
    }
}

fn position_json(position: &Position) -> Value {
    match position {
        Position::Seq(seq) => json!({ "seq_num": seq }),
        Position::Change(updated_at, id) => json!({ "updated_at": updated_at, "id": id }),
    }
}

/// A consumer: its config, and its `state` when got one by one.
pub fn consumer_json(info: &ConsumerInfo) -> Value {
    let mut out = json!({
        "name": info.name,
        "created_at": rfc3339(info.created_at),
        "config": info.config,
        "dead_letter_stream": info.dead_letter_stream,
    });
    if let Some(stats) = &info.stats {
        let p = &stats.progress;
        out["state"] = json!({
            "ack_floor": stats.ack_floor.as_ref().map(position_json),
            "frontier": frontier_json(&stats.frontier),
            "pending": stats.pending,
            "in_flight": stats.in_flight,
            "delivered": p.delivered,
            "redelivered": p.redelivered,
            "acked": p.acked,
            "nacked": p.nacked,
            "dead_lettered": p.dead_lettered,
            "dropped": p.dropped,
            "lag": stats.lag.map(|lag| lag.messages),
            "lag_seconds": stats.lag.map(|lag| lag.seconds),
        });
    }
    out
}

/// The opaque id a worker passes back to settle a delivery: base64url of
/// the JSON `[consumer id, delivery count, position]`.
pub fn encode_ack_id(id: &AckId) -> String {
    let json = serde_json::to_vec(&(id.consumer_id, id.deliveries, &id.position));
    URL_SAFE_NO_PAD.encode(json.unwrap_or_default())
}

pub fn decode_ack_id(text: &str) -> EngineResult<AckId> {
    let bad = || {
        EngineError::Invalid(format!(
            "malformed ack id `{text}`: pass it back exactly as received"
        ))
    };
    let bytes = URL_SAFE_NO_PAD.decode(text).map_err(|_| bad())?;
    let (consumer_id, deliveries, position): (u64, u32, Position) =
        serde_json::from_slice(&bytes).map_err(|_| bad())?;
    Ok(AckId {
        consumer_id,
        deliveries,
        position,
    })
}

/// A message handed to a worker, its record in `format`.
pub fn delivery_json(delivery: &Delivery, format: Format) -> EngineResult<Value> {
    let message = &delivery.message;
    let mut out = json!({
        "delivery_count": delivery.delivery_count,
        "timestamp": message.timestamp,
    });
    if let Some(ack_id) = &delivery.ack_id {
        out["ack_id"] = json!(encode_ack_id(ack_id));
    }
    match &message.payload {
        Payload::Record(record) => {
            out["seq_num"] = json!(record.seq_num);
            out["record"] = json!(Record::from_engine(record, format));
        }
        Payload::Event(event) => {
            out["seq_num"] = event.get("seq_num").cloned().unwrap_or(Value::Null);
            out["event"] = Value::Object(event.clone());
        }
        Payload::Doc(record) => {
            out["cursor"] = json!(encode_cursor(&Cursor {
                updated_after: record.updated_at,
                after_id: Some(record.id.clone()),
                started_at: 0,
            }));
            out["record"] = serde_json::from_slice(&record.json)
                .map_err(|e| StorageError::Corrupt(format!("a stored record is malformed: {e}")))?;
        }
    }
    Ok(out)
}

/// `POST /v1/consumers/{name}/receive`.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct ReceiveRequest {
    pub batch_size: Option<usize>,
    /// How long to wait for messages when there are none (at most 60 000).
    pub wait_ms: Option<u64>,
}

/// `POST /v1/consumers/{name}/ack`, `/nack` and `/extend`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SettleRequest {
    pub ack_ids: Vec<String>,
    /// For a nack: how long before the messages may be delivered again.
    #[serde(default)]
    pub delay_ms: Option<u64>,
}

impl SettleRequest {
    /// The ack ids, decoded.
    pub fn decoded_ids(&self) -> EngineResult<Vec<AckId>> {
        self.ack_ids
            .iter()
            .map(|text| decode_ack_id(text))
            .collect()
    }

    /// An engine error about some of this request's ack ids, told with the
    /// ids as the client wrote them.
    pub fn explain(&self, err: EngineError) -> EngineError {
        let text = |index: usize| self.ack_ids.get(index).cloned().unwrap_or_default();
        match err {
            EngineError::BadAckId { index, problem } => {
                EngineError::Invalid(format!("ack id `{}` {problem}", text(index)))
            }
            EngineError::AckExpired { indexes, .. } => EngineError::AckExpired {
                ids: indexes.iter().map(|&i| text(i)).collect(),
                indexes,
            },
            other => other,
        }
    }
}

/// `POST /v1/consumers/{name}/replay`: seq nums in the consumer's
/// dead-letter stream.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReplayRequest {
    pub dead_letters: Vec<u64>,
}

/// `POST /v1/consumers/{name}/commit`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CommitRequest {
    /// Streams and events feeds: the seq num after the last one processed.
    seq_num: Option<u64>,
    /// Records feeds: the `cursor` of the last message processed.
    cursor: Option<String>,
}

impl CommitRequest {
    /// The position the commit names.
    pub fn position(self) -> EngineResult<Frontier> {
        match (self.seq_num, self.cursor) {
            (Some(seq), None) => Ok(Frontier::Seq(seq)),
            (None, Some(token)) => {
                let cursor = decode_cursor(&token)?;
                Ok(Frontier::Change {
                    updated_after: cursor.updated_after,
                    after_id: cursor.after_id,
                })
            }
            _ => Err(EngineError::Invalid(
                "pass exactly one of `seq_num` and `cursor`".into(),
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ack_ids_round_trip_and_refuse_garbage() {
        for position in [Position::Seq(42), Position::Change(7, "u/1".into())] {
            let id = AckId {
                consumer_id: 3,
                deliveries: 2,
                position,
            };
            assert_eq!(decode_ack_id(&encode_ack_id(&id)).unwrap(), id);
        }
        assert!(decode_ack_id("not-an-ack-id").is_err());
        assert!(decode_ack_id(&URL_SAFE_NO_PAD.encode("[1, 2]")).is_err());
    }
}
