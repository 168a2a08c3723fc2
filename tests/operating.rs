//! What an operator sees of a running server. Stopping it: requests
//! waiting for data (long polls on a stream, a collection's `/updated`
//! and events, `/v1/updated`, a consumer's receive)
//! end at once with `503 unavailable`, as sessions do, rather than as if
//! their wait had run out; and the process exits as soon as what was
//! acknowledged is durable. And how requests are logged (`--access-log`).

mod common;

use std::time::{Duration, Instant};

use common::binary::RillProcess;
use common::*;
use reqwest::StatusCode;
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn long_polls_end_with_unavailable_on_shutdown() {
    let server = TestServer::start().await;
    server.with_stream("s").await;
    server.append("s", &["one"]).await;
    server.put("/v1/collections/c").send().await.unwrap();
    server
        .put("/v1/consumers/w")
        .json(&json!({ "source": { "stream": "s" }, "start": "tail" }))
        .expect_status(StatusCode::CREATED)
        .await;

    let polls = [
        server.read_request("s", "seq_num=1&wait=30"),
        server.get("/v1/collections/c/updated?wait=30"),
        server.get("/v1/collections/c/events?seq_num=0&wait=30"),
        server.get("/v1/updated?wait=30"),
        server
            .post("/v1/consumers/w/receive")
            .json(&json!({ "batch_size": 1, "wait_ms": 30_000 })),
    ];
    let polls: Vec<_> = polls
        .into_iter()
        .map(|request| tokio::spawn(request.send()))
        .collect();
    // Every poll is waiting before the server is told to stop.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let started = Instant::now();
    server.stop().await;
    for poll in polls {
        let resp = poll.await.unwrap().unwrap();
        expect_error(resp, StatusCode::SERVICE_UNAVAILABLE, "unavailable").await;
    }
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "stopping took {:?}",
        started.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_process_exits_promptly_after_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let server = RillProcess::start(dir.path());
    let http = reqwest::Client::new();
    create_basin_and_stream(&http, &server.base, "shutdown-basin").await;
    let resp = http
        .post(format!("{}/v1/streams/s/records", server.base))
        .header("s2-basin", "shutdown-basin")
        .json(&json!({ "records": [{ "body": "kept" }] }))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);

    let started = Instant::now();
    let status = server.terminate(Duration::from_secs(10));
    assert!(status.success(), "{status}");
    eprintln!("exited {:?} after SIGTERM", started.elapsed());
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );

    // What was acknowledged is there after it.
    let server = RillProcess::start(dir.path());
    let resp = http
        .get(format!("{}/v1/streams/s/records?seq_num=0", server.base))
        .header("s2-basin", "shutdown-basin")
        .send()
        .await
        .unwrap();
    let batch = expect_status(resp, StatusCode::OK).await;
    assert_eq!(bodies(&batch), ["kept"]);
}

/// `--access-log`: a line per request, with method, path and status (and
/// not the query string).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_access_log_has_a_line_per_request() {
    let dir = tempfile::tempdir().unwrap();
    let server = RillProcess::try_start_with(dir.path(), &["--access-log"]).unwrap();
    let http = reqwest::Client::new();
    create_basin_and_stream(&http, &server.base, "access-basin").await;
    let resp = http
        .get(format!("{}/v1/streams/nope/records?seq_num=7", server.base))
        .header("s2-basin", "access-basin")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::NOT_FOUND);
    let deadline = Instant::now() + Duration::from_secs(5);
    let line = loop {
        let lines = server.log_lines();
        if let Some(line) = lines
            .iter()
            .find(|l| l.contains("/v1/streams/nope/records"))
        {
            break line.clone();
        }
        assert!(
            Instant::now() < deadline,
            "no access log line in {lines:#?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(
        line.contains("rill::access") && line.contains("INFO"),
        "{line}"
    );
    assert!(
        line.contains("method=GET") && line.contains("status=404"),
        "{line}"
    );
    assert!(!line.contains("seq_num=7"), "the query is left out: {line}");
    let creates = server
        .log_lines()
        .iter()
        .filter(|l| l.contains("method=PUT") && l.contains("status=201"))
        .count();
    assert_eq!(creates, 2, "{:#?}", server.log_lines());
}
