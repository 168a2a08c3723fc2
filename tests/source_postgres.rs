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
