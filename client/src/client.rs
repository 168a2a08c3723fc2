//! The connection settings and the request plumbing every call shares.

use std::time::Duration;

use reqwest::{Method, RequestBuilder, StatusCode};
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::Error;

/// Tries of a retryable request, and the first backoff (doubled each time).
const TRIES: u32 = 4;
const FIRST_BACKOFF: Duration = Duration::from_millis(100);

/// A handle to one Rill server and basin. Cheap to clone; clones share
/// their connection pool.
#[derive(Clone, Debug)]
pub struct Client {
    http: reqwest::Client,
    endpoint: String,
    basin: Option<String>,
    token: Option<String>,
}

/// Whether a request may be sent again after a failure without changing
/// what it does.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Retry {
    Safe,
    Never,
}

impl Client {
    /// A client for the server at `endpoint` (e.g. `http://127.0.0.1:8080`).
    /// Requests time out after 90 s, longer than any long poll.
    pub fn new(endpoint: &str) -> Result<Self, Error> {
        let endpoint = endpoint.trim_end_matches('/').to_string();
        if !endpoint.starts_with("http://") && !endpoint.starts_with("https://") {
            return Err(Error::Invalid(format!(
                "endpoint `{endpoint}` must start with http:// or https://"
            )));
        }
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(90))
            .build()?;
        Ok(Self {
            http,
            endpoint,
            basin: None,
            token: None,
        })
    }

    /// The same client, addressing `basin` (sent as the `s2-basin` header).
    pub fn with_basin(mut self, basin: &str) -> Self {
        self.basin = Some(basin.to_string());
        self
    }

    /// The same client, sending `token` as a bearer token.
    pub fn with_token(mut self, token: &str) -> Self {
        self.token = Some(token.to_string());
        self
    }

    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    fn request(&self, method: Method, path: &str) -> RequestBuilder {
        let mut req = self
            .http
            .request(method, format!("{}{path}", self.endpoint));
        if let Some(basin) = &self.basin {
            req = req.header("s2-basin", basin);
        }
        if let Some(token) = &self.token {
            req = req.bearer_auth(token);
        }
        req
    }

    /// Sends a request and decodes its JSON answer; an empty answer reads
    /// as `null`. `Retry::Safe` requests are retried with backoff on
    /// transport errors and 503s.
    pub(crate) async fn call<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
        retry: Retry,
    ) -> Result<T, Error> {
        let mut backoff = FIRST_BACKOFF;
        let mut tries = 0;
        loop {
            tries += 1;
            let mut req = self.request(method.clone(), path);
            if let Some(body) = body {
                req = req.json(body);
            }
            let outcome = match req.send().await {
                Ok(resp) => decode(resp).await,
                Err(err) => Err(Error::Transport(err)),
            };
            let retryable = match &outcome {
                Err(Error::Transport(_)) => true,
                Err(Error::Api { status, .. }) => *status == 503,
                _ => false,
            };
            if retry == Retry::Never || !retryable || tries >= TRIES {
                return outcome;
            }
            tokio::time::sleep(backoff).await;
            backoff *= 2;
        }
    }
}

async fn decode<T: DeserializeOwned>(resp: reqwest::Response) -> Result<T, Error> {
    let status = resp.status();
    let bytes = resp.bytes().await?;
    if !status.is_success() {
        let body: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        let text = |key: &str| body[key].as_str().map(str::to_owned);
        return Err(Error::Api {
            status: status.as_u16(),
            code: text("code").unwrap_or_else(|| code_for(status)),
            message: text("message")
                .unwrap_or_else(|| String::from_utf8_lossy(&bytes).into_owned()),
        });
    }
    let bytes = if bytes.is_empty() {
        &b"null"[..]
    } else {
        &bytes[..]
    };
    serde_json::from_slice(bytes).map_err(|e| Error::Decode(e.to_string()))
}

/// A code for error answers without one (412 and 416 carry other bodies).
fn code_for(status: StatusCode) -> String {
    match status {
        StatusCode::PRECONDITION_FAILED => "precondition_failed".into(),
        StatusCode::RANGE_NOT_SATISFIABLE => "beyond_tail".into(),
        other => other.as_u16().to_string(),
    }
}

/// `s` made safe as one path segment.
pub(crate) fn segment(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                out.push(b as char)
            }
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}
