//! Collections over HTTP: records, the `/updated` cursor and the events
//! stream, including the cursor guarantee under concurrent writers.

mod common;

use std::collections::{BTreeMap, HashSet};
use std::time::Duration;

use common::*;
use reqwest::StatusCode;
use serde_json::{json, Value};

async fn ensure_collection(server: &TestServer, name: &str) -> Value {
    server.create_basin(BASIN).await;
    let resp = server
        .put(&format!("/v1/collections/{name}"))
        .send()
        .await
        .unwrap();
    assert!(
        resp.status().is_success(),
        "ensure collection: {}",
        resp.status()
    );
    resp.json().await.unwrap()
}

async fn put(server: &TestServer, coll: &str, id: &str, data: Value) -> Value {
    let resp = server
        .put(&format!("/v1/collections/{coll}/records/{id}"))
        .json(&data)
        .send()
        .await
        .unwrap();
    expect_status(resp, StatusCode::OK).await
}

async fn updated(server: &TestServer, coll: &str, query: &str) -> Value {
    // A write shows on /updated once its millisecond is closed, which can
    // take up to 1 ms when writes come faster than one per millisecond.
    tokio::time::sleep(Duration::from_millis(3)).await;
    let resp = server
        .get(&format!("/v1/collections/{coll}/updated?{query}"))
        .send()
        .await
        .unwrap();
    expect_status(resp, StatusCode::OK).await
}

fn ids(page: &Value) -> Vec<String> {
    page["records"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["id"].as_str().unwrap().to_string())
        .collect()
}

