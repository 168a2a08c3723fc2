//! Sinks to Kafka, against a real Kafka-protocol broker on loopback (Tansu,
//! see `common/services.rs`), through the scenario every destination goes
//! through (`common/sink_scenario.rs`): SIGKILLs of Rill mid-delivery, the
//! broker stopped for a few seconds under writes and started again.
//!
//! Kafka keeps what a crash of Rill makes it deliver twice (its producer's
//! de-duplication lasts one session), so the topics are read as a Kafka
//! consumer of Rill's should read them: repeats dropped by their
//! `Rill-Message-Id`. What must hold is that nothing is lost and each key's
//! changes come in order.

mod common;

use std::collections::{BTreeMap, HashSet};
use std::time::Duration;

use common::services::Daemon;
use common::sink_scenario::{converges, create_sink, through_kill_and_outage, Rill};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Headers;
use rdkafka::{ClientConfig, Message, Offset, TopicPartitionList};
use serde_json::{json, Value};

/// One message as read back from a topic.
struct Read {
    partition: i32,
    key: Option<Vec<u8>>,
    value: Option<Vec<u8>>,
    headers: BTreeMap<String, Vec<u8>>,
}

impl Read {
    fn key_text(&self) -> String {
        String::from_utf8(self.key.clone().expect("every change has its key")).unwrap()
    }

    fn header(&self, name: &str) -> String {
        String::from_utf8(self.headers[name].clone()).unwrap()
    }
}

/// Every message of `topic`, partition by partition, each in its order;
/// `None` while the broker or the topic is not there.
fn read_topic(brokers: &str, topic: &str) -> Option<Vec<Read>> {
    let timeout = Duration::from_secs(5);
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", "rill-test-reader")
        .set("enable.auto.commit", "false")
        .create()
        .ok()?;
    let metadata = consumer.fetch_metadata(Some(topic), timeout).ok()?;
    let partitions = metadata.topics().first()?.partitions().len() as i32;
    let mut out = Vec::new();
    for partition in 0..partitions {
        let (low, high) = consumer.fetch_watermarks(topic, partition, timeout).ok()?;
        if high <= low {
            continue;
        }
        let mut assignment = TopicPartitionList::new();
        assignment
            .add_partition_offset(topic, partition, Offset::Beginning)
            .ok()?;
        consumer.assign(&assignment).ok()?;
        let mut next = low;
        while next < high {
            let message = consumer.poll(timeout)?.ok()?;
            next = message.offset() + 1;
            let headers = message
                .headers()
                .map(|headers| {
                    headers
                        .iter()
                        .map(|h| (h.key.to_string(), h.value.unwrap_or_default().to_vec()))
                        .collect()
                })
                .unwrap_or_default();
            out.push(Read {
                partition,
                key: message.key().map(<[u8]>::to_vec),
                value: message.payload().map(<[u8]>::to_vec),
                headers,
            });
        }
    }
    Some(out)
}

