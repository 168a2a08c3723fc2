//! Linearizability of a stream, checked on histories of ten concurrent
//! clients against a live server (appends plain, with `match_seq_num` and
//! with fencing tokens, fence commands, reads, check-tails), and shown to
//! catch what it must: synthetic histories with a lost, duplicated or
//! reordered record or a stale read, and a server over a storage that
//! silently drops writes.
//!
//! `RILL_LIN_HISTORIES=N` runs N histories instead of the default 100.

mod common;
mod lin;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use lin::client::{client_run, final_contents, Base, Recorder, BASIN};
use lin::{check, Call, Op, Outcome, NEVER};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use rill::engine::Engine;
use rill::storage::{BatchOp, Keyspace, MemoryStorage, Storage, WriteBatch};

const CLIENTS: usize = 10;
const OPS_PER_CLIENT: usize = 15;

// Synthetic histories: the checker accepts what is right and refuses
// each kind of wrong.

fn append(client: usize, records: &[&str], invoked: u64, completed: u64, at: u64) -> Op {
    Op {
        client,
        call: Call::Append {
            records: records.iter().map(|r| r.to_string()).collect(),
            match_seq_num: None,
            fencing_token: None,
        },
        invoked,
        completed,
        outcome: Outcome::Appended {
            start: at,
            end: at + records.len() as u64,
        },
    }
}

fn tail(client: usize, invoked: u64, completed: u64, tail: u64) -> Op {
    Op {
        client,
        call: Call::CheckTail,
        invoked,
        completed,
        outcome: Outcome::Tail(tail),
    }
}

fn stream(records: &[&str]) -> Vec<String> {
    records.iter().map(|r| r.to_string()).collect()
}

#[test]
fn the_checker_accepts_a_correct_history() {
    let history = [
        append(0, &["a", "b"], 0, 10, 0),
        append(1, &["c"], 5, 20, 2),
        tail(2, 6, 8, 2),   // between the two appends
        tail(2, 21, 30, 3), // after both
        Op {
            client: 3,
            call: Call::Append {
                records: vec!["lost?".into()],
                match_seq_num: None,
                fencing_token: None,
            },
            invoked: 25,
            completed: NEVER,
            outcome: Outcome::Unknown, // did not happen: allowed
        },
    ];
    check(&history, &stream(&["a", "b", "c"])).unwrap();
}

#[test]
fn the_checker_catches_lost_duplicated_and_reordered_records() {
    let history = [append(0, &["a"], 0, 10, 0), append(1, &["b"], 20, 30, 1)];
    // Lost: an acknowledged record is missing.
    assert!(check(&history, &stream(&["b"])).is_err());
    // Duplicated.
    assert!(check(&history, &stream(&["a", "b", "a"])).is_err());
    // Reordered: `b` was appended after `a` completed, yet comes first.
    let moved = [append(0, &["a"], 0, 10, 1), append(1, &["b"], 20, 30, 0)];
    let err = check(&moved, &stream(&["b", "a"])).unwrap_err();
    assert!(err.contains("not linearizable"), "{err}");
    // A phantom record nobody appended.
    assert!(check(&history, &stream(&["a", "b", "x"])).is_err());
}

#[test]
fn the_checker_catches_stale_reads_and_broken_conditions() {
    let history = [append(0, &["a"], 0, 10, 0), tail(1, 20, 30, 0)];
    let err = check(&history, &stream(&["a"])).unwrap_err();
    assert!(err.contains("not linearizable"), "{err}");
    let read = Op {
        client: 1,
        call: Call::Read { start: 0, count: 5 },
        invoked: 20,
        completed: 30,
        outcome: Outcome::Read {
            records: vec![(0, "z".into())],
            tail: Some(1),
        },
    };
    assert!(check(&[history[0].clone(), read], &stream(&["a"])).is_err());
    // A failed condition whose records were applied anyway.
    let failed = Op {
        client: 2,
        call: Call::Append {
            records: vec!["b".into()],
            match_seq_num: Some(0),
            fencing_token: None,
        },
        invoked: 20,
        completed: 30,
        outcome: Outcome::SeqNumMismatch(1),
    };
    assert!(check(&[history[0].clone(), failed], &stream(&["a", "b"])).is_err());
    // A fenced append that succeeded under another token.
    let fence = append(0, &["FENCE(t1)"], 0, 10, 0);
    let fenced = Op {
        client: 1,
        call: Call::Append {
            records: vec!["b".into()],
            match_seq_num: None,
            fencing_token: Some("t2".into()),
        },
        invoked: 20,
        completed: 30,
        outcome: Outcome::Appended { start: 1, end: 2 },
    };
    assert!(check(&[fence, fenced], &stream(&["FENCE(t1)", "b"])).is_err());
}

