//! HTTP sources: one Rill keeps a collection equal to another's, polling
//! its `/v1/collections/{c}/updated`, under concurrent writes and deletes
//! upstream, with both sides killed (SIGKILL) and started again mid-way.
//! The cursor lands with the writes it covers, so nothing is skipped and
//! nothing applied twice: at the end the collections are equal, and the
//! downstream's events hold each upstream change of a record at most once.

mod common;

use std::time::{Duration, Instant};

use common::cli::run_rill;
use common::sink_scenario::{converges, Rill};
use common::BASIN;
use serde_json::{json, Value};

/// Waits until the source has caught up once (bounded).
async fn caught_up(rill: &Rill, source: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let shown = rill.get(&format!("/v1/sources/{source}")).await;
        if shown["state"]["state"] == "caught_up" {
            return shown;
        }
        assert!(Instant::now() < deadline, "{shown}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Round `round` of writes upstream: three writers at once, each making
/// 30 batches of 4 new records and deleting one record of the round
/// before (new ids every round, so a change skipped stays missing).
async fn write_round(rill: &Rill, round: usize) {
    rill.write_batches("users", 30, move |w, i| {
        let upserts: Vec<Value> = (0..4)
            .map(|j| {
                json!({ "id": format!("r{round}w{w}i{i}j{j}"),
                        "data": { "round": round, "w": w, "i": i, "j": j } })
            })
            .collect();
        let gone = (round > 0).then(|| format!("r{}w{w}i{i}j0", round - 1));
        (Value::Array(upserts), gone)
    })
    .await
}

/// The collection's live records, id → data.
async fn contents(rill: &Rill) -> Vec<(String, Value)> {
    rill.records("users")
        .await
        .into_iter()
        .map(|(id, (data, _))| (id, data))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_source_replicates_a_collection_from_another_rill_through_kills() {
    let mut upstream = Rill::start_with_collection("users").await;
    let mut downstream = Rill::start_with_collection("unused").await;
    let url = format!("{}/v1/collections/users/updated", upstream.base());
    let made = downstream
        .send(
            "PUT",
            "/v1/sources/from-upstream",
            json!({ "http": {
                "url": url, "collection": "users", "headers": { "s2-basin": BASIN },
                "limit": 7, "poll_interval_ms": 50, "max_backoff_ms": 200,
                "max_requests_per_second": 1000
            }}),
        )
        .await;
    assert_eq!(made["config"]["http"]["header_names"], json!(["s2-basin"]));
    // An empty upstream is caught up with, not failed on.
    caught_up(&downstream, "from-upstream").await;

    // While the downstream is down: records made and deleted (its first
    // pages are then deletes of records it never held), and a backlog.
    downstream.kill();
    for i in 0..20 {
        let path = format!("/v1/collections/users/records/gone{i}");
        upstream.send("PUT", &path, json!({ "n": i })).await;
    }
    let gone: Vec<String> = (0..20).map(|i| format!("gone{i}")).collect();
    upstream
        .send(
            "POST",
            "/v1/collections/users/records",
            json!({ "deletes": gone }),
        )
        .await;
    write_round(&upstream, 0).await;
    let total = upstream.records("users").await.len() as u64;
    downstream.start();
    // Killed in the middle of the backlog.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let changes = downstream.get("/v1/sources/from-upstream").await["state"]["changes"]
            .as_u64()
            .unwrap();
        if changes > 20 && changes < total {
            downstream.kill_and_restart();
            break;
        }
        assert!(
            changes < total,
            "the kill came too late: {changes} of {total}"
        );
        assert!(Instant::now() < deadline, "the source makes no progress");
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    // Writes go on while it polls; each side is killed in the middle.
    write_round(&upstream, 1).await;
    upstream.kill_and_restart_in_place();
    write_round(&upstream, 2).await;
    downstream.kill_and_restart();
    write_round(&upstream, 3).await;
    downstream.kill_and_restart();

    let wanted = contents(&upstream).await;
    assert!(wanted.len() > 300, "{}", wanted.len());
    converges("the replicated collection", wanted, || {
        contents(&downstream)
    })
    .await;
    let shown = caught_up(&downstream, "from-upstream").await;
    assert!(shown["state"]["changes"].as_u64().unwrap() > 0, "{shown}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sources_check_their_settings_keep_secrets_and_cannot_change() {
    let rill = Rill::start_with_collection("unused").await;
    let put = |name: &str, body: Value| {
        let request = rill
            .http
            .put(format!("{}/v1/sources/{name}", rill.base()))
            .header("s2-basin", BASIN)
            .json(&body);
        async move { request.send().await.unwrap() }
    };
    for bad in [
        json!({ "http": { "url": "ftp://x", "collection": "c" } }),
        json!({ "http": { "url": "http://127.0.0.1:1/u", "collection": "" } }),
        json!({ "http": { "url": "http://127.0.0.1:1/u", "collection": "c", "limit": 0 } }),
        json!({ "http": { "url": "http://127.0.0.1:1/u", "collection": "c", "limit": 5000 } }),
        json!({ "http": { "url": "http://127.0.0.1:1/u", "collection": "c",
            "pointers": { "records": "records" } } }),
        json!({ "http": { "url": "http://127.0.0.1:1/u", "collection": "c",
            "headers": { "bad header": "x" } } }),
        json!({ "http": { "url": "http://127.0.0.1:1/u", "collection": "c", "stray": 1 } }),
        json!({ "kafka": {} }),
    ] {
        let resp = put("s", bad.clone()).await;
        // 400 for a shape that does not parse, 422 for a value out of range.
        assert!(resp.status().is_client_error(), "{bad}: {}", resp.status());
        let body: Value = resp.json().await.unwrap();
        assert!(body["code"].is_string(), "{bad}: {body}");
    }
    let config = json!({ "http": {
        "url": "http://u:hunter2@127.0.0.1:1/v1/collections/c/updated?key=k3y",
        "collection": "mirror", "headers": { "Authorization": "Bearer t0ken" },
        "timeout_ms": 200, "poll_interval_ms": 50, "max_backoff_ms": 100
    }});
    assert_eq!(put("s", config.clone()).await.status(), 201);
    assert_eq!(put("s", config.clone()).await.status(), 200);
    let mut other = config.clone();
    other["http"]["limit"] = json!(10);
    let resp = put("s", other).await;
    assert_eq!(resp.status(), 409);
    assert_eq!(
        resp.json::<Value>().await.unwrap()["code"],
        "source_conflict"
    );
    // Its collection was made; the upstream is down, which the state says,
    // without a secret.
    rill.get("/v1/collections/mirror").await;
    let deadline = Instant::now() + Duration::from_secs(30);
    let shown = loop {
        let shown = rill.get("/v1/sources/s").await;
        if shown["state"]["state"] == "failing" {
            break shown;
        }
        assert!(Instant::now() < deadline, "{shown}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let text = shown.to_string();
    for secret in ["hunter2", "t0ken", "k3y"] {
        assert!(!text.contains(secret), "{text}");
    }
    assert!(shown["state"]["last_error"].is_string(), "{shown}");
    let listed = rill.get("/v1/sources").await;
    assert_eq!(listed["sources"].as_array().unwrap().len(), 1);
    let resp = rill
        .http
        .delete(format!("{}/v1/sources/s", rill.base()))
        .header("s2-basin", BASIN)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 204);
    let resp = rill
        .http
        .get(format!("{}/v1/sources/s", rill.base()))
        .header("s2-basin", BASIN)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 404);
}

/// The CLI makes, shows, lists and deletes sources; one pointed at its own
/// server's `/updated` copies a collection into another.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_manages_sources() {
    let server = common::TestServer::start().await;
    server.with_stream("unused").await; // and the basin
    server
        .put("/v1/collections/origin")
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    server
        .put("/v1/collections/origin/records/a")
        .json(&json!({ "n": 1 }))
        .send()
        .await
        .unwrap();
    let config = json!({ "http": {
        "url": format!("{}/v1/collections/origin/updated", server.base),
        "collection": "copy",
        "headers": { "s2-basin": BASIN, "x-api-key": "cli-secret" },
        "poll_interval_ms": 50
    }})
    .to_string();
    let ran = run_rill(
        &server,
        &["sources", "create", "copier", "--config", &config],
        "",
    )
    .await;
    assert_eq!(ran.code, Some(0), "{}", ran.err);
    let ran = run_rill(&server, &["sources", "create", "nothing"], "").await;
    assert_eq!(ran.code, Some(2), "a source needs a config: {}", ran.err);
    let ran = run_rill(&server, &["sources", "list"], "").await;
    assert!(
        ran.out.contains("copier") && ran.out.contains("copy"),
        "{}",
        ran.out
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let resp = server
            .get("/v1/collections/copy/records/a")
            .send()
            .await
            .unwrap();
        if resp.status() == 200 {
            let record: Value = resp.json().await.unwrap();
            assert_eq!(record["data"], json!({ "n": 1 }));
            break;
        }
        assert!(Instant::now() < deadline, "the record is copied");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let ran = run_rill(&server, &["sources", "get", "copier", "--json"], "").await;
    assert!(!ran.out.contains("cli-secret"), "{}", ran.out);
    let shown: Value = serde_json::from_str(ran.out.trim()).unwrap();
    assert!(shown["state"]["changes"].as_u64().unwrap() >= 1, "{shown}");
    let ran = run_rill(
        &server,
        &["sources", "reconfigure", "copier", "--config", "{}"],
        "",
    )
    .await;
    assert_eq!(ran.code, Some(2), "a source cannot change: {}", ran.err);
    let ran = run_rill(&server, &["sources", "delete", "copier"], "").await;
    assert_eq!(ran.code, Some(0), "{}", ran.err);
    let ran = run_rill(&server, &["sources", "get", "copier"], "").await;
    assert_eq!(ran.code, Some(3), "not found: {}", ran.err);
}

/// An upstream that answers 429 with `Retry-After: 2` is left alone that
/// long (not asked again at the backoff's 100 ms), then read.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_source_waits_as_long_as_the_upstream_asks() {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    let asked = Arc::new(AtomicUsize::new(0));
    let counting = asked.clone();
    let app = axum::Router::new().route(
        "/changes",
        axum::routing::get(move || {
            let asked = counting.clone();
            async move {
                use axum::response::IntoResponse;
                match asked.fetch_add(1, Ordering::SeqCst) {
                    0 => (
                        axum::http::StatusCode::TOO_MANY_REQUESTS,
                        [("retry-after", "2")],
                        "slow down",
                    )
                        .into_response(),
                    _ => axum::Json(json!({
                        "records": [{ "id": "a", "data": { "n": 1 }, "updated_at": 1 }],
                        "cursor": "next"
                    }))
                    .into_response(),
                }
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/changes", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });

    let rill = Rill::start_with_collection("unused").await;
    let started = Instant::now();
    rill.send(
        "PUT",
        "/v1/sources/polite",
        json!({ "http": { "url": url, "collection": "copy",
            "poll_interval_ms": 50, "max_backoff_ms": 100 } }),
    )
    .await;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let resp = rill
            .http
            .get(format!("{}/v1/collections/copy/records/a", rill.base()))
            .header("s2-basin", BASIN)
            .send()
            .await
            .unwrap();
        if resp.status() == 200 {
            break;
        }
        assert!(Instant::now() < deadline, "the record is read");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        started.elapsed() >= Duration::from_millis(1900),
        "asked again after {:?}",
        started.elapsed()
    );
    assert!(asked.load(Ordering::SeqCst) >= 2);
}
