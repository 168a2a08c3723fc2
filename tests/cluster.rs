//! Several Rill nodes over one Postgres (`--cluster`): any node answers
//! any request, and when the owner is killed (SIGKILL) or paused
//! (SIGSTOP) mid-load another node takes over. Histories of clients on
//! every node stay linearizable; collections' `/updated` cursor neither
//! skips nor repeats while their writes move from one node to another.
//!
//! Needs Debian's `postgresql` (skipped without it unless
//! `RILL_REQUIRE_SERVICES` is set).

mod common;
mod lin;

use std::collections::{BTreeMap, HashSet};
use std::sync::atomic::AtomicUsize;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use common::cluster::*;
use common::services::Postgres;
use lin::client::{client_run, final_contents, Base, Recorder};
use lin::{check, Outcome};
use serde_json::{json, Value};

/// `--cluster` with what it cannot work with is refused at once, with a
/// usage error that says why.
#[test]
fn cluster_flags_that_cannot_work_are_refused() {
    for (flags, said) in [
        (&["--cluster"][..], "--storage"),
        (
            &[
                "--storage",
                "postgres://x@127.0.0.1:1/x",
                "--cluster",
                "--lease-ttl",
                "10ms",
            ][..],
            "500ms",
        ),
        (
            &[
                "--storage",
                "postgres://x@127.0.0.1:1/x",
                "--cluster",
                "--advertise",
                "nope",
            ][..],
            "HOST:PORT",
        ),
        (
            &[
                "--storage",
                "postgres://x@127.0.0.1:1/x",
                "--advertise",
                "127.0.0.1:1",
            ][..],
            "--cluster",
        ),
        (
            &[
                "--storage",
                "postgres://x@127.0.0.1:1/x",
                "--cluster",
                "--tls-cert",
                "c.pem",
                "--tls-key",
                "k.pem",
            ][..],
            "--cluster-listen",
        ),
    ] {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_rill"))
            .arg("serve")
            .args(flags)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{flags:?}: {stderr}");
        assert!(stderr.contains(said), "{flags:?}: {stderr}");
    }
}

/// Any node answers any request, sees what was appended through the
/// others, and the cluster goes on when its owner is killed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn any_node_serves_and_a_killed_owner_is_taken_over() {
    let Some(pg) = Postgres::start() else { return };
    let (mut nodes, bases, http) = start_cluster(&pg.database("cluster_basic"), 3);
    let (first, _) = wait_for_owner(&http, &bases).await;
    // Made through a follower: forwarded.
    make(
        &http,
        &bases[(first + 1) % 3],
        &["/v1/basins/lin-basin", "/v1/streams/s"],
    )
    .await;

    let mut acked = BTreeMap::new();
    for round in 0..5 {
        for (i, base) in bases.iter().enumerate() {
            let body = format!("n{i}-r{round}");
            let seq = append(&http, base, &body).await;
            assert!(
                acked.insert(seq, body).is_none(),
                "seq num {seq} given twice"
            );
        }
    }
    let expected: Vec<String> = acked.values().cloned().collect();
    for base in &bases {
        assert_eq!(final_contents(base).await, expected, "read through {base}");
    }

    // Forwarded as the client sent it: a basin named in the host works
    // through a follower too.
    let follower = &bases[(first + 1) % 3];
    let resp = settled(
        http.get(format!("{follower}/v1/streams/s/records/tail"))
            .header("host", format!("{BASIN}.rill.test")),
    )
    .await;
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["tail"]["seq_num"], acked.len(), "{body}");

    // A long poll on one node sees an append made through another.
    let mut waits = Vec::new();
    for k in 0..20 {
        let (reader, writer) = (&bases[k % 3], &bases[(k + 1) % 3]);
        let tail = acked.len() as u64;
        let read = http
            .get(format!(
                "{reader}/v1/streams/s/records?seq_num={tail}&wait=10"
            ))
            .header("s2-basin", BASIN)
            .send();
        let read = tokio::spawn(async move {
            let answer = read.await;
            (Instant::now(), answer)
        });
        tokio::time::sleep(Duration::from_millis(50)).await;
        let body = format!("live-{k}");
        let sent = Instant::now();
        assert_eq!(append(&http, writer, &body).await, tail);
        let (answered, answer) = read.await.unwrap();
        waits.push(answered.duration_since(sent));
        let batch: Value = answer.unwrap().json().await.unwrap();
        assert_eq!(common::bodies(&batch), std::slice::from_ref(&body));
        acked.insert(tail, body);
    }
    waits.sort();
    eprintln!(
        "a long poll on one node answered {:?} after an append was sent through another (median), {:?} at most",
        waits[waits.len() / 2],
        waits[waits.len() - 1]
    );

    // The owner dies; another node takes over once its lease has ended.
    nodes[first].take().unwrap().0.kill();
    let killed_at = Instant::now();
    let survivors: Vec<String> = nodes
        .iter()
        .flatten()
        .map(|(n, _)| n.base.clone())
        .collect();
    // Reads first, until every survivor answers.
    wait_until_all_answer(&http, &survivors).await;
    let takeover = killed_at.elapsed();
    eprintln!("the owner killed, every survivor answered {takeover:?} later");
    let seq = append(&http, &survivors[0], "after-kill").await;
    assert!(acked.insert(seq, "after-kill".into()).is_none());
    for round in 0..3 {
        for (i, base) in survivors.iter().enumerate() {
            let body = format!("after-{i}-{round}");
            let seq = append(&http, base, &body).await;
            assert!(
                acked.insert(seq, body).is_none(),
                "seq num {seq} given twice"
            );
        }
    }
    // Everything acknowledged, each at the seq num its ack named, and
    // nothing twice (appends were retried only after a refusal).
    let contents = final_contents(&survivors[1]).await;
    for (seq, body) in &acked {
        assert_eq!(contents.get(*seq as usize), Some(body), "at seq num {seq}");
    }
    let unique: HashSet<&String> = contents.iter().collect();
    assert_eq!(unique.len(), contents.len(), "a record appears twice");
}

