//! Property test: random appends (with and without `match_seq_num` and
//! fencing tokens), fences, trims, reads, background upkeep and restarts,
//! run against the engine and against a plain in-memory model, with the
//! engine on fjall and on Postgres (a real one, started on loopback from
//! Debian's `postgresql`; skipped without it unless
//! `RILL_REQUIRE_SERVICES` is set). Every result must match the model,
//! before and after every restart.

mod common;

use std::sync::Arc;

use bytes::Bytes;
use proptest::prelude::*;
use rill::engine::error::EngineError;
use rill::engine::streams::config::{
    BasinConfigPatch, InfiniteRetention, RetentionPolicy, StreamConfigPatch, TimestampingPatch,
};
use rill::engine::streams::names::{BasinName, StreamName};
use rill::engine::streams::types::{AppendInput, AppendRecord, Header, ReadLimits, ReadStart};
use rill::engine::streams::ReadRequest;
use rill::engine::Engine;
use rill::storage::{FjallStorage, PostgresStorage, Storage};

const BASIN: &str = "model-basin";
const STREAM: &str = "s";

#[derive(Clone, Debug)]
enum Condition {
    None,
    Right,
    Wrong,
}

#[derive(Clone, Debug)]
enum Op {
    Append {
        records: Vec<(Vec<u8>, u64)>,
        match_seq: Condition,
        fencing: Condition,
    },
    /// Many records (more than a Timestamps index stride), `every` of
    /// them per timestamp, small ones or ones big enough to reach the
    /// stride's byte bound first.
    Bulk {
        count: usize,
        every: u64,
        big: bool,
    },
    Fence(String),
    Trim(u64),
    Read {
        start: ReadStart,
        count: Option<u64>,
    },
    Upkeep,
    Restart,
}

fn condition() -> impl Strategy<Value = Condition> {
    prop_oneof![
        3 => Just(Condition::None),
        2 => Just(Condition::Right),
        1 => Just(Condition::Wrong),
    ]
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        8 => (
            prop::collection::vec((prop::collection::vec(any::<u8>(), 0..20), 0u64..500), 1..5),
            condition(),
            condition()
        )
            .prop_map(|(records, match_seq, fencing)| Op::Append { records, match_seq, fencing }),
        1 => (1usize..700, 1u64..40, prop::bool::weighted(0.2))
            .prop_map(|(count, every, big)| Op::Bulk { count: if big { count.min(80) } else { count }, every, big }),
        1 => prop::sample::select(vec!["", "a", "token-b"]).prop_map(|t| Op::Fence(t.to_string())),
        1 => (0u64..40).prop_map(Op::Trim),
        4 => (
            prop_oneof![
                (0u64..40).prop_map(ReadStart::SeqNum),
                (0u64..1200).prop_map(ReadStart::Timestamp),
                (0u64..40).prop_map(ReadStart::TailOffset),
            ],
            prop::option::of(0u64..8)
        )
            .prop_map(|(start, count)| Op::Read { start, count }),
        1 => Just(Op::Upkeep),
        1 => Just(Op::Restart),
    ]
}

/// The model: the stream as a plain vector.
#[derive(Default)]
struct Model {
    /// (timestamp, body) by seq num, trimmed ones included.
    records: Vec<(u64, Vec<u8>)>,
    /// The metered size of each record (S2's: 8 bytes, 2 per header, and
    /// the payload).
    metered: Vec<usize>,
    trim_point: u64,
    token: String,
}

impl Model {
    fn tail(&self) -> u64 {
        self.records.len() as u64
    }

    fn last_ts(&self) -> u64 {
        self.records.last().map_or(0, |r| r.0)
    }

    /// Appends with the engine's timestamp rule (uncapped client
    /// timestamps, raised to never decrease); returns the first seq num.
    fn push(&mut self, ts: u64, body: Vec<u8>) -> u64 {
        let ts = if self.records.is_empty() {
            ts
        } else {
            ts.max(self.last_ts())
        };
        self.metered.push(8 + body.len());
        self.records.push((ts, body));
        self.tail() - 1
    }

