//! A reader following a stream over SSE receives records appended after it
//! started, in order, promptly.

mod common;

use std::time::{Duration, Instant};

use common::*;
use serde_json::Value;

#[tokio::test]
async fn sse_reader_follows_live_appends_in_order() {
    let server = TestServer::start().await;
    server.with_stream("live").await;
    server.append("live", &["before"]).await;

    let resp = server
        .get("/v1/streams/live/records?seq_num=0")
        .header("accept", "text/event-stream")
        .send()
        .await
        .unwrap();
    assert!(resp.status().is_success());
    let mut events = SseReader::new(resp);

    let writer = {
        let base = server.base.clone();
        let client = server.client.clone();
        tokio::spawn(async move {
            for batch in 0..20 {
                let records: Vec<Value> = (0..3)
                    .map(|i| serde_json::json!({ "body": format!("live-{}", batch * 3 + i) }))
                    .collect();
                let resp = client
                    .post(format!("{base}/v1/streams/live/records"))
                    .header("s2-basin", BASIN)
                    .json(&serde_json::json!({ "records": records }))
                    .send()
                    .await
                    .unwrap();
                assert!(resp.status().is_success());
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
    };

    let mut expected: Vec<String> = vec!["before".into()];
    expected.extend((0..60).map(|i| format!("live-{i}")));
    let mut received = Vec::new();
    let mut next_seq = 0u64;
    let started = Instant::now();
    while received.len() < expected.len() {
        // Each record must arrive within 2 s of the previous one.
        let event = events
            .next_within(Duration::from_secs(2))
            .await
            .expect("session ended early");
        match event.event.as_deref() {
            Some("batch") => {
                let batch: Value = serde_json::from_str(&event.data).unwrap();
                for record in batch["records"].as_array().unwrap() {
                    assert_eq!(
                        record["seq_num"].as_u64().unwrap(),
                        next_seq,
                        "records out of order"
                    );
                    next_seq += 1;
                    received.push(record["body"].as_str().unwrap().to_string());
                }
            }
            Some("ping") => {}
            other => panic!("unexpected event {other:?}: {}", event.data),
        }
    }
    assert_eq!(received, expected);
    assert!(started.elapsed() < Duration::from_secs(10));
    writer.await.unwrap();
}

#[tokio::test]
async fn shutdown_ends_live_sessions_and_completes() {
    let server = TestServer::start().await;
    server.with_stream("live").await;
    server.append("live", &["a"]).await;
    let resp = server
        .get("/v1/streams/live/records?seq_num=0")
        .header("accept", "text/event-stream")
        .send()
        .await
        .unwrap();
    let mut events = SseReader::new(resp);
    assert_eq!(
        events
            .next_within(Duration::from_secs(5))
            .await
            .unwrap()
            .event
            .as_deref(),
        Some("batch")
    );
    assert_eq!(
        events
            .next_within(Duration::from_secs(5))
            .await
            .unwrap()
            .event
            .as_deref(),
        Some("ping")
    );

    let stopping = tokio::spawn(server.stop());
    let error = events.next_within(Duration::from_secs(5)).await.unwrap();
    assert_eq!(error.event.as_deref(), Some("error"));
    let body: Value = serde_json::from_str(&error.data).unwrap();
    assert_eq!(body["code"], "unavailable");
    tokio::time::timeout(Duration::from_secs(10), stopping)
        .await
        .expect("shutdown completes while a session was open")
        .unwrap();
}
