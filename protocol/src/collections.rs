//! The JSON of collections that the server writes and clients read: a
//! record as clients see it ([`Record`]) and a change event ([`Event`]).
//!
//! Both are also the server's storage format (a records-stream entry is a
//! [`Record`], an events-stream record's body is an [`Event`]), so their
//! field names and field order must never change.
//!
//! The data types are generic: the server holds a record's data as a JSON
//! object ([`Data`], the default), the client as any JSON [`Value`]. Both
//! read and write the same JSON.
//!
//! ```
//! use rill_protocol::collections::{Event, EventKind};
//! use serde_json::{json, Value};
//!
//! let json = r#"{"event":"created","id":"u1","data":{"name":"Ada"},"version":1,"updated_at":7}"#;
//! let event: Event<Value> = serde_json::from_str(json).unwrap();
//! assert_eq!(event.event, EventKind::Created);
//! assert_eq!(event.data, json!({ "name": "Ada" }));
//! assert_eq!(event.changes, None);
//! assert_eq!(serde_json::to_string(&event).unwrap(), json);
//! ```

use std::fmt;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// A record's data: a JSON object.
pub type Data = Map<String, Value>;

/// A collection record as clients see it: its latest version (for a
/// deleted record, its tombstone).
///
/// `D` holds the data: a JSON object ([`Data`]) by default, or any
/// [`Value`] for a reader that does not care which kind it is.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Record<D = Data> {
    /// The collection it belongs to (empty if a response leaves it out).
    #[serde(default)]
    pub collection: String,
    /// Its key.
    pub id: String,
    /// Its data, a JSON object (for a tombstone: the data deleted).
    pub data: D,
    /// 1 when created, one more with every change (a delete included).
    pub version: u64,
    /// When it was created (epoch ms).
    pub created_at: u64,
    /// When it last changed (epoch ms), as assigned by the server: its
    /// place in the records stream.
    pub updated_at: u64,
    /// A tombstone: the record was deleted.
    pub deleted: bool,
}

/// A change to one record: the body of a record in a collection's events
/// stream. (Read from the events endpoint, each event also carries its
/// record's `seq_num` and `timestamp`.)
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Event<D = Data> {
    /// What happened.
    pub event: EventKind,
    /// The record's key.
    pub id: String,
    /// The new version's data (for a delete: the data deleted).
    pub data: D,
    /// For updates: the previous values of the top-level fields that
    /// changed (`null` for fields that were added). Left out when `None`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub changes: Option<D>,
    /// The record's version after the change.
    pub version: u64,
    /// The record's `updated_at` after the change (epoch ms).
    pub updated_at: u64,
}

/// What a change [`Event`] did, in JSON `created`, `updated` or `deleted`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EventKind {
    /// The record did not exist, or was a tombstone.
    Created,
    /// The record's data changed.
    Updated,
    /// The record was deleted: it is a tombstone now.
    Deleted,
}

impl EventKind {
    /// Its JSON name: `created`, `updated` or `deleted`.
    ///
    /// ```
    /// use rill_protocol::collections::EventKind;
    /// assert_eq!(EventKind::Updated.as_str(), "updated");
    /// assert_eq!(EventKind::Deleted.to_string(), "deleted");
    /// ```
    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::Created => "created",
            EventKind::Updated => "updated",
            EventKind::Deleted => "deleted",
        }
    }
}

impl fmt::Display for EventKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const RECORD: &str = r#"{"collection":"users","id":"u1","data":{"age":36,"name":"Ada"},"version":2,"created_at":1700000000000,"updated_at":1700000000005,"deleted":false}"#;
    const UPDATED: &str = r#"{"event":"updated","id":"u1","data":{"age":36,"name":"Ada"},"changes":{"age":35,"email":null},"version":2,"updated_at":1700000000005}"#;

    #[test]
    fn record_json_is_fixed() {
        let record: Record = serde_json::from_str(RECORD).unwrap();
        assert_eq!(record.data["name"], "Ada");
        assert_eq!(serde_json::to_string(&record).unwrap(), RECORD);
        // A reader holding the data as a `Value` reads and writes the same.
        let loose: Record<Value> = serde_json::from_str(RECORD).unwrap();
        assert_eq!(loose.data, json!({ "name": "Ada", "age": 36 }));
        assert_eq!(serde_json::to_string(&loose).unwrap(), RECORD);
        // `collection` may be left out.
        let bare: Record<Value> = serde_json::from_str(
            r#"{"id":"u1","data":{},"version":1,"created_at":1,"updated_at":1,"deleted":true}"#,
        )
        .unwrap();
        assert_eq!(bare.collection, "");
    }

    #[test]
    fn event_json_is_fixed() {
        let event: Event = serde_json::from_str(UPDATED).unwrap();
        assert_eq!(event.event, EventKind::Updated);
        assert_eq!(event.changes.as_ref().unwrap()["email"], Value::Null);
        assert_eq!(serde_json::to_string(&event).unwrap(), UPDATED);
        let loose: Event<Value> = serde_json::from_str(UPDATED).unwrap();
        assert_eq!(serde_json::to_string(&loose).unwrap(), UPDATED);
        for kind in [EventKind::Created, EventKind::Updated, EventKind::Deleted] {
            assert_eq!(
                serde_json::to_value(kind).unwrap(),
                Value::String(kind.to_string())
            );
        }
    }
}
