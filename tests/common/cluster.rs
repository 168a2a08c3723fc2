//! Starting a cluster of real `rill` nodes over one Postgres, and the
//! requests the cluster tests share.

use std::time::{Duration, Instant};

use serde_json::{json, Value};

use super::binary::RillProcess;

/// The basin the cluster tests (and the linearizability client) use.
pub const BASIN: &str = "lin-basin";

/// Short, so that takeovers in the tests are quick.
pub const LEASE_TTL: Duration = Duration::from_secs(2);

/// A node, and the directory it was started in (empty: its data is in
/// Postgres); `None` once killed.
pub type Node = Option<(RillProcess, tempfile::TempDir)>;

/// `size` nodes over `url`, their addresses, and a client whose requests
/// give up after 10 s.
pub fn start_cluster(url: &str, size: usize) -> (Vec<Node>, Vec<String>, reqwest::Client) {
    let nodes: Vec<Node> = (0..size).map(|_| Some(start_node(url))).collect();
    let bases = nodes
        .iter()
        .map(|n| n.as_ref().unwrap().0.base.clone())
        .collect();
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    (nodes, bases, http)
}

/// The process of a node still running.
pub fn process(node: &Node) -> &RillProcess {
    &node.as_ref().expect("a node still running").0
}

pub fn start_node(url: &str) -> (RillProcess, tempfile::TempDir) {
    start_node_with(url, &[])
}

/// A node with `extra` flags too.
pub fn start_node_with(url: &str, extra: &[&str]) -> (RillProcess, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let ttl = format!("{}ms", LEASE_TTL.as_millis());
    let mut flags = vec!["--storage", url, "--cluster", "--lease-ttl", &ttl];
    flags.extend_from_slice(extra);
    let node = RillProcess::try_start_with(dir.path(), &flags)
        .unwrap_or_else(|said| panic!("the node did not start: {said}"));
    (node, dir)
}

/// The node that owns the database now: the one that serves a request
/// marked as forwarded already (the others refuse to forward it on).
pub async fn owner(http: &reqwest::Client, bases: &[String]) -> Option<usize> {
    for (i, base) in bases.iter().enumerate() {
        let answer = http
            .get(format!("{base}/v1/basins"))
            .header("rill-forwarded-by", "test")
            .timeout(Duration::from_secs(1))
            .send()
            .await;
        if answer.is_ok_and(|r| r.status().is_success()) {
            return Some(i);
        }
    }
    None
}

/// Waits for an owner; which one, and how long it took.
pub async fn wait_for_owner(http: &reqwest::Client, bases: &[String]) -> (usize, Duration) {
    let started = Instant::now();
    loop {
        if let Some(i) = owner(http, bases).await {
            return (i, started.elapsed());
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "no node took the lease within a minute"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Sends `request` until it is answered other than `503` (a node that
/// does not know the owner yet, or an owner not confirmed: never tried);
/// any other answer is the outcome, a failure to get one panics (its
/// outcome would be unknown, and the callers count on knowing).
pub async fn settled(request: reqwest::RequestBuilder) -> reqwest::Response {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let resp = request.try_clone().unwrap().send().await.unwrap();
        if resp.status() != reqwest::StatusCode::SERVICE_UNAVAILABLE {
            return resp;
        }
        assert!(Instant::now() < deadline, "503 for a minute");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Makes each of `paths` (a basin, a stream, a collection) through `base`.
pub async fn make(http: &reqwest::Client, base: &str, paths: &[&str]) {
    for path in paths {
        let resp = settled(http.put(format!("{base}{path}")).header("s2-basin", BASIN)).await;
        assert!(resp.status().is_success(), "{path}: {}", resp.status());
    }
}

/// Appends `body` through `base`; its seq num once acknowledged. Only
/// refusals (`503`: never tried) are retried, so each body lands once.
pub async fn append(http: &reqwest::Client, base: &str, body: &str) -> u64 {
    let resp = settled(
        http.post(format!("{base}/v1/streams/s/records"))
            .header("s2-basin", BASIN)
            .json(&json!({ "records": [{ "body": body }] })),
    )
    .await;
    let status = resp.status();
    let ack: Value = resp.json().await.unwrap();
    assert!(status.is_success(), "{body}: {status} {ack}");
    ack["start"]["seq_num"].as_u64().unwrap()
}

/// Waits until every one of `bases` answers a read (retried freely): a
/// follower's pooled connection to a dead owner fails a request with an
/// unknown outcome (502), which an append must not meet.
pub async fn wait_until_all_answer(http: &reqwest::Client, bases: &[String]) {
    for base in bases {
        let deadline = Instant::now() + Duration::from_secs(60);
        while !http
            .get(format!("{base}/v1/basins"))
            .send()
            .await
            .is_ok_and(|r| r.status().is_success())
        {
            assert!(Instant::now() < deadline, "{base} never answered again");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}
