//! HTTP tests of the S2 v1 JSON API's streams: the stream lifecycle
//! (create, get, reconfigure, ensure, list, delete), bad input and how a
//! request names its basin, streams created on append or read, and
//! retention by age with delete-on-empty. Each error case checks the
//! status, the error code and that the failed request changed nothing.

mod common;

use std::time::{Duration, Instant};

use common::*;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

#[tokio::test]
async fn stream_lifecycle() {
    let server = TestServer::start().await;
    server.create_basin(BASIN).await;

    let created = server
        .post("/v1/streams")
        .json(&json!({"stream": "orders", "config": {"timestamping": {"mode": "arrival"}}}))
        .expect_status(StatusCode::CREATED)
        .await;
    assert_eq!(created["name"], "orders");
    server
        .post("/v1/streams")
        .json(&json!({"stream": "orders"}))
        .expect_error(StatusCode::CONFLICT, "resource_already_exists")
        .await;

    let config = server
        .get("/v1/streams/orders")
        .expect_status(StatusCode::OK)
        .await;
    assert_eq!(config["timestamping"]["mode"], "arrival");
    assert_eq!(config["retention_policy"]["age"], 604800);
    assert_eq!(config["delete_on_empty"]["min_age_secs"], 0);

    let config = server
        .patch("/v1/streams/orders")
        .json(
            &json!({"retention_policy": {"infinite": {}}, "delete_on_empty": {"min_age_secs": 60}}),
        )
        .expect_status(StatusCode::OK)
        .await;
    assert_eq!(config["retention_policy"], json!({"infinite": {}}));
    assert_eq!(config["delete_on_empty"]["min_age_secs"], 60);
    assert_eq!(config["timestamping"]["mode"], "arrival");

    // Ensure: created / noop / updated.
    server
        .put("/v1/streams/events")
        .expect_provision("created", StatusCode::CREATED)
        .await;
    server
        .put("/v1/streams/events")
        .json(&Value::Null)
        .expect_provision("noop", StatusCode::OK)
        .await;
    server
        .put("/v1/streams/events")
        .json(&json!({"storage_class": "standard"}))
        .expect_provision("updated", StatusCode::OK)
        .await;

    // List.
    for name in ["log-a", "log-b", "log-c"] {
        server.ensure_stream(name).await;
    }
    let page = server
        .get("/v1/streams?prefix=log-&limit=2")
        .expect_status(StatusCode::OK)
        .await;
    assert_eq!(names(&page, "streams"), ["log-a", "log-b"]);
    assert_eq!(page["has_more"], true);
    let page = server
        .get("/v1/streams?prefix=log-&start_after=log-b")
        .expect_status(StatusCode::OK)
        .await;
    assert_eq!(page["streams"][0]["name"], "log-c");
    assert_eq!(page["has_more"], false);
    server
        .get("/v1/streams?prefix=log-&start_after=a")
        .expect_error(StatusCode::UNPROCESSABLE_ENTITY, "invalid")
        .await;

    // Delete; the name can be reused and starts empty.
    server.append("orders", &["one", "two"]).await;
    server
        .delete("/v1/streams/orders")
        .expect_status(StatusCode::ACCEPTED)
        .await;
    server
        .get("/v1/streams/orders")
        .expect_error(StatusCode::NOT_FOUND, "stream_not_found")
        .await;
    server
        .delete("/v1/streams/orders")
        .expect_error(StatusCode::NOT_FOUND, "stream_not_found")
        .await;
    server.ensure_stream("orders").await;
    assert_eq!(server.tail("orders").await, 0);
}

