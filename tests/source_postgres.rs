//! Postgres sources against a real Postgres (Debian's `postgresql`,
//! started here on loopback with `wal_level=logical`): a backfill of
//! 10,000 rows while three writers insert, update and delete, then
//! streaming; Rill SIGKILLed at random moments (during the backfill and
//! after) and Postgres restarted once. At the end each collection equals
//! its table row for row, and each record's events are its committed
//! history in order: nothing invented, nothing repeated or reordered, and
//! nothing committed after the backfill missing.

mod common;

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::services::{Postgres, Restartable};
use common::sink_scenario::Rill;
use rand::{Rng, SeedableRng};
use serde_json::{json, Value};

const ROWS: i64 = 10_000;
const WRITERS: i64 = 3;

/// One committed state of a row (`None`: deleted), and when its commit
/// began (it is after the backfill's snapshot if that is after the
/// backfill was seen done).
type History = HashMap<i64, Vec<(Option<i64>, Instant)>>;

async fn setup(pg: &Postgres) {
    let client = pg.client().await;
    client
        .batch_execute(&format!(
            "CREATE TABLE items (id bigint PRIMARY KEY, rev bigint NOT NULL, name text, \
               price numeric, tags text[], doc jsonb, big text);
             CREATE TABLE pairs (a int, b text, v int, PRIMARY KEY (a, b));
             INSERT INTO items SELECT i, 0, 'item ' || i, i * 1.5, ARRAY['t' || (i % 7)],
               jsonb_build_object('i', i), NULL FROM generate_series(0, {last}) i;
             -- Values stored out of line (TOAST): an update that leaves them
             -- unchanged does not send them.
             UPDATE items SET big = (SELECT string_agg(md5(random()::text || g), '')
               FROM generate_series(1, 300) g) WHERE id < 9;",
            last = ROWS - 1
        ))
        .await
        .unwrap();
}

/// A writer of its own rows (`id % WRITERS == w`, and new ones), in
/// transactions of one to three changes, each row at most once in one,
/// until `stop`; what committed goes in `history`.
async fn writer(pg_url: String, w: i64, stop: Arc<AtomicBool>, history: Arc<Mutex<History>>) {
    let mut rng = rand::rngs::StdRng::seed_from_u64(w as u64);
    let mut live: Vec<(i64, i64)> = (0..ROWS)
        .filter(|i| i % WRITERS == w)
        .map(|i| (i, 0))
        .collect();
    let mut next_id = 1_000_000 * (w + 1);
    let mut client = connect(&pg_url).await;
    for _ in 0..5_000 {
        if stop.load(Ordering::Relaxed) {
            return;
        }
        // (id, new state) for each change, planned on what is known.
        let mut plan: Vec<(i64, Option<i64>)> = Vec::new();
        for _ in 0..rng.random_range(1..=3) {
            let roll = rng.random_range(0..10);
            if roll < 3 || live.is_empty() {
                plan.push((next_id, Some(0)));
                next_id += 1;
                continue;
            }
            let (id, rev) = live[rng.random_range(0..live.len())];
            if plan.iter().any(|(p, _)| *p == id) {
                continue;
            }
            // Rows with out-of-line values stay, to be updated.
            match roll < 8 || id < 9 {
                true => plan.push((id, Some(rev + 1))),
                false => plan.push((id, None)),
            }
        }
        let pair = rng.random_range(0..5);
        let began = Instant::now();
        let result = run_txn(&mut client, w, &plan, &live, pair).await;
        let committed = match result {
            Ok(()) => true,
            // Cut off (Postgres restarting): whether the transaction
            // committed is read back once Postgres answers again.
            Err(_) => {
                client = connect(&pg_url).await;
                let (id, state) = plan[0];
                let row = client
                    .query_opt("SELECT rev FROM items WHERE id = $1", &[&id])
                    .await
                    .unwrap();
                row.map(|r| r.get::<_, i64>(0)) == state
            }
        };
        if committed {
            let mut history = history.lock().unwrap();
            for &(id, state) in &plan {
                history.entry(id).or_default().push((state, began));
                live.retain(|(l, _)| *l != id);
                if let Some(rev) = state {
                    live.push((id, rev));
                }
            }
        }
    }
}

