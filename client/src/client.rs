//! The connection settings and the request plumbing every call shares.

use std::time::Duration;

use bytes::Bytes;
use reqwest::{header, Method, RequestBuilder};
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::Error;

/// Tries of a retryable request, and the first backoff (doubled each time).
const TRIES: u32 = 4;
const FIRST_BACKOFF: Duration = Duration::from_millis(100);

/// How long a request may take, answer included, unless changed with
/// [`Client::with_timeout`]: longer than the longest long poll (60 s).
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(90);
/// How long an idle pooled connection is kept for reuse.
const POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(20);
/// How long connecting may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// A handle to one Rill server and basin. Cheap to clone; clones share
/// their connection pool.
#[derive(Clone, Debug)]
pub struct Client {
    http: reqwest::Client,
    endpoint: String,
    basin: Option<String>,
    token: Option<String>,
    timeout: Duration,
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
    /// Requests time out after [`DEFAULT_TIMEOUT`]; append sessions, which
    /// last as long as you keep them, only time out connecting.
    pub fn new(endpoint: &str) -> Result<Self, Error> {
        Self::build(endpoint, Ok)
    }

    /// A client that also trusts the CA certificates in `pem`: for a
    /// server whose certificate a private CA signed.
    #[cfg(feature = "tls")]
    pub fn with_root_certificates(endpoint: &str, pem: &[u8]) -> Result<Self, Error> {
        let certs = reqwest::Certificate::from_pem_bundle(pem)
            .map_err(|e| Error::Invalid(format!("the CA certificates are not valid PEM: {e}")))?;
        if certs.is_empty() {
            return Err(Error::Invalid("no CA certificate in the PEM given".into()));
        }
        Self::build(endpoint, |mut builder| {
            for cert in certs {
                builder = builder.add_root_certificate(cert);
            }
            Ok(builder)
        })
    }

    fn build(
        endpoint: &str,
        configure: impl FnOnce(reqwest::ClientBuilder) -> Result<reqwest::ClientBuilder, Error>,
    ) -> Result<Self, Error> {
        let endpoint = endpoint.trim_end_matches('/').to_string();
        if !endpoint.starts_with("http://") && !endpoint.starts_with("https://") {
            return Err(Error::Invalid(format!(
                "endpoint `{endpoint}` must start with http:// or https://"
            )));
        }
        if endpoint.starts_with("https://") && !cfg!(feature = "tls") {
            return Err(Error::Invalid(format!(
                "endpoint `{endpoint}` needs TLS, and this build has none: enable \
                 rill-client's `tls` feature (for the `rill` binary: build it with \
                 `--features tls`)"
            )));
        }
        let builder = reqwest::Client::builder()
            .connect_timeout(CONNECT_TIMEOUT)
            // Below the server's idle cut-off (30 s by default), so a pooled
            // connection is not reused just as the server closes it.
            .pool_idle_timeout(POOL_IDLE_TIMEOUT);
        let http = configure(builder)?.build()?;
        Ok(Self {
            http,
            endpoint,
            basin: None,
            token: None,
            timeout: DEFAULT_TIMEOUT,
        })
    }

    /// The same client, with requests timing out after `timeout` (a
    /// timed-out request counts as a transport error). Keep it above the
    /// waits you ask for (long polls, receives).
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
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

    /// How long a request may take; see [`Self::with_timeout`].
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// The server this client talks to.
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// A request with the endpoint, basin and token; no timeout but the
    /// connect timeout (callers add one where a request has an end).
    pub(crate) fn request(&self, method: Method, path: &str) -> RequestBuilder {
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
    /// transport errors and 502–504s.
    pub(crate) async fn call<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
        retry: Retry,
    ) -> Result<T, Error> {
        let body = match body {
            Some(value) => Some(Payload {
                content_type: "application/json",
                bytes: Bytes::from(
                    serde_json::to_vec(value).map_err(|e| Error::Invalid(e.to_string()))?,
                ),
            }),
            None => None,
        };
        let bytes = self
            .send(method, path, body, "application/json", retry)
            .await?;
        let bytes = if bytes.is_empty() {
            &b"null"[..]
        } else {
            &bytes[..]
        };
        serde_json::from_slice(bytes).map_err(|e| Error::Decode(e.to_string()))
    }

