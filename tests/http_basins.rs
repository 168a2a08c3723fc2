//! HTTP tests of the S2 v1 JSON API's account level: health and unknown
//! routes, the basin lifecycle (create, ensure, get, reconfigure, list,
//! delete), bad basin input, and idempotent creates with a request token.
//! Each error case checks the status, the error code and that the failed
//! request changed nothing.

mod common;

use common::*;
use reqwest::{Method, StatusCode};
use serde_json::json;

#[tokio::test]
async fn health() {
    let server = TestServer::start().await;
    let health = server
        .bare(Method::GET, "/health")
        .expect_status(StatusCode::OK)
        .await;
    assert_eq!(health["status"], "ok");
    server
        .bare(Method::GET, "/nope")
        .expect_error(StatusCode::NOT_FOUND, "not_found")
        .await;
    server
        .bare(Method::PUT, "/v1/basins")
        .expect_error(StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed")
        .await;
}

#[tokio::test]
async fn basin_lifecycle() {
    let server = TestServer::start().await;
    let basins = |method: Method, path: &str| server.bare(method, &format!("/v1/basins{path}"));

    let info = basins(Method::POST, "")
        .json(&json!({"basin": "alpha-basin", "config": {"create_stream_on_append": true}}))
        .expect_status(StatusCode::CREATED)
        .await;
    assert_eq!(info["name"], "alpha-basin");
    assert!(info["created_at"].as_str().unwrap().ends_with('Z'));

    // Creating it again is a conflict.
    basins(Method::POST, "")
        .json(&json!({"basin": "alpha-basin"}))
        .expect_error(StatusCode::CONFLICT, "resource_already_exists")
        .await;

    // Ensure: created, then noop, then updated.
    basins(Method::PUT, "/beta-basin")
        .expect_provision("created", StatusCode::CREATED)
        .await;
    basins(Method::PUT, "/beta-basin")
        .expect_provision("noop", StatusCode::OK)
        .await;
    basins(Method::PUT, "/beta-basin")
        .json(&json!({"config": {"create_stream_on_read": true}}))
        .expect_provision("updated", StatusCode::OK)
        .await;

    // Get and reconfigure.
    let config = basins(Method::GET, "/alpha-basin")
        .expect_status(StatusCode::OK)
        .await;
    assert_eq!(config["create_stream_on_append"], true);
    assert_eq!(config["create_stream_on_read"], false);
    assert_eq!(
        config["default_stream_config"]["retention_policy"]["age"],
        604800
    );
    let config = basins(Method::PATCH, "/alpha-basin")
        .json(&json!({"default_stream_config": {"retention_policy": {"infinite": {}}}}))
        .expect_status(StatusCode::OK)
        .await;
    assert_eq!(
        config["default_stream_config"]["retention_policy"],
        json!({"infinite": {}})
    );
    assert_eq!(config["create_stream_on_append"], true);

    // List with prefix, start_after, limit.
    for name in ["gamma-basin-1", "gamma-basin-2", "gamma-basin-3"] {
        server.create_basin(name).await;
    }
    let page = basins(Method::GET, "?prefix=gamma&limit=2")
        .expect_status(StatusCode::OK)
        .await;
    assert_eq!(names(&page, "basins"), ["gamma-basin-1", "gamma-basin-2"]);
    assert_eq!(page["has_more"], true);
    let page = basins(Method::GET, "?prefix=gamma&start_after=gamma-basin-2")
        .expect_status(StatusCode::OK)
        .await;
    assert_eq!(page["basins"].as_array().unwrap().len(), 1);
    assert_eq!(page["has_more"], false);
    basins(Method::GET, "?prefix=gamma&start_after=alpha")
        .expect_error(StatusCode::UNPROCESSABLE_ENTITY, "invalid")
        .await;
    basins(Method::GET, "?limit=lots")
        .expect_error(StatusCode::BAD_REQUEST, "bad_query")
        .await;

    // Delete.
    basins(Method::DELETE, "/beta-basin")
        .expect_status(StatusCode::ACCEPTED)
        .await;
    basins(Method::GET, "/beta-basin")
        .expect_error(StatusCode::NOT_FOUND, "basin_not_found")
        .await;
    basins(Method::DELETE, "/beta-basin")
        .expect_error(StatusCode::NOT_FOUND, "basin_not_found")
        .await;
    basins(Method::PATCH, "/beta-basin")
        .json(&json!({}))
        .expect_error(StatusCode::NOT_FOUND, "basin_not_found")
        .await;
}

#[tokio::test]
async fn basin_bad_input() {
    let server = TestServer::start().await;
    for bad in [
        "short",
        "Upper-Case-Name",
        "-leading-hyphen",
        "trailing-hyphen-",
    ] {
        server
            .bare(Method::POST, "/v1/basins")
            .json(&json!({ "basin": bad }))
            .expect_error(StatusCode::UNPROCESSABLE_ENTITY, "invalid")
            .await;
    }
    server
        .bare(Method::POST, "/v1/basins")
        .header("content-type", "application/json")
        .body("{not json")
        .expect_error(StatusCode::BAD_REQUEST, "bad_json")
        .await;
    for (config, status, code) in [
        (
            json!({"default_stream_config": {"retention_policy": {"age": 0}}}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid",
        ),
        (
            json!({"no_such_field": 1}),
            StatusCode::BAD_REQUEST,
            "bad_json",
        ),
    ] {
        server
            .bare(Method::PUT, "/v1/basins/some-basin")
            .json(&json!({ "config": config }))
            .expect_error(status, code)
            .await;
    }
    // Nothing was created by the failed requests.
    let list = server
        .bare(Method::GET, "/v1/basins")
        .expect_status(StatusCode::OK)
        .await;
    assert_eq!(list["basins"], json!([]));
}

#[tokio::test]
async fn creates_are_idempotent_with_a_request_token() {
    let server = TestServer::start().await;
    let create_basin = |token: &str| {
        server
            .bare(Method::POST, "/v1/basins")
            .header("s2-request-token", token)
            .json(&json!({"basin": BASIN}))
    };
    create_basin("token-1")
        .expect_provision("created", StatusCode::CREATED)
        .await;
    create_basin("token-1")
        .expect_provision("noop", StatusCode::CREATED)
        .await;
    create_basin("token-2")
        .expect_error(StatusCode::CONFLICT, "resource_already_exists")
        .await;
    create_basin(&"t".repeat(37))
        .expect_error(StatusCode::BAD_REQUEST, "bad_header")
        .await;

    let create_stream = || server.post("/v1/streams").json(&json!({"stream": "s"}));
    create_stream()
        .header("s2-request-token", "abc")
        .expect_status(StatusCode::CREATED)
        .await;
    create_stream()
        .header("s2-request-token", "abc")
        .expect_provision("noop", StatusCode::CREATED)
        .await;
    create_stream()
        .expect_error(StatusCode::CONFLICT, "resource_already_exists")
        .await;
}
