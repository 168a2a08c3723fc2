//! Consumers: receive + ack throughput with 1 and 8 workers and batches of
//! 1 and 100, and the time from append to delivery for a long-polling
//! worker. Run with `cargo bench --bench consumers`.
//!
//! Side by side with the references they compete against:
//! - one fdatasync (a receive and an ack are each one durable write, so a
//!   lone worker with batches of 1 is bound by two fsyncs per message);
//! - plain stream reads by the same workers, each keeping its own position
//!   (what a consumer adds is the server-kept, durable, acked state);
//! - a long-polling stream read, for the append-to-delivery latency.
//!
//! Everything binds to 127.0.0.1 and each run is bounded in time.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use rill::engine::streams::config::BasinConfigPatch;
use rill::engine::streams::names::BasinName;
use rill::engine::streams::names::StreamName;
use rill::engine::streams::types::{AppendInput, AppendRecord};
use rill::engine::Engine;
use rill::storage::FjallStorage;
use serde_json::{json, Value};

mod support;
use support::{fsync_reference, ms, percentile};

const BASIN: &str = "bench-basin";
const RUN_FOR: Duration = Duration::from_secs(3);
const RECORD_BYTES: usize = 1024;
const PRELOADED: usize = 400_000;
const LATENCY_SAMPLES: usize = 200;

/// Messages received and acked per second by `workers` workers sharing a
/// new consumer over the preloaded stream.
async fn receive_and_ack(base: &str, name: &str, workers: usize, batch: usize) -> f64 {
    let client = reqwest::Client::new();
    let resp = client
        .put(format!("{base}/v1/consumers/{name}"))
        .header("s2-basin", BASIN)
        .json(&json!({ "source": { "stream": "load" }, "max_ack_pending": 10_000 }))
        .send()
        .await
        .unwrap();
    assert!(resp.status().is_success());
    let start = Instant::now();
    let deadline = start + RUN_FOR;
    let tasks: Vec<_> = (0..workers)
        .map(|_| {
            let (client, base, name) = (client.clone(), base.to_string(), name.to_string());
            tokio::spawn(async move {
                let mut acked = 0usize;
                while Instant::now() < deadline {
                    let body: Value = client
                        .post(format!("{base}/v1/consumers/{name}/receive"))
                        .header("s2-basin", BASIN)
                        .json(&json!({ "batch_size": batch, "wait_ms": 1000 }))
                        .send()
                        .await
                        .unwrap()
                        .json()
                        .await
                        .unwrap();
                    let ids: Vec<&Value> = body["messages"]
                        .as_array()
                        .unwrap()
                        .iter()
                        .map(|m| &m["ack_id"])
                        .collect();
                    let resp = client
                        .post(format!("{base}/v1/consumers/{name}/ack"))
                        .header("s2-basin", BASIN)
                        .json(&json!({ "ack_ids": ids }))
                        .send()
                        .await
                        .unwrap();
                    assert!(resp.status().is_success());
                    acked += ids.len();
                }
                acked
            })
        })
        .collect();
    let mut total = 0;
    for t in tasks {
        total += t.await.unwrap();
    }
    total as f64 / start.elapsed().as_secs_f64()
}

/// The reference: the same workers read the stream with plain reads, each
/// keeping its own position (worker `w` reads every `workers`-th batch).
async fn plain_reads(base: &str, workers: usize, batch: usize) -> f64 {
    let client = reqwest::Client::new();
    let start = Instant::now();
    let deadline = start + RUN_FOR;
    let tasks: Vec<_> = (0..workers)
        .map(|w| {
            let (client, base) = (client.clone(), base.to_string());
            tokio::spawn(async move {
                let mut read = 0usize;
                let mut next = w * batch;
                while Instant::now() < deadline && next + batch <= PRELOADED {
                    let body: Value = client
                        .get(format!(
                            "{base}/v1/streams/load/records?seq_num={next}&count={batch}"
                        ))
                        .header("s2-basin", BASIN)
                        .send()
                        .await
                        .unwrap()
                        .json()
                        .await
                        .unwrap();
                    read += body["records"].as_array().unwrap().len();
                    next += workers * batch;
                }
                read
            })
        })
        .collect();
    let mut total = 0;
    for t in tasks {
        total += t.await.unwrap();
    }
    total as f64 / start.elapsed().as_secs_f64()
}

