//! `GET /metrics`: every figure moves by exactly what was done, state
//! figures say what is open now, and the endpoint is guarded as the
//! account's metrics are (or open, on `--metrics-listen`).

mod common;

use std::sync::Arc;

use common::prometheus::{metered, scrape, Scrape};
use common::{SseReader, TestServer, BASIN};
use reqwest::{Method, StatusCode};
use rill::engine::Engine;
use rill::metrics::Metrics;
use rill::storage::FjallStorage;
use serde_json::json;

#[tokio::test]
async fn appends_reads_and_commits_are_counted_exactly() {
    let server = TestServer::start().await;
    server.with_stream("s").await;
    let before = scrape(&server).await;
    let basin = [("basin", BASIN)];
    assert_eq!(before.find("rill_appends_total", &basin), None);

    server.append("s", &["a", "bb", "ccc"]).await;
    server.append("s", &["dddd"]).await;
    let after = scrape(&server).await;
    assert_eq!(after.get("rill_appends_total", &basin), 2.0);
    assert_eq!(after.get("rill_appended_records_total", &basin), 4.0);
    let bytes: f64 = ["a", "bb", "ccc", "dddd"].into_iter().map(metered).sum();
    assert_eq!(after.get("rill_appended_bytes_total", &basin), bytes);
    assert_eq!(after.get("rill_append_ack_seconds_count", &basin), 2.0);
    // Per basin only, unless asked for.
    assert!(!after.has("rill_stream_appends_total"));
    // Every durable write went through one group commit or more.
    let commits = after.get("rill_storage_write_seconds_count", &[]);
    assert!(commits >= 2.0, "{commits} commits");
    assert_eq!(after.get("rill_commit_group_writes_count", &[]), commits);

    let read = server.read_bodies("s", "seq_num=1&count=2").await;
    assert_eq!(read, ["bb", "ccc"]);
    let after_read = scrape(&server).await;
    assert_eq!(after_read.get("rill_read_records_total", &basin), 2.0);
    assert_eq!(
        after_read.get("rill_read_bytes_total", &basin),
        metered("bb") + metered("ccc")
    );

    // Requests by route template (never by path), errors by code.
    let route = [
        ("method", "POST"),
        ("route", "/v1/streams/{stream}/records"),
        ("status", "200"),
    ];
    assert_eq!(after_read.get("rill_http_requests_total", &route), 2.0);
    let missing = server
        .get("/v1/streams/nope/records?seq_num=0")
        .send()
        .await
        .unwrap();
    assert_eq!(missing.status(), StatusCode::NOT_FOUND);
    let unknown = server.get("/v2/whatever").send().await.unwrap();
    assert_eq!(unknown.status(), StatusCode::NOT_FOUND);
    let errors = scrape(&server).await;
    assert_eq!(
        errors.get("rill_errors_total", &[("code", "stream_not_found")]),
        1.0
    );
    assert_eq!(
        errors.get(
            "rill_http_requests_total",
            &[("route", "/v1/streams/{stream}/records"), ("status", "404")]
        ),
        1.0
    );
    assert_eq!(
        errors.get("rill_http_requests_total", &[("route", "unmatched")]),
        1.0
    );
    assert_eq!(
        errors.get("rill_errors_total", &[("code", "not_found")]),
        1.0
    );
    // A made-up method is counted as `other`, not as a label of its own.
    let odd = reqwest::Method::from_bytes(b"FROBNICATE").unwrap();
    let resp = server.bare(odd, "/v1/basins").send().await.unwrap();
    assert!(resp.status().is_client_error());
    let odd = scrape(&server).await;
    assert_eq!(
        odd.get("rill_http_requests_total", &[("method", "other")]),
        1.0
    );
    assert!(!odd
        .0
        .iter()
        .any(|(_, labels, _)| labels.get("method").is_some_and(|m| m == "FROBNICATE")));
    assert!(errors.get("process_resident_memory_bytes", &[]) > 0.0);
    assert!(errors.get("rill_uptime_seconds", &[]) > 0.0);
}

