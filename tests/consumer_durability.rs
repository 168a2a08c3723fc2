//! Consumers' durable state: cursor commits, explicit state across a
//! restart, and at-least-once delivery to workers that crash.

mod common;

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::consumers::{ack, append_n, ensure, receive, seqs, settle, state};
use common::*;
use reqwest::StatusCode;
use rill::storage::{MemoryStorage, Storage};
use serde_json::json;

#[tokio::test]
async fn cursor_policy_commits_and_hands_out_again() {
    let storage: Arc<dyn Storage> = Arc::new(MemoryStorage::default());
    let server = TestServer::start_on(storage.clone()).await;
    server.with_stream("log").await;
    ensure(
        &server,
        "group",
        json!({ "source": { "stream": "log" }, "ack_policy": "cursor", "ack_wait_ms": 300 }),
    )
    .await;
    append_n(&server, "log", 10).await;

    // Two workers get disjoint batches.
    let a = receive(&server, "group", 4, 0).await;
    let b = receive(&server, "group", 4, 0).await;
    assert_eq!(seqs(&a), [0, 1, 2, 3]);
    assert_eq!(seqs(&b), [4, 5, 6, 7]);
    assert!(a.iter().all(|m| m.get("ack_id").is_none()));
    let resp = settle(&server, "group", "commit", json!({ "seq_num": 4 })).await;
    assert_eq!(
        expect_status(resp, StatusCode::OK).await["committed"]["seq_num"],
        4
    );
    // Committing backwards does nothing; past the tail is refused; acks
    // are for explicit consumers.
    let resp = settle(&server, "group", "commit", json!({ "seq_num": 2 })).await;
    assert_eq!(
        expect_status(resp, StatusCode::OK).await["committed"]["seq_num"],
        4
    );
    let resp = settle(&server, "group", "commit", json!({ "seq_num": 11 })).await;
    expect_error(resp, StatusCode::UNPROCESSABLE_ENTITY, "invalid").await;
    let resp = settle(&server, "group", "ack", json!({ "ack_ids": ["x"] })).await;
    expect_error(resp, StatusCode::UNPROCESSABLE_ENTITY, "invalid").await;

    // b's worker never commits: after ack_wait its positions come back.
    tokio::time::sleep(Duration::from_millis(400)).await;
    let again = receive(&server, "group", 10, 0).await;
    assert_eq!(seqs(&again), [4, 5, 6, 7, 8, 9]);
    assert_eq!(again[0]["delivery_count"], 2);
    assert_eq!(again[5]["delivery_count"], 1);
    let resp = settle(&server, "group", "commit", json!({ "seq_num": 7 })).await;
    expect_status(resp, StatusCode::OK).await;

    // A restarted server resumes at the committed position.
    server.stop().await;
    let server = TestServer::start_on(storage).await;
    let resumed = receive(&server, "group", 10, 0).await;
    assert_eq!(seqs(&resumed), [7, 8, 9]);
    let st = state(&server, "group").await;
    assert_eq!(st["frontier"]["seq_num"], 7);
    assert_eq!(st["lag"], 3);
}

#[tokio::test]
async fn explicit_state_survives_a_restart() {
    let storage: Arc<dyn Storage> = Arc::new(MemoryStorage::default());
    let server = TestServer::start_on(storage.clone()).await;
    server.with_stream("jobs").await;
    ensure(
        &server,
        "w",
        json!({ "source": { "stream": "jobs" }, "ack_wait_ms": 1500 }),
    )
    .await;
    append_n(&server, "jobs", 6).await;
    let got = receive(&server, "w", 4, 0).await;
    assert_eq!(seqs(&got), [0, 1, 2, 3]);
    ack(&server, "w", &got[..2]).await;
    let resp = settle(
        &server,
        "w",
        "nack",
        json!({ "ack_ids": [got[3]["ack_id"]], "delay_ms": 0 }),
    )
    .await;
    expect_status(resp, StatusCode::OK).await;
    server.stop().await;

    let server = TestServer::start_on(storage).await;
    // Acked ones never come back; 2 is still in flight (not redelivered
    // before its ack wait); 3 was nacked, so it comes first, then the rest.
    let next = receive(&server, "w", 10, 0).await;
    assert_eq!(seqs(&next), [3, 4, 5]);
    assert_eq!(next[0]["delivery_count"], 2);
    // The id handed out before the restart still acks 2.
    assert_eq!(ack(&server, "w", &got[2..3]).await, 1);
    ack(&server, "w", &next).await;
    let st = state(&server, "w").await;
    assert_eq!(st["pending"], 0);
    assert_eq!(st["acked"], 6);
}

