//! The NATS JetStream destination: each message is published to a subject
//! made from the sink's template, with a `Nats-Msg-Id` of the sink and the
//! message's position, so that JetStream drops a redelivery inside its
//! duplicate window (two minutes unless the stream says otherwise). A batch
//! is published one message at a time, each acknowledged by JetStream
//! before the next, so that a retry never reorders.
//!
//! A stream record is published as its body, with its headers as NATS
//! headers (a header NATS cannot carry, or named `Nats-*` or `Rill-*`,
//! refuses its message) and
//! `Rill-Seq-Num`, `Rill-Timestamp`; a collection change as the JSON of its
//! record (records feed) or event (events feed), with `Rill-Id` and
//! `Rill-Version`.

use std::time::Duration;

use async_nats::jetstream;
use async_nats::HeaderMap;
use bytes::Bytes;
use tokio::sync::Mutex;

use super::failure::Failure;
use super::message::{position_hex, sink_identity, Change};
use crate::engine::consumers::{Delivery, Payload, Source};
use crate::engine::sinks::{NatsConfig, SinkInfo};

pub struct Nats {
    config: NatsConfig,
    /// Where message ids start: the sink.
    identity: String,
    /// The source's collection or stream, for the subject.
    collection: String,
    stream: String,
    context: Mutex<Option<jetstream::Context>>,
}

impl Nats {
    pub fn new(sink: &SinkInfo, config: NatsConfig) -> Self {
        let (collection, stream) = match &sink.config.source {
            Source::Collection { collection, .. } => (collection.clone(), String::new()),
            Source::Stream { stream } => (String::new(), stream.clone()),
        };
        Self {
            config,
            identity: sink_identity(sink),
            collection,
            stream,
            context: Mutex::new(None),
        }
    }

    pub async fn deliver(&self, batch: &[Delivery]) -> Result<(), Failure> {
        let messages: Vec<(String, HeaderMap, Bytes)> = batch
            .iter()
            .map(|d| self.message(d))
            .collect::<Result<_, _>>()?;
        let context = self.connected().await?;
        let timeout = Duration::from_millis(self.config.timeout_ms);
        let published = tokio::time::timeout(timeout, async {
            // One at a time, each acknowledged before the next: were they
            // pipelined, a failure of one with the next stored would put it
            // after the next when tried again (the next's id then drops
            // as a duplicate).
            for (subject, headers, payload) in messages {
                context
                    .publish_with_headers(subject, headers, payload)
                    .await
                    .map_err(|e| e.to_string())?
                    .await
                    .map_err(|e| e.to_string())?;
            }
            Ok::<_, String>(())
        })
        .await;
        match published {
            Ok(Ok(())) => Ok(()),
            Ok(Err(err)) => Err(self.failed(format!("NATS: {err}")).await),
            Err(_) => Err(self.failed("a NATS publish timed out".into()).await),
        }
    }

