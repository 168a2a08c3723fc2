//! The Kafka destination: each message is produced to the sink's topic,
//! keyed by its record id (or a stream record's `key` header), with
//! librdkafka's idempotent producer (`enable.idempotence`, `acks=all`), so
//! that the client's own retries never write a message twice or out of
//! order within a partition. A batch is delivered when every message of it
//! is acknowledged; messages go to partitions as the Java client sends
//! them (murmur2 of the key), so other producers of the same keys agree.
//!
//! A stream record is produced as its body, with its headers as Kafka
//! headers and `Rill-Seq-Num`, `Rill-Timestamp`; a collection change as the
//! JSON of its record (records feed) or event (events feed), with
//! `Rill-Id` and `Rill-Version`, and a deleted record on the records feed
//! as a tombstone (no value), which a compacted topic keeps as a delete.
//! Every message carries `Rill-Message-Id` (the sink and its position), the
//! same on every delivery of it, for consumers to drop the repeats a crash
//! of Rill can cause (Kafka's de-duplication holds within one producer
//! session only).

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use bytes::Bytes;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use rdkafka::util::Timeout;
use tokio::sync::Mutex;

use super::failure::Failure;
use super::message::{position_hex, sink_identity, Change};
use crate::engine::consumers::{Delivery, Payload};
use crate::engine::sinks::{KafkaConfig, SinkInfo};

/// The largest message the client sends: above Kafka's default of 1 MB, so
/// that the broker's own limit (`message.max.bytes`) is the one that
/// refuses a message, not a smaller one of the client's.
const MAX_MESSAGE_BYTES: &str = "16777216";

pub struct Kafka {
    config: KafkaConfig,
    /// Where message ids start: the sink.
    identity: String,
    producer: Mutex<Option<FutureProducer>>,
    /// Whether `create_topic` has been seen to.
    topic_made: AtomicBool,
}

/// One message, owned until it is produced.
struct Outgoing {
    key: Option<String>,
    /// `None`: a tombstone.
    value: Option<Bytes>,
    headers: Vec<(String, Vec<u8>)>,
}

impl Kafka {
    pub fn new(sink: &SinkInfo, config: KafkaConfig) -> Self {
        Self {
            config,
            identity: sink_identity(sink),
            producer: Mutex::new(None),
            topic_made: AtomicBool::new(false),
        }
    }

    pub async fn deliver(&self, batch: &[Delivery]) -> Result<(), Failure> {
        let messages: Vec<Outgoing> = batch
            .iter()
            .map(|d| self.message(d))
            .collect::<Result<_, _>>()?;
        let producer = self.connected().await?;
        match self.produce(&producer, &messages).await {
            Ok(()) => Ok(()),
            Err(err) => {
                let failure = self.failed(err).await;
                retire(producer);
                Err(failure)
            }
        }
    }

    /// Queues every message before awaiting any: the idempotent producer
    /// keeps them in order per partition however it batches and retries
    /// them.
    async fn produce(
        &self,
        producer: &FutureProducer,
        messages: &[Outgoing],
    ) -> Result<(), KafkaError> {
        let mut pending = Vec::with_capacity(messages.len());
        for message in messages {
            let mut headers = OwnedHeaders::new_with_capacity(message.headers.len());
            for (key, value) in &message.headers {
                headers = headers.insert(Header {
                    key,
                    value: Some(value.as_slice()),
                });
            }
            let mut record = FutureRecord::<str, [u8]>::to(&self.config.topic).headers(headers);
            if let Some(key) = &message.key {
                record = record.key(key);
            }
            if let Some(value) = &message.value {
                record = record.payload(value);
            }
            pending.push(producer.send_result(record).map_err(|(err, _)| err)?);
        }
        for delivery in pending {
            match delivery.await {
                Ok(Ok(_)) => {}
                Ok(Err((err, _))) => return Err(err),
                // The producer went away with the message unsent.
                Err(_canceled) => return Err(KafkaError::Canceled),
            }
        }
        Ok(())
    }

    /// Up when the topic's metadata can be read and it has a partition.
    pub async fn probe(&self) -> Result<(), Failure> {
        let producer = self.connected().await?;
        let topic = self.config.topic.clone();
        let timeout = Duration::from_millis(self.config.timeout_ms);
        // The client's metadata call blocks.
        let metadata = tokio::task::spawn_blocking(move || {
            producer
                .client()
                .fetch_metadata(Some(&topic), Timeout::After(timeout))
                .map(|metadata| {
                    metadata.topics().first().map(|topic| {
                        (
                            topic.error().map(RDKafkaErrorCode::from),
                            topic.partitions().len(),
                        )
                    })
                })
        })
        .await
        .map_err(|_| Failure::Transient("a Kafka metadata call failed".into()))?;
        match metadata {
            Ok(Some((None, partitions))) if partitions > 0 => Ok(()),
            Ok(Some((Some(code), _))) => Err(Failure::Transient(format!(
                "Kafka: topic {}: {code}",
                self.config.topic
            ))),
            Ok(_) => Err(Failure::Transient(format!(
                "Kafka: topic {} has no partitions",
                self.config.topic
            ))),
            Err(err) => Err(self.failed(err).await),
        }
    }

