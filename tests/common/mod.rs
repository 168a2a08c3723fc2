//! Shared helpers for the integration tests: an in-process server on a
//! loopback port, a small S2 JSON client, and an SSE reader.
#![allow(dead_code)] // each test binary uses a different subset

pub mod binary;
pub mod browser;
pub mod cli;
pub mod cluster;
pub mod consumers;
pub mod faulty;
pub mod pager;
pub mod pki;
pub mod prometheus;
pub mod s2_cli;
pub mod services;
pub mod sink_scenario;
pub mod webhook;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use reqwest::{Client, Method, RequestBuilder, Response, StatusCode};
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
        Self::start_with(storage, rill::server::ServerOptions::default()).await
    }

    /// A server that checks tokens, with `root` as its root token. The
    /// client sends no token: each request says which it carries.
    pub async fn start_with_root_token(root: &str) -> Self {
        let options = rill::server::ServerOptions {
            auth: rill::api::Auth::with_root_token(root),
            ..Default::default()
        };
        Self::start_with(Arc::new(MemoryStorage::default()), options).await
    }

    pub async fn start_with(
        storage: Arc<dyn Storage>,
        options: rill::server::ServerOptions,
    ) -> Self {
        Self::start_engine(Engine::open(storage).expect("engine opens"), options).await
    }

    /// A server over an engine the test opened (with its own metrics, say).
    pub async fn start_engine(engine: Arc<Engine>, options: rill::server::ServerOptions) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let (tx, rx) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            rill::server::run_with(listener, engine, options, async {
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

    /// A request without the `s2-basin` header: the account-level
    /// endpoints (basins, access tokens, metrics) and paths outside the API.
    pub fn bare(&self, method: Method, path: &str) -> RequestBuilder {
        self.client.request(method, self.url(path))
    }

    /// Creates the test basin and a stream in it.
    pub async fn with_stream(&self, stream: &str) {
        self.create_basin(BASIN).await;
        self.ensure_stream(stream).await;
    }

    pub async fn create_basin(&self, basin: &str) {
        let resp = self
            .bare(Method::PUT, &format!("/v1/basins/{basin}"))
            .send()
            .await
            .unwrap();
        assert!(
            resp.status().is_success(),
            "ensure basin: {}",
            resp.status()
        );
    }

    /// Ensures a stream with the default config exists in the test basin.
    pub async fn ensure_stream(&self, stream: &str) {
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

    /// Creates a stream in the test basin with `config`; asserts 201 and
    /// returns the body.
    pub async fn create_stream(&self, stream: &str, config: Value) -> Value {
        self.put(&format!("/v1/streams/{stream}"))
            .json(&config)
            .expect_status(StatusCode::CREATED)
            .await
    }

    /// An append request with `body` as the JSON body, not yet sent.
    pub fn append_request(&self, stream: &str, body: Value) -> RequestBuilder {
        self.post(&format!("/v1/streams/{stream}/records"))
            .json(&body)
    }

    /// A read request (`GET .../records?{query}`), not yet sent.
    pub fn read_request(&self, stream: &str, query: &str) -> RequestBuilder {
        self.get(&format!("/v1/streams/{stream}/records?{query}"))
    }

    /// A read request asking for an SSE session, not yet sent.
    pub fn sse_request(&self, stream: &str, query: &str) -> RequestBuilder {
        self.read_request(stream, query)
            .header("accept", "text/event-stream")
    }

    /// Appends text bodies; returns the ack.
    pub async fn append(&self, stream: &str, bodies: &[&str]) -> Value {
        let records: Vec<Value> = bodies.iter().map(|b| json!({ "body": b })).collect();
        self.append_request(stream, json!({ "records": records }))
            .expect_status(StatusCode::OK)
            .await
    }

    pub async fn read(&self, stream: &str, query: &str) -> Value {
        self.read_request(stream, query)
            .expect_status(StatusCode::OK)
            .await
    }

    /// The bodies of the records a read returns; asserts 200.
    pub async fn read_bodies(&self, stream: &str, query: &str) -> Vec<String> {
        bodies(&self.read(stream, query).await)
    }

    /// The stream's tail sequence number; asserts 200.
    pub async fn tail(&self, stream: &str) -> u64 {
        self.get(&format!("/v1/streams/{stream}/records/tail"))
            .expect_status(StatusCode::OK)
            .await["tail"]["seq_num"]
            .as_u64()
            .unwrap()
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
/// Creates `basin` and its stream `s` on the server at `base` (a real
/// binary, or any server not started through [`TestServer`]).
pub async fn create_basin_and_stream(http: &Client, base: &str, basin: &str) {
    for path in [format!("/v1/basins/{basin}"), "/v1/streams/s".into()] {
        let resp = http
            .put(format!("{base}{path}"))
            .header("s2-basin", basin)
            .send()
            .await
            .unwrap();
        assert!(resp.status().is_success(), "{path}: {}", resp.status());
    }
}

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

/// Sends a request and checks the answer in one step (panics on a
/// transport error): the [`expect_status`] and [`expect_error`] checks.
pub trait SendAndExpect {
    /// Sends, asserts the status and returns the JSON body.
    fn expect_status(self, status: StatusCode) -> impl Future<Output = Value>;
    /// Sends and asserts an error response: status, `code`, a message.
    fn expect_error(self, status: StatusCode, code: &str) -> impl Future<Output = Value>;
    /// Sends, asserts the `s2-provision-result` header of an ensure or
    /// create, then the status; returns the JSON body.
    fn expect_provision(self, result: &str, status: StatusCode) -> impl Future<Output = Value>;
}

impl SendAndExpect for RequestBuilder {
    async fn expect_status(self, status: StatusCode) -> Value {
        expect_status(self.send().await.unwrap(), status).await
    }

    async fn expect_error(self, status: StatusCode, code: &str) -> Value {
        expect_error(self.send().await.unwrap(), status, code).await
    }

    async fn expect_provision(self, result: &str, status: StatusCode) -> Value {
        let resp = self.send().await.unwrap();
        assert_eq!(resp.headers()["s2-provision-result"], result);
        expect_status(resp, status).await
    }
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

/// The sequence numbers of the records in a read batch.
pub fn seq_nums(batch: &Value) -> Vec<u64> {
    record_u64s(batch, "seq_num")
}

/// The timestamps of the records in a read batch.
pub fn timestamps(batch: &Value) -> Vec<u64> {
    record_u64s(batch, "timestamp")
}

fn record_u64s(batch: &Value, field: &str) -> Vec<u64> {
    batch["records"]
        .as_array()
        .expect("records array")
        .iter()
        .map(|r| r[field].as_u64().expect("a number"))
        .collect()
}

/// The `name` of each item of a list page (`key` is e.g. `"basins"`).
pub fn names(page: &Value, key: &str) -> Vec<String> {
    page[key]
        .as_array()
        .expect("list array")
        .iter()
        .map(|item| item["name"].as_str().expect("a name").to_string())
        .collect()
}

/// One Server-Sent Event.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SseEvent {
    pub event: Option<String>,
    pub id: Option<String>,
    pub data: String,
}

impl SseEvent {
    /// The data parsed as JSON.
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.data).unwrap()
    }
}

/// Reads SSE events off a streaming response.
pub struct SseReader {
    stream: futures::stream::BoxStream<'static, reqwest::Result<bytes::Bytes>>,
    buffer: String,
}

impl SseReader {
    /// Sends `request` and asserts it opened a session (200).
    pub async fn open(request: RequestBuilder) -> Self {
        let resp = request.send().await.unwrap();
        assert_eq!(resp.status(), StatusCode::OK);
        Self::new(resp)
    }

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

    /// The next event within 5 s, panicking if none comes or the
    /// response ends.
    pub async fn expect_next(&mut self) -> SseEvent {
        self.next_within(Duration::from_secs(5))
            .await
            .expect("an SSE event, not the end")
    }
}
