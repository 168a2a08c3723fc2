//! A webhook sink through a SIGKILL of Rill in the middle of its work:
//! every acknowledged record reaches the webhook, first seen in the
//! stream's order (a batch in flight at the kill may come again: delivery
//! is at least once, and a receiver drops repeats by `seq_num`).

mod common;

use std::time::{Duration, Instant};

use common::binary::RillProcess;
use common::webhook::Hook;
use common::BASIN;
use serde_json::json;

async fn ok(request: reqwest::RequestBuilder) {
    let resp = request.send().await.unwrap();
    assert!(resp.status().is_success(), "{}", resp.status());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sigkill_of_rill_loses_nothing_and_keeps_the_order() {
    let hook = Hook::default();
    // Slow answers: a batch is in flight when the kill comes.
    hook.behaviour.lock().unwrap().delay_ms = 30;
    let url = hook.start().await;
    let dir = tempfile::tempdir().unwrap();
    let client = reqwest::Client::new();
    let rill = RillProcess::start(dir.path());
    let base = rill.base.clone();
    ok(client
        .post(format!("{base}/v1/basins"))
        .json(&json!({ "basin": BASIN })))
    .await;
    ok(client
        .post(format!("{base}/v1/streams"))
        .header("s2-basin", BASIN)
        .json(&json!({ "stream": "s" })))
    .await;
    ok(client
        .put(format!("{base}/v1/sinks/hook"))
        .header("s2-basin", BASIN)
        .json(&json!({
            "source": { "stream": "s" },
            "destination": { "webhook": { "url": url } },
            "max_batch": 5
        })))
    .await;

    // Appends while the sink delivers; the kill lands among them.
    let mut acknowledged = Vec::new();
    let append = |base: String, i: usize| {
        let client = client.clone();
        async move {
            client
                .post(format!("{base}/v1/streams/s/records"))
                .header("s2-basin", BASIN)
                .json(&json!({ "records": [{ "body": format!("r{i:03}") }] }))
                .send()
                .await
                .is_ok_and(|r| r.status().is_success())
        }
    };
    for i in 0..60 {
        assert!(append(base.clone(), i).await);
        acknowledged.push(format!("r{i:03}"));
    }
    rill.kill();
    let rill = RillProcess::start(dir.path());
    let base = rill.base.clone();
    for i in 60..100 {
        assert!(append(base.clone(), i).await);
        acknowledged.push(format!("r{i:03}"));
    }

    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        // First seen, in the order the webhook got them.
        let seen = hook.delivered();
        if seen.len() >= acknowledged.len() {
            assert_eq!(seen, acknowledged, "every record, in order");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{} of {} arrived",
            seen.len(),
            acknowledged.len()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    drop(rill);
}
