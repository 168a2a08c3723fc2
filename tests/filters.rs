//! Filters beyond equality (`where` conditions: comparisons, `in`,
//! existence, `changed`) as consumers take them, with the 422s that name
//! the bad part.

mod common;

use common::*;
use reqwest::StatusCode;
use serde_json::{json, Value};

async fn put(server: &TestServer, id: &str, data: Value) {
    server
        .put(&format!("/v1/collections/users/records/{id}"))
        .json(&data)
        .expect_status(StatusCode::OK)
        .await;
}

/// Every message the consumer has now, acked.
async fn drain(server: &TestServer, consumer: &str) -> Vec<Value> {
    let body = server
        .post(&format!("/v1/consumers/{consumer}/receive"))
        .json(&json!({ "batch_size": 100, "wait_ms": 0 }))
        .expect_status(StatusCode::OK)
        .await;
    let messages = body["messages"].as_array().unwrap().clone();
    let ack_ids: Vec<Value> = messages.iter().map(|m| m["ack_id"].clone()).collect();
    if !ack_ids.is_empty() {
        server
            .post(&format!("/v1/consumers/{consumer}/ack"))
            .json(&json!({ "ack_ids": ack_ids }))
            .send()
            .await
            .unwrap();
    }
    messages
}

#[tokio::test]
async fn consumers_filter_with_conditions() {
    let server = TestServer::start().await;
    server.create_basin(BASIN).await;
    server.put("/v1/collections/users").send().await.unwrap();
    // Big accounts whose plan changed; and new accounts in two cities.
    server
        .put("/v1/consumers/upgrades")
        .json(&json!({
            "source": { "collection": "users", "feed": "events" },
            "filter": { "events": ["updated"], "where": [
                { "field": "seats", "op": ">=", "value": 10 },
                { "field": "plan", "op": "changed" }
            ] }
        }))
        .expect_status(StatusCode::CREATED)
        .await;
    server
        .put("/v1/consumers/cities")
        .json(&json!({
            "source": { "collection": "users", "feed": "records" },
            "filter": { "where": [
                { "field": "address.city", "op": "in", "value": ["Lyon", "Paris"] },
                { "field": "since", "op": "<", "value": "2026-01-01T00:00:00+01:00" }
            ] }
        }))
        .expect_status(StatusCode::CREATED)
        .await;

    put(&server, "u1", json!({"seats": 5, "plan": "free", "address": {"city": "Lyon"}, "since": "2025-06-01T00:00:00Z"})).await;
    put(&server, "u2", json!({"seats": 12, "plan": "free", "address": {"city": "Nice"}, "since": "2025-06-01T00:00:00Z"})).await;
    put(&server, "u3", json!({"seats": 20, "plan": "pro", "address": {"city": "Paris"}, "since": "2025-12-31T23:30:00Z"})).await;
    put(&server, "u1", json!({"seats": 5, "plan": "pro", "address": {"city": "Lyon"}, "since": "2025-06-01T00:00:00Z"})).await;
    put(&server, "u2", json!({"seats": 12, "plan": "pro", "address": {"city": "Nice"}, "since": "2025-06-01T00:00:00Z"})).await;
    put(&server, "u3", json!({"seats": 30, "plan": "pro", "address": {"city": "Paris"}, "since": "2025-12-31T23:30:00Z"})).await;

    let upgrades: Vec<(String, String)> = drain(&server, "upgrades")
        .await
        .iter()
        .map(|m| {
            let event = &m["event"];
            (
                event["event"].as_str().unwrap().into(),
                event["id"].as_str().unwrap().into(),
            )
        })
        .collect();
    assert_eq!(upgrades, [("updated".to_string(), "u2".to_string())]);

    // u3 joined at 00:30 in Paris time: not before 2026 there.
    let cities: Vec<String> = drain(&server, "cities")
        .await
        .iter()
        .map(|m| m["record"]["id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(cities, ["u1"]);
}

#[tokio::test]
async fn bad_filters_are_refused_with_what_is_wrong() {
    let server = TestServer::start().await;
    server.create_basin(BASIN).await;
    server.put("/v1/collections/users").send().await.unwrap();
    for (filter, feed, says) in [
        (
            json!({"where": [{"field": "seats", "op": ">", "value": [1]}]}),
            "events",
            "condition 1 (`seats`): <, <=, > and >= compare numbers or strings",
        ),
        (
            json!({"where": [{"field": "plan", "op": "changed"}]}),
            "records",
            "changed applies only to change events",
        ),
        (
            json!({"where": [{"field": "plan", "op": "in", "value": "pro"}]}),
            "events",
            "in takes a non-empty array",
        ),
    ] {
        let resp = server
            .put("/v1/consumers/bad")
            .json(&json!({ "source": { "collection": "users", "feed": feed }, "filter": filter }))
            .send()
            .await
            .unwrap();
        let body = expect_error(resp, StatusCode::UNPROCESSABLE_ENTITY, "invalid").await;
        assert!(body["message"].as_str().unwrap().contains(says), "{body}");
    }
}