/// The topic's messages less repeats (by `Rill-Message-Id`), each key's in
/// the order its partition holds them. A key found in two partitions
/// fails the test: it would have no order.
fn per_key(messages: Vec<Read>) -> BTreeMap<String, Vec<Read>> {
    let mut seen = HashSet::new();
    let mut partitions = BTreeMap::new();
    let mut out: BTreeMap<String, Vec<Read>> = BTreeMap::new();
    for message in messages {
        if !seen.insert(message.header("Rill-Message-Id")) {
            continue;
        }
        let key = message.key_text();
        let partition = *partitions.entry(key.clone()).or_insert(message.partition);
        assert_eq!(partition, message.partition, "key {key} in two partitions");
        out.entry(key).or_default().push(message);
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka_topics_hold_every_change_in_order_per_key() {
    let Some(mut kafka) = Daemon::tansu() else {
        return;
    };
    let brokers = format!("127.0.0.1:{}", kafka.port);
    let mut rill = Rill::start_with_collection("orders").await;
    let destination = |topic: &str, partitions: u32| {
        json!({ "kafka": {
            "brokers": [brokers], "topic": topic,
            "create_topic": { "partitions": partitions }, "timeout_ms": 2000
        }})
    };
    create_sink(
        &rill,
        "events-to-kafka",
        json!({ "collection": "orders" }),
        destination("orders-events", 3),
    )
    .await;
    create_sink(
        &rill,
        "records-to-kafka",
        json!({ "collection": "orders", "feed": "records" }),
        destination("orders-records", 2),
    )
    .await;
    through_kill_and_outage(&mut rill, "orders", "events-to-kafka", &mut kafka).await;

    // Every event, once, in order per key.
    let mut wanted: BTreeMap<String, Vec<(String, u64)>> = BTreeMap::new();
    for (event, id, version) in rill.events("orders").await {
        wanted.entry(id).or_default().push((event, version));
    }
    assert!(wanted.len() > 10, "{}", wanted.len());
    let read = |topic: &'static str| {
        let brokers = brokers.clone();
        async move {
            tokio::task::spawn_blocking(move || read_topic(&brokers, topic))
                .await
                .unwrap()
                .unwrap_or_default()
        }
    };
    converges("kafka events", wanted, || async {
        per_key(read("orders-events").await)
            .into_iter()
            .map(|(key, messages)| {
                let events = messages
                    .iter()
                    .map(|m| {
                        let event: Value =
                            serde_json::from_slice(m.value.as_ref().unwrap()).unwrap();
                        assert_eq!(event["id"], key.as_str());
                        assert_eq!(m.header("Rill-Id"), key);
                        let version = event["version"].as_u64().unwrap();
                        (event["event"].as_str().unwrap().to_string(), version)
                    })
                    .collect();
                (key, events)
            })
            .collect::<BTreeMap<_, _>>()
    })
    .await;

    // The records feed, read as compaction keeps a topic: each key's last
    // message as written (repeats included: a stale repeat last would be
    // what a compacted topic keeps), a tombstone deleting it.
    let wanted = rill.records("orders").await;
    converges("kafka records", wanted, || async {
        let mut last: BTreeMap<String, Read> = BTreeMap::new();
        for message in read("orders-records").await {
            last.insert(message.key_text(), message);
        }
        last.into_iter()
            .filter_map(|(key, message)| {
                let record: Value = serde_json::from_slice(message.value.as_ref()?).unwrap();
                let version = message.header("Rill-Version").parse().unwrap();
                Some((key, (record["data"].clone(), version)))
            })
            .collect::<BTreeMap<String, (Value, u64)>>()
    })
    .await;
}

#[tokio::test]
async fn kafka_settings_are_checked_and_the_password_never_shown() {
    let rill = Rill::start_with_collection("orders").await;
    let put = |destination: Value| {
        let request = rill
            .http
            .put(format!("{}/v1/sinks/k", rill.base()))
            .header("s2-basin", common::BASIN)
            .json(&json!({ "source": { "collection": "orders" }, "destination": destination }));
        async move { request.send().await.unwrap() }
    };
    for bad in [
        json!({ "kafka": { "brokers": [], "topic": "t" } }),
        json!({ "kafka": { "brokers": ["no-port"], "topic": "t" } }),
        json!({ "kafka": { "brokers": ["h:9092"], "topic": "a/b" } }),
        json!({ "kafka": { "brokers": ["h:9092"], "topic": "t", "create_topic": { "partitions": 0 } } }),
        json!({ "kafka": { "brokers": ["h:9092"], "topic": "t",
            "sasl": { "mechanism": "GSSAPI", "username": "u", "password": "p" } } }),
        json!({ "kafka": { "brokers": ["h:9092"], "topic": "t", "stray": 1 } }),
        json!({ "kafka": { "brokers": ["h:9092"], "topic": "t", "timeout_ms": 5 } }),
        json!({ "kafka": { "brokers": ["h:9092"], "topic": "t",
            "create_topic": { "replication_factor": 0 } } }),
        json!({ "kafka": { "brokers": ["h:9092"], "topic": "t",
            "sasl": { "mechanism": "PLAIN", "username": "u", "password": "p\u{0}" } } }),
    ] {
        let resp = put(bad.clone()).await;
        assert!(resp.status().is_client_error(), "{bad}: {}", resp.status());
        let body: Value = resp.json().await.unwrap();
        assert!(body["code"].is_string(), "{bad}: {body}");
    }
    let resp = put(json!({ "kafka": {
        "brokers": ["127.0.0.1:1"], "topic": "orders", "tls": true, "timeout_ms": 1000,
        "sasl": { "mechanism": "SCRAM-SHA-512", "username": "rill", "password": "hunter2" }
    }}))
    .await;
    assert!(resp.status().is_success(), "{}", resp.status());
    // Nor after the worker has tried (and failed) to connect with it.
    rill.send(
        "PUT",
        "/v1/collections/orders/records/o1",
        json!({ "n": 1 }),
    )
    .await;
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let shown = loop {
        let shown = rill.get("/v1/sinks/k").await;
        if shown["state"]["last_error"].is_string() {
            break shown;
        }
        assert!(std::time::Instant::now() < deadline, "{shown}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let kafka = &shown["config"]["destination"]["kafka"];
    assert_eq!(kafka["sasl"]["username"], "rill", "{shown}");
    assert_eq!(kafka["tls"], true, "{shown}");
    assert!(!shown.to_string().contains("hunter2"), "{shown}");
}

/// A stream's records keep their bytes: the `key` header's as the Kafka
/// key (two keys that are not UTF-8 stay two), headers' values as they are.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka_carries_stream_records_with_their_keys_and_headers() {
    let Some(kafka) = Daemon::tansu() else {
        return;
    };
    let rill = Rill::start_with_collection("unused").await;
    rill.send("POST", "/v1/streams", json!({ "stream": "log" }))
        .await;
    // Keys 0xff and 0xfe; a header valued 0x00 0x01; bodies "hello", "world".
    let records = json!({ "records": [
        { "headers": [["a2V5", "/w=="], ["dHJhY2U=", "AAE="]], "body": "aGVsbG8=" },
        { "headers": [["a2V5", "/g=="]], "body": "d29ybGQ=" },
    ]});
    let resp = rill
        .http
        .post(format!("{}/v1/streams/log/records", rill.base()))
        .header("s2-basin", common::BASIN)
        .header("s2-format", "base64")
        .json(&records)
        .send()
        .await
        .unwrap();
    assert!(resp.status().is_success(), "{}", resp.status());
    let brokers = format!("127.0.0.1:{}", kafka.port);
    create_sink(
        &rill,
        "log-to-kafka",
        json!({ "stream": "log" }),
        json!({ "kafka": { "brokers": [brokers], "topic": "log",
            "create_topic": { "partitions": 2 }, "timeout_ms": 2000 } }),
    )
    .await;
    type Seen = Vec<(Vec<u8>, Vec<u8>, Option<Vec<u8>>, String)>;
    let wanted: Seen = vec![
        (vec![0xfe], b"world".to_vec(), None, "1".into()),
        (vec![0xff], b"hello".to_vec(), Some(vec![0, 1]), "0".into()),
    ];
    converges("kafka stream records", wanted, || async {
        let brokers = brokers.clone();
        let read = tokio::task::spawn_blocking(move || read_topic(&brokers, "log"))
            .await
            .unwrap()
            .unwrap_or_default();
        let mut seen: Seen = read
            .iter()
            .map(|m| {
                (
                    m.key.clone().unwrap(),
                    m.value.clone().unwrap(),
                    m.headers.get("trace").cloned(),
                    m.header("Rill-Seq-Num"),
                )
            })
            .collect();
        seen.sort();
        seen
    })
    .await;
}
