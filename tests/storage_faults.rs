//! Faults on a real store: a disk that really fills up (a small ext4
//! filesystem on a loop device, under the real binary), and a short write
//! that leaves a torn entry at the end of fjall's journal. In both, what
//! was acknowledged survives, what was refused never appears, and writes
//! resume without a restart.
//!
//! Mounting needs root (as CI runs); the test says so if it cannot.

mod common;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::binary::RillProcess;
use common::faulty::{writes_records, Fault, FaultyStorage};
use common::*;
use reqwest::StatusCode;
use rill::storage::{FjallStorage, StorageError};
use serde_json::{json, Value};

/// A small ext4 filesystem in an image file, loop-mounted; unmounted on
/// drop.
struct SmallDisk {
    _dir: tempfile::TempDir,
    mount: PathBuf,
}

impl SmallDisk {
    fn mount(megabytes: u64) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let image = dir.path().join("disk.img");
        std::fs::File::create(&image)
            .unwrap()
            .set_len(megabytes << 20)
            .unwrap();
        run("mkfs.ext4", &["-q", "-F", image.to_str().unwrap()]);
        let mount = dir.path().join("mnt");
        std::fs::create_dir(&mount).unwrap();
        run(
            "mount",
            &[
                "-o",
                "loop",
                image.to_str().unwrap(),
                mount.to_str().unwrap(),
            ],
        );
        Self { _dir: dir, mount }
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        // Lazily: a process a failed assertion left running keeps it busy.
        let _ = Command::new("umount").arg("-l").arg(&self.mount).status();
    }
}