#[tokio::test]
async fn collection_lifecycle_and_records() {
    let server = TestServer::start().await;
    let info = ensure_collection(&server, "users").await;
    assert_eq!(info["name"], "users");
    assert_eq!(info["events_stream"], "_collections/users/events");
    let resp = server.put("/v1/collections/users").send().await.unwrap();
    assert_eq!(resp.headers()["s2-provision-result"], "noop");
    let resp = server
        .put("/v1/collections/users")
        .json(&json!({"tombstone_retention_secs": 60}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.headers()["s2-provision-result"], "updated");
    let got = expect_status(
        server.get("/v1/collections/users").send().await.unwrap(),
        StatusCode::OK,
    )
    .await;
    assert_eq!(got["config"]["tombstone_retention_secs"], 60);
    let list = expect_status(
        server.get("/v1/collections").send().await.unwrap(),
        StatusCode::OK,
    )
    .await;
    assert_eq!(list["collections"][0]["name"], "users");

    // Create, update, read back.
    let created = put(
        &server,
        "users",
        "u1",
        json!({"name": "Ada", "plan": "free"}),
    )
    .await;
    assert_eq!(created["version"], 1);
    assert_eq!(created["deleted"], false);
    assert_eq!(created["created_at"], created["updated_at"]);
    let updated_rec = put(
        &server,
        "users",
        "u1",
        json!({"name": "Ada", "plan": "pro"}),
    )
    .await;
    assert_eq!(updated_rec["version"], 2);
    assert!(updated_rec["updated_at"].as_u64() >= created["updated_at"].as_u64());
    let same = put(
        &server,
        "users",
        "u1",
        json!({"name": "Ada", "plan": "pro"}),
    )
    .await;
    assert_eq!(same["version"], 2, "an identical upsert changes nothing");
    let got = expect_status(
        server
            .get("/v1/collections/users/records/u1")
            .send()
            .await
            .unwrap(),
        StatusCode::OK,
    )
    .await;
    assert_eq!(got["data"], json!({"name": "Ada", "plan": "pro"}));

    // Optimistic concurrency.
    let resp = server
        .put("/v1/collections/users/records/u1?expected_version=1")
        .json(&json!({"name": "stale"}))
        .send()
        .await
        .unwrap();
    expect_error(resp, StatusCode::PRECONDITION_FAILED, "version_mismatch").await;
    let resp = server
        .put("/v1/collections/users/records/u2?expected_version=0")
        .json(&json!({"name": "Grace"}))
        .send()
        .await
        .unwrap();
    expect_status(resp, StatusCode::OK).await;

    // Delete leaves a tombstone; deleting again is a 404.
    let resp = server
        .delete("/v1/collections/users/records/u2")
        .send()
        .await
        .unwrap();
    let tomb = expect_status(resp, StatusCode::OK).await;
    assert_eq!(tomb["deleted"], true);
    assert_eq!(tomb["version"], 2);
    let resp = server
        .delete("/v1/collections/users/records/u2")
        .send()
        .await
        .unwrap();
    expect_error(resp, StatusCode::NOT_FOUND, "record_not_found").await;
    let page = updated(&server, "users", "").await;
    assert_eq!(ids(&page), ["u1", "u2"]);
    assert_eq!(page["records"][1]["deleted"], true);

    // Batches are atomic: one bad op, nothing applied.
    let resp = server
        .post("/v1/collections/users/records")
        .json(&json!({"upserts": [{"id": "u3", "data": {"n": 3}}], "deletes": ["missing"]}))
        .send()
        .await
        .unwrap();
    expect_error(resp, StatusCode::NOT_FOUND, "record_not_found").await;
    let resp = server
        .get("/v1/collections/users/records/u3")
        .send()
        .await
        .unwrap();
    expect_error(resp, StatusCode::NOT_FOUND, "record_not_found").await;
    let resp = server
        .post("/v1/collections/users/records")
        .json(&json!({"upserts": [{"id": "u3", "data": {"n": 3}}, {"id": "u4", "data": {"n": 4}}], "deletes": ["u1"]}))
        .send()
        .await
        .unwrap();
    let out = expect_status(resp, StatusCode::OK).await;
    assert_eq!(out["records"].as_array().unwrap().len(), 3);

    // Delete the collection: gone, and its events stream too.
    let resp = server.delete("/v1/collections/users").send().await.unwrap();
    expect_status(resp, StatusCode::ACCEPTED).await;
    let resp = server.get("/v1/collections/users").send().await.unwrap();
    expect_error(resp, StatusCode::NOT_FOUND, "collection_not_found").await;
    let resp = server
        .get("/v1/streams/_collections%2Fusers%2Fevents")
        .send()
        .await
        .unwrap();
    expect_error(resp, StatusCode::NOT_FOUND, "stream_not_found").await;
}

#[tokio::test]
async fn bad_input_writes_nothing() {
    let server = TestServer::start().await;
    ensure_collection(&server, "c").await;
    let put_raw = |id: &str, body: &'static str| {
        server
            .put(&format!("/v1/collections/c/records/{id}"))
            .header("content-type", "application/json")
            .body(body)
            .send()
    };
    expect_error(
        put_raw("a", "[1,2]").await.unwrap(),
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid",
    )
    .await;
    expect_error(
        put_raw("a", "\"text\"").await.unwrap(),
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid",
    )
    .await;
    expect_error(
        put_raw("a", "{oops").await.unwrap(),
        StatusCode::BAD_REQUEST,
        "bad_json",
    )
    .await;
    let long_id = "x".repeat(513);
    expect_error(
        put_raw(&long_id, "{}").await.unwrap(),
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid",
    )
    .await;
    let big = json!({ "blob": "x".repeat(300 * 1024) });
    let resp = server
        .put("/v1/collections/c/records/big")
        .json(&big)
        .send()
        .await
        .unwrap();
    expect_error(resp, StatusCode::UNPROCESSABLE_ENTITY, "invalid").await;
    let resp = server
        .post("/v1/collections/c/records")
        .json(&json!({"upserts": [{"id": "d", "data": {}}, {"id": "d", "data": {}}]}))
        .send()
        .await
        .unwrap();
    expect_error(resp, StatusCode::UNPROCESSABLE_ENTITY, "invalid").await;
    let resp = server
        .post("/v1/collections/c/records")
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    expect_error(resp, StatusCode::UNPROCESSABLE_ENTITY, "invalid").await;
    let resp = server
        .put("/v1/collections/nope/records/a")
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    expect_error(resp, StatusCode::NOT_FOUND, "collection_not_found").await;
    for query in [
        "cursor=%%%",
        "cursor=bm90IGpzb24",
        "updated_after=yesterday",
        "after_id=x",
        "limit=0",
        "limit=5000",
    ] {
        let resp = server
            .get(&format!("/v1/collections/c/updated?{query}"))
            .send()
            .await
            .unwrap();
        expect_error(resp, StatusCode::UNPROCESSABLE_ENTITY, "invalid").await;
    }
    // The events stream is written only through the collection.
    let resp = server
        .post("/v1/streams/_collections%2Fc%2Fevents/records")
        .json(&json!({"records": [{"body": "forged"}]}))
        .send()
        .await
        .unwrap();
    expect_error(resp, StatusCode::UNPROCESSABLE_ENTITY, "invalid").await;
    assert_eq!(ids(&updated(&server, "c", "").await), Vec::<String>::new());
}

