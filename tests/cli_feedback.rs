//! What the `rill` command line says back: documented exit codes (3 for
//! "not found" and for reads past the tail, 4 when no server answers, 2
//! for usage), the wording of appends, empty lists, `updated` and
//! `events` with `--follow`, the version and shell completions.

mod common;

use std::process::Command;

use common::cli::{next_line, run_rill, spawn_rill};
use common::*;
use serde_json::{json, Value};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exit_codes_and_messages_say_what_happened() {
    let server = TestServer::start().await;
    server.with_stream("log").await;

    let ran = run_rill(&server, &["append", "log"], "").await;
    assert_eq!(ran.code, Some(0), "{}", ran.err);
    assert_eq!(ran.out.trim(), "nothing appended: the input had no lines");
    let ran = run_rill(&server, &["append", "log"], "hi\n").await;
    assert_eq!(ran.out.trim(), "appended 1 record, seq num 0");
    run_rill(&server, &["append", "log"], "a\nb\n").await;

    // Past the tail: said, with the tail, exit 3. At the tail: nothing.
    let ran = run_rill(&server, &["read", "log", "--seq-num", "999"], "").await;
    assert_eq!(ran.code, Some(3), "{}", ran.err);
    assert_eq!(
        ran.err.trim(),
        "rill: seq num 999 is past the tail of `log`: its next seq num is 3"
    );
    let ran = run_rill(&server, &["read", "log", "--seq-num", "3"], "").await;
    assert_eq!((ran.code, ran.out.as_str()), (Some(0), ""), "{}", ran.err);

    // Not found: 3.
    let ran = run_rill(&server, &["streams", "get", "nope"], "").await;
    assert_eq!(ran.code, Some(3), "{}", ran.err);
    assert!(ran.err.contains("stream_not_found"), "{}", ran.err);
    // Refused: 1.
    let ran = run_rill(&server, &["put", "nope", "k", "[1]"], "").await;
    assert_ne!(ran.code, Some(0));
    let ran = run_rill(&server, &["streams", "create", "log", "--config", "{"], "").await;
    assert_eq!(ran.code, Some(1), "{}", ran.err);
    // Usage: 2, before anything is sent.
    let ran = run_rill(&server, &["consumers", "create", "c1"], "").await;
    assert_eq!(ran.code, Some(2), "{}", ran.err);
    assert!(ran.err.contains("--config"), "{}", ran.err);
    // No server: 4, and a hint.
    let ran = run_rill(
        &server,
        &["--endpoint", "http://127.0.0.1:9", "check-tail", "log"],
        "",
    )
    .await;
    assert_eq!(ran.code, Some(4), "{}", ran.err);
    assert!(
        ran.err.contains("is `rill serve` running there?"),
        "{}",
        ran.err
    );

    // An empty list still has its header.
    let ran = run_rill(&server, &["collections", "list"], "").await;
    assert_eq!(
        ran.out.split_whitespace().next(),
        Some("NAME"),
        "{}",
        ran.out
    );
    assert_eq!(ran.out.lines().count(), 1, "{}", ran.out);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn updated_and_events_follow_changes() {
    let server = TestServer::start().await;
    server.create_basin(BASIN).await;
    run_rill(&server, &["collections", "create", "users"], "").await;
    run_rill(&server, &["put", "users", "u1", r#"{"n": 1}"#], "").await;

    let (mut updated, updated_lines) =
        spawn_rill(&server, &["updated", "users", "--follow", "--json"]);
    let (mut events, event_lines) = spawn_rill(&server, &["events", "users", "--follow"]);
    let first: Value = serde_json::from_str(&next_line(&updated_lines)).unwrap();
    assert_eq!(
        (first["id"].as_str(), first["version"].as_u64()),
        (Some("u1"), Some(1))
    );
    assert_eq!(next_line(&event_lines), "0\tcreated\tu1\tv1\t{\"n\":1}");

    // Changes made while they wait are printed as they happen.
    server
        .put("/v1/collections/users/records/u1")
        .json(&json!({ "n": 2 }))
        .send()
        .await
        .unwrap();
    let second: Value = serde_json::from_str(&next_line(&updated_lines)).unwrap();
    assert_eq!(
        (second["id"].as_str(), second["version"].as_u64()),
        (Some("u1"), Some(2))
    );
    assert_eq!(next_line(&event_lines), "1\tupdated\tu1\tv2\t{\"n\":2}");
    for child in [&mut updated, &mut events] {
        let _ = child.kill();
        let _ = child.wait();
    }

    // Without --follow: what is there, then done; JSON has the event's seq num.
    let ran = run_rill(
        &server,
        &["events", "users", "--json", "--seq-num", "1"],
        "",
    )
    .await;
    assert_eq!(ran.code, Some(0), "{}", ran.err);
    let event: Value = serde_json::from_str(ran.out.trim()).unwrap();
    assert_eq!(
        (event["seq_num"].as_u64(), event["event"].as_str()),
        (Some(1), Some("updated"))
    );
}

#[test]
fn version_and_completions() {
    let run = |args: &[&str]| {
        let out = Command::new(env!("CARGO_BIN_EXE_rill"))
            .args(args)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    };
    assert_eq!(
        run(&["--version"]).trim(),
        format!("rill {}", env!("CARGO_PKG_VERSION"))
    );
    for shell in ["bash", "zsh", "fish"] {
        let script = run(&["completions", shell]);
        assert!(
            script.contains("consumers") && script.contains("check-tail"),
            "{shell}"
        );
    }
    // The server's help lists its own flags, not the client's.
    let help = run(&["serve", "--help"]);
    assert!(help.contains("--data-dir"), "{help}");
    assert!(
        !help.contains("--endpoint") && !help.contains("--basin"),
        "{help}"
    );
    // Each kind in its own words.
    let help = run(&["streams", "delete", "--help"]);
    assert!(
        help.contains("Delete a stream") && help.contains("The stream's name"),
        "{help}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn write_applies_a_batch_all_or_nothing() {
    let server = TestServer::start().await;
    server.create_basin(BASIN).await;
    run_rill(&server, &["collections", "create", "users"], "").await;
    run_rill(&server, &["put", "users", "old", r#"{"n": 0}"#], "").await;

    let lines = concat!(
        r#"{"id": "u1", "data": {"n": 1}}"#,
        "\n",
        r#"{"id": "u2", "data": {"n": 2}, "expected_version": 0}"#,
        "\n\n",
        r#"{"id": "old", "delete": true}"#,
        "\n",
    );
    let ran = run_rill(&server, &["write", "users"], lines).await;
    assert_eq!(ran.code, Some(0), "{}", ran.err);
    assert_eq!(
        ran.out.lines().collect::<Vec<_>>(),
        [
            "u1\tv1\t{\"n\":1}",
            "u2\tv1\t{\"n\":2}",
            "old\tv2\t(deleted)"
        ]
    );

    // A failed condition refuses the whole batch: u3 is not written.
    let lines = concat!(
        r#"{"id": "u3", "data": {"n": 3}}"#,
        "\n",
        r#"{"id": "u1", "data": {"n": 9}, "expected_version": 7}"#,
        "\n",
    );
    let ran = run_rill(&server, &["write", "users"], lines).await;
    assert_eq!(ran.code, Some(1), "{}", ran.err);
    assert!(ran.err.contains("412"), "{}", ran.err);
    let ran = run_rill(&server, &["get", "users", "u3"], "").await;
    assert_eq!(ran.code, Some(3), "{}", ran.err);

    // A bad line is named, and nothing is sent.
    let ran = run_rill(
        &server,
        &["write", "users"],
        "{\"id\": \"u4\", \"data\": {}}\n{\"id\": 5}\n",
    )
    .await;
    assert_eq!(ran.code, Some(1));
    assert!(ran.err.contains("line 2: no \"id\""), "{}", ran.err);
    let ran = run_rill(&server, &["get", "users", "u4"], "").await;
    assert_eq!(ran.code, Some(3), "{}", ran.err);
}
