//! The JSON shapes of the S2 v1 API (`openapi.json`), and their conversion
//! to and from engine types.
//!
//! Record data in JSON is text: with `s2-format: raw` (the default) header
//! names, values and bodies are UTF-8 strings; with `base64` they are base64.

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::engine::streams::types::{
    self, AppendAck, Header, ReadBatch, SequencedRecord, StreamPosition,
};
use crate::engine::streams::{BasinInfo, StreamInfo};

/// How record data is written in JSON (`s2-format`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Format {
    #[default]
    Raw,
    Base64,
}

impl Format {
    pub fn parse(value: &str) -> Option<Self> {
        match value {
            "raw" => Some(Self::Raw),
            "base64" => Some(Self::Base64),
            _ => None,
        }
    }

    fn decode(self, what: &str, text: String) -> Result<Bytes, String> {
        match self {
            Format::Raw => Ok(Bytes::from(text)),
            Format::Base64 => BASE64
                .decode(text.as_bytes())
                .map(Bytes::from)
                .map_err(|e| format!("{what} is not valid base64: {e}")),
        }
    }

    fn encode(self, bytes: &[u8]) -> String {
        match self {
            Format::Raw => String::from_utf8_lossy(bytes).into_owned(),
            Format::Base64 => BASE64.encode(bytes),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AppendInput {
    #[serde(deserialize_with = "bounded_records")]
    pub records: Vec<AppendRecord>,
    #[serde(default)]
    pub match_seq_num: Option<u64>,
    #[serde(default)]
    pub fencing_token: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AppendRecord {
    #[serde(default)]
    pub timestamp: Option<u64>,
    #[serde(default)]
    pub headers: Vec<(String, String)>,
    #[serde(default)]
    pub body: String,
}

/// Keeps at most one record more than an append may hold and skips the
/// rest unparsed: enough for validation to refuse the batch with a clear
/// error, without first building millions of records from a small body.
fn bounded_records<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<AppendRecord>, D::Error> {
    struct Bounded;
    impl<'de> serde::de::Visitor<'de> for Bounded {
        type Value = Vec<AppendRecord>;

        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("an array of records")
        }

        fn visit_seq<A: serde::de::SeqAccess<'de>>(
            self,
            mut seq: A,
        ) -> Result<Self::Value, A::Error> {
            let keep = types::MAX_BATCH_RECORDS + 1;
            let mut records = Vec::new();
            while records.len() < keep {
                match seq.next_element()? {
                    Some(record) => records.push(record),
                    None => return Ok(records),
                }
            }
            while seq.next_element::<serde::de::IgnoredAny>()?.is_some() {}
            Ok(records)
        }
    }
    d.deserialize_seq(Bounded)
}

impl AppendInput {
    pub fn into_engine(self, format: Format) -> Result<types::AppendInput, String> {
        let mut records = Vec::with_capacity(self.records.len());
        for (i, record) in self.records.into_iter().enumerate() {
            let mut headers = Vec::with_capacity(record.headers.len());
            for (name, value) in record.headers {
                headers.push(Header {
                    name: format.decode(&format!("record {i}: a header name"), name)?,
                    value: format.decode(&format!("record {i}: a header value"), value)?,
                });
            }
            records.push(types::AppendRecord {
                timestamp: record.timestamp,
                headers,
                body: format.decode(&format!("record {i}: the body"), record.body)?,
            });
        }
        Ok(types::AppendInput {
            records,
            match_seq_num: self.match_seq_num,
            fencing_token: self.fencing_token,
        })
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Position {
    pub seq_num: u64,
    pub timestamp: u64,
}

impl From<StreamPosition> for Position {
    fn from(p: StreamPosition) -> Self {
        Self {
            seq_num: p.seq_num,
            timestamp: p.timestamp,
        }
    }
}

#[derive(Debug, Serialize, Deserialize)]
pub struct Ack {
    pub start: Position,
    pub end: Position,
    pub tail: Position,
}

impl From<AppendAck> for Ack {
    fn from(ack: AppendAck) -> Self {
        Self {
            start: ack.start.into(),
            end: ack.end.into(),
            tail: ack.tail.into(),
        }
    }
}

#[derive(Debug, Serialize, Deserialize)]
pub struct TailResponse {
    pub tail: Position,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct Record {
    pub seq_num: u64,
    pub timestamp: u64,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl Record {
    pub fn from_engine(record: &SequencedRecord, format: Format) -> Self {
        Self {
            seq_num: record.seq_num,
            timestamp: record.timestamp,
            headers: record
                .headers
                .iter()
                .map(|h| (format.encode(&h.name), format.encode(&h.value)))
                .collect(),
            body: format.encode(&record.body),
        }
    }
}

#[derive(Debug, Serialize, Deserialize)]
pub struct Batch {
    pub records: Vec<Record>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tail: Option<Position>,
}

impl Batch {
    pub fn from_engine(batch: &ReadBatch, format: Format) -> Self {
        Self {
            records: batch
                .records
                .iter()
                .map(|r| Record::from_engine(r, format))
                .collect(),
            tail: batch.tail.map(Into::into),
        }
    }
}

/// `{"code": ..., "message": ...}`: every error body but 412 and 416.
#[derive(Debug, Serialize, Deserialize)]
pub struct ErrorInfo {
    pub code: String,
    pub message: String,
}

/// A basin as listed. `scope` (older S2 clients) and `location` (newer
/// ones) name where a basin lives; Rill has one place, so both are null.
/// `state` is deprecated in S2 but still expected by some clients.
#[derive(Debug, Serialize, Deserialize)]
pub struct BasinInfoJson {
    pub name: String,
    pub created_at: String,
    pub deleted_at: Option<String>,
    pub scope: Option<String>,
    pub location: Option<String>,
    pub state: String,
}

impl From<BasinInfo> for BasinInfoJson {
    fn from(info: BasinInfo) -> Self {
        Self {
            name: info.name,
            created_at: rfc3339(info.created_at),
            deleted_at: None,
            scope: None,
            location: None,
            state: "active".into(),
        }
    }
}

#[derive(Debug, Serialize, Deserialize)]
pub struct StreamInfoJson {
    pub name: String,
    pub created_at: String,
    pub deleted_at: Option<String>,
    /// Encryption at rest is not supported; always null.
    pub cipher: Option<String>,
}

impl From<StreamInfo> for StreamInfoJson {
    fn from(info: StreamInfo) -> Self {
        Self {
            name: info.name,
            created_at: rfc3339(info.created_at),
            deleted_at: None,
            cipher: None,
        }
    }
}

#[derive(Debug, Serialize, Deserialize)]
pub struct ListBasinsResponse {
    pub basins: Vec<BasinInfoJson>,
    pub has_more: bool,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct ListStreamsResponse {
    pub streams: Vec<StreamInfoJson>,
    pub has_more: bool,
}

/// Epoch milliseconds as RFC 3339, e.g. `2026-11-25T09:30:00.123Z`.
pub fn rfc3339(ms: u64) -> String {
    let time = std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms);
    humantime::format_rfc3339_millis(time).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn append_json_round_trip_in_both_formats() {
        let json = r#"{"records":[{"headers":[["k","v"]],"body":"hello","timestamp":5}],"match_seq_num":3}"#;
        let input: AppendInput = serde_json::from_str(json).unwrap();
        let input = input.into_engine(Format::Raw).unwrap();
        assert_eq!(input.match_seq_num, Some(3));
        assert_eq!(&input.records[0].body[..], b"hello");
        assert_eq!(&input.records[0].headers[0].name[..], b"k");

        let json = r#"{"records":[{"body":"aGVsbG8="}]}"#;
        let input: AppendInput = serde_json::from_str(json).unwrap();
        let input = input.into_engine(Format::Base64).unwrap();
        assert_eq!(&input.records[0].body[..], b"hello");

        let bad: AppendInput = serde_json::from_str(r#"{"records":[{"body":"!!"}]}"#).unwrap();
        assert!(bad.into_engine(Format::Base64).is_err());
    }

    #[test]
    fn rfc3339_format() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00.000Z");
    }
}
