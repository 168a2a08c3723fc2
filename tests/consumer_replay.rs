//! Dead letters made by hand and undone: rejecting a delivery
//! (`POST /v1/consumers/{c}/reject`) dead-letters it at once; replaying
//! (`POST /v1/consumers/{c}/replay`) makes a dead letter pending again with
//! fresh attempts, durably, and says what is gone or pending already.

mod common;

use std::sync::Arc;

use common::consumers::{ack, ensure, receive, settle};
use common::{expect_status, SendAndExpect, TestServer};
use reqwest::StatusCode;
use rill::storage::FjallStorage;
use serde_json::{json, Value};

fn bodies(messages: &[Value]) -> Vec<String> {
    messages
        .iter()
        .map(|m| m["record"]["body"].as_str().unwrap().to_string())
        .collect()
}

async fn replay(server: &TestServer, consumer: &str, seq_nums: Value) -> reqwest::Response {
    settle(
        server,
        consumer,
        "replay",
        json!({ "dead_letters": seq_nums }),
    )
    .await
}

async fn lag(server: &TestServer, consumer: &str) -> Value {
    let body = server
        .get(&format!("/v1/consumers/{consumer}"))
        .expect_status(StatusCode::OK)
        .await;
    body["state"].clone()
}

/// Delivers "poison" twice, nacking it, until it is dead-lettered; acks
/// the rest.
async fn poison(server: &TestServer) {
    ensure(
        server,
        "w",
        json!({ "source": { "stream": "jobs" }, "ack_wait_ms": 5000, "max_deliver": 2 }),
    )
    .await;
    server.append("jobs", &["poison", "fine"]).await;
    let first = receive(server, "w", 2, 0).await;
    assert_eq!(bodies(&first), ["poison", "fine"]);
    ack(server, "w", &first[1..]).await;
    let mut current = first[..1].to_vec();
    for _ in 0..2 {
        let resp = settle(
            server,
            "w",
            "nack",
            json!({ "ack_ids": [current[0]["ack_id"]] }),
        )
        .await;
        expect_status(resp, StatusCode::OK).await;
        current = receive(server, "w", 2, 1000).await;
        if current.is_empty() {
            break;
        }
    }
    assert!(current.is_empty(), "dead-lettered after two deliveries");
    assert_eq!(lag(server, "w").await["dead_lettered"], 1);
}

#[tokio::test]
async fn a_replayed_dead_letter_is_delivered_again_with_fresh_attempts() {
    let dir = tempfile::tempdir().unwrap();
    let open = || Arc::new(FjallStorage::open(dir.path()).unwrap());
    let server = TestServer::start_on(open()).await;
    server.with_stream("jobs").await;
    poison(&server).await;
    assert_eq!(lag(&server, "w").await["pending"], 0);

    let resp = replay(&server, "w", json!([0, 7])).await;
    let outcome = expect_status(resp, StatusCode::OK).await;
    assert_eq!(
        outcome,
        json!({ "replayed": [0], "already_pending": [], "gone": [7] })
    );
    assert_eq!(lag(&server, "w").await["pending"], 1);
    // Asked again while it waits: nothing changes.
    let resp = replay(&server, "w", json!([0])).await;
    let outcome = expect_status(resp, StatusCode::OK).await;
    assert_eq!(outcome["already_pending"], json!([0]));

    // Pending durably: a restart keeps it.
    server.stop().await;
    let server = TestServer::start_on(open()).await;
    let again = receive(&server, "w", 5, 1000).await;
    assert_eq!(bodies(&again), ["poison"]);
    assert_eq!(again[0]["delivery_count"], 1, "attempts start over");
    assert_eq!(again[0]["seq_num"], 0, "the source's own record");
    assert_eq!(ack(&server, "w", &again).await, 1);
    let state = lag(&server, "w").await;
    assert_eq!(
        (state["pending"].clone(), state["lag"].clone()),
        (json!(0), json!(0))
    );
    // The dead letter stays where it was.
    let dead = server
        .read("_consumers%2Fw%2Fdead_letters", "seq_num=0")
        .await;
    assert_eq!(dead["records"].as_array().unwrap().len(), 1);
    server.stop().await;
}

