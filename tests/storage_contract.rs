//! The storage contract, one property test for every backend: random
//! write batches (puts and deletes, the same key touched several times in
//! one batch), then point reads, range scans (stopped early too) and
//! last-in-range lookups, each compared with a plain ordered map. Run
//! against memory, fjall and Postgres (a real one, started on loopback
//! from Debian's `postgresql`; skipped without it unless
//! `RILL_REQUIRE_SERVICES` is set).

mod common;

use std::collections::BTreeMap;
use std::ops::ControlFlow;
use std::sync::atomic::{AtomicUsize, Ordering};

use common::services::Postgres;
use proptest::prelude::*;
use proptest::test_runner::TestRunner;
use rill::storage::{FjallStorage, Keyspace, MemoryStorage, PostgresStorage, Storage, WriteBatch};

type Model = BTreeMap<(usize, Vec<u8>), Vec<u8>>;

#[derive(Clone, Debug)]
enum Op {
    Put(usize, Vec<u8>, Vec<u8>),
    Delete(usize, Vec<u8>),
}

#[derive(Clone, Debug)]
enum Step {
    Write(Vec<Op>),
    /// Many keys at once: more than a page of a Postgres scan.
    Bulk(usize, u16),
    Check,
}

/// Keys from a small alphabet, so batches overlap, with 0x00 and 0xFF
/// bytes (order is bytewise). As the engine's keys: never empty, and never
/// starting with 0xFF (a store keeps its own keys there, in `meta`).
fn key() -> impl Strategy<Value = Vec<u8>> {
    let byte = || prop::sample::select(vec![0u8, 1, b'a', b'b', 0x7f, 0xff]);
    let first = prop::sample::select(vec![0u8, 1, b'a', b'b', 0x7f]);
    (first, prop::collection::vec(byte(), 0..3)).prop_map(|(first, rest)| {
        let mut key = vec![first];
        key.extend(rest);
        key
    })
}

fn op() -> impl Strategy<Value = Op> {
    let keyspace = 0..Keyspace::ALL.len();
    prop_oneof![
        3 => (keyspace.clone(), key(), prop::collection::vec(any::<u8>(), 0..8))
            .prop_map(|(ks, k, v)| Op::Put(ks, k, v)),
        1 => (keyspace, key()).prop_map(|(ks, k)| Op::Delete(ks, k)),
    ]
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        6 => prop::collection::vec(op(), 0..12).prop_map(Step::Write),
        1 => (0..Keyspace::ALL.len(), 1000u16..2600).prop_map(|(ks, n)| Step::Bulk(ks, n)),
        3 => Just(Step::Check),
    ]
}

fn apply(store: &dyn Storage, model: &mut Model, ops: Vec<Op>) {
    let mut batch = WriteBatch::default();
    for op in ops {
        match op {
            Op::Put(ks, k, v) => {
                model.insert((ks, k.clone()), v.clone());
                batch.put(Keyspace::ALL[ks], k, v);
            }
            Op::Delete(ks, k) => {
                model.remove(&(ks, k.clone()));
                batch.delete(Keyspace::ALL[ks], k);
            }
        }
    }
    store.write(batch).expect("write");
}