/// Append-to-delivery latency: one record every 10 ms, each carrying when
/// it was sent, while one worker waits for it by `receive` (a consumer) or
/// by a long-polling read (the reference).
async fn delivery_latency(base: &str, stream: &str, by_consumer: bool) -> Vec<Duration> {
    let client = reqwest::Client::new();
    let origin = Instant::now();
    let resp = client
        .put(format!("{base}/v1/streams/{stream}"))
        .header("s2-basin", BASIN)
        .send()
        .await
        .unwrap();
    assert!(resp.status().is_success());
    if by_consumer {
        let resp = client
            .put(format!("{base}/v1/consumers/live"))
            .header("s2-basin", BASIN)
            .json(&json!({ "source": { "stream": stream }, "start": "tail" }))
            .send()
            .await
            .unwrap();
        assert!(resp.status().is_success());
    }
    let reader = {
        let (client, base, stream) = (client.clone(), base.to_string(), stream.to_string());
        tokio::spawn(async move {
            let mut samples = Vec::new();
            let mut next_seq = 0;
            let give_up = Instant::now() + Duration::from_secs(30);
            while samples.len() < LATENCY_SAMPLES && Instant::now() < give_up {
                let (records, ack_ids) = if by_consumer {
                    let body: Value = client
                        .post(format!("{base}/v1/consumers/live/receive"))
                        .header("s2-basin", BASIN)
                        .json(&json!({ "batch_size": 100, "wait_ms": 5000 }))
                        .send()
                        .await
                        .unwrap()
                        .json()
                        .await
                        .unwrap();
                    let messages = body["messages"].as_array().unwrap().clone();
                    let records: Vec<Value> =
                        messages.iter().map(|m| m["record"].clone()).collect();
                    let ids: Vec<Value> = messages.iter().map(|m| m["ack_id"].clone()).collect();
                    (records, ids)
                } else {
                    let body: Value = client
                        .get(format!("{base}/v1/streams/{stream}/records?seq_num={next_seq}&wait=5&clamp=true"))
                        .header("s2-basin", BASIN)
                        .send()
                        .await
                        .unwrap()
                        .json()
                        .await
                        .unwrap();
                    (body["records"].as_array().unwrap().clone(), Vec::new())
                };
                let now = origin.elapsed();
                for record in &records {
                    let sent: u64 = record["body"].as_str().unwrap().parse().unwrap();
                    samples.push(now.saturating_sub(Duration::from_micros(sent)));
                    next_seq = record["seq_num"].as_u64().unwrap() + 1;
                }
                if !ack_ids.is_empty() {
                    client
                        .post(format!("{base}/v1/consumers/live/ack"))
                        .header("s2-basin", BASIN)
                        .json(&json!({ "ack_ids": ack_ids }))
                        .send()
                        .await
                        .unwrap();
                }
            }
            samples
        })
    };
    tokio::time::sleep(Duration::from_millis(100)).await;
    for _ in 0..LATENCY_SAMPLES {
        let sent = origin.elapsed().as_micros().to_string();
        let resp = client
            .post(format!("{base}/v1/streams/{stream}/records"))
            .header("s2-basin", BASIN)
            .json(&json!({ "records": [{ "body": sent }] }))
            .send()
            .await
            .unwrap();
        assert!(resp.status().is_success());
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let mut samples = reader.await.unwrap();
    samples.sort();
    samples
}

fn main() {
    let root = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("bench-consumers");
    let _ = std::fs::remove_dir_all(&root);
    std::fs::create_dir_all(&root).unwrap();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        println!("Rill consumers benchmark (HTTP on loopback, fjall, {RECORD_BYTES} B records, {} s per run)", RUN_FOR.as_secs());
        let fsync_p50 = fsync_reference(&root, RECORD_BYTES);
        let storage = Arc::new(FjallStorage::open(&root.join("data")).unwrap());
        let engine = Engine::open(storage).unwrap();
        engine.streams().ensure_basin(&BasinName::parse(BASIN).unwrap(), &BasinConfigPatch::default()).await.unwrap();
        engine.streams().ensure_stream(BASIN, &StreamName::parse("load").unwrap(), &Default::default()).await.unwrap();
        let body = Bytes::from(vec![b'x'; RECORD_BYTES]);
        for _ in 0..PRELOADED / 1000 {
            let records = (0..1000)
                .map(|_| AppendRecord { timestamp: None, headers: Vec::new(), body: body.clone() })
                .collect();
            engine
                .streams()
                .append(BASIN, "load", AppendInput { records, ..Default::default() })
                .await
                .unwrap();
        }
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(rill::server::run(listener, engine.clone(), async {
            let _ = stop_rx.await;
        }));

        println!();
        println!("{:<34}{:>16}{:>30}", "receive + ack (explicit)", "consumer", "reference: plain reads");
        for (workers, batch) in [(1, 1), (8, 1), (1, 100), (8, 100)] {
            let name = format!("w{workers}-b{batch}");
            let rate = receive_and_ack(&base, &name, workers, batch).await;
            let reference = plain_reads(&base, workers, batch).await;
            println!(
                "{:<34}{rate:>10.0} msg/s{reference:>24.0} msg/s",
                format!("{workers} worker(s), batch {batch}")
            );
        }
        println!(
            "(a lone worker with batches of 1 makes two durable writes per message: at most {:.0} msg/s at one fsync each)",
            0.5 / fsync_p50.as_secs_f64().max(1e-9)
        );

        println!();
        let consumer = delivery_latency(&base, "live-consumer", true).await;
        let reference = delivery_latency(&base, "live-read", false).await;
        println!(
            "append to delivery, long-polling worker  p50 {}  p99 {}   reference (long-polling read): p50 {}  p99 {}",
            ms(percentile(&consumer, 0.5)),
            ms(percentile(&consumer, 0.99)),
            ms(percentile(&reference, 0.5)),
            ms(percentile(&reference, 0.99)),
        );
        let _ = stop_tx.send(());
        let _ = server.await;
    });
    let _ = std::fs::remove_dir_all(&root);
}
