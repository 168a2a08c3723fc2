//! Cursor tokens: the opaque `cursor` that `/updated`, `/v1/updated` and
//! records-feed consumers hand out and take back, and the times a cursor
//! pair may be given in.
//!
//! A token is base64url (no padding) of a JSON array: `[updated_after,
//! after_id, started_at]` for one collection, `[updated_after,
//! [collection, id], started_at]` across collections. Clients treat it
//! as opaque; the layout is ours to change with a version prefix.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use serde_json::json;

use crate::engine::collections::{Cursor, UnifiedCursor};
use crate::engine::error::{EngineError, EngineResult};

pub fn encode_cursor(cursor: &Cursor) -> String {
    URL_SAFE_NO_PAD
        .encode(json!([cursor.updated_after, cursor.after_id, cursor.started_at]).to_string())
}

pub fn decode_cursor(text: &str) -> EngineResult<Cursor> {
    let (updated_after, after_id, started_at) = decode(text)?;
    Ok(Cursor {
        updated_after,
        after_id,
        started_at,
    })
}

pub fn encode_unified_cursor(cursor: &UnifiedCursor) -> String {
    URL_SAFE_NO_PAD
        .encode(json!([cursor.updated_after, cursor.after, cursor.started_at]).to_string())
}

pub fn decode_unified_cursor(text: &str) -> EngineResult<UnifiedCursor> {
    let (updated_after, after, started_at) = decode(text)?;
    Ok(UnifiedCursor {
        updated_after,
        after,
        started_at,
    })
}

fn decode<T: serde::de::DeserializeOwned>(text: &str) -> EngineResult<T> {
    let bad = || {
        EngineError::Invalid("malformed cursor: pass back a `cursor` exactly as returned".into())
    };
    let bytes = URL_SAFE_NO_PAD.decode(text).map_err(|_| bad())?;
    serde_json::from_slice(&bytes).map_err(|_| bad())
}

/// `updated_after` as a client may give it: epoch milliseconds, or an
/// RFC 3339 time.
pub fn parse_time(text: &str) -> EngineResult<u64> {
    if let Ok(ms) = text.parse::<u64>() {
        return Ok(ms);
    }
    let time = humantime::parse_rfc3339_weak(text).map_err(|_| {
        EngineError::Invalid(format!(
            "updated_after `{text}` is neither epoch milliseconds nor an RFC 3339 time"
        ))
    })?;
    let since_epoch = time
        .duration_since(std::time::UNIX_EPOCH)
        .map_err(|_| EngineError::Invalid("updated_after is before 1970".into()))?;
    Ok(since_epoch.as_millis() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_round_trip_and_refuse_garbage() {
        let cursor = Cursor {
            updated_after: 42,
            after_id: Some("a/b".into()),
            started_at: 7,
        };
        assert_eq!(decode_cursor(&encode_cursor(&cursor)).unwrap(), cursor);
        let unified = UnifiedCursor {
            updated_after: 42,
            after: Some(("users".into(), "u1".into())),
            started_at: 7,
        };
        assert_eq!(
            decode_unified_cursor(&encode_unified_cursor(&unified)).unwrap(),
            unified
        );
        assert!(decode_cursor("not a cursor!").is_err());
        assert!(decode_cursor(&encode_unified_cursor(&unified)).is_err());
    }

    #[test]
    fn times() {
        assert_eq!(parse_time("1000").unwrap(), 1000);
        assert_eq!(parse_time("1970-01-01T00:00:01.5Z").unwrap(), 1500);
        assert!(parse_time("yesterday").is_err());
    }
}
