//! The JSON of sources. A source is shown as it was configured, less its
//! secrets: header values are write-only, and a URL's password and query
//! are masked.

use serde_json::{json, Value};

use super::json::rfc3339;
use super::sinks::mask_password;
use crate::engine::sources::{SourceConfig, SourceCursor, SourceInfo};

/// A source without its secrets, with its `state` when there is one.
pub fn source_json(info: &SourceInfo, state: Option<Value>) -> Value {
    let config = match &info.config {
        SourceConfig::Http(http) => {
            let mut shown = serde_json::to_value(http).unwrap_or(Value::Null);
            shown["url"] = Value::String(mask_password(&http.url));
            if let Some(fields) = shown.as_object_mut() {
                fields.remove("headers");
            }
            shown["header_names"] = json!(http.headers.keys().collect::<Vec<_>>());
            json!({ "http": shown })
        }
        SourceConfig::Postgres(pg) => {
            let mut shown = serde_json::to_value(pg).unwrap_or(Value::Null);
            shown["url"] = Value::String(mask_password(&pg.url));
            json!({ "postgres": shown })
        }
    };
    let mut out = json!({
        "name": info.name,
        "created_at": rfc3339(info.created_at),
        "config": config,
    });
    if let Some(state) = state {
        out["state"] = state;
    }
    out
}

/// The durable part of a source's state: how far it is in its upstream.
pub fn cursor_json(cursor: &SourceCursor) -> Value {
    let mut out = json!({
        "changes": cursor.changes,
        "cursor_moved_at": (cursor.moved_at > 0).then(|| rfc3339(cursor.moved_at)),
    });
    if let Some(lsn) = cursor.lsn {
        out["backfilled"] = Value::Bool(cursor.backfilled);
        out["lsn"] = Value::String(lsn_text(lsn));
    }
    out
}

/// A WAL position as Postgres writes it (`16/B374D848`).
pub fn lsn_text(lsn: u64) -> String {
    format!("{:X}/{:X}", lsn >> 32, lsn & 0xffff_ffff)
}