async fn run_txn(
    client: &mut tokio_postgres::Client,
    w: i64,
    plan: &[(i64, Option<i64>)],
    live: &[(i64, i64)],
    pair: i32,
) -> Result<(), tokio_postgres::Error> {
    let tx = client.transaction().await?;
    for &(id, state) in plan {
        let known = live.iter().any(|(l, _)| *l == id);
        match (state, known) {
            (Some(rev), false) => {
                tx.execute(
                    "INSERT INTO items VALUES ($1, $2, 'new', 2.25, '{a,\"b c\"}', '{\"new\": true}')",
                    &[&id, &rev],
                )
                .await?
            }
            (Some(rev), true) => {
                tx.execute(
                    "UPDATE items SET rev = $2, name = $3 WHERE id = $1",
                    &[&id, &rev, &format!("rev {rev}")],
                )
                .await?
            }
            (None, _) => tx.execute("DELETE FROM items WHERE id = $1", &[&id]).await?,
        };
    }
    // Some transactions touch both tables (both collections).
    if plan.len() > 1 {
        tx.execute(
            "INSERT INTO pairs VALUES ($1, $2, 1) ON CONFLICT (a, b) DO UPDATE SET v = pairs.v + 1",
            &[&(w as i32), &format!("k{pair}")],
        )
        .await?;
    }
    tx.commit().await
}

