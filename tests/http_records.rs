//! HTTP tests of the S2 v1 JSON API's records: unary append and read
//! (positions, limits, headers, reads past the tail), reads by timestamp,
//! the timestamping modes, bad appends, the base64 format, match_seq_num
//! and fencing, the trim command, the read cap and long polls, and
//! compressed request bodies. Each error case checks the status, the error
//! code and that the failed request appended nothing.

mod common;

use std::time::{Duration, Instant};

use base64::Engine as _;
use common::*;
use reqwest::StatusCode;
use serde_json::{json, Value};

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
        server.read_bodies("s", "seq_num=1&count=2").await,
        ["b", "c"]
    );
    assert_eq!(server.read_bodies("s", "tail_offset=2").await, ["c", "d"]);
    assert_eq!(
        server.read_bodies("s", "tail_offset=100").await,
        ["a", "b", "c", "d"]
    );
    // Each 1-byte record meters 9 bytes.
    assert_eq!(
        server.read_bodies("s", "seq_num=0&bytes=18").await,
        ["a", "b"]
    );
    assert_eq!(
        server.read_bodies("s", "seq_num=0&bytes=5").await,
        Vec::<String>::new()
    );
    assert_eq!(
        server.read_bodies("s", "seq_num=0&count=0").await,
        Vec::<String>::new()
    );

    // Headers round-trip.
    server
        .append_request(
            "s",
            json!({"records": [{"headers": [["k", "v"], ["k2", ""]], "body": "h"}]}),
        )
        .expect_status(StatusCode::OK)
        .await;
    let batch = server.read("s", "seq_num=4").await;
    assert_eq!(
        batch["records"][0]["headers"],
        json!([["k", "v"], ["k2", ""]])
    );

    // Past the tail: 416 with the tail, unless clamped (and able to wait).
    let body = server
        .read_request("s", "seq_num=99")
        .expect_status(StatusCode::RANGE_NOT_SATISFIABLE)
        .await;
    assert_eq!(body["tail"]["seq_num"], 5);
    server
        .read_request("s", "seq_num=5")
        .expect_status(StatusCode::RANGE_NOT_SATISFIABLE)
        .await;
    let batch = server.read("s", "seq_num=99&clamp=true&wait=1").await;
    assert_eq!(bodies(&batch), Vec::<String>::new());
    assert_eq!(batch["tail"]["seq_num"], 5);
    // No start at all means the tail.
    server
        .get("/v1/streams/s/records")
        .expect_status(StatusCode::RANGE_NOT_SATISFIABLE)
        .await;

    // Conflicting or malformed parameters.
    for (query, status, code) in [
        (
            "seq_num=0&tail_offset=1",
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid",
        ),
        ("seq_num=-1", StatusCode::BAD_REQUEST, "bad_query"),
        ("count=many&seq_num=0", StatusCode::BAD_REQUEST, "bad_query"),
    ] {
        server
            .read_request("s", query)
            .expect_error(status, code)
            .await;
    }
}

#[tokio::test]
async fn reads_by_timestamp_and_until() {
    let server = TestServer::start().await;
    server.create_basin(BASIN).await;
    // Timestamps near the epoch would be trimmed at once by a 7-day retention.
    server
        .create_stream("ts", json!({"retention_policy": {"infinite": {}}}))
        .await;
    let records: Vec<Value> = [(10, "a"), (20, "b"), (20, "c"), (30, "d"), (15, "e")]
        .iter()
        .map(|(ts, body)| json!({"timestamp": ts, "body": body}))
        .collect();
    let ack = server
        .append_request("ts", json!({ "records": records }))
        .expect_status(StatusCode::OK)
        .await;
    assert_eq!(ack["start"]["timestamp"], 10);
    // A timestamp below the previous one is raised to it.
    assert_eq!(ack["end"]["timestamp"], 30);
    let batch = server.read("ts", "seq_num=0").await;
    assert_eq!(timestamps(&batch), [10, 20, 20, 30, 30]);

    assert_eq!(
        server.read_bodies("ts", "timestamp=0").await,
        ["a", "b", "c", "d", "e"]
    );
    assert_eq!(
        server.read_bodies("ts", "timestamp=11").await,
        ["b", "c", "d", "e"]
    );
    assert_eq!(
        server.read_bodies("ts", "timestamp=20").await,
        ["b", "c", "d", "e"]
    );
    assert_eq!(server.read_bodies("ts", "timestamp=21").await, ["d", "e"]);
    assert_eq!(server.read_bodies("ts", "seq_num=0&until=20").await, ["a"]);
    assert_eq!(
        server.read_bodies("ts", "timestamp=20&until=30").await,
        ["b", "c"]
    );
    server
        .read_request("ts", "timestamp=31")
        .expect_status(StatusCode::RANGE_NOT_SATISFIABLE)
        .await;
    server
        .read_request("ts", "timestamp=20&until=20")
        .expect_error(StatusCode::UNPROCESSABLE_ENTITY, "invalid")
        .await;
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
        server
            .create_stream(
                stream,
                json!({"timestamping": {"mode": mode, "uncapped": uncapped}}),
            )
            .await;
    }
    let append_ts = |stream: &str, ts: Option<u64>| {
        let record = match ts {
            Some(ts) => json!({"timestamp": ts, "body": "x"}),
            None => json!({"body": "x"}),
        };
        server.append_request(stream, json!({ "records": [record] }))
    };
    let ack = append_ts("capped", Some(future))
        .expect_status(StatusCode::OK)
        .await;
    assert!(
        ack["start"]["timestamp"].as_u64().unwrap() < future,
        "capped at arrival"
    );
    let ack = append_ts("uncapped", Some(future))
        .expect_status(StatusCode::OK)
        .await;
    assert_eq!(ack["start"]["timestamp"], future);
    let ack = append_ts("arrival", Some(5))
        .expect_status(StatusCode::OK)
        .await;
    assert!(ack["start"]["timestamp"].as_u64().unwrap() > 5);
    append_ts("required", None)
        .expect_error(StatusCode::UNPROCESSABLE_ENTITY, "invalid")
        .await;
    assert_eq!(server.tail("required").await, 0);
    let ack = append_ts("required", Some(7))
        .expect_status(StatusCode::OK)
        .await;
    assert_eq!(ack["start"]["timestamp"], 7);
}

