//! A cluster's followers serve long polls and read sessions themselves,
//! from the database, at the tails the owner's feed tells them
//! (`src/cluster/feed.rs`), and keep serving them across a takeover: a
//! session on a follower sees every append made through any node, in
//! order and once, while the owner is killed and another takes over.
//!
//! Needs Debian's `postgresql` (skipped without it unless
//! `RILL_REQUIRE_SERVICES` is set).

mod common;

use std::time::{Duration, Instant};

use common::cluster::*;
use common::services::Postgres;
use common::SseReader;
use rill::cluster::SERVED_BY;
use serde_json::Value;
use tokio::sync::mpsc;

/// What a follower's session delivers: each record's body, when it came,
/// and the error code that ended the session, if one did.
enum Delivered {
    Record(String, Instant),
    Ended(String),
}

/// Reads `events` into a channel until the session ends.
fn collect(mut events: SseReader) -> mpsc::UnboundedReceiver<Delivered> {
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Some(event) = events.next().await {
            match event.event.as_deref() {
                Some("batch") => {
                    let now = Instant::now();
                    for body in common::bodies(&event.json()) {
                        let _ = tx.send(Delivered::Record(body, now));
                    }
                }
                Some("error") => {
                    let code = event.json()["code"].as_str().unwrap_or("?").to_string();
                    let _ = tx.send(Delivered::Ended(code));
                    return;
                }
                _ => {}
            }
        }
        let _ = tx.send(Delivered::Ended("closed".into()));
    });
    rx
}

