//! HTTP tests of the S2 v1 API's SSE read sessions: batches, the `[DONE]`
//! end, resuming with `last-event-id`, bad session requests, pings, and the
//! error event that ends a session whose stream is deleted.

mod common;

use common::*;
use reqwest::StatusCode;

#[tokio::test]
async fn sse_session_batches_done_and_resume() {
    let server = TestServer::start().await;
    server.with_stream("sse").await;
    server.append("sse", &["a", "b", "c"]).await;

    let mut events = SseReader::open(server.sse_request("sse", "seq_num=0&count=2")).await;
    let batch = events.expect_next().await;
    assert_eq!(batch.event.as_deref(), Some("batch"));
    assert_eq!(batch.id.as_deref(), Some("1,2,18"));
    assert_eq!(bodies(&batch.json()), ["a", "b"]);
    let done = events.expect_next().await;
    assert_eq!(done.data, "[DONE]");
    assert!(events
        .next_within(std::time::Duration::from_secs(5))
        .await
        .is_none());

    // Resume after the first batch: only what is left of the limits.
    let mut events = SseReader::open(
        server
            .sse_request("sse", "seq_num=0&count=3")
            .header("last-event-id", "1,2,18"),
    )
    .await;
    let batch = events.expect_next().await;
    assert_eq!(batch.id.as_deref(), Some("2,3,27"));
    assert_eq!(bodies(&batch.json()), ["c"]);
    assert_eq!(events.expect_next().await.data, "[DONE]");

    server
        .sse_request("sse", "seq_num=0")
        .header("last-event-id", "garbage")
        .expect_error(StatusCode::BAD_REQUEST, "bad_header")
        .await;
    server
        .sse_request("sse", "seq_num=50")
        .expect_status(StatusCode::RANGE_NOT_SATISFIABLE)
        .await;
}

#[tokio::test]
async fn sse_session_ends_with_error_when_stream_is_deleted() {
    let server = TestServer::start().await;
    server.with_stream("doomed").await;
    server.append("doomed", &["a"]).await;
    let mut events = SseReader::open(server.sse_request("doomed", "seq_num=0")).await;
    assert_eq!(events.expect_next().await.event.as_deref(), Some("batch"));
    let ping = events.expect_next().await;
    assert_eq!(ping.event.as_deref(), Some("ping"));
    let ping = ping.json();
    assert_eq!(ping["tail"]["seq_num"], 1);
    assert!(ping["timestamp"].as_u64().is_some());
    server
        .delete("/v1/streams/doomed")
        .expect_status(StatusCode::ACCEPTED)
        .await;
    let error = events.expect_next().await;
    assert_eq!(error.event.as_deref(), Some("error"));
    assert_eq!(error.json()["code"], "stream_not_found");
}