// Histories from a live server.

/// Runs one history against a fresh server over `storage`; returns the
/// history and the final contents.
async fn run_history(storage: Arc<dyn Storage>, seed: u64) -> (Vec<Op>, Vec<String>) {
    let engine = Engine::open(storage).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(rill::server::run(listener, engine, async move {
        let _ = stopped.await;
    }));
    let http = reqwest::Client::new();
    common::create_basin_and_stream(&http, &base, BASIN).await;
    let recorder = Arc::new(Recorder {
        started: Instant::now(),
        ops: Mutex::new(Vec::new()),
    });
    let counter = Arc::new(AtomicUsize::new(0));
    let shared: Base = Arc::new(std::sync::RwLock::new(base.clone()));
    let clients: Vec<_> = (0..CLIENTS)
        .map(|c| {
            tokio::spawn(client_run(
                shared.clone(),
                c,
                OPS_PER_CLIENT,
                seed * 1000 + c as u64,
                recorder.clone(),
                counter.clone(),
            ))
        })
        .collect();
    for client in clients {
        client.await.unwrap();
    }
    let contents = final_contents(&base).await;
    let _ = stop.send(());
    let _ = server.await;
    let ops = std::mem::take(&mut *recorder.ops.lock().unwrap());
    (ops, contents)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn histories_from_a_live_server_are_linearizable() {
    let histories: u64 = std::env::var("RILL_LIN_HISTORIES")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(100);
    let (mut ops, mut conditions_failed) = (0, 0);
    for seed in 0..histories {
        let (history, contents) = run_history(Arc::new(MemoryStorage::default()), seed).await;
        ops += history.len();
        conditions_failed += history
            .iter()
            .filter(|op| {
                matches!(
                    op.outcome,
                    Outcome::SeqNumMismatch(_) | Outcome::FencingMismatch(_)
                )
            })
            .count();
        if let Err(violation) = check(&history, &contents) {
            if let Ok(path) = std::env::var("RILL_LIN_DUMP") {
                let mut text = format!("{contents:?}\n");
                for (i, op) in history.iter().enumerate() {
                    text.push_str(&format!("{i}: {op:?}\n"));
                }
                std::fs::write(path, text).unwrap();
            }
            panic!("history {seed} is not linearizable: {violation}");
        }
    }
    eprintln!(
        "{histories} histories, {ops} operations, {conditions_failed} failed conditions: all linearizable"
    );
    assert!(
        conditions_failed > 0,
        "the histories exercised no condition"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_that_loses_writes_fails_the_check() {
    // A disk that silently loses one record in every seventh write.
    let writes = AtomicUsize::new(0);
    let storage = Arc::new(common::faulty::FaultyStorage::new(
        move |batch: &mut WriteBatch| {
            if writes.fetch_add(1, Ordering::Relaxed) % 7 == 6 {
                let first_record = batch
                    .ops
                    .iter()
                    .position(|op| matches!(op, BatchOp::Put(Keyspace::StreamRecords, ..)));
                if let Some(at) = first_record {
                    batch.ops.remove(at);
                }
            }
            None
        },
    ));
    let (history, contents) = run_history(storage, 42).await;
    let violation = check(&history, &contents).expect_err("lost writes must be caught");
    eprintln!("caught: {violation}");
}

/// Histories over a storage whose writes fail now and then, as a short
/// write (nothing stored) or a failed fsync (stored, yet reported failed),
/// each with an I/O error or a full disk:
/// the engine restarts in-process after each, and every history must
/// still be linearizable, with the failed writes' outcomes unknown and
/// the writes refused meanwhile (`503`, `507`) absent.
/// `RILL_LIN_FAULT_HISTORIES=N` runs N histories instead of 20.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn histories_with_failing_writes_are_linearizable() {
    use common::faulty::{Fault, FaultyStorage};
    use rill::storage::StorageError;
    let histories: u64 = std::env::var("RILL_LIN_FAULT_HISTORIES")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(20);
    let faults = Arc::new(AtomicUsize::new(0));
    let (mut ops, mut refused, mut unknown) = (0, 0, 0);
    for seed in 0..histories {
        let rng = Mutex::new(StdRng::seed_from_u64(seed));
        let injected = faults.clone();
        let writes = AtomicUsize::new(0);
        let storage = Arc::new(FaultyStorage::new(move |batch: &mut WriteBatch| {
            // Not a probe before a reopen, nor the basin's and stream's
            // creation.
            if batch.is_empty() || writes.fetch_add(1, Ordering::Relaxed) < 4 {
                return None;
            }
            let full = || StorageError::Full("No space left on device (os error 28)".into());
            let fault = match rng.lock().unwrap().random_range(0..40) {
                0 => Fault::Refuse(StorageError::Io("short write".into())),
                1 => Fault::FailAfterWriting(StorageError::Io("fsync: EIO".into())),
                2 => Fault::Refuse(full()),
                // ENOSPC from fsync (XFS, NFS): the data may be there.
                3 => Fault::FailAfterWriting(full()),
                _ => return None,
            };
            injected.fetch_add(1, Ordering::Relaxed);
            Some(fault)
        }));
        let (history, contents) = run_history(storage, seed).await;
        if let Err(violation) = check(&history, &contents) {
            panic!("history {seed} with failing writes is not linearizable: {violation}");
        }
        ops += history.len();
        refused += history
            .iter()
            .filter(|op| matches!(op.outcome, Outcome::Refused))
            .count();
        unknown += history
            .iter()
            .filter(|op| matches!(op.outcome, Outcome::Unknown))
            .count();
    }
    let faults = faults.load(Ordering::Relaxed);
    eprintln!(
        "{histories} histories, {ops} operations, {faults} failed writes injected \
         ({unknown} outcomes unknown, {refused} appends refused while restarting): \
         all linearizable"
    );
    assert!(faults > 0 && unknown > 0, "no write failed");
}

/// Histories against the real binary, killed with SIGKILL mid-way and
/// restarted on the same data: what was acknowledged must survive, and
/// what was in flight counts as unknown.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn histories_across_a_kill_are_linearizable() {
    const KILLED_HISTORIES: u64 = 5;
    const OPS: usize = 40;
    let mut total = 0;
    for seed in 0..KILLED_HISTORIES {
        let dir = tempfile::tempdir().unwrap();
        let server = common::binary::RillProcess::start(dir.path());
        let http = reqwest::Client::new();
        common::create_basin_and_stream(&http, &server.base, BASIN).await;
        let recorder = Arc::new(Recorder {
            started: Instant::now(),
            ops: Mutex::new(Vec::new()),
        });
        let counter = Arc::new(AtomicUsize::new(0));
        let base: Base = Arc::new(std::sync::RwLock::new(server.base.clone()));
        let clients: Vec<_> = (0..CLIENTS)
            .map(|c| {
                tokio::spawn(client_run(
                    base.clone(),
                    c,
                    OPS,
                    10_000 + seed * 1000 + c as u64,
                    recorder.clone(),
                    counter.clone(),
                ))
            })
            .collect();
        // Kill once a third of the operations are done, mid-flight.
        let deadline = Instant::now() + Duration::from_secs(30);
        while recorder.ops.lock().unwrap().len() < CLIENTS * OPS / 3 && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        server.kill();
        let restarted = common::binary::RillProcess::start(dir.path());
        *base.write().unwrap() = restarted.base.clone();
        for client in clients {
            client.await.unwrap();
        }
        let contents = final_contents(&restarted.base).await;
        restarted.kill();
        let history = std::mem::take(&mut *recorder.ops.lock().unwrap());
        let unknown = history
            .iter()
            .filter(|op| matches!(op.outcome, Outcome::Unknown))
            .count();
        assert!(unknown > 0, "history {seed}: the kill cut nothing off");
        total += history.len();
        if let Err(violation) = check(&history, &contents) {
            panic!("killed history {seed} is not linearizable: {violation}");
        }
    }
    eprintln!(
        "{KILLED_HISTORIES} histories across a SIGKILL, {total} operations: all linearizable"
    );
}
