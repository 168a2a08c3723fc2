//! Consumers with explicit acks: redelivery, nack, extend, dead letters,
//! max_ack_pending, key ordering, and concurrent workers.

mod common;

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::consumers::{ack, append_n, ensure, receive, seqs, settle, state, texts};
use common::*;
use reqwest::StatusCode;
use serde_json::{json, Value};

#[tokio::test]
async fn redelivery_nack_extend_and_expired_ack_ids() {
    let server = TestServer::start().await;
    server.with_stream("jobs").await;
    ensure(
        &server,
        "w",
        json!({ "source": { "stream": "jobs" }, "ack_wait_ms": 1000 }),
    )
    .await;
    server.append("jobs", &["j0", "j1", "j2"]).await;

    let first = receive(&server, "w", 3, 0).await;
    assert_eq!(seqs(&first), [0, 1, 2]);
    assert!(first.iter().all(|m| m["delivery_count"] == 1));
    // Nothing more while all three are in flight.
    assert!(receive(&server, "w", 3, 0).await.is_empty());
    let st = state(&server, "w").await;
    assert_eq!(
        (st["pending"].as_u64(), st["in_flight"].as_u64()),
        (Some(3), Some(3))
    );

    // j0 acked; j1 nacked with a delay; j2 extended.
    assert_eq!(ack(&server, "w", &first[..1]).await, 1);
    let resp = settle(
        &server,
        "w",
        "nack",
        json!({ "ack_ids": [first[1]["ack_id"]], "delay_ms": 2000 }),
    )
    .await;
    assert_eq!(expect_status(resp, StatusCode::OK).await["nacked"], 1);
    tokio::time::sleep(Duration::from_millis(600)).await;
    let resp = settle(
        &server,
        "w",
        "extend",
        json!({ "ack_ids": [first[2]["ack_id"]] }),
    )
    .await;
    assert_eq!(expect_status(resp, StatusCode::OK).await["extended"], 1);

    // At ~1100 ms: j2 would have been due at 1000 ms without the extend;
    // j1 waits for its nack delay.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(receive(&server, "w", 3, 0).await.is_empty());

    // j2's extension runs out at ~1600 ms: it comes back, delivered twice.
    let again = receive(&server, "w", 3, 3000).await;
    assert_eq!(seqs(&again), [2]);
    assert_eq!(again[0]["delivery_count"], 2);
    // Its first ack id is now expired: 409, and nothing applied.
    let resp = settle(
        &server,
        "w",
        "ack",
        json!({ "ack_ids": [first[2]["ack_id"], again[0]["ack_id"]] }),
    )
    .await;
    let body = expect_error(resp, StatusCode::CONFLICT, "ack_expired").await;
    // The message names the expired id as the worker sent it, and only it.
    let message = body["message"].as_str().unwrap();
    assert!(
        message.ends_with(first[2]["ack_id"].as_str().unwrap()),
        "{message}"
    );
    assert!(
        !message.contains(again[0]["ack_id"].as_str().unwrap()),
        "{message}"
    );
    assert_eq!(state(&server, "w").await["pending"], 2);

    // j1 after its delay (~2000 ms).
    let later = receive(&server, "w", 3, 3000).await;
    assert_eq!(seqs(&later), [1]);
    assert_eq!(later[0]["delivery_count"], 2);
    assert_eq!(ack(&server, "w", &later).await, 1);
    assert_eq!(ack(&server, "w", &again).await, 1);

    let st = state(&server, "w").await;
    assert_eq!(st["pending"], 0);
    assert_eq!(st["acked"], 3);
    assert_eq!(st["redelivered"], 2);
    assert_eq!(st["nacked"], 1);
    assert_eq!(st["lag"], 0);
    assert_eq!(st["ack_floor"], Value::Null);
    assert_eq!(st["frontier"]["seq_num"], 3);
}

