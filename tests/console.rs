//! The web console in a real browser (headless Chromium): it creates a
//! stream, follows appends made through the API in its live tail, browses
//! a collection, shows a consumer's lag going up and down, and works with
//! access control on. Screenshots of every page, at 1280×800 and on a
//! narrow window, are saved under `target/tmp/console-screenshots/`.

mod common;

use common::browser::Browser;
use common::consumers::{ack, ensure, receive, settle};
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
    browser.wait_text("#streams", "No streams yet").await;
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
    browser.wait_exact("#stat-tail .stat-value", "2").await;
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
    browser.wait_exact("#stat-lag .stat-value", "2").await;
    server.append("orders", &["third", "fourth", "fifth"]).await;
    browser.wait_exact("#stat-lag .stat-value", "5").await;
    let messages = receive(&server, "billing", 10, 0).await;
    assert_eq!(ack(&server, "billing", &messages).await, 5);
    browser.wait_exact("#stat-lag .stat-value", "0").await;
    // The chart drew the way up and down: its top label is the peak.
    browser.wait_text("#lag-chart svg", "5").await;
    let points = browser
        .client
        .execute(
            "return document.querySelector('#lag-chart polyline').getAttribute('points').split(' ').length",
            vec![],
        )
        .await
        .unwrap();
    assert!(points.as_u64().unwrap() >= 3, "{points}");
    browser.screenshot("consumer-1280x800").await;

    // A dead letter, replayed from the console.
    ensure(
        &server,
        "strict",
        json!({"source": {"stream": "orders"}, "max_deliver": 1, "start": "tail"}),
    )
    .await;
    server.append("orders", &["poison"]).await;
    let got = receive(&server, "strict", 1, 1000).await;
    settle(
        &server,
        "strict",
        "nack",
        json!({ "ack_ids": [got[0]["ack_id"]] }),
    )
    .await;
    assert!(
        receive(&server, "strict", 1, 300).await.is_empty(),
        "dead-lettered"
    );
    browser.goto(&format!("{base}/#/b/{BASIN}/q/strict")).await;
    browser.wait_text("#dead-table", "poison").await;
    browser.screenshot("dead-letters-1280x800").await;
    browser
        .client
        .find(fantoccini::Locator::Css("#dead-table button[data-replay]"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    browser.wait_text("#replay-note", "replayed 0").await;
    browser.wait_exact("#stat-pending .stat-value", "1").await;
    let again = receive(&server, "strict", 1, 1000).await;
    assert_eq!(again[0]["record"]["body"], "poison");

    // The basin's page lists all three kinds; the overview charts them.
    browser.goto(&format!("{base}/#/b/{BASIN}")).await;
    browser.wait_text("#consumers", "billing").await;
    browser.wait_text("#collections", "users").await;
    browser.wait_text("#streams", "rec/s").await;
    browser.screenshot("basin-1280x800").await;

    // Made and deleted from the console: a collection and a consumer.
    browser
        .submit("create-collection", &[("collection", "teams")])
        .await;
    browser.wait_text("#collections", "teams").await;
    let config = r#"{"source": {"collection": "teams", "feed": "records"}}"#;
    browser
        .submit(
            "create-consumer",
            &[("consumer", "sync"), ("config", config)],
        )
        .await;
    browser.wait_text("#consumers", "sync").await;
    server
        .get("/v1/consumers/sync")
        .expect_status(StatusCode::OK)
        .await;
    for (table, what, name) in [
        ("consumers", "consumer sync", "sync"),
        ("collections", "collection teams", "teams"),
    ] {
        let button = format!("#{table} button[data-delete=\"{what}\"]");
        browser
            .client
            .find(fantoccini::Locator::Css(&button))
            .await
            .unwrap()
            .click()
            .await
            .unwrap();
        browser.client.accept_alert().await.unwrap();
        // Gone from the page once it has drawn itself again.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        loop {
            let text = match browser
                .client
                .find(fantoccini::Locator::Css(&format!("#{table}")))
                .await
            {
                Ok(el) => el.text().await.unwrap_or_default(),
                Err(_) => String::new(),
            };
            if !text.is_empty() && !text.contains(name) {
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "{name} still listed: {text}"
            );
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
    }
    server
        .get("/v1/collections/teams")
        .expect_error(StatusCode::NOT_FOUND, "collection_not_found")
        .await;
    browser.goto(&format!("{base}/#/")).await;
    browser.wait_text("#basins", BASIN).await;
    browser.screenshot("overview-1280x800").await;

    // A narrow window (a phone): nothing spills sideways.
    browser.resize(390, 844).await;
    for (name, path, shown) in [
        ("overview", "#/".to_string(), "#basins"),
        ("basin", format!("#/b/{BASIN}"), "#consumers"),
        ("stream", format!("#/b/{BASIN}/s/orders"), "#record-table"),
        (
            "collection",
            format!("#/b/{BASIN}/c/users"),
            "#updated-table",
        ),
        ("consumer", format!("#/b/{BASIN}/q/billing"), "#lag-chart"),
    ] {
        browser.goto(&format!("{base}/{path}")).await;
        browser.wait_text(shown, " ").await;
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
    // Not in the page's text, nor left in any field.
    let shown = browser
        .client
        .execute(
            "return document.body.innerText + [...document.querySelectorAll('input, textarea')].map(i => i.value).join(' ')",
            vec![],
        )
        .await
        .unwrap();
    assert!(
        !shown.as_str().unwrap().contains(root),
        "the token shows on the page"
    );
    browser.wait_text("#token-state", "token set").await;
    browser.close().await;
}
