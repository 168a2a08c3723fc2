//! What checking tokens costs: durable HTTP appends (1 KiB records) to a
//! server with auth off and, at the same time, to one with auth on and a
//! scoped token, over one engine and disk; three rounds. The target is
//! within 5%. (Run one after the other instead, the second run of a pair
//! was up to 30% slower with auth off on both: flushes and compaction,
//! not auth. Running both at once cancels that.)
//!
//! Run with `cargo bench --bench auth`. Binds to 127.0.0.1; bounded in
//! time (about 30 s).

use std::sync::Arc;
use std::time::Duration;

use rill::api::Auth;
use rill::engine::streams::config::{BasinConfigPatch, StreamConfigPatch};
use rill::engine::streams::names::{BasinName, StreamName};
use rill::engine::Engine;
use rill::server::ServerOptions;
use rill::storage::FjallStorage;
use serde_json::json;

mod support;
use support::appends::{http_appends, BASIN};
use support::{fsync_reference, ms, percentile};

const RUN_FOR: Duration = Duration::from_secs(3);
const ROOT: &str = "bench-root-token-0123456789abcdefghijklmnop";

async fn start(engine: &Arc<Engine>, auth: Auth) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let options = ServerOptions {
        auth,
        ..Default::default()
    };
    tokio::spawn(rill::server::run_with(
        listener,
        engine.clone(),
        options,
        std::future::pending(),
    ));
    base
}

fn main() {
    let root = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("bench-auth-data");
    let _ = std::fs::remove_dir_all(&root);
    std::fs::create_dir_all(&root).unwrap();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let fsync_p50 = fsync_reference(&root, support::appends::RECORD_BYTES);
        let storage = Arc::new(FjallStorage::open(&root.join("db")).unwrap());
        let engine = Engine::open(storage).unwrap();
        engine
            .streams()
            .ensure_basin(
                &BasinName::parse(BASIN).unwrap(),
                &BasinConfigPatch::default(),
            )
            .await
            .unwrap();
        for stream in ["off", "on"] {
            engine
                .streams()
                .create_stream(
                    BASIN,
                    &StreamName::parse(stream).unwrap(),
                    &StreamConfigPatch::default(),
                    None,
                )
                .await
                .unwrap();
        }
        let open = start(&engine, Auth::Off).await;
        // `RILL_BENCH_AUTH_OFF=1` turns auth off on both: the noise floor.
        let auth = if std::env::var_os("RILL_BENCH_AUTH_OFF").is_some() {
            Auth::Off
        } else {
            Auth::with_root_token(ROOT)
        };
        let guarded = start(&engine, auth).await;
        let issued: serde_json::Value = reqwest::Client::new()
            .post(format!("{guarded}/v1/access-tokens"))
            .bearer_auth(ROOT)
            .json(&json!({ "id": "bench", "scope": {
                "basins": { "prefix": "bench-" }, "streams": { "prefix": "o" },
                "op_groups": { "stream": { "read": true, "write": true } } } }))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let token = issued["access_token"].as_str().unwrap().to_string();

        println!(
            "Auth cost: 1 KiB records over HTTP, {} s per run, off and on at once",
            RUN_FOR.as_secs()
        );
        for (appenders, batch) in [(8usize, 1usize), (8, 100)] {
            // Both at once, so that whatever the disk and the engine do
            // meanwhile (flushes, compaction) weighs on both alike.
            let mut off = Vec::new();
            let mut on = Vec::new();
            for _round in 0..3 {
                let (a, b) = tokio::join!(
                    http_appends(&open, "off", appenders, batch, None, RUN_FOR),
                    http_appends(&guarded, "on", appenders, batch, Some(&token), RUN_FOR),
                );
                off.push(a);
                on.push(b);
            }
            let summary = |outcomes: &mut Vec<support::appends::Outcome>| {
                let records: u64 = outcomes.iter().map(|o| o.records).sum();
                let secs: f64 = outcomes.iter().map(|o| o.elapsed.as_secs_f64()).sum();
                let mut latencies: Vec<Duration> = outcomes
                    .iter_mut()
                    .flat_map(|o| o.latencies.drain(..))
                    .collect();
                latencies.sort();
                (
                    records as f64 / secs,
                    percentile(&latencies, 0.5),
                    percentile(&latencies, 0.99),
                )
            };
            let (off_rate, off_p50, off_p99) = summary(&mut off);
            let (on_rate, on_p50, on_p99) = summary(&mut on);
            println!(
                "{appenders} + {appenders} appenders x {batch:>3} rec/append: \
                 off {off_rate:>7.0} rec/s p50 {} p99 {} | on {on_rate:>7.0} rec/s p50 {} p99 {} \
                 | on/off throughput {:.3}, p50 {:.3}",
                ms(off_p50),
                ms(off_p99),
                ms(on_p50),
                ms(on_p99),
                on_rate / off_rate,
                on_p50.as_secs_f64() / off_p50.as_secs_f64(),
            );
        }
        println!("(fsync p50 here: {})", ms(fsync_p50));
    });
    let _ = std::fs::remove_dir_all(&root);
}
