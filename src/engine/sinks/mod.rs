//! Sinks: consumers whose worker lives inside the server, writing what they
//! read to a destination (a webhook, Postgres, Redis, NATS or Kafka). This layer, over consumers,
//! keeps their definitions; `src/sinks/` runs them.

pub mod config;
pub mod destinations;
pub mod keys;
mod layer;

pub use config::{SinkConfig, SinkConfigPatch, SinkName};
pub use destinations::{
    BodyFormat, Destination, KafkaConfig, KafkaSasl, KafkaTopic, NatsConfig, PostgresConfig,
    RedisConfig, SaslMechanism, WebhookConfig,
};
pub use layer::{SinkInfo, Sinks};
