//! HTTP tests of the S2 v1 JSON API's account-level access tokens (issue,
//! list, revoke, bad input) and metrics (account, basin and stream sets,
//! unknown streams and sets).

mod common;

use common::*;
use reqwest::{Method, StatusCode};
use serde_json::json;

#[tokio::test]
async fn access_tokens_and_metrics_answer_as_the_spec_says() {
    let server = TestServer::start().await;
    let tokens =
        |method: Method, path: &str| server.bare(method, &format!("/v1/access-tokens{path}"));
    let info = json!({"id": "ci-token", "scope": {"basins": {"prefix": ""}, "ops": ["read"]}});
    let issued = tokens(Method::POST, "")
        .json(&info)
        .expect_status(StatusCode::CREATED)
        .await;
    assert!(issued["access_token"]
        .as_str()
        .is_some_and(|t| t.len() >= 32));
    tokens(Method::POST, "")
        .json(&info)
        .expect_error(StatusCode::CONFLICT, "resource_already_exists")
        .await;
    // Shape errors are 400 `bad_json`; a well-formed token S2 would
    // refuse is 422 `invalid`.
    tokens(Method::POST, "")
        .json(&json!({"id": "x"}))
        .expect_error(StatusCode::BAD_REQUEST, "bad_json")
        .await;
    tokens(Method::POST, "")
        .json(&json!({"id": "x", "scope": {"ops": ["rule-all"]}}))
        .expect_error(StatusCode::BAD_REQUEST, "bad_json")
        .await;
    tokens(Method::POST, "")
        .json(&json!({"id": "x", "scope": {}, "auto_prefix_streams": "yes"}))
        .expect_error(StatusCode::BAD_REQUEST, "bad_json")
        .await;
    tokens(Method::POST, "")
        .json(&json!({"id": "", "scope": {"ops": ["read"]}}))
        .expect_error(StatusCode::UNPROCESSABLE_ENTITY, "invalid")
        .await;
    let many_ops: Vec<&str> = std::iter::repeat_n("read", 65).collect();
    tokens(Method::POST, "")
        .json(&json!({"id": "x", "scope": {"ops": many_ops}}))
        .expect_error(StatusCode::UNPROCESSABLE_ENTITY, "invalid")
        .await;
    tokens(Method::POST, "")
        .json(
            &json!({"id": "x", "scope": {"ops": ["read"], "streams": {"prefix": "s".repeat(513)}}}),
        )
        .expect_error(StatusCode::UNPROCESSABLE_ENTITY, "invalid")
        .await;
    tokens(Method::POST, "")
        .json(&json!({"id": "x", "scope": {"ops": ["read"]}, "expires_at": "9999-12-31T23:59:59-23:59"}))
        .expect_error(StatusCode::UNPROCESSABLE_ENTITY, "invalid")
        .await;
    tokens(Method::POST, "")
        .json(&json!({"id": "x", "scope": {}}))
        .expect_error(StatusCode::UNPROCESSABLE_ENTITY, "invalid")
        .await;
    tokens(Method::POST, "")
        .json(&json!({"id": "x", "scope": {"ops": ["read"], "streams": {"exact": "s"}}, "auto_prefix_streams": true}))
        .expect_error(StatusCode::UNPROCESSABLE_ENTITY, "invalid")
        .await;
    tokens(Method::POST, "")
        .json(&json!({"id": "x", "scope": {"ops": ["read"]}, "expires_at": "2001-01-01T00:00:00Z"}))
        .expect_error(StatusCode::UNPROCESSABLE_ENTITY, "invalid")
        .await;
    let list = tokens(Method::GET, "?prefix=ci")
        .expect_status(StatusCode::OK)
        .await;
    // As issued, with S2's default for what was left out.
    let mut listed = info.clone();
    listed["auto_prefix_streams"] = json!(false);
    assert_eq!(list["access_tokens"][0], listed);
    assert_eq!(list["has_more"], false);
    let resp = tokens(Method::DELETE, "/ci-token").send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::NO_CONTENT);
    tokens(Method::DELETE, "/ci-token")
        .expect_error(StatusCode::NOT_FOUND, "access_token_not_found")
        .await;

    server.with_stream("m").await;
    let metrics = |path: &str| server.bare(Method::GET, &format!("/v1/metrics{path}"));
    let active = metrics("?set=active-basins")
        .expect_status(StatusCode::OK)
        .await;
    assert_eq!(active["values"][0]["label"]["values"], json!([BASIN]));
    let storage = metrics(&format!("/{BASIN}?set=storage"))
        .expect_status(StatusCode::OK)
        .await;
    // The basin's one stream is empty: it stores nothing (the figures
    // themselves are checked in tests/metric_sets.rs).
    let gauge = &storage["values"][0]["gauge"];
    assert_eq!(
        (&gauge["name"], &gauge["unit"]),
        (&json!("storage"), &json!("bytes"))
    );
    assert_eq!(gauge["values"].as_array().unwrap().last().unwrap()[1], 0);
    metrics(&format!("/{BASIN}/m?set=storage"))
        .expect_status(StatusCode::OK)
        .await;
    metrics(&format!("/{BASIN}/nope?set=storage"))
        .expect_error(StatusCode::NOT_FOUND, "stream_not_found")
        .await;
    metrics("?set=bogus")
        .expect_error(StatusCode::UNPROCESSABLE_ENTITY, "invalid")
        .await;
    metrics("")
        .expect_error(StatusCode::BAD_REQUEST, "bad_query")
        .await;
}
