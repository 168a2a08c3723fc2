//! Where a sink writes: one key naming the kind, its settings as value.
//! Every setting that may hold a credential (a URL's password, headers,
//! HMAC keys) is write-only: kept here, never shown by the API, never
//! printed by `{:?}`.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::engine::consumers::Source;
use crate::engine::error::{EngineError, EngineResult};
use crate::engine::settings::{check_table_name, check_url};

pub use crate::engine::settings::{DEFAULT_TIMEOUT_MS, MAX_TIMEOUT_MS};

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum Destination {
    Webhook(WebhookConfig),
    Postgres(PostgresConfig),
    Redis(RedisConfig),
    Nats(NatsConfig),
    Kafka(KafkaConfig),
}

/// `POST`s each batch as JSON `{"messages": [...]}` to `url`.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookConfig {
    pub url: String,
    /// Sent with every request (write-only: an `Authorization` header is a
    /// secret too).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub headers: BTreeMap<String, String>,
    /// Signs each request (HMAC-SHA256, as Standard Webhooks do).
    /// Write-only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret: Option<String>,
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u64,
    /// How stream record bodies and headers are written: `raw` (UTF-8
    /// text) or `base64` (any bytes, as S2's `s2-format: base64`).
    #[serde(default, skip_serializing_if = "BodyFormat::is_raw")]
    pub format: BodyFormat,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BodyFormat {
    #[default]
    Raw,
    Base64,
}

impl BodyFormat {
    fn is_raw(&self) -> bool {
        *self == BodyFormat::Raw
    }
}

/// Keeps a table equal to the source: a collection's records (or events)
/// upserted by id, never to an older version, deletes deleting; a stream's
/// records inserted by `seq_num`. The sink's position is written in the
/// same transaction as the rows, so each message lands exactly once.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PostgresConfig {
    /// `postgres://user:password@host:port/db` (write-only password).
    pub url: String,
    /// `name` or `schema.name`.
    pub table: String,
    /// Creates the table (and nothing else) if it is missing.
    #[serde(default)]
    pub create_table: bool,
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u64,
}

/// Appends each message to a Redis stream with `XADD`, and keeps the sink's
/// position in a key beside it, moved by the same script as the entries
/// (so each message lands exactly once).
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RedisConfig {
    /// `redis://[:password@]host:port[/db]` (write-only password).
    pub url: String,
    /// The Redis stream's key.
    pub stream: String,
    /// Trims the stream to about this many entries (`MAXLEN ~`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub maxlen: Option<u64>,
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u64,
}

/// Publishes each message to NATS JetStream, with a `Nats-Msg-Id` made of
/// the sink and the message's position (the server drops a duplicate
/// inside its duplicate window).
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NatsConfig {
    /// `nats://[user:password@]host:port` (write-only password).
    pub url: String,
    /// The subject, with `{key}` (the record id or `key` header; `_` when
    /// there is none), `{collection}` and `{stream}` filled in.
    pub subject: String,
    /// A JetStream stream to create, over the subject with its
    /// placeholders as wildcards, if it is missing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub create_stream: Option<String>,
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u64,
}

/// Produces each message to a Kafka topic, keyed by the record id (or a
/// stream record's `key` header), with the idempotent producer on: a
/// retry inside one producer session is never written twice or out of
/// order.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KafkaConfig {
    /// `host:port` of one or more brokers to bootstrap from.
    pub brokers: Vec<String>,
    pub topic: String,
    /// Creates the topic if it is missing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub create_topic: Option<KafkaTopic>,
    /// Speaks TLS to the brokers (trusting the system's roots).
    #[serde(default)]
    pub tls: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sasl: Option<KafkaSasl>,
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u64,
}

/// How a topic the sink creates is made.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KafkaTopic {
    #[serde(default = "one")]
    pub partitions: i32,
    /// `-1`: the broker's default.
    #[serde(default = "minus_one")]
    pub replication_factor: i32,
}

