//! A sink's configuration: what it reads (as a consumer would), where it
//! writes, and how it batches and retries. The JSON shapes are the API's;
//! the same JSON, secrets included, is persisted in the sink's metadata
//! (the API never answers the secrets back).

use serde::{Deserialize, Serialize};

use crate::engine::consumers::{AckPolicy, ConsumerConfig, Filter, Source, Start, MAX_ACK_WAIT_MS};
use crate::engine::error::{EngineError, EngineResult};

pub use super::destinations::{Destination, DEFAULT_TIMEOUT_MS};

pub const DEFAULT_MAX_BATCH: usize = 100;
pub const MAX_MAX_BATCH: usize = 1000;
pub const MAX_LINGER_MS: u64 = 60_000;
pub const DEFAULT_MAX_DELIVER: u32 = 10;

/// A sink, as created.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SinkConfig {
    pub source: Source,
    #[serde(default)]
    pub start: Start,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub filter: Option<Filter>,
    pub destination: Destination,
    /// Messages per delivery, at most.
    #[serde(default = "default_max_batch")]
    pub max_batch: usize,
    /// How long a delivery waits for more messages to fill its batch.
    #[serde(default)]
    pub max_linger_ms: u64,
    /// Deliveries after which a message goes to the dead letters.
    #[serde(default = "default_max_deliver")]
    pub max_deliver: u32,
    /// Messages of one key are delivered one batch at a time, in order.
    #[serde(default)]
    pub ordered_by_key: bool,
    #[serde(default)]
    pub retry: RetryConfig,
    /// A paused sink delivers nothing; it resumes where it stopped.
    #[serde(default)]
    pub paused: bool,
}

/// Backoff between failed deliveries: doubling from `initial_ms` up to
/// `max_ms`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetryConfig {
    #[serde(default = "default_initial_ms")]
    pub initial_ms: u64,
    #[serde(default = "default_max_ms")]
    pub max_ms: u64,
}

impl Default for RetryConfig {
    fn default() -> Self {
        Self {
            initial_ms: default_initial_ms(),
            max_ms: default_max_ms(),
        }
    }
}

fn default_max_batch() -> usize {
    DEFAULT_MAX_BATCH
}
fn default_max_deliver() -> u32 {
    DEFAULT_MAX_DELIVER
}
fn default_initial_ms() -> u64 {
    200
}
fn default_max_ms() -> u64 {
    30_000
}

/// What `PATCH` may change: everything but what the sink reads.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SinkConfigPatch {
    pub destination: Option<Destination>,
    pub max_batch: Option<usize>,
    pub max_linger_ms: Option<u64>,
    pub retry: Option<RetryConfig>,
    pub paused: Option<bool>,
}

impl SinkConfig {
    pub fn validate(&self) -> EngineResult<()> {
        let invalid = |m: String| Err(EngineError::Invalid(m));
        if self.max_batch == 0 || self.max_batch > MAX_MAX_BATCH {
            return invalid(format!("max_batch must be 1 to {MAX_MAX_BATCH}"));
        }
        if self.max_linger_ms > MAX_LINGER_MS {
            return invalid(format!("max_linger_ms must be at most {MAX_LINGER_MS}"));
        }
        if self.max_deliver == 0 {
            return invalid("max_deliver must be at least 1".into());
        }
        if self.retry.initial_ms == 0 || self.retry.initial_ms > self.retry.max_ms {
            return invalid("retry.initial_ms must be at least 1 and at most retry.max_ms".into());
        }
        if self.retry.max_ms > 3_600_000 {
            return invalid("retry.max_ms must be at most 3600000 (an hour)".into());
        }
        self.destination.validate(&self.source)?;
        if self.ordered_by_key && self.destination.keeps_position() {
            return invalid(format!(
                "ordered_by_key does not apply to a {} sink: it writes in the source's order \
                 (every key in order) and exactly once",
                self.destination.kind()
            ));
        }
        self.consumer_config().validate()
    }

