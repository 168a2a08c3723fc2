//! HTTP sources: one Rill keeps a collection equal to another's, polling
//! its `/v1/collections/{c}/updated`, under concurrent writes and deletes
//! upstream, with both sides killed (SIGKILL) and started again mid-way.
//! The cursor lands with the writes it covers, so nothing is skipped and
//! nothing applied twice: at the end the collections are equal, and the
//! downstream's events hold each upstream change of a record at most once.

mod common;

use std::time::{Duration, Instant};

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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_source_replicates_a_collection_from_another_rill_through_kills() {
    let mut upstream = Rill::start_with_collection("users").await;
    let mut downstream = Rill::start_with_collection("unused").await;
    // A backlog before the source exists, read in small pages.
    upstream.write_concurrently("users", 0).await;
    let url = format!("{}/v1/collections/users/updated", upstream.base());
    let made = downstream
        .send(
            "PUT",
            "/v1/sources/from-upstream",
            json!({ "http": {
                "url": url, "collection": "users", "headers": { "s2-basin": BASIN },
                "limit": 7, "poll_interval_ms": 50, "max_backoff_ms": 200
            }}),
        )
        .await;
    assert_eq!(made["config"]["http"]["header_names"], json!(["s2-basin"]));
    // Writes go on while it polls; each side is killed in the middle.
    upstream.write_concurrently("users", 1).await;
    downstream.kill_and_restart();
    upstream.write_concurrently("users", 2).await;
    upstream.kill_and_restart_in_place();
    upstream.write_concurrently("users", 3).await;
    downstream.kill_and_restart();
    upstream.write_concurrently("users", 4).await;

    let wanted: Vec<(String, Value)> = upstream
        .records("users")
        .await
        .into_iter()
        .map(|(id, (data, _))| (id, data))
        .collect();
    assert!(wanted.len() > 10, "{}", wanted.len());
    converges("the replicated collection", wanted, || async {
        downstream
            .records("users")
            .await
            .into_iter()
            .map(|(id, (data, _))| (id, data))
            .collect::<Vec<_>>()
    })
    .await;
    let shown = caught_up(&downstream, "from-upstream").await;
    let changes = shown["state"]["changes"].as_u64().unwrap();
    assert!(changes > 0, "{shown}");

    // Nothing applied twice: a record's versions downstream never outnumber
    // its changes upstream (an upstream change the downstream saw twice
    // would be a second version only if its data differed, which a
    // replay's cannot: so count events, which every write makes).
    let count = |events: Vec<(String, String, u64)>| {
        let mut per_id = std::collections::BTreeMap::<String, usize>::new();
        for (_, id, _) in events {
            *per_id.entry(id).or_default() += 1;
        }
        per_id
    };
    let up = count(upstream.events("users").await);
    let down = count(downstream.events("users").await);
    for (id, n) in &down {
        assert!(
            up.get(id).is_some_and(|u| n <= u),
            "{id}: {n} changes downstream, {:?} upstream",
            up.get(id)
        );
    }
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
    let rill = |args: Vec<String>| {
        let server = &server;
        async move {
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            common::cli::run_rill(server, &args, "").await
        }
    };
    let args = |list: &[&str]| list.iter().map(|a| a.to_string()).collect::<Vec<_>>();
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
    let ran = rill(args(&["sources", "create", "copier", "--config", &config])).await;
    assert_eq!(ran.code, Some(0), "{}", ran.err);
    let ran = rill(args(&["sources", "create", "nothing"])).await;
    assert_eq!(ran.code, Some(2), "a source needs a config: {}", ran.err);
    let ran = rill(args(&["sources", "list"])).await;
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
    let ran = rill(args(&["sources", "get", "copier", "--json"])).await;
    assert!(!ran.out.contains("cli-secret"), "{}", ran.out);
    let shown: Value = serde_json::from_str(ran.out.trim()).unwrap();
    assert!(shown["state"]["changes"].as_u64().unwrap() >= 1, "{shown}");
    let ran = rill(args(&[
        "sources",
        "reconfigure",
        "copier",
        "--config",
        "{}",
    ]))
    .await;
    assert_eq!(ran.code, Some(2), "a source cannot change: {}", ran.err);
    let ran = rill(args(&["sources", "delete", "copier"])).await;
    assert_eq!(ran.code, Some(0), "{}", ran.err);
    let ran = rill(args(&["sources", "get", "copier"])).await;
    assert_eq!(ran.code, Some(3), "not found: {}", ran.err);
}