#[tokio::test]
async fn append_bad_input_appends_nothing() {
    let server = TestServer::start().await;
    server.with_stream("s").await;
    server.append("s", &["keep"]).await;
    let post = |body: Value| server.append_request("s", body);
    let invalid = (StatusCode::UNPROCESSABLE_ENTITY, "invalid");
    let bad_json = (StatusCode::BAD_REQUEST, "bad_json");

    let many: Vec<Value> = (0..1001).map(|_| json!({"body": "x"})).collect();
    let big = "x".repeat(600 * 1024);
    for (body, (status, code)) in [
        (json!({"records": []}), invalid),
        (json!({ "records": many }), invalid),
        (json!({"records": [{"body": big}, {"body": big}]}), invalid),
        (
            json!({"records": [{"body": "ok"}, {"headers": [["", "explode"]], "body": ""}]}),
            invalid,
        ),
        (
            json!({"records": [{"headers": [["", "trim"], ["x", "y"]], "body": ""}]}),
            invalid,
        ),
        (
            json!({"records": [{"headers": [["", "trim"]], "body": "short"}]}),
            invalid,
        ),
        (json!({"records": [{"body": 5}]}), bad_json),
        (
            json!({"records": [{"headers": [["only-name"]], "body": "x"}]}),
            bad_json,
        ),
    ] {
        post(body).expect_error(status, code).await;
    }
    server
        .post("/v1/streams/s/records")
        .header("content-type", "application/json")
        .body(r#"{"records": [{"body": "x"}"#)
        .expect_error(StatusCode::BAD_REQUEST, "bad_json")
        .await;
    post(json!({"records": [{"body": "aGk="}, {"body": "not base64!"}]}))
        .header("s2-format", "base64")
        .expect_error(StatusCode::UNPROCESSABLE_ENTITY, "invalid")
        .await;
    post(json!({"records": [{"body": "00"}]}))
        .header("s2-format", "hex")
        .expect_error(StatusCode::BAD_REQUEST, "bad_header")
        .await;
    post(json!({"records": [{"body": "x"}], "fencing_token": "t".repeat(37)}))
        .expect_error(StatusCode::UNPROCESSABLE_ENTITY, "invalid")
        .await;
    let huge = "x".repeat(9 * 1024 * 1024);
    post(json!({"records": [{"body": huge}]}))
        .expect_error(StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large")
        .await;
    // A body that is not valid HTTP (a malformed chunk size) is a bad
    // request, not a large one.
    let (status, body) = raw_request(
        &server,
        "POST /v1/streams/s/records HTTP/1.1\r\nhost: localhost\r\n\
         s2-basin: test-basin\r\ncontent-type: application/json\r\n\
         transfer-encoding: chunked\r\nconnection: close\r\n\r\n\
         zz\r\n{\"records\": []}\r\n0\r\n\r\n",
    )
    .await;
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("\"bad_body\""), "{body}");

    assert_eq!(server.tail("s").await, 1);
    assert_eq!(server.read_bodies("s", "seq_num=0").await, ["keep"]);
}

#[tokio::test]
async fn base64_format_round_trips_binary() {
    let server = TestServer::start().await;
    server.with_stream("bin").await;
    let b64 = base64::engine::general_purpose::STANDARD;
    let body = b64.encode([0u8, 159, 146, 150, 255]);
    server
        .append_request(
            "bin",
            json!({"records": [{"headers": [[b64.encode("name"), b64.encode([1u8, 2])]], "body": body}]}),
        )
        .header("s2-format", "base64")
        .expect_status(StatusCode::OK)
        .await;
    let batch = server
        .read_request("bin", "seq_num=0")
        .header("s2-format", "base64")
        .expect_status(StatusCode::OK)
        .await;
    assert_eq!(batch["records"][0]["body"], body);
    assert_eq!(batch["records"][0]["headers"][0][0], b64.encode("name"));
}

#[tokio::test]
async fn match_seq_num_and_fencing() {
    let server = TestServer::start().await;
    server.with_stream("f").await;
    let post = |body: Value| server.append_request("f", body);

    post(json!({"records": [{"body": "a"}], "match_seq_num": 0}))
        .expect_status(StatusCode::OK)
        .await;
    let mismatch = post(json!({"records": [{"body": "b"}], "match_seq_num": 0}))
        .expect_status(StatusCode::PRECONDITION_FAILED)
        .await;
    assert_eq!(mismatch, json!({"seq_num_mismatch": 1}));

    // Fence with a token; appends naming another token fail, appends naming
    // none or the right one succeed.
    post(json!({"records": [{"headers": [["", "fence"]], "body": "writer-1"}]}))
        .expect_status(StatusCode::OK)
        .await;
    let mismatch = post(json!({"records": [{"body": "c"}], "fencing_token": "writer-0"}))
        .expect_status(StatusCode::PRECONDITION_FAILED)
        .await;
    assert_eq!(mismatch, json!({"fencing_token_mismatch": "writer-1"}));
    post(json!({"records": [{"body": "c"}], "fencing_token": "writer-1", "match_seq_num": 2}))
        .expect_status(StatusCode::OK)
        .await;
    post(json!({"records": [{"body": "d"}]}))
        .expect_status(StatusCode::OK)
        .await;
    // Fencing is checked before match_seq_num.
    let mismatch =
        post(json!({"records": [{"body": "e"}], "fencing_token": "x", "match_seq_num": 0}))
            .expect_status(StatusCode::PRECONDITION_FAILED)
            .await;
    assert!(mismatch.get("fencing_token_mismatch").is_some());
    assert_eq!(server.tail("f").await, 4);
}

#[tokio::test]
async fn trim_command_hides_earlier_records() {
    let server = TestServer::start().await;
    server.with_stream("t").await;
    server.append("t", &["0", "1", "2", "3"]).await;
    let b64 = base64::engine::general_purpose::STANDARD;
    let trim = b64.encode(2u64.to_be_bytes());
    server
        .append_request(
            "t",
            json!({"records": [{"headers": [["", b64.encode("trim")]], "body": trim}]}),
        )
        .header("s2-format", "base64")
        .expect_status(StatusCode::OK)
        .await;
    let batch = server.read("t", "seq_num=0").await;
    assert_eq!(seq_nums(&batch), [2, 3, 4]);
    assert_eq!(server.tail("t").await, 5);
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
        let request = server.read_request("big", "seq_num=1200&wait=10");
        tokio::spawn(async move {
            let started = Instant::now();
            let resp = request.send().await.unwrap();
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
    let started = Instant::now();
    let batch = server.read("big", "seq_num=1201&wait=1").await;
    assert_eq!(bodies(&batch), Vec::<String>::new());
    assert!(started.elapsed() >= Duration::from_millis(900));
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
    let post = |encoding: &str, bytes: Vec<u8>| {
        server
            .post("/v1/streams/c/records")
            .header("content-encoding", encoding)
            .body(bytes)
    };
    for (encoding, bytes) in [("gzip", gzipped), ("zstd", zstded)] {
        post(encoding, bytes)
            .header("content-type", "application/json")
            .expect_status(StatusCode::OK)
            .await;
    }
    assert_eq!(
        server.read_bodies("c", "seq_num=0").await,
        ["squeezed", "squeezed"]
    );
    post("br", body.clone())
        .expect_error(StatusCode::BAD_REQUEST, "bad_header")
        .await;
    post("gzip", body)
        .expect_error(StatusCode::BAD_REQUEST, "bad_header")
        .await;
    // A compressed admin request body works too.
    let config = serde_json::to_vec(&json!({"retention_policy": {"age": 60}})).unwrap();
    let config = server
        .patch("/v1/streams/c")
        .header("content-type", "application/json")
        .header("content-encoding", "zstd")
        .body(zstd::bulk::compress(&config, 3).unwrap())
        .expect_status(StatusCode::OK)
        .await;
    assert_eq!(config["retention_policy"]["age"], 60);
}

/// Sends `request` as raw bytes (what a well-behaved client never sends)
/// and returns the response's status and everything after the status line.
async fn raw_request(server: &TestServer, request: &str) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let addr = server.base.trim_start_matches("http://");
    let mut tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    tcp.write_all(request.as_bytes()).await.unwrap();
    let mut response = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), tcp.read_to_end(&mut response))
        .await
        .expect("the server answers and closes")
        .unwrap();
    let text = String::from_utf8_lossy(&response).into_owned();
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    (status, text)
}