#[tokio::test]
async fn stream_bad_input_and_addressing() {
    let server = TestServer::start().await;
    server.create_basin(BASIN).await;

    // No basin at all.
    server
        .bare(Method::GET, "/v1/streams")
        .expect_error(StatusCode::BAD_REQUEST, "bad_header")
        .await;
    // Unknown basin.
    server
        .bare(Method::GET, "/v1/streams")
        .header("s2-basin", "missing-basin")
        .expect_error(StatusCode::NOT_FOUND, "basin_not_found")
        .await;
    // Basin from the Host header.
    server.ensure_stream("hosted").await;
    let page = server
        .bare(Method::GET, "/v1/streams")
        .header("host", format!("{BASIN}.localhost"))
        .expect_status(StatusCode::OK)
        .await;
    assert_eq!(page["streams"][0]["name"], "hosted");

    let long = "s".repeat(513);
    server
        .post("/v1/streams")
        .json(&json!({"stream": long}))
        .expect_error(StatusCode::UNPROCESSABLE_ENTITY, "invalid")
        .await;
    server
        .post("/v1/streams")
        .json(&json!({"stream": "x", "config": {"timestamping": {"mode": "sometimes"}}}))
        .expect_error(StatusCode::BAD_REQUEST, "bad_json")
        .await;
    for path in [
        "/v1/streams/nope",
        "/v1/streams/nope/records/tail",
        "/v1/streams/nope/records?seq_num=0",
    ] {
        server
            .get(path)
            .expect_error(StatusCode::NOT_FOUND, "stream_not_found")
            .await;
    }
    server
        .append_request("nope", json!({"records": [{"body": "x"}]}))
        .expect_error(StatusCode::NOT_FOUND, "stream_not_found")
        .await;
    server
        .patch("/v1/streams/nope")
        .json(&json!({}))
        .expect_error(StatusCode::NOT_FOUND, "stream_not_found")
        .await;
}

#[tokio::test]
async fn create_stream_on_append_and_read() {
    let server = TestServer::start().await;
    server
        .bare(Method::PUT, &format!("/v1/basins/{BASIN}"))
        .json(
            &json!({"config": {"create_stream_on_append": true, "create_stream_on_read": true,
            "default_stream_config": {"retention_policy": {"infinite": {}}}}}),
        )
        .expect_status(StatusCode::CREATED)
        .await;
    let ack = server.append("auto", &["hello"]).await;
    assert_eq!(ack["end"]["seq_num"], 1);
    let config = server
        .get("/v1/streams/auto")
        .expect_status(StatusCode::OK)
        .await;
    assert_eq!(config["retention_policy"], json!({"infinite": {}}));
    assert_eq!(server.tail("read-made").await, 0);
    let list = server
        .get("/v1/streams")
        .expect_status(StatusCode::OK)
        .await;
    assert_eq!(list["streams"].as_array().unwrap().len(), 2);
}

#[tokio::test]
async fn retention_by_age_and_delete_on_empty() {
    let server = TestServer::start().await;
    server.create_basin(BASIN).await;
    server
        .create_stream("short-lived", json!({"retention_policy": {"age": 1}}))
        .await;
    server
        .create_stream(
            "vanishing",
            json!({"retention_policy": {"age": 1}, "delete_on_empty": {"min_age_secs": 1}}),
        )
        .await;
    server.append("short-lived", &["old-1", "old-2"]).await;
    server.append("vanishing", &["x"]).await;
    // Age counts from arrival, not from the record's own timestamp.
    server
        .create_stream("old-stamps", json!({"retention_policy": {"age": 3600}}))
        .await;
    server
        .append_request(
            "old-stamps",
            json!({"records": [{"timestamp": 5, "body": "ancient-but-new"}]}),
        )
        .expect_status(StatusCode::OK)
        .await;

    // Upkeep runs every second; give it a few rounds.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let batch = server.read("short-lived", "seq_num=0").await;
        if bodies(&batch).is_empty() {
            break;
        }
        assert!(Instant::now() < deadline, "records were never trimmed");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(
        server.tail("short-lived").await,
        2,
        "trimming keeps the tail"
    );
    // Age counts from arrival: a record stamped near the epoch that arrived
    // a moment ago is kept.
    assert_eq!(
        server.read_bodies("old-stamps", "seq_num=0").await,
        ["ancient-but-new"]
    );
    server.append("short-lived", &["new"]).await;
    assert_eq!(
        server.read_bodies("short-lived", "seq_num=0").await,
        ["new"]
    );

    loop {
        let resp = server.get("/v1/streams/vanishing").send().await.unwrap();
        if resp.status() == StatusCode::NOT_FOUND {
            break;
        }
        assert!(Instant::now() < deadline, "empty stream was never deleted");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
