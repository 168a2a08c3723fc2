//! Postgres sources against a real Postgres (started here on loopback
//! with `wal_level=logical`): how values read as JSON, composite ids,
//! partitioned tables, replica identity full, key changes, truncates and
//! renames; what `PUT` refuses; that a deleted source drops its slot and
//! publication, and that a slot dropped by hand is reported. The crash
//! and convergence test is `source_postgres.rs`.

mod common;

use std::time::{Duration, Instant};

use common::services::Postgres;
use common::sink_scenario::Rill;
use serde_json::{json, Value};

/// Waits (bounded) until `check` holds of the source's GET.
async fn until(rill: &Rill, source: &str, what: &str, check: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let shown = rill.get(&format!("/v1/sources/{source}")).await;
        if check(&shown) {
            return shown;
        }
        assert!(Instant::now() < deadline, "{what}: {shown}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The slots and publications Rill's sources left in Postgres.
async fn leftovers(pg: &Postgres) -> (i64, i64) {
    let client = pg.client().await;
    let row = client
        .query_one(
            "SELECT (SELECT count(*) FROM pg_replication_slots WHERE slot_name LIKE 'rill_%'), \
                    (SELECT count(*) FROM pg_publication WHERE pubname LIKE 'rill_%')",
            &[],
        )
        .await
        .unwrap();
    (row.get(0), row.get(1))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn values_keys_truncates_and_the_slots_life() {
    let Some(pg) = Postgres::start() else {
        return;
    };
    pg.client()
        .await
        .batch_execute(
            "CREATE TABLE kinds (id int PRIMARY KEY, b boolean, i8 bigint, f float8, n numeric,
               j jsonb, by bytea, ts timestamptz, t timestamp, arr int[], txt text[], u uuid,
               d date, nothing text);
             INSERT INTO kinds VALUES (1, true, 9007199254740993, 1.5, 12345678901234567890.5,
               '{\"a\": [1, null]}', '\\x00ff41', '2024-05-01 14:00:00.5+02',
               '2024-05-01 12:00:00', '{{1,2},{3,4}}', '{plain,\"with, comma\",NULL}',
               'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11', '2024-05-01', NULL);
             CREATE TABLE nokey (v int);
             CREATE TABLE composite (a int, b text, v int, PRIMARY KEY (a, b));
             INSERT INTO composite VALUES (1, 'x', 10), (2, 'y', 20), (3, 'a/b', 30);
             CREATE TABLE parted (id int PRIMARY KEY, v int) PARTITION BY RANGE (id);
             CREATE TABLE parted_low PARTITION OF parted FOR VALUES FROM (0) TO (100);
             CREATE TABLE parted_high PARTITION OF parted FOR VALUES FROM (100) TO (200);
             INSERT INTO parted VALUES (1, 1), (150, 1);
             CREATE TABLE full_identity (k text NOT NULL, big text, v int);
             ALTER TABLE full_identity REPLICA IDENTITY FULL;
             INSERT INTO full_identity SELECT 'one', string_agg(md5(g::text), ''), 1
               FROM generate_series(1, 300) g;
             CREATE PUBLICATION inserts_only FOR TABLE kinds WITH (publish = 'insert');",
        )
        .await
        .unwrap();
    let mut rill = Rill::start_with_collection("unused").await;
    // Restarted in place below: the address stays.
    let (http, base) = (rill.http.clone(), rill.base());
    let put = |name: &str, settings: Value| {
        let request = http
            .put(format!("{base}/v1/sources/{name}"))
            .header("s2-basin", common::BASIN)
            .json(&json!({ "postgres": settings }));
        async move {
            let resp = request.send().await.unwrap();
            (resp.status().as_u16(), resp.json::<Value>().await.unwrap())
        }
    };
    let table = |table: &str, collection: &str| json!({ "table": table, "collection": collection });

    // Refused at PUT, with what to do about it; nothing made.
    for (tables, said) in [
        (json!([table("missing", "c")]), "does not exist"),
        (json!([table("nokey", "c")]), "no primary key"),
        (
            json!([{ "table": "composite", "collection": "c", "id_columns": ["a"] }]),
            "replica identity",
        ),
        (json!([]), "1 to 64 tables"),
        (
            json!([table("kinds", "c"), table("composite", "c")]),
            "each table needs its own",
        ),
    ] {
        let (status, body) = put("bad", json!({ "url": pg.url(), "tables": tables })).await;
        assert_eq!(status, 422, "{body}");
        assert!(body["message"].as_str().unwrap().contains(said), "{body}");
    }
    for (publication, said) in [
        ("nope", "does not exist"),
        ("inserts_only", "must publish inserts, updates, deletes"),
        ("MyPub", "lower case"),
    ] {
        let (status, body) = put(
            "bad",
            json!({ "url": pg.url(), "tables": [table("kinds", "c")], "publication": publication }),
        )
        .await;
        assert_eq!(status, 422, "{body}");
        assert!(body["message"].as_str().unwrap().contains(said), "{body}");
    }
    assert_eq!(leftovers(&pg).await, (0, 0));

    let settings = json!({ "url": pg.url(), "tables": [
        table("kinds", "kinds"), table("composite", "composite"), table("parted", "parted"),
        { "table": "full_identity", "collection": "full", "id_columns": ["k"] },
    ] });
    let (status, body) = put("all", settings.clone()).await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(put("all", settings).await.0, 200);
    until(&rill, "all", "streaming", |s| {
        s["state"]["state"] == "streaming"
    })
    .await;
    let kinds = rill.records("kinds").await;
    assert_eq!(
        kinds["1"].0,
        json!({
            "id": 1, "b": true, "i8": 9007199254740993i64, "f": 1.5,
            "n": "12345678901234567890.5", "j": { "a": [1, null] }, "by": "AP9B",
            "ts": "2024-05-01T12:00:00.5Z", "t": "2024-05-01T12:00:00",
            "arr": [[1, 2], [3, 4]], "txt": ["plain", "with, comma", null],
            "u": "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11", "d": "2024-05-01", "nothing": null,
        })
    );
    // A `/` in a part of a composite id is escaped: ids never collide.
    let composite: Vec<String> = rill.records("composite").await.into_keys().collect();
    assert_eq!(composite, ["1/x", "2/y", "3/a\\/b"]);
    let parted: Vec<String> = rill.records("parted").await.into_keys().collect();
    assert_eq!(parted, ["1", "150"]);
    let big = rill.records("full").await["one"].0["big"].clone();
    assert_eq!(big.as_str().map(str::len), Some(9600));

    // A key that changes moves the record; a truncate empties the
    // collection (what the same transaction wrote after it stays); a
    // partition's rows are its table's; a renamed table is still taken;
    // a large value an update leaves unchanged stays.
    // Deleted here, so the unchanged large value can only come from the
    // full old row the update carries.
    rill.send("DELETE", "/v1/collections/full/records/one", Value::Null)
        .await;
    pg.client()
        .await
        .batch_execute(
            "UPDATE composite SET a = 9 WHERE a = 1;
             BEGIN; TRUNCATE kinds; INSERT INTO kinds (id, b) VALUES (2, false); COMMIT;
             INSERT INTO parted VALUES (160, 2);
             ALTER TABLE composite RENAME TO composite_renamed;
             INSERT INTO composite_renamed VALUES (4, 'z', 40);
             UPDATE full_identity SET v = 2;",
        )
        .await
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let composite: Vec<String> = rill.records("composite").await.into_keys().collect();
        let kinds: Vec<String> = rill.records("kinds").await.into_keys().collect();
        let parted = rill.records("parted").await.len();
        let full = rill.records("full").await.get("one").map(|r| r.0.clone());
        let full = full.unwrap_or(Value::Null);
        if composite == ["2/y", "3/a\\/b", "4/z", "9/x"]
            && kinds == ["2"]
            && parted == 3
            && full["v"] == 2
        {
            assert_eq!(full["big"], big);
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{composite:?} {kinds:?} {parted} {}",
            full["v"]
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Renamed, it is still found after a restart (by the oid kept).
    rill.kill_and_restart_in_place();
    pg.client()
        .await
        .batch_execute("INSERT INTO composite_renamed VALUES (5, 'w', 50)")
        .await
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while !rill.records("composite").await.contains_key("5/w") {
        let shown = rill.get("/v1/sources/all").await;
        assert!(Instant::now() < deadline, "{shown}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let shown = rill.get("/v1/sources/all").await;
    assert!(shown["state"]["lag_bytes"].is_u64(), "{shown}");
    assert_eq!(leftovers(&pg).await, (1, 1));

    // Deleted: its slot and publication go too.
    rill.send("DELETE", "/v1/sources/all", Value::Null).await;
    let deadline = Instant::now() + Duration::from_secs(30);
    while leftovers(&pg).await != (0, 0) {
        assert!(Instant::now() < deadline, "{:?} left", leftovers(&pg).await);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // A slot dropped by hand is reported, not silently restarted.
    let settings = json!({ "url": pg.url(), "tables": [table("composite_renamed", "composite2")] });
    assert_eq!(put("lost", settings).await.0, 201);
    let shown = until(&rill, "lost", "streaming", |s| {
        s["state"]["state"] == "streaming"
    })
    .await;
    let slot = shown["state"]["slot"].as_str().unwrap().to_string();
    pg.client()
        .await
        .execute(
            "SELECT pg_terminate_backend(active_pid, 5000) FROM pg_replication_slots \
             WHERE slot_name = $1",
            &[&slot],
        )
        .await
        .unwrap();
    pg.client()
        .await
        .execute("SELECT pg_drop_replication_slot($1)", &[&slot])
        .await
        .unwrap();
    let shown = until(&rill, "lost", "slot_lost", |s| {
        s["state"]["state"] == "slot_lost"
    })
    .await;
    assert!(
        shown["state"]["last_error"]
            .as_str()
            .unwrap()
            .contains("make it again"),
        "{shown}"
    );
}
