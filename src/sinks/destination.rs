//! The destinations a worker delivers to, behind one shape: `deliver` a
//! batch (all of it, or fail), and `probe` whether the destination is up
//! at all (the worker asks when a message keeps failing, to tell a poison
//! message from an outage).

use crate::engine::consumers::Delivery;
use crate::engine::sinks::{Destination, SinkInfo};

use super::failure::Failure;
use super::jetstream::Nats;
use super::kafka::Kafka;
use super::postgres::Postgres;
use super::redis_stream::Redis;
use super::webhook::Webhook;

pub enum Target {
    Webhook(Webhook),
    Postgres(Postgres),
    Redis(Redis),
    Nats(Nats),
    Kafka(Kafka),
}

impl Target {
    /// Makes the client for the sink's destination; connections are made
    /// on first use, and again after one fails.
    pub fn new(sink: &SinkInfo) -> Result<Self, String> {
        Ok(match &sink.config.destination {
            Destination::Webhook(config) => Target::Webhook(Webhook::new(sink, config.clone())?),
            Destination::Postgres(config) => Target::Postgres(Postgres::new(sink, config.clone())),
            Destination::Redis(config) => Target::Redis(Redis::new(sink, config.clone())?),
            Destination::Nats(config) => Target::Nats(Nats::new(sink, config.clone())),
            Destination::Kafka(config) => Target::Kafka(Kafka::new(sink, config.clone())),
        })
    }

    /// Writes every message of `batch`, in order.
    pub async fn deliver(&self, batch: &[Delivery]) -> Result<(), Failure> {
        match self {
            Target::Webhook(d) => d.deliver(batch).await,
            Target::Postgres(d) => d.deliver(batch).await,
            Target::Redis(d) => d.deliver(batch).await,
            Target::Nats(d) => d.deliver(batch).await,
            Target::Kafka(d) => d.deliver(batch).await,
        }
    }

    /// Whether a destination that fails for some messages may still work
    /// for others (a Kafka partition without a leader, the rest fine): then
    /// neither other messages getting through nor a probe tells a poison
    /// message from an outage, and only a refusal dead-letters.
    pub fn outage_may_be_partial(&self) -> bool {
        matches!(self, Target::Kafka(_))
    }

    /// Whether the destination takes writes at all.
    pub async fn probe(&self) -> Result<(), Failure> {
        match self {
            Target::Webhook(d) => d.probe().await,
            Target::Postgres(d) => d.probe().await,
            Target::Redis(d) => d.probe().await,
            Target::Nats(d) => d.probe().await,
            Target::Kafka(d) => d.probe().await,
        }
    }
}
