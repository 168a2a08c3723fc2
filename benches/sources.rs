//! Postgres sources: how fast a table is copied into a collection (the
//! backfill) next to a plain `COPY … TO STDOUT` of the same table, how
//! many changes a second streaming takes (big transactions, and many
//! small ones from concurrent writers), and the time from a commit in
//! Postgres to the record being readable in Rill. Rows are 1 KiB. Run with
//! `cargo bench --bench sources`.
//!
//! Postgres is the one the tests use, started here on loopback
//! (`tests/common/services.rs`, `wal_level=logical`); without it the
//! benchmark says so and stops. "Visible" is seen by asking Rill for the
//! record every millisecond, so latencies carry up to ~1 ms of polling.
//! Everything binds to 127.0.0.1 and each run is bounded in count and time.

use std::time::{Duration, Instant};

use futures::StreamExt;
use serde_json::{json, Value};

mod support;
use support::{ms, percentile};

#[allow(dead_code)]
#[path = "../tests/common/services.rs"]
mod services;

use services::Postgres;

const BASIN: &str = "bench-basin";
const ROWS: i64 = 20_000;
/// Changes streamed in big transactions (of `BIG_TXN` rows each).
const BIG_TXN: i64 = 1000;
/// Single-row transactions streamed, from `WRITERS` connections at once.
const SMALL_TXNS: i64 = 4000;
const WRITERS: i64 = 4;
const LATENCY_SAMPLES: usize = 200;
const LATENCY_INTERVAL: Duration = Duration::from_millis(20);
/// No wait is longer than this.
const RUN_LIMIT: Duration = Duration::from_secs(300);

struct Bench {
    base: String,
    http: reqwest::Client,
    pg: Postgres,
}

impl Bench {
    async fn get(&self, path: &str) -> (u16, Value) {
        let resp = self
            .http
            .get(format!("{}{path}", self.base))
            .header("s2-basin", BASIN)
            .send()
            .await
            .unwrap();
        let status = resp.status().as_u16();
        (status, resp.json().await.unwrap_or(Value::Null))
    }