    /// Appends a command record (one header: an empty name, `op`).
    fn push_command(&mut self, op: &str, body: Vec<u8>) -> u64 {
        let seq = self.push(0, body);
        self.metered[seq as usize] += 2 + op.len();
        seq
    }

    /// Expected unary read result: `Err(())` for a 416.
    fn read(&self, start: ReadStart, count: Option<u64>) -> Result<Vec<(u64, u64, Vec<u8>)>, ()> {
        let tail = self.tail();
        let seq = match start {
            ReadStart::SeqNum(s) if s > tail => return Err(()),
            ReadStart::SeqNum(s) => s,
            ReadStart::TailOffset(o) => tail.saturating_sub(o),
            ReadStart::Timestamp(t) if t > self.last_ts() => return Err(()),
            // The first record still there (at or past the trim point)
            // with a timestamp at or after `t`: none when every record
            // is trimmed, and the read is then one at the tail.
            ReadStart::Timestamp(t) => (self.trim_point..tail)
                .find(|&s| self.records[s as usize].0 >= t)
                .unwrap_or(tail),
        };
        if seq >= tail {
            return Err(());
        }
        let from = seq.max(self.trim_point);
        let limit = count.unwrap_or(1000).min(1000);
        // A read also stops before the record that would take it past
        // 1 MiB, metered.
        let mut bytes = 0;
        Ok((from..tail)
            .take(limit as usize)
            .take_while(|&s| {
                bytes += self.metered[s as usize];
                bytes <= 1024 * 1024
            })
            .map(|s| {
                let (ts, body) = &self.records[s as usize];
                (s, *ts, body.clone())
            })
            .collect())
    }
}

/// Where the engine under test keeps its data: reopened at a restart.
enum Backend {
    Fjall(tempfile::TempDir),
    Postgres(String),
}

impl Backend {
    fn open(&self) -> Arc<dyn Storage> {
        match self {
            Backend::Fjall(dir) => Arc::new(FjallStorage::open(dir.path()).expect("storage opens")),
            Backend::Postgres(url) => Arc::new(PostgresStorage::open(url).expect("storage opens")),
        }
    }
}

struct Harness {
    backend: Backend,
    engine: Option<Arc<Engine>>,
}

impl Harness {
    async fn open(backend: Backend) -> Self {
        let engine = Engine::open(backend.open()).expect("engine recovers");
        Self {
            backend,
            engine: Some(engine),
        }
    }

    fn engine(&self) -> &Engine {
        self.engine.as_ref().expect("engine is open")
    }

    async fn restart(self) -> Self {
        let engine = self.engine.expect("engine is open");
        engine.shutdown().await;
        drop(engine);
        Self::open(self.backend).await
    }
}

fn record(body: &[u8], ts: Option<u64>) -> AppendRecord {
    AppendRecord {
        timestamp: ts,
        headers: vec![],
        body: Bytes::copy_from_slice(body),
    }
}

fn command(op: &str, body: Vec<u8>) -> AppendRecord {
    AppendRecord {
        timestamp: Some(0),
        headers: vec![Header {
            name: Bytes::new(),
            value: Bytes::copy_from_slice(op.as_bytes()),
        }],
        body: Bytes::from(body),
    }
}

