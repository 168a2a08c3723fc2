//! The client against a real server on loopback: streams, collections
//! (the `/updated` iterator under concurrent writes) and a consumer worker.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use rill::engine::Engine;
use rill::storage::MemoryStorage;
use rill_client::{AppendOptions, AppendRecord, Batch, Client, Error, Outcome};
use serde_json::json;

const BASIN: &str = "client-basin";

/// Starts a server on a free loopback port; it stops with the runtime.
async fn server() -> Client {
    let engine = Engine::open(Arc::new(MemoryStorage::default())).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(rill::server::run(listener, engine, std::future::pending()));
    let client = Client::new(&base).unwrap().with_basin(BASIN);
    client.ensure_basin(BASIN).await.unwrap();
    client
}

#[tokio::test]
async fn streams_append_read_and_tail() {
    let client = server().await;
    client.ensure_stream("log").await.unwrap();
    let ack = client.append("log", &["a", "b", "c"]).await.unwrap();
    assert_eq!((ack.start, ack.end, ack.tail), (0, 3, 3));
    let records = client.read("log", 1, 10).await.unwrap();
    let bodies: Vec<String> = records.iter().map(|r| r.body_text().into_owned()).collect();
    assert_eq!(bodies, ["b", "c"]);
    assert_eq!(records[0].seq_num, 1);
    assert_eq!(client.check_tail("log").await.unwrap(), 3);
    assert!(client.read("log", 3, 10).await.unwrap().is_empty());

    // Errors carry the server's code.
    let err = client.append("missing", &["x"]).await.unwrap_err();
    assert_eq!(err.code(), Some("stream_not_found"), "{err}");
    assert!(matches!(Client::new("localhost:1"), Err(Error::Invalid(_))));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn updates_iterator_sees_every_write_once_under_concurrent_writes() {
    let client = server().await;
    client.ensure_collection("users").await.unwrap();
    const N: usize = 400;
    let writer = {
        let client = client.clone();
        tokio::spawn(async move {
            for i in 0..N {
                client
                    .put("users", &format!("u{i:04}"), &json!({ "n": i }))
                    .await
                    .unwrap();
            }
        })
    };
    let mut updates = client.updates("users", None).wait(1);
    let mut seen = HashSet::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while seen.len() < N && tokio::time::Instant::now() < deadline {
        if let Some(record) = updates.next().await.unwrap() {
            assert!(seen.insert(record.id.clone()), "{} repeated", record.id);
            assert_eq!(record.version, 1);
        }
    }
    writer.await.unwrap();
    assert_eq!(seen.len(), N, "every write seen");
    // Caught up: the cursor resumes after everything, and sees what comes next.
    assert!(updates.next().await.unwrap().is_none());
    let cursor = updates.cursor().unwrap().to_string();
    client
        .put("users", "late", &json!({ "n": -1 }))
        .await
        .unwrap();
    let mut resumed = client.updates("users", Some(cursor)).wait(1);
    let next = resumed.next().await.unwrap().unwrap();
    assert_eq!(next.id, "late");

    assert_eq!(
        client.get("users", "u0001").await.unwrap().unwrap().data["n"],
        1
    );
    assert!(client.get("users", "nobody").await.unwrap().is_none());
    let deleted = client.delete("users", "u0001").await.unwrap();
    assert!(deleted.deleted);
}

#[tokio::test]
async fn worker_acks_and_nacks() {
    let client = server().await;
    client.ensure_stream("jobs").await.unwrap();
    client
        .ensure_consumer("w", &json!({ "source": { "stream": "jobs" } }))
        .await
        .unwrap();
    client
        .append("jobs", &["ok-1", "retry", "ok-2"])
        .await
        .unwrap();
    let mut handled = Vec::new();
    let mut retried = false;
    for _ in 0..5 {
        client
            .work("w", 10, 500, async |m| {
                let body = m.record.as_ref().unwrap()["body"]
                    .as_str()
                    .unwrap()
                    .to_string();
                handled.push((body.clone(), m.delivery_count));
                if body == "retry" && !retried {
                    retried = true;
                    Outcome::Nack { delay_ms: 0 }
                } else {
                    Outcome::Ack
                }
            })
            .await
            .unwrap();
    }
    assert_eq!(
        handled,
        [
            ("ok-1".to_string(), 1),
            ("retry".to_string(), 1),
            ("ok-2".to_string(), 1),
            ("retry".to_string(), 2)
        ]
    );
    assert_eq!(
        client
            .work("w", 10, 0, async |_| Outcome::Ack)
            .await
            .unwrap(),
        0
    );
}

/// A slow handler does not hold the acks of messages handled before it
/// past their ack wait; and an ack that expired meanwhile (its message went
/// to another worker) does not fail the round.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_handler_does_not_hold_earlier_acks() {
    let client = server().await;
    client.ensure_stream("slow-jobs").await.unwrap();
    let config = json!({ "source": { "stream": "slow-jobs" }, "ack_wait_ms": 1500 });
    client.ensure_consumer("sw", &config).await.unwrap();
    client
        .append("slow-jobs", &["quick", "slow"])
        .await
        .unwrap();
    let other = client.clone();
    let second_worker = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(2_000)).await;
        other.receive("sw", 10, 0).await.unwrap()
    });
    let handled = client
        .work("sw", 10, 1_000, async |m| {
            if m.record.as_ref().unwrap()["body"] == "slow" {
                tokio::time::sleep(Duration::from_millis(2_500)).await;
            }
            Outcome::Ack
        })
        .await
        .unwrap();
    assert_eq!(handled, 2);
    let taken = second_worker.await.unwrap();
    let taken: Vec<(&str, u32)> = taken
        .iter()
        .map(|m| {
            (
                m.record.as_ref().unwrap()["body"].as_str().unwrap(),
                m.delivery_count,
            )
        })
        .collect();
    assert_eq!(
        taken,
        [("slow", 2)],
        "only the slow message went past its ack wait"
    );
}

