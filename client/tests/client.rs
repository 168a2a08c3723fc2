//! The client against a real server on loopback: streams, collections
//! (the `/updated` iterator under concurrent writes) and a consumer worker.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use rill::engine::Engine;
use rill::storage::MemoryStorage;
use rill_client::{Client, Error, Outcome};
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
    let bodies: Vec<&str> = records.iter().map(|r| r.body.as_str()).collect();
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
            .work("w", 10, 500, |m| {
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
    assert_eq!(client.work("w", 10, 0, |_| Outcome::Ack).await.unwrap(), 0);
}

/// A proxy between the client and the server whose connections can all be
/// cut at once, as a network failure would.
async fn cuttable_proxy(server: String) -> (String, tokio::sync::watch::Sender<u64>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = format!("http://{}", listener.local_addr().unwrap());
    let (cut, _) = tokio::sync::watch::channel(0u64);
    let cuts = cut.clone();
    let upstream = server.trim_start_matches("http://").to_string();
    tokio::spawn(async move {
        loop {
            let Ok((mut inbound, _)) = listener.accept().await else {
                return;
            };
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
    (addr, cut)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn follow_resumes_exactly_after_the_connection_is_cut() {
    let direct = server().await;
    direct.ensure_stream("live").await.unwrap();
    let (proxy, cut) = cuttable_proxy(direct.endpoint().to_string()).await;
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
            bodies.push(record.body);
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
