//! The kill loop: the real binary under mixed load (plain appends, appends
//! with `match_seq_num`, collection writes, consumer receive and ack, all
//! at once) is killed with SIGKILL at a random moment, restarted on the
//! same data, and audited, round after round:
//! - every acknowledged append is at its seq num with its body;
//! - every record id holds at least its last acknowledged version (the
//!   same data if it is that version);
//! - no message whose ack was acknowledged is delivered again.
//!
//! CI runs a few rounds; the long run is one command:
//! `RILL_KILL_ROUNDS=100 cargo test --release --test kill_loop -- --nocapture`.

mod common;

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::binary::RillProcess;
use rand::Rng;
use serde_json::{json, Value};

const BASIN: &str = "kill-basin";

fn rounds() -> usize {
    std::env::var("RILL_KILL_ROUNDS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(3)
}

/// What clients were told, across rounds.
#[derive(Clone, Default)]
struct Audit {
    /// seq num → body, of every acknowledged append to `log`.
    appended: HashMap<u64, String>,
    /// record id → (version, data), the last acknowledged write.
    written: HashMap<String, (u64, Value)>,
    /// seq nums of `log` whose ack was acknowledged (a consumer reads it).
    acked: HashSet<u64>,
}

type Shared = Arc<Mutex<Audit>>;

struct Client {
    http: reqwest::Client,
    base: String,
}

impl Client {
    async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> Option<(u16, Value)> {
        let mut request = self
            .http
            .request(method, format!("{}{path}", self.base))
            .header("s2-basin", BASIN);
        if let Some(body) = body {
            request = request.json(&body);
        }
        let resp = request.send().await.ok()?;
        let status = resp.status().as_u16();
        Some((status, resp.json().await.ok()?))
    }

    async fn post(&self, path: &str, body: Value) -> Option<(u16, Value)> {
        self.call(reqwest::Method::POST, path, Some(body)).await
    }

    async fn get(&self, path: &str) -> Value {
        let (status, body) = self
            .call(reqwest::Method::GET, path, None)
            .await
            .expect("the server answers");
        assert_eq!(status, 200, "GET {path}: {body}");
        body
    }
}

/// Appends until the server dies; with `conditional`, each append names
/// the seq num it expects (and learns the tail from a refusal).
async fn appender(client: Client, id: usize, round: usize, conditional: bool, audit: Shared) {
    let mut expected: Option<u64> = None;
    for n in 0.. {
        let body = format!("r{round}-c{id}-{n}");
        let mut input = json!({ "records": [{ "body": body }] });
        if let (true, Some(seq)) = (conditional, expected) {
            input["match_seq_num"] = json!(seq);
        }
        let Some((status, ack)) = client.post("/v1/streams/log/records", input).await else {
            return;
        };
        match status {
            200 => {
                let seq = ack["start"]["seq_num"].as_u64().unwrap();
                let previous = audit.lock().unwrap().appended.insert(seq, body);
                assert!(previous.is_none(), "seq num {seq} acknowledged twice");
                expected = Some(seq + 1);
            }
            412 => expected = ack["seq_num_mismatch"].as_u64(),
            _ => return,
        }
    }
}

async fn writer(client: Client, id: usize, round: usize, audit: Shared) {
    for n in 0u64.. {
        let upserts: Vec<Value> = (0..1 + n % 3)
            .map(|i| json!({ "id": format!("w{id}-{}", (n + i) % 20), "data": { "n": n, "round": round } }))
            .collect();
        let Some((200, body)) = client
            .post(
                "/v1/collections/users/records",
                json!({ "upserts": upserts }),
            )
            .await
        else {
            return;
        };
        let mut audit = audit.lock().unwrap();
        for record in body["records"].as_array().unwrap() {
            let id = record["id"].as_str().unwrap().to_string();
            let version = record["version"].as_u64().unwrap();
            audit.written.insert(id, (version, record["data"].clone()));
        }
    }
}

async fn worker(client: Client, audit: Shared) {
    loop {
        let Some((200, body)) = client
            .post(
                "/v1/consumers/workers/receive",
                json!({ "batch_size": 20, "wait_ms": 100 }),
            )
            .await
        else {
            return;
        };
        let messages = body["messages"].as_array().cloned().unwrap_or_default();
        {
            let audit = audit.lock().unwrap();
            for m in &messages {
                let seq = m["seq_num"].as_u64().unwrap();
                assert!(
                    !audit.acked.contains(&seq),
                    "message {seq} was delivered again after its ack was acknowledged"
                );
            }
        }
        let ids: Vec<&Value> = messages.iter().map(|m| &m["ack_id"]).collect();
        let Some((200, _)) = client
            .post("/v1/consumers/workers/ack", json!({ "ack_ids": ids }))
            .await
        else {
            return;
        };
        let mut audit = audit.lock().unwrap();
        audit
            .acked
            .extend(messages.iter().map(|m| m["seq_num"].as_u64().unwrap()));
    }
}

/// Checks what the restarted server holds against what was acknowledged.
async fn verify(client: &Client, audit: &Audit) {
    let mut log = HashMap::new();
    loop {
        let path = format!(
            "/v1/streams/log/records?seq_num={}&count=1000&clamp=true",
            log.len()
        );
        let (status, page) = client
            .call(reqwest::Method::GET, &path, None)
            .await
            .unwrap();
        if status == 416 {
            break; // at the tail
        }
        assert_eq!(status, 200, "{path}: {page}");
        let records = page["records"].as_array().cloned().unwrap_or_default();
        if records.is_empty() {
            break;
        }
        for r in records {
            log.insert(
                r["seq_num"].as_u64().unwrap(),
                r["body"].as_str().unwrap().to_string(),
            );
        }
    }
    for (seq, body) in &audit.appended {
        assert_eq!(
            log.get(seq),
            Some(body),
            "acknowledged append at {seq} is gone or changed"
        );
    }
    for (id, (version, data)) in &audit.written {
        let record = client
            .get(&format!("/v1/collections/users/records/{id}"))
            .await;
        let found = record["version"].as_u64().unwrap();
        assert!(
            found >= *version,
            "record {id}: version {found} < acknowledged {version}"
        );
        if found == *version {
            assert_eq!(&record["data"], data, "record {id} at version {version}");
        }
    }
}

async fn set_up(client: &Client) {
    for (path, body) in [
        (format!("/v1/basins/{BASIN}"), json!({})),
        (
            "/v1/streams/log".into(),
            json!({ "retention_policy": { "infinite": {} } }),
        ),
        ("/v1/collections/users".into(), json!({})),
    ] {
        let (status, said) = client
            .call(reqwest::Method::PUT, &path, Some(body))
            .await
            .unwrap();
        assert!(status < 300, "{path}: {said}");
    }
    let consumer = json!({ "source": { "stream": "log" }, "ack_wait_ms": 1500 });
    let (status, said) = client
        .call(
            reqwest::Method::PUT,
            "/v1/consumers/workers",
            Some(consumer),
        )
        .await
        .unwrap();
    assert!(status < 300, "{said}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mixed_load_survives_sigkill_round_after_round() {
    let dir = tempfile::tempdir().unwrap();
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    let audit: Shared = Arc::default();
    let started = Instant::now();
    let rounds = rounds();
    for round in 0..=rounds {
        let server = RillProcess::start(dir.path());
        let client = || Client {
            http: http.clone(),
            base: server.base.clone(),
        };
        if round == 0 {
            set_up(&client()).await;
        }
        let so_far = audit.lock().unwrap().clone();
        verify(&client(), &so_far).await;
        if round == rounds {
            server.kill();
            break;
        }
        let mut tasks = Vec::new();
        for id in 0..4 {
            tasks.push(tokio::spawn(appender(
                client(),
                id,
                round,
                id % 2 == 1,
                audit.clone(),
            )));
        }
        for id in 0..3 {
            tasks.push(tokio::spawn(writer(client(), id, round, audit.clone())));
        }
        for _ in 0..3 {
            tasks.push(tokio::spawn(worker(client(), audit.clone())));
        }
        let delay = rand::rng().random_range(300..1200);
        tokio::time::sleep(Duration::from_millis(delay)).await;
        server.kill();
        for task in tasks {
            task.await.unwrap();
        }
        assert!(
            started.elapsed() < Duration::from_secs(60 + 30 * rounds as u64),
            "the kill loop is taking too long"
        );
    }
    let audit = audit.lock().unwrap();
    eprintln!(
        "{rounds} kill cycles under mixed load: {} acknowledged appends, {} records at their last \
         acknowledged version, {} acknowledged acks, all audited after every restart",
        audit.appended.len(),
        audit.written.len(),
        audit.acked.len()
    );
    assert!(
        audit.appended.len() > 50 && !audit.written.is_empty() && !audit.acked.is_empty(),
        "too little load to mean anything"
    );
}