#[tokio::test]
async fn dead_letters_after_max_deliver_and_replay() {
    let server = TestServer::start().await;
    server.with_stream("jobs").await;
    ensure(
        &server,
        "w",
        json!({ "source": { "stream": "jobs" }, "ack_wait_ms": 5000, "max_deliver": 2 }),
    )
    .await;
    server.append("jobs", &["poison", "fine"]).await;

    // "poison" is nacked on every delivery; "fine" is acked.
    let first = receive(&server, "w", 2, 0).await;
    assert_eq!(texts(&first), ["poison", "fine"]);
    ack(&server, "w", &first[1..]).await;
    for delivery in 1..=2 {
        let msgs = if delivery == 1 {
            first[..1].to_vec()
        } else {
            receive(&server, "w", 2, 1000).await
        };
        assert_eq!(texts(&msgs), ["poison"]);
        assert_eq!(msgs[0]["delivery_count"], delivery);
        let resp = settle(
            &server,
            "w",
            "nack",
            json!({ "ack_ids": [msgs[0]["ack_id"]] }),
        )
        .await;
        expect_status(resp, StatusCode::OK).await;
    }
    // Delivered twice: the third time it goes to the dead-letter stream.
    assert!(receive(&server, "w", 2, 200).await.is_empty());
    let st = state(&server, "w").await;
    assert_eq!(st["dead_lettered"], 1);
    assert_eq!(st["pending"], 0);

    let dead = server
        .read("_consumers%2Fw%2Fdead_letters", "seq_num=0")
        .await;
    assert_eq!(bodies(&dead), ["poison"]);
    let headers: HashMap<String, String> = dead["records"][0]["headers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| (h[0].as_str().unwrap().into(), h[1].as_str().unwrap().into()))
        .collect();
    assert_eq!(headers["delivery_count"], "2");
    assert_eq!(headers["position"], "0");

    // Replay: a consumer of the dead-letter stream gets the message again.
    ensure(
        &server,
        "replay",
        json!({ "source": { "stream": "_consumers/w/dead_letters" } }),
    )
    .await;
    let replayed = receive(&server, "replay", 10, 0).await;
    assert_eq!(texts(&replayed), ["poison"]);
}

#[tokio::test]
async fn max_ack_pending_bounds_what_is_in_flight() {
    let server = TestServer::start().await;
    server.with_stream("jobs").await;
    ensure(
        &server,
        "w",
        json!({ "source": { "stream": "jobs" }, "max_ack_pending": 3 }),
    )
    .await;
    append_n(&server, "jobs", 10).await;

    let first = receive(&server, "w", 10, 0).await;
    assert_eq!(seqs(&first), [0, 1, 2]);
    // Full: a long poll waits, and an ack lets it go on.
    let waiter = {
        let base = server.base.clone();
        let client = server.client.clone();
        tokio::spawn(async move {
            let start = Instant::now();
            let resp = client
                .post(format!("{base}/v1/consumers/w/receive"))
                .header("s2-basin", BASIN)
                .json(&json!({ "batch_size": 10, "wait_ms": 5000 }))
                .send()
                .await
                .unwrap();
            let body: Value = resp.json().await.unwrap();
            (
                start.elapsed(),
                body["messages"].as_array().unwrap().clone(),
            )
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    ack(&server, "w", &first[..2]).await;
    let (waited, next) = waiter.await.unwrap();
    assert!(
        waited >= Duration::from_millis(250),
        "returned before the ack: {waited:?}"
    );
    assert_eq!(seqs(&next), [3, 4]);
    assert_eq!(state(&server, "w").await["pending"], 3);
}

#[tokio::test]
async fn key_ordering_over_a_collection_events_feed() {
    let server = TestServer::start().await;
    server.create_basin(BASIN).await;
    let resp = server.put("/v1/collections/users").send().await.unwrap();
    assert!(resp.status().is_success());
    ensure(
        &server,
        "sync",
        json!({
            "source": { "collection": "users", "feed": "events" },
            "ordered_by_key": true,
            "ack_wait_ms": 60000,
        }),
    )
    .await;
    for (id, n) in [("a", 1), ("b", 1), ("a", 2), ("a", 3), ("b", 2)] {
        let resp = server
            .put(&format!("/v1/collections/users/records/{id}"))
            .json(&json!({ "n": n }))
            .send()
            .await
            .unwrap();
        expect_status(resp, StatusCode::OK).await;
    }
    let key_of = |m: &Value| {
        (
            m["event"]["id"].as_str().unwrap().to_string(),
            m["event"]["data"]["n"].as_u64().unwrap(),
        )
    };
    // One message per key at a time.
    let first = receive(&server, "sync", 10, 0).await;
    let got: Vec<_> = first.iter().map(key_of).collect();
    assert_eq!(got, [("a".into(), 1), ("b".into(), 1)]);
    assert_eq!(first[0]["event"]["event"], "created");
    assert!(receive(&server, "sync", 10, 0).await.is_empty());
    ack(&server, "sync", &first[..1]).await;
    let next = receive(&server, "sync", 10, 0).await;
    assert_eq!(
        next.iter().map(key_of).collect::<Vec<_>>(),
        [("a".into(), 2)]
    );
    assert_eq!(next[0]["event"]["event"], "updated");
    assert_eq!(next[0]["event"]["changes"], json!({ "n": 1 }));
    ack(&server, "sync", &first[1..]).await;
    ack(&server, "sync", &next).await;
    let rest = receive(&server, "sync", 10, 0).await;
    assert_eq!(
        rest.iter().map(key_of).collect::<Vec<_>>(),
        [("a".into(), 3), ("b".into(), 2)]
    );
}

/// Many workers with key ordering: each key's messages are acked in
/// stream order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_workers_ack_each_key_in_order() {
    let server = Arc::new(TestServer::start().await);
    server.with_stream("events").await;
    ensure(
        &server,
        "ordered",
        json!({ "source": { "stream": "events" }, "ordered_by_key": true, "ack_wait_ms": 60000 }),
    )
    .await;
    const KEYS: usize = 8;
    const PER_KEY: usize = 25;
    let records: Vec<Value> = (0..KEYS * PER_KEY)
        .map(|i| json!({ "headers": [["key", format!("k{}", i % KEYS)]], "body": format!("{}", i / KEYS) }))
        .collect();
    let resp = server
        .post("/v1/streams/events/records")
        .json(&json!({ "records": records }))
        .send()
        .await
        .unwrap();
    expect_status(resp, StatusCode::OK).await;

    let acked: Arc<Mutex<Vec<(String, u64)>>> = Arc::default();
    let mut workers = Vec::new();
    for w in 0..6u64 {
        let (server, acked) = (server.clone(), acked.clone());
        workers.push(tokio::spawn(async move {
            let deadline = Instant::now() + Duration::from_secs(30);
            while acked.lock().unwrap().len() < KEYS * PER_KEY && Instant::now() < deadline {
                let msgs = receive(&server, "ordered", 3, 200).await;
                for m in msgs {
                    tokio::time::sleep(Duration::from_millis(
                        (w * 7 + m["seq_num"].as_u64().unwrap()) % 5,
                    ))
                    .await;
                    let key = m["record"]["headers"][0][1].as_str().unwrap().to_string();
                    // Recorded before the ack is sent: the next message of
                    // the key cannot be delivered before the ack lands.
                    acked
                        .lock()
                        .unwrap()
                        .push((key, m["seq_num"].as_u64().unwrap()));
                    ack(&server, "ordered", &[m]).await;
                }
            }
        }));
    }
    for w in workers {
        w.await.unwrap();
    }
    let acked = acked.lock().unwrap().clone();
    assert_eq!(acked.len(), KEYS * PER_KEY, "every message acked once");
    let mut per_key: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    for (key, seq) in acked {
        per_key.entry(key).or_default().push(seq);
    }
    for (key, seqs) in per_key {
        let mut sorted = seqs.clone();
        sorted.sort();
        assert_eq!(seqs, sorted, "key {key} acked out of order");
        assert_eq!(seqs.len(), PER_KEY);
    }
}

/// A command record (fence) can be dead-lettered: its empty-named header
/// is kept as `command`, so the dead letter is a plain record.
#[tokio::test]
async fn command_records_dead_letter_as_plain_records() {
    let server = TestServer::start().await;
    server.with_stream("cmds").await;
    ensure(
        &server,
        "w",
        json!({ "source": { "stream": "cmds" }, "max_deliver": 1 }),
    )
    .await;
    let resp = server
        .post("/v1/streams/cmds/records")
        .json(&json!({ "records": [{ "headers": [["", "fence"]], "body": "tok" }] }))
        .send()
        .await
        .unwrap();
    expect_status(resp, StatusCode::OK).await;
    let got = receive(&server, "w", 1, 0).await;
    assert_eq!(got[0]["record"]["headers"], json!([["", "fence"]]));
    let resp = settle(
        &server,
        "w",
        "nack",
        json!({ "ack_ids": [got[0]["ack_id"]] }),
    )
    .await;
    expect_status(resp, StatusCode::OK).await;
    assert!(receive(&server, "w", 1, 0).await.is_empty());
    assert_eq!(state(&server, "w").await["dead_lettered"], 1);
    let dead = server
        .read("_consumers%2Fw%2Fdead_letters", "seq_num=0")
        .await;
    assert_eq!(bodies(&dead), ["tok"]);
    let headers = &dead["records"][0]["headers"];
    assert!(
        headers
            .as_array()
            .unwrap()
            .contains(&json!(["command", "fence"])),
        "{headers}"
    );
}
