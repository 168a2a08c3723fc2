//! Deleted data gives its disk space back: a server on local disk that
//! had a large stream deleted, or trimmed, shrinks its data directory
//! within seconds, with what is left intact (see `src/storage/reclaim.rs`).
//!
//! The bound asserted: the table files come back to under
//! [`TABLES_LEFT`] within [`DEADLINE`] of the delete, and the whole
//! directory to under [`JOURNAL_ROOM`] more (fjall keeps its active
//! journal until it reaches 64 MB, whatever it holds).

mod common;

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine as _;
use common::{expect_status, TestServer};
use rand::RngCore;
use reqwest::StatusCode;
use rill::storage::FjallStorage;
use serde_json::{json, Value};

const MIB: u64 = 1 << 20;
/// Records of 60 KiB of random bytes (incompressible), 16 to an append
/// (under the 1 MiB an append may carry).
const RECORD_BYTES: usize = 60 * 1024;
const RECORDS_PER_APPEND: usize = 16;
const TABLES_LEFT: u64 = 8 * MIB;
const JOURNAL_ROOM: u64 = 80 * MIB;
const DEADLINE: Duration = Duration::from_secs(60);

/// Bytes of the files under `dir`.
fn size_of(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|entry| match entry.file_type() {
            Ok(kind) if kind.is_dir() => size_of(&entry.path()),
            _ => entry.metadata().map(|m| m.len()).unwrap_or(0),
        })
        .sum()
}

/// Appends `mib` MiB of random records to `stream`; returns every body.
async fn append_random(server: &TestServer, stream: &str, mib: u64) -> Vec<Vec<u8>> {
    let b64 = base64::engine::general_purpose::STANDARD;
    let appends = mib * MIB / (RECORD_BYTES * RECORDS_PER_APPEND) as u64;
    let mut written = Vec::new();
    for _ in 0..appends {
        let mut records = Vec::new();
        for _ in 0..RECORDS_PER_APPEND {
            let mut body = vec![0u8; RECORD_BYTES];
            rand::rng().fill_bytes(&mut body);
            records.push(json!({ "body": b64.encode(&body) }));
            written.push(body);
        }
        server
            .append_request(stream, json!({ "records": records }))
            .header("s2-format", "base64")
            .send()
            .await
            .map(|resp| assert_eq!(resp.status(), StatusCode::OK))
            .unwrap();
    }
    written
}

/// Every body of `stream` from `seq_num` on, read back.
async fn read_all(server: &TestServer, stream: &str, mut seq_num: u64) -> Vec<Vec<u8>> {
    let b64 = base64::engine::general_purpose::STANDARD;
    let tail = server.tail(stream).await;
    let mut bodies = Vec::new();
    while seq_num < tail {
        let batch: Value = expect_status(
            server
                .read_request(stream, &format!("seq_num={seq_num}&count=64"))
                .header("s2-format", "base64")
                .send()
                .await
                .unwrap(),
            StatusCode::OK,
        )
        .await;
        for record in batch["records"].as_array().unwrap() {
            bodies.push(b64.decode(record["body"].as_str().unwrap()).unwrap());
            seq_num = record["seq_num"].as_u64().unwrap() + 1;
        }
    }
    bodies
}

/// Waits until the tables are under [`TABLES_LEFT`]; returns how long
/// that took, or fails with the sizes seen.
async fn wait_for_shrink(dir: &Path, since: Instant) -> Duration {
    loop {
        let tables = size_of(&dir.join("keyspaces"));
        let total = size_of(dir);
        if tables <= TABLES_LEFT && total <= TABLES_LEFT + JOURNAL_ROOM {
            return since.elapsed();
        }
        assert!(
            since.elapsed() < DEADLINE,
            "still {} MiB of tables ({} MiB in all) {DEADLINE:?} after the delete",
            tables / MIB,
            total / MIB
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deleted_stream_gives_its_space_back() {
    let dir = tempfile::tempdir().unwrap();
    let storage = Arc::new(FjallStorage::open(dir.path()).unwrap());
    let server = TestServer::start_on(storage).await;
    server.with_stream("big").await;
    server.ensure_stream("kept").await;
    let kept = append_random(&server, "kept", 2).await;
    append_random(&server, "big", 200).await;
    let written = size_of(dir.path());
    assert!(written >= 200 * MIB, "only {} MiB on disk", written / MIB);

    let deleted_at = Instant::now();
    server
        .delete("/v1/streams/big")
        .send()
        .await
        .map(|resp| assert!(resp.status().is_success(), "{}", resp.status()))
        .unwrap();
    let took = wait_for_shrink(dir.path(), deleted_at).await;
    eprintln!(
        "{} MiB on disk after writing 200 MiB; {} MiB {took:?} after deleting it",
        written / MIB,
        size_of(dir.path()) / MIB
    );
    // What was not deleted is all there, byte for byte.
    assert!(
        read_all(&server, "kept", 0).await == kept,
        "the kept stream changed"
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trimmed_stream_gives_its_space_back_and_keeps_the_rest() {
    let dir = tempfile::tempdir().unwrap();
    let storage = Arc::new(FjallStorage::open(dir.path()).unwrap());
    let server = TestServer::start_on(storage).await;
    server.with_stream("t").await;
    let written = append_random(&server, "t", 100).await;
    let keep_from = written.len() as u64 - 32; // the last 2 MiB
    let b64 = base64::engine::general_purpose::STANDARD;
    let trimmed_at = Instant::now();
    server
        .append_request(
            "t",
            json!({"records": [{
                "headers": [["", b64.encode("trim")]],
                "body": b64.encode(keep_from.to_be_bytes()),
            }]}),
        )
        .header("s2-format", "base64")
        .send()
        .await
        .map(|resp| assert_eq!(resp.status(), StatusCode::OK))
        .unwrap();
    let took = wait_for_shrink(dir.path(), trimmed_at).await;
    eprintln!(
        "trimmed 98 of 100 MiB: {} MiB on disk {took:?} later",
        size_of(dir.path()) / MIB
    );
    let mut left = read_all(&server, "t", keep_from).await;
    left.pop(); // the trim command record itself
    assert!(
        left == written[keep_from as usize..],
        "the records kept changed"
    );
    server.stop().await;

    // And after a restart, too (an upkeep pass still finishing may hold
    // the store a moment after the server stopped).
    let deadline = Instant::now() + Duration::from_secs(20);
    let storage = loop {
        match FjallStorage::open(dir.path()) {
            Ok(storage) => break Arc::new(storage),
            Err(err) if Instant::now() < deadline => {
                eprintln!("reopening: {err}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(err) => panic!("cannot reopen: {err}"),
        }
    };
    let server = TestServer::start_on(storage).await;
    let mut left = read_all(&server, "t", keep_from).await;
    left.pop();
    assert!(
        left == written[keep_from as usize..],
        "changed by a restart"
    );
}
