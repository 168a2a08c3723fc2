//! Appending over HTTP for a while, and what it measured.

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::json;

use super::{ms, percentile};

pub const RECORD_BYTES: usize = 1024;
pub const BASIN: &str = "bench-basin";

pub struct Outcome {
    pub records: u64,
    pub elapsed: Duration,
    pub latencies: Vec<Duration>,
}

impl Outcome {
    pub fn print(mut self, label: &str, fsync_p50: Duration) {
        self.latencies.sort();
        let secs = self.elapsed.as_secs_f64();
        let rate = self.records as f64 / secs;
        let p50 = percentile(&self.latencies, 0.5);
        println!(
            "{label:<40}{rate:>9.0} rec/s {:>7.1} MiB/s  p50 {}  p99 {}  (p50 = {:.1}x fsync)",
            rate * RECORD_BYTES as f64 / (1024.0 * 1024.0),
            ms(p50),
            ms(percentile(&self.latencies, 0.99)),
            p50.as_secs_f64() / fsync_p50.as_secs_f64().max(1e-9),
        );
    }
}

pub fn body(i: usize) -> String {
    let mut s = format!("{i:08}-");
    while s.len() < RECORD_BYTES {
        s.push((b'a' + (s.len() % 26) as u8) as char);
    }
    s
}

/// `appenders` clients appending `batch` records per request over HTTP
/// (JSON) for `run_for`, sending `token` if given.
pub async fn http_appends(
    base: &str,
    stream: &str,
    appenders: usize,
    batch: usize,
    token: Option<&str>,
    run_for: Duration,
) -> Outcome {
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(appenders)
        // No append waits forever: the run is bounded.
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap();
    let payload: Arc<str> = {
        let records: Vec<_> = (0..batch).map(|i| json!({ "body": body(i) })).collect();
        serde_json::to_string(&json!({ "records": records }))
            .unwrap()
            .into()
    };
    let url: Arc<str> = format!("{base}/v1/streams/{stream}/records").into();
    let start = Instant::now();
    let deadline = start + run_for;
    let token: Option<Arc<str>> = token.map(Into::into);
    let tasks: Vec<_> = (0..appenders)
        .map(|_| {
            let (client, payload, url) = (client.clone(), payload.clone(), url.clone());
            let token = token.clone();
            tokio::spawn(async move {
                let mut latencies = Vec::new();
                while Instant::now() < deadline {
                    let sent = Instant::now();
                    let mut request = client.post(&*url).header("s2-basin", BASIN);
                    if let Some(token) = &token {
                        request = request.bearer_auth(token);
                    }
                    let resp = request
                        .header("content-type", "application/json")
                        .body(payload.to_string())
                        .send()
                        .await
                        .expect("append request");
                    assert!(
                        resp.status().is_success(),
                        "append failed: {}",
                        resp.status()
                    );
                    resp.bytes().await.unwrap();
                    latencies.push(sent.elapsed());
                }
                latencies
            })
        })
        .collect();
    let mut latencies = Vec::new();
    for task in tasks {
        latencies.extend(task.await.unwrap());
    }
    Outcome {
        records: (latencies.len() * batch) as u64,
        elapsed: start.elapsed(),
        latencies,
    }
}
