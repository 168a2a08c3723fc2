//! Property test: random upserts, deletes and batches (with right and wrong
//! expected versions), point reads, full walks of `/updated`, and restarts,
//! run against the collections engine on fjall and against a plain model.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use proptest::prelude::*;
use rill::engine::collections::CollectionName;
use rill::engine::collections::{Cursor, WriteOp};
use rill::engine::error::EngineError;
use rill::engine::streams::config::BasinConfigPatch;
use rill::engine::streams::names::BasinName;
use rill::engine::Engine;
use rill::storage::FjallStorage;
use serde_json::{json, Map, Value};

const BASIN: &str = "model-basin";
const COLL: &str = "things";

#[derive(Clone, Debug)]
enum Expect {
    None,
    Right,
    Wrong,
}

#[derive(Clone, Debug)]
enum Op {
    /// (id, value or None for a delete, expectation)
    Write(Vec<(u8, Option<u8>, Expect)>),
    Get(u8),
    Walk,
    Restart,
}

fn expect() -> impl Strategy<Value = Expect> {
    prop_oneof![4 => Just(Expect::None), 1 => Just(Expect::Right), 1 => Just(Expect::Wrong)]
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        8 => prop::collection::vec((0u8..6, prop::option::weighted(0.8, 0u8..3), expect()), 1..4).prop_map(Op::Write),
        2 => (0u8..6).prop_map(Op::Get),
        2 => Just(Op::Walk),
        1 => Just(Op::Restart),
    ]
}

/// id → (version, data, deleted)
type Model = BTreeMap<String, (u64, Value, bool)>;

fn data(v: u8) -> Map<String, Value> {
    json!({ "v": v }).as_object().unwrap().clone()
}

async fn open(dir: &std::path::Path) -> Arc<Engine> {
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
        .collections()
        .ensure_collection(
            BASIN,
            &CollectionName::parse(COLL).unwrap(),
            &Default::default(),
        )
        .await
        .unwrap();
    engine
}