async fn run(backend: Backend, ops: Vec<Op>) {
    let mut harness = Harness::open(backend).await;
    harness
        .engine()
        .streams()
        .ensure_basin(
            &BasinName::parse(BASIN).unwrap(),
            &BasinConfigPatch::default(),
        )
        .await
        .unwrap();
    let config = StreamConfigPatch {
        retention_policy: Some(RetentionPolicy::Infinite(InfiniteRetention {})),
        timestamping: Some(TimestampingPatch {
            mode: None,
            uncapped: Some(true),
        }),
        ..Default::default()
    };
    harness
        .engine()
        .streams()
        .create_stream(BASIN, &StreamName::parse(STREAM).unwrap(), &config, None)
        .await
        .unwrap();
    let mut model = Model::default();

    for op in ops {
        match op {
            Op::Append {
                records,
                match_seq,
                fencing,
            } => {
                let input = AppendInput {
                    records: records.iter().map(|(b, ts)| record(b, Some(*ts))).collect(),
                    match_seq_num: match match_seq {
                        Condition::None => None,
                        Condition::Right => Some(model.tail()),
                        Condition::Wrong => Some(model.tail() + 1),
                    },
                    fencing_token: match fencing {
                        Condition::None => None,
                        Condition::Right => Some(model.token.clone()),
                        Condition::Wrong => Some(format!("{}-wrong", model.token)),
                    },
                };
                let result = harness
                    .engine()
                    .streams()
                    .append(BASIN, STREAM, input)
                    .await;
                match (fencing, match_seq) {
                    (Condition::Wrong, _) => match result {
                        Err(EngineError::FencingTokenMismatch(token)) => {
                            assert_eq!(token, model.token)
                        }
                        other => panic!("expected a fencing mismatch, got {other:?}"),
                    },
                    (_, Condition::Wrong) => match result {
                        Err(EngineError::SeqNumMismatch(next)) => assert_eq!(next, model.tail()),
                        other => panic!("expected a seq num mismatch, got {other:?}"),
                    },
                    _ => {
                        let ack = result.expect("append succeeds");
                        let start = model.tail();
                        for (body, ts) in records {
                            model.push(ts, body);
                        }
                        assert_eq!(ack.start.seq_num, start);
                        assert_eq!(ack.end.seq_num, model.tail());
                        assert_eq!(ack.start.timestamp, model.records[start as usize].0);
                        assert_eq!(ack.end.timestamp, model.last_ts());
                    }
                }
            }
            Op::Bulk { count, every, big } => {
                let base = model.last_ts();
                let records: Vec<(Vec<u8>, u64)> = (0..count)
                    .map(|i| {
                        let body_len = if big { 40 * 1024 } else { 8 };
                        let mut body = vec![(i % 251) as u8; body_len];
                        body[..8].copy_from_slice(&(i as u64).to_be_bytes());
                        (body, base + i as u64 / every)
                    })
                    .collect();
                for chunk in records.chunks(if big { 20 } else { 500 }) {
                    let input = AppendInput {
                        records: chunk.iter().map(|(b, ts)| record(b, Some(*ts))).collect(),
                        ..Default::default()
                    };
                    harness
                        .engine()
                        .streams()
                        .append(BASIN, STREAM, input)
                        .await
                        .expect("bulk append");
                    for (body, ts) in chunk {
                        model.push(*ts, body.clone());
                    }
                }
            }
            Op::Fence(token) => {
                let input = AppendInput {
                    records: vec![command("fence", token.clone().into_bytes())],
                    ..Default::default()
                };
                harness
                    .engine()
                    .streams()
                    .append(BASIN, STREAM, input)
                    .await
                    .expect("fence");
                model.push_command("fence", token.clone().into_bytes());
                model.token = token;
            }
            Op::Trim(point) => {
                let input = AppendInput {
                    records: vec![command("trim", point.to_be_bytes().to_vec())],
                    ..Default::default()
                };
                harness
                    .engine()
                    .streams()
                    .append(BASIN, STREAM, input)
                    .await
                    .expect("trim");
                let own_seq = model.push_command("trim", point.to_be_bytes().to_vec());
                model.trim_point = model.trim_point.max(point.min(own_seq + 1));
            }
            Op::Read { start, count } => {
                let req = ReadRequest {
                    start: Some(start),
                    clamp: false,
                    limits: ReadLimits {
                        count,
                        bytes: None,
                        until: None,
                    },
                    wait: None,
                };
                let result = harness.engine().streams().read(BASIN, STREAM, req).await;
                match (model.read(start, count), result) {
                    (Err(()), Err(EngineError::BeyondTail(tail))) => {
                        assert_eq!(tail.seq_num, model.tail());
                        assert_eq!(tail.timestamp, model.last_ts());
                    }
                    (Ok(expected), Ok(batch)) => {
                        let got: Vec<_> = batch
                            .records
                            .iter()
                            .map(|r| (r.seq_num, r.timestamp, r.body.to_vec()))
                            .collect();
                        assert_eq!(got, expected, "read from {start:?} count {count:?}");
                    }
                    (expected, got) => {
                        panic!("read from {start:?}: expected {expected:?}, got {got:?}")
                    }
                }
            }
            Op::Upkeep => harness.engine().upkeep_once().await,
            Op::Restart => harness = harness.restart().await,
        }
    }

    // After a final restart the whole stream still matches.
    harness = harness.restart().await;
    let tail = harness
        .engine()
        .streams()
        .check_tail(BASIN, STREAM)
        .await
        .unwrap();
    assert_eq!(tail.seq_num, model.tail());
    assert_eq!(tail.timestamp, model.last_ts());
    if model.tail() > 0 {
        let req = ReadRequest {
            start: Some(ReadStart::SeqNum(0)),
            ..Default::default()
        };
        let batch = harness
            .engine()
            .streams()
            .read(BASIN, STREAM, req)
            .await
            .unwrap();
        let expected = model.read(ReadStart::SeqNum(0), None).unwrap();
        let got: Vec<_> = batch
            .records
            .iter()
            .map(|r| (r.seq_num, r.timestamp, r.body.to_vec()))
            .collect();
        assert_eq!(got, expected);
    }
    harness.engine().shutdown().await;
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, max_shrink_iters: 200, ..ProptestConfig::default() })]

    #[test]
    fn engine_matches_model(ops in prop::collection::vec(op(), 1..60)) {
        block_on(run(Backend::Fjall(tempfile::tempdir().unwrap()), ops));
    }
}