    /// The consumer the sink reads through. Explicit acks; no
    /// `max_deliver` of its own, since the worker counts its attempts and
    /// dead-letters itself (a restart of the worker is not an attempt);
    /// an ack wait longer than anything the worker does between extends
    /// (a linger, a post and a backoff), so that nothing is handed out
    /// again while the worker still holds it.
    pub fn consumer_config(&self) -> ConsumerConfig {
        ConsumerConfig {
            source: self.source.clone(),
            start: self.start.clone(),
            filter: self.filter.clone(),
            ack_policy: AckPolicy::Explicit,
            ack_wait_ms: self.ack_wait_ms(),
            max_deliver: None,
            // A full batch in flight, at the largest batch there is.
            max_ack_pending: MAX_MAX_BATCH as u32,
            ordered_by_key: self.ordered_by_key,
        }
    }

    /// See [`Self::consumer_config`].
    pub fn ack_wait_ms(&self) -> u64 {
        let timeout = self.destination.timeout_ms();
        (2 * timeout + self.max_linger_ms + self.retry.max_ms + 60_000).min(MAX_ACK_WAIT_MS)
    }

    pub fn apply(&self, patch: &SinkConfigPatch) -> EngineResult<Self> {
        let mut next = self.clone();
        if let Some(destination) = &patch.destination {
            next.destination = destination.clone();
        }
        if let Some(max_batch) = patch.max_batch {
            next.max_batch = max_batch;
        }
        if let Some(linger) = patch.max_linger_ms {
            next.max_linger_ms = linger;
        }
        if let Some(retry) = &patch.retry {
            next.retry = retry.clone();
        }
        if let Some(paused) = patch.paused {
            next.paused = paused;
        }
        next.validate()?;
        Ok(next)
    }
}

crate::engine::streams::names::name_type!(
    /// A sink name: 1–200 bytes, not `.` or `..`, without `/` or control
    /// characters (its consumer is `_sink.{name}`).
    SinkName,
    validate_sink_name
);

fn validate_sink_name(name: &str) -> EngineResult<()> {
    crate::engine::settings::check_name("sink", name)
}

/// The prefix of the consumers sinks read through; clients may look at
/// them, not use them.
pub const SINK_CONSUMER_PREFIX: &str = "_sink.";

pub fn sink_consumer(sink: &str) -> String {
    format!("{SINK_CONSUMER_PREFIX}{sink}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(json: &str) -> EngineResult<SinkConfig> {
        let config: SinkConfig =
            serde_json::from_str(json).map_err(|e| EngineError::Invalid(e.to_string()))?;
        config.validate()?;
        Ok(config)
    }

    #[test]
    fn defaults_and_limits() {
        let config =
            parse(r#"{"source": {"stream": "s"}, "destination": {"webhook": {"url": "http://127.0.0.1:9/x"}}}"#)
                .unwrap();
        assert_eq!(config.max_batch, DEFAULT_MAX_BATCH);
        assert_eq!(config.max_deliver, DEFAULT_MAX_DELIVER);
        // The worker counts attempts; the consumer never dead-letters.
        assert_eq!(config.consumer_config().max_deliver, None);
        assert!(config.consumer_config().ack_wait_ms >= 2 * DEFAULT_TIMEOUT_MS + 30_000);
        for bad in [
            r#"{"source": {"stream": "s"}, "destination": {"webhook": {"url": "ftp://x"}}}"#,
            r#"{"source": {"stream": "s"}, "destination": {"webhook": {"url": "http://x"}}, "max_batch": 0}"#,
            r#"{"source": {"stream": "s"}, "destination": {"postgres": {"url": "postgres://x"}}}"#,
            r#"{"source": {"stream": "s"}, "destination": {"webhook": {"url": "http://x", "headers": {"a b": "c"}}}}"#,
            r#"{"source": {"stream": "s"}, "destination": {"webhook": {"url": "http://x"}}, "retry": {"initial_ms": 10, "max_ms": 5}}"#,
        ] {
            assert!(parse(bad).is_err(), "{bad}");
        }
    }
}
