//! What the sink destination tests and the sources' tests go through: the
//! real binary over a data directory (killed and started again),
//! concurrent writers to a collection, the collection's records and events
//! as read back, and the sinks' scenario (a backlog drained through
//! SIGKILLs of Rill, then the destination stopped for a few seconds under
//! writes and started again).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use super::binary::RillProcess;
use super::services::Restartable;
use super::BASIN;

/// The real binary over a data directory, killed and started again.
pub struct Rill {
    dir: tempfile::TempDir,
    process: Option<RillProcess>,
    pub http: reqwest::Client,
}

impl Rill {
    pub async fn start_with_collection(collection: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let process = Some(RillProcess::start(dir.path()));
        let rill = Self {
            dir,
            process,
            http: reqwest::Client::new(),
        };
        rill.send("POST", "/v1/basins", json!({ "basin": BASIN }))
            .await;
        rill.send("PUT", &format!("/v1/collections/{collection}"), json!({}))
            .await;
        rill
    }

    pub fn base(&self) -> String {
        self.process.as_ref().unwrap().base.clone()
    }

    pub fn kill_and_restart(&mut self) {
        self.kill();
        self.start();
    }

    /// SIGKILLs it; [`Self::start`] starts it again.
    pub fn kill(&mut self) {
        if let Some(process) = self.process.take() {
            process.kill();
        }
    }

    pub fn start(&mut self) {
        self.process = Some(RillProcess::start(self.dir.path()));
    }

    /// Kills it and starts it again at the same address.
    pub fn kill_and_restart_in_place(&mut self) {
        let listen = self.base().trim_start_matches("http://").to_string();
        if let Some(process) = self.process.take() {
            process.kill();
        }
        self.process = Some(RillProcess::start_at(self.dir.path(), &listen));
    }

    pub async fn send(&self, method: &str, path: &str, body: Value) -> Value {
        let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
        let resp = self
            .http
            .request(method, format!("{}{path}", self.base()))
            .header("s2-basin", BASIN)
            .json(&body)
            .send()
            .await
            .unwrap();
        let status = resp.status();
        let body: Value = resp.json().await.unwrap_or(Value::Null);
        assert!(status.is_success(), "{path}: {status} {body}");
        body
    }

    pub async fn get(&self, path: &str) -> Value {
        let resp = self
            .http
            .get(format!("{}{path}", self.base()))
            .header("s2-basin", BASIN)
            .send()
            .await
            .unwrap();
        assert!(resp.status().is_success(), "{path}: {}", resp.status());
        resp.json().await.unwrap()
    }

    /// Three writers at once, each 25 batches of two upserts and now and
    /// then a delete (which may find its record gone: a 404, no change).
    pub async fn write_concurrently(&self, collection: &str, round: usize) {
        self.write_batches(collection, 25, move |w, i| {
            let a = (w * 7 + i * 3 + round) % 30;
            let b = (a + 1 + (i + w) % 28) % 30;
            let upserts = json!([
                { "id": format!("k{a}"), "data": { "w": w, "i": i, "round": round } },
                { "id": format!("k{b}"), "data": { "w": w, "i": i, "text": "x".repeat(i) } },
            ]);
            let gone = (i % 4 == 3).then(|| format!("k{}", (i + w + round) % 30));
            (upserts, gone)
        })
        .await
    }

    /// Three writers at once, each writing `batches` batches: writer `w`'s
    /// batch `i` is `batch(w, i)`, upserts (a JSON array) and then maybe a
    /// delete (which may find its record gone: a 404, no change).
    pub async fn write_batches<F>(&self, collection: &str, batches: usize, batch: F)
    where
        F: Fn(usize, usize) -> (Value, Option<String>) + Clone + Send + 'static,
    {
        let writers: Vec<_> = (0..3)
            .map(|w| {
                let (http, base, batch) = (self.http.clone(), self.base(), batch.clone());
                let path = format!("{base}/v1/collections/{collection}/records");
                tokio::spawn(async move {
                    for i in 0..batches {
                        let (upserts, gone) = batch(w, i);
                        let resp = http
                            .post(&path)
                            .header("s2-basin", BASIN)
                            .json(&json!({ "upserts": upserts }))
                            .send()
                            .await
                            .unwrap();
                        assert!(resp.status().is_success(), "{}", resp.status());
                        if let Some(gone) = gone {
                            let resp = http
                                .post(&path)
                                .header("s2-basin", BASIN)
                                .json(&json!({ "deletes": [gone] }))
                                .send()
                                .await
                                .unwrap();
                            assert!(resp.status().is_success() || resp.status() == 404);
                        }
                    }
                })
            })
            .collect();
        for writer in writers {
            writer.await.unwrap();
        }
    }

