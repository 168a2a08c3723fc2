//! A consumer over a cluster keeps its guarantees while its owner dies:
//! workers on every node receive and ack over plain HTTP, the owner is
//! SIGKILLed mid-run and another node takes over, and every message is
//! acked at least once, redeliveries count up, and a message whose ack
//! was acknowledged is never handed out again.
//!
//! Needs Debian's `postgresql` (skipped without it unless
//! `RILL_REQUIRE_SERVICES` is set).

mod common;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::cluster::*;
use common::services::Postgres;
use serde_json::{json, Value};

const MESSAGES: u64 = 300;
const ACK_WAIT_MS: u64 = 1000;
const WORKERS_PER_NODE: usize = 3;

/// What the workers saw, by seq num.
#[derive(Default)]
struct Seen {
    /// Each delivery: its count, and when the receive that got it was sent.
    deliveries: HashMap<u64, Vec<(u64, Instant)>>,
    /// When an ack of it was first acknowledged.
    acked_at: HashMap<u64, Instant>,
}

/// One worker until every message is acked (or a minute has passed):
/// receive, then ack all but every fourth batch (a worker that "crashes"
/// and loses it). It talks to `bases[w % len]`, and to the next node once
/// that one cannot be reached.
async fn worker(bases: Vec<String>, w: usize, seen: Arc<Mutex<Seen>>) {
    let mut node = w % bases.len();
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut round = 0usize;
    while (seen.lock().unwrap().acked_at.len() as u64) < MESSAGES && Instant::now() < deadline {
        round += 1;
        let asked = Instant::now();
        let base = &bases[node];
        let answer = http
            .post(format!("{base}/v1/consumers/pool/receive"))
            .header("s2-basin", BASIN)
            .json(&json!({ "batch_size": 1 + (round * 7 + w) % 10, "wait_ms": 200 }))
            .send()
            .await;
        let Ok(answer) = answer else {
            // Its node is gone (what it handed out, if anything, comes
            // again after the ack wait).
            node = (node + 1) % bases.len();
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        let status = answer.status();
        if status == 503 || status == 502 {
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        }
        let body: Value = answer.json().await.unwrap();
        assert!(status.is_success(), "receive: {status} {body}");
        let messages = body["messages"].as_array().unwrap().clone();
        {
            let mut seen = seen.lock().unwrap();
            for m in &messages {
                let seq = m["seq_num"].as_u64().unwrap();
                let count = m["delivery_count"].as_u64().unwrap();
                seen.deliveries.entry(seq).or_default().push((count, asked));
            }
        }
        if messages.is_empty() || (round + w).is_multiple_of(4) {
            continue;
        }
        let ids: Vec<&Value> = messages.iter().map(|m| &m["ack_id"]).collect();
        // An ack whose outcome is unknown (its answer lost as the owner
        // died) is sent again: acks are idempotent, and one that took
        // effect would never come back to be acked.
        for _ in 0..100 {
            let base = &bases[node];
            let answer = http
                .post(format!("{base}/v1/consumers/pool/ack"))
                .header("s2-basin", BASIN)
                .json(&json!({ "ack_ids": ids }))
                .send()
                .await;
            let Ok(answer) = answer else {
                node = (node + 1) % bases.len();
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            };
            match answer.status().as_u16() {
                200 => {
                    let now = Instant::now();
                    let mut seen = seen.lock().unwrap();
                    for m in &messages {
                        seen.acked_at
                            .entry(m["seq_num"].as_u64().unwrap())
                            .or_insert(now);
                    }
                }
                // Expired meanwhile: handed out again, acked then.
                409 => {}
                502 | 503 => {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
                other => panic!("ack: {other} {}", answer.text().await.unwrap()),
            }
            break;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_consumer_keeps_its_guarantees_across_a_takeover() {
    let Some(pg) = Postgres::start() else { return };
    let (mut nodes, bases, http) = start_cluster(&pg.database("cluster_consumers"), 3);
    let (first, _) = wait_for_owner(&http, &bases).await;
    make(
        &http,
        &bases[first],
        &["/v1/basins/lin-basin", "/v1/streams/s"],
    )
    .await;
    let made = settled(
        http.put(format!("{}/v1/consumers/pool", bases[first]))
            .header("s2-basin", BASIN)
            .json(&json!({ "source": { "stream": "s" }, "ack_wait_ms": ACK_WAIT_MS })),
    )
    .await;
    assert!(made.status().is_success(), "{}", made.status());
    for k in 0..MESSAGES {
        assert_eq!(append(&http, &bases[first], &format!("m{k}")).await, k);
    }

    let seen: Arc<Mutex<Seen>> = Arc::default();
    let mut workers = Vec::new();
    for w in 0..WORKERS_PER_NODE * bases.len() {
        workers.push(tokio::spawn(worker(bases.clone(), w, seen.clone())));
    }
    // The owner dies once a third of the messages are acked.
    let deadline = Instant::now() + Duration::from_secs(30);
    while (seen.lock().unwrap().acked_at.len() as u64) < MESSAGES / 3 {
        assert!(Instant::now() < deadline, "no progress before the kill");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    nodes[first].take().unwrap().0.kill();
    let acked_before_kill = seen.lock().unwrap().acked_at.len();
    assert!(
        (acked_before_kill as u64) < MESSAGES,
        "every message was acked before the kill: nothing tested the takeover"
    );
    for worker in workers {
        worker.await.unwrap();
    }

    let seen = std::mem::take(&mut *seen.lock().unwrap());
    assert_eq!(
        seen.acked_at.len() as u64,
        MESSAGES,
        "every message acked at least once ({acked_before_kill} before the kill)"
    );
    let mut redelivered = 0;
    for (seq, deliveries) in &seen.deliveries {
        let mut counts: Vec<u64> = deliveries.iter().map(|(count, _)| *count).collect();
        counts.sort_unstable();
        // A delivery whose answer was lost is one the workers never saw:
        // counts may skip, never repeat.
        assert!(
            counts.windows(2).all(|pair| pair[0] < pair[1]),
            "seq {seq}: delivery counts {counts:?}"
        );
        redelivered += counts.len() - 1;
        if let Some(acked) = seen.acked_at.get(seq) {
            for (count, asked) in deliveries {
                assert!(
                    asked < acked,
                    "seq {seq}: delivered again (count {count}) after its ack was acknowledged"
                );
            }
        }
    }
    assert!(
        redelivered > 0,
        "lost batches and the kill cause redeliveries"
    );
    eprintln!(
        "{} messages acked, {acked_before_kill} before the owner was killed; {redelivered} redeliveries",
        seen.acked_at.len()
    );

    // The consumer, as the new owner has it: nothing pending, no lag.
    let survivor = &bases[(first + 1) % 3];
    let state: Value = settled(
        http.get(format!("{survivor}/v1/consumers/pool"))
            .header("s2-basin", BASIN),
    )
    .await
    .json()
    .await
    .unwrap();
    assert_eq!(state["state"]["pending"], 0, "{state}");
    assert_eq!(state["state"]["lag"], 0, "{state}");
}
