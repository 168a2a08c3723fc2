//! The `rill` command line against a server on loopback: each command's
//! output is checked, errors are one line with a non-zero exit code, and
//! usage errors are clap's (what is wrong, a tip, the usage; exit code 2).

mod common;

use std::process::{Command, Stdio};

use common::*;
use serde_json::Value;

/// Runs `rill ARGS` with `stdin`; returns (success, stdout, stderr).
async fn rill(server: &TestServer, args: &[&str], stdin: &str) -> (bool, String, String) {
    let ran = common::cli::run_rill(server, args, stdin).await;
    (ran.code == Some(0), ran.out, ran.err)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn data_commands() {
    let server = TestServer::start().await;
    server.with_stream("log").await;

    let (ok, out, err) = rill(&server, &["append", "log"], "one\ntwo\nthree\n").await;
    assert!(ok, "{err}");
    assert_eq!(out.trim(), "appended 3 records, seq nums 0 to 2");
    let (ok, out, _) = rill(
        &server,
        &["read", "log", "--seq-num", "1", "--count", "5"],
        "",
    )
    .await;
    assert!(ok);
    assert_eq!(out, "two\nthree\n");
    let (_, out, _) = rill(&server, &["read", "log", "--json", "--count", "1"], "").await;
    let line: Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(
        (line["seq_num"].as_u64(), line["body"].as_str()),
        (Some(0), Some("one"))
    );
    let (_, out, _) = rill(&server, &["check-tail", "log"], "").await;
    assert_eq!(out.trim(), "3");

    let resp = server.put("/v1/collections/users").send().await.unwrap();
    assert!(resp.status().is_success());
    let (ok, out, err) = rill(&server, &["put", "users", "u1", r#"{"name":"Ada"}"#], "").await;
    assert!(ok, "{err}");
    assert_eq!(out.trim(), "u1\tv1\t{\"name\":\"Ada\"}");
    let (_, out, _) = rill(&server, &["get", "users", "u1", "--json"], "").await;
    let record: Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(record["data"]["name"], "Ada");
    let (ok, out, err) = rill(&server, &["updated", "users"], "").await;
    assert!(ok);
    assert_eq!(out.lines().count(), 1);
    let cursor = err
        .lines()
        .find_map(|l| l.strip_prefix("cursor: "))
        .unwrap()
        .to_string();
    rill(&server, &["put", "users", "u2", r#"{"name":"Bo"}"#], "").await;
    let (_, out, _) = rill(
        &server,
        &["updated", "users", "--cursor", &cursor, "--json"],
        "",
    )
    .await;
    // One JSON object per record, per line.
    let records: Vec<Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(records.len(), 1, "{out}");
    assert_eq!(records[0]["id"], "u2");

    // The pair form of the cursor: everything after u1's change.
    let (_, out, _) = rill(&server, &["get", "users", "u1", "--json"], "").await;
    let u1: Value = serde_json::from_str(out.trim()).unwrap();
    let after = u1["updated_at"].as_u64().unwrap().to_string();
    let (ok, out, err) = rill(
        &server,
        &[
            "updated",
            "users",
            "--updated-after",
            &after,
            "--after-id",
            "u1",
        ],
        "",
    )
    .await;
    assert!(ok, "{err}");
    assert!(out.starts_with("u2\tv1\t"), "{out}");
    assert!(err.contains("cursor: "), "{err}");

    let (ok, out, err) = rill(&server, &["delete", "users", "u1"], "").await;
    assert!(ok, "{err}");
    assert_eq!(out.trim(), "u1\tv2\t(deleted)");
    let (ok, out, _) = rill(&server, &["get", "users", "u1"], "").await;
    assert!(ok && out.contains("(deleted)"), "{out}");

    // Binary bodies travel as base64 both ways; text lines may be any bytes.
    server.with_stream("bin").await;
    let (ok, out, err) = rill(
        &server,
        &["append", "bin", "--format", "base64"],
        "AAEC/w==\n3q2+7w==\n",
    )
    .await;
    assert!(ok, "{err}");
    assert_eq!(out.trim(), "appended 2 records, seq nums 0 to 1");
    let (_, out, _) = rill(&server, &["read", "bin", "--format", "base64"], "").await;
    assert_eq!(out, "AAEC/w==\n3q2+7w==\n");
    let (_, out, _) = rill(
        &server,
        &[
            "read", "bin", "--format", "base64", "--json", "--count", "1",
        ],
        "",
    )
    .await;
    let record: Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(record["body"], "AAEC/w==");
    let (ok, _, err) = rill(
        &server,
        &["append", "bin", "--format", "base64"],
        "AA==\n!!\n",
    )
    .await;
    assert!(!ok && err.contains("not base64"), "{err}");
    // The good line before the bad one was appended; the bad one was not.
    let (_, out, _) = rill(&server, &["check-tail", "bin"], "").await;
    assert_eq!(out.trim(), "3");

    // A whole input lands contiguously at --match-seq-num, or not at all.
    let (ok, out, err) = rill(
        &server,
        &["append", "log", "--match-seq-num", "3"],
        "four\nfive\n",
    )
    .await;
    assert!(ok, "{err}");
    assert_eq!(out.trim(), "appended 2 records, seq nums 3 to 4");
    let (ok, _, err) = rill(
        &server,
        &["append", "log", "--match-seq-num", "3"],
        "late\n",
    )
    .await;
    assert!(!ok && err.contains("412"), "{err}");
    let (_, out, _) = rill(&server, &["check-tail", "log"], "").await;
    assert_eq!(out.trim(), "5");

    // Errors: one line, non-zero exit.
    for (args, needle) in [
        (vec!["read", "nope"], "stream_not_found"),
        (vec!["append", "nope"], "stream_not_found"),
        (vec!["get", "users", "ghost"], "not found"),
        (vec!["delete", "users", "ghost"], "record_not_found"),
        (vec!["put", "users", "u3", "{not json"], "not JSON"),
        (vec!["read", "log", "--basin", ""], "RILL_BASIN"),
        (
            vec!["check-tail", "log", "--endpoint", "http://127.0.0.1:1"],
            "Connection refused",
        ),
        (
            vec!["check-tail", "log", "--ca-cert", "/nonexistent/ca.pem"],
            "cannot read --ca-cert",
        ),
    ] {
        let (ok, _, err) = rill(&server, &args, "").await;
        assert!(!ok, "{args:?} should fail");
        assert_eq!(err.trim().lines().count(), 1, "{err}");
        assert!(err.contains(needle), "{args:?}: {err}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_commands_and_consume() {
    let server = TestServer::start().await;
    server.create_basin(BASIN).await;

    // Lists are tables for people, a JSON object per line for scripts.
    let (ok, out, err) = rill(&server, &["basins", "list"], "").await;
    assert!(ok, "{err}");
    let rows: Vec<Vec<&str>> = out
        .lines()
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert_eq!(rows[0], ["NAME", "STATE", "CREATED"], "{out}");
    assert_eq!((rows.len(), rows[1][0], rows[1][1]), (2, BASIN, "active"));
    for kind in ["streams", "collections"] {
        let (ok, _, err) = rill(&server, &[kind, "create", "things"], "").await;
        assert!(ok, "{kind}: {err}");
        let (_, out, _) = rill(&server, &[kind, "list"], "").await;
        assert!(
            out.lines().any(|l| l.starts_with("things ")),
            "{kind}: {out}"
        );
        let (_, out, _) = rill(&server, &[kind, "list", "--json"], "").await;
        let item: Value = serde_json::from_str(out.trim()).unwrap();
        assert_eq!(item["name"], "things", "{kind}: {out}");
    }
    // `get` prints `key  value` lines, or the JSON.
    let (_, out, _) = rill(&server, &["streams", "get", "things"], "").await;
    assert!(
        out.lines().any(|l| l.split_whitespace().collect::<Vec<_>>() == ["retention_policy.age", "604800"]),
        "{out}"
    );
    let (_, out, _) = rill(&server, &["streams", "get", "things", "--json"], "").await;
    let config: Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(config["retention_policy"]["age"], 604800, "{config}");

    // Reconfigure changes only what is given.
    let (ok, out, err) = rill(
        &server,
        &[
            "streams",
            "reconfigure",
            "things",
            "--config",
            r#"{"retention_policy": {"age": 60}}"#,
            "--json",
        ],
        "",
    )
    .await;
    assert!(ok, "{err}");
    let config: Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(config["retention_policy"]["age"], 60, "{config}");
    assert_eq!(config["timestamping"]["mode"], "client-prefer", "{config}");
    let (ok, out, err) = rill(
        &server,
        &[
            "collections",
            "reconfigure",
            "things",
            "--config",
            r#"{"tombstone_retention_secs": 5}"#,
        ],
        "",
    )
    .await;
    assert!(ok, "{err}");
    assert!(out.contains("config.tombstone_retention_secs  5"), "{out}");
    let (ok, _, err) = rill(
        &server,
        &["collections", "reconfigure", "ghost", "--config", "{}"],
        "",
    )
    .await;
    assert!(!ok && err.contains("collection_not_found"), "{err}");

    let consumer = r#"{"source": {"stream": "things"}}"#;
    let (ok, _, err) = rill(
        &server,
        &["consumers", "create", "c1", "--config", consumer],
        "",
    )
    .await;
    assert!(ok, "{err}");
    let (_, out, _) = rill(&server, &["consumers", "list"], "").await;
    let row: Vec<&str> = out.lines().nth(1).unwrap().split_whitespace().collect();
    assert_eq!(row[..4], ["c1", "stream", "things", "explicit"], "{out}");
    assert!(row[4].ends_with('Z'), "created, RFC 3339: {out}");
    rill(&server, &["append", "things"], "x\ny\nz\n").await;
    let (ok, out, err) = rill(&server, &["consume", "c1", "--count", "3"], "").await;
    assert!(ok, "{err}");
    let bodies: Vec<String> = out
        .lines()
        .map(|l| {
            serde_json::from_str::<Value>(l).unwrap()["record"]["body"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    assert_eq!(bodies, ["x", "y", "z"]);
    let (_, out, _) = rill(&server, &["consumers", "get", "c1", "--json"], "").await;
    let state: Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(state["state"]["acked"], 3, "{state}");
    let (ok, out, err) = rill(
        &server,
        &[
            "consumers",
            "reconfigure",
            "c1",
            "--config",
            r#"{"ack_wait_ms": 1000}"#,
        ],
        "",
    )
    .await;
    assert!(ok, "{err}");
    assert!(out.contains("config.ack_wait_ms"), "{out}");

    // --exec pipes each message to a command: exit 0 acks, anything else
    // nacks and the message comes back.
    let consumer = r#"{"source": {"stream": "things"}, "start": {"seq_num": 0}}"#;
    rill(
        &server,
        &["consumers", "create", "c3", "--config", consumer],
        "",
    )
    .await;
    let dir = tempfile::tempdir().unwrap();
    let seen = dir.path().join("seen");
    let script = format!(
        r#"read m; echo "$m" >> {seen}; case "$m" in *'"y"'*) [ -e {seen}.again ] || {{ touch {seen}.again; exit 1; }};; esac"#,
        seen = seen.display()
    );
    let (ok, _, err) = rill(
        &server,
        &[
            "consume",
            "c3",
            "--count",
            "4",
            "--exec",
            &script,
            "--retry-delay-ms",
            "0",
        ],
        "",
    )
    .await;
    assert!(ok, "{err}");
    let handled: Vec<(String, u64)> = std::fs::read_to_string(&seen)
        .unwrap()
        .lines()
        .map(|l| {
            let m: Value = serde_json::from_str(l).unwrap();
            (
                m["record"]["body"].as_str().unwrap().to_string(),
                m["delivery_count"].as_u64().unwrap(),
            )
        })
        .collect();
    let y_deliveries: Vec<u64> = handled
        .iter()
        .filter(|(b, _)| b == "y")
        .map(|(_, n)| *n)
        .collect();
    assert_eq!(y_deliveries, [1, 2], "{handled:?}");
    assert_eq!(handled.len(), 4, "{handled:?}");
    // --count counts messages handled, failed ones too; each failure is
    // said, and the tally at the end.
    assert!(
        err.contains("rill: the message at seq num 1 (delivery 1) failed:"),
        "{err}"
    );
    assert!(
        err.contains("handled 4 messages: 3 acked, 1 failed"),
        "{err}"
    );

    let (ok, out, _) = rill(&server, &["consumers", "delete", "c1"], "").await;
    assert!(ok);
    assert_eq!(out.trim(), "deleted c1");
    let (ok, _, err) = rill(&server, &["consumers", "get", "c1"], "").await;
    assert!(!ok);
    assert!(err.contains("consumer_not_found"), "{err}");
    let (ok, _, err) = rill(&server, &["consumers", "create", "c2", "--config", "{"], "").await;
    assert!(!ok && err.contains("not JSON"), "{err}");
}

/// Big inputs are split into appends by the byte limit as well as the
/// record limit, and land whole and in order; a line too big for any
/// append stops the input there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn append_splits_big_inputs() {
    let server = TestServer::start().await;
    server.with_stream("big").await;
    // Runs of five 300 KiB lines (three fit in an append) among small ones.
    let lines: Vec<String> = (0..3_000)
        .map(|i| {
            if (7..12).contains(&(i % 500)) {
                format!("{i}-{}", "x".repeat(300 * 1024))
            } else {
                format!("line {i}")
            }
        })
        .collect();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("input");
    std::fs::write(&file, lines.join("\n") + "\n").unwrap();
    let (ok, out, err) = rill(
        &server,
        &["append", "big", "--file", file.to_str().unwrap(), "--json"],
        "",
    )
    .await;
    assert!(ok, "{err}");
    let ack: Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(
        (ack["records"].as_u64(), ack["end"].as_u64()),
        (Some(3_000), Some(3_000))
    );
    let mut stored = Vec::new();
    while stored.len() < lines.len() {
        let (ok, out, err) = rill(
            &server,
            &["read", "big", "--seq-num", &stored.len().to_string()],
            "",
        )
        .await;
        assert!(ok && !out.is_empty(), "{err}");
        stored.extend(out.lines().map(str::to_owned));
    }
    assert!(stored == lines, "every line, in order");

    let too_big = format!("ok\n{}\nnever\n", "y".repeat(1024 * 1024));
    let (ok, _, err) = rill(&server, &["append", "big"], &too_big).await;
    assert!(!ok, "a line over 1 MiB is refused");
    assert!(err.contains("line 2 is"), "{err}");
    assert!(
        err.contains("appended 1 record, seq num 3000 before it"),
        "{err}"
    );
    let (_, out, _) = rill(&server, &["check-tail", "big"], "").await;
    assert_eq!(out.trim(), "3001");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_options_and_tail_follow() {
    let server = TestServer::start().await;
    server.with_stream("log").await;
    rill(&server, &["append", "log"], "a\nbb\nccc\ndddd\n").await;

    let (_, out, _) = rill(&server, &["read", "log", "--tail-offset", "2"], "").await;
    assert_eq!(out, "ccc\ndddd\n");
    // Each record meters 8 bytes plus its body: "a" and "bb" fit in 19.
    let (_, out, _) = rill(&server, &["read", "log", "--bytes", "19"], "").await;
    assert_eq!(out, "a\nbb\n");
    let (_, out, _) = rill(
        &server,
        &["read", "log", "--seq-num", "1", "--count", "2"],
        "",
    )
    .await;
    assert_eq!(out, "bb\nccc\n");
    let (_, out, _) = rill(&server, &["tail", "log", "-n", "1"], "").await;
    assert_eq!(out, "dddd\n");
    let (ok, _, err) = rill(
        &server,
        &["read", "log", "--seq-num", "1", "--tail-offset", "1"],
        "",
    )
    .await;
    assert!(!ok && !err.is_empty());

    // tail -f prints what is appended after it started.
    let (mut child, output) = common::cli::spawn_rill(&server, &["tail", "log", "-n", "1", "-f"]);
    assert_eq!(common::cli::next_line(&output), "dddd");
    server.append("log", &["live-1"]).await;
    server.append("log", &["live-2"]).await;
    let lines = [
        "dddd".to_string(),
        common::cli::next_line(&output),
        common::cli::next_line(&output),
    ];
    child.kill().unwrap();
    let _ = child.wait();
    assert_eq!(lines, ["dddd", "live-1", "live-2"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bench_verifies_and_reports() {
    let server = TestServer::start().await;
    server.create_basin(BASIN).await;
    // At a target rate: about rate × duration records, all read back.
    let (ok, out, err) = rill(
        &server,
        &[
            "bench",
            "--rate",
            "400",
            "--duration",
            "1s",
            "--record-size",
            "100",
            "--json",
        ],
        "",
    )
    .await;
    assert!(ok, "{err}");
    let report: Value = serde_json::from_str(out.trim()).unwrap();
    let records = report["records"].as_u64().unwrap();
    assert!((300..=400).contains(&records), "{report}");
    assert_eq!(report["verified"], true);
    assert_eq!(report["bytes"].as_u64(), Some(records * 100));
    for latency in ["ack_latency_ms", "end_to_end_latency_ms"] {
        let p = &report[latency];
        assert!(p["p50"].as_f64().unwrap() > 0.0, "{report}");
        assert!(p["p50"].as_f64() <= p["p99"].as_f64(), "{report}");
        assert!(p["p99"].as_f64() <= p["max"].as_f64(), "{report}");
    }
    // The temporary stream is gone.
    let (_, out, _) = rill(&server, &["streams", "list"], "").await;
    assert!(!out.contains("bench-"), "{out}");

    // Flat out, on a named stream that already has records: the text report.
    server.with_stream("mine").await;
    server.append("mine", &["before"]).await;
    let (ok, out, err) = rill(
        &server,
        &["bench", "mine", "--duration", "1s", "--batch", "10"],
        "",
    )
    .await;
    assert!(ok, "{err}");
    assert!(out.contains("every one verified"), "{out}");
    let appended: u64 = out
        .lines()
        .find_map(|l| l.strip_prefix("appended"))
        .and_then(|l| l.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap();
    assert!(appended >= 10, "{out}");
    let (_, out, _) = rill(&server, &["check-tail", "mine"], "").await;
    assert_eq!(out.trim().parse::<u64>().unwrap(), appended + 1);

    let (ok, _, err) = rill(&server, &["bench", "--record-size", "8"], "").await;
    assert!(!ok && err.contains("--record-size"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusals_are_one_clear_line() {
    const ROOT: &str = "cli-root-token-0123456789abcdefghijklmnop";
    let server = TestServer::start_with_root_token(ROOT).await;
    server
        .bare(reqwest::Method::PUT, &format!("/v1/basins/{BASIN}"))
        .bearer_auth(ROOT)
        .expect_status(reqwest::StatusCode::CREATED)
        .await;
    let (ok, _, err) = rill(&server, &["--token", ROOT, "streams", "create", "log"], "").await;
    assert!(ok, "{err}");
    let issued = server
        .bare(reqwest::Method::POST, "/v1/access-tokens")
        .bearer_auth(ROOT)
        .json(&serde_json::json!({ "id": "reader", "scope": {
            "basins": { "prefix": "" }, "streams": { "prefix": "" }, "ops": ["read"] } }))
        .expect_status(reqwest::StatusCode::CREATED)
        .await;
    let reader = issued["access_token"].as_str().unwrap();

    let (ok, _, err) = rill(&server, &["append", "log"], "one\n").await;
    assert!(!ok);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.starts_with("rill: 401 unauthenticated:"), "{err}");
    assert!(err.contains("--token"), "{err}");

    let (ok, _, err) = rill(&server, &["--token", reader, "append", "log"], "one\n").await;
    assert!(!ok);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.starts_with("rill: 403 permission_denied:"), "{err}");

    let (ok, _, err) = rill(
        &server,
        &["--token", reader, "read", "log", "--seq-num", "0"],
        "",
    )
    .await;
    assert!(ok, "reading is allowed: {err}");
}

/// Runs `rill ARGS` with no server in mind: (exit code, stdout, stderr).
fn rill_alone(args: &[&str]) -> (Option<i32>, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_rill"))
        .args(args)
        .output()
        .unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn usage_errors_help() {
    // No command: the list of commands.
    let (code, _, err) = rill_alone(&[]);
    assert_eq!(code, Some(2));
    assert!(err.contains("Commands:") && err.contains("serve"), "{err}");
    let (code, _, err) = rill_alone(&["basins"]);
    assert_eq!(code, Some(2));
    assert!(err.contains("list") && err.contains("create"), "{err}");
    // A typo: what was meant, and where to look.
    let (code, _, err) = rill_alone(&["apend", "x"]);
    assert_eq!(code, Some(2));
    assert!(err.contains("'append'") && err.contains("--help"), "{err}");
    let (code, _, err) = rill_alone(&["updated", "users", "--after-id", "x"]);
    assert_eq!(code, Some(2));
    assert!(err.contains("--updated-after"), "{err}");
}

#[test]
fn server_start_up_errors_say_what_to_do() {
    let dir = tempfile::tempdir().unwrap();
    // A host name in --listen is resolved.
    let server = Command::new(env!("CARGO_BIN_EXE_rill"))
        .args(["serve", "--listen", "localhost:0", "--data-dir"])
        .arg(dir.path().join("named"))
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let (listening, mut server) = wait_for_line(server, "rill is listening");
    assert!(listening, "--listen localhost:0 did not start");

    // A second server on the same directory says who holds it.
    let (code, _, err) = rill_alone(&[
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--data-dir",
        dir.path().join("named").to_str().unwrap(),
    ]);
    assert_eq!(code, Some(1));
    assert!(err.contains("another rill serve"), "{err}");
    server.kill().unwrap();
    let _ = server.wait();

    // An address that cannot be had creates nothing on disk.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let fresh = dir.path().join("never");
    let (code, _, err) = rill_alone(&[
        "serve",
        "--listen",
        &taken.local_addr().unwrap().to_string(),
        "--data-dir",
        fresh.to_str().unwrap(),
    ]);
    assert_eq!(code, Some(1));
    assert!(err.contains("cannot listen"), "{err}");
    assert!(
        !fresh.exists(),
        "a failed start created {}",
        fresh.display()
    );
}

/// Reads `child`'s stderr until a line containing `needle` (true) or its
/// end (false), at most 60 s; the rest is drained in the background.
fn wait_for_line(mut child: std::process::Child, needle: &str) -> (bool, std::process::Child) {
    use std::io::BufRead;
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let needle = needle.to_string();
    std::thread::spawn(move || {
        let mut found = false;
        for line in std::io::BufReader::new(stderr)
            .lines()
            .map_while(Result::ok)
        {
            if !found && line.contains(&needle) {
                found = true;
                let _ = tx.send(true);
            }
        }
        let _ = tx.send(false);
    });
    let found = rx
        .recv_timeout(std::time::Duration::from_secs(60))
        .unwrap_or(false);
    (found, child)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn output_into_a_closed_pipe_ends_quietly() {
    let server = TestServer::start().await;
    server.create_basin(BASIN).await;
    server.ensure_stream("many").await;
    let body = "x".repeat(200);
    for _ in 0..10 {
        let bodies: Vec<&str> = (0..100).map(|_| body.as_str()).collect();
        server.append("many", &bodies).await;
    }
    let base = server.base.clone();
    let (status, err) = tokio::task::spawn_blocking(move || {
        use std::io::BufRead;
        let mut child = Command::new(env!("CARGO_BIN_EXE_rill"))
            .args(["read", "many"])
            .env("RILL_ENDPOINT", &base)
            .env("RILL_BASIN", BASIN)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        // `| head -1`: one line, then the reader goes away.
        let mut first = String::new();
        std::io::BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut first)
            .unwrap();
        let out = child.wait_with_output().unwrap();
        (
            out.status,
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    })
    .await
    .unwrap();
    assert!(status.success() && err.is_empty(), "{status}: {err}");
}
