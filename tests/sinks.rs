//! Webhook sinks: Rill posts a stream's records to a webhook by itself,
//! in order, signed, through failures (retries with backoff, a poison
//! message to the dead letters while the rest go on), pauses, restarts,
//! and never shows a secret back. The webhook is a real HTTP server on
//! loopback.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::webhook::{Behaviour, Hook, Received};
use common::{SendAndExpect, TestServer};
use reqwest::StatusCode;
use rill::storage::FjallStorage;
use serde_json::{json, Value};

async fn create_sink(server: &TestServer, name: &str, config: Value) -> Value {
    server
        .put(&format!("/v1/sinks/{name}"))
        .json(&config)
        .expect_status(StatusCode::CREATED)
        .await
}

async fn sink_state(server: &TestServer, name: &str) -> Value {
    server
        .get(&format!("/v1/sinks/{name}"))
        .expect_status(StatusCode::OK)
        .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_webhook_sink_delivers_a_stream_in_order_signed_and_keeps_secrets() {
    let hook = Hook::default();
    let url = hook.start().await;
    let server = TestServer::start().await;
    server.with_stream("orders").await;
    let created = create_sink(
        &server,
        "hook",
        json!({
            "source": { "stream": "orders" },
            "destination": { "webhook": {
                "url": url,
                "secret": "s3cret-key",
                "headers": { "Authorization": "Bearer tok-123" }
            }},
            "max_batch": 7
        }),
    )
    .await;
    // Write-only: neither the secret nor a header value comes back.
    for shown in [&created, &sink_state(&server, "hook").await] {
        let text = shown.to_string();
        assert!(
            !text.contains("s3cret-key") && !text.contains("tok-123"),
            "{text}"
        );
        let webhook = &shown["config"]["destination"]["webhook"];
        assert_eq!(webhook["secret_set"], true);
        assert_eq!(webhook["header_names"], json!(["Authorization"]));
    }

    // Three writers at once.
    let writers: Vec<_> = (0..3)
        .map(|w| {
            let server = server.base.clone();
            tokio::spawn(async move {
                let client = reqwest::Client::new();
                for i in 0..20 {
                    let body = json!({ "records": [{ "body": format!("w{w}-{i}") }] });
                    let resp = client
                        .post(format!("{server}/v1/streams/orders/records"))
                        .header("s2-basin", common::BASIN)
                        .json(&body)
                        .send()
                        .await
                        .unwrap();
                    assert!(resp.status().is_success());
                }
            })
        })
        .collect();
    for writer in writers {
        writer.await.unwrap();
    }
    hook.wait_for("60 records", |h| h.delivered().len() == 60)
        .await;

    // In the stream's order, which keeps each writer's order.
    let stream = server.read_bodies("orders", "seq_num=0&count=100").await;
    assert_eq!(hook.delivered(), stream);
    // Signed as Standard Webhooks sign, with the headers asked for.
    for request in hook.received.lock().unwrap().iter() {
        let header = |name: &str| request.headers[name].to_str().unwrap().to_string();
        let body = request.raw.to_vec();
        // Computed here, apart from the server's code: HMAC-SHA256 of
        // "{id}.{timestamp}.{body}", base64, after "v1,".
        let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, b"s3cret-key");
        let signed = [
            header("webhook-id").as_bytes(),
            b".",
            header("webhook-timestamp").as_bytes(),
            b".",
            &body,
        ]
        .concat();
        let tag = ring::hmac::sign(&key, &signed);
        use base64::Engine as _;
        let expected = format!(
            "v1,{}",
            base64::engine::general_purpose::STANDARD.encode(tag.as_ref())
        );
        assert_eq!(header("webhook-signature"), expected);
        assert_eq!(header("authorization"), "Bearer tok-123");
        assert!(request.body["messages"].as_array().unwrap().len() <= 7);
        assert!(request.body["messages"][0].get("ack_id").is_none());
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let state = sink_state(&server, "hook").await["state"].clone();
        // The worker counts a batch once its ack is durable.
        if state["lag"] == 0 && state["pending"] == 0 && state["delivered"] == 60 {
            assert_eq!(state["retrying"], false);
            break;
        }
        assert!(Instant::now() < deadline, "{state}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failures_back_off_and_a_poison_message_is_dead_lettered_while_the_rest_go_on() {
    let hook = Hook::default();
    *hook.behaviour.lock().unwrap() = Behaviour {
        fail_first: 3,
        refuse: Some("poison"),
        ..Default::default()
    };
    let url = hook.start().await;
    let server = TestServer::start().await;
    server.with_stream("jobs").await;
    server.append("jobs", &["a", "b", "poison", "c", "d"]).await;
    create_sink(
        &server,
        "hook",
        json!({
            "source": { "stream": "jobs" },
            "destination": { "webhook": { "url": url } },
            "max_deliver": 4,
            "retry": { "initial_ms": 100, "max_ms": 400 }
        }),
    )
    .await;
    hook.wait_for("a, b, c, d", |h| {
        *h.served.lock().unwrap() >= 2 && {
            let d = h.delivered();
            d.contains(&"d".to_string())
        }
    })
    .await;

    // The first three attempts failed (503), each after a longer wait.
    let received = hook.received.lock().unwrap().clone();
    let gaps: Vec<u128> = received
        .windows(2)
        .take(3)
        .map(|w| (w[1].at - w[0].at).as_millis())
        .collect();
    assert!(
        gaps[0] >= 90 && gaps[1] >= 190 && gaps[2] >= 390,
        "{gaps:?}"
    );
    // Every attempt at the same messages carries the same id.
    let first_id = &received[0].headers["webhook-id"];
    assert!(received[..4]
        .iter()
        .all(|r| r.headers["webhook-id"] == first_id));

    // What the webhook accepted: everything but the poison, in order.
    let accepted: Vec<String> = received
        .iter()
        .filter(|r| !r.body.to_string().contains("poison"))
        .flat_map(Received::bodies)
        .collect();
    let mut unique = accepted.clone();
    unique.dedup();
    assert_eq!(unique, ["a", "b", "c", "d"], "{accepted:?}");

    // The poison went to the sink's dead letters, refused at once (400).
    let dead = server
        .read("_consumers%2F_sink.hook%2Fdead_letters", "seq_num=0")
        .await;
    assert_eq!(common::bodies(&dead), ["poison"]);
    let state = sink_state(&server, "hook").await["state"].clone();
    assert_eq!(state["dead_lettered"], 1, "{state}");
    assert!(state["failed"].as_u64().unwrap() >= 4, "{state}");
    assert!(
        state["last_error"].as_str().unwrap().contains("400"),
        "{state}"
    );
    assert!(state["last_error_at"].as_u64().is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pause_resume_restart_delete_and_bad_input() {
    let hook = Hook::default();
    let url = hook.start().await;
    let dir = tempfile::tempdir().unwrap();
    let open = || Arc::new(FjallStorage::open(dir.path()).unwrap());
    let server = TestServer::start_on(open()).await;
    server.with_stream("s").await;
    let config = json!({
        "source": { "stream": "s" },
        "destination": { "webhook": { "url": url } }
    });
    create_sink(&server, "hook", config.clone()).await;
    // The same again changes nothing.
    server
        .put("/v1/sinks/hook")
        .json(&config)
        .expect_status(StatusCode::OK)
        .await;

    server
        .post("/v1/sinks/hook/pause")
        .expect_status(StatusCode::OK)
        .await;
    // The worker is told to stop at once, and posts nothing after that.
    tokio::time::sleep(Duration::from_millis(300)).await;
    server.append("s", &["while paused"]).await;
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert!(
        hook.delivered().is_empty(),
        "a paused sink delivers nothing"
    );
    assert_eq!(sink_state(&server, "hook").await["state"]["paused"], true);

    // Resumed, across a restart of the server.
    server.stop().await;
    let server = TestServer::start_on(open()).await;
    server
        .post("/v1/sinks/hook/resume")
        .expect_status(StatusCode::OK)
        .await;
    hook.wait_for("the paused record", |h| h.delivered() == ["while paused"])
        .await;
    server.append("s", &["after"]).await;
    hook.wait_for("both", |h| h.delivered() == ["while paused", "after"])
        .await;

    // Its consumer is the sink's: visible, not usable.
    server
        .get("/v1/consumers/_sink.hook")
        .expect_status(StatusCode::OK)
        .await;
    server
        .post("/v1/consumers/_sink.hook/receive")
        .json(&json!({}))
        .expect_error(StatusCode::UNPROCESSABLE_ENTITY, "invalid")
        .await;
    let listed = server.get("/v1/sinks").expect_status(StatusCode::OK).await;
    assert_eq!(listed["sinks"][0]["name"], "hook");

    // Bad input, with the API's errors and nothing made.
    for (body, status, code) in [
        (
            json!({ "source": { "stream": "s" }, "destination": { "webhook": { "url": "ftp://x" } } }),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid",
        ),
        (
            json!({ "source": { "stream": "s" }, "destination": { "kafka": { "brokers": "x" } } }),
            StatusCode::BAD_REQUEST,
            "bad_json",
        ),
        (
            json!({ "source": { "stream": "s" }, "destination": { "webhook": { "url": "http://x" } }, "max_batch": 0 }),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid",
        ),
    ] {
        server
            .put("/v1/sinks/bad")
            .json(&body)
            .expect_error(status, code)
            .await;
    }
    server
        .get("/v1/sinks/bad")
        .expect_error(StatusCode::NOT_FOUND, "sink_not_found")
        .await;

    // Deleted, with its consumer.
    let resp = server.delete("/v1/sinks/hook").send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::NO_CONTENT);
    server
        .get("/v1/sinks/hook")
        .expect_error(StatusCode::NOT_FOUND, "sink_not_found")
        .await;
    server
        .get("/v1/consumers/_sink.hook")
        .expect_error(StatusCode::NOT_FOUND, "consumer_not_found")
        .await;
    server.stop().await;
}

/// A destination that is down for a while (every request fails) loses
/// nothing: nothing is dead-lettered, and once it is back everything
/// arrives in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outage_dead_letters_nothing() {
    let hook = Hook::default();
    hook.behaviour.lock().unwrap().fail_first = 14;
    let url = hook.start().await;
    let server = TestServer::start().await;
    server.with_stream("jobs").await;
    server.append("jobs", &["a", "b", "c"]).await;
    create_sink(
        &server,
        "hook",
        json!({
            "source": { "stream": "jobs" },
            "destination": { "webhook": { "url": url } },
            "max_deliver": 3,
            "retry": { "initial_ms": 20, "max_ms": 80 }
        }),
    )
    .await;
    hook.wait_for("a, b and c served", |h| {
        h.received
            .lock()
            .unwrap()
            .iter()
            .skip(14)
            .flat_map(Received::bodies)
            .count()
            >= 3
    })
    .await;
    let accepted: Vec<String> = hook
        .received
        .lock()
        .unwrap()
        .iter()
        .skip(14)
        .flat_map(Received::bodies)
        .collect();
    assert_eq!(accepted, ["a", "b", "c"]);
    let state = sink_state(&server, "hook").await["state"].clone();
    assert_eq!(state["dead_lettered"], 0, "{state}");
}

/// `rill sinks …`: the same through the command line (and rill-client,
/// which it uses).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_manages_sinks() {
    let hook = Hook::default();
    let url = hook.start().await;
    let server = TestServer::start().await;
    server.with_stream("s").await;
    let rill = |args: Vec<String>| {
        let server = &server;
        async move {
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            common::cli::run_rill(server, &args, "").await
        }
    };
    let args = |list: &[&str]| list.iter().map(|a| a.to_string()).collect::<Vec<_>>();
    let config = json!({
        "source": { "stream": "s" },
        "destination": { "webhook": { "url": url, "secret": "cli-secret" } }
    })
    .to_string();
    let ran = rill(args(&["sinks", "create", "hook", "--config", &config])).await;
    assert_eq!(ran.code, Some(0), "{}", ran.err);
    let ran = rill(args(&["sinks", "create", "nothing"])).await;
    assert_eq!(ran.code, Some(2), "a sink needs a config: {}", ran.err);
    let ran = rill(args(&["sinks", "list"])).await;
    assert!(
        ran.out.contains("hook") && ran.out.contains("webhook"),
        "{}",
        ran.out
    );
    server.append("s", &["via cli"]).await;
    hook.wait_for("the record", |h| h.delivered() == ["via cli"])
        .await;
    let ran = rill(args(&["sinks", "get", "hook", "--json"])).await;
    assert!(!ran.out.contains("cli-secret"), "{}", ran.out);
    let shown: Value = serde_json::from_str(ran.out.trim()).unwrap();
    assert_eq!(shown["state"]["delivered"], 1, "{shown}");
    let ran = rill(args(&[
        "sinks",
        "reconfigure",
        "hook",
        "--config",
        r#"{"paused": true}"#,
    ]))
    .await;
    assert_eq!(ran.code, Some(0), "{}", ran.err);
    assert_eq!(sink_state(&server, "hook").await["state"]["paused"], true);
    let ran = rill(args(&["sinks", "delete", "hook"])).await;
    assert_eq!(ran.code, Some(0), "{}", ran.err);
    let ran = rill(args(&["sinks", "get", "hook"])).await;
    assert_eq!(ran.code, Some(3), "not found: {}", ran.err);
}

/// `format: base64` carries bodies and headers that are not text, as S2's
/// `s2-format: base64` does; `raw` (the default) would have to refuse them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_base64_webhook_carries_any_bytes() {
    let hook = Hook::default();
    let url = hook.start().await;
    let server = TestServer::start().await;
    server.with_stream("bin").await;
    // Bytes 0x00 0x01 0xff, and a header valued 0xff.
    let record = json!({ "headers": [["a2V5", "/w=="]], "body": "AAH/" });
    server
        .post("/v1/streams/bin/records")
        .header("s2-format", "base64")
        .json(&json!({ "records": [record] }))
        .expect_status(StatusCode::OK)
        .await;
    create_sink(
        &server,
        "bin",
        json!({
            "source": { "stream": "bin" },
            "destination": { "webhook": { "url": url, "format": "base64" } }
        }),
    )
    .await;
    let deadline = Instant::now() + Duration::from_secs(20);
    while hook.received.lock().unwrap().is_empty() {
        assert!(Instant::now() < deadline, "the record is delivered");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let body = hook.received.lock().unwrap()[0].body.clone();
    let delivered = &body["messages"][0]["record"];
    assert_eq!(delivered["body"], "AAH/", "{body}");
    assert_eq!(delivered["headers"], json!([["a2V5", "/w=="]]), "{body}");
}