/// Histories of clients on all three nodes, with the owner SIGKILLed and
/// then the next owner paused past its lease and resumed: linearizable,
/// every acknowledged append exactly once at its seq num, and the paused
/// owner, awake again, writes nothing (it steps down).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn histories_across_a_killed_and_a_paused_owner_are_linearizable() {
    const CLIENTS: usize = 9;
    const OPS: usize = 60;
    let Some(pg) = Postgres::start() else { return };
    let (mut nodes, bases, http) = start_cluster(&pg.database("cluster_lin"), 3);
    wait_for_owner(&http, &bases).await;
    make(&http, &bases[0], &["/v1/basins/lin-basin", "/v1/streams/s"]).await;

    let recorder = Arc::new(Recorder {
        started: Instant::now(),
        ops: Mutex::new(Vec::new()),
    });
    let counter = Arc::new(AtomicUsize::new(0));
    // Each client talks to one node (three to each).
    let client_bases: Vec<Base> = (0..CLIENTS)
        .map(|c| Arc::new(RwLock::new(bases[c % 3].clone())))
        .collect();
    let clients: Vec<_> = (0..CLIENTS)
        .map(|c| {
            tokio::spawn(client_run(
                client_bases[c].clone(),
                c,
                OPS,
                77_000 + c as u64,
                recorder.clone(),
                counter.clone(),
            ))
        })
        .collect();
    let done = |share: usize| {
        let recorder = recorder.clone();
        async move {
            let deadline = Instant::now() + Duration::from_secs(60);
            while recorder.ops.lock().unwrap().len() < CLIENTS * OPS / share {
                assert!(Instant::now() < deadline, "the clients stalled");
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }
    };

    // A quarter in: the owner is killed, and its clients move to the next
    // node.
    done(4).await;
    let (killed, _) = wait_for_owner(&http, &bases).await;
    nodes[killed].take().unwrap().0.kill();
    let moved_to = bases[(killed + 1) % 3].clone();
    for (c, base) in client_bases.iter().enumerate() {
        if c % 3 == killed {
            *base.write().unwrap() = moved_to.clone();
        }
    }
    // Half way: the new owner is paused past its lease, then resumed.
    done(2).await;
    let alive: Vec<String> = (0..3)
        .filter(|&i| nodes[i].is_some())
        .map(|i| bases[i].clone())
        .collect();
    let (paused, _) = wait_for_owner(&http, &alive).await;
    let paused = bases.iter().position(|b| *b == alive[paused]).unwrap();
    let paused_node = process(&nodes[paused]);
    paused_node.signal("STOP");
    tokio::time::sleep(LEASE_TTL * 3).await;
    paused_node.signal("CONT");

    for client in clients {
        client.await.unwrap();
    }
    let contents = final_contents(&alive[0]).await;
    let history = std::mem::take(&mut *recorder.ops.lock().unwrap());
    let unknown = history
        .iter()
        .filter(|op| matches!(op.outcome, Outcome::Unknown))
        .count();
    let acked = history
        .iter()
        .filter(|op| matches!(op.outcome, Outcome::Appended { .. }))
        .count();
    eprintln!(
        "{} operations through 3 nodes, {acked} appends acknowledged, {unknown} outcomes unknown",
        history.len()
    );
    if let Err(violation) = check(&history, &contents) {
        panic!("the cluster's history is not linearizable: {violation}");
    }
    assert!(acked > 0 && unknown > 0, "the faults cut nothing off");
    // The paused owner found on waking that its lease had moved on.
    let said = process(&nodes[paused]).log_lines().join("\n");
    assert!(
        said.contains("stepped down"),
        "the paused owner did not step down:\n{said}"
    );
}