    /// Whether `err` is the message's fault (it will never be taken), or
    /// the cluster's; a producer that met a fatal error is dropped, and
    /// the next delivery makes a new one.
    async fn failed(&self, err: KafkaError) -> Failure {
        let code = err.rdkafka_error_code();
        let refused = matches!(
            code,
            Some(
                RDKafkaErrorCode::MessageSizeTooLarge
                    | RDKafkaErrorCode::InvalidMessageSize
                    | RDKafkaErrorCode::InvalidMessage
                    | RDKafkaErrorCode::InvalidRecord
                    | RDKafkaErrorCode::MessageBatchTooLarge
            )
        );
        if refused {
            return Failure::Permanent(format!("Kafka refused the message: {err}"));
        }
        if let Some(producer) = self.producer.lock().await.take() {
            retire(producer);
        }
        Failure::Transient(format!("Kafka: {err}"))
    }

    async fn connected(&self) -> Result<FutureProducer, Failure> {
        let mut slot = self.producer.lock().await;
        if let Some(producer) = slot.as_ref() {
            return Ok(producer.clone());
        }
        if !self.topic_made.load(Ordering::Acquire) {
            self.make_topic().await?;
            self.topic_made.store(true, Ordering::Release);
        }
        let producer: FutureProducer = self
            .client_config()
            .create()
            .map_err(|e| Failure::Transient(format!("cannot make a Kafka producer: {e}")))?;
        *slot = Some(producer.clone());
        Ok(producer)
    }

    /// Makes the topic if the sink says to and it is missing.
    async fn make_topic(&self) -> Result<(), Failure> {
        let Some(topic) = &self.config.create_topic else {
            return Ok(());
        };
        let admin: AdminClient<DefaultClientContext> = self
            .client_config()
            .create()
            .map_err(|e| Failure::Transient(format!("cannot make a Kafka client: {e}")))?;
        let timeout = Duration::from_millis(self.config.timeout_ms);
        let options = AdminOptions::new().operation_timeout(Some(timeout));
        let new = NewTopic::new(
            &self.config.topic,
            topic.partitions,
            TopicReplication::Fixed(topic.replication_factor),
        );
        let made = tokio::time::timeout(timeout, admin.create_topics([&new], &options)).await;
        retire(admin);
        let made = made
            .map_err(|_| Failure::Transient("Kafka did not answer".into()))?
            .map_err(|e| Failure::Transient(format!("Kafka: {e}")))?;
        for result in made {
            match result {
                Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
                Err((name, code)) => {
                    return Err(Failure::Transient(format!(
                        "cannot make topic {name}: {code}"
                    )))
                }
            }
        }
        Ok(())
    }

    fn client_config(&self) -> ClientConfig {
        let timeout = self.config.timeout_ms.to_string();
        let mut config = ClientConfig::new();
        config
            .set("bootstrap.servers", self.config.brokers.join(","))
            .set("enable.idempotence", "true")
            .set("acks", "all")
            .set("partitioner", "murmur2_random")
            .set("message.timeout.ms", &timeout)
            .set("socket.timeout.ms", &timeout)
            .set("message.max.bytes", MAX_MESSAGE_BYTES)
            .set("client.id", format!("rill-sink-{}", self.identity));
        let protocol = match (self.config.tls, &self.config.sasl) {
            (false, None) => "plaintext",
            (true, None) => "ssl",
            (false, Some(_)) => "sasl_plaintext",
            (true, Some(_)) => "sasl_ssl",
        };
        config.set("security.protocol", protocol);
        if let Some(sasl) = &self.config.sasl {
            config
                .set("sasl.mechanism", sasl.mechanism.as_str())
                .set("sasl.username", &sasl.username)
                .set("sasl.password", &sasl.password);
        }
        config
    }

    /// The key, value and headers of one message.
    fn message(&self, delivery: &Delivery) -> Result<Outgoing, Failure> {
        let mut headers = vec![(
            "Rill-Message-Id".to_string(),
            format!("{}:{}", self.identity, position_hex(delivery)).into_bytes(),
        )];
        let value = match &delivery.message.payload {
            Payload::Record(record) => {
                headers.push(("Rill-Seq-Num".into(), record.seq_num.to_string().into()));
                headers.push(("Rill-Timestamp".into(), record.timestamp.to_string().into()));
                for header in &record.headers {
                    // Kafka header names are text; values are any bytes.
                    let Ok(name) = std::str::from_utf8(&header.name) else {
                        return Err(Failure::Permanent(format!(
                            "record {} has a header name that is not UTF-8",
                            record.seq_num
                        )));
                    };
                    headers.push((name.to_string(), header.value.to_vec()));
                }
                Some(record.body.clone())
            }
            Payload::Doc(record) => {
                let deleted = record.view().map(|v| v.deleted).unwrap_or(false);
                (!deleted).then(|| record.json.clone())
            }
            Payload::Event(event) => Some(
                serde_json::to_vec(event)
                    .map(Bytes::from)
                    .map_err(|e| Failure::Permanent(e.to_string()))?,
            ),
        };
        if !matches!(delivery.message.payload, Payload::Record(_)) {
            let change = Change::of(delivery).map_err(Failure::Permanent)?;
            headers.push(("Rill-Id".into(), change.id.into_bytes()));
            headers.push(("Rill-Version".into(), change.version.to_string().into()));
        }
        Ok(Outgoing {
            key: delivery.message.key.clone(),
            value,
            headers,
        })
    }
}

impl Drop for Kafka {
    fn drop(&mut self) {
        if let Some(producer) = self.producer.get_mut().take() {
            retire(producer);
        }
    }
}

/// Drops a client off the async workers: librdkafka's clients flush and
/// join their threads as they go (up to half a second, more while brokers
/// do not answer), which would stall every task on the worker.
fn retire<T: Send + 'static>(client: T) {
    match tokio::runtime::Handle::try_current() {
        Ok(runtime) => drop(runtime.spawn_blocking(move || drop(client))),
        Err(_) => drop(client),
    }
}