async fn connect(url: &str) -> tokio_postgres::Client {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        match tokio_postgres::connect(url, tokio_postgres::NoTls).await {
            Ok((client, connection)) => {
                tokio::spawn(connection);
                return client;
            }
            Err(err) => assert!(Instant::now() < deadline, "Postgres is back: {err}"),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Each row as the collection should hold it: id → data.
async fn table_rows(pg: &Postgres, table: &str) -> BTreeMap<String, Value> {
    let client = connect(&pg.url()).await;
    let sql = match table {
        "items" => "SELECT id::text, to_jsonb(t)::text FROM items t",
        _ => "SELECT a::text || '/' || b, to_jsonb(t)::text FROM pairs t",
    };
    let rows = client.query(sql, &[]).await.unwrap();
    rows.iter()
        .map(|row| {
            let mut data: Value = serde_json::from_str(row.get(1)).unwrap();
            // numeric is a string by default; to_jsonb makes it a number.
            if let Some(price) = data.get("price").cloned().filter(|p| !p.is_null()) {
                data["price"] = json!(price.to_string());
            }
            (row.get::<_, String>(0), data)
        })
        .collect()
}

async fn collection_rows(rill: &Rill, collection: &str) -> BTreeMap<String, Value> {
    rill.records(collection)
        .await
        .into_iter()
        .map(|(id, (data, _))| (id, data))
        .collect()
}

async fn source_state(rill: &Rill) -> Value {
    rill.get("/v1/sources/pg").await["state"].clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn backfill_and_stream_equal_the_tables_through_kills_and_a_postgres_restart() {
    let Some(mut pg) = Postgres::start() else {
        return;
    };
    let began = Instant::now();
    setup(&pg).await;
    let mut rill = Rill::start_with_collection("items").await;
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);

    let stop = Arc::new(AtomicBool::new(false));
    let history = Arc::new(Mutex::new(History::new()));
    let writers: Vec<_> = (0..WRITERS)
        .map(|w| tokio::spawn(writer(pg.url(), w, stop.clone(), history.clone())))
        .collect();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let made = rill
        .send(
            "PUT",
            "/v1/sources/pg",
            json!({ "postgres": {
                "url": pg.url().replace("postgres@", "postgres:secret@"),
                "tables": [
                    { "table": "public.items", "collection": "items" },
                    { "table": "pairs", "collection": "pairs" },
                ],
            }}),
        )
        .await;
    assert_eq!(
        made["config"]["postgres"]["tables"][1]["collection"],
        "pairs"
    );
    assert!(!made.to_string().contains("secret"), "{made}");

    // Killed while it copies, once some rows are written, and made to
    // start over (rows deleted meanwhile must not stay behind).
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let state = source_state(&rill).await;
        let rows = state["backfill"]["rows"].as_u64().unwrap_or(0);
        if rows > 0 {
            assert!(
                rows < ROWS as u64,
                "too late to cut the backfill short: {state}"
            );
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the backfill never began: {state}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    rill.kill_and_restart();
    let copied = Instant::now();
    let deadline = Instant::now() + Duration::from_secs(120);
    let backfilled_at = loop {
        let state = source_state(&rill).await;
        if state["backfilled"] == true {
            eprintln!("backfilled after {:?}", copied.elapsed());
            break Instant::now();
        }
        assert!(Instant::now() < deadline, "never backfilled: {state}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };

    // Streaming: killed twice, and Postgres restarted in between.
    tokio::time::sleep(Duration::from_millis(rng.random_range(100..800))).await;
    rill.kill_and_restart();
    tokio::time::sleep(Duration::from_millis(500)).await;
    pg.stop();
    tokio::time::sleep(Duration::from_millis(500)).await;
    pg.start_again();
    tokio::time::sleep(Duration::from_millis(rng.random_range(300..1000))).await;
    rill.kill_and_restart();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    stop.store(true, Ordering::Relaxed);
    for writer in writers {
        writer.await.unwrap();
    }

    // It catches up with everything committed.
    let deadline = Instant::now() + Duration::from_secs(90);
    for table in ["items", "pairs"] {
        loop {
            let (want, got) = (
                table_rows(&pg, table).await,
                collection_rows(&rill, table).await,
            );
            if want == got {
                break;
            }
            if Instant::now() > deadline {
                let missing: Vec<_> = want
                    .keys()
                    .filter(|k| !got.contains_key(*k))
                    .take(5)
                    .collect();
                let extra: Vec<_> = got
                    .keys()
                    .filter(|k| !want.contains_key(*k))
                    .take(5)
                    .collect();
                let differ: Vec<_> = want
                    .iter()
                    .filter(|(k, v)| got.get(*k).is_some_and(|g| g != *v))
                    .take(2)
                    .collect();
                panic!(
                    "{table}: {} rows, {} records; missing {missing:?}, extra {extra:?}, \
                     differ {differ:?}; source {}",
                    want.len(),
                    got.len(),
                    source_state(&rill).await
                );
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    // Each record's events are its history: in order, each state once,
    // and every state committed after the backfill there.
    let history = history.lock().unwrap().clone();
    let mut events: HashMap<i64, Vec<(Option<i64>, Value)>> = HashMap::new();
    for event in rill.event_values("items").await {
        let id: i64 = event["id"].as_str().unwrap().parse().unwrap();
        let state = match event["event"].as_str().unwrap() {
            "deleted" => None,
            _ => Some(event["data"]["rev"].as_i64().unwrap()),
        };
        events.entry(id).or_default().push((state, event));
    }
    let mut after_backfill = 0;
    for (id, states) in &history {
        let mut full: Vec<(Option<i64>, Instant)> = Vec::new();
        if *id < ROWS {
            full.push((Some(0), began));
        }
        full.extend(states.iter().cloned());
        let seen = events.get(id).cloned().unwrap_or_default();
        let mut at = 0;
        for (i, (state, event)) in seen.iter().enumerate() {
            let found = full[at..].iter().position(|(s, _)| s == state);
            let Some(found) = found else {
                panic!("record {id}: event {event} is not next in its history {full:?}");
            };
            at += found + 1;
            // An update carries the previous values of what it changed.
            if event["event"] == "updated" && i > 0 {
                assert_eq!(
                    event["changes"]["rev"],
                    json!(seen[i - 1].0),
                    "record {id}: {event}"
                );
            }
        }
        for (state, began) in &full {
            if *began > backfilled_at {
                after_backfill += 1;
                assert!(
                    seen.iter().any(|(s, _)| s == state),
                    "record {id}: {state:?} committed after the backfill has no event: {seen:?}"
                );
            }
        }
    }
    let events_total: usize = events.values().map(Vec::len).sum();
    eprintln!(
        "{} rows changed by {} commits, {after_backfill} after the backfill; {events_total} events",
        history.len(),
        history.values().map(Vec::len).sum::<usize>()
    );
    assert!(
        after_backfill > 100,
        "only {after_backfill} changes after the backfill"
    );
    let shown = source_state(&rill).await;
    assert_eq!(shown["state"], "streaming", "{shown}");
    assert!(shown["lag_bytes"].is_u64(), "{shown}");
}

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
