//! Property test: random appends, receives, acks and nacks (current, stale
//! and repeated ids) and restarts, run against an explicit-ack consumer on
//! fjall and against a plain model, with random `max_ack_pending`,
//! `max_deliver` and key ordering. Every receive must hand out exactly what
//! the model says, in order, with the same delivery counts; dead letters
//! must land in the model's order.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use proptest::prelude::*;
use rill::engine::consumers::{
    AckId, AckPolicy, ConsumerConfig, ConsumerName, Position, Settle, Source, Start,
};
use rill::engine::error::EngineError;
use rill::engine::streams::config::BasinConfigPatch;
use rill::engine::streams::names::BasinName;
use rill::engine::streams::names::StreamName;
use rill::engine::streams::types::{AppendInput, AppendRecord, Header};
use rill::engine::streams::ReadRequest;
use rill::engine::Engine;
use rill::storage::FjallStorage;

const BASIN: &str = "model-basin";
const STREAM: &str = "jobs";
const CONSUMER: &str = "workers";

#[derive(Clone, Debug)]
enum Op {
    /// Records with these keys.
    Append(Vec<u8>),
    Receive(usize),
    /// Ack (or nack) the held deliveries picked by these indexes.
    Ack(Vec<usize>),
    Nack(Vec<usize>),
    Restart,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => prop::collection::vec(0u8..3, 1..5).prop_map(Op::Append),
        4 => (1usize..5).prop_map(Op::Receive),
        3 => prop::collection::vec(0usize..8, 1..4).prop_map(Op::Ack),
        2 => prop::collection::vec(0usize..8, 1..3).prop_map(Op::Nack),
        1 => Just(Op::Restart),
    ]
}

#[derive(Clone, Debug)]
struct Settings {
    max_ack_pending: u32,
    max_deliver: Option<u32>,
    ordered: bool,
}

fn settings() -> impl Strategy<Value = Settings> {
    (1u32..6, prop::option::of(1u32..4), any::<bool>()).prop_map(
        |(max_ack_pending, max_deliver, ordered)| Settings {
            max_ack_pending,
            max_deliver,
            ordered,
        },
    )
}

#[derive(Clone, Debug)]
struct Entry {
    deliveries: u32,
    in_flight: bool,
    key: u8,
}

#[derive(Default)]
struct Model {
    keys: Vec<u8>,
    frontier: u64,
    pending: BTreeMap<u64, Entry>,
    dead: Vec<u64>,
}

enum Standing {
    Current,
    Done,
    Expired,
}

impl Model {
    fn receive(&mut self, batch: usize, s: &Settings) -> Vec<(u64, u32)> {
        let mut out = Vec::new();
        let mut seen = std::collections::HashSet::new();
        let deliverable: Vec<u64> = self
            .pending
            .iter()
            .filter(|(_, e)| (!s.ordered || seen.insert(e.key)) && !e.in_flight)
            .map(|(seq, _)| *seq)
            .collect();
        for seq in deliverable {
            if out.len() >= batch {
                break;
            }
            let entry = self.pending.get_mut(&seq).unwrap();
            if s.max_deliver.is_some_and(|m| entry.deliveries >= m) {
                self.pending.remove(&seq);
                self.dead.push(seq);
                continue;
            }
            entry.deliveries += 1;
            entry.in_flight = true;
            out.push((seq, entry.deliveries));
        }
        while out.len() < batch
            && self.pending.len() < s.max_ack_pending as usize
            && (self.frontier as usize) < self.keys.len()
        {
            let seq = self.frontier;
            self.frontier += 1;
            let key = self.keys[seq as usize];
            let held = s.ordered && self.pending.values().any(|e| e.key == key);
            self.pending.insert(
                seq,
                Entry {
                    deliveries: if held { 0 } else { 1 },
                    in_flight: !held,
                    key,
                },
            );
            if !held {
                out.push((seq, 1));
            }
        }
        out
    }

    fn standing(&self, seq: u64, deliveries: u32) -> Standing {
        match self.pending.get(&seq) {
            Some(e) if e.deliveries == deliveries => Standing::Current,
            Some(_) => Standing::Expired,
            None => {
                assert!(seq < self.frontier);
                Standing::Done
            }
        }
    }
}

async fn open(dir: &std::path::Path, s: &Settings) -> Arc<Engine> {
    let engine = Engine::open(Arc::new(FjallStorage::open(dir).unwrap())).unwrap();
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
        .ensure_stream(
            BASIN,
            &StreamName::parse(STREAM).unwrap(),
            &Default::default(),
        )
        .await
        .unwrap();
    let config = ConsumerConfig {
        source: Source::Stream {
            stream: STREAM.into(),
        },
        start: Start::Beginning,
        filter: None,
        ack_policy: AckPolicy::Explicit,
        ack_wait_ms: 3_600_000,
        max_deliver: s.max_deliver,
        max_ack_pending: s.max_ack_pending,
        ordered_by_key: s.ordered,
    };
    engine
        .consumers()
        .ensure_consumer(BASIN, &ConsumerName::parse(CONSUMER).unwrap(), config)
        .await
        .unwrap();
    engine
}

