//! Consumers over HTTP: admin, explicit acks (redelivery, nack, extend,
//! dead letters, max_ack_pending, key ordering), cursor commits, durable
//! state across restarts, and at-least-once delivery to concurrent workers.

mod common;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::consumers::{ack, ensure, receive, settle};
use common::*;
use reqwest::StatusCode;
use rill::storage::{MemoryStorage, Storage};
use serde_json::{json, Value};

async fn state(server: &TestServer, name: &str) -> Value {
    let resp = server
        .get(&format!("/v1/consumers/{name}"))
        .send()
        .await
        .unwrap();
    expect_status(resp, StatusCode::OK).await["state"].clone()
}

fn seqs(messages: &[Value]) -> Vec<u64> {
    messages
        .iter()
        .map(|m| m["seq_num"].as_u64().unwrap())
        .collect()
}

fn texts(messages: &[Value]) -> Vec<String> {
    messages
        .iter()
        .map(|m| m["record"]["body"].as_str().unwrap().to_string())
        .collect()
}

async fn append_n(server: &TestServer, stream: &str, n: usize) {
    for chunk in (0..n).collect::<Vec<_>>().chunks(500) {
        let bodies: Vec<String> = chunk.iter().map(|i| format!("m{i}")).collect();
        let refs: Vec<&str> = bodies.iter().map(String::as_str).collect();
        server.append(stream, &refs).await;
    }
}

