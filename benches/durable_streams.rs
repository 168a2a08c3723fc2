//! The Durable Streams protocol: appends per second and catch-up MiB/s
//! through it, next to the S2 protocol on the same server, and next to
//! the protocol's reference server (`@durable-streams/server`, file
//! backed, fsyncing each append as Rill does) on the same machine.
//!
//! `cargo bench --bench durable_streams`. The reference server needs
//! `scripts/install-durable-streams-suite.sh` (without it, its rows say
//! so). One run, on a noisy machine: compare the rows with each other.

mod support;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine as _;
use reqwest::Client;
use serde_json::json;

const BASIN: &str = "bench-basin";
/// How long each append workload runs.
const APPEND_FOR: Duration = Duration::from_secs(4);
const RECORD: usize = 1024;
/// What the catch-up reads read, written 1 MiB at a time.
const CATCH_UP_MIB: usize = 64;

#[derive(Clone, Copy, PartialEq)]
enum Protocol {
    DurableStreams,
    S2,
}

/// A server to measure: where, and which protocol.
#[derive(Clone)]
struct Target {
    name: &'static str,
    base: String,
    protocol: Protocol,
}

impl Target {
    fn create(&self, http: &Client, stream: &str) -> reqwest::RequestBuilder {
        match self.protocol {
            Protocol::DurableStreams => http
                .put(format!("{}/v1/stream/{stream}", self.base))
                .header("content-type", "application/octet-stream"),
            Protocol::S2 => http
                .post(format!("{}/v1/streams", self.base))
                .header("s2-basin", BASIN)
                .json(&json!({ "stream": stream })),
        }
    }

    fn append(&self, http: &Client, stream: &str, body: &[u8]) -> reqwest::RequestBuilder {
        match self.protocol {
            Protocol::DurableStreams => http
                .post(format!("{}/v1/stream/{stream}", self.base))
                .header("content-type", "application/octet-stream")
                .body(body.to_vec()),
            // The bytes as S2's JSON carries them: base64.
            Protocol::S2 => http
                .post(format!("{}/v1/streams/{stream}/records", self.base))
                .header("s2-basin", BASIN)
                .header("s2-format", "base64")
                .json(&json!({ "records": [{
                    "body": base64::engine::general_purpose::STANDARD.encode(body)
                }] })),
        }
    }
}

#[tokio::main]
async fn main() {
    let dir = tempfile::tempdir().unwrap();
    support::fsync_reference(dir.path(), RECORD);
    let served = support::serve(&dir.path().join("rill"), BASIN).await;
    let reference_dir = dir.path().join("reference");
    let reference = ReferenceServer::start(&reference_dir);
    let mut targets = vec![
        Target {
            name: "Rill, Durable Streams",
            base: served.base.clone(),
            protocol: Protocol::DurableStreams,
        },
        Target {
            name: "Rill, S2 (JSON)",
            base: served.base.clone(),
            protocol: Protocol::S2,
        },
    ];
    match &reference {
        Some(server) => targets.push(Target {
            name: "reference server",
            base: server.base.clone(),
            protocol: Protocol::DurableStreams,
        }),
        None => {
            println!("reference server: not installed (scripts/install-durable-streams-suite.sh)")
        }
    }
    let http = Client::builder()
        .pool_max_idle_per_host(64)
        .build()
        .unwrap();

    println!(
        "\nappends of {RECORD} B, each acknowledged before the writer's next, for {APPEND_FOR:?}:"
    );
    for writers in [1usize, 16] {
        for target in &targets {
            let (count, latencies) = appends(&http, target, writers).await;
            println!(
                "  {:<24} {writers:>2} writer(s) {:>8.0} appends/s   p50 {}  p99 {}",
                target.name,
                count as f64 / APPEND_FOR.as_secs_f64(),
                support::ms(support::percentile(&latencies, 0.5)),
                support::ms(support::percentile(&latencies, 0.99)),
            );
        }
    }

    println!("\ncatch-up read of {CATCH_UP_MIB} MiB from the start, one request after another:");
    for target in &targets {
        let mib_per_s = catch_up(&http, target).await;
        println!("  {:<24} {mib_per_s:>8.1} MiB/s", target.name);
    }
    drop(reference);
    served.stop().await;
}

/// `writers` writers, each appending to a stream of its own for
/// [`APPEND_FOR`]; how many appends were acknowledged, and their latencies.
async fn appends(http: &Client, target: &Target, writers: usize) -> (usize, Vec<Duration>) {
    let run = format!("{}-{writers}", target.protocol as u8);
    let mut tasks = Vec::new();
    for writer in 0..writers {
        let (http, target) = (http.clone(), target.clone());
        let stream = format!("append-{run}-{writer}");
        tasks.push(tokio::spawn(async move {
            let created = target.create(&http, &stream).send().await.unwrap();
            assert!(created.status().is_success(), "{}", created.status());
            let body = vec![b'x'; RECORD];
            let mut latencies = Vec::new();
            let deadline = Instant::now() + APPEND_FOR;
            while Instant::now() < deadline {
                let start = Instant::now();
                let resp = target.append(&http, &stream, &body).send().await.unwrap();
                assert!(resp.status().is_success(), "{}", resp.status());
                latencies.push(start.elapsed());
            }
            latencies
        }));
    }
    let mut latencies = Vec::new();
    for task in tasks {
        latencies.extend(task.await.unwrap());
    }
    latencies.sort();
    (latencies.len(), latencies)
}

