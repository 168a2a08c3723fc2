//! A consumer's configuration: what it reads, where it starts, and how
//! deliveries are acknowledged. The JSON shapes here are the API's, and the
//! same JSON is persisted in the consumer's metadata.

use serde::{Deserialize, Serialize};

use crate::engine::error::{EngineError, EngineResult};
use crate::engine::streams::config::{
    DeleteOnEmptyConfig, StreamConfig, TimestampingConfig, TimestampingMode,
};

pub const DEFAULT_ACK_WAIT_MS: u64 = 30_000;
/// Longest `ack_wait_ms`: 12 hours, as SQS's visibility timeout.
pub const MAX_ACK_WAIT_MS: u64 = 12 * 3600 * 1000;
pub const DEFAULT_MAX_ACK_PENDING: u32 = 1000;
/// Pending messages are kept in memory (and on disk); this bounds both.
pub const MAX_MAX_ACK_PENDING: u32 = 100_000;

/// Where a consumer's messages come from.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Source {
    Collection {
        collection: String,
        #[serde(default)]
        feed: Feed,
    },
    Stream {
        stream: String,
    },
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Feed {
    /// Every change event, in order (the collection's events stream).
    #[default]
    Events,
    /// The latest version of each record, ordered by when it last changed.
    Records,
}

/// Where a new consumer starts.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Start {
    #[default]
    Beginning,
    Tail,
    #[serde(untagged)]
    SeqNum {
        seq_num: u64,
    },
    #[serde(untagged)]
    Timestamp {
        timestamp: u64,
    },
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AckPolicy {
    /// Each message is acked (or nacked) on its own; unacked ones come back.
    #[default]
    Explicit,
    /// The consumer commits a position; everything before it is done.
    Cursor,
}

/// Which messages of a collection source a consumer delivers (the others
/// are passed over as if acked): the same filter reads take.
pub use crate::engine::collections::Filter;

/// A consumer's full configuration, as created.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConsumerConfig {
    pub source: Source,
    #[serde(default)]
    pub start: Start,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub filter: Option<Filter>,
    #[serde(default)]
    pub ack_policy: AckPolicy,
    /// How long a delivered message stays with its worker before it is
    /// delivered again (explicit), or how long delivered positions wait for
    /// a commit before they are handed out again (cursor).
    #[serde(default = "default_ack_wait_ms")]
    pub ack_wait_ms: u64,
    /// Deliveries after which a message goes to the dead-letter stream
    /// instead; `None` for no limit. Explicit ack policy only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_deliver: Option<u32>,
    /// Messages delivered (or held back by key ordering) and not yet acked,
    /// at most. Explicit ack policy only.
    #[serde(default = "default_max_ack_pending")]
    pub max_ack_pending: u32,
    /// While a message of a key is pending, later messages of that key wait.
    /// The key is the record id for collections, the `key` header for
    /// streams. Explicit ack policy only.
    #[serde(default)]
    pub ordered_by_key: bool,
}

fn default_ack_wait_ms() -> u64 {
    DEFAULT_ACK_WAIT_MS
}

fn default_max_ack_pending() -> u32 {
    DEFAULT_MAX_ACK_PENDING
}

/// The settings a `PATCH` may change; the rest fix what the consumer is.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConsumerConfigPatch {
    pub ack_wait_ms: Option<u64>,
    /// `null` removes the limit.
    #[serde(default, deserialize_with = "double_option")]
    pub max_deliver: Option<Option<u32>>,
    pub max_ack_pending: Option<u32>,
    pub ordered_by_key: Option<bool>,
}

fn double_option<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Option<u32>>, D::Error> {
    Option::<u32>::deserialize(d).map(Some)
}

impl ConsumerConfig {
    pub fn validate(&self) -> EngineResult<()> {
        let invalid = |m: &str| Err(EngineError::Invalid(m.into()));
        if self.ack_wait_ms == 0 || self.ack_wait_ms > MAX_ACK_WAIT_MS {
            return invalid(&format!("ack_wait_ms must be 1 to {MAX_ACK_WAIT_MS}"));
        }
        if self.max_ack_pending == 0 || self.max_ack_pending > MAX_MAX_ACK_PENDING {
            return invalid(&format!(
                "max_ack_pending must be 1 to {MAX_MAX_ACK_PENDING}"
            ));
        }
        if self.max_deliver == Some(0) {
            return invalid("max_deliver must be at least 1 (omit it for no limit)");
        }
        if self.ack_policy == AckPolicy::Cursor
            && (self.max_deliver.is_some()
                || self.ordered_by_key
                || self.max_ack_pending != DEFAULT_MAX_ACK_PENDING)
        {
            return invalid(
                "max_deliver, max_ack_pending and ordered_by_key apply only to ack_policy \"explicit\"",
            );
        }
        match (&self.source, &self.start) {
            (Source::Collection { feed: Feed::Records, .. }, Start::SeqNum { .. }) => {
                return invalid(
                    "the records feed has no seq nums: start from \"beginning\", \"tail\" or a timestamp",
                )
            }
            (Source::Stream { .. }, _) if self.filter.is_some() => {
                return invalid("filters apply only to collection sources")
            }
            _ => {}
        }
        if let Some(filter) = &self.filter {
            let events_feed = matches!(
                self.source,
                Source::Collection {
                    feed: Feed::Events,
                    ..
                }
            );
            filter.validate(events_feed)?;
        }
        Ok(())
    }

