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
use tokio::task::JoinHandle;

use super::failure::Failure;
use super::message::{position_hex, sink_identity, Change};
use crate::engine::consumers::{Delivery, Payload};
use crate::engine::locks::lock;
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
    /// A failed producer being dropped: awaited before a new one is made,
    /// so that the old one's requests in flight never land after the new
    /// one's writes.
    retiring: std::sync::Mutex<Option<JoinHandle<()>>>,
    /// Whether `create_topic` has been seen to.
    topic_made: AtomicBool,
}

/// One message, owned until it is produced.
struct Outgoing {
    key: Option<Vec<u8>>,
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
            retiring: std::sync::Mutex::new(None),
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
            Err(err) => Err(self.failed(err, producer).await),
        }
    }

    /// Queues every message before awaiting any (the idempotent producer
    /// keeps them in order per partition however it batches and retries
    /// them), then awaits every result: when one message is refused, the
    /// others of its record batch fail with it, and the refusal is what
    /// says the batch must be split.
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
            let mut record = FutureRecord::<[u8], [u8]>::to(&self.config.topic).headers(headers);
            if let Some(key) = &message.key {
                record = record.key(key.as_slice());
            }
            if let Some(value) = &message.value {
                record = record.payload(value);
            }
            pending.push(producer.send_result(record).map_err(|(err, _)| err));
        }
        let mut first: Option<KafkaError> = None;
        for delivery in pending {
            let err = match delivery {
                Ok(delivery) => match delivery.await {
                    Ok(Ok(_)) => continue,
                    Ok(Err((err, _))) => err,
                    // The producer went away with the message unsent.
                    Err(_canceled) => KafkaError::Canceled,
                },
                Err(err) => err,
            };
            let refusal = is_refusal(&err);
            match &first {
                Some(earlier) if is_refusal(earlier) || !refusal => {}
                _ => first = Some(err),
            }
        }
        first.map_or(Ok(()), Err)
    }

    /// Up when the topic's metadata can be read and every partition of it
    /// has a leader.
    pub async fn probe(&self) -> Result<(), Failure> {
        let producer = self.connected().await?;
        match self.topic_state(&producer).await {
            Ok(TopicState::Ready) => Ok(()),
            Ok(state) => Err(Failure::Transient(format!(
                "Kafka: topic {}: {state}",
                self.config.topic
            ))),
            Err(err) => Err(self.failed(err, producer).await),
        }
    }

    /// The topic as the cluster's metadata shows it (the client's
    /// metadata call blocks: it runs off the async workers).
    async fn topic_state(&self, producer: &FutureProducer) -> Result<TopicState, KafkaError> {
        let (producer, topic) = (producer.clone(), self.config.topic.clone());
        let timeout = Duration::from_millis(self.config.timeout_ms);
        tokio::task::spawn_blocking(move || {
            let metadata = producer
                .client()
                .fetch_metadata(Some(&topic), Timeout::After(timeout))?;
            let Some(topic) = metadata.topics().first() else {
                return Ok(TopicState::Missing);
            };
            Ok(match topic.error().map(RDKafkaErrorCode::from) {
                Some(RDKafkaErrorCode::UnknownTopicOrPartition) => TopicState::Missing,
                Some(code) => TopicState::Unavailable(code.to_string()),
                None if topic.partitions().is_empty() => TopicState::Missing,
                None => match topic
                    .partitions()
                    .iter()
                    .find(|p| p.error().is_some() || p.leader() < 0)
                {
                    Some(p) => {
                        TopicState::Unavailable(format!("partition {} has no leader", p.id()))
                    }
                    None => TopicState::Ready,
                },
            })
        })
        .await
        .unwrap_or(Err(KafkaError::Canceled))
    }

    /// What `err` means for the message: refused for what it is (it will
    /// never be taken), or the cluster's trouble; a producer that failed is
    /// dropped, and the next delivery makes a new one.
    async fn failed(&self, err: KafkaError, producer: FutureProducer) -> Failure {
        if is_refusal(&err) {
            return Failure::Permanent(format!("Kafka refused the message: {err}"));
        }
        // This producer's own reference, taken out of the slot if it is
        // still there, then the last one dropped off the async workers.
        self.producer.lock().await.take();
        let handle = retire(producer);
        *lock(&self.retiring) = handle;
        Failure::Transient(format!("Kafka: {err}"))
    }

    async fn connected(&self) -> Result<FutureProducer, Failure> {
        let mut slot = self.producer.lock().await;
        if let Some(producer) = slot.as_ref() {
            return Ok(producer.clone());
        }
        let retiring = lock(&self.retiring).take();
        if let Some(handle) = retiring {
            let _ = handle.await;
        }
        let mut config = self.client_config();
        config
            .set("enable.idempotence", "true")
            .set("acks", "all")
            .set("partitioner", "murmur2_random")
            .set("message.timeout.ms", self.config.timeout_ms.to_string())
            .set("message.max.bytes", MAX_MESSAGE_BYTES)
            // A topic that is not there is an error, not a topic made with
            // the broker's defaults (`create_topic` makes one on purpose).
            .set("allow.auto.create.topics", "false");
        let producer: FutureProducer = config
            .create()
            .map_err(|e| Failure::Transient(format!("cannot make a Kafka producer: {e}")))?;
        if !self.topic_made.load(Ordering::Acquire) {
            if let Err(failure) = self.make_topic(&producer).await {
                retire(producer);
                return Err(failure);
            }
            self.topic_made.store(true, Ordering::Release);
        }
        *slot = Some(producer.clone());
        Ok(producer)
    }

    /// Makes the topic if the sink says to and it is missing (asked only
    /// then: a principal allowed to write may not be allowed to create).
    async fn make_topic(&self, producer: &FutureProducer) -> Result<(), Failure> {
        let Some(topic) = &self.config.create_topic else {
            return Ok(());
        };
        match self.topic_state(producer).await {
            Ok(TopicState::Missing) => {}
            Ok(_) => return Ok(()),
            Err(err) => return Err(Failure::Transient(format!("Kafka: {err}"))),
        }
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

    /// What every client of the sink's takes: where the brokers are, how
    /// to speak to them, how long to wait.
    fn client_config(&self) -> ClientConfig {
        let mut config = ClientConfig::new();
        config
            .set("bootstrap.servers", self.config.brokers.join(","))
            .set("socket.timeout.ms", self.config.timeout_ms.to_string())
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
        // A stream record's key is its `key` header's bytes as they are
        // (two keys that are not UTF-8 must not become one).
        let key = match &delivery.message.payload {
            Payload::Record(record) => record
                .headers
                .iter()
                .find(|h| h.name.as_ref() == b"key")
                .map(|h| h.value.to_vec()),
            _ => delivery.message.key.clone().map(String::into_bytes),
        };
        Ok(Outgoing {
            key,
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

/// The topic as the cluster's metadata shows it.
enum TopicState {
    Ready,
    Missing,
    Unavailable(String),
}

impl std::fmt::Display for TopicState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TopicState::Ready => f.write_str("ready"),
            TopicState::Missing => f.write_str("no such topic"),
            TopicState::Unavailable(why) => f.write_str(why),
        }
    }
}

/// Whether the broker refused a message for what it is (too large, not
/// valid for the topic), or failed it because another message of its
/// record batch was: either way, splitting the batch isolates the culprit.
fn is_refusal(err: &KafkaError) -> bool {
    matches!(
        err.rdkafka_error_code(),
        Some(
            RDKafkaErrorCode::MessageSizeTooLarge
                | RDKafkaErrorCode::InvalidMessageSize
                | RDKafkaErrorCode::InvalidMessage
                | RDKafkaErrorCode::InvalidRecord
                | RDKafkaErrorCode::MessageBatchTooLarge
                | RDKafkaErrorCode::InvalidDifferentRecord
        )
    )
}

/// Drops a client off the async workers: librdkafka's clients flush and
/// join their threads as they go (up to half a second, more while brokers
/// do not answer), which would stall every task on the worker. The handle
/// says when it is gone.
fn retire<T: Send + 'static>(client: T) -> Option<JoinHandle<()>> {
    match tokio::runtime::Handle::try_current() {
        Ok(runtime) => Some(runtime.spawn_blocking(move || drop(client))),
        Err(_) => {
            drop(client);
            None
        }
    }
}
