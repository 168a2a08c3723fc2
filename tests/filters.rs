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

/// What paging a records feed until caught up saw.
struct Paged {
    records: Vec<Value>,
    /// Per page: how many records it held, and whether it was caught up.
    pages: Vec<(usize, bool)>,
}

/// Pages `path` (`/updated` of one collection or across) with the filter
/// `params` from `cursor` until a page is caught up.
async fn page_until_caught_up(
    server: &TestServer,
    path: &str,
    params: &[(&str, &str)],
    cursor: &mut Option<String>,
) -> Paged {
    let mut paged = Paged {
        records: Vec::new(),
        pages: Vec::new(),
    };
    loop {
        let mut request = server.get(path).query(&[("limit", "100")]).query(params);
        if let Some(cursor) = cursor.as_deref() {
            request = request.query(&[("cursor", cursor)]);
        }
        let page = request.expect_status(StatusCode::OK).await;
        let records = page["records"].as_array().unwrap();
        let caught_up = page["caught_up"] == true;
        paged.pages.push((records.len(), caught_up));
        assert!(
            paged.pages.len() <= 1000,
            "still not caught up after 1000 pages"
        );
        paged.records.extend(records.iter().cloned());
        *cursor = Some(page["cursor"].as_str().unwrap().to_string());
        if caught_up {
            return paged;
        }
    }
}

/// Pages `users`' `/updated`: its records, and how many requests it took.
async fn read_filtered(
    server: &TestServer,
    params: &[(&str, &str)],
    cursor: &mut Option<String>,
) -> (Vec<Value>, usize) {
    let paged = page_until_caught_up(server, "/v1/collections/users/updated", params, cursor).await;
    (paged.records, paged.pages.len())
}

