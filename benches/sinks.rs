//! Sinks: the sustained delivery rate to each destination with 1 KiB
//! records, next to the same destination written by a plain client in a
//! loop (the same client library, batches of the same size), and the time
//! from an append to the record being visible at the destination at a
//! moderate rate. Run with `cargo bench --bench sinks`.
//!
//! The destinations are the real servers the tests use, started here on
//! loopback (`tests/common/services.rs`); one that is not installed is
//! skipped with a word. "Visible" is seen by polling the destination's
//! count of messages every millisecond (a Postgres `count(*)`, `XLEN`, the
//! JetStream stream's message count, the Kafka topic's high watermark, the
//! webhook's received bodies), so latencies carry up to ~1 ms of polling.
//!
//! Everything binds to 127.0.0.1 and each run is bounded in count and time.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use rill::engine::streams::names::StreamName;
use rill::engine::streams::types::{AppendInput, AppendRecord};
use rill::engine::Engine;
use serde_json::{json, Value};

mod support;
use support::{ms, percentile};

#[allow(dead_code)]
#[path = "../tests/common/services.rs"]
mod services;
#[allow(dead_code)]
#[path = "../tests/common/webhook.rs"]
mod webhook;

use services::{Daemon, Postgres};

const BASIN: &str = "bench-basin";
const RECORD_BYTES: usize = 1024;
const MESSAGES: usize = 20_000;
const BATCH: usize = 1000;
/// The moderate rate of the latency runs, and how many samples they take.
const LATENCY_INTERVAL: Duration = Duration::from_millis(20);
const LATENCY_SAMPLES: usize = 200;
/// No run waits longer than this for its destination.
const RUN_LIMIT: Duration = Duration::from_secs(120);

/// A destination under test and a plain client of it.
enum Destination {
    /// A receiver of its own per sink, by the name the sink writes to.
    Webhook(std::sync::Mutex<std::collections::HashMap<String, webhook::Hook>>),
    Postgres(Postgres),
    Redis(Daemon),
    Nats(Daemon),
    Kafka(Daemon),
}

impl Destination {
    fn kind(&self) -> &'static str {
        match self {
            Destination::Webhook(..) => "webhook",
            Destination::Postgres(_) => "postgres",
            Destination::Redis(_) => "redis",
            Destination::Nats(_) => "nats",
            Destination::Kafka(_) => "kafka",
        }
    }

    /// The sink's `destination`, writing to `name` (a table, a stream, a
    /// subject, a topic).
    async fn config(&self, name: &str) -> Value {
        match self {
            Destination::Webhook(hooks) => {
                let hook = webhook::Hook::default();
                let url = hook.start().await;
                hooks.lock().unwrap().insert(name.to_string(), hook);
                json!({ "webhook": { "url": url } })
            }
            Destination::Postgres(pg) => {
                json!({ "postgres": { "url": pg.url(), "table": name, "create_table": true } })
            }
            Destination::Redis(d) => json!({ "redis": {
                "url": format!("redis://127.0.0.1:{}", d.port), "stream": name } }),
            Destination::Nats(d) => json!({ "nats": {
                "url": format!("nats://127.0.0.1:{}", d.port), "subject": name,
                "create_stream": name } }),
            Destination::Kafka(d) => {
                // Made here, before anything asks for it: a client that
                // looked for it first would remember it missing.
                let brokers = format!("127.0.0.1:{}", d.port);
                make_kafka_topic(&brokers, name).await;
                json!({ "kafka": { "brokers": [brokers], "topic": name } })
            }
        }
    }

    /// A client that counts what the destination holds, made once: a
    /// new connection per poll would measure the connecting.
    async fn watcher(&self) -> Watcher {
        match self {
            Destination::Webhook(_) => Watcher::Webhook,
            Destination::Postgres(pg) => Watcher::Postgres(pg.client().await),
            Destination::Redis(d) => {
                let client = redis::Client::open(format!("redis://127.0.0.1:{}", d.port)).unwrap();
                Watcher::Redis(client.get_multiplexed_async_connection().await.unwrap())
            }
            Destination::Nats(d) => {
                let client = async_nats::connect(format!("127.0.0.1:{}", d.port))
                    .await
                    .unwrap();
                Watcher::Nats(async_nats::jetstream::new(client))
            }
            Destination::Kafka(d) => {
                let brokers = format!("127.0.0.1:{}", d.port);
                Watcher::Kafka(Arc::new(kafka_client_config(&brokers).create().unwrap()))
            }
        }
    }

    /// How many messages `name` holds (for a webhook: all it received).
    async fn count(&self, watcher: &Watcher, name: &str) -> usize {
        match (self, watcher) {
            (Destination::Webhook(hooks), _) => {
                let hook = hooks.lock().unwrap()[name].clone();
                let received = hook.received.lock().unwrap();
                received
                    .iter()
                    .map(|r| r.body["messages"].as_array().map_or(0, Vec::len))
                    .sum()
            }
            (_, Watcher::Postgres(client)) => {
                let query = format!("SELECT count(*) FROM {name}");
                match client.query_one(&query, &[]).await {
                    Ok(row) => row.get::<_, i64>(0) as usize,
                    Err(_) => 0,
                }
            }
            (_, Watcher::Redis(connection)) => redis::cmd("XLEN")
                .arg(name)
                .query_async(&mut connection.clone())
                .await
                .unwrap_or(0),
            (_, Watcher::Nats(js)) => match js.get_stream(name).await {
                Ok(mut stream) => stream.info().await.map_or(0, |i| i.state.messages as usize),
                Err(_) => 0,
            },
            (_, Watcher::Kafka(consumer)) => {
                let (consumer, topic) = (consumer.clone(), name.to_string());
                tokio::task::spawn_blocking(move || {
                    use rdkafka::consumer::Consumer;
                    consumer
                        .fetch_watermarks(&topic, 0, Duration::from_secs(5))
                        .map_or(0, |(_, high)| high as usize)
                })
                .await
                .unwrap()
            }
            _ => unreachable!("a watcher of another destination"),
        }
    }
}