/// Writes [`CATCH_UP_MIB`] MiB, then reads them from the start; MiB/s.
async fn catch_up(http: &Client, target: &Target) -> f64 {
    let stream = format!("catch-up-{}", target.protocol as u8);
    let created = target.create(http, &stream).send().await.unwrap();
    assert!(created.status().is_success(), "{}", created.status());
    // S2 takes at most 1 MiB a batch, base64 and metering included.
    let piece = vec![b'y'; 512 * 1024];
    for _ in 0..CATCH_UP_MIB * 2 {
        let resp = target.append(http, &stream, &piece).send().await.unwrap();
        assert!(resp.status().is_success(), "{}", resp.status());
    }
    let total = CATCH_UP_MIB * 1024 * 1024;
    let start = Instant::now();
    let read = match target.protocol {
        Protocol::DurableStreams => read_durable_streams(http, target, &stream).await,
        Protocol::S2 => read_s2(http, target, &stream).await,
    };
    let elapsed = start.elapsed();
    assert_eq!(read, total, "{} read back", target.name);
    total as f64 / (1024.0 * 1024.0) / elapsed.as_secs_f64()
}

async fn read_durable_streams(http: &Client, target: &Target, stream: &str) -> usize {
    let mut offset = "-1".to_string();
    let mut read = 0;
    loop {
        let resp = http
            .get(format!(
                "{}/v1/stream/{stream}?offset={offset}",
                target.base
            ))
            .send()
            .await
            .unwrap();
        let done = resp.headers().contains_key("stream-up-to-date");
        offset = resp.headers()["stream-next-offset"]
            .to_str()
            .unwrap()
            .to_string();
        read += resp.bytes().await.unwrap().len();
        if done {
            return read;
        }
    }
}

async fn read_s2(http: &Client, target: &Target, stream: &str) -> usize {
    let mut next = 0u64;
    let mut read = 0;
    loop {
        let resp = http
            .get(format!(
                "{}/v1/streams/{stream}/records?seq_num={next}",
                target.base
            ))
            .header("s2-basin", BASIN)
            .header("s2-format", "base64")
            .send()
            .await
            .unwrap();
        // At the tail, S2 answers 416.
        if resp.status() == reqwest::StatusCode::RANGE_NOT_SATISFIABLE {
            return read;
        }
        let batch: serde_json::Value = resp.json().await.unwrap();
        let records = batch["records"].as_array().unwrap();
        for record in records {
            let body = record["body"].as_str().unwrap();
            read += base64::engine::general_purpose::STANDARD
                .decode(body)
                .unwrap()
                .len();
            next = record["seq_num"].as_u64().unwrap() + 1;
        }
    }
}

/// The reference server, run by Node from the installed suite's packages.
struct ReferenceServer {
    child: Child,
    base: String,
}

impl ReferenceServer {
    fn start(data_dir: &Path) -> Option<Self> {
        let packages = std::env::var_os("RILL_DS_CONFORMANCE")
            .map(PathBuf::from)
            .unwrap_or_else(|| {
                Path::new(env!("CARGO_MANIFEST_DIR")).join("conformance/durable-streams")
            });
        if !packages
            .join("node_modules/@durable-streams/server")
            .exists()
        {
            return None;
        }
        std::fs::create_dir_all(data_dir).unwrap();
        // The Node the install script chose, if it linked one there.
        let bin = packages.join("node_modules/.bin");
        let path = std::env::var_os("PATH").unwrap_or_default();
        let path =
            std::env::join_paths(std::iter::once(bin).chain(std::env::split_paths(&path))).ok()?;
        let mut child = Command::new("node")
            .arg("reference-server.mjs")
            .arg(data_dir)
            .env("PATH", path)
            .current_dir(&packages)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .ok()?;
        // Its URL is the line that starts with one; the rest is its log,
        // read on so that it never blocks on a full pipe.
        let stdout = child.stdout.take()?;
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in
                std::io::BufRead::lines(std::io::BufReader::new(stdout)).map_while(Result::ok)
            {
                if line.starts_with("http://") {
                    let _ = tx.send(line);
                }
            }
        });
        let Ok(base) = rx.recv_timeout(Duration::from_secs(30)) else {
            let _ = child.kill();
            let _ = child.wait();
            return None;
        };
        Some(ReferenceServer { child, base })
    }
}

impl Drop for ReferenceServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
