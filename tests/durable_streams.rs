//! The Durable Streams protocol: its published conformance suite and the
//! official TypeScript client, run against Rill (`conformance/durable-
//! streams/`, installed by `scripts/install-durable-streams-suite.sh`);
//! and what the protocol and S2 see of each other's streams.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use reqwest::StatusCode;
use rill::storage::MemoryStorage;
use serde_json::{json, Value};

/// How long the suite may take (it takes about 30 s).
const SUITE_LIMIT: Duration = Duration::from_secs(600);

/// The suite's directory, with its packages installed; `None` (the test
/// skips) unless `RILL_REQUIRE_DS_CONFORMANCE` says it must run.
fn suite_dir() -> Option<PathBuf> {
    let dir = std::env::var_os("RILL_DS_CONFORMANCE")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            Path::new(env!("CARGO_MANIFEST_DIR")).join("conformance/durable-streams")
        });
    if dir.join("node_modules/.bin/vitest").exists() {
        return Some(dir);
    }
    assert!(
        std::env::var_os("RILL_REQUIRE_DS_CONFORMANCE").is_none(),
        "the Durable Streams conformance suite is not installed in {} \
         (scripts/install-durable-streams-suite.sh)",
        dir.display()
    );
    eprintln!("skipping: the Durable Streams conformance suite is not installed");
    None
}

/// A server whose long polls wait 2 s: the suite's tests of a poll that
/// times out wait for it.
async fn server() -> TestServer {
    server_polling(Duration::from_secs(2)).await
}