#[tokio::test]
async fn updated_cursor_pages_and_resumes() {
    let server = TestServer::start().await;
    ensure_collection(&server, "c").await;
    let upserts: Vec<Value> = (0..10)
        .map(|i| json!({"id": format!("r{i:02}"), "data": {"i": i}}))
        .collect();
    let resp = server
        .post("/v1/collections/c/records")
        .json(&json!({"upserts": upserts}))
        .send()
        .await
        .unwrap();
    expect_status(resp, StatusCode::OK).await;
    // One bulk write: all ten share an updated_at; ids break the tie.
    let page = updated(&server, "c", "limit=4").await;
    assert_eq!(ids(&page), ["r00", "r01", "r02", "r03"]);
    let t = page["next"]["updated_after"].as_u64().unwrap();
    let page2 = updated(
        &server,
        "c",
        &format!("updated_after={t}&after_id=r03&limit=4"),
    )
    .await;
    assert_eq!(ids(&page2), ["r04", "r05", "r06", "r07"]);
    let token = page2["cursor"].as_str().unwrap();
    let page3 = updated(&server, "c", &format!("cursor={token}")).await;
    assert_eq!(ids(&page3), ["r08", "r09"]);
    // Caught up: an empty page keeps the cursor.
    let token = page3["cursor"].as_str().unwrap().to_string();
    let empty = updated(&server, "c", &format!("cursor={token}")).await;
    assert_eq!(ids(&empty), Vec::<String>::new());
    assert_eq!(empty["cursor"], token.as_str());
    // An update moves a record to the end of the stream.
    put(&server, "c", "r01", json!({"i": 100})).await;
    let after = updated(&server, "c", &format!("cursor={token}")).await;
    assert_eq!(ids(&after), ["r01"]);
    // RFC 3339 works as a starting point.
    let all = updated(&server, "c", "updated_after=1970-01-01T00:00:00Z&limit=100").await;
    assert_eq!(all["records"].as_array().unwrap().len(), 10);
}