#[tokio::test]
async fn replay_refuses_what_it_cannot_do() {
    let server = TestServer::start().await;
    server.with_stream("jobs").await;
    // Nothing dead-lettered yet: the dead-letter stream is empty.
    ensure(
        &server,
        "w",
        json!({ "source": { "stream": "jobs" }, "max_deliver": 2 }),
    )
    .await;
    let resp = replay(&server, "w", json!([0])).await;
    let outcome = expect_status(resp, StatusCode::OK).await;
    assert_eq!(
        outcome,
        json!({ "replayed": [], "already_pending": [], "gone": [0] })
    );
    for body in [json!([]), json!((0..1001).collect::<Vec<u64>>())] {
        let resp = replay(&server, "w", body).await;
        common::expect_error(resp, StatusCode::UNPROCESSABLE_ENTITY, "invalid").await;
    }
    let resp = settle(
        &server,
        "w",
        "replay",
        json!({ "dead_letters": [0], "more": 1 }),
    )
    .await;
    common::expect_error(resp, StatusCode::BAD_REQUEST, "bad_json").await;
    ensure(
        &server,
        "c",
        json!({ "source": { "stream": "jobs" }, "ack_policy": "cursor" }),
    )
    .await;
    let resp = replay(&server, "c", json!([0])).await;
    common::expect_error(resp, StatusCode::UNPROCESSABLE_ENTITY, "invalid").await;
    let resp = replay(&server, "nope", json!([0])).await;
    common::expect_error(resp, StatusCode::NOT_FOUND, "consumer_not_found").await;
}

/// The same from the command line: `rill replay CONSUMER SEQ...`.
#[tokio::test]
async fn the_cli_replays_dead_letters() {
    let server = TestServer::start().await;
    server.with_stream("jobs").await;
    poison(&server).await;
    let ran = common::cli::run_rill(&server, &["replay", "w", "0", "9"], "").await;
    assert_eq!(ran.code, Some(0), "{}", ran.err);
    assert_eq!(ran.out, "replayed: 0\ngone from the source: 9\n");
    let ran = common::cli::run_rill(&server, &["replay", "w", "0", "--json"], "").await;
    assert_eq!(ran.code, Some(0), "{}", ran.err);
    let answer: Value = serde_json::from_str(ran.out.trim()).unwrap();
    assert_eq!(answer["already_pending"], json!([0]));
    let again = receive(&server, "w", 1, 1000).await;
    assert_eq!(bodies(&again), ["poison"]);
}

#[tokio::test]
async fn a_rejected_delivery_is_dead_lettered_at_once() {
    let server = TestServer::start().await;
    server.with_stream("jobs").await;
    ensure(
        &server,
        "w",
        json!({ "source": { "stream": "jobs" }, "max_deliver": 5 }),
    )
    .await;
    server.append("jobs", &["bad", "good"]).await;
    let got = receive(&server, "w", 2, 0).await;
    assert_eq!(bodies(&got), ["bad", "good"]);
    let resp = settle(
        &server,
        "w",
        "reject",
        json!({ "ack_ids": [got[0]["ack_id"]] }),
    )
    .await;
    assert_eq!(
        expect_status(resp, StatusCode::OK).await,
        json!({ "rejected": 1 })
    );
    ack(&server, "w", &got[1..]).await;
    let state = lag(&server, "w").await;
    assert_eq!(
        (&state["dead_lettered"], &state["pending"], &state["lag"]),
        (&json!(1), &json!(0), &json!(0))
    );
    let dead = server
        .read("_consumers%2Fw%2Fdead_letters", "seq_num=0")
        .await;
    let records = dead["records"].as_array().unwrap();
    assert_eq!(records.len(), 1);
    assert_eq!(records[0]["body"], "bad");
    let delivery_count = records[0]["headers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|h| h[0] == "delivery_count")
        .map(|h| h[1].clone());
    assert_eq!(
        delivery_count,
        Some(json!("1")),
        "one delivery, not max_deliver"
    );
    // Settled: the same id again changes nothing; nor does an ack of it.
    let resp = settle(
        &server,
        "w",
        "reject",
        json!({ "ack_ids": [got[0]["ack_id"]] }),
    )
    .await;
    assert_eq!(
        expect_status(resp, StatusCode::OK).await,
        json!({ "rejected": 0 })
    );
    assert_eq!(ack(&server, "w", &got[..1]).await, 0);
    // And it can be replayed like any dead letter.
    let resp = replay(&server, "w", json!([0])).await;
    assert_eq!(
        expect_status(resp, StatusCode::OK).await["replayed"],
        json!([0])
    );
    assert_eq!(bodies(&receive(&server, "w", 2, 1000).await), ["bad"]);

    let resp = settle(
        &server,
        "w",
        "reject",
        json!({ "ack_ids": [got[1]["ack_id"]], "delay_ms": 5 }),
    )
    .await;
    common::expect_error(resp, StatusCode::UNPROCESSABLE_ENTITY, "invalid").await;
    ensure(
        &server,
        "c",
        json!({ "source": { "stream": "jobs" }, "ack_policy": "cursor" }),
    )
    .await;
    let resp = settle(&server, "c", "reject", json!({ "ack_ids": [] })).await;
    common::expect_error(resp, StatusCode::UNPROCESSABLE_ENTITY, "invalid").await;
}