async fn server_polling(long_poll: Duration) -> TestServer {
    let options = rill::server::ServerOptions {
        durable_streams_long_poll: Some(long_poll),
        ..Default::default()
    };
    TestServer::start_with(Arc::new(MemoryStorage::default()), options).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_conformance_suite_and_the_official_client_pass() {
    let Some(dir) = suite_dir() else { return };
    let server = server().await;
    let out = tempfile::tempdir().unwrap();
    let results = out.path().join("results.json");
    let log = out.path().join("vitest.log");
    let run = {
        let (dir, results, log, base) = (
            dir.clone(),
            results.clone(),
            log.clone(),
            server.base.clone(),
        );
        tokio::task::spawn_blocking(move || run_vitest(&dir, &base, &results, &log))
    };
    let finished = run.await.unwrap();
    let said = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(
        finished,
        "vitest did not finish within {SUITE_LIMIT:?}:\n{said}"
    );
    let report: Value =
        serde_json::from_str(&std::fs::read_to_string(&results).unwrap_or_default())
            .unwrap_or_else(|e| panic!("no vitest report ({e}):\n{said}"));

    let mut failed = Vec::new();
    let mut skipped = Vec::new();
    let mut summary = Vec::new();
    for file in report["testResults"].as_array().unwrap() {
        let suite = if file["name"]
            .as_str()
            .unwrap_or("")
            .ends_with("test-runner.js")
        {
            "conformance suite"
        } else {
            "official client"
        };
        let (mut passed, mut failures, mut skips) = (0, 0, 0);
        for test in file["assertionResults"].as_array().unwrap() {
            let name = test["fullName"].as_str().unwrap_or("").to_string();
            match test["status"].as_str() {
                Some("passed") => passed += 1,
                Some("failed") => {
                    failures += 1;
                    failed.push(format!(
                        "{name}: {}",
                        test["failureMessages"][0].as_str().unwrap_or("")
                    ));
                }
                _ => {
                    skips += 1;
                    skipped.push((test["ancestorTitles"][0].clone(), name));
                }
            }
        }
        summary.push(format!(
            "Durable Streams {suite}: {} tests, {passed} passed, {failures} failed, {skips} skipped",
            passed + failures + skips
        ));
    }
    for (_, name) in &skipped {
        summary.push(format!(
            "  skipped: {name} (the suite runs the reserved subscription APIs only for \
             servers that implement them; Rill answers them 501)"
        ));
    }
    let summary = summary.join("\n");
    eprintln!("{summary}");
    // CI prints it after the tests (`.ci/run`).
    if let Some(report) = std::env::var_os("RILL_DS_REPORT") {
        std::fs::write(report, format!("{summary}\n")).unwrap();
    }
    assert!(
        failed.is_empty(),
        "{} failed:\n{}",
        failed.len(),
        failed.join("\n\n")
    );
    // Only what the suite itself runs for servers with subscriptions.
    let unexpected: Vec<_> = skipped
        .iter()
        .filter(|(group, _)| group != "Reserved subscription APIs")
        .collect();
    assert!(unexpected.is_empty(), "skipped: {unexpected:?}");
    let passed = report["numPassedTests"].as_u64().unwrap();
    assert!(passed >= 330, "only {passed} passed:\n{said}");
}

/// Runs vitest in `dir` against `base`; false if it ran past the limit.
fn run_vitest(dir: &Path, base: &str, results: &Path, log: &Path) -> bool {
    let output = std::fs::File::create(log).unwrap();
    let mut child = Command::new(dir.join("node_modules/.bin/vitest"))
        .args(["run", "--reporter=default", "--reporter=json"])
        .arg(format!("--outputFile.json={}", results.display()))
        .current_dir(dir)
        // The Node the install script chose, if it linked one there.
        .env("PATH", path_with(&dir.join("node_modules/.bin")))
        .env("CONFORMANCE_TEST_URL", base)
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .stdout(output.try_clone().unwrap())
        .stderr(output)
        .spawn()
        .expect("vitest starts");
    let deadline = Instant::now() + SUITE_LIMIT;
    loop {
        if child.try_wait().unwrap().is_some() {
            return true;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            return false;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// `PATH` with `first` in front.
fn path_with(first: &Path) -> std::ffi::OsString {
    let rest = std::env::var_os("PATH").unwrap_or_default();
    std::env::join_paths(std::iter::once(first.to_path_buf()).chain(std::env::split_paths(&rest)))
        .unwrap()
}

/// `/v1/stream/{path}` on `server`.
fn ds(server: &TestServer, path: &str) -> String {
    server.url(&format!("/v1/stream/{path}"))
}

/// An S2 request to the Durable Streams basin.
fn s2(server: &TestServer, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
    server
        .bare(method, path)
        .header("s2-basin", "durable-streams")
}

#[tokio::test]
async fn the_two_protocols_see_one_stream() {
    let server = server().await;
    let http = &server.client;
    let resp = http
        .put(ds(&server, "shared/orders"))
        .header("content-type", "application/json")
        .body(r#"[{"a":1},{"b":2}]"#)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::CREATED);

    // Each message is a record, without headers, at the seq num its offset
    // names.
    let batch = expect_status(
        s2(
            &server,
            reqwest::Method::GET,
            "/v1/streams/shared%2Forders/records?seq_num=0",
        )
        .send()
        .await
        .unwrap(),
        StatusCode::OK,
    )
    .await;
    assert_eq!(bodies(&batch), [r#"{"a":1}"#, r#"{"b":2}"#]);
    assert_eq!(seq_nums(&batch), [0, 1]);

    // An S2 append is a message too (a JSON stream's records must be
    // JSON for its readers).
    let resp = s2(
        &server,
        reqwest::Method::POST,
        "/v1/streams/shared%2Forders/records",
    )
    .json(&json!({"records": [{"body": "3"}]}))
    .send()
    .await
    .unwrap();
    expect_status(resp, StatusCode::OK).await;
    let read = http.get(ds(&server, "shared/orders")).send().await.unwrap();
    assert_eq!(
        read.headers()["stream-next-offset"],
        "0000000000000003_0000000000000000"
    );
    assert_eq!(read.text().await.unwrap(), r#"[{"a":1},{"b":2},3]"#);

    // Closed through Durable Streams, closed for S2 too.
    let resp = http
        .post(ds(&server, "shared/orders"))
        .header("stream-closed", "true")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::NO_CONTENT);
    let resp = s2(
        &server,
        reqwest::Method::POST,
        "/v1/streams/shared%2Forders/records",
    )
    .json(&json!({"records": [{"body": "4"}]}))
    .send()
    .await
    .unwrap();
    expect_error(resp, StatusCode::CONFLICT, "stream_closed").await;

    // A stream made through S2 in the basin reads as bytes.
    let resp = s2(&server, reqwest::Method::POST, "/v1/streams")
        .json(&json!({"stream": "from-s2"}))
        .send()
        .await
        .unwrap();
    expect_status(resp, StatusCode::CREATED).await;
    let resp = s2(
        &server,
        reqwest::Method::POST,
        "/v1/streams/from-s2/records",
    )
    .json(&json!({"records": [{"body": "one "}, {"body": "two"}]}))
    .send()
    .await
    .unwrap();
    expect_status(resp, StatusCode::OK).await;
    let head = http.head(ds(&server, "from-s2")).send().await.unwrap();
    assert_eq!(head.status(), StatusCode::OK);
    assert_eq!(head.headers()["content-type"], "application/octet-stream");
    let read = http.get(ds(&server, "from-s2")).send().await.unwrap();
    assert_eq!(read.text().await.unwrap(), "one two");

    // Deleting through Durable Streams deletes the S2 stream.
    let resp = http.delete(ds(&server, "from-s2")).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::NO_CONTENT);
    let resp = s2(&server, reqwest::Method::GET, "/v1/streams/from-s2")
        .send()
        .await
        .unwrap();
    expect_error(resp, StatusCode::NOT_FOUND, "stream_not_found").await;
}

#[tokio::test]
async fn a_token_reaches_only_the_streams_of_its_scope() {
    let root = "ds-root-token-0123456789abcdefghijklmnopq";
    let server = TestServer::start_with_root_token(root).await;
    let http = &server.client;
    let issued = expect_status(
        http.post(server.url("/v1/access-tokens"))
            .bearer_auth(root)
            .json(&json!({
                "id": "ds-writer",
                "scope": {
                    "basins": {"exact": "durable-streams"},
                    "streams": {"prefix": "team-a/"},
                    "ops": ["create-stream", "append", "read", "delete-stream"]
                }
            }))
            .send()
            .await
            .unwrap(),
        StatusCode::CREATED,
    )
    .await;
    let token = issued["access_token"].as_str().unwrap();

    let put = |path: &str, token: Option<&str>| {
        let mut request = http
            .put(ds(&server, path))
            .header("content-type", "text/plain")
            .body("x");
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        request.send()
    };
    assert_eq!(
        put("team-a/log", Some(token)).await.unwrap().status(),
        StatusCode::CREATED
    );
    assert_eq!(
        put("team-b/log", Some(token)).await.unwrap().status(),
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        put("team-a/other", None).await.unwrap().status(),
        StatusCode::UNAUTHORIZED
    );
    let read = http
        .get(ds(&server, "team-a/log"))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    assert_eq!(read.text().await.unwrap(), "x");

    // A fork reads its source: a source outside the scope is refused.
    put("team-b/source", Some(root)).await.unwrap();
    let fork = http
        .put(ds(&server, "team-a/fork"))
        .bearer_auth(token)
        .header("stream-forked-from", "/v1/stream/team-b/source")
        .send()
        .await
        .unwrap();
    assert_eq!(fork.status(), StatusCode::FORBIDDEN);
    // A preflight needs no token.
    let preflight = http
        .request(reqwest::Method::OPTIONS, ds(&server, "team-a/log"))
        .header("origin", "https://example.com")
        .header("access-control-request-method", "POST")
        .send()
        .await
        .unwrap();
    assert_eq!(preflight.status(), StatusCode::NO_CONTENT);
    assert_eq!(preflight.headers()["access-control-allow-origin"], "*");
}

#[tokio::test]
async fn expiry_waits_for_live_readers_and_a_source_with_forks_is_kept() {
    // Polls of 4 s, TTLs of 2 s, upkeep every second: wide margins for a
    // busy machine.
    let server = server_polling(Duration::from_secs(4)).await;
    let http = &server.client;
    let put = |path: &str, ttl: &str| {
        http.put(ds(&server, path))
            .header("content-type", "text/plain")
            .header("stream-ttl", ttl)
            .body("x")
            .send()
    };
    assert_eq!(
        put("brief", "2").await.unwrap().status(),
        StatusCode::CREATED
    );
    // The long poll outlasts the TTL; upkeep sweeps every second, yet the
    // stream stays while the reader waits, and its TTL counts from then.
    let poll = http
        .get(format!(
            "{}?offset=now&live=long-poll",
            ds(&server, "brief")
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(poll.status(), StatusCode::NO_CONTENT);
    let head = http.head(ds(&server, "brief")).send().await.unwrap();
    assert_eq!(head.status(), StatusCode::OK, "expired under a live reader");
    tokio::time::sleep(Duration::from_millis(3500)).await;
    let head = http.head(ds(&server, "brief")).send().await.unwrap();
    assert_eq!(head.status(), StatusCode::NOT_FOUND);

    // An expired source with a fork is kept for it: 410, never 404.
    assert_eq!(
        put("short-source", "2").await.unwrap().status(),
        StatusCode::CREATED
    );
    let fork = http
        .put(ds(&server, "long-fork"))
        .header("stream-forked-from", "/v1/stream/short-source")
        .header("stream-ttl", "3600")
        .send()
        .await
        .unwrap();
    assert_eq!(fork.status(), StatusCode::CREATED);
    tokio::time::sleep(Duration::from_millis(3500)).await;
    let head = http.head(ds(&server, "short-source")).send().await.unwrap();
    assert_eq!(head.status(), StatusCode::GONE);
    let delete = http
        .delete(ds(&server, "short-source"))
        .send()
        .await
        .unwrap();
    assert_eq!(delete.status(), StatusCode::GONE);
    let read = http.get(ds(&server, "long-fork")).send().await.unwrap();
    assert_eq!(read.text().await.unwrap(), "x");

    // Producer ids and writer sequences are kept with the stream: bounded.
    let long = "p".repeat(257);
    let resp = http
        .post(ds(&server, "long-fork"))
        .header("content-type", "text/plain")
        .header("producer-id", &long)
        .header("producer-epoch", "0")
        .header("producer-seq", "0")
        .body("y")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
    let resp = http
        .post(ds(&server, "long-fork"))
        .header("content-type", "text/plain")
        .header("stream-seq", &long)
        .body("y")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
}
