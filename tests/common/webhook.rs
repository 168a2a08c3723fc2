//! A webhook on loopback for the sink tests: it keeps every request it
//! receives, and answers as told (503 for the first requests, 400 for a
//! batch holding some text).

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::http::{HeaderMap, StatusCode as AxumStatus};
use serde_json::Value;

/// One request the webhook received.
#[derive(Clone, Debug)]
pub struct Received {
    pub at: Instant,
    pub headers: HeaderMap,
    pub body: Value,
    /// The body as sent, which the signature covers.
    pub raw: Bytes,
}

impl Received {
    /// The record bodies this request carried, in order.
    pub fn bodies(&self) -> Vec<String> {
        self.body["messages"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["record"]["body"].as_str().unwrap().to_string())
            .collect()
    }
}

/// How the webhook answers.
#[derive(Clone, Default)]
pub struct Behaviour {
    /// Answer 503 to this many requests first.
    pub fail_first: usize,
    /// Answer 400 to a batch holding a body with this text.
    pub refuse: Option<&'static str>,
    /// Take this long to answer each request.
    pub delay_ms: u64,
}

#[derive(Clone, Default)]
pub struct Hook {
    pub received: Arc<Mutex<Vec<Received>>>,
    pub behaviour: Arc<Mutex<Behaviour>>,
    /// 2xx answers given.
    pub served: Arc<Mutex<usize>>,
}

impl Hook {
    /// Starts it on loopback; its URL.
    pub async fn start(&self) -> String {
        let hook = self.clone();
        let app = axum::Router::new().route(
            "/hook",
            axum::routing::post(move |headers: HeaderMap, body: Bytes| {
                let hook = hook.clone();
                async move {
                    let delay = hook.behaviour.lock().unwrap().delay_ms;
                    tokio::time::sleep(Duration::from_millis(delay)).await;
                    hook.answer(headers, body)
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/hook", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        url
    }

    fn answer(&self, headers: HeaderMap, body: Bytes) -> AxumStatus {
        let raw = body;
        let body: Value = serde_json::from_slice(&raw).unwrap();
        self.received.lock().unwrap().push(Received {
            at: Instant::now(),
            headers,
            body: body.clone(),
            raw,
        });
        let mut behaviour = self.behaviour.lock().unwrap();
        if behaviour.fail_first > 0 {
            behaviour.fail_first -= 1;
            return AxumStatus::SERVICE_UNAVAILABLE;
        }
        if let Some(text) = behaviour.refuse {
            if body.to_string().contains(text) {
                return AxumStatus::BAD_REQUEST;
            }
        }
        *self.served.lock().unwrap() += 1;
        AxumStatus::OK
    }

    /// Bodies of the records in every request received (failed attempts
    /// included), in order, each once.
    pub fn delivered(&self) -> Vec<String> {
        let received = self.received.lock().unwrap();
        let mut seen = std::collections::BTreeSet::new();
        let mut out = Vec::new();
        for request in received.iter() {
            for message in request.body["messages"].as_array().unwrap() {
                let seq = message["seq_num"].as_u64().unwrap();
                let body = message["record"]["body"].as_str().unwrap().to_string();
                if seen.insert((seq, body.clone())) {
                    out.push((seq, body));
                }
            }
        }
        out.into_iter().map(|(_, b)| b).collect()
    }

    pub async fn wait_for(&self, what: &str, done: impl Fn(&Self) -> bool) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while !done(self) {
            assert!(
                Instant::now() < deadline,
                "never: {what}; got {:?}",
                self.delivered()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}
