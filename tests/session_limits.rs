//! Sessions and long polls are capped per server and per access token:
//! past a cap the next one gets 503 (server) or 429 (token) with
//! `Retry-After`, at once, and a session that ends gives its place back.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use reqwest::{Method, StatusCode};
use rill::api::{Auth, SessionLimits};
use rill::server::ServerOptions;
use rill::storage::MemoryStorage;
use serde_json::json;

const ROOT: &str = "limits-root-token-0123456789abcdefghijklmnop";
const BASIN_NAME: &str = "limits-basin";

async fn server() -> (TestServer, String) {
    let options = ServerOptions {
        auth: Auth::with_root_token(ROOT),
        sessions: SessionLimits {
            read_sessions: 3,
            append_sessions: 3,
            long_polls: 3,
            per_token: 2,
        },
        ..Default::default()
    };
    let server = TestServer::start_with(Arc::new(MemoryStorage::default()), options).await;
    for path in [format!("/v1/basins/{BASIN_NAME}"), "/v1/streams/s".into()] {
        server
            .bare(Method::PUT, &path)
            .bearer_auth(ROOT)
            .header("s2-basin", BASIN_NAME)
            .send()
            .await
            .unwrap();
    }
    let issued = server
        .bare(Method::POST, "/v1/access-tokens")
        .bearer_auth(ROOT)
        .json(&json!({ "id": "busy", "scope": {
            "basins": { "prefix": "" }, "streams": { "prefix": "" }, "ops": ["read", "append"] } }))
        .expect_status(StatusCode::CREATED)
        .await;
    let token = issued["access_token"].as_str().unwrap().to_string();
    (server, token)
}

fn sse(server: &TestServer, token: &str) -> reqwest::RequestBuilder {
    server
        .bare(Method::GET, "/v1/streams/s/records?seq_num=0")
        .bearer_auth(token)
        .header("s2-basin", BASIN_NAME)
        .header("accept", "text/event-stream")
}

fn long_poll(server: &TestServer, token: &str) -> reqwest::RequestBuilder {
    server
        .bare(Method::GET, "/v1/streams/s/records?tail_offset=0&wait=10")
        .bearer_auth(token)
        .header("s2-basin", BASIN_NAME)
}

async fn append(server: &TestServer) {
    server
        .bare(Method::POST, "/v1/streams/s/records")
        .bearer_auth(ROOT)
        .header("s2-basin", BASIN_NAME)
        .json(&json!({ "records": [{ "body": "wake" }] }))
        .expect_status(StatusCode::OK)
        .await;
}

async fn refused(request: reqwest::RequestBuilder, status: StatusCode) {
    let started = Instant::now();
    let resp = request.send().await.unwrap();
    assert_eq!(resp.status(), status);
    assert_eq!(resp.headers()["retry-after"], "1");
    let body: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(body["code"], "too_many_sessions");
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "refused at once"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_sessions_are_capped_and_given_back() {
    let (server, token) = server().await;
    let first = sse(&server, &token).send().await.unwrap();
    let second = sse(&server, &token).send().await.unwrap();
    assert_eq!(
        (first.status(), second.status()),
        (StatusCode::OK, StatusCode::OK)
    );
    refused(sse(&server, &token), StatusCode::TOO_MANY_REQUESTS).await;
    let root = sse(&server, ROOT).send().await.unwrap();
    assert_eq!(root.status(), StatusCode::OK);
    refused(sse(&server, ROOT), StatusCode::SERVICE_UNAVAILABLE).await;

    // A session that ends gives its place back (the server notices when
    // it next writes to it).
    drop(first);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        append(&server).await;
        let again = sse(&server, &token).send().await.unwrap();
        if again.status() == StatusCode::OK {
            break;
        }
        assert!(Instant::now() < deadline, "the place never came back");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    drop((second, root));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn long_polls_are_capped() {
    let (server, token) = server().await;
    let polls: Vec<_> = (0..2)
        .map(|_| tokio::spawn(long_poll(&server, &token).send()))
        .collect();
    let root_poll = tokio::spawn(long_poll(&server, ROOT).send());
    tokio::time::sleep(Duration::from_millis(500)).await;
    refused(long_poll(&server, &token), StatusCode::SERVICE_UNAVAILABLE).await;
    // An append wakes them all, and their places come back.
    append(&server).await;
    // A read that does not wait is no long poll.
    server
        .bare(Method::GET, "/v1/streams/s/records?seq_num=0")
        .bearer_auth(&token)
        .header("s2-basin", BASIN_NAME)
        .expect_status(StatusCode::OK)
        .await;
    for poll in polls {
        assert_eq!(poll.await.unwrap().unwrap().status(), StatusCode::OK);
    }
    assert_eq!(root_poll.await.unwrap().unwrap().status(), StatusCode::OK);
    let polls: Vec<_> = (0..2)
        .map(|_| tokio::spawn(long_poll(&server, &token).send()))
        .collect();
    tokio::time::sleep(Duration::from_millis(500)).await;
    refused(long_poll(&server, &token), StatusCode::TOO_MANY_REQUESTS).await;
    append(&server).await;
    for poll in polls {
        poll.await.unwrap().unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn append_sessions_are_capped() {
    let (server, token) = server().await;
    let client = |token: &str| {
        rill_client::Client::new(&server.base)
            .unwrap()
            .with_basin(BASIN_NAME)
            .with_token(token)
    };
    let first = client(&token).append_session("s").await.unwrap();
    let second = client(&token).append_session("s").await.unwrap();
    let third = client(&token).append_session("s").await;
    assert!(
        matches!(&third, Err(rill_client::Error::Api { status: 429, code, .. }) if code == "too_many_sessions"),
        "{:?}",
        third.as_ref().err()
    );
    // Closing one gives its place back.
    first.close().await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        match client(&token).append_session("s").await {
            Ok(session) => {
                session.close().await.unwrap();
                break;
            }
            Err(err) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(100)).await;
                let _ = err;
            }
            Err(err) => panic!("the place never came back: {err}"),
        }
    }
    second.close().await.unwrap();
}