/// The cursor guarantee: pagers that read while writers write never miss a
/// record's latest change and never see the same change twice, even with
/// page size 1 and thousands of records sharing one `updated_at`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_writers_and_pagers_never_skip_or_repeat() {
    let server = TestServer::start().await;
    ensure_collection(&server, "hot").await;
    let base = server.base.clone();
    let client = server.client.clone();

    let writers: Vec<_> = (0..3)
        .map(|w| {
            let (base, client) = (base.clone(), client.clone());
            tokio::spawn(async move {
                let url = format!("{base}/v1/collections/hot/records");
                for round in 0..40 {
                    // Bulk writes (many records, one updated_at) mixed with
                    // updates of a small hot set of ids.
                    // Every round also writes one record that is never
                    // written again, with an id that sorts first: if a
                    // pager ever skipped it, no later version could hide it.
                    let mut upserts: Vec<Value> = if round % 5 == 0 {
                        (0..500).map(|i| json!({"id": format!("w{w}-bulk-{round}-{i:03}"), "data": {"round": round}})).collect()
                    } else {
                        (0..3).map(|i| json!({"id": format!("hot-{i}"), "data": {"w": w, "round": round}})).collect()
                    };
                    upserts.push(json!({"id": format!("a{w}-{round:02}"), "data": {"once": true}}));
                    let resp = client.post(&url).header("s2-basin", BASIN).json(&json!({"upserts": upserts})).send().await.unwrap();
                    assert!(resp.status().is_success());
                }
            })
        })
        .collect();

    let (writers_done, done_rx) = tokio::sync::watch::channel(false);
    let pager = |limit: usize| {
        let (base, client, done) = (base.clone(), client.clone(), done_rx.clone());
        tokio::spawn(async move {
            pager::page_until_done(&client, &base, (BASIN, "hot"), limit, done).await
        })
    };
    let pagers = vec![pager(1), pager(7), pager(1000)];
    for w in writers {
        w.await.unwrap();
    }
    writers_done.send_replace(true);
    // Every record's final version, as the server has it now.
    let mut truth: BTreeMap<String, u64> = BTreeMap::new();
    let mut cursor: Option<String> = None;
    loop {
        let query = cursor.as_ref().map_or("limit=1000".to_string(), |c| {
            format!("cursor={c}&limit=1000")
        });
        let page = updated(&server, "hot", &query).await;
        if page["records"].as_array().unwrap().is_empty() {
            break;
        }
        for r in page["records"].as_array().unwrap() {
            truth.insert(
                r["id"].as_str().unwrap().to_string(),
                r["version"].as_u64().unwrap(),
            );
        }
        cursor = Some(page["cursor"].as_str().unwrap().to_string());
    }
    assert_eq!(truth.len(), 3 * 8 * 500 + 3 + 3 * 40);
    for pager in pagers {
        let latest: BTreeMap<String, u64> = pager.await.unwrap().into_iter().collect();
        assert_eq!(latest, truth, "a pager missed a record's latest change");
    }
}

/// Replaying the events stream, read with the plain stream API, rebuilds
/// exactly the records stream.
#[tokio::test]
async fn replaying_events_rebuilds_the_records() {
    let server = TestServer::start().await;
    ensure_collection(&server, "orders").await;
    for i in 0..30 {
        let id = format!("o{}", i % 7);
        if i % 9 == 8 {
            let _ = server
                .delete(&format!("/v1/collections/orders/records/{id}"))
                .send()
                .await
                .unwrap();
        } else {
            put(
                &server,
                "orders",
                &id,
                json!({"step": i, "even": i % 2 == 0}),
            )
            .await;
        }
    }
    // The events, through the stream API.
    let batch = server
        .read("_collections%2Forders%2Fevents", "seq_num=0")
        .await;
    let mut rebuilt: BTreeMap<String, (Value, u64, bool)> = BTreeMap::new();
    for record in batch["records"].as_array().unwrap() {
        let event: Value = serde_json::from_str(record["body"].as_str().unwrap()).unwrap();
        assert_eq!(record["headers"][0][0], "event");
        assert_eq!(record["headers"][0][1], event["event"]);
        let id = event["id"].as_str().unwrap().to_string();
        let deleted = event["event"] == "deleted";
        if event["event"] == "updated" {
            let previous = rebuilt.get(&id).unwrap();
            // `changes` holds the previous values of what changed.
            for (field, old) in event["changes"].as_object().unwrap() {
                assert_eq!(previous.0.get(field).unwrap_or(&Value::Null), old);
            }
        }
        rebuilt.insert(
            id,
            (
                event["data"].clone(),
                event["version"].as_u64().unwrap(),
                deleted,
            ),
        );
    }
    let page = updated(&server, "orders", "limit=1000").await;
    let records: BTreeMap<String, (Value, u64, bool)> = page["records"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["id"].as_str().unwrap().to_string(),
                (
                    r["data"].clone(),
                    r["version"].as_u64().unwrap(),
                    r["deleted"].as_bool().unwrap(),
                ),
            )
        })
        .collect();
    assert_eq!(rebuilt, records);
}

