//! A full disk is told apart from a crash: writes get `507
//! insufficient_storage`, `/ready` says not ready, `/health` says why,
//! and reads keep working; once space is back, writes resume by
//! themselves, with nothing lost. A failed `fsync` is recovered from the
//! same way: the engine reopens its storage and restarts in-process.

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use common::faulty::{writes_records, Fault, FaultyStorage};
use common::*;
use reqwest::{Method, StatusCode};
use rill::storage::{StorageError, WriteBatch};

#[tokio::test]
async fn a_full_disk_refuses_writes_clearly_and_keeps_reads() {
    // A disk that fills up when told to.
    let full = Arc::new(AtomicBool::new(false));
    let filling = full.clone();
    // Only appends (and the engine's empty probe of the disk) meet it:
    // a background write (the usage tick's) meeting it first would make
    // the append below "never tried" instead of "outcome unknown".
    let disk = Arc::new(FaultyStorage::new(move |batch: &mut WriteBatch| {
        let appends = batch.is_empty() || writes_records(batch);
        (appends && filling.load(Ordering::Acquire)).then(|| {
            Fault::Refuse(StorageError::Full(
                "No space left on device (os error 28)".into(),
            ))
        })
    }));
    let server = TestServer::start_on(disk).await;
    server.with_stream("s").await;
    server.append("s", &["before"]).await;
    server
        .bare(Method::GET, "/ready")
        .expect_status(StatusCode::OK)
        .await;

    full.store(true, Ordering::Release);
    // The write that met the full disk cannot know whether it landed.
    let failed = server
        .append_request("s", serde_json::json!({ "records": [{ "body": "lost?" }] }))
        .expect_error(StatusCode::INTERNAL_SERVER_ERROR, "storage")
        .await;
    let said = failed["message"].as_str().unwrap();
    assert!(
        said.contains("disk is full") && said.contains("may or may not"),
        "{said}"
    );
    // Later writes were never tried: 507, not "poisoned".
    let refused = server
        .append_request("s", serde_json::json!({ "records": [{ "body": "again" }] }))
        .expect_error(StatusCode::INSUFFICIENT_STORAGE, "insufficient_storage")
        .await;
    assert!(refused["message"]
        .as_str()
        .unwrap()
        .contains("disk is full"));
    let not_ready = server
        .bare(Method::GET, "/ready")
        .expect_error(StatusCode::SERVICE_UNAVAILABLE, "not_ready")
        .await;
    assert!(not_ready["message"]
        .as_str()
        .unwrap()
        .contains("No space left"));
    let health = server
        .bare(Method::GET, "/health")
        .expect_status(StatusCode::OK)
        .await;
    assert_eq!(health["writable"], false);
    assert!(health["storage_error"].as_str().unwrap().contains("space"));
    // And so do the metrics, for an alert.
    assert!(metrics(&server).await.contains("\nrill_writable 0\n"));
    // What was acknowledged can still be read, and nothing else.
    assert_eq!(server.read_bodies("s", "seq_num=0").await, ["before"]);

    // Space comes back: within a few upkeep ticks, writes resume without
    // a restart, after what was acknowledged.
    full.store(false, Ordering::Release);
    wait_until_ready(&server).await;
    let ack = server.append("s", &["after"]).await;
    assert_eq!(
        ack["start"]["seq_num"], 1,
        "the refused writes took no seq nums"
    );
    assert_eq!(
        server.read_bodies("s", "seq_num=0").await,
        ["before", "after"]
    );
    let health = server
        .bare(Method::GET, "/health")
        .expect_status(StatusCode::OK)
        .await;
    assert_eq!(health["writable"], true);
    assert_eq!(health["storage_restarts"], 1);
    let text = metrics(&server).await;
    assert!(text.contains("\nrill_writable 1\n"), "{text}");
    assert!(text.contains("\nrill_storage_restarts_total 1\n"), "{text}");
}

async fn metrics(server: &TestServer) -> String {
    let resp = server.bare(Method::GET, "/metrics").send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    resp.text().await.unwrap()
}

/// Polls `/ready` until it says ready (bounded: 15 s).
async fn wait_until_ready(server: &TestServer) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(15);
    loop {
        let resp = server.bare(Method::GET, "/ready").send().await.unwrap();
        if resp.status() == StatusCode::OK {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "writes did not resume by themselves"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}

/// A failed `fsync` whose data reached the disk anyway: the writer was
/// told it failed (its outcome is unknown to it), later writes are
/// refused as never tried, and after the in-process restart the write is
/// there whole, once, followed by new writes.
#[tokio::test]
async fn a_failed_fsync_restarts_the_engine_in_process() {
    let fail_next = Arc::new(AtomicBool::new(false));
    let failing = fail_next.clone();
    // An append's batch fails, not a background write's (see above).
    let disk = Arc::new(FaultyStorage::new(move |batch: &mut WriteBatch| {
        (writes_records(batch) && failing.swap(false, Ordering::AcqRel))
            .then(|| Fault::FailAfterWriting(StorageError::Io("fsync: Input/output error".into())))
    }));
    let server = TestServer::start_on(disk).await;
    server.with_stream("s").await;
    server.append("s", &["one"]).await;

    fail_next.store(true, Ordering::Release);
    server
        .append_request(
            "s",
            serde_json::json!({ "records": [{ "body": "two" }, { "body": "three" }] }),
        )
        .expect_error(StatusCode::INTERNAL_SERVER_ERROR, "storage")
        .await;
    // Until the restart, writes are refused as never tried: safe to retry.
    let refused = server
        .append_request(
            "s",
            serde_json::json!({ "records": [{ "body": "refused" }] }),
        )
        .send()
        .await
        .unwrap();
    let taken = refused.status() == StatusCode::OK;
    if !taken {
        expect_error(refused, StatusCode::SERVICE_UNAVAILABLE, "unavailable").await;
    }

    wait_until_ready(&server).await;
    server.append("s", &["four"]).await;
    let bodies = server.read_bodies("s", "seq_num=0").await;
    // "refused" is there only if it raced the restart and the new engine
    // took (and acknowledged) it.
    let mut expected = vec!["one", "two", "three"];
    if taken {
        expected.push("refused");
    }
    expected.push("four");
    assert_eq!(bodies, expected);
}