fn run(program: &str, args: &[&str]) {
    let output = Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {program} (install e2fsprogs/mount): {e}"));
    assert!(
        output.status.success(),
        "{program} {args:?} failed (this test needs root to loop-mount a small disk): {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

fn random_text(len: usize) -> String {
    use rand::distr::{Alphanumeric, SampleString};
    Alphanumeric.sample_string(&mut rand::rng(), len)
}

fn fill(path: &Path, bytes: usize) {
    let mut file = std::fs::File::create(path).unwrap();
    file.write_all(&vec![7u8; bytes]).unwrap();
    file.sync_all().unwrap();
}

/// Appends one record to `s`: its seq num, or the error body and status.
async fn append(
    http: &reqwest::Client,
    base: &str,
    body: &str,
) -> Result<u64, (StatusCode, Value)> {
    let resp = http
        .post(format!("{base}/v1/streams/s/records"))
        .header("s2-basin", BASIN)
        .json(&json!({ "records": [{ "body": body }] }))
        .send()
        .await
        .unwrap();
    let status = resp.status();
    let value: Value = resp.json().await.unwrap_or(Value::Null);
    if status == StatusCode::OK {
        Ok(value["start"]["seq_num"].as_u64().unwrap())
    } else {
        Err((status, value))
    }
}

async fn all_bodies(http: &reqwest::Client, base: &str) -> Vec<String> {
    let mut bodies = Vec::new();
    loop {
        let page: Value = http
            .get(format!(
                "{base}/v1/streams/s/records?seq_num={}&count=1000&clamp=true",
                bodies.len()
            ))
            .header("s2-basin", BASIN)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let records = page["records"].as_array().cloned().unwrap_or_default();
        if records.is_empty() {
            return bodies;
        }
        bodies.extend(
            records
                .iter()
                .map(|r| r["body"].as_str().unwrap().to_string()),
        );
    }
}

async fn status_of(http: &reqwest::Client, base: &str, path: &str) -> (StatusCode, Value) {
    let resp = http.get(format!("{base}{path}")).send().await.unwrap();
    let status = resp.status();
    (status, resp.json().await.unwrap_or(Value::Null))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_real_full_disk_refuses_writes_then_resumes_without_a_restart() {
    const RECORD_BYTES: usize = 48 * 1024;
    const MAX_APPENDS: usize = 2_000;
    // The ballast, freed later, is bigger than what fits beside it: the
    // reopened store must flush what its journal holds before it takes
    // writes again, and that needs room.
    let disk = SmallDisk::mount(64);
    let ballast = disk.mount.join("ballast");
    fill(&ballast, 36 << 20);
    let data = disk.mount.join("data");
    let server = RillProcess::start(&data);
    let base = server.base.clone();
    let http = reqwest::Client::new();
    create_basin_and_stream(&http, &base, BASIN).await;

    // Fill the disk; every acknowledged record is remembered.
    // Incompressible bodies: the space they take is the space they need.
    let mut acknowledged = Vec::new();
    let mut refusal = None;
    for i in 0..MAX_APPENDS {
        let body = format!("{i:06}{}", random_text(RECORD_BYTES));
        match append(&http, &base, &body).await {
            Ok(seq) => {
                assert_eq!(seq as usize, acknowledged.len(), "seq nums stay dense");
                acknowledged.push(body);
            }
            Err(err) => {
                refusal = Some(err);
                break;
            }
        }
    }
    // The write that met the full disk may or may not have landed (500,
    // saying so); one that came after it was never tried (507).
    let (status, body) = refusal.expect("the disk filled up within the bound");
    let message = body["message"].as_str().unwrap_or_default();
    let unknown = match status {
        StatusCode::INTERNAL_SERVER_ERROR => {
            assert!(message.contains("disk is full"), "{body}");
            Some(format!("{:06}", acknowledged.len()))
        }
        StatusCode::INSUFFICIENT_STORAGE => None,
        _ => panic!("{status} {body}"),
    };
    let filled_with = acknowledged.len();
    assert!(filled_with > 10, "only {filled_with} appends fit");

    // Not ready, says why; reads still work; more writes are refused.
    let (status, ready) = status_of(&http, &base, "/ready").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{ready}");
    let (_, health) = status_of(&http, &base, "/health").await;
    assert_eq!(health["writable"], false, "{health}");
    let landed = |mut bodies: Vec<String>| {
        // The unknown write, if it landed, sits right after the prefix
        // that was acknowledged before it.
        if let Some(prefix) = &unknown {
            if bodies
                .get(filled_with)
                .is_some_and(|b| b.starts_with(prefix.as_str()))
            {
                bodies.remove(filled_with);
            }
        }
        bodies
    };
    assert_eq!(landed(all_bodies(&http, &base).await), acknowledged);
    // Still full: refused (unless the store, reopened, found room again).
    match append(&http, &base, "refused").await {
        Err((status, _)) => assert_eq!(status, StatusCode::INSUFFICIENT_STORAGE),
        Ok(_) => acknowledged.push("refused".into()),
    }

    // Space comes back: writes resume by themselves.
    std::fs::remove_file(&ballast).unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while status_of(&http, &base, "/ready").await.0 != StatusCode::OK {
        assert!(Instant::now() < deadline, "writes did not resume");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    for i in 0..20 {
        let body = format!("after-{i}");
        append(&http, &base, &body).await.expect("writes resumed");
        acknowledged.push(body);
    }
    let (_, health) = status_of(&http, &base, "/health").await;
    assert!(health["storage_restarts"].as_u64() >= Some(1), "{health}");

    // And all of it survives a SIGKILL: exactly what was acknowledged.
    server.kill();
    let server = RillProcess::start(&data);
    assert_eq!(landed(all_bodies(&http, &server.base).await), acknowledged);
    eprintln!(
        "a 64 MiB ext4 disk with 36 MiB of ballast took {filled_with} acknowledged appends of {RECORD_BYTES} bytes before \
         refusing with 507; 20 more after space was freed, all there after a SIGKILL"
    );
    server.kill();
}

/// The active (newest) journal file in `dir`.
fn newest_journal(dir: &Path) -> PathBuf {
    let mut journals: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "jnl"))
        .collect();
    journals.sort_by_key(|p| {
        p.file_stem()
            .and_then(|s| s.to_str())
            .and_then(|s| s.parse::<u64>().ok())
    });
    journals.pop().expect("a journal")
}

/// A write cut short leaves garbage at the end of the journal, where the
/// next entry goes. fjall refuses writes after a failed one; the engine
/// reopens the store, whose recovery must cut the garbage off so that
/// later commits do not land behind it, where the next recovery would stop
/// and drop them (the commit ledger would refuse to start then).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_torn_write_at_the_journal_end_is_cut_off_before_writing_on() {
    let dir = tempfile::tempdir().unwrap();
    let journal_dir = dir.path().to_path_buf();
    let tear_next = Arc::new(AtomicBool::new(false));
    let tearing = tear_next.clone();
    let storage = Arc::new(FaultyStorage::over(
        FjallStorage::open(dir.path()).unwrap(),
        move |batch: &mut rill::storage::WriteBatch| {
            if !writes_records(batch) || !tearing.swap(false, Ordering::AcqRel) {
                return None;
            }
            // Bytes that do not decode, where the next entry would go (the
            // journal is preallocated: its written part ends at the last
            // byte that is not zero).
            use std::os::unix::fs::FileExt;
            let path = newest_journal(&journal_dir);
            let written = std::fs::read(&path).unwrap();
            let end = written.iter().rposition(|b| *b != 0).map_or(0, |i| i + 1);
            let journal = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
            journal.write_all_at(&[0x5a; 300], end as u64).unwrap();
            journal.sync_all().unwrap();
            Some(Fault::Refuse(StorageError::Io("short write".into())))
        },
    ));
    let server = TestServer::start_on(storage.clone()).await;
    server.with_stream("s").await;
    server.append("s", &["one", "two"]).await;

    tear_next.store(true, Ordering::Release);
    server
        .append_request("s", json!({ "records": [{ "body": "torn" }] }))
        .expect_error(StatusCode::INTERNAL_SERVER_ERROR, "storage")
        .await;
    let deadline = Instant::now() + Duration::from_secs(15);
    while !server
        .bare(reqwest::Method::GET, "/ready")
        .send()
        .await
        .unwrap()
        .status()
        .is_success()
    {
        assert!(Instant::now() < deadline, "writes did not resume");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    server.append("s", &["three"]).await;
    server.append("s", &["four"]).await;
    server.stop().await;
    drop(storage);

    // A fresh open (a restart) recovers every acknowledged write.
    let reopened = FjallStorage::open(dir.path()).expect("the store opens whole");
    let server = TestServer::start_on(Arc::new(reopened)).await;
    assert_eq!(
        server.read_bodies("s", "seq_num=0").await,
        ["one", "two", "three", "four"]
    );
}