#[tokio::test]
async fn sessions_and_connections_are_what_is_open_now() {
    let server = TestServer::start().await;
    server.with_stream("s").await;
    let idle = scrape(&server).await;
    assert_eq!(idle.get("rill_sessions_open", &[("kind", "read")]), 0.0);
    let connections = idle.get("rill_connections_open", &[]);
    assert!(connections >= 1.0);
    // A client of its own: one more connection while it lives.
    let other = reqwest::Client::new();
    let resp = other.get(server.url("/health")).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(
        scrape(&server).await.get("rill_connections_open", &[]),
        connections + 1.0
    );
    drop(other);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while scrape(&server).await.get("rill_connections_open", &[]) != connections {
        assert!(
            std::time::Instant::now() < deadline,
            "the connection stayed counted"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }

    let mut session = SseReader::open(server.sse_request("s", "seq_num=0")).await;
    server.append("s", &["live"]).await;
    // The session delivered the record: it is open, and counted as read.
    loop {
        let event = session.next().await.expect("the session goes on");
        if event.event.as_deref() == Some("batch") {
            break;
        }
    }
    let open = scrape(&server).await;
    assert_eq!(open.get("rill_sessions_open", &[("kind", "read")]), 1.0);
    assert_eq!(
        open.get("rill_read_records_total", &[("basin", BASIN)]),
        1.0
    );
    drop(session);
    // The server notices the client left at its next write or heartbeat;
    // the gauge follows within the heartbeat gap.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let now = scrape(&server).await;
        if now.get("rill_sessions_open", &[("kind", "read")]) == 0.0 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the session stayed open"
        );
        server.append("s", &["nudge"]).await;
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn collection_writes_and_pages_are_counted() {
    let server = TestServer::start().await;
    server.create_basin(BASIN).await;
    let resp = server.put("/v1/collections/users").send().await.unwrap();
    assert!(resp.status().is_success());
    let resp = server
        .post("/v1/collections/users/records")
        .json(&json!({ "upserts": [
            { "id": "a", "data": { "n": 1 } },
            { "id": "b", "data": { "n": 2 } },
            { "id": "c", "data": { "n": 3 } },
        ] }))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let resp = server
        .put("/v1/collections/users/records/a")
        .json(&json!({ "n": 4 }))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let page = server
        .get("/v1/collections/users/updated?limit=2")
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), StatusCode::OK);
    let counted = scrape(&server).await;
    let basin = [("basin", BASIN)];
    assert_eq!(counted.get("rill_collection_writes_total", &basin), 2.0);
    assert_eq!(
        counted.get("rill_collection_written_records_total", &basin),
        4.0
    );
    assert_eq!(counted.get("rill_updated_pages_total", &basin), 1.0);

    // A write that changes nothing is a write, of no records.
    let resp = server
        .put("/v1/collections/users/records/b")
        .json(&json!({ "n": 2 }))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let again = scrape(&server).await;
    assert_eq!(again.get("rill_collection_writes_total", &basin), 3.0);
    assert_eq!(
        again.get("rill_collection_written_records_total", &basin),
        4.0
    );
}