#[tokio::test]
async fn consumer_admin_and_bad_input() {
    let server = TestServer::start().await;
    server.with_stream("orders").await;

    let resp = server
        .put("/v1/consumers/billing")
        .json(&json!({ "source": { "stream": "orders" } }))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.headers()["s2-provision-result"], "created");
    let created = expect_status(resp, StatusCode::CREATED).await;
    assert_eq!(created["config"]["ack_policy"], "explicit");
    assert_eq!(created["config"]["start"], "beginning");
    assert_eq!(
        created["dead_letter_stream"],
        "_consumers/billing/dead_letters"
    );

    // The same again is a no-op; a changed ack_wait is an update; another
    // source or start is a conflict.
    let resp = server
        .put("/v1/consumers/billing")
        .json(&json!({ "source": { "stream": "orders" } }))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.headers()["s2-provision-result"], "noop");
    let resp = server
        .put("/v1/consumers/billing")
        .json(&json!({ "source": { "stream": "orders" }, "ack_wait_ms": 5000 }))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.headers()["s2-provision-result"], "updated");
    for other in [
        json!({ "source": { "stream": "other" } }),
        json!({ "source": { "stream": "orders" }, "start": "tail" }),
        json!({ "source": { "stream": "orders" }, "ack_policy": "cursor" }),
    ] {
        let resp = server
            .put("/v1/consumers/billing")
            .json(&other)
            .send()
            .await
            .unwrap();
        expect_error(resp, StatusCode::CONFLICT, "consumer_conflict").await;
    }

    // Bad configurations and unknown sources.
    for (config, status, code) in [
        (
            json!({ "source": { "stream": "nope" } }),
            StatusCode::NOT_FOUND,
            "stream_not_found",
        ),
        (
            json!({ "source": { "collection": "nope" } }),
            StatusCode::NOT_FOUND,
            "collection_not_found",
        ),
        (
            json!({ "source": { "stream": "orders" }, "ack_wait_ms": 0 }),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid",
        ),
        (
            json!({ "source": { "stream": "orders" }, "max_ack_pending": 0 }),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid",
        ),
        (
            json!({ "source": { "stream": "orders" }, "start": "middle" }),
            StatusCode::BAD_REQUEST,
            "bad_json",
        ),
        (
            json!({ "source": { "stream": "orders" }, "filter": { "id_prefix": "a" } }),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid",
        ),
        (
            json!({ "source": { "stream": "orders" }, "ack_policy": "cursor", "max_deliver": 2 }),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid",
        ),
        (
            json!({ "surce": { "stream": "orders" } }),
            StatusCode::BAD_REQUEST,
            "bad_json",
        ),
    ] {
        let resp = server
            .put("/v1/consumers/c2")
            .json(&config)
            .send()
            .await
            .unwrap();
        let body = expect_status(resp, status).await;
        assert_eq!(body["code"], code, "{config}: {body}");
    }
    let resp = server
        .put("/v1/consumers/a%2Fb")
        .json(&json!({ "source": { "stream": "orders" } }))
        .send()
        .await
        .unwrap();
    expect_error(resp, StatusCode::UNPROCESSABLE_ENTITY, "invalid").await;

    // List, get, patch.
    ensure(
        &server,
        "audit",
        json!({ "source": { "stream": "orders" }, "start": { "seq_num": 0 } }),
    )
    .await;
    let resp = server
        .put("/v1/consumers/too-far")
        .json(&json!({ "source": { "stream": "orders" }, "start": { "seq_num": 99 } }))
        .send()
        .await
        .unwrap();
    expect_error(resp, StatusCode::UNPROCESSABLE_ENTITY, "invalid").await;
    let list = expect_status(
        server.get("/v1/consumers").send().await.unwrap(),
        StatusCode::OK,
    )
    .await;
    let names: Vec<&str> = list["consumers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["audit", "billing"]);
    assert_eq!(list["has_more"], false);
    let resp = server
        .patch("/v1/consumers/billing")
        .json(&json!({ "max_deliver": 3, "max_ack_pending": 10 }))
        .send()
        .await
        .unwrap();
    let patched = expect_status(resp, StatusCode::OK).await;
    assert_eq!(patched["config"]["max_deliver"], 3);
    assert_eq!(patched["config"]["max_ack_pending"], 10);
    let resp = server
        .patch("/v1/consumers/billing")
        .json(&json!({ "source": { "stream": "x" } }))
        .send()
        .await
        .unwrap();
    expect_error(resp, StatusCode::BAD_REQUEST, "bad_json").await;

    // Receive and settle errors.
    server.append("orders", &["a", "b"]).await;
    let resp = server
        .post("/v1/consumers/billing/receive")
        .json(&json!({ "batch_size": 0 }))
        .send()
        .await
        .unwrap();
    expect_error(resp, StatusCode::UNPROCESSABLE_ENTITY, "invalid").await;
    let messages = receive(&server, "billing", 10, 0).await;
    assert_eq!(texts(&messages), ["a", "b"]);
    let resp = settle(
        &server,
        "billing",
        "ack",
        json!({ "ack_ids": ["garbage!"] }),
    )
    .await;
    expect_error(resp, StatusCode::UNPROCESSABLE_ENTITY, "invalid").await;
    // An id from another consumer.
    let other = receive(&server, "audit", 1, 0).await;
    assert_eq!(texts(&other), ["a"]);
    let resp = settle(
        &server,
        "billing",
        "ack",
        json!({ "ack_ids": [other[0]["ack_id"]] }),
    )
    .await;
    let body = expect_error(resp, StatusCode::UNPROCESSABLE_ENTITY, "invalid").await;
    assert!(body["message"]
        .as_str()
        .unwrap()
        .contains("another consumer"));
    // A bad id in a batch applies nothing.
    let resp = settle(
        &server,
        "billing",
        "ack",
        json!({ "ack_ids": [messages[0]["ack_id"], "garbage!"] }),
    )
    .await;
    expect_error(resp, StatusCode::UNPROCESSABLE_ENTITY, "invalid").await;
    assert_eq!(state(&server, "billing").await["pending"], 2);
    // Acking twice is harmless.
    assert_eq!(ack(&server, "billing", &messages).await, 2);
    assert_eq!(ack(&server, "billing", &messages).await, 0);
    let resp = settle(&server, "billing", "commit", json!({ "seq_num": 1 })).await;
    expect_error(resp, StatusCode::UNPROCESSABLE_ENTITY, "invalid").await;

    // Streams that belong to consumers are not written directly.
    let resp = server
        .post("/v1/streams/_consumers%2Fbilling%2Fdead_letters/records")
        .json(&json!({ "records": [{ "body": "x" }] }))
        .send()
        .await
        .unwrap();
    expect_error(resp, StatusCode::UNPROCESSABLE_ENTITY, "invalid").await;

    // Delete; then everything about it is 404.
    let resp = server.delete("/v1/consumers/billing").send().await.unwrap();
    expect_status(resp, StatusCode::NO_CONTENT).await;
    for resp in [
        server.get("/v1/consumers/billing").send().await.unwrap(),
        server.delete("/v1/consumers/billing").send().await.unwrap(),
        server
            .post("/v1/consumers/billing/receive")
            .json(&json!({}))
            .send()
            .await
            .unwrap(),
        settle(
            &server,
            "billing",
            "ack",
            json!({ "ack_ids": [messages[0]["ack_id"]] }),
        )
        .await,
    ] {
        expect_error(resp, StatusCode::NOT_FOUND, "consumer_not_found").await;
    }
    let resp = server
        .get("/v1/streams/_consumers%2Fbilling%2Fdead_letters/records/tail")
        .send()
        .await
        .unwrap();
    expect_error(resp, StatusCode::NOT_FOUND, "stream_not_found").await;

    // A consumer whose source is deleted says so.
    let resp = server.delete("/v1/streams/orders").send().await.unwrap();
    assert!(resp.status().is_success());
    let resp = server
        .post("/v1/consumers/audit/receive")
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    expect_error(resp, StatusCode::GONE, "source_deleted").await;
}

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