async fn run(ops: Vec<Op>) {
    let dir = tempfile::tempdir().unwrap();
    let mut engine = open(dir.path()).await;
    let mut model: Model = BTreeMap::new();
    for op in ops {
        match op {
            Op::Write(writes) => {
                // Duplicate ids in one write are refused; keep the first.
                let mut seen = std::collections::HashSet::new();
                let writes: Vec<_> = writes
                    .into_iter()
                    .filter(|(id, _, _)| seen.insert(*id))
                    .collect();
                let live_version = |id: &str| model.get(id).filter(|m| !m.2).map_or(0, |m| m.0);
                let mut expected_error = None;
                let mut ops = Vec::new();
                for (id, value, expectation) in &writes {
                    let id = format!("id-{id}");
                    let expected_version = match expectation {
                        Expect::None => None,
                        Expect::Right => Some(live_version(&id)),
                        Expect::Wrong => Some(live_version(&id) + 7),
                    };
                    if matches!(expectation, Expect::Wrong) && expected_error.is_none() {
                        expected_error = Some("version");
                    }
                    if value.is_none()
                        && live_version(&id) == 0
                        && model.get(&id).is_none_or(|m| m.2)
                        && expected_error.is_none()
                    {
                        expected_error = Some("not found");
                    }
                    ops.push(match value {
                        Some(v) => WriteOp::Upsert {
                            id,
                            data: data(*v),
                            expected_version,
                        },
                        None => WriteOp::Delete {
                            id,
                            expected_version,
                        },
                    });
                }
                let result = engine.collections().write_records(BASIN, COLL, ops).await;
                match (expected_error, result) {
                    (None, Ok(views)) => {
                        for ((id, value, _), view) in writes.iter().zip(views) {
                            let id = format!("id-{id}");
                            let entry = model.entry(id.clone()).or_insert((0, Value::Null, true));
                            match value {
                                Some(v) => {
                                    let new = Value::Object(data(*v));
                                    if entry.2 || entry.1 != new {
                                        *entry = (entry.0 + 1, new, false);
                                    }
                                }
                                None => *entry = (entry.0 + 1, entry.1.clone(), true),
                            }
                            assert_eq!(view.id, id);
                            assert_eq!(
                                (view.version, Value::Object(view.data), view.deleted),
                                entry.clone()
                            );
                        }
                    }
                    (
                        Some(_),
                        Err(EngineError::VersionMismatch { .. } | EngineError::RecordNotFound(_)),
                    ) => {}
                    (expected, got) => {
                        panic!("write {writes:?}: expected {expected:?}, got {got:?}")
                    }
                }
            }
            Op::Get(id) => {
                let id = format!("id-{id}");
                match (
                    model.get(&id),
                    engine.collections().get_record(BASIN, COLL, &id).await,
                ) {
                    (Some(m), Ok(view)) => assert_eq!(
                        (view.version, Value::Object(view.data), view.deleted),
                        m.clone()
                    ),
                    (None, Err(EngineError::RecordNotFound(_))) => {}
                    (m, got) => panic!("get {id}: model {m:?}, engine {got:?}"),
                }
            }
            Op::Walk => {
                // Let the current millisecond close, then page from 0.
                tokio::time::sleep(Duration::from_millis(3)).await;
                let mut cursor = Cursor::default();
                let mut walked: Vec<(u64, String, (u64, Value, bool))> = Vec::new();
                loop {
                    let page = engine
                        .collections()
                        .updated(BASIN, COLL, &cursor, 2, None, Duration::ZERO)
                        .await
                        .unwrap();
                    if page.records.is_empty() {
                        assert!(page.caught_up, "an empty unfiltered page is caught up");
                        break;
                    }
                    for raw in page.records {
                        let v = raw.view().unwrap();
                        walked.push((
                            v.updated_at,
                            v.id.clone(),
                            (v.version, Value::Object(v.data), v.deleted),
                        ));
                    }
                    cursor = page.next;
                }
                let mut sorted = walked.clone();
                sorted.sort_by(|a, b| (a.0, &a.1).cmp(&(b.0, &b.1)));
                assert_eq!(walked, sorted, "the walk is in (updated_at, id) order");
                let got: Model = walked.into_iter().map(|(_, id, m)| (id, m)).collect();
                assert_eq!(
                    got, model,
                    "the records stream holds exactly the latest versions"
                );
            }
            Op::Restart => {
                engine.shutdown().await;
                drop(engine);
                engine = open(dir.path()).await;
            }
        }
    }
    engine.shutdown().await;
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 32, max_shrink_iters: 100, ..ProptestConfig::default() })]

    #[test]
    fn collections_match_model(ops in prop::collection::vec(op(), 1..40)) {
        let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
        runtime.block_on(run(ops));
    }
}

/// Writes to one record from many tasks at once: each gets its own
/// version, in order, even though later writes are prepared while earlier
/// ones are still committing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_writes_to_one_record_get_distinct_versions() {
    let dir = tempfile::tempdir().unwrap();
    let engine = open(dir.path()).await;
    let tasks: Vec<_> = (0..64u8)
        .map(|i| {
            let engine = engine.clone();
            tokio::spawn(async move {
                let op = WriteOp::Upsert {
                    id: "x".into(),
                    data: json!({ "writer": i }).as_object().unwrap().clone(),
                    expected_version: None,
                };
                engine
                    .collections()
                    .write_records(BASIN, COLL, vec![op])
                    .await
                    .unwrap()[0]
                    .version
            })
        })
        .collect();
    let mut versions = Vec::new();
    for task in tasks {
        versions.push(task.await.unwrap());
    }
    versions.sort();
    assert_eq!(versions, (1..=64).collect::<Vec<_>>());
    let record = engine
        .collections()
        .get_record(BASIN, COLL, "x")
        .await
        .unwrap();
    assert_eq!(record.version, 64);
    engine.shutdown().await;
}
