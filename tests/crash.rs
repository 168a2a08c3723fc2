//! Crash test: a real `rill` process takes appends from concurrent clients
//! and is killed with SIGKILL at random moments, several times. After each
//! restart every acknowledged record must be there with its seq num,
//! timestamp and body, with no gaps and no duplicates, and any record that
//! was not acknowledged must be whole.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rand::Rng;
use serde_json::{json, Value};

mod common;
use common::binary::RillProcess as Server;

const BASIN: &str = "crash-basin";
const STREAM: &str = "crash";
/// Kill cycles of the streams and collections tests: 5, or
/// `RILL_CRASH_ROUNDS` for a long run
/// (`RILL_CRASH_ROUNDS=100 cargo test --release --test crash`).
fn rounds() -> usize {
    std::env::var("RILL_CRASH_ROUNDS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(5)
}
const CLIENTS: usize = 8;

/// (seq num, timestamp, body) of every acknowledged record.
type Acked = Arc<Mutex<Vec<(u64, u64, String)>>>;

async fn append_until_failure(
    client: reqwest::Client,
    base: String,
    id: usize,
    round: usize,
    acked: Acked,
) {
    let mut n = 0u64;
    loop {
        let count = 1 + (n % 3) as usize;
        let bodies: Vec<String> = (0..count)
            .map(|i| format!("c{id}-r{round}-n{n}-i{i}"))
            .collect();
        let records: Vec<Value> = bodies.iter().map(|b| json!({ "body": b })).collect();
        let resp = client
            .post(format!("{base}/v1/streams/{STREAM}/records"))
            .header("s2-basin", BASIN)
            .json(&json!({ "records": records }))
            .send()
            .await;
        let Ok(resp) = resp else { return };
        if !resp.status().is_success() {
            return;
        }
        let Ok(ack) = resp.json::<Value>().await else {
            return;
        };
        let start = ack["start"]["seq_num"].as_u64().unwrap();
        let end = ack["end"]["seq_num"].as_u64().unwrap();
        assert_eq!(end - start, count as u64, "ack covers the batch");
        let mut acked = acked.lock().unwrap();
        // Single-record batches pin the exact timestamp; for longer ones the
        // ack gives the first and the last.
        acked.push((
            start,
            ack["start"]["timestamp"].as_u64().unwrap(),
            bodies[0].clone(),
        ));
        for (i, body) in bodies.iter().enumerate().skip(1) {
            let ts = if i == count - 1 {
                ack["end"]["timestamp"].as_u64().unwrap()
            } else {
                u64::MAX
            };
            acked.push((start + i as u64, ts, body.clone()));
        }
        n += 1;
    }
}

/// Reads the whole stream and checks it against what was acknowledged.
/// GETs `url` from the basin and decodes the JSON answer.
async fn get_json(client: &reqwest::Client, url: String) -> Value {
    let resp = client
        .get(url)
        .header("s2-basin", BASIN)
        .send()
        .await
        .unwrap();
    resp.json().await.unwrap()
}

async fn verify(client: &reqwest::Client, base: &str, acked: &[(u64, u64, String)]) -> u64 {
    let mut records: Vec<(u64, u64, String)> = Vec::new();
    loop {
        let resp = client
            .get(format!(
                "{base}/v1/streams/{STREAM}/records?seq_num={}&count=1000",
                records.len()
            ))
            .header("s2-basin", BASIN)
            .send()
            .await
            .unwrap();
        if resp.status() == reqwest::StatusCode::RANGE_NOT_SATISFIABLE {
            break; // at the tail
        }
        assert!(resp.status().is_success(), "read failed: {}", resp.status());
        let batch: Value = resp.json().await.unwrap();
        let page = batch["records"].as_array().unwrap();
        assert!(!page.is_empty());
        for r in page {
            records.push((
                r["seq_num"].as_u64().unwrap(),
                r["timestamp"].as_u64().unwrap(),
                r["body"].as_str().unwrap().to_string(),
            ));
        }
    }
    // No gaps, no duplicates, whole records, timestamps never decreasing.
    let mut seen = HashSet::new();
    let mut last_ts = 0;
    for (i, (seq, ts, body)) in records.iter().enumerate() {
        assert_eq!(*seq, i as u64, "gap or reordering at {i}");
        assert!(seen.insert(body.clone()), "duplicate record {body}");
        assert!(
            body.starts_with('c') && body.contains("-r") && body.contains("-i"),
            "torn record {body:?}"
        );
        assert!(*ts >= last_ts, "timestamps went backwards at {seq}");
        last_ts = *ts;
    }
    let by_seq: HashMap<u64, &(u64, u64, String)> = records.iter().map(|r| (r.0, r)).collect();
    for (seq, ts, body) in acked {
        let stored = by_seq
            .get(seq)
            .unwrap_or_else(|| panic!("acknowledged record {seq} ({body}) is lost"));
        assert_eq!(
            &stored.2, body,
            "acknowledged record {seq} has the wrong body"
        );
        if *ts != u64::MAX {
            assert_eq!(
                stored.1, *ts,
                "acknowledged record {seq} has the wrong timestamp"
            );
        }
    }
    records.len() as u64
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_appends_survive_sigkill() {
    let dir = tempfile::tempdir().unwrap();
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    let acked: Acked = Arc::default();
    let started = Instant::now();

    let rounds = rounds();
    for round in 0..=rounds {
        let server = Server::start(dir.path());
        if round == 0 {
            let resp = client
                .put(format!("{}/v1/basins/{BASIN}", server.base))
                .send()
                .await
                .unwrap();
            assert!(resp.status().is_success());
            let resp = client
                .put(format!("{}/v1/streams/{STREAM}", server.base))
                .header("s2-basin", BASIN)
                .json(&json!({"retention_policy": {"infinite": {}}}))
                .send()
                .await
                .unwrap();
            assert!(resp.status().is_success());
        }
        let snapshot = acked.lock().unwrap().clone();
        eprintln!(
            "round {round}: {} acknowledged records so far",
            snapshot.len()
        );
        let total = verify(&client, &server.base, &snapshot).await;
        assert!(total >= snapshot.len() as u64);
        if round == rounds {
            assert!(
                snapshot.len() > 100,
                "too few appends were acknowledged to mean anything: {}",
                snapshot.len()
            );
            server.kill();
            break;
        }

        let writers: Vec<_> = (0..CLIENTS)
            .map(|id| {
                tokio::spawn(append_until_failure(
                    client.clone(),
                    server.base.clone(),
                    id,
                    round,
                    acked.clone(),
                ))
            })
            .collect();
        let delay = rand::rng().random_range(200..900);
        tokio::time::sleep(Duration::from_millis(delay)).await;
        server.kill();
        for writer in writers {
            writer.await.unwrap();
        }
        assert!(
            started.elapsed() < Duration::from_secs(240),
            "crash test is taking too long"
        );
    }
}

/// Collections under SIGKILL: every acknowledged write survives, and after
/// each restart the events stream, replayed, rebuilds exactly the records
/// stream (they change atomically, so a crash cannot split them).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn collection_writes_survive_sigkill_and_streams_agree() {
    let dir = tempfile::tempdir().unwrap();
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    // Latest acknowledged (version, data) per record id.
    let acked: Arc<Mutex<HashMap<String, (u64, Value)>>> = Arc::default();

    let rounds = rounds();
    for round in 0..=rounds {
        let server = Server::start(dir.path());
        if round == 0 {
            let resp = client
                .put(format!("{}/v1/basins/{BASIN}", server.base))
                .send()
                .await
                .unwrap();
            assert!(resp.status().is_success());
            let resp = client
                .put(format!("{}/v1/collections/crashc", server.base))
                .header("s2-basin", BASIN)
                .send()
                .await
                .unwrap();
            assert!(resp.status().is_success());
        }
        let snapshot = acked.lock().unwrap().clone();
        verify_collection(&client, &server.base, &snapshot).await;
        if round == rounds {
            assert!(
                snapshot.len() >= 20,
                "too few acknowledged writes: {}",
                snapshot.len()
            );
            server.kill();
            break;
        }
        let writers: Vec<_> = (0..4)
            .map(|w| {
                let (client, base, acked) = (client.clone(), server.base.clone(), acked.clone());
                tokio::spawn(async move {
                    let mut n = 0u64;
                    loop {
                        let upserts: Vec<Value> = (0..1 + n % 3)
                            .map(|i| json!({"id": format!("w{w}-{}", (n + i) % 15), "data": {"n": n, "round": round}}))
                            .collect();
                        let Ok(resp) = client
                            .post(format!("{base}/v1/collections/crashc/records"))
                            .header("s2-basin", BASIN)
                            .json(&json!({ "upserts": upserts }))
                            .send()
                            .await
                        else {
                            return;
                        };
                        if !resp.status().is_success() {
                            return;
                        }
                        let Ok(body) = resp.json::<Value>().await else { return };
                        let mut acked = acked.lock().unwrap();
                        for r in body["records"].as_array().unwrap() {
                            let id = r["id"].as_str().unwrap().to_string();
                            let version = r["version"].as_u64().unwrap();
                            acked.insert(id, (version, r["data"].clone()));
                        }
                        n += 1;
                    }
                })
            })
            .collect();
        tokio::time::sleep(Duration::from_millis(rand::rng().random_range(200..700))).await;
        server.kill();
        for w in writers {
            w.await.unwrap();
        }
    }
}

async fn verify_collection(
    client: &reqwest::Client,
    base: &str,
    acked: &HashMap<String, (u64, Value)>,
) {
    // The records stream.
    let mut records: HashMap<String, (u64, Value)> = HashMap::new();
    let mut cursor: Option<String> = None;
    loop {
        let query = cursor.as_ref().map_or("limit=1000".to_string(), |c| {
            format!("cursor={c}&limit=1000")
        });
        let page: Value = get_json(
            client,
            format!("{base}/v1/collections/crashc/updated?{query}"),
        )
        .await;
        let batch = page["records"].as_array().unwrap();
        if batch.is_empty() {
            break;
        }
        for r in batch {
            records.insert(
                r["id"].as_str().unwrap().to_string(),
                (r["version"].as_u64().unwrap(), r["data"].clone()),
            );
        }
        cursor = Some(page["cursor"].as_str().unwrap().to_string());
    }
    // The events stream, replayed.
    let mut replayed: HashMap<String, (u64, Value)> = HashMap::new();
    let mut next = 0u64;
    loop {
        let resp = client
            .get(format!(
                "{base}/v1/collections/crashc/events?seq_num={next}&count=1000"
            ))
            .header("s2-basin", BASIN)
            .send()
            .await
            .unwrap();
        if resp.status() == reqwest::StatusCode::RANGE_NOT_SATISFIABLE {
            break;
        }
        let page: Value = resp.json().await.unwrap();
        let events = page["events"].as_array().unwrap();
        if events.is_empty() {
            break;
        }
        for e in events {
            replayed.insert(
                e["id"].as_str().unwrap().to_string(),
                (e["version"].as_u64().unwrap(), e["data"].clone()),
            );
            next = e["seq_num"].as_u64().unwrap() + 1;
        }
    }
    assert_eq!(
        records, replayed,
        "events replay and records stream disagree"
    );
    for (id, (version, data)) in acked {
        let (stored_version, stored_data) = records
            .get(id)
            .unwrap_or_else(|| panic!("acknowledged record {id} is lost"));
        assert!(
            stored_version >= version,
            "{id}: acknowledged v{version}, stored v{stored_version}"
        );
        if stored_version == version {
            assert_eq!(stored_data, data, "{id} v{version} has the wrong data");
        }
    }
}

/// Consumers under SIGKILL: workers receive and ack (and sometimes drop
/// what they got, as crashed workers do) while the server is killed at
/// random moments. A message whose ack was confirmed never comes back;
/// no delivery is made twice (delivery counts per message are unique and
/// at least `ack_wait` apart, across restarts too); and in the end every
/// message was delivered and the server holds every one acked.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consumer_state_survives_sigkill() {
    const MESSAGES: usize = 4000;
    const ACK_WAIT_MS: u64 = 1500;
    let dir = tempfile::tempdir().unwrap();
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    // Per seq num: every (delivery count, when received).
    type Deliveries = HashMap<u64, Vec<(u64, Instant, Instant)>>;
    let deliveries: Arc<Mutex<Deliveries>> = Arc::default();
    let confirmed: Arc<Mutex<HashSet<u64>>> = Arc::default();
    let started = Instant::now();

    for round in 0..=4 {
        let server = Server::start(dir.path());
        let base = server.base.clone();
        if round == 0 {
            let put = |path: &str, body: Value| {
                client
                    .put(format!("{base}{path}"))
                    .header("s2-basin", BASIN)
                    .json(&body)
                    .send()
            };
            assert!(put(&format!("/v1/basins/{BASIN}"), json!({}))
                .await
                .unwrap()
                .status()
                .is_success());
            let stream = json!({ "retention_policy": { "infinite": {} } });
            assert!(put("/v1/streams/jobs", stream)
                .await
                .unwrap()
                .status()
                .is_success());
            for chunk in 0..MESSAGES / 500 {
                let records: Vec<Value> = (0..500)
                    .map(|i| json!({ "body": format!("job-{}", chunk * 500 + i) }))
                    .collect();
                let resp = client
                    .post(format!("{base}/v1/streams/jobs/records"))
                    .header("s2-basin", BASIN)
                    .json(&json!({ "records": records }))
                    .send()
                    .await
                    .unwrap();
                assert!(resp.status().is_success());
            }
            let consumer = json!({ "source": { "stream": "jobs" }, "ack_wait_ms": ACK_WAIT_MS });
            assert!(put("/v1/consumers/crashq", consumer)
                .await
                .unwrap()
                .status()
                .is_success());
        }
        let last = round == 4;
        eprintln!(
            "round {round}: {} of {MESSAGES} acked, {} delivered at least once",
            confirmed.lock().unwrap().len(),
            deliveries.lock().unwrap().len()
        );
        let workers: Vec<_> = (0..6u64)
            .map(|w| {
                let (client, base) = (client.clone(), base.clone());
                let (deliveries, confirmed) = (deliveries.clone(), confirmed.clone());
                tokio::spawn(async move {
                    let mut n = 0u64;
                    let deadline = Instant::now() + Duration::from_secs(90);
                    while Instant::now() < deadline {
                        n += 1;
                        let batch = 1 + (n * 7 + w) % 25;
                        let sent = Instant::now();
                        let Ok(resp) = client
                            .post(format!("{base}/v1/consumers/crashq/receive"))
                            .header("s2-basin", BASIN)
                            .json(&json!({ "batch_size": batch, "wait_ms": 200 }))
                            .send()
                            .await
                        else {
                            return;
                        };
                        if !resp.status().is_success() {
                            return;
                        }
                        let Ok(body) = resp.json::<Value>().await else {
                            return;
                        };
                        let now = Instant::now();
                        let messages = body["messages"].as_array().unwrap().clone();
                        if messages.is_empty() && last {
                            // Done once the server has nothing pending or
                            // unread. (An ack whose answer a kill cut off
                            // is known only to the server.)
                            let state: Value =
                                get_json(&client, format!("{base}/v1/consumers/crashq")).await;
                            if state["state"]["pending"] == 0 && state["state"]["lag"] == 0 {
                                return;
                            }
                            continue;
                        }
                        {
                            let mut deliveries = deliveries.lock().unwrap();
                            let confirmed = confirmed.lock().unwrap();
                            for m in &messages {
                                let seq = m["seq_num"].as_u64().unwrap();
                                assert!(!confirmed.contains(&seq), "acked message {seq} came back");
                                deliveries.entry(seq).or_default().push((
                                    m["delivery_count"].as_u64().unwrap(),
                                    sent,
                                    now,
                                ));
                            }
                        }
                        // "Processing" takes a while, so kills land mid-work.
                        tokio::time::sleep(Duration::from_millis(3 * messages.len() as u64)).await;
                        // Before the last round, workers sometimes "crash"
                        // and lose what they received.
                        if !last && (n + w).is_multiple_of(6) {
                            continue;
                        }
                        let ids: Vec<&Value> = messages.iter().map(|m| &m["ack_id"]).collect();
                        let Ok(resp) = client
                            .post(format!("{base}/v1/consumers/crashq/ack"))
                            .header("s2-basin", BASIN)
                            .json(&json!({ "ack_ids": ids }))
                            .send()
                            .await
                        else {
                            return;
                        };
                        if resp.status().is_success() {
                            let mut confirmed = confirmed.lock().unwrap();
                            confirmed
                                .extend(messages.iter().map(|m| m["seq_num"].as_u64().unwrap()));
                        } else if resp.status().is_client_error() {
                            // Only an ack of a delivery made again since.
                            let body: Value = resp.json().await.unwrap();
                            assert_eq!(body["code"], "ack_expired", "{body}");
                        } else {
                            return;
                        }
                    }
                })
            })
            .collect();
        let server = if last {
            Some(server)
        } else {
            tokio::time::sleep(Duration::from_millis(rand::rng().random_range(300..1200))).await;
            server.kill();
            None
        };
        for w in workers {
            w.await.unwrap();
        }
        if last {
            let state: Value = get_json(&client, format!("{base}/v1/consumers/crashq")).await;
            assert_eq!(state["state"]["pending"], 0, "{state}");
            assert_eq!(state["state"]["lag"], 0, "{state}");
        }
        if let Some(server) = server {
            server.kill();
        }
        assert!(
            started.elapsed() < Duration::from_secs(240),
            "consumer crash test is taking too long"
        );
    }
    let deliveries = deliveries.lock().unwrap();
    assert_eq!(deliveries.len(), MESSAGES, "every message was delivered");
    eprintln!(
        "{} acks confirmed to workers; the server holds every message acked",
        confirmed.lock().unwrap().len()
    );
    let mut redelivered = 0;
    for (seq, list) in deliveries.iter() {
        let mut list = list.clone();
        list.sort_by_key(|(count, _, _)| *count);
        // A kill can cut off the answer to a receive that was made (and
        // is durable), so counts may skip; they never repeat.
        for pair in list.windows(2) {
            assert!(
                pair[1].0 > pair[0].0,
                "seq {seq}: a delivery was made twice: {list:?}"
            );
            // The server delivered the first time after that request was
            // sent, and the second before its answer arrived: their gap
            // bounds the time between the deliveries from above (A small
            // allowance for the millisecond rounding of stored deadlines.)
            assert!(
                pair[1].2.duration_since(pair[0].1) >= Duration::from_millis(ACK_WAIT_MS - 50),
                "seq {seq}: delivered again before its ack wait ran out"
            );
            redelivered += 1;
        }
    }
    eprintln!("{redelivered} redeliveries");
    assert!(redelivered > 0, "crashed workers caused redeliveries");
}
