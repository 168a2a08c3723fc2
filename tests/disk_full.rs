//! A full disk is told apart from a crash: writes get `507
//! insufficient_storage`, `/ready` says not ready, `/health` says why,
//! and reads keep working. (Writes resume after a restart; resuming
//! without one is not done yet.)

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use common::faulty::FaultyStorage;
use common::*;
use reqwest::{Method, StatusCode};
use rill::storage::StorageError;

#[tokio::test]
async fn a_full_disk_refuses_writes_clearly_and_keeps_reads() {
    // A disk that fills up when told to.
    let full = Arc::new(AtomicBool::new(false));
    let filling = full.clone();
    let disk = Arc::new(FaultyStorage::new(move |_: &mut _| {
        filling
            .load(Ordering::Acquire)
            .then(|| StorageError::Full("No space left on device (os error 28)".into()))
    }));
    let server = TestServer::start_on(disk).await;
    server.with_stream("s").await;
    server.append("s", &["before"]).await;
    server
        .bare(Method::GET, "/ready")
        .expect_status(StatusCode::OK)
        .await;

    full.store(true, Ordering::Release);
    let refused = server
        .append_request("s", serde_json::json!({ "records": [{ "body": "lost?" }] }))
        .expect_error(StatusCode::INSUFFICIENT_STORAGE, "insufficient_storage")
        .await;
    assert!(refused["message"]
        .as_str()
        .unwrap()
        .contains("disk is full"));
    // Later writes say the same, not "poisoned".
    server
        .append_request("s", serde_json::json!({ "records": [{ "body": "again" }] }))
        .expect_error(StatusCode::INSUFFICIENT_STORAGE, "insufficient_storage")
        .await;
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
    // What was acknowledged can still be read, and nothing else.
    assert_eq!(server.read_bodies("s", "seq_num=0").await, ["before"]);
}