/// The next record the session delivers, within 10 s.
async fn next_record(rx: &mut mpsc::UnboundedReceiver<Delivered>) -> (String, Instant) {
    match tokio::time::timeout(Duration::from_secs(10), rx.recv()).await {
        Ok(Some(Delivered::Record(body, at))) => (body, at),
        Ok(Some(Delivered::Ended(code))) => panic!("the session ended: {code}"),
        Ok(None) => panic!("the session's reader stopped"),
        Err(_) => panic!("no record within 10 s"),
    }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn followers_serve_reads_themselves_across_a_takeover() {
    let Some(pg) = Postgres::start() else { return };
    let (mut nodes, bases, http) = start_cluster(&pg.database("cluster_reads"), 3);
    let (first, _) = wait_for_owner(&http, &bases).await;
    let (follower, other) = (&bases[(first + 1) % 3], &bases[(first + 2) % 3]);
    make(
        &http,
        &bases[first],
        &["/v1/basins/lin-basin", "/v1/streams/s"],
    )
    .await;
    append(&http, &bases[first], "first").await;

    // A session on a follower is served there, not by the owner.
    let session = settled(
        http.get(format!("{follower}/v1/streams/s/records?seq_num=0"))
            .header("s2-basin", BASIN)
            .header("accept", "text/event-stream")
            .timeout(Duration::from_secs(600)),
    )
    .await;
    assert_eq!(session.status(), 200);
    assert!(
        session.headers().contains_key(SERVED_BY),
        "the follower forwarded the session: {:?}",
        session.headers()
    );
    let mut delivered = collect(SseReader::new(session));
    let mut expected = vec!["first".to_string()];
    assert_eq!(next_record(&mut delivered).await.0, "first");

    // Appends through the owner and the other follower reach it, each
    // soon (printed: the benchmark measures it).
    let mut waits = Vec::new();
    for k in 0..100 {
        let through = if k % 2 == 0 { &bases[first] } else { other };
        let body = format!("live-{k}");
        let sent = Instant::now();
        append(&http, through, &body).await;
        let (got, at) = next_record(&mut delivered).await;
        assert_eq!(got, body, "out of order or missing");
        waits.push(at.saturating_duration_since(sent));
        expected.push(body);
    }
    waits.sort();
    eprintln!(
        "a session on a follower saw an append {:?} after it was sent (p50), {:?} (p99), {:?} at most",
        percentile(&waits, 0.5),
        percentile(&waits, 0.99),
        waits[waits.len() - 1]
    );

    // Each node's `/metrics` gives its own figures: the session is the
    // follower's, not the owner's.
    let scrape = |base: &str| {
        let (http, url) = (http.clone(), format!("{base}/metrics"));
        async move { settled(http.get(url)).await.text().await.unwrap() }
    };
    let on_follower = scrape(follower).await;
    assert_eq!(
        read_sessions_open(&on_follower).as_deref(),
        Some("1"),
        "{on_follower}"
    );
    let on_owner = scrape(&bases[first]).await;
    assert_eq!(
        read_sessions_open(&on_owner).as_deref(),
        Some("0"),
        "{on_owner}"
    );

    // A long poll on a follower is served there too.
    let tail = expected.len();
    let poll = http
        .get(format!(
            "{follower}/v1/streams/s/records?seq_num={tail}&wait=10"
        ))
        .header("s2-basin", BASIN)
        .send();
    let poll = tokio::spawn(poll);
    tokio::time::sleep(Duration::from_millis(100)).await;
    append(&http, &bases[first], "polled").await;
    let answer = poll.await.unwrap().unwrap();
    assert!(answer.headers().contains_key(SERVED_BY));
    let batch: Value = answer.json().await.unwrap();
    assert_eq!(common::bodies(&batch), ["polled"], "{batch}");
    assert_eq!(next_record(&mut delivered).await.0, "polled");
    expected.push("polled".into());

    // The owner dies; the session on the follower goes on, and sees the
    // appends made after the takeover, whichever node took it.
    nodes[first].take().unwrap().0.kill();
    let survivors = [follower.clone(), other.clone()];
    wait_until_all_answer(&http, &survivors).await;
    for k in 0..20 {
        let body = format!("after-{k}");
        append(&http, &survivors[k % 2], &body).await;
        expected.push(body);
    }
    let mut seen = Vec::new();
    while seen.len() < 20 {
        seen.push(next_record(&mut delivered).await.0);
    }
    assert_eq!(seen, expected[expected.len() - 20..], "after the takeover");

    // Every record once, in order, from the first one.
    let contents = lin_contents(&survivors[1]).await;
    assert_eq!(contents, expected);

    // Deleting the stream ends the session, as it would on the owner.
    let deleted = settled(
        http.delete(format!("{}/v1/streams/s", survivors[0]))
            .header("s2-basin", BASIN),
    )
    .await;
    assert!(deleted.status().is_success(), "{}", deleted.status());
    match tokio::time::timeout(Duration::from_secs(10), delivered.recv()).await {
        Ok(Some(Delivered::Ended(code))) => assert_eq!(code, "stream_not_found"),
        Ok(Some(Delivered::Record(body, _))) => panic!("a record after the last: {body}"),
        other => panic!("the session did not end: {}", other.is_ok()),
    }

    // The owner stops (SIGTERM) well within the drain's 10 s, though the
    // other node follows its feed: the feed ends as the node stops.
    let (owner, _) = wait_for_owner(&http, &survivors).await;
    tokio::time::sleep(Duration::from_secs(1)).await; // the feed is followed
    let node = nodes[(first + 1 + owner) % 3].take().unwrap().0;
    let stopping = Instant::now();
    tokio::task::spawn_blocking(move || node.terminate(Duration::from_secs(8)))
        .await
        .unwrap();
    eprintln!("the owner stopped {:?} after SIGTERM", stopping.elapsed());
}

/// The stream's records, read through `base`.
async fn lin_contents(base: &str) -> Vec<String> {
    let http = reqwest::Client::new();
    let mut bodies = Vec::new();
    loop {
        let url = format!("{base}/v1/streams/s/records?seq_num={}", bodies.len());
        let answer = settled(http.get(url).header("s2-basin", BASIN)).await;
        if answer.status() == 416 {
            return bodies; // at the tail
        }
        let batch: Value = answer.json().await.unwrap();
        let page = common::bodies(&batch);
        if page.is_empty() {
            return bodies;
        }
        bodies.extend(page);
    }
}

/// `--metrics-listen` on a cluster's nodes: each serves its own figures
/// there, owner and follower alike, without a token.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_node_serves_its_metrics_on_the_metrics_port() {
    let Some(pg) = Postgres::start() else { return };
    let url = pg.database("cluster_metrics");
    let ports = [common::services::free_port(), common::services::free_port()];
    let listens: Vec<String> = ports.iter().map(|p| format!("127.0.0.1:{p}")).collect();
    let nodes: Vec<_> = listens
        .iter()
        .map(|listen| start_node_with(&url, &["--metrics-listen", listen]))
        .collect();
    let bases: Vec<String> = nodes.iter().map(|(n, _)| n.base.clone()).collect();
    let http = reqwest::Client::new();
    let (owner, _) = wait_for_owner(&http, &bases).await;
    make(
        &http,
        &bases[owner],
        &["/v1/basins/lin-basin", "/v1/streams/s"],
    )
    .await;
    // A session on the follower: its figure, not the owner's.
    let session = settled(
        http.get(format!(
            "{}/v1/streams/s/records?seq_num=0",
            bases[1 - owner]
        ))
        .header("s2-basin", BASIN)
        .header("accept", "text/event-stream")
        .timeout(Duration::from_secs(60)),
    )
    .await;
    assert!(session.headers().contains_key(SERVED_BY));
    for (i, listen) in listens.iter().enumerate() {
        let answer = http
            .get(format!("http://{listen}/metrics"))
            .send()
            .await
            .unwrap();
        assert_eq!(answer.status(), 200, "{listen}");
        let text = answer.text().await.unwrap();
        let expected = if i == owner { "0" } else { "1" };
        assert_eq!(
            read_sessions_open(&text).as_deref(),
            Some(expected),
            "{listen}: {text}"
        );
    }
    drop(session);
}

