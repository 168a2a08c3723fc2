//! The `rill` command line against a server on loopback: each command's
//! output is checked, and errors are one line with a non-zero exit code.

mod common;

use std::io::Write;
use std::process::{Command, Stdio};

use common::*;
use serde_json::Value;

/// Runs `rill ARGS` with `stdin`; returns (success, stdout, stderr).
async fn rill(server: &TestServer, args: &[&str], stdin: &str) -> (bool, String, String) {
    let (base, args, stdin) = (
        server.base.clone(),
        args.iter().map(|a| a.to_string()).collect::<Vec<_>>(),
        stdin.to_string(),
    );
    tokio::task::spawn_blocking(move || {
        let mut child = Command::new(env!("CARGO_BIN_EXE_rill"))
            .args(&args)
            .env("RILL_ENDPOINT", &base)
            .env("RILL_BASIN", BASIN)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(stdin.as_bytes())
            .unwrap();
        let out = child.wait_with_output().unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    })
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn data_commands() {
    let server = TestServer::start().await;
    server.with_stream("log").await;

    let (ok, out, err) = rill(&server, &["append", "log"], "one\ntwo\nthree\n").await;
    assert!(ok, "{err}");
    assert_eq!(out.trim(), "appended 3 records: seq nums 0..3");
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
    let page: Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(page["records"].as_array().unwrap().len(), 1);
    assert_eq!(page["records"][0]["id"], "u2");

    // Errors: one line, non-zero exit.
    for (args, needle) in [
        (vec!["read", "nope"], "stream_not_found"),
        (vec!["get", "users", "ghost"], "not found"),
        (vec!["put", "users", "u3", "{not json"], "not JSON"),
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

    let (ok, out, err) = rill(&server, &["basins", "list"], "").await;
    assert!(ok, "{err}");
    assert_eq!(out.trim(), BASIN);
    for kind in ["streams", "collections"] {
        let (ok, _, err) = rill(&server, &[kind, "create", "things"], "").await;
        assert!(ok, "{kind}: {err}");
        let (_, out, _) = rill(&server, &[kind, "list"], "").await;
        assert!(out.lines().any(|l| l == "things"), "{kind}: {out}");
    }
    let (_, out, _) = rill(&server, &["streams", "get", "things"], "").await;
    let config: Value = serde_json::from_str(out.trim()).unwrap();
    assert!(config["retention_policy"].is_object(), "{config}");

    let consumer = r#"{"source": {"stream": "things"}}"#;
    let (ok, _, err) = rill(
        &server,
        &["consumers", "create", "c1", "--config", consumer],
        "",
    )
    .await;
    assert!(ok, "{err}");
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
    let (_, out, _) = rill(&server, &["consumers", "get", "c1"], "").await;
    let state: Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(state["state"]["acked"], 3, "{state}");

    let (ok, out, _) = rill(&server, &["consumers", "delete", "c1"], "").await;
    assert!(ok);
    assert_eq!(out.trim(), "deleted c1");
    let (ok, _, err) = rill(&server, &["consumers", "get", "c1"], "").await;
    assert!(!ok);
    assert!(err.contains("consumer_not_found"), "{err}");
    let (ok, _, err) = rill(&server, &["consumers", "create", "c2", "--config", "{"], "").await;
    assert!(!ok && err.contains("not JSON"), "{err}");
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
    let base = server.base.clone();
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_rill"))
        .args(["tail", "log", "-n", "1", "-f"])
        .env("RILL_ENDPOINT", &base)
        .env("RILL_BASIN", BASIN)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let lines = tokio::task::spawn_blocking(move || {
        use std::io::BufRead;
        std::io::BufReader::new(stdout)
            .lines()
            .take(3)
            .map(Result::unwrap)
            .collect::<Vec<_>>()
    });
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    server.append("log", &["live-1"]).await;
    server.append("log", &["live-2"]).await;
    let lines = tokio::time::timeout(std::time::Duration::from_secs(20), lines)
        .await
        .expect("tail -f printed the new records")
        .unwrap();
    child.kill().unwrap();
    let _ = child.wait();
    assert_eq!(lines, ["dddd", "live-1", "live-2"]);
}