/// At least once, with workers that "crash" (drop what they received
/// without acking): every message is acked, and no message is handed to
/// two workers at once within its ack wait.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn at_least_once_with_crashing_workers() {
    let server = Arc::new(TestServer::start().await);
    server.with_stream("work").await;
    const N: usize = 600;
    const ACK_WAIT_MS: u64 = 400;
    ensure(
        &server,
        "pool",
        json!({ "source": { "stream": "work" }, "ack_wait_ms": ACK_WAIT_MS }),
    )
    .await;
    append_n(&server, "work", N).await;

    // Per seq num: (delivery count, when received) of every delivery.
    type Deliveries = HashMap<u64, Vec<(u64, Instant)>>;
    let deliveries: Arc<Mutex<Deliveries>> = Arc::default();
    let acked: Arc<Mutex<HashSet<u64>>> = Arc::default();
    let mut workers = Vec::new();
    for w in 0..8u64 {
        let (server, deliveries, acked) = (server.clone(), deliveries.clone(), acked.clone());
        workers.push(tokio::spawn(async move {
            let deadline = Instant::now() + Duration::from_secs(60);
            let mut round = 0u64;
            while acked.lock().unwrap().len() < N && Instant::now() < deadline {
                round += 1;
                let msgs = receive(
                    &server,
                    "pool",
                    1 + (round as usize * 7 + w as usize) % 20,
                    200,
                )
                .await;
                let now = Instant::now();
                for m in &msgs {
                    deliveries
                        .lock()
                        .unwrap()
                        .entry(m["seq_num"].as_u64().unwrap())
                        .or_default()
                        .push((m["delivery_count"].as_u64().unwrap(), now));
                }
                // Every fifth round this worker "crashes" and loses the batch.
                if (round + w).is_multiple_of(5) {
                    continue;
                }
                let resp = settle(
                    &server,
                    "pool",
                    "ack",
                    json!({ "ack_ids": msgs.iter().map(|m| &m["ack_id"]).collect::<Vec<_>>() }),
                )
                .await;
                if resp.status() == StatusCode::OK {
                    acked
                        .lock()
                        .unwrap()
                        .extend(msgs.iter().map(|m| m["seq_num"].as_u64().unwrap()));
                } else {
                    // Only an expired delivery may be refused.
                    expect_error(resp, StatusCode::CONFLICT, "ack_expired").await;
                }
            }
        }));
    }
    for w in workers {
        w.await.unwrap();
    }
    let acked = acked.lock().unwrap().clone();
    assert_eq!(acked.len(), N, "every message is acked at least once");
    let deliveries = deliveries.lock().unwrap().clone();
    let mut redelivered = 0;
    for (seq, mut list) in deliveries {
        list.sort_by_key(|(count, _)| *count);
        for (i, pair) in list.windows(2).enumerate() {
            assert_eq!(
                pair[1].0,
                pair[0].0 + 1,
                "seq {seq}: delivery counts {list:?}"
            );
            let gap = pair[1].1.duration_since(pair[0].1);
            assert!(
                gap >= Duration::from_millis(ACK_WAIT_MS - 100),
                "seq {seq}: delivery {} came {gap:?} after the one before",
                i + 2
            );
            redelivered += 1;
        }
        assert_eq!(list[0].0, 1, "seq {seq}: first delivery count");
    }
    assert!(redelivered > 0, "the crashes caused redeliveries");
    let st = state(&server, "pool").await;
    assert_eq!(st["pending"], 0);
    assert_eq!(st["lag"], 0);
}