/// Every read the engine uses, over every keyspace and a few ranges.
fn check(store: &dyn Storage, model: &Model) {
    let bounds: [&[u8]; 6] = [b"", &[0], &[1], b"a", b"b\xff", &[0xff]];
    for (ks, keyspace) in Keyspace::ALL.iter().enumerate() {
        for key in [&[0u8][..], b"a", &[0x7f, 0xff], b"ab"] {
            assert_eq!(
                store.get(*keyspace, key).unwrap(),
                model.get(&(ks, key.to_vec())).cloned(),
                "get {keyspace:?} {key:?}"
            );
        }
        for start in bounds {
            for end in bounds {
                let expected: Vec<(Vec<u8>, Vec<u8>)> = if start < end {
                    model
                        .range((ks, start.to_vec())..(ks, end.to_vec()))
                        .map(|((_, k), v)| (k.clone(), v.clone()))
                        .collect()
                } else {
                    Vec::new()
                };
                let mut seen = Vec::new();
                store
                    .scan(*keyspace, start, end, &mut |k, v| {
                        seen.push((k.to_vec(), v.to_vec()));
                        ControlFlow::Continue(())
                    })
                    .unwrap();
                same(
                    &seen,
                    &expected,
                    &format!("scan {keyspace:?} {start:?}..{end:?}"),
                );
                // Stopped after three.
                let mut first = Vec::new();
                store
                    .scan(*keyspace, start, end, &mut |k, _| {
                        first.push(k.to_vec());
                        if first.len() == 3 {
                            ControlFlow::Break(())
                        } else {
                            ControlFlow::Continue(())
                        }
                    })
                    .unwrap();
                let want: Vec<Vec<u8>> = expected.iter().take(3).map(|(k, _)| k.clone()).collect();
                assert_eq!(first, want, "scan break {keyspace:?}");
                assert_eq!(
                    store.last_in_range(*keyspace, start, end).unwrap(),
                    expected.last().cloned(),
                    "last_in_range {keyspace:?} {start:?}..{end:?}"
                );
            }
        }
    }
}

/// `got == expected`, said briefly: where they part, not thousands of keys.
fn same(got: &[(Vec<u8>, Vec<u8>)], expected: &[(Vec<u8>, Vec<u8>)], what: &str) {
    if got == expected {
        return;
    }
    let at = got.iter().zip(expected).position(|(g, e)| g != e);
    panic!(
        "{what}: {} entries, expected {}; first difference at {at:?}: {:?} vs {:?}",
        got.len(),
        expected.len(),
        at.and_then(|i| got.get(i)),
        at.and_then(|i| expected.get(i)),
    );
}

fn run(store: &dyn Storage, steps: Vec<Step>) {
    let mut model = Model::new();
    for step in steps {
        match step {
            Step::Write(ops) => apply(store, &mut model, ops),
            Step::Bulk(ks, n) => {
                let ops = (0..n)
                    .map(|i| Op::Put(ks, format!("bulk{i:05}").into_bytes(), vec![i as u8]))
                    .collect();
                apply(store, &mut model, ops);
            }
            Step::Check => check(store, &model),
        }
    }
    check(store, &model);
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, max_shrink_iters: 100, ..ProptestConfig::default() })]

    #[test]
    fn memory_keeps_the_contract(steps in prop::collection::vec(step(), 1..12)) {
        run(&MemoryStorage::default(), steps);
    }

    #[test]
    fn fjall_keeps_the_contract(steps in prop::collection::vec(step(), 1..12)) {
        let dir = tempfile::tempdir().unwrap();
        run(&FjallStorage::open(dir.path()).unwrap(), steps);
    }
}

/// The same property on Postgres: one server for the test (stopped when
/// it ends), a new database per case.
#[test]
fn postgres_keeps_the_contract() {
    let Some(server) = Postgres::start() else {
        return;
    };
    let cases = AtomicUsize::new(0);
    let mut runner = TestRunner::new(ProptestConfig {
        cases: 24,
        max_shrink_iters: 100,
        ..ProptestConfig::default()
    });
    let result = runner.run(&prop::collection::vec(step(), 1..12), |steps| {
        let url = server.database(&format!(
            "contract_{}",
            cases.fetch_add(1, Ordering::Relaxed)
        ));
        run(&PostgresStorage::open(&url).unwrap(), steps);
        Ok(())
    });
    if let Err(failure) = result {
        panic!("{failure}");
    }
}

/// What a store holds survives reopening it: durable, not cached.
#[test]
fn postgres_keeps_what_it_wrote_across_a_reopen() {
    let Some(server) = Postgres::start() else {
        return;
    };
    let url = server.database("reopened");
    let mut model = Model::new();
    {
        let store = PostgresStorage::open(&url).unwrap();
        apply(
            &store,
            &mut model,
            vec![
                Op::Put(1, b"a".to_vec(), b"1".to_vec()),
                Op::Put(1, b"b".to_vec(), b"2".to_vec()),
                Op::Delete(1, b"a".to_vec()),
                Op::Put(0, b"a".to_vec(), b"3".to_vec()),
            ],
        );
    }
    // A second opening finds the schema made, and the data.
    let store = PostgresStorage::open(&url).unwrap();
    check(&store, &model);
}