/// The same on Postgres: one server for the test (stopped when it ends),
/// a new database per case; fewer cases, each a database of its own.
#[test]
fn engine_on_postgres_matches_model() {
    let Some(server) = common::services::Postgres::start() else {
        return;
    };
    let cases = std::sync::atomic::AtomicUsize::new(0);
    let mut runner = proptest::test_runner::TestRunner::new(ProptestConfig {
        cases: 16,
        max_shrink_iters: 50,
        ..ProptestConfig::default()
    });
    let result = runner.run(&prop::collection::vec(op(), 1..60), |ops| {
        let case = cases.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let url = server.database(&format!("model_{case}"));
        block_on(run(Backend::Postgres(url), ops));
        Ok(())
    });
    if let Err(failure) = result {
        panic!("{failure}");
    }
}

fn block_on(work: impl std::future::Future<Output = ()>) {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
        .block_on(work);
}

/// An append session never applies an append queued behind a failed one,
/// even though all three were submitted before any was sequenced.
#[tokio::test]
async fn a_session_applies_nothing_after_a_failed_append() {
    let engine = Engine::open(Arc::new(rill::storage::MemoryStorage::default())).unwrap();
    engine
        .streams()
        .ensure_basin(
            &BasinName::parse(BASIN).unwrap(),
            &BasinConfigPatch::default(),
        )
        .await
        .unwrap();
    engine
        .streams()
        .create_stream(
            BASIN,
            &StreamName::parse(STREAM).unwrap(),
            &StreamConfigPatch::default(),
            None,
        )
        .await
        .unwrap();
    let input = |body: &[u8], match_seq_num| AppendInput {
        records: vec![record(body, None)],
        match_seq_num,
        fencing_token: None,
    };
    let session = engine
        .streams()
        .append_session(BASIN, STREAM)
        .await
        .unwrap();
    let ok = session.submit(input(b"ok", Some(0))).await.unwrap();
    let bad = session.submit(input(b"bad", Some(7))).await.unwrap();
    let after = session.submit(input(b"after", None)).await.unwrap();
    assert_eq!(ok.await.unwrap().end.seq_num, 1);
    assert!(matches!(bad.await, Err(EngineError::SeqNumMismatch(1))));
    assert!(matches!(after.await, Err(EngineError::SessionAborted)));
    assert_eq!(
        engine
            .streams()
            .check_tail(BASIN, STREAM)
            .await
            .unwrap()
            .seq_num,
        1
    );
    // Other appenders are unaffected.
    engine
        .streams()
        .append(BASIN, STREAM, input(b"next", None))
        .await
        .unwrap();
    assert_eq!(
        engine
            .streams()
            .check_tail(BASIN, STREAM)
            .await
            .unwrap()
            .seq_num,
        2
    );
}
