//! Durable append and catch-up read throughput, with 1 KiB records.
//!
//! Run with `cargo bench`. Prints, next to each other:
//! - the references: one 1 KiB write + `fdatasync` on the same disk, in a
//!   loop (what one durable write costs with no batching at all), and an
//!   HTTP round trip that does no work;
//! - Rill over HTTP (JSON, what clients see) and the engine alone (no HTTP),
//!   with 1, 16 and 256 concurrent appenders, one record per append and 100
//!   records per append: records/s, MiB/s, and append-to-ack p50/p99;
//! - catch-up reads over HTTP: MiB/s reading the stream back from the start.
//!
//! Everything binds to 127.0.0.1 and each run is bounded in time.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use rill::engine::streams::config::StreamConfigPatch;
use rill::engine::streams::names::StreamName;
use rill::engine::streams::types::{AppendInput, AppendRecord};
use rill::engine::Engine;

const RUN_FOR: Duration = Duration::from_secs(3);

mod support;
use support::appends::{body, http_appends, Outcome, BASIN, RECORD_BYTES};
use support::{fsync_reference, ms, percentile};

async fn engine_appends(
    engine: &Arc<Engine>,
    stream: &str,
    appenders: usize,
    batch: usize,
) -> Outcome {
    let records: Vec<AppendRecord> = (0..batch)
        .map(|i| AppendRecord {
            timestamp: None,
            headers: vec![],
            body: Bytes::from(body(i)),
        })
        .collect();
    let start = Instant::now();
    let deadline = start + RUN_FOR;
    let tasks: Vec<_> = (0..appenders)
        .map(|_| {
            let (engine, records, stream) = (engine.clone(), records.clone(), stream.to_string());
            tokio::spawn(async move {
                let mut latencies = Vec::new();
                while Instant::now() < deadline {
                    let sent = Instant::now();
                    let input = AppendInput {
                        records: records.clone(),
                        ..Default::default()
                    };
                    engine
                        .streams()
                        .append(BASIN, &stream, input)
                        .await
                        .expect("append");
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

/// The second reference: an HTTP round trip that does no work, so the ack
/// latency over HTTP can be read as fsync + round trip + Rill's own cost.
async fn http_round_trip(base: &str) {
    let client = reqwest::Client::new();
    let mut samples = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(1);
    while Instant::now() < deadline {
        let sent = Instant::now();
        client
            .get(format!("{base}/health"))
            .send()
            .await
            .unwrap()
            .bytes()
            .await
            .unwrap();
        samples.push(sent.elapsed());
    }
    samples.sort();
    println!(
        "reference: HTTP round trip (GET /health) {:>9.0} req/s            p50 {}  p99 {}",
        samples.len() as f64,
        ms(percentile(&samples, 0.5)),
        ms(percentile(&samples, 0.99)),
    );
}

async fn catch_up_read(base: &str, stream: &str, limit: u64) -> (u64, Duration) {
    let client = reqwest::Client::new();
    let start = Instant::now();
    let (mut next, mut bytes) = (0u64, 0u64);
    while next < limit && start.elapsed() < Duration::from_secs(20) {
        let resp = client
            .get(format!("{base}/v1/streams/{stream}/records?seq_num={next}"))
            .header("s2-basin", BASIN)
            .send()
            .await
            .unwrap();
        let body = resp.bytes().await.unwrap();
        let batch: serde_json::Value = serde_json::from_slice(&body).unwrap();
        let records = batch["records"].as_array().unwrap();
        if records.is_empty() {
            break;
        }
        next = records.last().unwrap()["seq_num"].as_u64().unwrap() + 1;
        bytes += records
            .iter()
            .map(|r| r["body"].as_str().unwrap().len() as u64 + 8)
            .sum::<u64>();
    }
    (bytes, start.elapsed())
}

fn main() {
    // Data goes under target/ so it sits on the same disk as a real data dir.
    let root = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("bench-data");
    let _ = std::fs::remove_dir_all(&root);
    std::fs::create_dir_all(&root).unwrap();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        println!(
            "Rill append benchmark: 1 KiB records, {} s per run, {} cores",
            RUN_FOR.as_secs(),
            std::thread::available_parallelism().map_or(1, |n| n.get())
        );
        let fsync_p50 = fsync_reference(&root, RECORD_BYTES);

        let served = support::serve(&root.join("db"), BASIN).await;
        let (engine, base) = (served.engine.clone(), served.base.clone());

        http_round_trip(&base).await;
        for batch in [1usize, 100] {
            for appenders in [1usize, 16, 256] {
                let stream = format!("http-{batch}-{appenders}");
                engine
                    .streams()
                    .create_stream(
                        BASIN,
                        &StreamName::parse(stream.as_str()).unwrap(),
                        &StreamConfigPatch::default(),
                        None,
                    )
                    .await
                    .unwrap();
                let label = format!("http   {appenders:>3} appenders x {batch:>3} rec/append");
                http_appends(&base, &stream, appenders, batch, None, RUN_FOR)
                    .await
                    .print(&label, fsync_p50);
            }
        }
        for batch in [1usize, 100] {
            for appenders in [1usize, 16, 256] {
                let stream = format!("engine-{batch}-{appenders}");
                engine
                    .streams()
                    .create_stream(
                        BASIN,
                        &StreamName::parse(stream.as_str()).unwrap(),
                        &StreamConfigPatch::default(),
                        None,
                    )
                    .await
                    .unwrap();
                let label = format!("engine {appenders:>3} appenders x {batch:>3} rec/append");
                engine_appends(&engine, &stream, appenders, batch)
                    .await
                    .print(&label, fsync_p50);
            }
        }

        let tail = engine
            .streams()
            .check_tail(BASIN, "http-100-16")
            .await
            .unwrap()
            .seq_num;
        let (bytes, elapsed) = catch_up_read(&base, "http-100-16", tail).await;
        println!(
            "http catch-up read of {} records       {:>9.1} MiB/s",
            tail,
            bytes as f64 / (1024.0 * 1024.0) / elapsed.as_secs_f64()
        );
        println!("targets: >= 100,000 durable rec/s with batching; ack p50 <= 2x fsync p50");

        served.stop().await;
    });
    let _ = std::fs::remove_dir_all(&root);
}