/// A paused owner that wakes up after another node took over never
/// answers from the state it had: a read it was sent while paused gets a
/// retryable 503 or the new tail, never the old one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_owner_never_answers_from_a_stale_state() {
    let Some(pg) = Postgres::start() else { return };
    let (nodes, bases, http) = start_cluster(&pg.database("cluster_stale"), 2);
    let (owner, _) = wait_for_owner(&http, &bases).await;
    let other = 1 - owner;
    make(
        &http,
        &bases[other],
        &["/v1/basins/lin-basin", "/v1/streams/s"],
    )
    .await;
    assert_eq!(append(&http, &bases[other], "before").await, 0);

    process(&nodes[owner]).signal("STOP");
    let (taken, _) = wait_for_owner(&http, &bases[other..=other]).await;
    assert_eq!(taken, 0);
    assert_eq!(append(&http, &bases[other], "while paused").await, 1);
    // Sent to the paused node: it waits in the socket until it wakes.
    let stale = tokio::spawn(
        http.get(format!("{}/v1/streams/s/records/tail", bases[owner]))
            .header("s2-basin", BASIN)
            .send(),
    );
    tokio::time::sleep(Duration::from_millis(200)).await;
    process(&nodes[owner]).signal("CONT");
    let resp = stale.await.unwrap().unwrap();
    let status = resp.status();
    let body: Value = resp.json().await.unwrap();
    match status.as_u16() {
        503 => assert_eq!(body["code"], "unavailable", "{body}"),
        200 => assert_eq!(body["tail"]["seq_num"], 2, "a stale tail: {body}"),
        other => panic!("{other}: {body}"),
    }
    // Once it has stepped down, it forwards to the new owner.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let resp = http
            .get(format!("{}/v1/streams/s/records/tail", bases[owner]))
            .header("s2-basin", BASIN)
            .send()
            .await
            .unwrap();
        if resp.status().is_success() {
            let body: Value = resp.json().await.unwrap();
            assert_eq!(body["tail"]["seq_num"], 2, "{body}");
            break;
        }
        assert!(Instant::now() < deadline, "the woken node never forwarded");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A collection written through every node while its owner is killed:
/// pagers on every node never skip or repeat a change, and end with every
/// record's latest version.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_updated_cursor_holds_across_a_takeover() {
    let Some(pg) = Postgres::start() else { return };
    let (mut nodes, bases, http) = start_cluster(&pg.database("cluster_collections"), 3);
    let (first, _) = wait_for_owner(&http, &bases).await;
    // Clients of the owner's node would lose their node with it: writers
    // and pagers use the other two.
    let others: Vec<String> = (0..3)
        .filter(|&i| i != first)
        .map(|i| bases[i].clone())
        .collect();
    make(&http, &others[0], &["/v1/basins/lin-basin"]).await;
    make(&http, &others[1], &["/v1/collections/c"]).await;

    const ROUNDS: usize = 40;
    let writers: Vec<_> = others
        .iter()
        .enumerate()
        .map(|(w, base)| {
            let (base, http) = (base.clone(), http.clone());
            tokio::spawn(async move {
                for round in 0..ROUNDS {
                    let mut upserts: Vec<Value> = (0..3)
                        .map(
                            |i| json!({"id": format!("hot-{i}"), "data": {"w": w, "round": round}}),
                        )
                        .collect();
                    upserts.push(json!({"id": format!("once-{w}-{round:02}"), "data": {}}));
                    let body = json!({ "upserts": upserts });
                    // Retried until acknowledged: a retry may add a version,
                    // never lose one.
                    let deadline = Instant::now() + Duration::from_secs(60);
                    loop {
                        let answer = http
                            .post(format!("{base}/v1/collections/c/records"))
                            .header("s2-basin", BASIN)
                            .json(&body)
                            .send()
                            .await;
                        if answer.is_ok_and(|r| r.status().is_success()) {
                            break;
                        }
                        assert!(
                            Instant::now() < deadline,
                            "a write did not land in a minute"
                        );
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            })
        })
        .collect();
    let (writers_done, done_rx) = tokio::sync::watch::channel(false);
    let pagers: Vec<_> = others
        .iter()
        .flat_map(|base| [(base.clone(), 1), (base.clone(), 50)])
        .map(|(base, limit)| {
            let (http, done) = (http.clone(), done_rx.clone());
            tokio::spawn(async move {
                common::pager::page_until_done(&http, &base, (BASIN, "c"), limit, done).await
            })
        })
        .collect();

    // Once writes are flowing, the owner dies.
    tokio::time::sleep(Duration::from_millis(300)).await;
    nodes[first].take().unwrap().0.kill();
    for writer in writers {
        writer.await.unwrap();
    }
    writers_done.send_replace(true);
    let truth = common::pager::page_until_done(&http, &others[0], (BASIN, "c"), 1000, {
        let (_tx, rx) = tokio::sync::watch::channel(true);
        rx
    })
    .await;
    assert_eq!(truth.len(), 3 + 2 * ROUNDS, "records in the collection");
    for pager in pagers {
        assert_eq!(
            pager.await.unwrap(),
            truth,
            "a pager missed a latest change"
        );
    }
}
