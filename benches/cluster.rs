//! Several nodes over one Postgres (`--cluster`): append throughput and
//! acknowledgement latency with 1, 2 and 3 nodes (clients spread over
//! every node), next to one server on Postgres outside a cluster and one
//! on fjall; how soon a read session on a follower (served there, from
//! the database, at the tails the owner's feed tells) sees an append made
//! through the owner, next to a session on the owner itself; and how long
//! a takeover takes after the owner is SIGKILLed, and after it is stopped
//! cleanly (SIGTERM ends its lease at once).
//!
//! `cargo bench --bench cluster`. Postgres is the one the tests use,
//! started here on loopback (Debian's `postgresql`), but with `fsync` on,
//! so that its commits are as durable as fjall's; without it the
//! benchmark says so and stops. One run on a noisy machine: compare the
//! rows with each other. Everything binds to 127.0.0.1; every workload is
//! bounded in time.

mod support;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;
use support::appends::{http_appends, Outcome, BASIN};

#[allow(dead_code)]
#[path = "../tests/common/services.rs"]
mod services;

#[allow(dead_code)]
#[path = "../tests/common/binary.rs"]
mod binary;

#[allow(dead_code)]
#[path = "../tests/common/cluster.rs"]
mod cluster;

use binary::RillProcess;
use cluster::{start_node, wait_for_owner, wait_until_all_answer};
use services::Postgres;

/// How long each append workload runs.
const APPEND_FOR: Duration = Duration::from_secs(4);
/// Concurrent appenders in the loaded rows (spread over the nodes).
const APPENDERS: usize = 24;
const TAKEOVERS: usize = 3;
/// Appends whose arrival the sessions time, one after another.
const TIMED_APPENDS: usize = 300;
/// How long the load beside the timed appends runs (longer than they
/// take).
const LOADED_FOR: Duration = Duration::from_secs(5);
/// Read sessions on each node that reads.
const SESSIONS_PER_NODE: usize = 4;

#[tokio::main]
async fn main() {
    let dir = tempfile::tempdir().unwrap();
    let fsync = support::fsync_reference(dir.path(), support::appends::RECORD_BYTES);
    let Some(pg) = Postgres::start_with_fsync(true) else {
        println!("no Postgres here (apt-get install postgresql): nothing to measure");
        return;
    };
    let http = reqwest::Client::new();

    let fjall = tempfile::tempdir().unwrap();
    let node = RillProcess::start(fjall.path());
    measure(
        "one server, fjall",
        &http,
        std::slice::from_ref(&node.base),
        fsync,
    )
    .await;
    drop(node);

    let url = pg.database("bench_single");
    let empty = tempfile::tempdir().unwrap();
    let node = RillProcess::try_start_with(empty.path(), &["--storage", &url]).unwrap();
    measure(
        "one server, Postgres",
        &http,
        std::slice::from_ref(&node.base),
        fsync,
    )
    .await;
    drop(node);

    for size in 1..=3 {
        let url = pg.database(&format!("bench_cluster_{size}"));
        let nodes: Vec<_> = (0..size).map(|_| start_node(&url)).collect();
        let bases = bases_of(&nodes);
        wait_until_all_answer(&http, &bases).await;
        let label = format!("cluster of {size}, Postgres");
        measure(&label, &http, &bases, fsync).await;
    }

    visibility(&http, &pg).await;
    takeovers(&http, &pg).await;
}