#[tokio::test]
async fn records_feed_delivers_latest_versions_with_filters() {
    let server = TestServer::start().await;
    server.create_basin(BASIN).await;
    let resp = server.put("/v1/collections/docs").send().await.unwrap();
    assert!(resp.status().is_success());
    ensure(
        &server,
        "pro",
        json!({
            "source": { "collection": "docs", "feed": "records" },
            "filter": { "id_prefix": "u-", "data": { "plan": "pro" } },
            "ack_wait_ms": 300,
        }),
    )
    .await;
    let put = |id: &'static str, data: Value| {
        let req = server
            .put(&format!("/v1/collections/docs/records/{id}"))
            .json(&data);
        async move { expect_status(req.send().await.unwrap(), StatusCode::OK).await }
    };
    put("u-1", json!({ "plan": "pro" })).await;
    put("u-2", json!({ "plan": "free" })).await;
    put("org-1", json!({ "plan": "pro" })).await;
    let got = receive(&server, "pro", 10, 1000).await;
    assert_eq!(got.len(), 1, "{got:?}");
    assert_eq!(got[0]["record"]["id"], "u-1");
    assert_eq!(got[0]["record"]["version"], 1);
    assert!(got[0]["cursor"].is_string());

    // Changed while in flight: the old version is not redelivered; the
    // new one is delivered instead.
    put("u-1", json!({ "plan": "pro", "seats": 5 })).await;
    put("u-2", json!({ "plan": "pro" })).await;
    tokio::time::sleep(Duration::from_millis(400)).await;
    let mut seen = Vec::new();
    for _ in 0..3 {
        for m in receive(&server, "pro", 10, 300).await {
            seen.push((
                m["record"]["id"].as_str().unwrap().to_string(),
                m["record"]["version"].as_u64().unwrap(),
            ));
            ack(&server, "pro", &[m]).await;
        }
    }
    seen.sort();
    assert_eq!(seen, [("u-1".to_string(), 2), ("u-2".to_string(), 2)]);
    assert_eq!(state(&server, "pro").await["dropped"], 1);

    // Cursor policy over the records feed commits a cursor.
    ensure(
        &server,
        "all",
        json!({ "source": { "collection": "docs", "feed": "records" }, "ack_policy": "cursor" }),
    )
    .await;
    let all = receive(&server, "all", 10, 0).await;
    assert_eq!(all.len(), 3);
    let resp = settle(
        &server,
        "all",
        "commit",
        json!({ "cursor": all[1]["cursor"] }),
    )
    .await;
    let committed = expect_status(resp, StatusCode::OK).await;
    assert_eq!(committed["committed"]["after_id"], all[1]["record"]["id"]);
    let resp = settle(&server, "all", "commit", json!({ "seq_num": 1 })).await;
    expect_error(resp, StatusCode::UNPROCESSABLE_ENTITY, "invalid").await;

    // An events-feed consumer filtered to deletions.
    ensure(
        &server,
        "deletions",
        json!({ "source": { "collection": "docs" }, "filter": { "events": ["deleted"] } }),
    )
    .await;
    let resp = server
        .delete("/v1/collections/docs/records/u-2")
        .send()
        .await
        .unwrap();
    assert!(resp.status().is_success());
    let del = receive(&server, "deletions", 10, 1000).await;
    assert_eq!(del.len(), 1);
    assert_eq!(del[0]["event"]["event"], "deleted");
    assert_eq!(del[0]["event"]["id"], "u-2");
}

#[tokio::test]
async fn long_poll_wakes_on_append() {
    let server = TestServer::start().await;
    server.with_stream("live").await;
    server.append("live", &["before"]).await;
    // Starting at the tail skips what is already there.
    ensure(
        &server,
        "w",
        json!({ "source": { "stream": "live" }, "start": "tail" }),
    )
    .await;
    let waiter = {
        let (base, client) = (server.base.clone(), server.client.clone());
        tokio::spawn(async move {
            let resp = client
                .post(format!("{base}/v1/consumers/w/receive"))
                .header("s2-basin", BASIN)
                .json(&json!({ "batch_size": 10, "wait_ms": 10000 }))
                .send()
                .await
                .unwrap();
            (Instant::now(), resp.json::<Value>().await.unwrap())
        })
    };
    tokio::time::sleep(Duration::from_millis(200)).await;
    let appended = Instant::now();
    server.append("live", &["hello"]).await;
    let (got_at, body) = waiter.await.unwrap();
    let messages = body["messages"].as_array().unwrap();
    assert_eq!(texts(messages), ["hello"]);
    assert!(got_at.duration_since(appended) < Duration::from_secs(2));
    // With nothing new, the wait runs out and the answer is empty.
    let start = Instant::now();
    assert!(receive(&server, "w", 10, 300).await.is_empty());
    assert!(start.elapsed() >= Duration::from_millis(250));
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
