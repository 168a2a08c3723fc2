//! Consumers over HTTP: the calls the tests make again and again.

use reqwest::StatusCode;
use serde_json::{json, Value};

use super::{expect_status, TestServer};

pub async fn ensure(server: &TestServer, name: &str, config: Value) -> Value {
    let resp = server
        .put(&format!("/v1/consumers/{name}"))
        .json(&config)
        .send()
        .await
        .unwrap();
    assert!(
        resp.status().is_success(),
        "ensure consumer: {}",
        resp.status()
    );
    resp.json().await.unwrap()
}

pub async fn receive(
    server: &TestServer,
    name: &str,
    batch_size: usize,
    wait_ms: u64,
) -> Vec<Value> {
    let resp = server
        .post(&format!("/v1/consumers/{name}/receive"))
        .json(&json!({ "batch_size": batch_size, "wait_ms": wait_ms }))
        .send()
        .await
        .unwrap();
    let body = expect_status(resp, StatusCode::OK).await;
    body["messages"].as_array().unwrap().clone()
}

pub async fn settle(server: &TestServer, name: &str, op: &str, body: Value) -> reqwest::Response {
    server
        .post(&format!("/v1/consumers/{name}/{op}"))
        .json(&body)
        .send()
        .await
        .unwrap()
}

pub async fn ack(server: &TestServer, name: &str, messages: &[Value]) -> u64 {
    let ids: Vec<&Value> = messages.iter().map(|m| &m["ack_id"]).collect();
    let resp = settle(server, name, "ack", json!({ "ack_ids": ids })).await;
    expect_status(resp, StatusCode::OK).await["acked"]
        .as_u64()
        .unwrap()
}

/// A consumer's `state`, as `GET` answers it.
pub async fn state(server: &TestServer, name: &str) -> Value {
    let resp = server
        .get(&format!("/v1/consumers/{name}"))
        .send()
        .await
        .unwrap();
    expect_status(resp, StatusCode::OK).await["state"].clone()
}

/// The seq nums of delivered messages.
pub fn seqs(messages: &[Value]) -> Vec<u64> {
    messages
        .iter()
        .map(|m| m["seq_num"].as_u64().unwrap())
        .collect()
}

/// The bodies of delivered stream records.
pub fn texts(messages: &[Value]) -> Vec<String> {
    messages
        .iter()
        .map(|m| m["record"]["body"].as_str().unwrap().to_string())
        .collect()
}

/// Appends `m0`, `m1`, … `m{n-1}`, in batches.
pub async fn append_n(server: &TestServer, stream: &str, n: usize) {
    for chunk in (0..n).collect::<Vec<_>>().chunks(500) {
        let bodies: Vec<String> = chunk.iter().map(|i| format!("m{i}")).collect();
        let refs: Vec<&str> = bodies.iter().map(String::as_str).collect();
        server.append(stream, &refs).await;
    }
}