/// The classic failure, provoked directly: a reader pages past the newest
/// record, then a record with a smaller id is written at once (in the same
/// millisecond, without Rill's rule). It must still show after the cursor.
#[tokio::test]
async fn a_write_never_lands_behind_a_served_cursor() {
    let server = TestServer::start().await;
    ensure_collection(&server, "race").await;
    let page = |query: String| {
        let req = server.get(&format!("/v1/collections/race/updated?{query}"));
        async move { req.send().await.unwrap().json::<Value>().await.unwrap() }
    };
    let mut cursor = page("limit=1000".into()).await["cursor"]
        .as_str()
        .unwrap()
        .to_string();
    for i in 0..50 {
        put(&server, "race", &format!("z{i:02}"), json!({"i": i})).await;
        // Page until the cursor is past z{i}.
        loop {
            let p = page(format!("cursor={cursor}")).await;
            cursor = p["cursor"].as_str().unwrap().to_string();
            if ids(&p).contains(&format!("z{i:02}")) {
                break;
            }
        }
        put(&server, "race", &format!("a{i:02}"), json!({"i": i})).await;
        let deadline = std::time::Instant::now() + Duration::from_secs(2);
        loop {
            let p = page(format!("cursor={cursor}")).await;
            cursor = p["cursor"].as_str().unwrap().to_string();
            if ids(&p).contains(&format!("a{i:02}")) {
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "a{i:02} was skipped by the cursor"
            );
        }
    }
}