/// A proxy between the client and the server whose connections can all be
/// cut at once, as a network failure would; while `true` is sent on its
/// second channel it is down (new connections are dropped at once), as a
/// restarting server would be.
async fn cuttable_proxy(
    server: String,
) -> (
    String,
    tokio::sync::watch::Sender<u64>,
    tokio::sync::watch::Sender<bool>,
) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = format!("http://{}", listener.local_addr().unwrap());
    let (cut, _) = tokio::sync::watch::channel(0u64);
    let (down, down_rx) = tokio::sync::watch::channel(false);
    let cuts = cut.clone();
    let upstream = server.trim_start_matches("http://").to_string();
    tokio::spawn(async move {
        loop {
            let Ok((mut inbound, _)) = listener.accept().await else {
                return;
            };
            if *down_rx.borrow() {
                continue; // dropped: the connection is reset
            }
            let upstream = upstream.clone();
            let mut cut_rx = cuts.subscribe();
            tokio::spawn(async move {
                let Ok(mut outbound) = tokio::net::TcpStream::connect(&upstream).await else {
                    return;
                };
                tokio::select! {
                    _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => {}
                    _ = cut_rx.changed() => {} // dropping both ends cuts it
                }
            });
        }
    });
    (addr, cut, down)
}

/// A follower rides out a server that is unreachable for a few seconds
/// (longer than one request's retries) and resumes where it was.
#[tokio::test]
async fn follow_rides_out_an_outage() {
    let direct = server().await;
    direct.ensure_stream("outage").await.unwrap();
    let (proxy, cut, down) = cuttable_proxy(direct.endpoint().to_string()).await;
    let mut live = Client::new(&proxy)
        .unwrap()
        .with_basin(BASIN)
        .follow("outage", rill_client::ReadStart::SeqNum(0));
    direct.append("outage", &["a"]).await.unwrap();
    assert_eq!(live.next().await.unwrap().body_text(), "a");
    down.send_replace(true);
    cut.send_modify(|n| *n += 1);
    let reader = tokio::spawn(async move {
        let mut bodies = Vec::new();
        for _ in 0..2 {
            bodies.push(live.next().await.unwrap().body_text().into_owned());
        }
        bodies
    });
    direct.append("outage", &["b", "c"]).await.unwrap();
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(!reader.is_finished(), "nothing gets through while down");
    down.send_replace(false);
    let bodies = tokio::time::timeout(Duration::from_secs(15), reader)
        .await
        .expect("the follower came back")
        .unwrap();
    assert_eq!(bodies, ["b", "c"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn follow_resumes_exactly_after_the_connection_is_cut() {
    let direct = server().await;
    direct.ensure_stream("live").await.unwrap();
    let (proxy, cut, _) = cuttable_proxy(direct.endpoint().to_string()).await;
    let via_proxy = Client::new(&proxy).unwrap().with_basin(BASIN);
    let mut live = via_proxy.follow("live", rill_client::ReadStart::SeqNum(0));

    let reader = tokio::spawn(async move {
        let mut bodies = Vec::new();
        while bodies.len() < 60 {
            let record = live.next().await.unwrap();
            assert_eq!(
                record.seq_num as usize,
                bodies.len(),
                "in order, no gaps, no repeats"
            );
            bodies.push(record.body_text().into_owned());
        }
        bodies
    });
    for round in 0..6 {
        let batch: Vec<String> = (0..10).map(|i| format!("r{round}-{i}")).collect();
        direct.append("live", &batch).await.unwrap();
        tokio::time::sleep(Duration::from_millis(50)).await;
        // Cut every connection, mid-long-poll.
        cut.send_modify(|n| *n += 1);
    }
    let bodies = tokio::time::timeout(Duration::from_secs(30), reader)
        .await
        .expect("the follower caught up")
        .unwrap();
    let expected: Vec<String> = (0..6)
        .flat_map(|r| (0..10).map(move |i| format!("r{r}-{i}")))
        .collect();
    assert_eq!(bodies, expected);
}

#[tokio::test]
async fn append_session_pipelines_in_order_binary_safe() {
    let client = server().await;
    client.ensure_stream("piped").await.unwrap();
    let session = client.append_session("piped").await.unwrap();
    // 200 appends in flight before the first ack is awaited.
    let mut tickets = Vec::new();
    for i in 0..200u32 {
        let batch = (0..5u32)
            .map(|j| {
                let body = (i * 5 + j).to_be_bytes().to_vec();
                AppendRecord::new(body).header(&b"k\xff"[..], &[0u8, 1][..])
            })
            .collect();
        tickets.push(
            session
                .submit(batch, AppendOptions::default())
                .await
                .unwrap(),
        );
    }
    for (i, ticket) in tickets.into_iter().enumerate() {
        let ack = ticket.await.unwrap();
        assert_eq!((ack.start, ack.end), (i as u64 * 5, i as u64 * 5 + 5));
    }
    // Over the limits: refused before sending, and the session goes on.
    let huge = vec![AppendRecord::new(vec![0u8; 1024 * 1024])];
    let err = session.submit(huge, AppendOptions::default()).await.err();
    assert!(matches!(err, Some(Error::Invalid(_))), "{err:?}");
    let err = session.submit(vec![], AppendOptions::default()).await.err();
    assert!(matches!(err, Some(Error::Invalid(_))), "{err:?}");
    let many = vec![AppendRecord::new("x"); 1001];
    let err = session.submit(many, AppendOptions::default()).await.err();
    assert!(matches!(err, Some(Error::Invalid(_))), "{err:?}");
    let last = vec![
        AppendRecord::new(1000u32.to_be_bytes().to_vec()).header(&b"k\xff"[..], &[0u8, 1][..])
    ];
    let ticket = session
        .submit(last, AppendOptions::default())
        .await
        .unwrap();
    assert_eq!(ticket.await.unwrap().start, 1000);
    session.close().await.unwrap();

    let mut next = 0u32;
    while next < 1001 {
        let records = client.read("piped", next.into(), 1000).await.unwrap();
        assert!(!records.is_empty());
        for record in records {
            assert_eq!(record.seq_num, u64::from(next));
            assert_eq!(
                &record.body[..],
                &next.to_be_bytes()[..],
                "bytes round-trip"
            );
            assert_eq!(
                record.headers,
                [(b"k\xff"[..].into(), (&[0u8, 1][..]).into())]
            );
            next += 1;
        }
    }
    assert_eq!(client.check_tail("piped").await.unwrap(), 1001);
}

/// A follower that started from a timestamp (or a tail offset) and found
/// nothing resumes, after a cut, from the tail it saw: a record appended
/// meanwhile, even one timestamped before the start, is not skipped.
#[tokio::test]
async fn follow_resumes_from_the_tail_it_saw() {
    let client = server().await;
    client.ensure_stream("late").await.unwrap();
    client.append("late", &["before"]).await.unwrap();
    let (proxy, cut, down) = cuttable_proxy(client.endpoint().to_string()).await;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    let mut live = Client::new(&proxy)
        .unwrap()
        .with_basin(BASIN)
        .follow("late", rill_client::ReadStart::Timestamp(now + 3_600_000));
    let reader = tokio::spawn(async move { live.next().await.unwrap() });
    // The session is open and caught up; then the network goes.
    tokio::time::sleep(Duration::from_millis(500)).await;
    down.send_replace(true);
    cut.send_modify(|n| *n += 1);
    let record = AppendRecord::new("backdated").timestamp(now - 1_000);
    client
        .append_records("late", vec![record], &AppendOptions::default())
        .await
        .unwrap();
    down.send_replace(false);
    let record = tokio::time::timeout(Duration::from_secs(10), reader)
        .await
        .expect("the follower saw the append")
        .unwrap();
    assert_eq!(
        (record.seq_num, record.body_text()),
        (1, "backdated".into())
    );
}

/// Many tasks share one session: each acknowledgement names where that
/// task's own append landed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn append_session_shared_by_tasks_acks_each_its_own() {
    let client = server().await;
    client.ensure_stream("shared").await.unwrap();
    let session = Arc::new(client.append_session("shared").await.unwrap());
    let mut tasks = Vec::new();
    for task in 0..8 {
        let session = session.clone();
        tasks.push(tokio::spawn(async move {
            let mut landed = Vec::new();
            for i in 0..50 {
                let bodies: Vec<String> = (0..3).map(|j| format!("{task}-{i}-{j}")).collect();
                let records = bodies
                    .iter()
                    .map(|b| AppendRecord::new(b.clone()))
                    .collect();
                let ticket = session
                    .submit(records, AppendOptions::default())
                    .await
                    .unwrap();
                landed.push((ticket.await.unwrap(), bodies));
            }
            landed
        }));
    }
    let mut landed = Vec::new();
    for task in tasks {
        landed.extend(task.await.unwrap());
    }
    let mut stored = Vec::new();
    while stored.len() < 8 * 50 * 3 {
        let records = client
            .read("shared", stored.len() as u64, 1000)
            .await
            .unwrap();
        assert!(!records.is_empty());
        stored.extend(records.iter().map(|r| r.body_text().into_owned()));
    }
    for (ack, bodies) in landed {
        assert_eq!(stored[ack.start as usize..ack.end as usize], bodies[..]);
    }
}

/// A session lasts as long as it is used: the request timeout, meant for
/// calls that end, does not cut it.
#[tokio::test]
async fn append_session_outlives_the_request_timeout() {
    let client = server().await.with_timeout(Duration::from_millis(300));
    client.ensure_stream("slow").await.unwrap();
    let session = client.append_session("slow").await.unwrap();
    for round in 0..3u64 {
        let ticket = session
            .submit(vec![AppendRecord::new("x")], AppendOptions::default())
            .await
            .unwrap();
        assert_eq!(ticket.await.unwrap().start, round);
        tokio::time::sleep(Duration::from_millis(400)).await;
    }
    session.close().await.unwrap();
}

#[tokio::test]
async fn append_session_stops_at_the_first_failure() {
    let client = server().await;
    client.ensure_stream("strict").await.unwrap();
    let session = client.append_session("strict").await.unwrap();
    let one = |body: &str| vec![AppendRecord::new(body.to_string())];
    let first = session
        .submit(one("a"), AppendOptions::default())
        .await
        .unwrap();
    let wrong = AppendOptions {
        match_seq_num: Some(7),
        ..AppendOptions::default()
    };
    let failing = session.submit(one("b"), wrong).await.unwrap();
    let behind = session.submit(one("c"), AppendOptions::default()).await;
    assert_eq!(first.await.unwrap().start, 0);
    let err = failing.await.unwrap_err();
    assert_eq!(
        (err.code(), matches!(err, Error::Api { status: 412, .. })),
        (Some("precondition_failed"), true),
        "{err}"
    );
    // Queued behind the failure: refused, or sent and never applied.
    if let Ok(ticket) = behind {
        assert!(matches!(ticket.await, Err(Error::Closed(_))));
    }
    assert!(session.close().await.is_err());
    let bodies: Vec<String> = client
        .read("strict", 0, 10)
        .await
        .unwrap()
        .iter()
        .map(|r| r.body_text().into_owned())
        .collect();
    assert_eq!(
        bodies,
        ["a"],
        "nothing behind the failed append was applied"
    );
}

/// A session whose connection is cut: every acknowledged append is in the
/// stream once, in order, and the stream holds a prefix of what was sent
/// (an append either whole or not at all, never out of order or twice).
#[tokio::test]
async fn append_session_cut_mid_way_loses_and_repeats_nothing() {
    let direct = server().await;
    direct.ensure_stream("cut").await.unwrap();
    let (proxy, cut, _) = cuttable_proxy(direct.endpoint().to_string()).await;
    let via_proxy = Client::new(&proxy).unwrap().with_basin(BASIN);
    let session = via_proxy.append_session("cut").await.unwrap();
    let mut tickets = Vec::new();
    let mut sent = 0;
    let mut submit_failed = false;
    for i in 0..400u32 {
        let batch = (0..10)
            .map(|j| AppendRecord::new(format!("{i}-{j}")))
            .collect();
        match session.submit(batch, AppendOptions::default()).await {
            Ok(ticket) => tickets.push(ticket),
            Err(err) => {
                assert!(matches!(err, Error::Closed(_)), "{err}");
                submit_failed = true;
                break;
            }
        }
        sent += 1;
        if i == 150 {
            cut.send_modify(|n| *n += 1);
        }
        tokio::task::yield_now().await;
    }
    let mut acked = 0;
    let mut failed = false;
    for ticket in tickets {
        match ticket.await {
            Ok(ack) => {
                assert!(!failed, "no ack after a failure");
                assert_eq!(ack.start, acked * 10);
                acked += 1;
            }
            Err(_) => failed = true,
        }
    }
    assert!(failed || submit_failed, "the cut ended the session");
    let expected: Vec<String> = (0..sent)
        .flat_map(|i| (0..10).map(move |j| format!("{i}-{j}")))
        .collect();
    let mut stored = Vec::new();
    loop {
        let records = direct.read("cut", stored.len() as u64, 1000).await.unwrap();
        if records.is_empty() {
            break;
        }
        stored.extend(records.iter().map(|r| r.body_text().into_owned()));
    }
    assert!(
        stored.len() >= acked as usize * 10,
        "every acked append is stored"
    );
    assert_eq!(stored.len() % 10, 0, "appends are atomic");
    assert_eq!(stored, expected[..stored.len()], "a prefix, in order, once");
}

#[tokio::test]
async fn collection_batches_and_events() {
    let client = server().await;
    client.ensure_collection("users").await.unwrap();
    let written = client
        .write_batch(
            "users",
            &Batch::default()
                .upsert("u1", json!({ "name": "Ada", "plan": "free" }))
                .upsert("u2", json!({ "name": "Bo" })),
        )
        .await
        .unwrap();
    assert_eq!(
        written.iter().map(|r| r.version).collect::<Vec<_>>(),
        [1, 1]
    );

    // One stale condition fails the whole batch; nothing applies.
    let stale = Batch::default()
        .upsert("u1", json!({ "name": "Ada", "plan": "pro" }))
        .delete_if("u2", 5);
    let err = client.write_batch("users", &stale).await.unwrap_err();
    assert_eq!(err.code(), Some("version_mismatch"), "{err}");
    assert_eq!(client.get("users", "u1").await.unwrap().unwrap().version, 1);

    let fresh = Batch::default()
        .upsert_if("u1", json!({ "name": "Ada", "plan": "pro" }), 1)
        .delete_if("u2", 1);
    assert_eq!(fresh.len(), 2);
    client.write_batch("users", &fresh).await.unwrap();

    let events = client.read_events("users", 0, 100, 0).await.unwrap();
    let summary: Vec<(&str, &str, u64)> = events
        .iter()
        .map(|e| (e.event.as_str(), e.id.as_str(), e.seq_num))
        .collect();
    assert_eq!(
        summary,
        [
            ("created", "u1", 0),
            ("created", "u2", 1),
            ("updated", "u1", 2),
            ("deleted", "u2", 3)
        ]
    );
    assert_eq!(events[2].changes, Some(json!({ "plan": "free" })));
    assert!(client
        .read_events("users", 4, 100, 0)
        .await
        .unwrap()
        .is_empty());
    let err = client.read_events("nope", 0, 1, 0).await.unwrap_err();
    assert_eq!(err.code(), Some("collection_not_found"));
}

#[tokio::test]
async fn reject_dead_letters_and_replay_brings_back() {
    let client = server().await;
    client.ensure_stream("jobs").await.unwrap();
    client
        .ensure_consumer("w", &json!({ "source": { "stream": "jobs" } }))
        .await
        .unwrap();
    client.append("jobs", &["poison"]).await.unwrap();
    let got = client.receive("w", 1, 500).await.unwrap();
    let ids: Vec<String> = got.iter().filter_map(|m| m.ack_id.clone()).collect();
    assert_eq!(client.reject("w", &ids).await.unwrap(), 1);
    assert_eq!(
        client.reject("w", &ids).await.unwrap(),
        0,
        "settled already"
    );
    let replayed = client.replay("w", &[0, 5]).await.unwrap();
    assert_eq!((replayed.replayed, replayed.gone), (vec![0], vec![5]));
    let again = client.receive("w", 1, 500).await.unwrap();
    assert_eq!(again[0].record.as_ref().unwrap()["body"], "poison");
    assert_eq!(again[0].delivery_count, 1);
}
