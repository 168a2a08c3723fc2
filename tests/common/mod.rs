//! Shared helpers for the integration tests: an in-process server on a
//! loopback port, a small S2 JSON client, and an SSE reader.
#![allow(dead_code)] // each test binary uses a different subset

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use reqwest::{Client, Response, StatusCode};
use rill::engine::Engine;
use rill::storage::{MemoryStorage, Storage};
use serde_json::{json, Value};
use tokio::sync::oneshot;

pub const BASIN: &str = "test-basin";

/// A server running inside the test's runtime on 127.0.0.1, port chosen
/// by the OS. Dropping it shuts the server down.
pub struct TestServer {
    pub base: String,
    pub client: Client,
    shutdown: Option<oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl TestServer {
    pub async fn start() -> Self {
        Self::start_on(Arc::new(MemoryStorage::default())).await
    }

    pub async fn start_on(storage: Arc<dyn Storage>) -> Self {
        let engine = Engine::open(storage).expect("engine opens");
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let (tx, rx) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            rill::server::run(listener, engine, async {
                let _ = rx.await;
            })
            .await
            .expect("server runs");
        });
        let client = Client::builder()
            .timeout(Duration::from_secs(30))
            .build()
            .unwrap();
        Self {
            base,
            client,
            shutdown: Some(tx),
            task: Some(task),
        }
    }

    /// Shuts down gracefully and waits until everything is flushed.
    pub async fn stop(mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    pub fn get(&self, path: &str) -> reqwest::RequestBuilder {
        self.client.get(self.url(path)).header("s2-basin", BASIN)
    }

    pub fn post(&self, path: &str) -> reqwest::RequestBuilder {
        self.client.post(self.url(path)).header("s2-basin", BASIN)
    }

    pub fn put(&self, path: &str) -> reqwest::RequestBuilder {
        self.client.put(self.url(path)).header("s2-basin", BASIN)
    }

    pub fn patch(&self, path: &str) -> reqwest::RequestBuilder {
        self.client.patch(self.url(path)).header("s2-basin", BASIN)
    }

    pub fn delete(&self, path: &str) -> reqwest::RequestBuilder {
        self.client.delete(self.url(path)).header("s2-basin", BASIN)
    }

    /// Creates the test basin and a stream in it.
    pub async fn with_stream(&self, stream: &str) {
        self.create_basin(BASIN).await;
        let resp = self
            .put(&format!("/v1/streams/{stream}"))
            .send()
            .await
            .unwrap();
        assert!(
            resp.status().is_success(),
            "ensure stream: {}",
            resp.status()
        );
    }

    pub async fn create_basin(&self, basin: &str) {
        let resp = self
            .client
            .put(self.url(&format!("/v1/basins/{basin}")))
            .send()
            .await
            .unwrap();
        assert!(
            resp.status().is_success(),
            "ensure basin: {}",
            resp.status()
        );
    }

    /// Appends text bodies; returns the ack.
    pub async fn append(&self, stream: &str, bodies: &[&str]) -> Value {
        let records: Vec<Value> = bodies.iter().map(|b| json!({ "body": b })).collect();
        let resp = self
            .post(&format!("/v1/streams/{stream}/records"))
            .json(&json!({ "records": records }))
            .send()
            .await
            .unwrap();
        expect_status(resp, StatusCode::OK).await
    }

    pub async fn read(&self, stream: &str, query: &str) -> Value {
        let resp = self
            .get(&format!("/v1/streams/{stream}/records?{query}"))
            .send()
            .await
            .unwrap();
        expect_status(resp, StatusCode::OK).await
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }
}

/// Asserts the status and returns the JSON body (or `null` if empty).
pub async fn expect_status(resp: Response, status: StatusCode) -> Value {
    let actual = resp.status();
    let text = resp.text().await.unwrap();
    assert_eq!(actual, status, "unexpected status; body: {text}");
    if text.is_empty() {
        Value::Null
    } else {
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("body is not JSON ({e}): {text}"))
    }
}

/// Asserts an error response: status, `code`, and a non-empty message.
pub async fn expect_error(resp: Response, status: StatusCode, code: &str) -> Value {
    let body = expect_status(resp, status).await;
    assert_eq!(body["code"], code, "error body: {body}");
    assert!(
        body["message"].as_str().is_some_and(|m| !m.is_empty()),
        "error without a message: {body}"
    );
    body
}

/// The bodies of the records in a read batch.
pub fn bodies(batch: &Value) -> Vec<String> {
    batch["records"]
        .as_array()
        .expect("records array")
        .iter()
        .map(|r| r["body"].as_str().expect("text body").to_string())
        .collect()
}

/// One Server-Sent Event.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SseEvent {
    pub event: Option<String>,
    pub id: Option<String>,
    pub data: String,
}

/// Reads SSE events off a streaming response.
pub struct SseReader {
    stream: futures::stream::BoxStream<'static, reqwest::Result<bytes::Bytes>>,
    buffer: String,
}

impl SseReader {
    pub fn new(resp: Response) -> Self {
        Self {
            stream: resp.bytes_stream().boxed(),
            buffer: String::new(),
        }
    }

    /// The next event, or `None` at the end of the response.
    pub async fn next(&mut self) -> Option<SseEvent> {
        loop {
            if let Some(end) = self.buffer.find("\n\n") {
                let block: String = self.buffer.drain(..end + 2).collect();
                let mut event = SseEvent::default();
                let mut data = Vec::new();
                for line in block.lines() {
                    if let Some(v) = line.strip_prefix("event:") {
                        event.event = Some(v.trim().to_string());
                    } else if let Some(v) = line.strip_prefix("id:") {
                        event.id = Some(v.trim().to_string());
                    } else if let Some(v) = line.strip_prefix("data:") {
                        data.push(v.strip_prefix(' ').unwrap_or(v).to_string());
                    }
                }
                if event.event.is_none() && event.id.is_none() && data.is_empty() {
                    continue; // a comment or keep-alive
                }
                event.data = data.join("\n");
                return Some(event);
            }
            match self.stream.next().await {
                Some(Ok(chunk)) => self.buffer.push_str(&String::from_utf8_lossy(&chunk)),
                _ => return None,
            }
        }
    }

    /// The next event within `timeout`, panicking if none comes.
    pub async fn next_within(&mut self, timeout: Duration) -> Option<SseEvent> {
        tokio::time::timeout(timeout, self.next())
            .await
            .expect("no SSE event in time")
    }
}