#[tokio::test]
async fn events_endpoint_and_long_poll() {
    let server = TestServer::start().await;
    ensure_collection(&server, "ev").await;
    put(&server, "ev", "a", json!({"x": 1})).await;
    put(&server, "ev", "a", json!({"x": 2, "y": true})).await;
    server
        .delete("/v1/collections/ev/records/a")
        .send()
        .await
        .unwrap();

    let resp = server
        .get("/v1/collections/ev/events?seq_num=0")
        .send()
        .await
        .unwrap();
    let page = expect_status(resp, StatusCode::OK).await;
    let events = page["events"].as_array().unwrap();
    let kinds: Vec<_> = events
        .iter()
        .map(|e| e["event"].as_str().unwrap())
        .collect();
    assert_eq!(kinds, ["created", "updated", "deleted"]);
    assert_eq!(events[1]["changes"], json!({"x": 1, "y": null}));
    assert_eq!(events[1]["seq_num"], 1);
    assert!(events[1]["timestamp"].as_u64().is_some());
    assert_eq!(events[2]["data"], json!({"x": 2, "y": true}));
    assert_eq!(events[2]["version"], 3);
    assert_eq!(page["next_seq_num"], 3);

    let resp = server
        .get("/v1/collections/ev/events?seq_num=0&event=deleted")
        .send()
        .await
        .unwrap();
    let page = expect_status(resp, StatusCode::OK).await;
    assert_eq!(page["events"].as_array().unwrap().len(), 1);
    let resp = server
        .get("/v1/collections/ev/events?tail_offset=1")
        .send()
        .await
        .unwrap();
    assert_eq!(
        expect_status(resp, StatusCode::OK).await["events"][0]["event"],
        "deleted"
    );
    let resp = server
        .get("/v1/collections/ev/events?seq_num=0&event=renamed")
        .send()
        .await
        .unwrap();
    expect_error(resp, StatusCode::UNPROCESSABLE_ENTITY, "invalid").await;

    // Long poll on the events: a read at the tail waits for the next write.
    let waiter = {
        let req = server.get("/v1/collections/ev/events?seq_num=3&wait=10");
        tokio::spawn(async move { req.send().await.unwrap().json::<Value>().await.unwrap() })
    };
    // Long poll on /updated from the current position.
    let cursor = updated(&server, "ev", "").await["cursor"]
        .as_str()
        .unwrap()
        .to_string();
    let updated_waiter = {
        let req = server.get(&format!(
            "/v1/collections/ev/updated?cursor={cursor}&wait=10"
        ));
        tokio::spawn(async move {
            let started = std::time::Instant::now();
            (
                req.send().await.unwrap().json::<Value>().await.unwrap(),
                started.elapsed(),
            )
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    put(&server, "ev", "b", json!({"late": true})).await;
    let page = waiter.await.unwrap();
    assert_eq!(page["events"][0]["id"], "b");
    let (page, elapsed) = updated_waiter.await.unwrap();
    assert_eq!(ids(&page), ["b"]);
    assert!(
        elapsed >= Duration::from_millis(250) && elapsed < Duration::from_secs(5),
        "{elapsed:?}"
    );
}

#[tokio::test]
async fn tombstones_expire_and_old_cursors_get_410() {
    let server = TestServer::start().await;
    server.create_basin(BASIN).await;
    let resp = server
        .put("/v1/collections/short")
        .json(&json!({"tombstone_retention_secs": 1}))
        .send()
        .await
        .unwrap();
    expect_status(resp, StatusCode::CREATED).await;
    let kept = put(&server, "short", "kept", json!({"v": 1})).await;
    for i in 0..5 {
        put(&server, "short", &format!("more-{i}"), json!({"v": i})).await;
    }
    put(&server, "short", "gone", json!({"v": 1})).await;
    server
        .delete("/v1/collections/short/records/gone")
        .send()
        .await
        .unwrap();
    // A consumer that synced before the expiry holds a token.
    let stale_token = updated(&server, "short", "limit=1").await["cursor"]
        .as_str()
        .unwrap()
        .to_string();
    let old_position = kept["updated_at"].as_u64().unwrap();

    // Upkeep runs every second; within a few the tombstone is gone, and
    // cursors from before it, pair or token, get a 410 with advice.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let resp = server
            .get(&format!(
                "/v1/collections/short/updated?updated_after={old_position}"
            ))
            .send()
            .await
            .unwrap();
        if resp.status() == StatusCode::GONE {
            let body = expect_error(resp, StatusCode::GONE, "cursor_expired").await;
            assert!(body["message"]
                .as_str()
                .unwrap()
                .contains("updated_after=0"));
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the cursor never expired"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let resp = server
        .get(&format!(
            "/v1/collections/short/updated?cursor={stale_token}"
        ))
        .send()
        .await
        .unwrap();
    expect_error(resp, StatusCode::GONE, "cursor_expired").await;

    // A full resync from 0 pages through everything kept, page after page,
    // with no 410: it never knew the removed record.
    let mut seen = Vec::new();
    let mut query = "updated_after=0&limit=2".to_string();
    loop {
        let page = updated(&server, "short", &query).await;
        if ids(&page).is_empty() {
            break;
        }
        seen.extend(ids(&page));
        query = format!("cursor={}&limit=2", page["cursor"].as_str().unwrap());
    }
    assert_eq!(
        seen,
        ["kept", "more-0", "more-1", "more-2", "more-3", "more-4"]
    );
    let resp = server
        .get("/v1/collections/short/records/gone")
        .send()
        .await
        .unwrap();
    expect_error(resp, StatusCode::NOT_FOUND, "record_not_found").await;
    // Versions never restart: the record comes back at version 3.
    let back = put(&server, "short", "gone", json!({"v": 2})).await;
    assert_eq!(back["version"], 3);
}

/// The unified endpoint: one cursor over several collections, in
/// `(updated_at, collection, id)` order, that misses nothing while writers
/// write to all of them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unified_cursor_over_collections() {
    let server = TestServer::start().await;
    for name in ["alpha", "beta", "gamma"] {
        ensure_collection(&server, name).await;
    }
    let (base, client) = (server.base.clone(), server.client.clone());
    let writers: Vec<_> = ["alpha", "beta", "gamma"]
        .into_iter()
        .map(|coll| {
            let (base, client) = (base.clone(), client.clone());
            tokio::spawn(async move {
                for round in 0..30 {
                    let n = if round % 10 == 0 { 200 } else { 2 };
                    let upserts: Vec<Value> = (0..n)
                        .map(|i| json!({"id": format!("r{round:02}-{i:03}"), "data": {"round": round}}))
                        .collect();
                    let resp = client
                        .post(format!("{base}/v1/collections/{coll}/records"))
                        .header("s2-basin", BASIN)
                        .json(&json!({ "upserts": upserts }))
                        .send()
                        .await
                        .unwrap();
                    assert!(resp.status().is_success());
                }
            })
        })
        .collect();
    let (done_tx, done_rx) = tokio::sync::watch::channel(false);
    let pager = {
        let (base, client) = (base.clone(), client.clone());
        tokio::spawn(async move {
            let mut seen: HashSet<(String, String)> = HashSet::new();
            let mut cursor: Option<String> = None;
            let mut last = (0u64, String::new(), String::new());
            let mut idle = 0;
            let deadline = std::time::Instant::now() + Duration::from_secs(60);
            while idle < 3 {
                assert!(std::time::Instant::now() < deadline, "pager did not finish");
                let query = cursor
                    .as_ref()
                    .map_or("limit=3".to_string(), |c| format!("cursor={c}&limit=3"));
                let page: Value = client
                    .get(format!(
                        "{base}/v1/updated?collections=alpha,beta,gamma&{query}"
                    ))
                    .header("s2-basin", BASIN)
                    .send()
                    .await
                    .unwrap()
                    .json()
                    .await
                    .unwrap();
                let records = page["records"].as_array().unwrap();
                for r in records {
                    let position = (
                        r["updated_at"].as_u64().unwrap(),
                        r["collection"].as_str().unwrap().to_string(),
                        r["id"].as_str().unwrap().to_string(),
                    );
                    assert!(position > last, "out of order: {position:?} after {last:?}");
                    last = position.clone();
                    assert!(seen.insert((position.1, position.2)), "seen twice");
                }
                cursor = Some(page["cursor"].as_str().unwrap().to_string());
                if records.is_empty() {
                    if *done_rx.borrow() {
                        idle += 1;
                    }
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }
            seen
        })
    };
    for w in writers {
        w.await.unwrap();
    }
    done_tx.send_replace(true);
    let seen = pager.await.unwrap();
    // Every record was written once, so each must have been seen once.
    assert_eq!(seen.len(), 3 * (3 * 200 + 27 * 2));

    // The cursor pair form, and bad input.
    let page = expect_status(
        server
            .get("/v1/updated?updated_after=0&limit=2")
            .send()
            .await
            .unwrap(),
        StatusCode::OK,
    )
    .await;
    let first_three = expect_status(
        server
            .get("/v1/updated?updated_after=0&limit=3")
            .send()
            .await
            .unwrap(),
        StatusCode::OK,
    )
    .await;
    let next = &page["next"];
    let query = format!(
        "updated_after={}&after_collection={}&after_id={}&limit=1",
        next["updated_after"],
        next["after_collection"].as_str().unwrap(),
        next["after_id"].as_str().unwrap()
    );
    let page2 = expect_status(
        server
            .get(&format!("/v1/updated?{query}"))
            .send()
            .await
            .unwrap(),
        StatusCode::OK,
    )
    .await;
    assert_eq!(page2["records"][0], first_three["records"][2]);
    assert!(page2["records"][0]["collection"].is_string());
    let resp = server.get("/v1/updated?after_id=x").send().await.unwrap();
    expect_error(resp, StatusCode::UNPROCESSABLE_ENTITY, "invalid").await;
    let resp = server
        .get("/v1/updated?collections=nope")
        .send()
        .await
        .unwrap();
    expect_error(resp, StatusCode::NOT_FOUND, "collection_not_found").await;
}

/// The classic failure across collections: after a reader pages past a
/// record of `beta`, a write to `alpha` (which sorts first) follows at once.
#[tokio::test]
async fn a_write_never_lands_behind_a_served_unified_cursor() {
    let server = TestServer::start().await;
    ensure_collection(&server, "alpha").await;
    ensure_collection(&server, "beta").await;
    let page = |query: String| {
        let req = server.get(&format!("/v1/updated?collections=alpha,beta&{query}"));
        async move { req.send().await.unwrap().json::<Value>().await.unwrap() }
    };
    let mut cursor = page("limit=1000".into()).await["cursor"]
        .as_str()
        .unwrap()
        .to_string();
    for i in 0..30 {
        put(&server, "beta", &format!("z{i:02}"), json!({"i": i})).await;
        let deadline = std::time::Instant::now() + Duration::from_secs(2);
        loop {
            let p = page(format!("cursor={cursor}")).await;
            cursor = p["cursor"].as_str().unwrap().to_string();
            if ids(&p).contains(&format!("z{i:02}")) {
                break;
            }
            assert!(std::time::Instant::now() < deadline, "z{i:02} never showed");
        }
        put(&server, "alpha", &format!("a{i:02}"), json!({"i": i})).await;
        let deadline = std::time::Instant::now() + Duration::from_secs(2);
        loop {
            let p = page(format!("cursor={cursor}")).await;
            cursor = p["cursor"].as_str().unwrap().to_string();
            if ids(&p).contains(&format!("a{i:02}")) {
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "a{i:02} was skipped by the cursor"
            );
        }
    }
}

#[tokio::test]
async fn events_follow_live_over_sse() {
    let server = TestServer::start().await;
    ensure_collection(&server, "live").await;
    put(&server, "live", "first", json!({"n": 1})).await;
    let resp = server
        .get("/v1/collections/live/events?seq_num=0&event=created,deleted")
        .header("accept", "text/event-stream")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let mut events = SseReader::new(resp);
    let mut seen = Vec::new();
    let writer = {
        let req_a = server
            .put("/v1/collections/live/records/first")
            .json(&json!({"n": 2}));
        let req_b = server
            .put("/v1/collections/live/records/second")
            .json(&json!({"n": 1}));
        let req_c = server.delete("/v1/collections/live/records/first");
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(100)).await;
            for req in [req_a, req_b, req_c] {
                assert!(req.send().await.unwrap().status().is_success());
            }
        })
    };
    while seen.len() < 3 {
        let event = events
            .next_within(Duration::from_secs(5))
            .await
            .expect("session open");
        if event.event.as_deref() == Some("batch") {
            let data: Value = serde_json::from_str(&event.data).unwrap();
            for e in data["events"].as_array().unwrap() {
                seen.push((
                    e["event"].as_str().unwrap().to_string(),
                    e["id"].as_str().unwrap().to_string(),
                ));
            }
        }
    }
    writer.await.unwrap();
    // The update of `first` is filtered out.
    assert_eq!(
        seen,
        [
            ("created".into(), "first".into()),
            ("created".into(), "second".into()),
            ("deleted".into(), "first".into())
        ]
    );
}
