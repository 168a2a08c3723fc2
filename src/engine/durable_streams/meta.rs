//! What a Durable Streams stream keeps besides its records: its content
//! type and expiry, in an attachment of its S2 stream (`X{id}d`), written
//! in the batch that creates it.

use serde::{Deserialize, Serialize};

use crate::engine::streams::keys;

/// The basin every Durable Streams stream lives in.
pub const BASIN: &str = "durable-streams";

/// The content type a stream gets when its creator names none.
pub const DEFAULT_CONTENT_TYPE: &str = "application/octet-stream";

/// When a stream goes away by itself.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Expiry {
    #[default]
    Never,
    /// After this many seconds without a read or an append.
    Ttl(u64),
    /// At this time (milliseconds since the epoch).
    At(u64),
}

/// What a `PUT` sets, and what a later `PUT` must repeat to get `200`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Settings {
    /// Lower case, without parameters (`text/plain; charset=utf-8` is
    /// `text/plain`): what two requests must agree on.
    pub content_type: String,
    #[serde(default)]
    pub expiry: Expiry,
}

impl Settings {
    /// JSON mode: message boundaries kept, reads answered as an array.
    pub fn is_json(&self) -> bool {
        self.content_type == "application/json"
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DurableMeta {
    pub settings: Settings,
    /// False between the creation of a stream and the last append of what
    /// its `PUT` carried (a fork's inherited records, the body): a stream
    /// caught there by a crash is not shown, and the next `PUT` makes it
    /// again.
    pub ready: bool,
    /// What a fork was made from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fork: Option<ForkOrigin>,
    /// Forks made of this stream that still exist.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub forks: u64,
    /// Deleted while it had forks: it answers `410`, and its name stays
    /// taken, until the last of them is deleted too.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub deleted: bool,
}

impl DurableMeta {
    pub fn new(settings: Settings, ready: bool) -> Self {
        Self {
            settings,
            ready,
            fork: None,
            forks: 0,
            deleted: false,
        }
    }

    /// What a stream made through S2 (with no attachment) counts as.
    pub fn of_s2_stream() -> Self {
        let settings = Settings {
            content_type: DEFAULT_CONTENT_TYPE.into(),
            expiry: Expiry::Never,
        };
        Self::new(settings, true)
    }
}

/// Where a fork's inherited records come from: the source's records
/// before `offset`, then `sub_offset` more messages (JSON) or bytes of the
/// record at `offset` (else).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ForkOrigin {
    pub source: String,
    /// The source's S2 stream id: a stream made again under its name is
    /// not it.
    pub source_id: u64,
    pub offset: u64,
    pub sub_offset: u64,
}

/// Which of its source's records a fork copies.
#[derive(Clone, Copy, Debug)]
pub struct Inherited {
    /// The source's first record (its trim point).
    pub start: u64,
    /// Records `[start, whole_until)` are copied whole.
    pub whole_until: u64,
    /// Then this many bytes of record `whole_until`.
    pub partial: Option<usize>,
}

impl Inherited {
    /// The fork's first own offset.
    pub fn end(&self) -> u64 {
        self.whole_until + u64::from(self.partial.is_some())
    }
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// `X{stream id}d`.
pub fn meta_key(stream_id: u64) -> Vec<u8> {
    keys::attachment_key(stream_id, b"d")
}

/// A `Content-Type` as streams compare it: the media type alone, lower
/// case; empty means the default.
pub fn normalize_content_type(given: &str) -> String {
    let media = given.split(';').next().unwrap_or("").trim();
    if media.is_empty() {
        DEFAULT_CONTENT_TYPE.to_string()
    } else {
        media.to_ascii_lowercase()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_types_compare_without_case_or_parameters() {
        assert_eq!(
            normalize_content_type("Text/Plain; charset=utf-8"),
            "text/plain"
        );
        assert_eq!(normalize_content_type(""), DEFAULT_CONTENT_TYPE);
        assert_eq!(normalize_content_type(" ; x=y"), DEFAULT_CONTENT_TYPE);
    }
}