    /// The collection's live records: id → (data, version).
    pub async fn records(&self, collection: &str) -> BTreeMap<String, (Value, u64)> {
        let mut out = BTreeMap::new();
        let mut cursor = String::new();
        loop {
            let page = self
                .get(&format!(
                    "/v1/collections/{collection}/updated?limit=1000&{cursor}"
                ))
                .await;
            for record in page["records"].as_array().unwrap() {
                let id = record["id"].as_str().unwrap().to_string();
                match record["deleted"].as_bool().unwrap() {
                    true => out.remove(&id),
                    false => out.insert(
                        id,
                        (record["data"].clone(), record["version"].as_u64().unwrap()),
                    ),
                };
            }
            if page["caught_up"] == true || page["records"].as_array().unwrap().is_empty() {
                return out;
            }
            cursor = format!("cursor={}", page["cursor"].as_str().unwrap());
        }
    }

    /// Every change event: (event, id, version), in order.
    pub async fn events(&self, collection: &str) -> Vec<(String, String, u64)> {
        self.event_values(collection)
            .await
            .iter()
            .map(|event| {
                (
                    event["event"].as_str().unwrap().to_string(),
                    event["id"].as_str().unwrap().to_string(),
                    event["version"].as_u64().unwrap(),
                )
            })
            .collect()
    }

    /// The collection's events as the events endpoint gives them.
    pub async fn event_values(&self, collection: &str) -> Vec<Value> {
        let mut out = Vec::new();
        loop {
            let path = format!(
                "/v1/collections/{collection}/events?seq_num={}&count=1000",
                out.len()
            );
            let resp = self
                .http
                .get(format!("{}{path}", self.base()))
                .header("s2-basin", BASIN)
                .send()
                .await
                .unwrap();
            // Past the tail: every event is read.
            if resp.status() == reqwest::StatusCode::RANGE_NOT_SATISFIABLE {
                return out;
            }
            assert!(resp.status().is_success(), "{path}: {}", resp.status());
            let page: Value = resp.json().await.unwrap();
            let events = page["events"].as_array().unwrap();
            if events.is_empty() {
                return out;
            }
            out.extend(events.iter().cloned());
        }
    }
}

/// Polls `destination` until it equals `source`, then asserts it does.
pub async fn converges<T, F, Fut>(what: &str, source: T, mut destination: F)
where
    T: PartialEq + std::fmt::Debug,
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = T>,
{
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let seen = destination().await;
        if seen == source || Instant::now() > deadline {
            assert_eq!(seen, source, "{what}: the destination equals the source");
            return;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// The scenario every destination goes through: writes, a SIGKILL of Rill
/// mid-delivery, writes while the destination is stopped for a few
/// seconds, the destination started again.
pub async fn through_kill_and_outage(
    rill: &mut Rill,
    collection: &str,
    sink: &str,
    destination: &mut impl Restartable,
) {
    // A backlog, drained while Rill is killed twice: a kill that falls
    // between a destination's write and its ack makes a redelivery, which
    // must change nothing.
    rill.send("POST", &format!("/v1/sinks/{sink}/pause"), json!({}))
        .await;
    rill.write_concurrently(collection, 0).await;
    rill.send("POST", &format!("/v1/sinks/{sink}/resume"), json!({}))
        .await;
    for _ in 0..2 {
        // Killed once it delivers again, unless it has drained already.
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let state = rill.get(&format!("/v1/sinks/{sink}")).await["state"].clone();
            if state["delivered"] != 0 {
                rill.kill_and_restart();
                break;
            }
            if state["lag"] == 0 && state["in_flight"] == 0 {
                break;
            }
            assert!(Instant::now() < deadline, "the sink delivers: {state}");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
    destination.stop();
    let outage = Instant::now();
    rill.write_concurrently(collection, 1).await;
    let left = Duration::from_secs(4).saturating_sub(outage.elapsed());
    tokio::time::sleep(left).await;
    destination.start_again();
    // The sink felt the outage (its worker's counts start with the
    // restart, so these failures are the outage's).
    let state = rill.get(&format!("/v1/sinks/{sink}")).await;
    assert!(state["state"]["failed"].as_u64().unwrap() > 0, "{state}");
    rill.write_concurrently(collection, 2).await;
}

/// Makes sink `name`, in small batches (a backlog takes many) that retry
/// quickly.
pub async fn create_sink(rill: &Rill, name: &str, source: Value, destination: Value) {
    rill.send(
        "PUT",
        &format!("/v1/sinks/{name}"),
        json!({
            "source": source,
            "destination": destination,
            "max_batch": 2,
            "retry": { "initial_ms": 50, "max_ms": 500 }
        }),
    )
    .await;
}
