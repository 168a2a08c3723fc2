//! `GET /metrics` for consumers: what each one read, delivered and acked,
//! and how far behind it is, for stream and records-feed sources.

mod common;

use common::consumers::{ack, ensure, receive};
use common::prometheus::{metered, scrape};
use common::{TestServer, BASIN};
use reqwest::StatusCode;
use serde_json::json;

#[tokio::test]
async fn records_a_consumer_reads_are_counted() {
    let server = TestServer::start().await;
    server.with_stream("jobs").await;
    server.append("jobs", &["a", "b", "c"]).await;
    ensure(
        &server,
        "workers",
        json!({ "source": { "stream": "jobs" } }),
    )
    .await;
    assert_eq!(receive(&server, "workers", 10, 0).await.len(), 3);
    let counted = scrape(&server).await;
    assert_eq!(
        counted.get("rill_read_records_total", &[("basin", BASIN)]),
        3.0
    );
    assert_eq!(
        counted.get("rill_read_bytes_total", &[("basin", BASIN)]),
        metered("a") + metered("b") + metered("c")
    );
}

#[tokio::test]
async fn consumers_report_their_counts_and_how_far_behind_they_are() {
    let server = TestServer::start().await;
    server.with_stream("jobs").await;
    // Written a minute ago and then every 10 s, by their timestamps.
    let minute_ago = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
        - 60_000;
    let records: Vec<_> = (0..5)
        .map(|i| json!({ "body": format!("job {i}"), "timestamp": minute_ago + i * 10_000 }))
        .collect();
    let resp = server
        .post("/v1/streams/jobs/records")
        .json(&json!({ "records": records }))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    ensure(
        &server,
        "workers",
        json!({ "source": { "stream": "jobs" } }),
    )
    .await;
    let of = [("basin", BASIN), ("consumer", "workers")];

    let fresh = scrape(&server).await;
    assert_eq!(fresh.get("rill_consumer_delivered_total", &of), 0.0);
    assert_eq!(fresh.get("rill_consumer_lag_messages", &of), 5.0);
    let waited = fresh.get("rill_consumer_lag_seconds", &of);
    assert!((59.0..120.0).contains(&waited), "{waited}");

    let messages = receive(&server, "workers", 3, 0).await;
    assert_eq!(messages.len(), 3);
    assert_eq!(ack(&server, "workers", &messages[..2]).await, 2);
    let working = scrape(&server).await;
    assert_eq!(working.get("rill_consumer_delivered_total", &of), 3.0);
    assert_eq!(working.get("rill_consumer_acked_total", &of), 2.0);
    assert_eq!(working.get("rill_consumer_pending", &of), 1.0);
    assert_eq!(working.get("rill_consumer_in_flight", &of), 1.0);
    // From the first unacked (seq 2, 40 s old; the frontier, seq 3, is
    // 30 s old) to the tail (5).
    assert_eq!(working.get("rill_consumer_lag_messages", &of), 3.0);
    let waited = working.get("rill_consumer_lag_seconds", &of);
    assert!((39.5..50.0).contains(&waited), "{waited}");
    // The API says the same.
    let state = server
        .get("/v1/consumers/workers")
        .send()
        .await
        .unwrap()
        .json::<serde_json::Value>()
        .await
        .unwrap();
    assert_eq!(state["state"]["lag"], 3);
    assert!(state["state"]["lag_seconds"].as_f64().unwrap() >= 39.5);
}

#[tokio::test]
async fn a_records_feed_consumer_has_a_lag_too() {
    let server = TestServer::start().await;
    server.create_basin(BASIN).await;
    let resp = server.put("/v1/collections/docs").send().await.unwrap();
    assert!(resp.status().is_success());
    let resp = server
        .post("/v1/collections/docs/records")
        .json(&json!({ "upserts": [
            { "id": "a", "data": {} }, { "id": "b", "data": {} }, { "id": "c", "data": {} },
        ] }))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let feed = json!({ "source": { "collection": "docs", "feed": "records" } });
    ensure(&server, "docs-feed", feed).await;
    let of = [("basin", BASIN), ("consumer", "docs-feed")];
    // The records are final once the clock has passed their millisecond.
    tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    let lag = |scraped: common::prometheus::Scrape| scraped.get("rill_consumer_lag_messages", &of);
    assert_eq!(lag(scrape(&server).await), 3.0);
    // One received and not acked: the lag counts from it.
    let first = receive(&server, "docs-feed", 1, 1000).await;
    assert_eq!(first.len(), 1);
    let pending = scrape(&server).await;
    assert_eq!(pending.get("rill_consumer_pending", &of), 1.0);
    assert_eq!(lag(pending), 3.0);
    assert_eq!(ack(&server, "docs-feed", &first).await, 1);
    assert_eq!(lag(scrape(&server).await), 2.0);
    let mut acked = 1;
    while acked < 3 {
        let messages = receive(&server, "docs-feed", 10, 1000).await;
        acked += ack(&server, "docs-feed", &messages).await;
    }
    let done = scrape(&server).await;
    assert_eq!(done.get("rill_consumer_lag_seconds", &of), 0.0);
    assert_eq!(done.get("rill_consumer_acked_total", &of), 3.0);
    assert_eq!(lag(done), 0.0);
}

/// Each minute's tick samples every consumer's lag; a consumer's `GET`
/// answers the last hour of them (the console draws it).
#[tokio::test]
async fn lag_is_sampled_into_a_history() {
    use common::SendAndExpect;
    let engine =
        rill::engine::Engine::open(std::sync::Arc::new(rill::storage::MemoryStorage::default()))
            .unwrap();
    let server = TestServer::start_engine(engine.clone(), Default::default()).await;
    server.with_stream("jobs").await;
    ensure(&server, "w", json!({ "source": { "stream": "jobs" } })).await;
    server.append("jobs", &["a", "b"]).await;
    engine.usage_tick(true).await;
    let body = server
        .get("/v1/consumers/w")
        .expect_status(StatusCode::OK)
        .await;
    let history = body["state"]["lag_history"].as_array().unwrap().clone();
    assert_eq!(history.len(), 1, "{body}");
    assert_eq!(history[0][1], 2);
    let messages = receive(&server, "w", 10, 0).await;
    ack(&server, "w", &messages).await;
    engine.usage_tick(true).await; // the same minute: sampled again
    let body = server
        .get("/v1/consumers/w")
        .expect_status(StatusCode::OK)
        .await;
    let last = body["state"]["lag_history"]
        .as_array()
        .unwrap()
        .last()
        .unwrap()
        .clone();
    assert_eq!(last[1], 0, "{body}");
}