/// SASL credentials (the password is write-only).
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KafkaSasl {
    pub mechanism: SaslMechanism,
    pub username: String,
    pub password: String,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum SaslMechanism {
    #[serde(rename = "PLAIN")]
    Plain,
    #[serde(rename = "SCRAM-SHA-256")]
    ScramSha256,
    #[serde(rename = "SCRAM-SHA-512")]
    ScramSha512,
}

impl SaslMechanism {
    pub fn as_str(&self) -> &'static str {
        match self {
            SaslMechanism::Plain => "PLAIN",
            SaslMechanism::ScramSha256 => "SCRAM-SHA-256",
            SaslMechanism::ScramSha512 => "SCRAM-SHA-512",
        }
    }
}

fn one() -> i32 {
    1
}

fn minus_one() -> i32 {
    -1
}

fn default_timeout_ms() -> u64 {
    DEFAULT_TIMEOUT_MS
}

/// Never prints a URL, header values or a secret: any of them may be a
/// credential, and a `{:?}` in a log line must not leak one.
macro_rules! debug_without_secrets {
    ($type:ident, $($field:ident),*) => {
        impl std::fmt::Debug for $type {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.debug_struct(stringify!($type))
                    $(.field(stringify!($field), &self.$field))*
                    .finish_non_exhaustive()
            }
        }
    };
}
debug_without_secrets!(PostgresConfig, table, create_table, timeout_ms);
debug_without_secrets!(RedisConfig, stream, maxlen, timeout_ms);
debug_without_secrets!(NatsConfig, subject, create_stream, timeout_ms);
debug_without_secrets!(KafkaConfig, brokers, topic, create_topic, tls, timeout_ms);

impl std::fmt::Debug for WebhookConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebhookConfig")
            .field("headers", &self.headers.keys().collect::<Vec<_>>())
            .field("secret_set", &self.secret.is_some())
            .field("timeout_ms", &self.timeout_ms)
            .field("format", &self.format)
            .finish_non_exhaustive()
    }
}

fn invalid<T>(message: String) -> EngineResult<T> {
    Err(EngineError::Invalid(message))
}

impl Destination {
    pub fn kind(&self) -> &'static str {
        match self {
            Destination::Webhook(_) => "webhook",
            Destination::Postgres(_) => "postgres",
            Destination::Redis(_) => "redis",
            Destination::Nats(_) => "nats",
            Destination::Kafka(_) => "kafka",
        }
    }

    /// Whether the destination keeps the sink's position and skips what
    /// it covers (exactly once): messages must come in position order, so
    /// neither key ordering (which holds some back) nor a replay of dead
    /// letters (which brings old ones again) may feed it.
    pub fn keeps_position(&self) -> bool {
        matches!(self, Destination::Postgres(_) | Destination::Redis(_))
    }

    /// How long one write may take.
    pub fn timeout_ms(&self) -> u64 {
        match self {
            Destination::Webhook(c) => c.timeout_ms,
            Destination::Postgres(c) => c.timeout_ms,
            Destination::Redis(c) => c.timeout_ms,
            Destination::Nats(c) => c.timeout_ms,
            Destination::Kafka(c) => c.timeout_ms,
        }
    }

    pub fn validate(&self, source: &Source) -> EngineResult<()> {
        let timeout = self.timeout_ms();
        if timeout == 0 || timeout > MAX_TIMEOUT_MS {
            return invalid(format!("timeout_ms must be 1 to {MAX_TIMEOUT_MS}"));
        }
        match self {
            Destination::Webhook(c) => c.validate(),
            Destination::Postgres(c) => c.validate(),
            Destination::Redis(c) => c.validate(),
            Destination::Nats(c) => c.validate(source),
            Destination::Kafka(c) => c.validate(),
        }
    }
}

