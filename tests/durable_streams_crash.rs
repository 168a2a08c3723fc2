//! Durable Streams through SIGKILLs of the real binary: an idempotent
//! producer's appends land once each though it retries across crashes
//! (its place is written with each append), closure survives, and a fork
//! cut off while it copies never shows half made, nor leaves its source
//! counting it.

mod common;

use std::time::Duration;

use common::binary::RillProcess;
use rand::{Rng, SeedableRng};
use reqwest::{Client, StatusCode};

const STREAM: &str = "orders";

fn client() -> Client {
    Client::builder()
        .timeout(Duration::from_secs(20))
        .build()
        .unwrap()
}

fn url(rill: &RillProcess, path: &str) -> String {
    format!("{}/v1/stream/{path}", rill.base)
}

/// Append `seq` of producer `p`, epoch 0, with `close` if asked.
async fn produce(
    http: &Client,
    rill: &RillProcess,
    seq: u64,
    close: bool,
) -> reqwest::Result<reqwest::Response> {
    let mut request = http
        .post(url(rill, STREAM))
        .header("content-type", "text/plain")
        .header("producer-id", "p")
        .header("producer-epoch", "0")
        .header("producer-seq", seq.to_string())
        .body(format!("m{seq};"));
    if close {
        request = request.header("stream-closed", "true");
    }
    request.send().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_producer_retrying_across_kills_lands_each_append_once() {
    let dir = tempfile::tempdir().unwrap();
    let http = client();
    let mut rill = RillProcess::start(dir.path());
    let resp = http
        .put(url(&rill, STREAM))
        .header("content-type", "text/plain")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::CREATED);

    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    let count = 120;
    let (mut duplicates, mut kills) = (0, 0);
    for seq in 0..count {
        let close = seq == count - 1;
        let kill = rng.random_ratio(1, 12);
        let answer = if kill {
            // The append is in flight, or answered, when the server dies:
            // the producer cannot know whether it landed.
            let sent = tokio::spawn({
                let (http, base) = (http.clone(), url(&rill, STREAM));
                async move {
                    http.post(base)
                        .header("content-type", "text/plain")
                        .header("producer-id", "p")
                        .header("producer-epoch", "0")
                        .header("producer-seq", seq.to_string())
                        .body(format!("m{seq};"))
                        .send()
                        .await
                }
            });
            tokio::time::sleep(Duration::from_millis(rng.random_range(0..4))).await;
            rill.kill();
            kills += 1;
            let _ = sent.await;
            rill = RillProcess::start(dir.path());
            // So it retries, as the protocol says: same epoch, same seq.
            produce(&http, &rill, seq, close).await.unwrap()
        } else {
            let first = produce(&http, &rill, seq, close).await.unwrap();
            assert_eq!(first.status(), StatusCode::OK, "seq {seq}");
            if !rng.random_ratio(1, 6) {
                continue;
            }
            // A retry of an append that was answered: after a kill, too.
            if rng.random_bool(0.5) {
                rill.kill();
                kills += 1;
                rill = RillProcess::start(dir.path());
            }
            produce(&http, &rill, seq, close).await.unwrap()
        };
        match answer.status() {
            StatusCode::OK => {}
            StatusCode::NO_CONTENT => {
                duplicates += 1;
                assert_eq!(answer.headers()["producer-seq"], seq.to_string().as_str());
            }
            other => panic!("seq {seq}: {other} {}", answer.text().await.unwrap()),
        }
    }
    assert!(
        kills >= 5 && duplicates >= 5,
        "{kills} kills, {duplicates} duplicates"
    );

    // Once more after a kill: the stream is closed, and a retry of the
    // closing append is still a duplicate.
    rill.kill();
    let rill = RillProcess::start(dir.path());
    let retry = produce(&http, &rill, count - 1, true).await.unwrap();
    assert_eq!(retry.status(), StatusCode::NO_CONTENT);
    assert_eq!(retry.headers()["stream-closed"], "true");
    let late = produce(&http, &rill, count, false).await.unwrap();
    assert_eq!(late.status(), StatusCode::CONFLICT);
    assert_eq!(late.headers()["stream-closed"], "true");

    let read = http.get(url(&rill, STREAM)).send().await.unwrap();
    assert_eq!(read.headers()["stream-closed"], "true");
    let expected: String = (0..count).map(|seq| format!("m{seq};")).collect();
    assert_eq!(read.text().await.unwrap(), expected);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fork_cut_off_by_a_kill_is_never_half_made() {
    let dir = tempfile::tempdir().unwrap();
    let http = client();
    let mut rill = RillProcess::start(dir.path());
    // 12 MiB: the fork copies it in a dozen appends.
    let piece: String = "0123456789abcdef".repeat(64 * 1024);
    let resp = http
        .put(url(&rill, "source"))
        .header("content-type", "text/plain")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::CREATED);
    for _ in 0..12 {
        let resp = http
            .post(url(&rill, "source"))
            .header("content-type", "text/plain")
            .body(piece.clone())
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::NO_CONTENT);
    }
    let source_len = piece.len() * 12;

    let fork = |rill: &RillProcess| {
        http.put(url(rill, "fork"))
            .header("stream-forked-from", "/v1/stream/source")
            .send()
    };
    let mut seen_absent = false;
    for delay_ms in [5, 20, 60, 150] {
        let sent = tokio::spawn(fork(&rill));
        tokio::time::sleep(Duration::from_millis(delay_ms)).await;
        rill.kill();
        let _ = sent.await;
        rill = RillProcess::start(dir.path());
        // Whole, or not there at all.
        let read = http.get(url(&rill, "fork")).send().await.unwrap();
        match read.status() {
            StatusCode::NOT_FOUND => seen_absent = true,
            StatusCode::OK => {
                let mut len = 0;
                let mut offset = "-1".to_string();
                loop {
                    let chunk = http
                        .get(format!("{}?offset={offset}", url(&rill, "fork")))
                        .send()
                        .await
                        .unwrap();
                    let done = chunk.headers().contains_key("stream-up-to-date");
                    offset = chunk.headers()["stream-next-offset"]
                        .to_str()
                        .unwrap()
                        .into();
                    len += chunk.bytes().await.unwrap().len();
                    if done {
                        break;
                    }
                }
                assert_eq!(len, source_len, "a fork shown half made");
                // Start over for the next cut.
                let gone = http.delete(url(&rill, "fork")).send().await.unwrap();
                assert_eq!(gone.status(), StatusCode::NO_CONTENT);
            }
            other => panic!("{other}"),
        }
    }
    assert!(
        seen_absent,
        "no kill cut a fork off: the source copies too fast"
    );

    // Made whole at last; and the source counts exactly that one fork: it
    // is kept (410) while the fork lives, and goes with it.
    let made = fork(&rill).await.unwrap();
    assert!(made.status().is_success(), "{}", made.status());
    let deleted = http.delete(url(&rill, "source")).send().await.unwrap();
    assert_eq!(deleted.status(), StatusCode::NO_CONTENT);
    let head = http.head(url(&rill, "source")).send().await.unwrap();
    assert_eq!(head.status(), StatusCode::GONE);
    let gone = http.delete(url(&rill, "fork")).send().await.unwrap();
    assert_eq!(gone.status(), StatusCode::NO_CONTENT);
    let head = http.head(url(&rill, "source")).send().await.unwrap();
    assert_eq!(
        head.status(),
        StatusCode::NOT_FOUND,
        "the source still counts a fork"
    );
}
