//! S2's metrics API (`/v1/metrics…`) answers with what was done: every
//! set moves by exactly the operations and bytes of the requests made,
//! stored bytes follow appends and trims, and the history survives a
//! restart.

mod common;

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use common::prometheus::metered;
use common::{SendAndExpect, SseReader, TestServer, BASIN};
use reqwest::{Method, StatusCode};
use rill::engine::streams::keys;
use rill::storage::{FjallStorage, Keyspace, Storage, WriteBatch};
use serde_json::{json, Value};

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// A set of the basin (or, with `/{stream}`, of a stream) over the last
/// hour and the next minute, by the hour: one step holds everything.
async fn set(server: &TestServer, path: &str, set: &str) -> Value {
    let (start, end) = (now() - 3600, now() + 60);
    let query = format!("/v1/metrics{path}?set={set}&start={start}&end={end}&interval=hour");
    server
        .bare(Method::GET, &query)
        .expect_status(StatusCode::OK)
        .await
}

/// The sum of every value of the series named `name` in `body`.
fn total(body: &Value, name: &str) -> f64 {
    let values = body["values"].as_array().expect("values");
    let series = values
        .iter()
        .find_map(|m| {
            let m = m.get("accumulation").or_else(|| m.get("gauge"))?;
            (m["name"] == name).then_some(m)
        })
        .unwrap_or_else(|| panic!("no series {name} in {body}"));
    series["values"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p[1].as_f64().unwrap())
        .sum()
}

/// The last point of the one gauge in `body`.
fn last_gauge(body: &Value) -> f64 {
    let points = body["values"][0]["gauge"]["values"].as_array().unwrap();
    points.last().expect("a point")[1].as_f64().unwrap()
}

fn fjall(dir: &std::path::Path) -> Arc<dyn Storage> {
    Arc::new(FjallStorage::open(dir).unwrap())
}

#[tokio::test]
async fn every_set_counts_what_was_done_and_survives_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start_on(fjall(dir.path())).await;
    server.with_stream("s").await;
    let basin = format!("/{BASIN}");

    server.append("s", &["a", "bb"]).await;
    server.append("s", &["ccc"]).await;
    assert_eq!(
        server.read_bodies("s", "seq_num=0&count=2").await,
        ["a", "bb"]
    );
    let mut session = SseReader::open(server.sse_request("s", "seq_num=0&count=3")).await;
    while session.next().await.is_some() {}
    drop(session);
    server.get("/v1/streams").send().await.unwrap();
    server.bare(Method::GET, "/v1/basins").send().await.unwrap();

    let appended = metered("a") + metered("bb") + metered("ccc");
    let ops = set(&server, &basin, "append-ops").await;
    assert_eq!(total(&ops, "express"), 2.0, "{ops}");
    assert_eq!(total(&ops, "standard"), 0.0);
    let bytes = set(&server, &basin, "append-throughput").await;
    assert_eq!(total(&bytes, "append-throughput"), appended);
    let reads = set(&server, &basin, "read-ops").await;
    assert_eq!(total(&reads, "unary"), 1.0, "{reads}");
    assert_eq!(total(&reads, "streaming"), 1.0);
    let read = set(&server, &basin, "read-throughput").await;
    assert_eq!(
        total(&read, "read-throughput"),
        2.0 * (metered("a") + metered("bb")) + metered("ccc")
    );
    let basin_ops = set(&server, &basin, "basin-ops").await;
    assert_eq!(total(&basin_ops, "create-stream"), 1.0, "{basin_ops}");
    assert_eq!(total(&basin_ops, "list-streams"), 1.0);
    let account_ops = set(&server, "", "account-ops").await;
    assert!(total(&account_ops, "create-basin") >= 1.0, "{account_ops}");
    assert!(total(&account_ops, "list-basins") >= 1.0);
    // Rill's own set: every acknowledgement in one latency bucket.
    let latency = set(&server, "", "ack-latency").await;
    let buckets = latency["values"].as_array().unwrap();
    assert_eq!(buckets.len(), 13, "{latency}");
    let names: Vec<&str> = buckets
        .iter()
        .map(|b| b["accumulation"]["name"].as_str().unwrap())
        .collect();
    let acks: f64 = names.iter().map(|name| total(&latency, name)).sum();
    assert_eq!(acks, 2.0, "{latency}");
    let active = set(&server, "", "active-basins").await;
    assert_eq!(active["values"][0]["label"]["values"], json!([BASIN]));

    // Stored bytes: the stream's, and the basin's (its only stream).
    let stored = set(&server, &format!("{basin}/s"), "storage").await;
    assert_eq!(last_gauge(&stored), appended, "{stored}");
    assert_eq!(last_gauge(&set(&server, &basin, "storage").await), appended);

    // A restart keeps the history (a clean stop writes the last minute).
    server.stop().await;
    let server = TestServer::start_on(fjall(dir.path())).await;
    let bytes = set(&server, &basin, "append-throughput").await;
    assert_eq!(total(&bytes, "append-throughput"), appended, "{bytes}");
    let stored = set(&server, &format!("{basin}/s"), "storage").await;
    assert_eq!(last_gauge(&stored), appended);

    // A trim that takes every record, itself included: once upkeep has
    // purged them, the stream stores nothing.
    let trim = json!({"records": [{"headers": [["", "dHJpbQ=="]], "body": "AAAAAAAAAAQ="}]});
    server
        .append_request("s", trim)
        .header("s2-format", "base64")
        .expect_status(StatusCode::OK)
        .await;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let stored = last_gauge(&set(&server, &format!("{basin}/s"), "storage").await);
        if stored == 0.0 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "still {stored} bytes stored"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    server.stop().await;
}