/// Checks that `url` parses with one of `schemes`, without repeating it
/// (it may hold a secret).
impl WebhookConfig {
    fn validate(&self) -> EngineResult<()> {
        check_url("destination.webhook.url", &self.url, &["http", "https"])?;
        crate::engine::settings::check_http_headers(&self.headers)?;
        if self.secret.as_deref() == Some("") {
            return invalid("secret may not be empty".into());
        }
        Ok(())
    }
}

impl PostgresConfig {
    fn validate(&self) -> EngineResult<()> {
        check_url(
            "destination.postgres.url",
            &self.url,
            &["postgres", "postgresql"],
        )?;
        check_table_name("destination.postgres.table", &self.table)?;
        Ok(())
    }
}

impl RedisConfig {
    fn validate(&self) -> EngineResult<()> {
        // No TLS stack for Redis yet: `rediss://` is refused here rather
        // than failing in the worker.
        check_url("destination.redis.url", &self.url, &["redis"])?;
        if self.stream.is_empty() || self.stream.len() > 1024 {
            return invalid("destination.redis.stream must be 1 to 1024 bytes".into());
        }
        if self.maxlen == Some(0) {
            return invalid("destination.redis.maxlen must be at least 1".into());
        }
        Ok(())
    }
}

/// The placeholders a NATS subject template may hold.
pub const SUBJECT_PLACEHOLDERS: [&str; 3] = ["{key}", "{collection}", "{stream}"];

impl NatsConfig {
    fn validate(&self, source: &Source) -> EngineResult<()> {
        check_url("destination.nats.url", &self.url, &["nats", "tls"])?;
        // Every token a word or a placeholder (no wildcards: a message is
        // published to one subject).
        let token_ok = |token: &str| {
            SUBJECT_PLACEHOLDERS.contains(&token)
                || (!token.is_empty()
                    && token
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b"-_".contains(&b)))
        };
        if self.subject.len() > 255 || !self.subject.split('.').all(token_ok) {
            return invalid(format!(
                "destination.nats.subject must be dot-separated tokens of letters, digits, `-` \
                 or `_`, or one of {}",
                SUBJECT_PLACEHOLDERS.join(", ")
            ));
        }
        let (needs, has) = match source {
            Source::Stream { .. } => ("{collection}", "a stream"),
            Source::Collection { .. } => ("{stream}", "a collection"),
        };
        if self.subject.split('.').any(|t| t == needs) {
            return invalid(format!(
                "a sink reading {has} has no {needs} for its subject"
            ));
        }
        if let Some(stream) = &self.create_stream {
            let ok = !stream.is_empty()
                && stream.len() <= 255
                && stream
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-_".contains(&b));
            if !ok {
                return invalid(
                    "destination.nats.create_stream must be letters, digits, `-` or `_`".into(),
                );
            }
        }
        Ok(())
    }

    /// The subject a message goes to.
    pub fn subject_for(&self, key: Option<&str>, collection: &str, stream: &str) -> String {
        self.subject
            .split('.')
            .map(|token| match token {
                "{key}" => subject_token(key.unwrap_or("_")),
                "{collection}" => subject_token(collection),
                "{stream}" => subject_token(stream),
                word => word.to_string(),
            })
            .collect::<Vec<_>>()
            .join(".")
    }

    /// The subjects of every message: placeholders as `*`.
    pub fn subject_filter(&self) -> String {
        self.subject
            .split('.')
            .map(|token| match SUBJECT_PLACEHOLDERS.contains(&token) {
                true => "*",
                false => token,
            })
            .collect::<Vec<_>>()
            .join(".")
    }
}

