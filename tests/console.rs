//! The web console in a real browser (headless Chromium): it creates a
//! stream, follows appends made through the API in its live tail, browses
//! a collection, shows a consumer's lag going up and down, and works with
//! access control on. Screenshots of every page, at 1280×800 and on a
//! narrow window, are saved under `target/tmp/console-screenshots/`.

mod common;

use common::browser::Browser;
use common::consumers::{ack, ensure, receive};
use common::{SendAndExpect, TestServer, BASIN};
use reqwest::StatusCode;
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_console_follows_streams_collections_and_consumers() {
    let Some(browser) = Browser::start(1280, 800).await else {
        return;
    };
    let server = TestServer::start().await;
    server.create_basin(BASIN).await;
    let base = &server.base;

    // The overview, then the basin; a stream made from the console.
    browser.goto(&format!("{base}/")).await;
    browser.wait_text("#basins", BASIN).await;
    browser.wait_text("#throughput-chart", "Throughput").await;
    browser.goto(&format!("{base}/#/b/{BASIN}")).await;
    browser.wait_text("#streams", "").await;
    browser
        .submit("create-stream", &[("stream", "orders")])
        .await;
    browser.wait_text("#streams", "orders").await;
    server
        .get("/v1/streams/orders")
        .expect_status(StatusCode::OK)
        .await;
    // The console's errors are the API's.
    browser
        .submit("create-stream", &[("stream", "orders")])
        .await;
    browser
        .wait_text("#create-stream + .form-error", "resource_already_exists")
        .await;

    // A stream's page: its live tail follows appends made elsewhere.
    server.append("orders", &["first"]).await;
    browser.goto(&format!("{base}/#/b/{BASIN}/s/orders")).await;
    browser.wait_text("#record-table", "first").await;
    browser.wait_text("#live-tail", "Waiting").await;
    server
        .append("orders", &[r#"{"order": 2, "total": 42}"#])
        .await;
    browser.wait_text("#live-tail", "\"total\": 42").await;
    browser.wait_text("#live-tail", "").await;
    browser.wait_text("#stat-tail", "2").await;
    browser.screenshot("stream-1280x800").await;

    // A collection: found by id, its versions, and the records feed.
    server
        .put("/v1/collections/users")
        .json(&json!({}))
        .expect_status(StatusCode::CREATED)
        .await;
    for version in 1..=3 {
        server
            .put("/v1/collections/users/records/u1")
            .json(&json!({ "name": "Ada", "visits": version }))
            .send()
            .await
            .unwrap();
    }
    server
        .put("/v1/collections/users/records/u2")
        .json(&json!({ "name": "Grace" }))
        .send()
        .await
        .unwrap();
    browser.goto(&format!("{base}/#/b/{BASIN}/c/users")).await;
    browser.wait_text("#updated-table", "u2").await;
    browser.submit("find-record", &[("id", "u1")]).await;
    browser.wait_text("#record-found", "\"visits\": 3").await;
    let versions = browser.wait_text("#versions", "updated").await;
    assert_eq!(versions.matches("updated").count(), 2, "{versions}");
    assert!(versions.contains("created"), "{versions}");
    browser.screenshot("collection-1280x800").await;

    // A consumer: lag goes up with appends and down with acks.
    ensure(&server, "billing", json!({"source": {"stream": "orders"}})).await;
    browser.goto(&format!("{base}/#/b/{BASIN}/q/billing")).await;
    browser.wait_text("#stat-lag", "2").await;
    server.append("orders", &["third", "fourth", "fifth"]).await;
    browser.wait_text("#stat-lag", "5").await;
    let messages = receive(&server, "billing", 10, 0).await;
    assert_eq!(ack(&server, "billing", &messages).await, 5);
    browser.wait_text("#stat-lag", "0").await;
    browser.wait_text("#lag-chart", "Lag").await;
    browser.screenshot("consumer-1280x800").await;

    // The basin's page lists all three kinds; the overview charts them.
    browser.goto(&format!("{base}/#/b/{BASIN}")).await;
    browser.wait_text("#consumers", "billing").await;
    browser.wait_text("#collections", "users").await;
    browser.wait_text("#streams", "rec/s").await;
    browser.screenshot("basin-1280x800").await;
    browser.goto(&format!("{base}/#/")).await;
    browser.wait_text("#basins", BASIN).await;
    browser.screenshot("overview-1280x800").await;

    // A narrow window (a phone): nothing spills sideways.
    browser.resize(390, 844).await;
    for (name, path) in [
        ("overview", "#/".to_string()),
        ("basin", format!("#/b/{BASIN}")),
        ("stream", format!("#/b/{BASIN}/s/orders")),
        ("collection", format!("#/b/{BASIN}/c/users")),
        ("consumer", format!("#/b/{BASIN}/q/billing")),
    ] {
        browser.goto(&format!("{base}/{path}")).await;
        browser.wait_text("h1", "").await;
        tokio::time::sleep(std::time::Duration::from_millis(700)).await;
        browser.screenshot(&format!("{name}-390x844")).await;
    }
    browser.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_auth_on_the_console_asks_for_a_token_once_and_never_shows_it() {
    let Some(browser) = Browser::start(1280, 800).await else {
        return;
    };
    let root = "console-test-root-token-0123456789";
    let server = TestServer::start_with_root_token(root).await;
    server
        .bare(reqwest::Method::POST, "/v1/basins")
        .bearer_auth(root)
        .json(&json!({ "basin": BASIN }))
        .expect_status(StatusCode::CREATED)
        .await;
    let base = &server.base;

    browser.goto(&format!("{base}/")).await;
    browser.wait_text("#needs-token", "needs a token").await;
    browser.screenshot("token-1280x800").await;
    browser.submit("token-form", &[("token", root)]).await;
    browser.wait_text("#basins", BASIN).await;
    // Kept for the session: another page needs no second entry.
    browser.goto(&format!("{base}/#/b/{BASIN}")).await;
    browser.wait_text("#streams", "No streams").await;
    let page = browser
        .client
        .execute("return document.documentElement.outerHTML", vec![])
        .await
        .unwrap();
    assert!(
        !page.as_str().unwrap().contains(root),
        "the token shows on the page"
    );
    browser.wait_text("#token-state", "token set").await;
    browser.close().await;
}
