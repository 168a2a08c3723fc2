//! Damage is never silent. With one byte flipped anywhere in what was
//! written to the journal, the real binary either starts with every
//! acknowledged record, or refuses to start and says why; `rill repair`
//! then accepts the loss and the server starts with what is intact. With
//! one byte flipped in a table file, it either refuses to start, or
//! answers every read with exactly what was written or with an error that
//! says the data is corrupt; it never serves wrong data or less of it.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::binary::RillProcess;
use serde_json::{json, Value};

const BASIN: &str = "corrupt-basin";
const APPENDS: u64 = 200;

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}

/// The journal holding the data, and how far its written bytes reach.
fn journal_extent(dir: &Path) -> (PathBuf, usize) {
    let mut best = None;
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|x| x == "jnl") {
            let bytes = std::fs::read(&path).unwrap();
            let extent = bytes.iter().rposition(|b| *b != 0).map_or(0, |i| i + 1);
            if best.as_ref().is_none_or(|(_, e)| extent > *e) {
                best = Some((path, extent));
            }
        }
    }
    best.expect("a journal")
}

/// Starts `rill serve` on `dir`: the process, or what it said on exiting.
fn try_start(dir: &Path) -> Result<RillProcess, String> {
    RillProcess::try_start(dir)
}

/// Appends one record: the seq num it got. A store whose state hides a
/// later write hands out a seq num that is taken.
async fn append_one(base: &str) -> u64 {
    let ack: Value = reqwest::Client::new()
        .post(format!("{base}/v1/streams/s/records"))
        .header("s2-basin", BASIN)
        .json(&json!({ "records": [{ "body": "after" }] }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    ack["start"]["seq_num"]
        .as_u64()
        .unwrap_or_else(|| panic!("{ack}"))
}

/// The stream's bodies; none if the stream (or its basin) was lost.
async fn bodies(base: &str) -> Vec<String> {
    match try_bodies(base).await {
        Ok(bodies) => bodies,
        Err(said) if said.starts_with("404") => Vec::new(),
        Err(said) => panic!("a read failed: {said}"),
    }
}

/// The stream's bodies, or the error a read got.
async fn try_bodies(base: &str) -> Result<Vec<String>, String> {
    let resp = reqwest::Client::new()
        .get(format!(
            "{base}/v1/streams/s/records?seq_num=0&count=1000&clamp=true"
        ))
        .header("s2-basin", BASIN)
        .send()
        .await
        .map_err(|e| e.to_string())?;
    let status = resp.status();
    let batch: Value = resp.json().await.map_err(|e| e.to_string())?;
    if status != 200 {
        return Err(format!("{status} {batch}"));
    }
    Ok(batch["records"]
        .as_array()
        .map(|records| {
            records
                .iter()
                .map(|r| r["body"].as_str().unwrap().to_string())
                .collect()
        })
        .unwrap_or_default())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_damaged_journal_is_never_served_silently() {
    let original = tempfile::tempdir().unwrap();
    let server = RillProcess::start(original.path());
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    common::create_basin_and_stream(&http, &server.base, BASIN).await;
    let expected: Vec<String> = (0..APPENDS).map(|i| format!("record-{i:04}")).collect();
    for body in &expected {
        let resp = http
            .post(format!("{}/v1/streams/s/records", server.base))
            .header("s2-basin", BASIN)
            .json(&json!({ "records": [{ "body": body }] }))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
    }
    server.kill();
    let (journal, extent) = journal_extent(original.path());
    let name = journal.file_name().unwrap().to_owned();

    let (mut by_ledger, mut by_checksum, mut by_order, mut intact) = (0, 0, 0, 0);
    // Flips spread over what was written, plus every byte of the first
    // batch's framing (where a flip makes fjall take the rest for a torn
    // tail: only the ledger catches that).
    let mut offsets: Vec<usize> = (1..40).map(|k| extent * k / 40).collect();
    offsets.extend(0..24);
    for at in offsets {
        let copy = tempfile::tempdir().unwrap();
        copy_dir(original.path(), copy.path());
        let path = copy.path().join(&name);
        let mut bytes = std::fs::read(&path).unwrap();
        bytes[at] ^= 0xff;
        std::fs::write(&path, bytes).unwrap();
        match try_start(copy.path()) {
            Ok(server) => {
                // Started: then everything acknowledged is there.
                assert_eq!(
                    bodies(&server.base).await,
                    expected,
                    "byte {at} of {extent} flipped: started with less than was acknowledged"
                );
                assert_eq!(
                    append_one(&server.base).await,
                    APPENDS,
                    "byte {at}: the tail"
                );
                server.kill();
                intact += 1;
            }
            Err(said) => {
                assert!(
                    said.contains("acknowledged") || said.contains("damaged"),
                    "byte {at}: refused without saying why: {said}"
                );
                if said.contains("acknowledged") {
                    by_ledger += 1;
                } else if said.contains("out of order") {
                    by_order += 1;
                } else {
                    by_checksum += 1;
                }
                // The documented way out: accept the loss, start with the rest.
                let repair = Command::new(env!("CARGO_BIN_EXE_rill"))
                    .args(["repair", "--data-dir"])
                    .arg(copy.path())
                    .output()
                    .unwrap();
                let report = String::from_utf8_lossy(&repair.stdout);
                if repair.status.success() {
                    let server = RillProcess::start(copy.path());
                    let kept = bodies(&server.base).await;
                    assert_eq!(kept[..], expected[..kept.len()], "byte {at}: kept a prefix");
                    assert!(
                        report.contains("gone for good") || kept.len() == expected.len(),
                        "{report}"
                    );
                    // It says exactly which seq nums are gone.
                    let lost: Vec<u64> = lost_seq_nums(&report);
                    let missing: Vec<u64> = (kept.len() as u64..APPENDS).collect();
                    assert_eq!(
                        lost, missing,
                        "byte {at}: the report names the lost records: {report}"
                    );
                    if !kept.is_empty() {
                        let next = append_one(&server.base).await;
                        assert_eq!(next, kept.len() as u64, "byte {at}: the tail");
                    }
                    server.kill();
                }
                if said.contains("acknowledged") {
                    // The journal as it was, damage and all, was put aside.
                    assert!(said.contains("Lost: commit"), "{said}");
                    let aside = damaged_copy(copy.path()).join(&name);
                    assert_eq!(
                        std::fs::metadata(aside).unwrap().len(),
                        std::fs::metadata(original.path().join(&name))
                            .unwrap()
                            .len(),
                        "byte {at}: the journal copy put aside is whole"
                    );
                }
            }
        }
    }
    eprintln!(
        "single-byte flips in {extent} journal bytes: {by_ledger} refused by the commit ledger, \
         {by_checksum} by fjall's checksums, {by_order} by the commit keys (a damaged sequence \
         number), {intact} started with everything"
    );
    assert!(
        by_ledger > 0,
        "no flip needed the ledger: it is not exercised"
    );
}

/// The seq nums named lost in a repair report ("… seq nums 5..8").
fn lost_seq_nums(report: &str) -> Vec<u64> {
    let mut lost = Vec::new();
    for line in report.lines() {
        if let Some((_, range)) = line.split_once("seq nums ") {
            let (start, end) = range.trim().split_once("..").unwrap();
            lost.extend(start.parse::<u64>().unwrap()..end.parse::<u64>().unwrap());
        }
    }
    lost.sort_unstable();
    lost
}

/// The directory a refused start put the journals aside in.
fn damaged_copy(dir: &Path) -> PathBuf {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| {
            p.file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with("damaged-")
        })
        .expect("the damaged journals were put aside")
}

/// Every table file under `dir`.
fn table_files(dir: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    for keyspace in std::fs::read_dir(dir.join("keyspaces")).unwrap() {
        let tables = keyspace.unwrap().path().join("tables");
        if let Ok(entries) = std::fs::read_dir(tables) {
            found.extend(entries.map(|e| e.unwrap().path()));
        }
    }
    found.sort();
    found
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_damaged_table_is_never_served_silently() {
    use rill::storage::{FjallStorage, Storage};
    const OFFSETS_PER_TABLE: usize = 10;
    let original = tempfile::tempdir().unwrap();
    let server = RillProcess::start(original.path());
    let http = reqwest::Client::new();
    common::create_basin_and_stream(&http, &server.base, BASIN).await;
    // Bodies that fill several blocks, each one different.
    let expected: Vec<String> = (0..APPENDS)
        .map(|i| format!("record-{i:04}-{}", "abcdefghij".repeat(1 + i as usize % 40)))
        .collect();
    for chunk in expected.chunks(20) {
        let records: Vec<Value> = chunk.iter().map(|b| json!({ "body": b })).collect();
        let resp = http
            .post(format!("{}/v1/streams/s/records", server.base))
            .header("s2-basin", BASIN)
            .json(&json!({ "records": records }))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
    }
    server.kill();
    // Reopening flushes what the journal holds into table files.
    FjallStorage::open(original.path())
        .unwrap()
        .reopen()
        .unwrap();
    let tables = table_files(original.path());
    assert!(tables.len() >= 4, "too few tables: {tables:?}");

    let (mut refused, mut read_errors, mut intact, mut cases) = (0, 0, 0, 0);
    for table in &tables {
        let relative = table.strip_prefix(original.path()).unwrap().to_owned();
        let size = std::fs::metadata(table).unwrap().len() as usize;
        let mut offsets: Vec<usize> = (0..OFFSETS_PER_TABLE)
            .map(|k| size * k / OFFSETS_PER_TABLE)
            .collect();
        offsets.extend(
            [size - 1, size - 8, size - 40]
                .into_iter()
                .filter(|&o| o < size),
        );
        for at in offsets {
            cases += 1;
            let copy = tempfile::tempdir().unwrap();
            copy_dir(original.path(), copy.path());
            let path = copy.path().join(&relative);
            let mut bytes = std::fs::read(&path).unwrap();
            bytes[at] ^= 0xff;
            std::fs::write(&path, bytes).unwrap();
            let case = format!("byte {at} of {} ({size} bytes) flipped", relative.display());
            match try_start(copy.path()) {
                Ok(server) => {
                    match try_bodies(&server.base).await {
                        Ok(found) => {
                            assert_eq!(found, expected, "{case}: served wrong data");
                            intact += 1;
                        }
                        Err(said) => {
                            assert!(
                                said.contains("corrupt"),
                                "{case}: a read failed without saying why: {said}"
                            );
                            read_errors += 1;
                        }
                    }
                    server.kill();
                }
                Err(said) => {
                    assert!(
                        said.contains("damaged") || said.contains("corrupt"),
                        "{case}: refused without saying why: {said}"
                    );
                    refused += 1;
                }
            }
        }
    }
    eprintln!(
        "{cases} single-byte flips in {} table files: {refused} refused at start, {read_errors} \
         reads refused as corrupt, {intact} served everything intact",
        tables.len()
    );
    assert!(
        refused > 0 && read_errors > 0,
        "the damage was never noticed"
    );
}