impl KafkaConfig {
    fn validate(&self) -> EngineResult<()> {
        let broker_ok = |broker: &String| {
            broker.len() <= 255
                && broker.rsplit_once(':').is_some_and(|(host, port)| {
                    !host.is_empty()
                        && host
                            .bytes()
                            .all(|b| b.is_ascii_alphanumeric() || b".-_[]:".contains(&b))
                        && port.parse::<u16>().is_ok_and(|p| p > 0)
                })
        };
        if self.brokers.is_empty() || self.brokers.len() > 64 || !self.brokers.iter().all(broker_ok)
        {
            return invalid(
                "destination.kafka.brokers must be 1 to 64 `host:port` addresses".into(),
            );
        }
        // Kafka's own rule for topic names.
        let topic_ok = !self.topic.is_empty()
            && self.topic.len() <= 249
            && self.topic != "."
            && self.topic != ".."
            && self
                .topic
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b));
        if !topic_ok {
            return invalid(
                "destination.kafka.topic must be 1 to 249 letters, digits, `.`, `_` or `-`".into(),
            );
        }
        if let Some(topic) = &self.create_topic {
            if !(1..=10_000).contains(&topic.partitions) {
                return invalid(
                    "destination.kafka.create_topic.partitions must be 1 to 10000".into(),
                );
            }
            if topic.replication_factor != -1 && !(1..=16).contains(&topic.replication_factor) {
                return invalid(
                    "destination.kafka.create_topic.replication_factor must be 1 to 16, or -1 for \
                     the broker's default"
                        .into(),
                );
            }
        }
        // librdkafka takes no socket timeout under 10 ms.
        if self.timeout_ms < 10 {
            return invalid("destination.kafka.timeout_ms must be at least 10".into());
        }
        if let Some(sasl) = &self.sasl {
            let text_ok = |text: &str| {
                !text.is_empty() && text.len() <= 1024 && !text.chars().any(char::is_control)
            };
            if !text_ok(&sasl.username) || !text_ok(&sasl.password) {
                return invalid(
                    "destination.kafka.sasl needs a username and a password, each 1 to 1024 \
                     bytes without control characters"
                        .into(),
                );
            }
        }
        Ok(())
    }
}

/// A value made into one subject token: bytes NATS gives meaning to
/// (`.`, `*`, `>`, whitespace) and anything outside printable ASCII
/// become `_`.
fn subject_token(value: &str) -> String {
    let token: String = value
        .chars()
        .map(|c| match c.is_ascii_graphic() && !".*>".contains(c) {
            true => c,
            false => '_',
        })
        .collect();
    match token.is_empty() {
        true => "_".into(),
        false => token,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subjects_fill_placeholders_with_safe_tokens() {
        let nats = NatsConfig {
            url: "nats://127.0.0.1:4222".into(),
            subject: "rill.{collection}.{key}".into(),
            create_stream: None,
            timeout_ms: 1,
        };
        let source = Source::Collection {
            collection: "users".into(),
            feed: Default::default(),
        };
        assert!(nats.validate(&source).is_ok());
        assert_eq!(
            nats.subject_for(Some("a.b *>c"), "users", ""),
            "rill.users.a_b___c"
        );
        assert_eq!(nats.subject_for(None, "users", ""), "rill.users._");
        assert_eq!(nats.subject_filter(), "rill.*.*");
        let stream = Source::Stream { stream: "s".into() };
        assert!(
            nats.validate(&stream).is_err(),
            "a stream has no collection"
        );
        for bad in ["a..b", "a.*", "a.>", "a b", ""] {
            let config = NatsConfig {
                subject: bad.into(),
                ..nats.clone()
            };
            assert!(config.validate(&source).is_err(), "{bad}");
        }
    }

    #[test]
    fn postgres_tables_are_plain_identifiers() {
        let config = |table: &str| PostgresConfig {
            url: "postgres://u:p@127.0.0.1:5432/db".into(),
            table: table.into(),
            create_table: false,
            timeout_ms: 1,
        };
        for good in ["users", "public.users", "_t1"] {
            assert!(config(good).validate().is_ok(), "{good}");
        }
        for bad in ["", "a.b.c", "1t", "users; drop", "\"x\"", "a."] {
            assert!(config(bad).validate().is_err(), "{bad}");
        }
        let debug = format!("{:?}", config("users"));
        assert!(!debug.contains("u:p"), "{debug}");
    }
}
