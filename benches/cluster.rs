//! Several nodes over one Postgres (`--cluster`): append throughput and
//! acknowledgement latency with 1, 2 and 3 nodes (clients spread over
//! every node), next to one server on Postgres outside a cluster and one
//! on fjall; and how long a takeover takes after the owner is SIGKILLed,
//! and after it is stopped cleanly (SIGTERM ends its lease at once).
//!
//! `cargo bench --bench cluster`. Postgres is the one the tests use,
//! started here on loopback (Debian's `postgresql`), but with `fsync` on,
//! so that its commits are as durable as fjall's; without it the
//! benchmark says so and stops. One run on a noisy machine: compare the
//! rows with each other. Everything binds to 127.0.0.1; every workload is
//! bounded in time.

mod support;

use std::time::{Duration, Instant};

use support::appends::{http_appends, Outcome, BASIN};

#[allow(dead_code)]
#[path = "../tests/common/services.rs"]
mod services;

#[allow(dead_code)]
#[path = "../tests/common/binary.rs"]
mod binary;

use binary::RillProcess;
use services::Postgres;

/// How long each append workload runs.
const APPEND_FOR: Duration = Duration::from_secs(4);
/// Concurrent appenders in the loaded rows (spread over the nodes).
const APPENDERS: usize = 24;
const LEASE_TTL: &str = "2s";
const TAKEOVERS: usize = 3;

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
        let bases: Vec<String> = nodes.iter().map(|(n, _)| n.base.clone()).collect();
        for base in &bases {
            wait_until_served(&http, base).await;
        }
        let label = format!("cluster of {size}, Postgres");
        measure(&label, &http, &bases, fsync).await;
    }

    takeovers(&http, &pg).await;
}

fn start_node(url: &str) -> (RillProcess, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let node = RillProcess::try_start_with(
        dir.path(),
        &["--storage", url, "--cluster", "--lease-ttl", LEASE_TTL],
    )
    .unwrap_or_else(|said| panic!("the node did not start: {said}"));
    (node, dir)
}

/// Waits until `base` serves (a cluster has an owner).
async fn wait_until_served(http: &reqwest::Client, base: &str) -> Duration {
    let started = Instant::now();
    while !http
        .get(format!("{base}/v1/basins"))
        .timeout(Duration::from_secs(1))
        .send()
        .await
        .is_ok_and(|r| r.status().is_success())
    {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "{base} never served"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    started.elapsed()
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
    wait_until_served(http, &nodes[0].0.base).await;
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
            let owner = owner(http, &nodes).await;
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

/// The node serving as owner now (the one that serves a request marked
/// as forwarded already).
async fn owner(http: &reqwest::Client, nodes: &[(RillProcess, tempfile::TempDir)]) -> usize {
    let started = Instant::now();
    loop {
        for (i, (node, _)) in nodes.iter().enumerate() {
            let answer = http
                .get(format!("{}/v1/basins", node.base))
                .header("rill-forwarded-by", "bench")
                .timeout(Duration::from_secs(1))
                .send()
                .await;
            if answer.is_ok_and(|r| r.status().is_success()) {
                return i;
            }
        }
        assert!(started.elapsed() < Duration::from_secs(60), "no owner");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
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