async fn run(s: Settings, ops: Vec<Op>) {
    let dir = tempfile::tempdir().unwrap();
    let mut engine = open(dir.path(), &s).await;
    let mut model = Model::default();
    // Deliveries a client holds: (ack id, seq num, delivery count).
    let mut held: Vec<(AckId, u64, u32)> = Vec::new();
    for op in ops {
        match op {
            Op::Append(keys) => {
                let records = keys
                    .iter()
                    .map(|k| AppendRecord {
                        timestamp: None,
                        headers: vec![Header {
                            name: Bytes::from_static(b"key"),
                            value: Bytes::from(format!("k{k}")),
                        }],
                        body: Bytes::from_static(b"x"),
                    })
                    .collect();
                let input = AppendInput {
                    records,
                    ..Default::default()
                };
                engine.streams().append(BASIN, STREAM, input).await.unwrap();
                model.keys.extend(keys);
            }
            Op::Receive(batch) => {
                let got = engine
                    .consumers()
                    .receive(BASIN, CONSUMER, batch, Duration::ZERO)
                    .await
                    .unwrap();
                let got: Vec<(AckId, u64, u32)> = got
                    .into_iter()
                    .map(|d| {
                        let Position::Seq(seq) = d.message.position else {
                            panic!("a stream position")
                        };
                        (d.ack_id.unwrap(), seq, d.delivery_count)
                    })
                    .collect();
                let want = model.receive(batch, &s);
                let got_pairs: Vec<(u64, u32)> = got.iter().map(|(_, s, c)| (*s, *c)).collect();
                assert_eq!(got_pairs, want, "receive({batch}) with {s:?}");
                held.extend(got);
            }
            Op::Ack(picks) | Op::Nack(picks) if held.is_empty() => {
                let _ = picks;
            }
            Op::Ack(ref picks) | Op::Nack(ref picks) => {
                let nack = matches!(op, Op::Nack(_));
                let mut chosen: Vec<usize> = picks.iter().map(|i| i % held.len()).collect();
                chosen.sort();
                chosen.dedup();
                let ids: Vec<AckId> = chosen.iter().map(|&i| held[i].0.clone()).collect();
                let action = if nack {
                    Settle::Nack { delay_ms: 0 }
                } else {
                    Settle::Ack
                };
                let standings: Vec<Standing> = chosen
                    .iter()
                    .map(|&i| model.standing(held[i].1, held[i].2))
                    .collect();
                let expired = standings.iter().any(|s| matches!(s, Standing::Expired));
                let result = engine
                    .consumers()
                    .settle(BASIN, CONSUMER, &ids, action)
                    .await;
                if expired {
                    assert!(
                        matches!(result, Err(EngineError::AckExpired { .. })),
                        "{result:?}"
                    );
                    // Drop the stale ids; nothing was applied.
                    let stale: Vec<usize> = chosen
                        .iter()
                        .zip(&standings)
                        .filter(|(_, s)| matches!(s, Standing::Expired))
                        .map(|(i, _)| *i)
                        .collect();
                    for i in stale.into_iter().rev() {
                        held.remove(i);
                    }
                    continue;
                }
                let (affected, _) = result.unwrap();
                let mut want = 0;
                for (&i, standing) in chosen.iter().zip(&standings) {
                    if matches!(standing, Standing::Current) {
                        want += 1;
                        let seq = held[i].1;
                        if nack {
                            model.pending.get_mut(&seq).unwrap().in_flight = false;
                        } else {
                            model.pending.remove(&seq);
                        }
                    }
                }
                assert_eq!(affected, want);
                for i in chosen.into_iter().rev() {
                    held.remove(i);
                }
            }
            Op::Restart => {
                engine.shutdown().await;
                drop(engine);
                engine = open(dir.path(), &s).await;
            }
        }
        let info = engine
            .consumers()
            .consumer_info(BASIN, CONSUMER)
            .await
            .unwrap();
        let stats = info.stats.unwrap();
        assert_eq!(stats.pending, model.pending.len());
        assert_eq!(stats.progress.dead_lettered, model.dead.len() as u64);
    }
    // The dead-letter stream holds the model's dead letters, in order.
    let batch = engine
        .streams()
        .read(
            BASIN,
            &rill::engine::consumers::dead_letter_stream(CONSUMER),
            ReadRequest {
                start: Some(rill::engine::streams::types::ReadStart::SeqNum(0)),
                clamp: true,
                ..Default::default()
            },
        )
        .await;
    let records = match batch {
        Ok(batch) => batch.records,
        Err(EngineError::BeyondTail(_)) => Vec::new(), // empty
        Err(err) => panic!("{err}"),
    };
    let dead: Vec<u64> = records
        .iter()
        .map(|r| {
            let h = r
                .headers
                .iter()
                .find(|h| &h.name[..] == b"position")
                .unwrap();
            std::str::from_utf8(&h.value).unwrap().parse().unwrap()
        })
        .collect();
    assert_eq!(dead, model.dead);
    engine.shutdown().await;
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, max_shrink_iters: 200, ..ProptestConfig::default() })]

    #[test]
    fn consumer_matches_model(s in settings(), ops in prop::collection::vec(op(), 1..40)) {
        let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
        runtime.block_on(run(s, ops));
    }
}
