//! HTTP tests for every endpoint of the S2 v1 JSON/SSE API, including the
//! error cases: each checks the status, the error code and that a failed
//! request changed nothing.

mod common;

use std::time::Duration;

use base64::Engine as _;
use common::*;
use reqwest::StatusCode;
use serde_json::{json, Value};

async fn tail(server: &TestServer, stream: &str) -> u64 {
    let resp = server
        .get(&format!("/v1/streams/{stream}/records/tail"))
        .send()
        .await
        .unwrap();
    expect_status(resp, StatusCode::OK).await["tail"]["seq_num"]
        .as_u64()
        .unwrap()
}

#[tokio::test]
async fn health() {
    let server = TestServer::start().await;
    let resp = server
        .client
        .get(server.url("/health"))
        .send()
        .await
        .unwrap();
    assert_eq!(expect_status(resp, StatusCode::OK).await["status"], "ok");
    let resp = server.client.get(server.url("/nope")).send().await.unwrap();
    expect_error(resp, StatusCode::NOT_FOUND, "not_found").await;
    let resp = server
        .client
        .put(server.url("/v1/basins"))
        .send()
        .await
        .unwrap();
    expect_error(resp, StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed").await;
}

#[tokio::test]
async fn basin_lifecycle() {
    let server = TestServer::start().await;
    let c = &server.client;

    let resp = c
        .post(server.url("/v1/basins"))
        .json(&json!({"basin": "alpha-basin", "config": {"create_stream_on_append": true}}))
        .send()
        .await
        .unwrap();
    let info = expect_status(resp, StatusCode::CREATED).await;
    assert_eq!(info["name"], "alpha-basin");
    assert!(info["created_at"].as_str().unwrap().ends_with('Z'));

    // Creating it again is a conflict.
    let resp = c
        .post(server.url("/v1/basins"))
        .json(&json!({"basin": "alpha-basin"}))
        .send()
        .await
        .unwrap();
    expect_error(resp, StatusCode::CONFLICT, "resource_already_exists").await;

    // Ensure: created, then noop, then updated.
    let resp = c
        .put(server.url("/v1/basins/beta-basin"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.headers()["s2-provision-result"], "created");
    expect_status(resp, StatusCode::CREATED).await;
    let resp = c
        .put(server.url("/v1/basins/beta-basin"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.headers()["s2-provision-result"], "noop");
    expect_status(resp, StatusCode::OK).await;
    let resp = c
        .put(server.url("/v1/basins/beta-basin"))
        .json(&json!({"config": {"create_stream_on_read": true}}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.headers()["s2-provision-result"], "updated");
    expect_status(resp, StatusCode::OK).await;

    // Get and reconfigure.
    let resp = c
        .get(server.url("/v1/basins/alpha-basin"))
        .send()
        .await
        .unwrap();
    let config = expect_status(resp, StatusCode::OK).await;
    assert_eq!(config["create_stream_on_append"], true);
    assert_eq!(config["create_stream_on_read"], false);
    assert_eq!(
        config["default_stream_config"]["retention_policy"]["age"],
        604800
    );
    let resp = c
        .patch(server.url("/v1/basins/alpha-basin"))
        .json(&json!({"default_stream_config": {"retention_policy": {"infinite": {}}}}))
        .send()
        .await
        .unwrap();
    let config = expect_status(resp, StatusCode::OK).await;
    assert_eq!(
        config["default_stream_config"]["retention_policy"],
        json!({"infinite": {}})
    );
    assert_eq!(config["create_stream_on_append"], true);

    // List with prefix, start_after, limit.
    for name in ["gamma-basin-1", "gamma-basin-2", "gamma-basin-3"] {
        server.create_basin(name).await;
    }
    let resp = c
        .get(server.url("/v1/basins?prefix=gamma&limit=2"))
        .send()
        .await
        .unwrap();
    let page = expect_status(resp, StatusCode::OK).await;
    let names: Vec<_> = page["basins"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["name"].clone())
        .collect();
    assert_eq!(names, vec![json!("gamma-basin-1"), json!("gamma-basin-2")]);
    assert_eq!(page["has_more"], true);
    let resp = c
        .get(server.url("/v1/basins?prefix=gamma&start_after=gamma-basin-2"))
        .send()
        .await
        .unwrap();
    let page = expect_status(resp, StatusCode::OK).await;
    assert_eq!(page["basins"].as_array().unwrap().len(), 1);
    assert_eq!(page["has_more"], false);
    let resp = c
        .get(server.url("/v1/basins?prefix=gamma&start_after=alpha"))
        .send()
        .await
        .unwrap();
    expect_error(resp, StatusCode::UNPROCESSABLE_ENTITY, "invalid").await;
    let resp = c
        .get(server.url("/v1/basins?limit=lots"))
        .send()
        .await
        .unwrap();
    expect_error(resp, StatusCode::BAD_REQUEST, "bad_query").await;

    // Delete.
    let resp = c
        .delete(server.url("/v1/basins/beta-basin"))
        .send()
        .await
        .unwrap();
    expect_status(resp, StatusCode::ACCEPTED).await;
    let resp = c
        .get(server.url("/v1/basins/beta-basin"))
        .send()
        .await
        .unwrap();
    expect_error(resp, StatusCode::NOT_FOUND, "basin_not_found").await;
    let resp = c
        .delete(server.url("/v1/basins/beta-basin"))
        .send()
        .await
        .unwrap();
    expect_error(resp, StatusCode::NOT_FOUND, "basin_not_found").await;
    let resp = c
        .patch(server.url("/v1/basins/beta-basin"))
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    expect_error(resp, StatusCode::NOT_FOUND, "basin_not_found").await;
}

#[tokio::test]
async fn basin_bad_input() {
    let server = TestServer::start().await;
    let c = &server.client;
    for bad in [
        "short",
        "Upper-Case-Name",
        "-leading-hyphen",
        "trailing-hyphen-",
    ] {
        let resp = c
            .post(server.url("/v1/basins"))
            .json(&json!({ "basin": bad }))
            .send()
            .await
            .unwrap();
        expect_error(resp, StatusCode::UNPROCESSABLE_ENTITY, "invalid").await;
    }
    let resp = c
        .post(server.url("/v1/basins"))
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await
        .unwrap();
    expect_error(resp, StatusCode::BAD_REQUEST, "bad_json").await;
    let resp = c
        .put(server.url("/v1/basins/some-basin"))
        .json(&json!({"config": {"default_stream_config": {"retention_policy": {"age": 0}}}}))
        .send()
        .await
        .unwrap();
    expect_error(resp, StatusCode::UNPROCESSABLE_ENTITY, "invalid").await;
    let resp = c
        .put(server.url("/v1/basins/some-basin"))
        .json(&json!({"config": {"no_such_field": 1}}))
        .send()
        .await
        .unwrap();
    expect_error(resp, StatusCode::BAD_REQUEST, "bad_json").await;
    // Nothing was created by the failed requests.
    let resp = c.get(server.url("/v1/basins")).send().await.unwrap();
    assert_eq!(
        expect_status(resp, StatusCode::OK).await["basins"],
        json!([])
    );
}

#[tokio::test]
async fn stream_lifecycle() {
    let server = TestServer::start().await;
    server.create_basin(BASIN).await;

    let resp = server
        .post("/v1/streams")
        .json(&json!({"stream": "orders", "config": {"timestamping": {"mode": "arrival"}}}))
        .send()
        .await
        .unwrap();
    assert_eq!(
        expect_status(resp, StatusCode::CREATED).await["name"],
        "orders"
    );
    let resp = server
        .post("/v1/streams")
        .json(&json!({"stream": "orders"}))
        .send()
        .await
        .unwrap();
    expect_error(resp, StatusCode::CONFLICT, "resource_already_exists").await;

    let resp = server.get("/v1/streams/orders").send().await.unwrap();
    let config = expect_status(resp, StatusCode::OK).await;
    assert_eq!(config["timestamping"]["mode"], "arrival");
    assert_eq!(config["retention_policy"]["age"], 604800);
    assert_eq!(config["delete_on_empty"]["min_age_secs"], 0);

    let resp = server
        .patch("/v1/streams/orders")
        .json(
            &json!({"retention_policy": {"infinite": {}}, "delete_on_empty": {"min_age_secs": 60}}),
        )
        .send()
        .await
        .unwrap();
    let config = expect_status(resp, StatusCode::OK).await;
    assert_eq!(config["retention_policy"], json!({"infinite": {}}));
    assert_eq!(config["delete_on_empty"]["min_age_secs"], 60);
    assert_eq!(config["timestamping"]["mode"], "arrival");

    // Ensure: created / noop / updated.
    let resp = server.put("/v1/streams/events").send().await.unwrap();
    assert_eq!(resp.headers()["s2-provision-result"], "created");
    expect_status(resp, StatusCode::CREATED).await;
    let resp = server
        .put("/v1/streams/events")
        .json(&Value::Null)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.headers()["s2-provision-result"], "noop");
    expect_status(resp, StatusCode::OK).await;
    let resp = server
        .put("/v1/streams/events")
        .json(&json!({"storage_class": "standard"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.headers()["s2-provision-result"], "updated");
    expect_status(resp, StatusCode::OK).await;

    // List.
    for name in ["log-a", "log-b", "log-c"] {
        server
            .put(&format!("/v1/streams/{name}"))
            .send()
            .await
            .unwrap();
    }
    let resp = server
        .get("/v1/streams?prefix=log-&limit=2")
        .send()
        .await
        .unwrap();
    let page = expect_status(resp, StatusCode::OK).await;
    let names: Vec<_> = page["streams"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].clone())
        .collect();
    assert_eq!(names, vec![json!("log-a"), json!("log-b")]);
    assert_eq!(page["has_more"], true);
    let resp = server
        .get("/v1/streams?prefix=log-&start_after=log-b")
        .send()
        .await
        .unwrap();
    let page = expect_status(resp, StatusCode::OK).await;
    assert_eq!(page["streams"][0]["name"], "log-c");
    assert_eq!(page["has_more"], false);
    let resp = server
        .get("/v1/streams?prefix=log-&start_after=a")
        .send()
        .await
        .unwrap();
    expect_error(resp, StatusCode::UNPROCESSABLE_ENTITY, "invalid").await;

    // Delete; the name can be reused and starts empty.
    server.append("orders", &["one", "two"]).await;
    let resp = server.delete("/v1/streams/orders").send().await.unwrap();
    expect_status(resp, StatusCode::ACCEPTED).await;
    let resp = server.get("/v1/streams/orders").send().await.unwrap();
    expect_error(resp, StatusCode::NOT_FOUND, "stream_not_found").await;
    let resp = server.delete("/v1/streams/orders").send().await.unwrap();
    expect_error(resp, StatusCode::NOT_FOUND, "stream_not_found").await;
    server.put("/v1/streams/orders").send().await.unwrap();
    assert_eq!(tail(&server, "orders").await, 0);
}

#[tokio::test]
async fn stream_bad_input_and_addressing() {
    let server = TestServer::start().await;
    server.create_basin(BASIN).await;

    // No basin at all.
    let resp = server
        .client
        .get(server.url("/v1/streams"))
        .send()
        .await
        .unwrap();
    expect_error(resp, StatusCode::BAD_REQUEST, "bad_header").await;
    // Unknown basin.
    let resp = server
        .client
        .get(server.url("/v1/streams"))
        .header("s2-basin", "missing-basin")
        .send()
        .await
        .unwrap();
    expect_error(resp, StatusCode::NOT_FOUND, "basin_not_found").await;
    // Basin from the Host header.
    server.put("/v1/streams/hosted").send().await.unwrap();
    let resp = server
        .client
        .get(server.url("/v1/streams"))
        .header("host", format!("{BASIN}.localhost"))
        .send()
        .await
        .unwrap();
    let page = expect_status(resp, StatusCode::OK).await;
    assert_eq!(page["streams"][0]["name"], "hosted");

    let long = "s".repeat(513);
    let resp = server
        .post("/v1/streams")
        .json(&json!({"stream": long}))
        .send()
        .await
        .unwrap();
    expect_error(resp, StatusCode::UNPROCESSABLE_ENTITY, "invalid").await;
    let resp = server
        .post("/v1/streams")
        .json(&json!({"stream": "x", "config": {"timestamping": {"mode": "sometimes"}}}))
        .send()
        .await
        .unwrap();
    expect_error(resp, StatusCode::BAD_REQUEST, "bad_json").await;
    for path in [
        "/v1/streams/nope",
        "/v1/streams/nope/records/tail",
        "/v1/streams/nope/records?seq_num=0",
    ] {
        let resp = server.get(path).send().await.unwrap();
        expect_error(resp, StatusCode::NOT_FOUND, "stream_not_found").await;
    }
    let resp = server
        .post("/v1/streams/nope/records")
        .json(&json!({"records": [{"body": "x"}]}))
        .send()
        .await
        .unwrap();
    expect_error(resp, StatusCode::NOT_FOUND, "stream_not_found").await;
    let resp = server
        .patch("/v1/streams/nope")
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    expect_error(resp, StatusCode::NOT_FOUND, "stream_not_found").await;
}

#[tokio::test]
async fn create_stream_on_append_and_read() {
    let server = TestServer::start().await;
    let resp = server
        .client
        .put(server.url(&format!("/v1/basins/{BASIN}")))
        .json(
            &json!({"config": {"create_stream_on_append": true, "create_stream_on_read": true,
            "default_stream_config": {"retention_policy": {"infinite": {}}}}}),
        )
        .send()
        .await
        .unwrap();
    expect_status(resp, StatusCode::CREATED).await;
    let ack = server.append("auto", &["hello"]).await;
    assert_eq!(ack["end"]["seq_num"], 1);
    let resp = server.get("/v1/streams/auto").send().await.unwrap();
    let config = expect_status(resp, StatusCode::OK).await;
    assert_eq!(config["retention_policy"], json!({"infinite": {}}));
    assert_eq!(tail(&server, "read-made").await, 0);
    let resp = server.get("/v1/streams").send().await.unwrap();
    assert_eq!(
        expect_status(resp, StatusCode::OK).await["streams"]
            .as_array()
            .unwrap()
            .len(),
        2
    );
}

#[tokio::test]
async fn append_and_read_basics() {
    let server = TestServer::start().await;
    server.with_stream("s").await;

    let ack = server.append("s", &["a", "b", "c"]).await;
    assert_eq!(ack["start"]["seq_num"], 0);
    assert_eq!(ack["end"]["seq_num"], 3);
    assert_eq!(ack["tail"]["seq_num"], 3);
    let ack = server.append("s", &["d"]).await;
    assert_eq!(ack["start"]["seq_num"], 3);
    assert!(ack["start"]["timestamp"].as_u64().unwrap() > 0);

    let batch = server.read("s", "seq_num=0").await;
    assert_eq!(bodies(&batch), ["a", "b", "c", "d"]);
    assert_eq!(batch["records"][1]["seq_num"], 1);
    assert_eq!(batch["tail"]["seq_num"], 4);
    assert_eq!(
        bodies(&server.read("s", "seq_num=1&count=2").await),
        ["b", "c"]
    );
    assert_eq!(bodies(&server.read("s", "tail_offset=2").await), ["c", "d"]);
    assert_eq!(
        bodies(&server.read("s", "tail_offset=100").await),
        ["a", "b", "c", "d"]
    );
    // Each 1-byte record meters 9 bytes.
    assert_eq!(
        bodies(&server.read("s", "seq_num=0&bytes=18").await),
        ["a", "b"]
    );
    assert_eq!(
        bodies(&server.read("s", "seq_num=0&bytes=5").await),
        Vec::<String>::new()
    );
    assert_eq!(
        bodies(&server.read("s", "seq_num=0&count=0").await),
        Vec::<String>::new()
    );

    // Headers round-trip.
    let resp = server
        .post("/v1/streams/s/records")
        .json(&json!({"records": [{"headers": [["k", "v"], ["k2", ""]], "body": "h"}]}))
        .send()
        .await
        .unwrap();
    expect_status(resp, StatusCode::OK).await;
    let batch = server.read("s", "seq_num=4").await;
    assert_eq!(
        batch["records"][0]["headers"],
        json!([["k", "v"], ["k2", ""]])
    );

    // Past the tail: 416 with the tail, unless clamped (and able to wait).
    let resp = server
        .get("/v1/streams/s/records?seq_num=99")
        .send()
        .await
        .unwrap();
    let body = expect_status(resp, StatusCode::RANGE_NOT_SATISFIABLE).await;
    assert_eq!(body["tail"]["seq_num"], 5);
    let resp = server
        .get("/v1/streams/s/records?seq_num=5")
        .send()
        .await
        .unwrap();
    expect_status(resp, StatusCode::RANGE_NOT_SATISFIABLE).await;
    let batch = server.read("s", "seq_num=99&clamp=true&wait=1").await;
    assert_eq!(bodies(&batch), Vec::<String>::new());
    assert_eq!(batch["tail"]["seq_num"], 5);
    // No start at all means the tail.
    let resp = server.get("/v1/streams/s/records").send().await.unwrap();
    expect_status(resp, StatusCode::RANGE_NOT_SATISFIABLE).await;

    // Conflicting or malformed parameters.
    let resp = server
        .get("/v1/streams/s/records?seq_num=0&tail_offset=1")
        .send()
        .await
        .unwrap();
    expect_error(resp, StatusCode::UNPROCESSABLE_ENTITY, "invalid").await;
    let resp = server
        .get("/v1/streams/s/records?seq_num=-1")
        .send()
        .await
        .unwrap();
    expect_error(resp, StatusCode::BAD_REQUEST, "bad_query").await;
    let resp = server
        .get("/v1/streams/s/records?count=many&seq_num=0")
        .send()
        .await
        .unwrap();
    expect_error(resp, StatusCode::BAD_REQUEST, "bad_query").await;
}

#[tokio::test]
async fn reads_by_timestamp_and_until() {
    let server = TestServer::start().await;
    server.create_basin(BASIN).await;
    // Timestamps near the epoch would be trimmed at once by a 7-day retention.
    let resp = server
        .put("/v1/streams/ts")
        .json(&json!({"retention_policy": {"infinite": {}}}))
        .send()
        .await
        .unwrap();
    expect_status(resp, StatusCode::CREATED).await;
    let records: Vec<Value> = [(10, "a"), (20, "b"), (20, "c"), (30, "d"), (15, "e")]
        .iter()
        .map(|(ts, body)| json!({"timestamp": ts, "body": body}))
        .collect();
    let resp = server
        .post("/v1/streams/ts/records")
        .json(&json!({"records": records}))
        .send()
        .await
        .unwrap();
    let ack = expect_status(resp, StatusCode::OK).await;
    assert_eq!(ack["start"]["timestamp"], 10);
    // A timestamp below the previous one is raised to it.
    assert_eq!(ack["end"]["timestamp"], 30);
    let batch = server.read("ts", "seq_num=0").await;
    let stamps: Vec<_> = batch["records"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["timestamp"].as_u64().unwrap())
        .collect();
    assert_eq!(stamps, [10, 20, 20, 30, 30]);

    assert_eq!(
        bodies(&server.read("ts", "timestamp=0").await),
        ["a", "b", "c", "d", "e"]
    );
    assert_eq!(
        bodies(&server.read("ts", "timestamp=11").await),
        ["b", "c", "d", "e"]
    );
    assert_eq!(
        bodies(&server.read("ts", "timestamp=20").await),
        ["b", "c", "d", "e"]
    );
    assert_eq!(bodies(&server.read("ts", "timestamp=21").await), ["d", "e"]);
    assert_eq!(
        bodies(&server.read("ts", "seq_num=0&until=20").await),
        ["a"]
    );
    assert_eq!(
        bodies(&server.read("ts", "timestamp=20&until=30").await),
        ["b", "c"]
    );
    let resp = server
        .get("/v1/streams/ts/records?timestamp=31")
        .send()
        .await
        .unwrap();
    expect_status(resp, StatusCode::RANGE_NOT_SATISFIABLE).await;
    let resp = server
        .get("/v1/streams/ts/records?timestamp=20&until=20")
        .send()
        .await
        .unwrap();
    expect_error(resp, StatusCode::UNPROCESSABLE_ENTITY, "invalid").await;
}

#[tokio::test]
async fn timestamping_modes() {
    let server = TestServer::start().await;
    server.create_basin(BASIN).await;
    let future = 4_000_000_000_000u64; // year 2096
    for (stream, mode, uncapped) in [
        ("capped", "client-prefer", false),
        ("uncapped", "client-prefer", true),
        ("arrival", "arrival", false),
        ("required", "client-require", false),
    ] {
        let resp = server
            .put(&format!("/v1/streams/{stream}"))
            .json(&json!({"timestamping": {"mode": mode, "uncapped": uncapped}}))
            .send()
            .await
            .unwrap();
        expect_status(resp, StatusCode::CREATED).await;
    }
    let append_ts = |stream: &'static str, ts: Option<u64>| {
        let record = match ts {
            Some(ts) => json!({"timestamp": ts, "body": "x"}),
            None => json!({"body": "x"}),
        };
        server
            .post(&format!("/v1/streams/{stream}/records"))
            .json(&json!({ "records": [record] }))
            .send()
    };
    let ack = expect_status(
        append_ts("capped", Some(future)).await.unwrap(),
        StatusCode::OK,
    )
    .await;
    assert!(
        ack["start"]["timestamp"].as_u64().unwrap() < future,
        "capped at arrival"
    );
    let ack = expect_status(
        append_ts("uncapped", Some(future)).await.unwrap(),
        StatusCode::OK,
    )
    .await;
    assert_eq!(ack["start"]["timestamp"], future);
    let ack = expect_status(append_ts("arrival", Some(5)).await.unwrap(), StatusCode::OK).await;
    assert!(ack["start"]["timestamp"].as_u64().unwrap() > 5);
    let resp = append_ts("required", None).await.unwrap();
    expect_error(resp, StatusCode::UNPROCESSABLE_ENTITY, "invalid").await;
    assert_eq!(tail(&server, "required").await, 0);
    let ack = expect_status(
        append_ts("required", Some(7)).await.unwrap(),
        StatusCode::OK,
    )
    .await;
    assert_eq!(ack["start"]["timestamp"], 7);
}

#[tokio::test]
async fn append_bad_input_appends_nothing() {
    let server = TestServer::start().await;
    server.with_stream("s").await;
    server.append("s", &["keep"]).await;
    let post = |body: Value| server.post("/v1/streams/s/records").json(&body).send();

    let resp = post(json!({"records": []})).await.unwrap();
    expect_error(resp, StatusCode::UNPROCESSABLE_ENTITY, "invalid").await;
    let many: Vec<Value> = (0..1001).map(|_| json!({"body": "x"})).collect();
    let resp = post(json!({ "records": many })).await.unwrap();
    expect_error(resp, StatusCode::UNPROCESSABLE_ENTITY, "invalid").await;
    let big = "x".repeat(600 * 1024);
    let resp = post(json!({"records": [{"body": big}, {"body": big}]}))
        .await
        .unwrap();
    expect_error(resp, StatusCode::UNPROCESSABLE_ENTITY, "invalid").await;
    let resp =
        post(json!({"records": [{"body": "ok"}, {"headers": [["", "explode"]], "body": ""}]}))
            .await
            .unwrap();
    expect_error(resp, StatusCode::UNPROCESSABLE_ENTITY, "invalid").await;
    let resp = post(json!({"records": [{"headers": [["", "trim"], ["x", "y"]], "body": ""}]}))
        .await
        .unwrap();
    expect_error(resp, StatusCode::UNPROCESSABLE_ENTITY, "invalid").await;
    let resp = post(json!({"records": [{"headers": [["", "trim"]], "body": "short"}]}))
        .await
        .unwrap();
    expect_error(resp, StatusCode::UNPROCESSABLE_ENTITY, "invalid").await;
    let resp = post(json!({"records": [{"body": 5}]})).await.unwrap();
    expect_error(resp, StatusCode::BAD_REQUEST, "bad_json").await;
    let resp = post(json!({"records": [{"headers": [["only-name"]], "body": "x"}]}))
        .await
        .unwrap();
    expect_error(resp, StatusCode::BAD_REQUEST, "bad_json").await;
    let resp = server
        .post("/v1/streams/s/records")
        .header("content-type", "application/json")
        .body(r#"{"records": [{"body": "x"}"#)
        .send()
        .await
        .unwrap();
    expect_error(resp, StatusCode::BAD_REQUEST, "bad_json").await;
    let resp = server
        .post("/v1/streams/s/records")
        .header("s2-format", "base64")
        .json(&json!({"records": [{"body": "aGk="}, {"body": "not base64!"}]}))
        .send()
        .await
        .unwrap();
    expect_error(resp, StatusCode::UNPROCESSABLE_ENTITY, "invalid").await;
    let resp = server
        .post("/v1/streams/s/records")
        .header("s2-format", "hex")
        .json(&json!({"records": [{"body": "00"}]}))
        .send()
        .await
        .unwrap();
    expect_error(resp, StatusCode::BAD_REQUEST, "bad_header").await;
    let resp = post(json!({"records": [{"body": "x"}], "fencing_token": "t".repeat(37)}))
        .await
        .unwrap();
    expect_error(resp, StatusCode::UNPROCESSABLE_ENTITY, "invalid").await;
    let huge = "x".repeat(9 * 1024 * 1024);
    let resp = post(json!({"records": [{"body": huge}]})).await.unwrap();
    expect_error(resp, StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large").await;

    assert_eq!(tail(&server, "s").await, 1);
    assert_eq!(bodies(&server.read("s", "seq_num=0").await), ["keep"]);
}

#[tokio::test]
async fn base64_format_round_trips_binary() {
    let server = TestServer::start().await;
    server.with_stream("bin").await;
    let b64 = base64::engine::general_purpose::STANDARD;
    let body = b64.encode([0u8, 159, 146, 150, 255]);
    let resp = server
        .post("/v1/streams/bin/records")
        .header("s2-format", "base64")
        .json(&json!({"records": [{"headers": [[b64.encode("name"), b64.encode([1u8, 2])]], "body": body}]}))
        .send()
        .await
        .unwrap();
    expect_status(resp, StatusCode::OK).await;
    let resp = server
        .get("/v1/streams/bin/records?seq_num=0")
        .header("s2-format", "base64")
        .send()
        .await
        .unwrap();
    let batch = expect_status(resp, StatusCode::OK).await;
    assert_eq!(batch["records"][0]["body"], body);
    assert_eq!(batch["records"][0]["headers"][0][0], b64.encode("name"));
}

#[tokio::test]
async fn match_seq_num_and_fencing() {
    let server = TestServer::start().await;
    server.with_stream("f").await;
    let post = |body: Value| server.post("/v1/streams/f/records").json(&body).send();

    let resp = post(json!({"records": [{"body": "a"}], "match_seq_num": 0}))
        .await
        .unwrap();
    expect_status(resp, StatusCode::OK).await;
    let resp = post(json!({"records": [{"body": "b"}], "match_seq_num": 0}))
        .await
        .unwrap();
    assert_eq!(
        expect_status(resp, StatusCode::PRECONDITION_FAILED).await,
        json!({"seq_num_mismatch": 1})
    );

    // Fence with a token; appends naming another token fail, appends naming
    // none or the right one succeed.
    let resp = post(json!({"records": [{"headers": [["", "fence"]], "body": "writer-1"}]}))
        .await
        .unwrap();
    expect_status(resp, StatusCode::OK).await;
    let resp = post(json!({"records": [{"body": "c"}], "fencing_token": "writer-0"}))
        .await
        .unwrap();
    assert_eq!(
        expect_status(resp, StatusCode::PRECONDITION_FAILED).await,
        json!({"fencing_token_mismatch": "writer-1"})
    );
    let resp =
        post(json!({"records": [{"body": "c"}], "fencing_token": "writer-1", "match_seq_num": 2}))
            .await
            .unwrap();
    expect_status(resp, StatusCode::OK).await;
    let resp = post(json!({"records": [{"body": "d"}]})).await.unwrap();
    expect_status(resp, StatusCode::OK).await;
    // Fencing is checked before match_seq_num.
    let resp = post(json!({"records": [{"body": "e"}], "fencing_token": "x", "match_seq_num": 0}))
        .await
        .unwrap();
    assert!(expect_status(resp, StatusCode::PRECONDITION_FAILED)
        .await
        .get("fencing_token_mismatch")
        .is_some());
    assert_eq!(tail(&server, "f").await, 4);
}

#[tokio::test]
async fn trim_command_hides_earlier_records() {
    let server = TestServer::start().await;
    server.with_stream("t").await;
    server.append("t", &["0", "1", "2", "3"]).await;
    let trim = base64::engine::general_purpose::STANDARD.encode(2u64.to_be_bytes());
    let resp = server
        .post("/v1/streams/t/records")
        .header("s2-format", "base64")
        .json(&json!({"records": [{"headers": [["", base64::engine::general_purpose::STANDARD.encode("trim")]], "body": trim}]}))
        .send()
        .await
        .unwrap();
    expect_status(resp, StatusCode::OK).await;
    let batch = server.read("t", "seq_num=0").await;
    let seqs: Vec<_> = batch["records"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["seq_num"].as_u64().unwrap())
        .collect();
    assert_eq!(seqs, [2, 3, 4]);
    assert_eq!(tail(&server, "t").await, 5);
}

#[tokio::test]
async fn unary_reads_are_capped_and_long_poll() {
    let server = TestServer::start().await;
    server.with_stream("big").await;
    for _ in 0..2 {
        let bodies: Vec<String> = (0..600).map(|i| format!("r{i}")).collect();
        let refs: Vec<&str> = bodies.iter().map(String::as_str).collect();
        server.append("big", &refs).await;
    }
    let batch = server.read("big", "seq_num=0&count=5000").await;
    assert_eq!(batch["records"].as_array().unwrap().len(), 1000);

    // Long poll: a read at the tail waits for the next append.
    let reader = {
        let url = server.url("/v1/streams/big/records?seq_num=1200&wait=10");
        let client = server.client.clone();
        tokio::spawn(async move {
            let started = std::time::Instant::now();
            let resp = client
                .get(url)
                .header("s2-basin", BASIN)
                .send()
                .await
                .unwrap();
            (expect_status(resp, StatusCode::OK).await, started.elapsed())
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    server.append("big", &["late"]).await;
    let (batch, elapsed) = reader.await.unwrap();
    assert_eq!(bodies(&batch), ["late"]);
    assert!(
        elapsed < Duration::from_secs(5),
        "long poll returned after {elapsed:?}"
    );

    // A long poll that sees nothing returns empty when the wait runs out.
    let started = std::time::Instant::now();
    let batch = server.read("big", "seq_num=1201&wait=1").await;
    assert_eq!(bodies(&batch), Vec::<String>::new());
    assert!(started.elapsed() >= Duration::from_millis(900));
}

#[tokio::test]
async fn sse_session_batches_done_and_resume() {
    let server = TestServer::start().await;
    server.with_stream("sse").await;
    server.append("sse", &["a", "b", "c"]).await;

    let resp = server
        .get("/v1/streams/sse/records?seq_num=0&count=2")
        .header("accept", "text/event-stream")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let mut events = SseReader::new(resp);
    let batch = events.next_within(Duration::from_secs(5)).await.unwrap();
    assert_eq!(batch.event.as_deref(), Some("batch"));
    assert_eq!(batch.id.as_deref(), Some("1,2,18"));
    let data: Value = serde_json::from_str(&batch.data).unwrap();
    assert_eq!(bodies(&data), ["a", "b"]);
    let done = events.next_within(Duration::from_secs(5)).await.unwrap();
    assert_eq!(done.data, "[DONE]");
    assert!(events.next_within(Duration::from_secs(5)).await.is_none());

    // Resume after the first batch: only what is left of the limits.
    let resp = server
        .get("/v1/streams/sse/records?seq_num=0&count=3")
        .header("accept", "text/event-stream")
        .header("last-event-id", "1,2,18")
        .send()
        .await
        .unwrap();
    let mut events = SseReader::new(resp);
    let batch = events.next_within(Duration::from_secs(5)).await.unwrap();
    assert_eq!(batch.id.as_deref(), Some("2,3,27"));
    assert_eq!(bodies(&serde_json::from_str(&batch.data).unwrap()), ["c"]);
    assert_eq!(
        events
            .next_within(Duration::from_secs(5))
            .await
            .unwrap()
            .data,
        "[DONE]"
    );

    let resp = server
        .get("/v1/streams/sse/records?seq_num=0")
        .header("accept", "text/event-stream")
        .header("last-event-id", "garbage")
        .send()
        .await
        .unwrap();
    expect_error(resp, StatusCode::BAD_REQUEST, "bad_header").await;
    let resp = server
        .get("/v1/streams/sse/records?seq_num=50")
        .header("accept", "text/event-stream")
        .send()
        .await
        .unwrap();
    expect_status(resp, StatusCode::RANGE_NOT_SATISFIABLE).await;
}

#[tokio::test]
async fn sse_session_ends_with_error_when_stream_is_deleted() {
    let server = TestServer::start().await;
    server.with_stream("doomed").await;
    server.append("doomed", &["a"]).await;
    let resp = server
        .get("/v1/streams/doomed/records?seq_num=0")
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
    let ping = events.next_within(Duration::from_secs(5)).await.unwrap();
    assert_eq!(ping.event.as_deref(), Some("ping"));
    let ping: Value = serde_json::from_str(&ping.data).unwrap();
    assert_eq!(ping["tail"]["seq_num"], 1);
    assert!(ping["timestamp"].as_u64().is_some());
    server.delete("/v1/streams/doomed").send().await.unwrap();
    let error = events.next_within(Duration::from_secs(5)).await.unwrap();
    assert_eq!(error.event.as_deref(), Some("error"));
    let body: Value = serde_json::from_str(&error.data).unwrap();
    assert_eq!(body["code"], "stream_not_found");
}

#[tokio::test]
async fn retention_by_age_and_delete_on_empty() {
    let server = TestServer::start().await;
    server.create_basin(BASIN).await;
    let resp = server
        .put("/v1/streams/short-lived")
        .json(&json!({"retention_policy": {"age": 1}}))
        .send()
        .await
        .unwrap();
    expect_status(resp, StatusCode::CREATED).await;
    let resp = server
        .put("/v1/streams/vanishing")
        .json(&json!({"retention_policy": {"age": 1}, "delete_on_empty": {"min_age_secs": 1}}))
        .send()
        .await
        .unwrap();
    expect_status(resp, StatusCode::CREATED).await;
    server.append("short-lived", &["old-1", "old-2"]).await;
    server.append("vanishing", &["x"]).await;
    // Age counts from arrival, not from the record's own timestamp.
    server
        .put("/v1/streams/old-stamps")
        .json(&json!({"retention_policy": {"age": 3600}}))
        .send()
        .await
        .unwrap();
    let resp = server
        .post("/v1/streams/old-stamps/records")
        .json(&json!({"records": [{"timestamp": 5, "body": "ancient-but-new"}]}))
        .send()
        .await
        .unwrap();
    expect_status(resp, StatusCode::OK).await;

    // Upkeep runs every second; give it a few rounds.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let batch = server.read("short-lived", "seq_num=0").await;
        if bodies(&batch).is_empty() {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "records were never trimmed"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(
        tail(&server, "short-lived").await,
        2,
        "trimming keeps the tail"
    );
    // Age counts from arrival: a record stamped near the epoch that arrived
    // a moment ago is kept.
    assert_eq!(
        bodies(&server.read("old-stamps", "seq_num=0").await),
        ["ancient-but-new"]
    );
    server.append("short-lived", &["new"]).await;
    assert_eq!(
        bodies(&server.read("short-lived", "seq_num=0").await),
        ["new"]
    );

    loop {
        let resp = server.get("/v1/streams/vanishing").send().await.unwrap();
        if resp.status() == StatusCode::NOT_FOUND {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "empty stream was never deleted"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test]
async fn access_tokens_and_metrics_answer_as_the_spec_says() {
    let server = TestServer::start().await;
    let c = &server.client;
    let info = json!({"id": "ci-token", "scope": {"basins": {"prefix": ""}, "ops": ["read"]}});
    let resp = c
        .post(server.url("/v1/access-tokens"))
        .json(&info)
        .send()
        .await
        .unwrap();
    let issued = expect_status(resp, StatusCode::CREATED).await;
    assert!(issued["access_token"]
        .as_str()
        .is_some_and(|t| t.len() >= 32));
    let resp = c
        .post(server.url("/v1/access-tokens"))
        .json(&info)
        .send()
        .await
        .unwrap();
    expect_error(resp, StatusCode::CONFLICT, "resource_already_exists").await;
    let resp = c
        .post(server.url("/v1/access-tokens"))
        .json(&json!({"id": ""}))
        .send()
        .await
        .unwrap();
    expect_error(resp, StatusCode::UNPROCESSABLE_ENTITY, "invalid").await;
    let resp = c
        .get(server.url("/v1/access-tokens?prefix=ci"))
        .send()
        .await
        .unwrap();
    let list = expect_status(resp, StatusCode::OK).await;
    assert_eq!(list["access_tokens"][0], info);
    assert_eq!(list["has_more"], false);
    let resp = c
        .delete(server.url("/v1/access-tokens/ci-token"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::NO_CONTENT);
    let resp = c
        .delete(server.url("/v1/access-tokens/ci-token"))
        .send()
        .await
        .unwrap();
    expect_error(resp, StatusCode::NOT_FOUND, "access_token_not_found").await;

    server.with_stream("m").await;
    let resp = c
        .get(server.url("/v1/metrics?set=active-basins"))
        .send()
        .await
        .unwrap();
    let metrics = expect_status(resp, StatusCode::OK).await;
    assert_eq!(metrics["values"][0]["label"]["values"], json!([BASIN]));
    let resp = c
        .get(server.url(&format!("/v1/metrics/{BASIN}?set=storage")))
        .send()
        .await
        .unwrap();
    assert_eq!(
        expect_status(resp, StatusCode::OK).await["values"],
        json!([])
    );
    let resp = c
        .get(server.url(&format!("/v1/metrics/{BASIN}/m?set=storage")))
        .send()
        .await
        .unwrap();
    expect_status(resp, StatusCode::OK).await;
    let resp = c
        .get(server.url(&format!("/v1/metrics/{BASIN}/nope?set=storage")))
        .send()
        .await
        .unwrap();
    expect_error(resp, StatusCode::NOT_FOUND, "stream_not_found").await;
    let resp = c
        .get(server.url("/v1/metrics?set=bogus"))
        .send()
        .await
        .unwrap();
    expect_error(resp, StatusCode::UNPROCESSABLE_ENTITY, "invalid").await;
    let resp = c.get(server.url("/v1/metrics")).send().await.unwrap();
    expect_error(resp, StatusCode::BAD_REQUEST, "bad_query").await;
}

#[tokio::test]
async fn creates_are_idempotent_with_a_request_token() {
    let server = TestServer::start().await;
    let c = &server.client;
    let create_basin = |token: &str| {
        c.post(server.url("/v1/basins"))
            .header("s2-request-token", token)
            .json(&json!({"basin": BASIN}))
            .send()
    };
    let resp = create_basin("token-1").await.unwrap();
    assert_eq!(resp.headers()["s2-provision-result"], "created");
    expect_status(resp, StatusCode::CREATED).await;
    let resp = create_basin("token-1").await.unwrap();
    assert_eq!(resp.headers()["s2-provision-result"], "noop");
    expect_status(resp, StatusCode::CREATED).await;
    let resp = create_basin("token-2").await.unwrap();
    expect_error(resp, StatusCode::CONFLICT, "resource_already_exists").await;
    let resp = create_basin(&"t".repeat(37)).await.unwrap();
    expect_error(resp, StatusCode::BAD_REQUEST, "bad_header").await;

    let create_stream = |token: &str| {
        server
            .post("/v1/streams")
            .header("s2-request-token", token)
            .json(&json!({"stream": "s"}))
            .send()
    };
    expect_status(create_stream("abc").await.unwrap(), StatusCode::CREATED).await;
    let resp = create_stream("abc").await.unwrap();
    assert_eq!(resp.headers()["s2-provision-result"], "noop");
    expect_status(resp, StatusCode::CREATED).await;
    let resp = server
        .post("/v1/streams")
        .json(&json!({"stream": "s"}))
        .send()
        .await
        .unwrap();
    expect_error(resp, StatusCode::CONFLICT, "resource_already_exists").await;
}

#[tokio::test]
async fn compressed_request_bodies() {
    use std::io::Write;
    let server = TestServer::start().await;
    server.with_stream("c").await;
    let body = serde_json::to_vec(&json!({"records": [{"body": "squeezed"}]})).unwrap();
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(&body).unwrap();
    let gzipped = gz.finish().unwrap();
    let zstded = zstd::bulk::compress(&body, 3).unwrap();
    for (encoding, bytes) in [("gzip", gzipped), ("zstd", zstded)] {
        let resp = server
            .post("/v1/streams/c/records")
            .header("content-type", "application/json")
            .header("content-encoding", encoding)
            .body(bytes)
            .send()
            .await
            .unwrap();
        expect_status(resp, StatusCode::OK).await;
    }
    assert_eq!(
        bodies(&server.read("c", "seq_num=0").await),
        ["squeezed", "squeezed"]
    );
    let resp = server
        .post("/v1/streams/c/records")
        .header("content-encoding", "br")
        .body(body.clone())
        .send()
        .await
        .unwrap();
    expect_error(resp, StatusCode::BAD_REQUEST, "bad_header").await;
    let resp = server
        .post("/v1/streams/c/records")
        .header("content-encoding", "gzip")
        .body(body)
        .send()
        .await
        .unwrap();
    expect_error(resp, StatusCode::BAD_REQUEST, "bad_header").await;
    // A compressed admin request body works too.
    let config = serde_json::to_vec(&json!({"retention_policy": {"age": 60}})).unwrap();
    let resp = server
        .patch("/v1/streams/c")
        .header("content-type", "application/json")
        .header("content-encoding", "zstd")
        .body(zstd::bulk::compress(&config, 3).unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(
        expect_status(resp, StatusCode::OK).await["retention_policy"]["age"],
        60
    );
}