/// One process writes a database at a time: a second one opening it
/// fences the first off, whose writes then fail, and whose reopening
/// (what the engine does after a failed write) fails too.
#[test]
fn a_second_process_fences_the_first_off() {
    let Some(server) = Postgres::start() else {
        return;
    };
    let url = server.database("fenced");
    let first = PostgresStorage::open(&url).unwrap();
    let mut model = Model::new();
    apply(
        &first,
        &mut model,
        vec![Op::Put(1, b"a".to_vec(), b"1".to_vec())],
    );
    let second = PostgresStorage::open(&url).unwrap();
    let mut batch = WriteBatch::default();
    batch.put(Keyspace::StreamRecords, b"b".to_vec(), b"late".to_vec());
    let refused = first.write(batch).unwrap_err();
    assert!(refused.to_string().contains("took over"), "{refused}");
    assert!(
        first.reopen().is_err(),
        "the fenced process took the database back"
    );
    // Nothing of the fenced write is there; the new owner writes on.
    check(&second, &model);
    apply(
        &second,
        &mut model,
        vec![Op::Put(1, b"c".to_vec(), b"2".to_vec())],
    );
    second.reopen().unwrap();
    apply(&second, &mut model, vec![Op::Delete(1, b"a".to_vec())]);
    check(&second, &model);
}

/// In a cluster the database is held as a lease: taken only once the one
/// before has ended, and taking it fences the holder before off for good,
/// however late its writes come (a node paused past its lease).
#[test]
fn a_lease_is_taken_only_once_ended_and_fences_the_holder_before() {
    let Some(server) = Postgres::start() else {
        return;
    };
    let url = server.database("leased");
    let ttl = std::time::Duration::from_millis(1500);
    let watch_a = PostgresStorage::connect(&url).unwrap();
    let watch_b = PostgresStorage::connect(&url).unwrap();
    // Connected, not owning: writes refused.
    let mut batch = WriteBatch::default();
    batch.put(Keyspace::StreamRecords, b"x".to_vec(), b"0".to_vec());
    assert!(watch_a.write(batch).is_err(), "a store with no lease wrote");

    let a = watch_a
        .take_lease("a", "127.0.0.1:1", ttl)
        .unwrap()
        .expect("a takes it");
    let mut model = Model::new();
    apply(
        &a,
        &mut model,
        vec![Op::Put(1, b"a".to_vec(), b"1".to_vec())],
    );
    assert!(
        watch_b
            .take_lease("b", "127.0.0.1:2", ttl)
            .unwrap()
            .is_none(),
        "b took a lease still running"
    );
    let holder = watch_b.lease_holder().unwrap().unwrap();
    assert_eq!(holder.node.as_deref(), Some("a"));
    assert_eq!(holder.address.as_deref(), Some("127.0.0.1:1"));
    assert!(!holder.ended);
    // Renewed, it keeps running past its first end.
    std::thread::sleep(ttl / 2);
    assert!(a.renew_lease("a", ttl).unwrap());
    std::thread::sleep(ttl * 3 / 4);
    assert!(watch_b
        .take_lease("b", "127.0.0.1:2", ttl)
        .unwrap()
        .is_none());

    // Not renewed (a is paused, say), it ends, and b takes it over.
    std::thread::sleep(ttl + std::time::Duration::from_millis(200));
    assert!(watch_b.lease_holder().unwrap().unwrap().ended);
    let b = watch_b
        .take_lease("b", "127.0.0.1:2", ttl)
        .unwrap()
        .expect("b takes it");
    let taken = watch_a.lease_holder().unwrap().unwrap();
    assert_eq!(taken.node.as_deref(), Some("b"));
    assert!(taken.epoch > holder.epoch, "the takeover kept the epoch");
    let mut batch = WriteBatch::default();
    batch.put(Keyspace::StreamRecords, b"late".to_vec(), b"a".to_vec());
    let refused = a.write(batch).unwrap_err();
    assert!(refused.to_string().contains("took over"), "{refused}");
    assert!(!a.renew_lease("a", ttl).unwrap(), "a renewed b's lease");
    assert!(a.reopen().is_err(), "a took the database back");
    check(&b, &model);
    apply(
        &b,
        &mut model,
        vec![Op::Put(1, b"b".to_vec(), b"2".to_vec())],
    );
    check(&b, &model);

    // Released, the lease is free at once.
    b.release_lease("b").unwrap();
    assert!(
        !b.renew_lease("b", ttl).unwrap(),
        "a late renewal revived a released lease"
    );
    let mut batch = WriteBatch::default();
    batch.put(Keyspace::StreamRecords, b"after".to_vec(), b"b".to_vec());
    assert!(b.write(batch).is_err(), "b wrote after releasing");
    let c = watch_a
        .take_lease("c", "127.0.0.1:3", ttl)
        .unwrap()
        .expect("c takes it");
    check(&c, &model);
    // A process outside the cluster does not fence it off.
    let refused = PostgresStorage::open(&url)
        .err()
        .expect("opened a cluster's database");
    assert!(refused.contains("--cluster"), "{refused}");
    apply(
        &c,
        &mut model,
        vec![Op::Put(1, b"c".to_vec(), b"3".to_vec())],
    );
    // The engine's reopen raises the epoch; the lease is renewed still.
    c.reopen().unwrap();
    assert!(c.renew_lease("c", ttl).unwrap(), "a reopen lost the lease");
    apply(
        &c,
        &mut model,
        vec![Op::Put(1, b"d".to_vec(), b"4".to_vec())],
    );
    check(&c, &model);

    // Heartbeats list the nodes.
    watch_a.heartbeat("a", "127.0.0.1:1", ttl * 10).unwrap();
    watch_b.heartbeat("b", "127.0.0.1:2", ttl * 10).unwrap();
    let nodes = watch_a.nodes().unwrap();
    let ids: Vec<&str> = nodes.iter().map(|n| n.id.as_str()).collect();
    assert_eq!(ids, ["a", "b"]);
    assert!(nodes.iter().all(|n| n.silent_for < ttl * 10));
}