/// See [`Destination::watcher`].
enum Watcher {
    Webhook,
    Postgres(tokio_postgres::Client),
    Redis(redis::aio::MultiplexedConnection),
    Nats(async_nats::jetstream::Context),
    Kafka(Arc<rdkafka::consumer::BaseConsumer>),
}

fn kafka_client_config(brokers: &str) -> rdkafka::ClientConfig {
    let mut config = rdkafka::ClientConfig::new();
    config.set("bootstrap.servers", brokers);
    config
}

/// Makes a topic of one partition (the broker makes none by itself).
async fn make_kafka_topic(brokers: &str, name: &str) {
    use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
    let admin: AdminClient<rdkafka::client::DefaultClientContext> =
        kafka_client_config(brokers).create().unwrap();
    let topic = NewTopic::new(name, 1, TopicReplication::Fixed(-1));
    let made = admin
        .create_topics([&topic], &AdminOptions::new())
        .await
        .unwrap();
    assert!(made.iter().all(Result::is_ok), "{made:?}");
}

/// Writes `MESSAGES` records of 1 KiB to `name` with the destination's own
/// client, `BATCH` at a time; returns messages per second.
async fn plain_client(destination: &Destination, name: &str) -> f64 {
    let body = vec![b'x'; RECORD_BYTES];
    let start = Instant::now();
    match destination {
        Destination::Webhook(_) => {
            let url = &webhook::Hook::default().start().await;
            let http = reqwest::Client::new();
            let text = String::from_utf8(body).unwrap();
            for batch in 0..MESSAGES / BATCH {
                let messages: Vec<Value> = (0..BATCH)
                    .map(|i| json!({ "seq_num": batch * BATCH + i, "record": { "body": text } }))
                    .collect();
                let resp = http
                    .post(url)
                    .json(&json!({ "messages": messages }))
                    .send()
                    .await
                    .unwrap();
                assert!(resp.status().is_success());
            }
        }
        Destination::Postgres(pg) => {
            let mut client = pg.client().await;
            // The columns the sink's table has.
            let create = format!(
                "CREATE TABLE {name} (seq_num bigint PRIMARY KEY, timestamp timestamptz, \
                 headers jsonb, body bytea)"
            );
            client.execute(&create, &[]).await.unwrap();
            let insert = format!(
                "INSERT INTO {name} SELECT s, to_timestamp(t / 1000.0), h::jsonb, b \
                 FROM unnest($1::bigint[], $2::bigint[], $3::text[], $4::bytea[]) AS u(s, t, h, b)"
            );
            for batch in 0..MESSAGES / BATCH {
                let seq_nums: Vec<i64> = (0..BATCH).map(|i| (batch * BATCH + i) as i64).collect();
                let headers = vec!["[]".to_string(); BATCH];
                let bodies = vec![body.clone(); BATCH];
                let txn = client.transaction().await.unwrap();
                let params: [&(dyn tokio_postgres::types::ToSql + Sync); 4] =
                    [&seq_nums, &seq_nums, &headers, &bodies];
                txn.execute(&insert, &params).await.unwrap();
                txn.commit().await.unwrap();
            }
        }
        Destination::Redis(d) => {
            let client = redis::Client::open(format!("redis://127.0.0.1:{}", d.port)).unwrap();
            let mut connection = client.get_multiplexed_async_connection().await.unwrap();
            for _ in 0..MESSAGES / BATCH {
                let mut pipe = redis::pipe();
                for _ in 0..BATCH {
                    pipe.cmd("XADD")
                        .arg(name)
                        .arg("*")
                        .arg("body")
                        .arg(&body)
                        .ignore();
                }
                let () = pipe.query_async(&mut connection).await.unwrap();
            }
        }
        Destination::Nats(d) => {
            let client = async_nats::connect(format!("127.0.0.1:{}", d.port))
                .await
                .unwrap();
            let js = async_nats::jetstream::new(client);
            js.get_or_create_stream(async_nats::jetstream::stream::Config {
                name: name.to_string(),
                subjects: vec![name.to_string()],
                ..Default::default()
            })
            .await
            .unwrap();
            let body = Bytes::from(body);
            // A plain loop: each publish acknowledged before the next, as
            // the sink does (pipelining would let a retry reorder).
            for _ in 0..MESSAGES {
                js.publish(name.to_string(), body.clone())
                    .await
                    .unwrap()
                    .await
                    .unwrap();
            }
        }
        Destination::Kafka(d) => {
            use rdkafka::producer::{FutureProducer, FutureRecord};
            let producer: FutureProducer = kafka_client_config(&format!("127.0.0.1:{}", d.port))
                .set("enable.idempotence", "true")
                .set("acks", "all")
                .create()
                .unwrap();
            make_kafka_topic(&format!("127.0.0.1:{}", d.port), name).await;
            for _ in 0..MESSAGES / BATCH {
                let pending: Vec<_> = (0..BATCH)
                    .map(|i| {
                        let key = i.to_string();
                        let record = FutureRecord::to(name).key(&key).payload(&body);
                        producer.send_result(record).map_err(|(e, _)| e).unwrap()
                    })
                    .collect();
                for delivery in pending {
                    delivery.await.unwrap().map_err(|(e, _)| e).unwrap();
                }
            }
        }
    }
    MESSAGES as f64 / start.elapsed().as_secs_f64()
}

