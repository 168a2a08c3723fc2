//! Sinks to Postgres, Redis and NATS JetStream, each against the real
//! server on loopback (see `common/services.rs`): under concurrent writes,
//! through a SIGKILL of Rill and through the destination stopped for a few
//! seconds and started again, the destination ends equal to the source,
//! each change once, in order.

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use common::services::{Daemon, Postgres};
use common::sink_scenario::{converges, create_sink, through_kill_and_outage, Rill};
use common::BASIN;
use serde_json::{json, Value};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_table_equals_the_collection_exactly_once() {
    let Some(mut pg) = Postgres::start() else {
        return;
    };
    let mut rill = Rill::start_with_collection("users").await;
    let destination = json!({ "postgres": {
        "url": pg.url(), "table": "public.users", "create_table": true, "timeout_ms": 2000
    }});
    let source = json!({ "collection": "users", "feed": "records" });
    create_sink(&rill, "pg", source, destination).await;
    through_kill_and_outage(&mut rill, "users", "pg", &mut pg).await;

    let source = rill.records("users").await;
    assert!(source.len() > 10, "{}", source.len());
    converges("postgres", source, || async {
        let client = pg.client().await;
        let rows = client
            .query("SELECT id, data::text, version FROM users", &[])
            .await
            .unwrap();
        rows.iter()
            .map(|row| {
                let data: String = row.get(1);
                let version: i64 = row.get(2);
                (
                    row.get::<_, String>(0),
                    (serde_json::from_str(&data).unwrap(), version as u64),
                )
            })
            .collect::<BTreeMap<String, (Value, u64)>>()
    })
    .await;
    // The position is kept beside the rows, in the same transactions.
    let client = pg.client().await;
    let positions = client
        .query("SELECT sink FROM rill_sink_positions", &[])
        .await
        .unwrap();
    assert_eq!(positions.len(), 1);

    // What lies at or before the kept position is taken as delivered (its
    // ack was lost): moved past everything, a new write is skipped, not
    // written twice; the sink acks it and goes on.
    client
        .execute(
            "UPDATE rill_sink_positions SET position = '\\xffffffffffffffff'",
            &[],
        )
        .await
        .unwrap();
    rill.send(
        "PUT",
        "/v1/collections/users/records/skipped",
        json!({ "n": 1 }),
    )
    .await;
    let deadline = Instant::now() + Duration::from_secs(30);
    while rill.get("/v1/sinks/pg").await["state"]["lag"] != 0 {
        assert!(Instant::now() < deadline, "the sink acks the skipped write");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let skipped = client
        .query("SELECT 1 FROM users WHERE id = 'skipped'", &[])
        .await
        .unwrap();
    assert!(
        skipped.is_empty(),
        "a message at or before the position is not written again"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_stream_holds_every_event_once_in_order() {
    let Some(mut redis) = Daemon::redis() else {
        return;
    };
    let url = format!("redis://127.0.0.1:{}", redis.port);
    let mut rill = Rill::start_with_collection("orders").await;
    let destination = json!({ "redis": { "url": url, "stream": "orders", "timeout_ms": 2000 } });
    create_sink(
        &rill,
        "to-redis",
        json!({ "collection": "orders" }),
        destination,
    )
    .await;
    through_kill_and_outage(&mut rill, "orders", "to-redis", &mut redis).await;
    let port = redis.port;

    let source = rill.events("orders").await;
    let client = redis::Client::open(format!("redis://127.0.0.1:{port}")).unwrap();
    converges("redis", source, || async {
        let Ok(mut connection) = client.get_multiplexed_async_connection().await else {
            return Vec::new();
        };
        let entries: redis::streams::StreamRangeReply = redis::cmd("XRANGE")
            .arg("orders")
            .arg("-")
            .arg("+")
            .query_async(&mut connection)
            .await
            .unwrap();
        entries
            .ids
            .iter()
            .map(|entry| {
                let text = |field: &str| entry.get::<String>(field).unwrap();
                (text("event"), text("id"), text("version").parse().unwrap())
            })
            .collect::<Vec<(String, String, u64)>>()
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nats_jetstream_holds_every_event_once_in_order() {
    let Some(mut nats) = Daemon::nats(&["--user", "rill", "--pass", "s/cret"]) else {
        return;
    };
    // Credentials in the URL, percent-encoded as URLs have them.
    let url = format!("nats://rill:s%2Fcret@127.0.0.1:{}", nats.port);
    let mut rill = Rill::start_with_collection("orders").await;
    let destination = json!({ "nats": {
        "url": url, "subject": "rill.{collection}.{key}", "create_stream": "ORDERS",
        "timeout_ms": 2000
    }});
    create_sink(
        &rill,
        "to-nats",
        json!({ "collection": "orders" }),
        destination,
    )
    .await;
    let shown = rill.get("/v1/sinks/to-nats").await.to_string();
    assert!(
        !shown.contains("cret") && !shown.contains("rill:"),
        "{shown}"
    );
    through_kill_and_outage(&mut rill, "orders", "to-nats", &mut nats).await;
    let port = nats.port;

    let source = rill.events("orders").await;
    converges("nats", source, || async {
        let client =
            async_nats::ConnectOptions::with_user_and_password("rill".into(), "s/cret".into())
                .connect(format!("nats://127.0.0.1:{port}"))
                .await;
        let Ok(client) = client else {
            return Vec::new();
        };
        let js = async_nats::jetstream::new(client);
        let Ok(mut stream) = js.get_stream("ORDERS").await else {
            return Vec::new();
        };
        let last = stream.info().await.unwrap().state.last_sequence;
        let mut out = Vec::new();
        for seq in 1..=last {
            let message = stream.get_raw_message(seq).await.unwrap();
            let event: Value = serde_json::from_slice(&message.payload).unwrap();
            assert_eq!(
                message.subject.as_str(),
                format!("rill.orders.{}", event["id"].as_str().unwrap())
            );
            out.push((
                event["event"].as_str().unwrap().to_string(),
                event["id"].as_str().unwrap().to_string(),
                event["version"].as_u64().unwrap(),
            ));
        }
        out
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_keeps_streams_by_seq_num_and_dead_letters_what_it_refuses() {
    let Some(pg) = Postgres::start() else { return };
    let rill = Rill::start_with_collection("docs").await;
    rill.send("POST", "/v1/streams", json!({ "stream": "log" }))
        .await;
    for (name, source, table) in [
        ("log-table", json!({ "stream": "log" }), "log"),
        ("docs-table", json!({ "collection": "docs" }), "docs"),
    ] {
        rill.send(
            "PUT",
            &format!("/v1/sinks/{name}"),
            json!({
                "source": source,
                "destination": { "postgres": { "url": pg.url(), "table": table, "create_table": true } },
                "max_batch": 10,
                "max_deliver": 2,
                "retry": { "initial_ms": 50, "max_ms": 500 }
            }),
        )
        .await;
    }
    let records: Vec<Value> = (0..25)
        .map(
            |i| json!({ "headers": [["key", format!("k{}", i % 3)]], "body": format!("body {i}") }),
        )
        .collect();
    rill.send(
        "POST",
        "/v1/streams/log/records",
        json!({ "records": records }),
    )
    .await;
    // `jsonb` refuses a NUL in a string (SQLSTATE 22P05): that change is
    // the message's fault, and goes to the dead letters alone.
    rill.send(
        "POST",
        "/v1/collections/docs/records",
        json!({ "upserts": [
            { "id": "a", "data": { "n": 1 } },
            { "id": "poison", "data": { "s": "nul\u{0}here" } },
            { "id": "b", "data": { "n": 2 } },
        ]}),
    )
    .await;

    let client = pg.client().await;
    let wanted: Vec<(i64, String, String)> = (0..25)
        .map(|i| {
            (
                i,
                format!("body {i}"),
                format!(r#"[["key", "k{}"]]"#, i % 3),
            )
        })
        .collect();
    converges("stream rows", wanted, || async {
        let rows = client
            .query(
                "SELECT seq_num, body, headers::text FROM log ORDER BY seq_num",
                &[],
            )
            .await
            .unwrap_or_default();
        rows.iter()
            .map(|row| {
                let body: Vec<u8> = row.get(1);
                (row.get(0), String::from_utf8(body).unwrap(), row.get(2))
            })
            .collect::<Vec<(i64, String, String)>>()
    })
    .await;
    converges(
        "collection rows",
        vec!["a".to_string(), "b".to_string()],
        || async {
            let rows = client
                .query("SELECT id FROM docs ORDER BY id", &[])
                .await
                .unwrap_or_default();
            rows.iter().map(|row| row.get(0)).collect::<Vec<String>>()
        },
    )
    .await;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let state = rill.get("/v1/sinks/docs-table").await["state"].clone();
        if state["dead_lettered"] == 1 {
            assert!(
                state["last_error"].as_str().unwrap().contains("22P05"),
                "{state}"
            );
            break;
        }
        assert!(Instant::now() < deadline, "{state}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // A replayed dead letter would lie behind the kept position, skipped
    // and acked unwritten: refused, as key ordering is.
    let resp = rill
        .http
        .post(format!(
            "{}/v1/consumers/_sink.docs-table/replay",
            rill.base()
        ))
        .header("s2-basin", BASIN)
        .json(&json!({ "dead_letters": [0] }))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 409);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["code"], "sink_keeps_position", "{body}");
    let resp = rill
        .http
        .put(format!("{}/v1/sinks/ordered", rill.base()))
        .header("s2-basin", BASIN)
        .json(&json!({
            "source": { "collection": "docs" },
            "destination": { "postgres": { "url": pg.url(), "table": "docs" } },
            "ordered_by_key": true
        }))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 422);
}
