//! Collections: upserts per second (one per request and batched), paging
//! `/updated` over 1,000,000 records (plain, and filtered to 1 %, 10 % and
//! 100 %), and point lookups, all over HTTP on
//! loopback with fjall underneath. Run with `cargo bench --bench collections`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use rill::engine::collections::CollectionName;
use rill::engine::collections::WriteOp;
use rill::engine::streams::config::BasinConfigPatch;
use rill::engine::streams::names::BasinName;
use rill::engine::Engine;
use rill::storage::FjallStorage;
use serde_json::{json, Map, Value};

const BASIN: &str = "bench-basin";
const RUN_FOR: Duration = Duration::from_secs(3);
const PAGED_RECORDS: usize = 1_000_000;

fn data(i: usize) -> Map<String, Value> {
    // `bucket` lets the filtered paging pick 1 %, 10 % or all records.
    json!({"name": format!("user-{i}"), "plan": "pro", "seats": i % 50, "active": true,
           "bucket": i % 100})
    .as_object()
    .unwrap()
    .clone()
}

async fn upserts(base: &str, coll: &str, clients: usize, batch: usize) -> f64 {
    let client = reqwest::Client::new();
    let start = Instant::now();
    let deadline = start + RUN_FOR;
    let tasks: Vec<_> = (0..clients)
        .map(|c| {
            let (client, url) = (
                client.clone(),
                format!("{base}/v1/collections/{coll}/records"),
            );
            tokio::spawn(async move {
                let mut done = 0usize;
                let mut n = 0usize;
                while Instant::now() < deadline {
                    let upserts: Vec<Value> = (0..batch)
                        .map(|i| json!({"id": format!("c{c}-{n}-{i}"), "data": data(i)}))
                        .collect();
                    let resp = client
                        .post(&url)
                        .header("s2-basin", BASIN)
                        .json(&json!({ "upserts": upserts }))
                        .send()
                        .await
                        .unwrap();
                    assert!(resp.status().is_success());
                    resp.bytes().await.unwrap();
                    done += batch;
                    n += 1;
                }
                done
            })
        })
        .collect();
    let mut total = 0;
    for t in tasks {
        total += t.await.unwrap();
    }
    total as f64 / start.elapsed().as_secs_f64()
}

fn main() {
    let root = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("bench-collections");
    let _ = std::fs::remove_dir_all(&root);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let storage = Arc::new(FjallStorage::open(&root).unwrap());
        let engine = Engine::open(storage).unwrap();
        engine.streams().ensure_basin(&BasinName::parse(BASIN).unwrap(), &BasinConfigPatch::default()).await.unwrap();
        for coll in ["single", "batched", "paged"] {
            engine.collections().ensure_collection(BASIN, &CollectionName::parse(coll).unwrap(), &Default::default()).await.unwrap();
        }
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(rill::server::run(listener, engine.clone(), async {
            let _ = stop_rx.await;
        }));

        println!("Rill collections benchmark (HTTP on loopback, fjall, {} s per run)", RUN_FOR.as_secs());
        for clients in [1, 16] {
            let rate = upserts(&base, "single", clients, 1).await;
            println!("upserts, 1 per request, {clients:>2} clients      {rate:>10.0} records/s");
        }
        for clients in [1, 16] {
            let rate = upserts(&base, "batched", clients, 100).await;
            println!("upserts, 100 per request, {clients:>2} clients    {rate:>10.0} records/s");
        }

        // Load 1M records straight through the engine, 1000 per write.
        let load = Instant::now();
        for chunk in 0..PAGED_RECORDS / 1000 {
            let ops = (0..1000)
                .map(|i| WriteOp::Upsert {
                    id: format!("r{:07}", chunk * 1000 + i),
                    data: data(i),
                    expected_version: None,
                })
                .collect();
            engine.collections().write_records(BASIN, "paged", ops).await.unwrap();
        }
        println!(
            "loaded {PAGED_RECORDS} records in {:.1} s ({:.0} records/s, 1000 per write, engine)",
            load.elapsed().as_secs_f64(),
            PAGED_RECORDS as f64 / load.elapsed().as_secs_f64()
        );

        let client = reqwest::Client::new();
        let start = Instant::now();
        let (mut seen, mut cursor) = (0usize, None::<String>);
        while seen < PAGED_RECORDS && start.elapsed() < Duration::from_secs(120) {
            let query = cursor.as_ref().map_or("limit=1000".into(), |c| format!("cursor={c}&limit=1000"));
            let body = client
                .get(format!("{base}/v1/collections/paged/updated?{query}"))
                .header("s2-basin", BASIN)
                .send()
                .await
                .unwrap()
                .bytes()
                .await
                .unwrap();
            let page: Value = serde_json::from_slice(&body).unwrap();
            let n = page["records"].as_array().unwrap().len();
            if n == 0 {
                break;
            }
            seen += n;
            cursor = Some(page["cursor"].as_str().unwrap().to_string());
        }
        let rate = seen as f64 / start.elapsed().as_secs_f64();
        println!("/updated paging over {seen} records, 1000 per page  {rate:>10.0} records/s  (target >= 300,000)");

        // Filtered: every page scans up to 10,000 records, returns up to
        // 1000 matches, and says whether it caught up.
        for (percent, condition) in [(1, "bucket<1"), (10, "bucket<10"), (100, "bucket<100")] {
            let start = Instant::now();
            let (mut returned, mut cursor, mut pages) = (0usize, None::<String>, 0usize);
            while start.elapsed() < Duration::from_secs(120) {
                let after = cursor.as_ref().map_or(String::new(), |c| format!("&cursor={c}"));
                let page: Value = client
                    .get(format!("{base}/v1/collections/paged/updated?limit=1000&where={condition}{after}"))
                    .header("s2-basin", BASIN)
                    .send()
                    .await
                    .unwrap()
                    .json()
                    .await
                    .unwrap();
                pages += 1;
                returned += page["records"].as_array().unwrap().len();
                cursor = Some(page["cursor"].as_str().unwrap().to_string());
                if page["caught_up"] == true {
                    break;
                }
            }
            let secs = start.elapsed().as_secs_f64();
            println!(
                "/updated filtered to {percent:>3} %, {pages:>4} pages  {:>10.0} records/s scanned  {:>10.0} returned",
                PAGED_RECORDS as f64 / secs,
                returned as f64 / secs
            );
        }

        let start = Instant::now();
        let deadline = start + RUN_FOR;
        let tasks: Vec<_> = (0..16)
            .map(|t| {
                let (client, base) = (client.clone(), base.clone());
                tokio::spawn(async move {
                    let mut n = 0usize;
                    while Instant::now() < deadline {
                        let id = (n * 7919 + t * 104_729) % PAGED_RECORDS;
                        let resp = client
                            .get(format!("{base}/v1/collections/paged/records/r{id:07}"))
                            .header("s2-basin", BASIN)
                            .send()
                            .await
                            .unwrap();
                        assert!(resp.status().is_success());
                        resp.bytes().await.unwrap();
                        n += 1;
                    }
                    n
                })
            })
            .collect();
        let mut total = 0;
        for t in tasks {
            total += t.await.unwrap();
        }
        println!(
            "point lookups, 16 clients                {:>10.0} lookups/s",
            total as f64 / start.elapsed().as_secs_f64()
        );
        let _ = stop_tx.send(());
        let _ = server.await;
    });
    let _ = std::fs::remove_dir_all(&root);
}