/// `rill_sessions_open{kind="read"}` in a scrape.
fn read_sessions_open(text: &str) -> Option<String> {
    text.lines()
        .find_map(|line| line.strip_prefix("rill_sessions_open{kind=\"read\"} "))
        .map(|n| n.trim().to_string())
}

/// With `--tls-cert`, clients get TLS on every node, and the nodes talk
/// to each other on `--cluster-listen`: writes through a follower reach
/// the owner, and a follower's session is served there, over TLS.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_serves_its_clients_over_tls() {
    let Some(pg) = Postgres::start() else { return };
    let url = pg.database("cluster_tls");
    let dir = tempfile::tempdir().unwrap();
    let pki = common::pki::make_pki(dir.path(), "node");
    let (cert, key) = (
        pki.files.cert.to_str().unwrap().to_string(),
        pki.files.key.to_str().unwrap().to_string(),
    );
    let nodes: Vec<_> = (0..2)
        .map(|_| {
            let cluster = format!("127.0.0.1:{}", common::services::free_port());
            let flags = [
                "--tls-cert",
                &cert,
                "--tls-key",
                &key,
                "--cluster-listen",
                &cluster,
            ];
            start_node_with(&url, &flags)
        })
        .collect();
    let bases: Vec<String> = nodes
        .iter()
        .map(|(n, _)| n.base.replacen("http://", "https://", 1))
        .collect();
    let http = reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(pki.ca_pem.as_bytes()).unwrap())
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    let (owner, _) = wait_for_owner(&http, &bases).await;
    let follower = &bases[1 - owner];
    make(&http, follower, &["/v1/basins/lin-basin", "/v1/streams/s"]).await;
    let session = settled(
        http.get(format!("{follower}/v1/streams/s/records?seq_num=0"))
            .header("s2-basin", BASIN)
            .header("accept", "text/event-stream")
            .timeout(Duration::from_secs(60)),
    )
    .await;
    assert!(session.headers().contains_key(SERVED_BY));
    let mut delivered = collect(SseReader::new(session));
    for k in 0..5 {
        let body = format!("tls-{k}");
        assert_eq!(append(&http, follower, &body).await, k);
        assert_eq!(next_record(&mut delivered).await.0, body);
    }
    // The clients' port speaks TLS only.
    let plain = reqwest::get(format!("{}/v1/basins", nodes[0].0.base))
        .await
        .unwrap();
    assert_eq!(plain.status(), 400);
}