#[tokio::test]
async fn minutes_hold_what_each_minute_counted() {
    let server = TestServer::start().await;
    server.with_stream("s").await;
    server.append("s", &["x"]).await;
    let (start, end) = (now() - 180, now() + 1);
    let body = server
        .bare(
            Method::GET,
            &format!("/v1/metrics/{BASIN}?set=append-throughput&start={start}&end={end}"),
        )
        .expect_status(StatusCode::OK)
        .await;
    let series = &body["values"][0]["accumulation"];
    assert_eq!(series["interval"], "minute");
    assert_eq!(series["unit"], "bytes");
    let points = series["values"].as_array().unwrap();
    // One point per minute of the range, the append in the last one.
    assert!((3..=5).contains(&points.len()), "{series}");
    assert!(points
        .windows(2)
        .all(|w| w[1][0].as_u64().unwrap() - w[0][0].as_u64().unwrap() == 60));
    // The append in one of the last two (the minute may turn between the
    // append and the query), and nothing anywhere else.
    let values: Vec<u64> = points.iter().map(|p| p[1].as_u64().unwrap()).collect();
    assert_eq!(values.iter().sum::<u64>(), metered("x") as u64, "{series}");
    let counted = values.iter().rposition(|v| *v > 0).unwrap();
    assert!(counted + 2 >= values.len(), "{series}");
}

#[tokio::test]
async fn bad_ranges_and_intervals_are_refused() {
    let server = TestServer::start().await;
    server.with_stream("s").await;
    let get = |query: &str| server.bare(Method::GET, &format!("/v1/metrics/{BASIN}?{query}"));
    let now = now();
    for query in [
        format!("set=read-ops&start={now}&end={}", now - 1),
        format!("set=read-ops&start={}&end={now}", now - 31 * 86_400),
        "set=read-ops&interval=week".to_string(),
        format!("set=read-ops&end={}", u64::MAX),
        format!("set=storage&end={}", now + 2 * 86_400),
        "set=nope".to_string(),
    ] {
        get(&query)
            .expect_error(StatusCode::UNPROCESSABLE_ENTITY, "invalid")
            .await;
    }
    server
        .bare(Method::GET, "/v1/metrics/no-such-basin?set=storage")
        .expect_error(StatusCode::NOT_FOUND, "basin_not_found")
        .await;
}

/// Streams written before stored bytes were counted get counted once,
/// when the engine opens: the figure then matches what they hold.
#[tokio::test]
async fn streams_from_before_the_counter_are_counted_at_open() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start_on(fjall(dir.path())).await;
    server.with_stream("old").await;
    server.append("old", &["one", "two"]).await;
    server.stop().await;

    // Rewrite the state as an earlier version wrote it: no counter.
    let storage = fjall(dir.path());
    let meta = storage.get(Keyspace::Meta, &keys::stream_key(BASIN, "old"));
    let meta: Value = serde_json::from_slice(&meta.unwrap().unwrap()).unwrap();
    let key = keys::state_key(meta["id"].as_u64().unwrap());
    let mut state: Value =
        serde_json::from_slice(&storage.get(Keyspace::Meta, &key).unwrap().unwrap()).unwrap();
    assert!(state
        .as_object_mut()
        .unwrap()
        .remove("appended_bytes")
        .is_some());
    let mut batch = WriteBatch::default();
    batch.put(Keyspace::Meta, key, serde_json::to_vec(&state).unwrap());
    storage.write(batch).unwrap();
    drop(storage);

    let server = TestServer::start_on(fjall(dir.path())).await;
    let stored = set(&server, &format!("/{BASIN}/old"), "storage").await;
    assert_eq!(last_gauge(&stored), metered("one") + metered("two"));
    server.append("old", &["three"]).await;
    let stored = set(&server, &format!("/{BASIN}/old"), "storage").await;
    let all = metered("one") + metered("two") + metered("three");
    assert_eq!(last_gauge(&stored), all);
    server.stop().await;
}

/// The hourly storage samples and the counts are on disk: an engine
/// opened again over the same files answers them (the hour in progress
/// is what the API replaces with the live figure, so this reads the
/// history itself).
#[tokio::test]
async fn samples_and_counts_are_read_back_from_disk() {
    use rill::metrics::history::{align, Interval, HOUR};
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start_on(fjall(dir.path())).await;
    server.with_stream("s").await;
    server.append("s", &["abc"]).await;
    server.stop().await; // its last tick samples storage and writes

    let engine = rill::engine::Engine::open(fjall(dir.path())).unwrap();
    let hour = align(now(), HOUR);
    let range = (hour, hour + HOUR);
    let bytes = metered("abc") as u64;
    let (stream, basin, appended) = engine.usage(|h| {
        let appended = h.accumulation(
            BASIN,
            "append-throughput/append-throughput",
            range,
            Interval::Hour,
        );
        (
            h.storage(BASIN, Some("s"), range),
            h.storage(BASIN, None, range),
            appended,
        )
    });
    assert_eq!(appended, vec![(hour, bytes)]);
    // The hour's sample: taken at the server's first tick (at start,
    // before the append) unless the hour turned since.
    assert_eq!(stream.len(), 1, "{stream:?}");
    assert_eq!(basin.len(), 1, "{basin:?}");
    engine.shutdown().await;
}