/// `rill serve --storage postgres://…`: the real binary keeps what it
/// acknowledged in Postgres, through a SIGKILL.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_server_keeps_its_streams_in_postgres_through_a_kill() {
    let Some(server) = Postgres::start() else {
        return;
    };
    let url = server.database("served");
    let dir = tempfile::tempdir().unwrap();
    let http = reqwest::Client::new();
    let rill = common::binary::RillProcess::try_start_with(dir.path(), &["--storage", &url])
        .expect("rill starts on Postgres");
    let basin = "pg-basin-1";
    let resp = http
        .put(format!("{}/v1/basins/{basin}", rill.base))
        .send()
        .await
        .unwrap();
    assert!(resp.status().is_success(), "{}", resp.status());
    let resp = http
        .put(format!("{}/v1/streams/s", rill.base))
        .header("s2-basin", basin)
        .send()
        .await
        .unwrap();
    assert!(resp.status().is_success(), "{}", resp.status());
    for i in 0..20 {
        let resp = http
            .post(format!("{}/v1/streams/s/records", rill.base))
            .header("s2-basin", basin)
            .json(&serde_json::json!({"records": [{"body": format!("r{i}")}]}))
            .send()
            .await
            .unwrap();
        assert!(resp.status().is_success(), "{}", resp.text().await.unwrap());
    }
    rill.kill();
    // Nothing was kept on the local disk: restarted over another, empty,
    // directory, it finds everything in Postgres.
    assert_eq!(
        std::fs::read_dir(dir.path()).unwrap().count(),
        0,
        "files in the data dir"
    );
    let elsewhere = tempfile::tempdir().unwrap();
    let rill = common::binary::RillProcess::try_start_with(elsewhere.path(), &["--storage", &url])
        .expect("rill starts again");
    let batch: serde_json::Value = http
        .get(format!("{}/v1/streams/s/records?seq_num=0", rill.base))
        .header("s2-basin", basin)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let expected: Vec<String> = (0..20).map(|i| format!("r{i}")).collect();
    assert_eq!(common::bodies(&batch), expected);
}
