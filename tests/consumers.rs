//! Consumers over HTTP: admin and bad input, the records feed with
//! filters, and long polls. Acks and dead letters are in
//! `consumer_acks.rs`, cursor commits and durability in
//! `consumer_durability.rs`.

mod common;

use std::time::{Duration, Instant};

use common::consumers::{ack, ensure, receive, settle, state, texts};
use common::*;
use reqwest::StatusCode;
use serde_json::{json, Value};

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