    /// Like [`Self::call`], in protobuf (binary-safe, and smaller): for
    /// appends and reads.
    pub(crate) async fn call_proto<T: prost::Message + Default>(
        &self,
        method: Method,
        path: &str,
        body: Option<&impl prost::Message>,
        retry: Retry,
    ) -> Result<T, Error> {
        let body = body.map(|message| Payload {
            content_type: "application/protobuf",
            bytes: Bytes::from(message.encode_to_vec()),
        });
        let bytes = self
            .send(method, path, body, "application/protobuf", retry)
            .await?;
        T::decode(bytes).map_err(|e| Error::Decode(e.to_string()))
    }

    /// The request plumbing under [`Self::call`] and [`Self::call_proto`]:
    /// the success answer's bytes, or the server's error.
    async fn send(
        &self,
        method: Method,
        path: &str,
        body: Option<Payload>,
        accept: &'static str,
        retry: Retry,
    ) -> Result<Bytes, Error> {
        let mut backoff = FIRST_BACKOFF;
        let mut tries = 0;
        loop {
            tries += 1;
            let mut req = self
                .request(method.clone(), path)
                .timeout(self.timeout)
                .header(header::ACCEPT, accept);
            if let Some(body) = &body {
                req = req
                    .header(header::CONTENT_TYPE, body.content_type)
                    .body(body.bytes.clone());
            }
            let outcome = match req.send().await {
                Ok(resp) => answer(resp).await,
                Err(err) => Err(Error::Transport(err)),
            };
            let retryable = outcome.as_ref().is_err_and(Error::is_transient);
            if retry == Retry::Never || !retryable || tries >= TRIES {
                return outcome;
            }
            tokio::time::sleep(backoff).await;
            backoff *= 2;
        }
    }
}

impl Client {
    /// Starts an S2S session (`request` plus the session headers) and
    /// waits for its answer. A session has no end, so it gets no request
    /// timeout; but its answer (the response headers) must come within the
    /// client's timeout. Never retried.
    pub(crate) async fn open_session(
        &self,
        request: RequestBuilder,
    ) -> Result<reqwest::Response, Error> {
        let request = request
            .header(header::CONTENT_TYPE, "s2s/proto")
            // No compression offered, so none is sent: the client is built
            // without it.
            .header(header::ACCEPT_ENCODING, "identity");
        let response = tokio::time::timeout(self.timeout, request.send())
            .await
            .map_err(|_| {
                Error::Closed(format!(
                    "the server did not answer the session request within {:?}",
                    self.timeout
                ))
            })??;
        if response.status().is_success() {
            return Ok(response);
        }
        Err(answer(response)
            .await
            .err()
            .unwrap_or_else(|| Error::Decode("the session was refused".into())))
    }
}

/// A request body, kept as bytes so a retry can send it again.
struct Payload {
    content_type: &'static str,
    bytes: Bytes,
}

/// The body of a success answer, or the error the server answered with.
async fn answer(resp: reqwest::Response) -> Result<Bytes, Error> {
    let status = resp.status();
    let bytes = resp.bytes().await?;
    if status.is_success() {
        Ok(bytes)
    } else {
        Err(api_error(status.as_u16(), &bytes))
    }
}

/// An error answer: the JSON body's stable `code` and `message`.
pub(crate) fn api_error(status: u16, body: &[u8]) -> Error {
    let json: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
    let text = |key: &str| json[key].as_str().map(str::to_owned);
    Error::Api {
        status,
        code: text("code").unwrap_or_else(|| code_for(status)),
        message: text("message").unwrap_or_else(|| String::from_utf8_lossy(body).into_owned()),
    }
}

/// A code for error answers without one (412 and 416 carry other bodies).
fn code_for(status: u16) -> String {
    match status {
        412 => "precondition_failed".into(),
        416 => "beyond_tail".into(),
        other => other.to_string(),
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_are_checked_up_front() {
        assert!(Client::new("http://127.0.0.1:8080/").is_ok());
        assert!(matches!(
            Client::new("127.0.0.1:8080"),
            Err(Error::Invalid(_))
        ));
        let https = Client::new("https://rill.example.com");
        if cfg!(feature = "tls") {
            assert!(https.is_ok());
        } else {
            assert!(matches!(https, Err(Error::Invalid(m)) if m.contains("`tls` feature")));
        }
    }

    #[test]
    fn segments_escape_everything_but_unreserved() {
        assert_eq!(segment("a-b_c.d~e"), "a-b_c.d~e");
        assert_eq!(
            segment("_collections/users/events"),
            "_collections%2Fusers%2Fevents"
        );
        assert_eq!(segment("é ?"), "%C3%A9%20%3F");
    }
}