/// Three nodes; [`SESSIONS_PER_NODE`] SSE sessions on the owner and as
/// many on each follower; [`TIMED_APPENDS`] appends through the owner, one
/// at a time, quiet and then beside [`APPENDERS`] appenders on another
/// stream: how long after each was sent each session had it.
async fn visibility(http: &reqwest::Client, pg: &Postgres) {
    let url = pg.database("bench_visibility");
    let nodes: Vec<_> = (0..3).map(|_| start_node(&url)).collect();
    let (owner, _) = wait_for_owner(http, &bases_of(&nodes)).await;
    let owner_base = nodes[owner].0.base.clone();
    for path in [
        format!("{owner_base}/v1/basins/{BASIN}"),
        format!("{owner_base}/v1/streams/seen"),
        format!("{owner_base}/v1/streams/load"),
    ] {
        let made = http
            .put(path)
            .header("s2-basin", BASIN)
            .send()
            .await
            .unwrap();
        assert!(made.status().is_success(), "{}", made.status());
    }
    for loaded in [false, true] {
        let start = tail(http, &owner_base, "seen").await;
        // Per node, the arrival of each timed append in each session.
        let arrivals: Vec<Arrivals> = (0..3).map(|_| Arc::default()).collect();
        let mut readers = Vec::new();
        for (i, (node, _)) in nodes.iter().enumerate() {
            for _ in 0..SESSIONS_PER_NODE {
                readers.push(tokio::spawn(session(
                    node.base.clone(),
                    start,
                    arrivals[i].clone(),
                )));
            }
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
        let load = loaded.then(|| {
            let base = owner_base.clone();
            tokio::spawn(async move {
                http_appends(&base, "load", APPENDERS, 1, None, LOADED_FOR).await
            })
        });
        tokio::time::sleep(Duration::from_millis(200)).await;
        let mut sent = Vec::with_capacity(TIMED_APPENDS);
        for k in 0..TIMED_APPENDS {
            sent.push(Instant::now());
            let acked = http
                .post(format!("{owner_base}/v1/streams/seen/records"))
                .header("s2-basin", BASIN)
                .json(&serde_json::json!({ "records": [{ "body": k.to_string() }] }))
                .send()
                .await
                .unwrap();
            assert!(acked.status().is_success(), "{}", acked.status());
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
        if let Some(load) = load {
            load.await.unwrap();
        }
        for reader in readers {
            reader.abort();
        }
        for (i, arrivals) in arrivals.iter().enumerate() {
            let arrivals = arrivals.lock().unwrap();
            let mut waits: Vec<Duration> = arrivals
                .iter()
                .map(|(k, at)| at.saturating_duration_since(sent[*k]))
                .collect();
            let expected = TIMED_APPENDS * SESSIONS_PER_NODE;
            assert_eq!(waits.len(), expected, "a session missed appends");
            waits.sort();
            println!(
                "append through the owner seen by a session on {:<10} {}: p50 {}  p99 {}  max {}",
                if i == owner {
                    "the owner"
                } else {
                    "a follower"
                },
                if loaded {
                    format!("beside {APPENDERS} appenders")
                } else {
                    "quiet".to_string()
                },
                support::ms(support::percentile(&waits, 0.5)),
                support::ms(support::percentile(&waits, 0.99)),
                support::ms(waits[waits.len() - 1]),
            );
        }
    }
}

/// Each timed append's number, and when a session had it.
type Arrivals = Arc<Mutex<Vec<(usize, Instant)>>>;

/// The tail of `stream` through `base`.
async fn tail(http: &reqwest::Client, base: &str, stream: &str) -> usize {
    let answer: serde_json::Value = http
        .get(format!("{base}/v1/streams/{stream}/records/tail"))
        .header("s2-basin", BASIN)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    answer["tail"]["seq_num"].as_u64().unwrap() as usize
}

/// An SSE session on `base` from `start`, noting when each record (its
/// body: the timed append's number) arrives.
async fn session(base: String, start: usize, arrivals: Arrivals) {
    let response = reqwest::Client::new()
        .get(format!("{base}/v1/streams/seen/records?seq_num={start}"))
        .header("s2-basin", BASIN)
        .header("accept", "text/event-stream")
        .send()
        .await
        .unwrap();
    assert!(response.status().is_success(), "{}", response.status());
    let mut stream = response.bytes_stream();
    let mut buffer = String::new();
    while let Some(Ok(chunk)) = stream.next().await {
        let now = Instant::now();
        buffer.push_str(&String::from_utf8_lossy(&chunk));
        while let Some(end) = buffer.find("\n\n") {
            let event: String = buffer.drain(..end + 2).collect();
            if !event.lines().any(|line| line == "event: batch") {
                continue;
            }
            let Some(data) = event.lines().find_map(|line| line.strip_prefix("data: ")) else {
                continue;
            };
            let batch: serde_json::Value = serde_json::from_str(data).unwrap();
            let mut arrivals = arrivals.lock().unwrap();
            for record in batch["records"].as_array().into_iter().flatten() {
                if let Some(k) = record["body"].as_str().and_then(|b| b.parse().ok()) {
                    arrivals.push((k, now));
                }
            }
        }
    }
}

/// One appender, then [`APPENDERS`] spread over `bases`, each node's on a
/// stream of their own; 1 KiB records, one per append.
async fn measure(label: &str, http: &reqwest::Client, bases: &[String], fsync: Duration) {
    let made = http
        .put(format!("{}/v1/basins/{BASIN}", bases[0]))
        .send()
        .await
        .unwrap();
    assert!(made.status().is_success(), "{}", made.status());
    for (i, base) in bases.iter().enumerate() {
        let made = http
            .put(format!("{base}/v1/streams/s{i}"))
            .header("s2-basin", BASIN)
            .send()
            .await
            .unwrap();
        assert!(made.status().is_success(), "{}", made.status());
    }
    http_appends(&bases[0], "s0", 1, 1, None, APPEND_FOR)
        .await
        .print(&format!("{label}: 1 appender"), fsync);
    let each = APPENDERS / bases.len();
    let runs = bases
        .iter()
        .enumerate()
        .map(|(i, base)| {
            let (base, stream) = (base.clone(), format!("s{i}"));
            tokio::spawn(
                async move { http_appends(&base, &stream, each, 1, None, APPEND_FOR).await },
            )
        })
        .collect::<Vec<_>>();
    let mut all = Outcome {
        records: 0,
        elapsed: Duration::ZERO,
        latencies: Vec::new(),
    };
    for run in runs {
        let outcome = run.await.unwrap();
        all.records += outcome.records;
        all.elapsed = all.elapsed.max(outcome.elapsed);
        all.latencies.extend(outcome.latencies);
    }
    all.print(&format!("{label}: {APPENDERS} appenders"), fsync);
}

/// Three nodes; the owner killed (or stopped), and the time until an
/// append through a survivor succeeds; a new node started each time.
async fn takeovers(http: &reqwest::Client, pg: &Postgres) {
    let url = pg.database("bench_takeover");
    let mut nodes: Vec<_> = (0..3).map(|_| start_node(&url)).collect();
    wait_for_owner(http, &bases_of(&nodes)).await;
    let made = http
        .put(format!("{}/v1/basins/{BASIN}", nodes[0].0.base))
        .send()
        .await
        .unwrap();
    assert!(made.status().is_success());
    let made = http
        .put(format!("{}/v1/streams/t", nodes[0].0.base))
        .header("s2-basin", BASIN)
        .send()
        .await
        .unwrap();
    assert!(made.status().is_success());
    for kill in [true, false] {
        let mut waits = Vec::new();
        for _ in 0..TAKEOVERS {
            let (owner, _) = wait_for_owner(http, &bases_of(&nodes)).await;
            let (node, _dir) = nodes.remove(owner);
            let gone = Instant::now();
            if kill {
                node.kill();
            } else {
                node.terminate(Duration::from_secs(30));
            }
            let took = gone.elapsed();
            let survivor = nodes[0].0.base.clone();
            waits.push(took + append_once(http, &survivor).await);
            nodes.push(start_node(&url));
        }
        waits.sort();
        println!(
            "takeover after the owner is {:<22} median {}  all {:?}",
            if kill {
                "SIGKILLed (lease 2 s):"
            } else {
                "stopped (SIGTERM):"
            },
            support::ms(waits[waits.len() / 2]),
            waits.iter().map(|w| support::ms(*w)).collect::<Vec<_>>()
        );
    }
}

/// The nodes' addresses.
fn bases_of(nodes: &[(RillProcess, tempfile::TempDir)]) -> Vec<String> {
    nodes.iter().map(|(node, _)| node.base.clone()).collect()
}

/// How long until one append through `base` succeeds.
async fn append_once(http: &reqwest::Client, base: &str) -> Duration {
    let started = Instant::now();
    loop {
        let answer = http
            .post(format!("{base}/v1/streams/t/records"))
            .header("s2-basin", BASIN)
            .json(&serde_json::json!({ "records": [{ "body": "after" }] }))
            .timeout(Duration::from_secs(5))
            .send()
            .await;
        if answer.is_ok_and(|r| r.status().is_success()) {
            return started.elapsed();
        }
        assert!(started.elapsed() < Duration::from_secs(60), "no takeover");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}