    /// Waits until the source's durable count of changes reaches `changes`.
    async fn changes_reach(&self, changes: u64) {
        let deadline = Instant::now() + RUN_LIMIT;
        loop {
            let (_, shown) = self.get("/v1/sources/bench").await;
            if shown["state"]["changes"].as_u64().unwrap_or(0) >= changes {
                return;
            }
            assert!(Instant::now() < deadline, "stuck: {shown}");
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }

    async fn changes(&self) -> u64 {
        self.get("/v1/sources/bench").await.1["state"]["changes"]
            .as_u64()
            .unwrap_or(0)
    }
}

/// The reference: the whole table through `COPY … TO STDOUT`; rows/s.
async fn copy_out(pg: &Postgres) -> f64 {
    let client = pg.client().await;
    let start = Instant::now();
    let stream = client.copy_out("COPY items TO STDOUT").await.unwrap();
    futures::pin_mut!(stream);
    let mut bytes = 0;
    while let Some(chunk) = stream.next().await {
        bytes += chunk.unwrap().len();
    }
    assert!(bytes as i64 > ROWS * 1000);
    ROWS as f64 / start.elapsed().as_secs_f64()
}

fn main() {
    let root = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("bench-sources");
    let _ = std::fs::remove_dir_all(&root);
    std::fs::create_dir_all(&root).unwrap();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let Some(pg) = Postgres::start() else {
            println!("Postgres is not installed: nothing to measure");
            return;
        };
        println!("Rill Postgres source benchmark ({ROWS} rows of 1 KiB)");
        pg.client()
            .await
            .batch_execute(&format!(
                "CREATE TABLE items (id bigint PRIMARY KEY, rev int NOT NULL, body text);
                 INSERT INTO items SELECT i, 0, rpad(md5(i::text), 1000, md5((i + 1)::text))
                   FROM generate_series(1, {ROWS}) i;
                 ANALYZE items;"
            ))
            .await
            .unwrap();
        let served = support::serve(&root.join("data"), BASIN).await;
        let bench = Bench {
            base: served.base.clone(),
            http: reqwest::Client::new(),
            pg,
        };

        // Backfill, next to COPY (twice, the second warm, as the backfill
        // reads a table COPY has just read).
        copy_out(&bench.pg).await;
        let copy = copy_out(&bench.pg).await;
        let start = Instant::now();
        let made = bench
            .http
            .put(format!("{}/v1/sources/bench", bench.base))
            .header("s2-basin", BASIN)
            .json(&json!({ "postgres": { "url": bench.pg.url(),
                "tables": [{ "table": "items", "collection": "items" }] } }))
            .send()
            .await
            .unwrap();
        assert_eq!(made.status().as_u16(), 201);
        let deadline = Instant::now() + RUN_LIMIT;
        while bench.get("/v1/sources/bench").await.1["state"]["backfilled"] != true {
            assert!(Instant::now() < deadline, "the backfill did not end");
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        let backfill = ROWS as f64 / start.elapsed().as_secs_f64();
        println!();
        println!("backfill             {backfill:>10.0} rows/s   COPY TO STDOUT {copy:>10.0} rows/s");

        // Streaming: big transactions.
        let client = bench.pg.client().await;
        let before = bench.changes().await;
        let start = Instant::now();
        for first in (1..=ROWS).step_by(BIG_TXN as usize) {
            client
                .execute(
                    "UPDATE items SET rev = rev + 1, body = md5(body) || substr(body, 33) \
                     WHERE id >= $1 AND id < $1 + $2",
                    &[&first, &BIG_TXN],
                )
                .await
                .unwrap();
        }
        let committed = start.elapsed();
        bench.changes_reach(before + ROWS as u64).await;
        println!(
            "streaming, {BIG_TXN}-row txns {:>8.0} changes/s (Postgres committed them at {:.0}/s)",
            ROWS as f64 / start.elapsed().as_secs_f64(),
            ROWS as f64 / committed.as_secs_f64()
        );

        // Streaming: single-row transactions from concurrent writers.
        let before = bench.changes().await;
        let start = Instant::now();
        let writers: Vec<_> = (0..WRITERS)
            .map(|w| {
                let url = bench.pg.url();
                tokio::spawn(async move {
                    let (client, connection) =
                        tokio_postgres::connect(&url, tokio_postgres::NoTls).await.unwrap();
                    tokio::spawn(connection);
                    for i in 0..SMALL_TXNS / WRITERS {
                        let id = 1 + (i * WRITERS + w) % ROWS;
                        client
                            .execute("UPDATE items SET rev = rev + 1 WHERE id = $1", &[&id])
                            .await
                            .unwrap();
                    }
                })
            })
            .collect();
        for writer in writers {
            writer.await.unwrap();
        }
        let committed = start.elapsed();
        bench.changes_reach(before + SMALL_TXNS as u64).await;
        println!(
            "streaming, 1-row txns x{WRITERS} {:>8.0} changes/s (Postgres committed them at {:.0}/s)",
            SMALL_TXNS as f64 / start.elapsed().as_secs_f64(),
            SMALL_TXNS as f64 / committed.as_secs_f64()
        );

        // Latency: a commit to the record readable, at a moderate rate.
        let mut samples = Vec::with_capacity(LATENCY_SAMPLES);
        for i in 0..LATENCY_SAMPLES as i64 {
            let id = ROWS + 1 + i;
            let started = Instant::now();
            client
                .execute("INSERT INTO items VALUES ($1, 0, 'new')", &[&id])
                .await
                .unwrap();
            let path = format!("/v1/collections/items/records/{id}");
            let deadline = Instant::now() + RUN_LIMIT;
            while bench.get(&path).await.0 != 200 {
                assert!(Instant::now() < deadline, "record {id} never came");
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
            samples.push(started.elapsed());
            tokio::time::sleep(LATENCY_INTERVAL.saturating_sub(started.elapsed())).await;
        }
        samples.sort();
        println!(
            "commit to visible    p50 {}  p99 {}  ({} single-row inserts, one every {:?})",
            ms(percentile(&samples, 0.5)),
            ms(percentile(&samples, 0.99)),
            LATENCY_SAMPLES,
            LATENCY_INTERVAL
        );

        served.stop().await;
    });
}
