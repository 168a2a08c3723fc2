//! Ack ids: what a worker passes back to settle a delivery.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;

use super::position::Position;
use crate::engine::error::{EngineError, EngineResult};

/// The id a worker passes back to ack a delivery: which consumer, which
/// message, which delivery of it.
pub(super) fn encode_ack_id(consumer_id: u64, deliveries: u32, position: &Position) -> String {
    URL_SAFE_NO_PAD
        .encode(serde_json::to_vec(&(consumer_id, deliveries, position)).unwrap_or_default())
}

pub(super) fn decode_ack_id(consumer_id: u64, text: &str) -> EngineResult<(u32, Position)> {
    let bad = || {
        EngineError::Invalid(format!(
            "malformed ack id `{text}`: pass it back exactly as received"
        ))
    };
    let bytes = URL_SAFE_NO_PAD.decode(text).map_err(|_| bad())?;
    let (id, deliveries, position): (u64, u32, Position) =
        serde_json::from_slice(&bytes).map_err(|_| bad())?;
    if id != consumer_id {
        return Err(EngineError::Invalid(format!(
            "ack id `{text}` belongs to another consumer"
        )));
    }
    Ok((deliveries, position))
}