    /// Up when the JetStream account answers.
    pub async fn probe(&self) -> Result<(), Failure> {
        let context = self.connected().await?;
        let timeout = Duration::from_millis(self.config.timeout_ms);
        match tokio::time::timeout(timeout, context.query_account()).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(err)) => Err(self.failed(format!("NATS: {err}")).await),
            Err(_) => Err(self.failed("NATS did not answer".into()).await),
        }
    }

    /// A failure drops the connection: the next delivery makes a new one.
    /// Nothing NATS says is the message's fault.
    async fn failed(&self, error: String) -> Failure {
        *self.context.lock().await = None;
        Failure::Transient(error)
    }

    async fn connected(&self) -> Result<jetstream::Context, Failure> {
        let mut slot = self.context.lock().await;
        if let Some(context) = slot.as_ref() {
            return Ok(context.clone());
        }
        let timeout = Duration::from_millis(self.config.timeout_ms);
        // The client does not read credentials from the URL: they are
        // taken out of it and given as options (a user alone is a token).
        let mut url = reqwest::Url::parse(&self.config.url)
            .map_err(|_| Failure::Transient("destination.nats.url is not a URL".into()))?;
        let mut options = async_nats::ConnectOptions::new();
        let decode = |text: &str| {
            percent_encoding::percent_decode_str(text)
                .decode_utf8_lossy()
                .into_owned()
        };
        let (user, password) = (decode(url.username()), url.password().map(decode));
        match (user.is_empty(), password) {
            (false, Some(password)) => options = options.user_and_password(user, password),
            (false, None) => options = options.token(user),
            (true, _) => {}
        }
        let _ = url.set_username("");
        let _ = url.set_password(None);
        let client = options
            .connection_timeout(timeout)
            .request_timeout(Some(timeout))
            // Reconnects are this destination's to make (the next delivery),
            // not the client's, so that a failure is seen at once.
            .max_reconnects(Some(1))
            .connect(url.as_str())
            .await
            .map_err(|e| Failure::Transient(format!("cannot connect to NATS: {}", e.kind())))?;
        let context = jetstream::new(client);
        if let Some(name) = &self.config.create_stream {
            let config = jetstream::stream::Config {
                name: name.clone(),
                subjects: vec![self.config.subject_filter()],
                ..Default::default()
            };
            tokio::time::timeout(timeout, context.get_or_create_stream(config))
                .await
                .map_err(|_| Failure::Transient("NATS did not answer".into()))?
                .map_err(|e| Failure::Transient(format!("cannot make stream {name}: {e}")))?;
        }
        *slot = Some(context.clone());
        Ok(context)
    }

    /// The subject, headers and payload of one message.
    fn message(&self, delivery: &Delivery) -> Result<(String, HeaderMap, Bytes), Failure> {
        let mut headers = HeaderMap::new();
        let position = position_hex(delivery);
        headers.insert(
            "Nats-Msg-Id",
            format!("{}:{position}", self.identity).as_str(),
        );
        let subject = self.config.subject_for(
            delivery.message.key.as_deref(),
            &self.collection,
            &self.stream,
        );
        let payload = match &delivery.message.payload {
            Payload::Record(record) => {
                headers.insert("Rill-Seq-Num", record.seq_num.to_string().as_str());
                headers.insert("Rill-Timestamp", record.timestamp.to_string().as_str());
                for header in &record.headers {
                    let pair = (
                        std::str::from_utf8(&header.name),
                        std::str::from_utf8(&header.value),
                    );
                    let (Ok(name), Ok(value)) = pair else {
                        return Err(Failure::Permanent(format!(
                            "record {} has a header that is not UTF-8",
                            record.seq_num
                        )));
                    };
                    let name_ok =
                        !name.is_empty() && name.bytes().all(|b| b.is_ascii_graphic() && b != b':');
                    // `Nats-*` headers steer JetStream (expected sequences,
                    // rollups, TTLs) and `Rill-*` are this sink's own.
                    let lower = name.to_ascii_lowercase();
                    let reserved = lower.starts_with("nats-") || lower.starts_with("rill-");
                    if !name_ok || reserved || value.contains(['\r', '\n']) {
                        return Err(Failure::Permanent(format!(
                            "record {} has a header NATS cannot carry",
                            record.seq_num
                        )));
                    }
                    headers.append(name, value);
                }
                record.body.clone()
            }
            Payload::Doc(record) => record.json.clone(),
            Payload::Event(event) => serde_json::to_vec(event)
                .map(Bytes::from)
                .map_err(|e| Failure::Permanent(e.to_string()))?,
        };
        if !matches!(delivery.message.payload, Payload::Record(_)) {
            let change = Change::of(delivery).map_err(Failure::Permanent)?;
            headers.insert("Rill-Id", change.id.as_str());
            headers.insert("Rill-Version", change.version.to_string().as_str());
        }
        Ok((subject, headers, payload))
    }
}