    /// Applies `patch`, checking the result.
    pub fn apply(&self, patch: &ConsumerConfigPatch) -> EngineResult<Self> {
        let mut config = self.clone();
        if let Some(v) = patch.ack_wait_ms {
            config.ack_wait_ms = v;
        }
        if let Some(v) = patch.max_deliver {
            config.max_deliver = v;
        }
        if let Some(v) = patch.max_ack_pending {
            config.max_ack_pending = v;
        }
        if let Some(v) = patch.ordered_by_key {
            config.ordered_by_key = v;
        }
        config.validate()?;
        Ok(config)
    }

    /// Whether an ensure with `other` names the same consumer: only the
    /// settings a `PATCH` could change may differ.
    pub fn same_identity(&self, other: &Self) -> bool {
        self.source == other.source
            && self.start == other.start
            && self.filter == other.filter
            && self.ack_policy == other.ack_policy
    }
}

/// Messages per receive, at most.
pub const MAX_RECEIVE_BATCH: usize = 1000;
/// Source messages one receive pass looks at, at most.
pub(super) const MAX_EXAMINED_PER_PASS: usize = 10_000;
/// Streams whose names start with this belong to consumers.
pub const DEAD_LETTER_PREFIX: &str = "_consumers/";
pub(super) const MAX_CONSUMER_NAME_BYTES: usize = 256;

/// The stream where `consumer` puts messages that reached `max_deliver`.
pub fn dead_letter_stream(consumer: &str) -> String {
    format!("{DEAD_LETTER_PREFIX}{consumer}/dead_letters")
}

/// The dead-letter stream keeps the basin's retention but is never deleted
/// for being empty, and stamps records on arrival (its records are made by
/// the server, never with client timestamps).
pub(super) fn dead_letter_config(mut config: StreamConfig) -> StreamConfig {
    config.delete_on_empty = DeleteOnEmptyConfig::default();
    config.timestamping = TimestampingConfig {
        mode: TimestampingMode::Arrival,
        uncapped: false,
    };
    config
}

crate::engine::streams::names::name_type!(
    /// A consumer name: 1–256 bytes, not `.` or `..`, without `/` or
    /// control characters (its dead letters go to
    /// `_consumers/{name}/dead_letters`).
    ConsumerName,
    validate_consumer_name
);

fn validate_consumer_name(name: &str) -> EngineResult<()> {
    if name.is_empty() || name.len() > MAX_CONSUMER_NAME_BYTES {
        return Err(EngineError::Invalid(format!(
            "a consumer name must be 1 to {MAX_CONSUMER_NAME_BYTES} bytes"
        )));
    }
    if name == "." || name == ".." || name.chars().any(char::is_control) || name.contains('/') {
        return Err(EngineError::Invalid(
            "a consumer name may not be `.` or `..`, or contain `/` or control characters".into(),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(json: &str) -> ConsumerConfig {
        serde_json::from_str(json).unwrap()
    }

    #[test]
    fn shapes_parse() {
        let c = parse(r#"{"source": {"stream": "s"}}"#);
        assert_eq!(c.source, Source::Stream { stream: "s".into() });
        assert_eq!(c.start, Start::Beginning);
        assert_eq!(c.ack_policy, AckPolicy::Explicit);
        let c = parse(
            r#"{"source": {"collection": "c", "feed": "records"}, "start": "tail", "ack_policy": "cursor"}"#,
        );
        assert_eq!(c.start, Start::Tail);
        assert!(matches!(
            c.source,
            Source::Collection {
                feed: Feed::Records,
                ..
            }
        ));
        assert_eq!(
            parse(r#"{"source": {"stream": "s"}, "start": {"seq_num": 5}}"#).start,
            Start::SeqNum { seq_num: 5 }
        );
        assert_eq!(
            parse(r#"{"source": {"stream": "s"}, "start": {"timestamp": 5}}"#).start,
            Start::Timestamp { timestamp: 5 }
        );
        assert!(serde_json::from_str::<ConsumerConfig>(
            r#"{"source": {"stream": "s"}, "start": "middle"}"#
        )
        .is_err());
        assert!(serde_json::from_str::<ConsumerConfig>(r#"{"source": {"table": "s"}}"#).is_err());
        assert!(serde_json::from_str::<ConsumerConfig>(
            r#"{"source": {"stream": "s"}, "bogus": 1}"#
        )
        .is_err());
    }

    #[test]
    fn validation() {
        assert!(parse(r#"{"source": {"stream": "s"}, "ack_wait_ms": 0}"#)
            .validate()
            .is_err());
        assert!(parse(r#"{"source": {"stream": "s"}, "max_deliver": 0}"#)
            .validate()
            .is_err());
        assert!(
            parse(r#"{"source": {"stream": "s"}, "filter": {"id_prefix": "a"}}"#)
                .validate()
                .is_err()
        );
        assert!(
            parse(r#"{"source": {"stream": "s"}, "ack_policy": "cursor", "max_deliver": 3}"#)
                .validate()
                .is_err()
        );
        assert!(parse(
            r#"{"source": {"collection": "c", "feed": "records"}, "start": {"seq_num": 1}}"#
        )
        .validate()
        .is_err());
        assert!(parse(
            r#"{"source": {"collection": "c", "feed": "events"}, "filter": {"events": ["made"]}}"#
        )
        .validate()
        .is_err());
        assert!(parse(r#"{"source": {"collection": "c", "feed": "events"}, "filter": {"events": ["created"], "data": {"a": 1}}}"#).validate().is_ok());
    }
}