#[tokio::test]
async fn per_stream_figures_on_request_and_storage_size_on_disk() {
    let dir = tempfile::tempdir().unwrap();
    let storage = Arc::new(FjallStorage::open(dir.path()).unwrap());
    let engine = Engine::open_with_metrics(storage, Arc::new(Metrics::new(true))).unwrap();
    let server = TestServer::start_engine(engine, Default::default()).await;
    server.with_stream("one").await;
    server.ensure_stream("two").await;
    server.append("one", &["x"]).await;
    server.append("two", &["y", "z"]).await;
    let scrape1 = scrape(&server).await;
    let of = |stream| [("basin", BASIN), ("stream", stream)];
    assert_eq!(
        scrape1.get("rill_stream_appended_records_total", &of("one")),
        1.0
    );
    assert_eq!(
        scrape1.get("rill_stream_appended_records_total", &of("two")),
        2.0
    );
    assert_eq!(
        scrape1.get("rill_appended_records_total", &[("basin", BASIN)]),
        3.0
    );
    assert!(scrape1.get("rill_storage_bytes", &[]) > 0.0);

    // A deleted stream's own series go; the basin's keep what it did.
    let resp = server.delete("/v1/streams/two").send().await.unwrap();
    assert!(resp.status().is_success());
    let scrape2 = scrape(&server).await;
    assert!(!scrape2
        .0
        .iter()
        .any(|(name, labels, _)| name.starts_with("rill_stream_")
            && labels.get("stream").map(String::as_str) == Some("two")));
    assert_eq!(
        scrape2.get("rill_appended_records_total", &[("basin", BASIN)]),
        3.0
    );
    assert_eq!(
        scrape2.get("rill_stream_appended_records_total", &of("one")),
        1.0
    );

    // A deleted basin's series go, its streams' too.
    let resp = server
        .bare(Method::DELETE, &format!("/v1/basins/{BASIN}"))
        .send()
        .await
        .unwrap();
    assert!(resp.status().is_success());
    let scrape3 = scrape(&server).await;
    assert!(!scrape3
        .0
        .iter()
        .any(|(_, labels, _)| labels.get("basin").map(String::as_str) == Some(BASIN)));
}

#[tokio::test]
async fn metrics_need_the_account_metrics_permission_or_their_own_listener() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let metrics_addr = listener.local_addr().unwrap();
    let options = rill::server::ServerOptions {
        auth: rill::api::Auth::with_root_token("root-secret"),
        metrics_listener: Some(listener),
        ..Default::default()
    };
    let server =
        TestServer::start_with(Arc::new(rill::storage::MemoryStorage::default()), options).await;
    let anonymous = server.bare(Method::GET, "/metrics").send().await.unwrap();
    assert_eq!(anonymous.status(), StatusCode::UNAUTHORIZED);
    let root = server
        .bare(Method::GET, "/metrics")
        .bearer_auth("root-secret")
        .send()
        .await
        .unwrap();
    assert_eq!(root.status(), StatusCode::OK);
    assert!(root.text().await.unwrap().contains("rill_uptime_seconds"));

    // The metrics listener serves /metrics to anyone, and nothing else.
    let open = server
        .client
        .get(format!("http://{metrics_addr}/metrics"))
        .send()
        .await
        .unwrap();
    assert_eq!(open.status(), StatusCode::OK);
    let counted = Scrape::parse(&open.text().await.unwrap());
    // The refused request above was counted, by its code.
    assert_eq!(
        counted.get("rill_errors_total", &[("code", "unauthenticated")]),
        1.0
    );
    let api = server
        .client
        .get(format!("http://{metrics_addr}/v1/basins"))
        .send()
        .await
        .unwrap();
    assert_eq!(api.status(), StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn the_alerting_rules_name_only_metrics_rill_serves() {
    let rules = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/docs/prometheus-alerts.yml"
    ))
    .unwrap();
    // Activity, so that every family has a series (a counter not yet
    // counted has none): an append, a read, an error, a consumer.
    let server = TestServer::start().await;
    server.with_stream("s").await;
    server.append("s", &["x"]).await;
    server.read_bodies("s", "seq_num=0").await;
    let missing = server.get("/v1/streams/nope").send().await.unwrap();
    assert_eq!(missing.status(), StatusCode::NOT_FOUND);
    let resp = server
        .put("/v1/consumers/c")
        .json(&json!({ "source": { "stream": "s" } }))
        .send()
        .await
        .unwrap();
    assert!(resp.status().is_success());
    let served = scrape(&server).await;
    let names: std::collections::BTreeSet<&str> = rules
        .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .filter(|word| word.starts_with("rill_"))
        .collect();
    assert!(names.len() >= 6, "{names:?}");
    for name in names {
        let base = name.strip_suffix("_bucket").unwrap_or(name);
        assert!(
            served.has(name) || served.has(&format!("{base}_bucket")),
            "docs/prometheus-alerts.yml names {name}, which Rill does not serve"
        );
    }
}