/// Writes `count` records `r00000`… to `users`, 1000 per batch, the data
/// of record `n` being `data(n)`.
async fn write_many(server: &TestServer, count: usize, data: impl Fn(usize) -> Value) {
    for batch in 0..count.div_ceil(1000) {
        let upserts: Vec<Value> = (batch * 1000..((batch + 1) * 1000).min(count))
            .map(|n| json!({"id": format!("r{n:05}"), "data": data(n)}))
            .collect();
        server
            .post("/v1/collections/users/records")
            .json(&json!({ "upserts": upserts }))
            .expect_status(StatusCode::OK)
            .await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_filtered_reader_under_concurrent_writers_sees_exactly_the_matches() {
    let server = std::sync::Arc::new(TestServer::start().await);
    server.create_basin(BASIN).await;
    server.put("/v1/collections/users").send().await.unwrap();
    let matches = |data: &Value| data["plan"] == "pro" && data["seats"].as_u64().unwrap() >= 5;
    let writers: Vec<_> = (0..3u64)
        .map(|w| {
            let server = server.clone();
            tokio::spawn(async move {
                for i in 0..200u64 {
                    let n = (w * 7919 + i * 104_729) % 1000;
                    let data =
                        json!({"plan": if n % 3 == 0 { "pro" } else { "free" }, "seats": n % 10});
                    put(&server, &format!("u{}", n % 60), data).await;
                }
            })
        })
        .collect();
    // Read while they write, then once more after.
    let mut cursor = None;
    let mut seen: Vec<Value> = Vec::new();
    let query = [("data.plan", "pro"), ("where", "seats>=5")];
    while !writers.iter().all(|w| w.is_finished()) {
        seen.extend(read_filtered(&server, &query, &mut cursor).await.0);
    }
    for writer in writers {
        writer.await.unwrap();
    }
    seen.extend(read_filtered(&server, &query, &mut cursor).await.0);

    // Never a record that does not match, never one version twice.
    let mut versions = std::collections::HashSet::new();
    for record in &seen {
        assert!(matches(&record["data"]), "{record}");
        assert!(
            versions.insert((record["id"].clone(), record["version"].clone())),
            "twice: {record}"
        );
    }
    // Every record whose final version matches was seen at that version.
    let (all, _) = read_filtered(&server, &[], &mut None).await;
    let mut expected = 0;
    for record in all.iter().filter(|r| matches(&r["data"])) {
        expected += 1;
        let last_seen = seen
            .iter()
            .rev()
            .find(|s| s["id"] == record["id"])
            .expect("seen");
        assert_eq!(last_seen["version"], record["version"], "{record}");
    }
    assert!(expected > 0, "the writers made some matching records");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_match_in_ten_thousand_pages_without_rescanning() {
    let server = TestServer::start().await;
    server.create_basin(BASIN).await;
    server.put("/v1/collections/users").send().await.unwrap();
    const RECORDS: usize = 25_000;
    write_many(&server, RECORDS, |n| json!({"rare": n % 10_000 == 4321})).await;
    let mut cursor = None;
    let (found, requests) = read_filtered(&server, &[("data.rare", "true")], &mut cursor).await;
    let ids: Vec<&str> = found.iter().map(|r| r["id"].as_str().unwrap()).collect();
    assert_eq!(ids, ["r04321", "r14321", "r24321"]);
    // Each request scans at most the budget, and the next starts past it.
    let budget = rill::engine::collections::SCAN_BUDGET;
    assert!(requests <= RECORDS / budget + 2, "{requests} requests");
    assert!(
        requests >= RECORDS / budget,
        "{requests} requests: the budget bounds a page"
    );
    // Caught up: asking again finds nothing and scans nothing new.
    let (again, requests) = read_filtered(&server, &[("data.rare", "true")], &mut cursor).await;
    assert!(again.is_empty() && requests == 1);
}

#[tokio::test]
async fn a_read_and_a_consumer_with_the_same_filter_agree() {
    let server = TestServer::start().await;
    server.create_basin(BASIN).await;
    server.put("/v1/collections/users").send().await.unwrap();
    let filter = json!({"id_prefix": "u", "where": [
        {"field": "plan", "op": "in", "value": ["pro", "team"]},
        {"field": "seats", "op": "<", "value": 50}]});
    server
        .put("/v1/consumers/same")
        .json(&json!({ "source": { "collection": "users", "feed": "records" }, "filter": filter }))
        .expect_status(StatusCode::CREATED)
        .await;
    for n in 0..120u64 {
        let id = if n % 4 == 0 {
            format!("x{n}")
        } else {
            format!("u{n}")
        };
        let plan = ["free", "pro", "team"][(n % 3) as usize];
        put(&server, &id, json!({"plan": plan, "seats": n})).await;
    }
    let filter = filter.to_string();
    let (read, _) = read_filtered(&server, &[("filter", &filter)], &mut None).await;
    let read: Vec<&str> = read.iter().map(|r| r["id"].as_str().unwrap()).collect();
    let consumed = drain(&server, "same").await;
    let consumed: Vec<&str> = consumed
        .iter()
        .map(|m| m["record"]["id"].as_str().unwrap())
        .collect();
    assert!(!read.is_empty());
    assert_eq!(read, consumed);
}

/// The command line (and through it the client) pages past pages that a
/// filter left empty, and stops only when caught up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_command_line_filters_and_pages_past_empty_pages() {
    let server = TestServer::start().await;
    server.create_basin(BASIN).await;
    server.put("/v1/collections/users").send().await.unwrap();
    write_many(
        &server,
        12_000,
        |n| json!({"n": n, "plan": if n % 2 == 0 { "pro" } else { "free" }}),
    )
    .await;
    // The only match comes after the first page's scan budget.
    let ran = common::cli::run_rill(
        &server,
        &[
            "updated", "users", "--where", "n>=11998", "--where", "plan=pro",
        ],
        "",
    )
    .await;
    assert_eq!(ran.code, Some(0), "{}", ran.err);
    let ids: Vec<&str> = ran
        .out
        .lines()
        .map(|l| l.split('\t').next().unwrap())
        .collect();
    assert_eq!(ids, ["r11998"], "{}", ran.out);
    let ran = common::cli::run_rill(
        &server,
        &[
            "updated",
            "users",
            "--json",
            "--filter",
            r#"{"id_prefix": "r0000", "where": [{"field": "plan", "op": "!=", "value": "pro"}]}"#,
        ],
        "",
    )
    .await;
    assert_eq!(ran.code, Some(0), "{}", ran.err);
    assert_eq!(ran.out.lines().count(), 5, "{}", ran.out);
    let ran = common::cli::run_rill(&server, &["updated", "users", "--where", "plan"], "").await;
    assert_eq!(ran.code, Some(1), "{}", ran.err);
    assert!(ran.err.contains("422 invalid"), "{}", ran.err);
}

#[tokio::test]
async fn the_events_read_takes_the_filter_and_moves_past_what_it_left_out() {
    let server = TestServer::start().await;
    server.create_basin(BASIN).await;
    server.put("/v1/collections/users").send().await.unwrap();
    put(&server, "u1", json!({"plan": "free", "seats": 1})).await; // 0 created
    put(&server, "u1", json!({"plan": "pro", "seats": 1})).await; // 1 updated: plan
    put(&server, "u1", json!({"plan": "pro", "seats": 2})).await; // 2 updated: seats
    put(&server, "x1", json!({"plan": "free", "seats": 9})).await; // 3 created
    put(&server, "x1", json!({"plan": "team", "seats": 9})).await; // 4 updated: plan
    let events = |query: &str| {
        let path = format!("/v1/collections/users/events?seq_num=0&{query}");
        let request = server.get(&path);
        async move { request.expect_status(StatusCode::OK).await }
    };
    let seq_nums = |page: &Value| -> Vec<u64> {
        page["events"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["seq_num"].as_u64().unwrap())
            .collect()
    };
    let page = events("where=changed(plan)").await;
    assert_eq!(seq_nums(&page), [1, 4]);
    assert_eq!(page["next_seq_num"], 5, "past everything read: {page}");
    assert_eq!(
        seq_nums(&events("where=changed(plan)&id_prefix=u").await),
        [1]
    );
    assert_eq!(seq_nums(&events("event=created&data.seats=9").await), [3]);
    assert_eq!(
        seq_nums(&events("where=seats>=2&where=plan!=team").await),
        [2, 3]
    );
    // Nothing matches: an empty page, still past what it read (to the
    // tail, without a count).
    let page = events("id_prefix=zzz").await;
    assert_eq!(
        (seq_nums(&page).len(), page["next_seq_num"].as_u64()),
        (0, Some(5))
    );
    let page = events("id_prefix=zzz&count=3").await;
    assert_eq!(
        (seq_nums(&page).len(), page["next_seq_num"].as_u64()),
        (0, Some(3))
    );
    let resp = server
        .get("/v1/collections/users/events?seq_num=0&where=seats>[1]")
        .send()
        .await
        .unwrap();
    expect_error(resp, StatusCode::UNPROCESSABLE_ENTITY, "invalid").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_unified_feed_takes_the_filter_and_pages_past_the_budget() {
    let server = TestServer::start().await;
    server.create_basin(BASIN).await;
    for collection in ["orgs", "users"] {
        server
            .put(&format!("/v1/collections/{collection}"))
            .send()
            .await
            .unwrap();
    }
    write_many(
        &server,
        11_000,
        |n| json!({"plan": if n == 10_500 { "pro" } else { "free" }}),
    )
    .await;
    server
        .put("/v1/collections/orgs/records/o1")
        .json(&json!({"plan": "pro"}))
        .expect_status(StatusCode::OK)
        .await;
    let paged = page_until_caught_up(
        &server,
        "/v1/updated",
        &[("collections", "orgs,users"), ("where", "plan=pro")],
        &mut None,
    )
    .await;
    let found: Vec<&str> = paged
        .records
        .iter()
        .map(|r| r["id"].as_str().unwrap())
        .collect();
    let pages = paged.pages;
    assert_eq!(found, ["r10500", "o1"]);
    // The first page ran out of budget before the match: said, not caught up.
    assert_eq!(pages[0], (0, false), "{pages:?}");
}

/// `rill events` filters too, and reads on past pages the filter emptied.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_command_line_filters_events() {
    let server = TestServer::start().await;
    server.create_basin(BASIN).await;
    server.put("/v1/collections/users").send().await.unwrap();
    for n in 0..30u64 {
        put(&server, &format!("u{n:02}"), json!({"plan": "free"})).await;
    }
    put(&server, "u07", json!({"plan": "pro"})).await; // seq num 30
    put(&server, "u08", json!({"plan": "free", "note": 1})).await; // 31: plan unchanged
    let ran = common::cli::run_rill(
        &server,
        &[
            "events",
            "users",
            "--event",
            "updated",
            "--where",
            "changed(plan)",
        ],
        "",
    )
    .await;
    assert_eq!(ran.code, Some(0), "{}", ran.err);
    assert_eq!(ran.out, "30\tupdated\tu07\tv2\t{\"plan\":\"pro\"}\n");
    // Reading 3 at a time, the pages before seq num 20 hold no match.
    let ran = common::cli::run_rill(
        &server,
        &["events", "users", "--id-prefix", "u2", "--count", "3"],
        "",
    )
    .await;
    let seq_nums: Vec<&str> = ran
        .out
        .lines()
        .map(|l| l.split('\t').next().unwrap())
        .collect();
    assert_eq!(seq_nums, ["20", "21", "22"], "{}", ran.err);
}

/// A filtered long poll (`/updated`, the unified feed, `/events`) is not
/// woken by writes it leaves out: it answers with the first match, past
/// the writes it skipped on the way.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn filtered_long_polls_wake_only_for_a_match() {
    let server = TestServer::start().await;
    server.create_basin(BASIN).await;
    server.put("/v1/collections/users").send().await.unwrap();
    put(&server, "u0", json!({"plan": "free"})).await;
    let tail = server
        .get("/v1/collections/users/events?seq_num=0")
        .expect_status(StatusCode::OK)
        .await["next_seq_num"]
        .as_u64()
        .unwrap();
    let updated = server.get("/v1/collections/users/updated?where=plan=pro&wait=10");
    let across = server.get("/v1/updated?collections=users&where=plan=pro&wait=10");
    let events = server.get(&format!(
        "/v1/collections/users/events?seq_num={tail}&where=plan=pro&wait=10"
    ));
    let polls = tokio::spawn(async move {
        let updated = updated.expect_status(StatusCode::OK);
        let across = across.expect_status(StatusCode::OK);
        let events = events.expect_status(StatusCode::OK);
        tokio::join!(updated, across, events)
    });
    // Writes the polls leave out, each one a wake-up for an unfiltered poll.
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    for n in 1..=3 {
        put(&server, &format!("u{n}"), json!({"plan": "free"})).await;
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    put(&server, "p1", json!({"plan": "pro"})).await;
    let (updated, across, events) = polls.await.unwrap();
    let ids = |page: &Value, key: &str| -> Vec<String> {
        page[key]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["id"].as_str().unwrap().to_string())
            .collect()
    };
    assert_eq!(ids(&updated, "records"), ["p1"], "{updated}");
    assert_eq!(ids(&across, "records"), ["p1"], "{across}");
    assert_eq!(ids(&events, "events"), ["p1"], "{events}");
    // Past the writes it left out: the match was the fourth event after
    // `tail`.
    assert_eq!(events["next_seq_num"], tail + 4, "{events}");
}