struct Bench {
    engine: Arc<Engine>,
    base: String,
    http: reqwest::Client,
}

impl Bench {
    async fn stream(&self, name: &str) {
        let name = StreamName::parse(name).unwrap();
        let config = Default::default();
        self.engine
            .streams()
            .ensure_stream(BASIN, &name, &config)
            .await
            .unwrap();
    }

    async fn append(&self, stream: &str, count: usize) {
        let body = Bytes::from(vec![b'x'; RECORD_BYTES]);
        let records = (0..count)
            .map(|_| AppendRecord {
                timestamp: None,
                headers: Vec::new(),
                body: body.clone(),
            })
            .collect();
        let input = AppendInput {
            records,
            ..Default::default()
        };
        self.engine
            .streams()
            .append(BASIN, stream, input)
            .await
            .unwrap();
    }

    async fn sink(&self, name: &str, stream: &str, destination: Value) {
        let resp = self
            .http
            .put(format!("{}/v1/sinks/{name}", self.base))
            .header("s2-basin", BASIN)
            .json(&json!({
                "source": { "stream": stream }, "destination": destination, "max_batch": BATCH
            }))
            .send()
            .await
            .unwrap();
        assert!(resp.status().is_success(), "{}", resp.text().await.unwrap());
    }

    /// Messages per second from the sink's creation over a preloaded
    /// stream until the destination holds them all.
    async fn delivery_rate(&self, destination: &Destination) -> Option<f64> {
        let name = format!("load_{}", destination.kind());
        self.stream(&name).await;
        for _ in 0..MESSAGES / BATCH {
            self.append(&name, BATCH).await;
        }
        let start = Instant::now();
        let watcher = destination.watcher().await;
        self.sink(&name, &name, destination.config(&name).await)
            .await;
        while destination.count(&watcher, &name).await < MESSAGES {
            if start.elapsed() > RUN_LIMIT {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        Some(MESSAGES as f64 / start.elapsed().as_secs_f64())
    }

    /// Append-to-visible times, one record every `LATENCY_INTERVAL`.
    async fn latency(&self, destination: &Destination) -> Vec<Duration> {
        let name = format!("live_{}", destination.kind());
        self.stream(&name).await;
        let watcher = destination.watcher().await;
        self.sink(&name, &name, destination.config(&name).await)
            .await;
        // The first record makes the destination's stream or table.
        self.append(&name, 1).await;
        let deadline = Instant::now() + RUN_LIMIT;
        while destination.count(&watcher, &name).await < 1 && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let mut samples = Vec::with_capacity(LATENCY_SAMPLES);
        for i in 0..LATENCY_SAMPLES {
            let start = Instant::now();
            self.append(&name, 1).await;
            while destination.count(&watcher, &name).await < i + 2 {
                if Instant::now() > deadline {
                    println!(
                        "({} latency run timed out after {i} samples)",
                        destination.kind()
                    );
                    samples.sort();
                    return samples;
                }
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
            samples.push(start.elapsed());
            tokio::time::sleep(LATENCY_INTERVAL.saturating_sub(start.elapsed())).await;
        }
        samples.sort();
        samples
    }
}

/// The destinations installed here, each started on loopback.
fn destinations() -> Vec<Destination> {
    let mut out = Vec::new();
    out.push(Destination::Webhook(Default::default()));
    if let Some(pg) = Postgres::start() {
        out.push(Destination::Postgres(pg));
    }
    if let Some(redis) = Daemon::redis() {
        out.push(Destination::Redis(redis));
    }
    if let Some(nats) = Daemon::nats(&[]) {
        out.push(Destination::Nats(nats));
    }
    if let Some(kafka) = Daemon::tansu() {
        out.push(Destination::Kafka(kafka));
    }
    out
}

fn main() {
    let root = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("bench-sinks");
    let _ = std::fs::remove_dir_all(&root);
    std::fs::create_dir_all(&root).unwrap();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        println!(
            "Rill sinks benchmark ({MESSAGES} records of {RECORD_BYTES} B per run, batches of \
             {BATCH}; latency at {} records/s)",
            1000 / LATENCY_INTERVAL.as_millis()
        );
        let served = support::serve(&root.join("data"), BASIN).await;
        let bench = Bench {
            engine: served.engine.clone(),
            base: served.base.clone(),
            http: reqwest::Client::new(),
        };

        println!();
        println!(
            "{:<10}{:>16}{:>22}{:>26}",
            "", "sink", "plain client", "append to visible"
        );
        for destination in destinations() {
            let kind = destination.kind();
            let rate = bench.delivery_rate(&destination).await;
            let plain = plain_client(&destination, &format!("plain_{kind}")).await;
            let latency = bench.latency(&destination).await;
            let rate = rate.map_or("timed out".to_string(), |r| format!("{r:.0} msg/s"));
            println!(
                "{kind:<10}{rate:>16}{:>16.0} msg/s   p50 {}  p99 {}",
                plain,
                ms(percentile(&latency, 0.5)),
                ms(percentile(&latency, 0.99)),
            );
        }
        served.stop().await;
    });
    let _ = std::fs::remove_dir_all(&root);
}
