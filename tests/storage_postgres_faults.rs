//! The Postgres store rides out connections the database drops (an
//! administrator's `pg_terminate_backend`, a failover): reads and write
//! transactions that failed before their `COMMIT` are tried again on a
//! new connection, so none of them fails.
//!
//! Needs Debian's `postgresql` (skipped without it unless
//! `RILL_REQUIRE_SERVICES` is set).

mod common;

use std::ops::ControlFlow;
use std::time::{Duration, Instant};

use common::services::Postgres;
use rill::storage::{Keyspace, PostgresStorage, Storage, WriteBatch};

const ROUNDS: usize = 40;

#[test]
fn reads_and_writes_ride_out_dropped_connections() {
    let Some(pg) = Postgres::start() else { return };
    let store = PostgresStorage::open(&pg.database("dropped_connections")).unwrap();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let admin = runtime.block_on(pg.client());
    let mut batch = WriteBatch::default();
    for k in 0..ROUNDS as u32 {
        batch.put(Keyspace::Meta, k.to_be_bytes().to_vec(), b"before".to_vec());
    }
    store.write(batch).unwrap();

    for round in 0..ROUNDS {
        // Every connection of the store, cut, and gone before the store
        // next uses one (a connection cut during a COMMIT would leave that
        // write's outcome unknown: an error, rightly).
        let cut: Vec<i32> = runtime
            .block_on(admin.query(
                "WITH store AS MATERIALIZED \
                 (SELECT pid FROM pg_stat_activity WHERE application_name = 'rill') \
                 SELECT pid FROM store WHERE pg_terminate_backend(pid)",
                &[],
            ))
            .unwrap()
            .iter()
            .map(|row| row.get(0))
            .collect();
        assert!(!cut.is_empty(), "round {round}: no connection to cut");
        let deadline = Instant::now() + Duration::from_secs(10);
        let lingering = "SELECT count(*) FROM pg_stat_activity WHERE pid = ANY($1)";
        while runtime
            .block_on(admin.query_one(lingering, &[&cut]))
            .unwrap()
            .get::<_, i64>(0)
            > 0
        {
            assert!(Instant::now() < deadline, "the cut connections linger");
            std::thread::sleep(Duration::from_millis(5));
        }
        let key = (round as u32).to_be_bytes().to_vec();
        assert_eq!(
            store.get(Keyspace::Meta, &key).unwrap().as_deref(),
            Some(&b"before"[..]),
            "round {round}: a read"
        );
        let mut batch = WriteBatch::default();
        batch.put(
            Keyspace::Meta,
            key.clone(),
            format!("after {round}").into_bytes(),
        );
        store
            .write(batch)
            .unwrap_or_else(|e| panic!("round {round}: a write failed: {e}"));
    }

    let mut seen = Vec::new();
    store
        .scan(Keyspace::Meta, &[], &[0xff], &mut |key, value| {
            seen.push((key.to_vec(), value.to_vec()));
            ControlFlow::Continue(())
        })
        .unwrap();
    let expected: Vec<(Vec<u8>, Vec<u8>)> = (0..ROUNDS as u32)
        .map(|k| (k.to_be_bytes().to_vec(), format!("after {k}").into_bytes()))
        .collect();
    assert_eq!(seen, expected);
}
