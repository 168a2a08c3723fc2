//! Crash test: a real `rill` process takes appends from concurrent clients
//! and is killed with SIGKILL at random moments, several times. After each
//! restart every acknowledged record must be there with its seq num,
//! timestamp and body, with no gaps and no duplicates, and any record that
//! was not acknowledged must be whole.

use std::collections::{HashMap, HashSet};
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rand::Rng;
use serde_json::{json, Value};

const BASIN: &str = "crash-basin";
const STREAM: &str = "crash";
const ROUNDS: usize = 5;
const CLIENTS: usize = 8;

struct Server {
    child: Child,
    base: String,
}

impl Server {
    fn start(data_dir: &std::path::Path) -> Self {
        let mut child = Command::new(env!("CARGO_BIN_EXE_rill"))
            .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
            .arg(data_dir)
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("rill starts");
        let stderr = child.stderr.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut sent = false;
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if !sent && line.contains("rill is listening") {
                    if let Some(addr) = line.split("addr=").nth(1) {
                        let addr = addr.split_whitespace().next().unwrap_or("").to_string();
                        let _ = tx.send(addr);
                        sent = true;
                    }
                }
            }
        });
        let addr = rx
            .recv_timeout(Duration::from_secs(60))
            .expect("server reports its address");
        Server {
            child,
            base: format!("http://{addr}"),
        }
    }

    fn kill(mut self) {
        // SIGKILL: no shutdown handler runs.
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }
}

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

    for round in 0..=ROUNDS {
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
        if round == ROUNDS {
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
