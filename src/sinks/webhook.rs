//! The webhook destination: each batch is one `POST` of
//! `{"messages": [...]}`, signed as Standard Webhooks sign: headers
//! `webhook-id` (the same for every attempt at the same messages, so the
//! receiver can drop a redelivery), `webhook-timestamp` (Unix seconds) and,
//! with a secret, `webhook-signature: v1,{base64 HMAC-SHA256 of
//! "{id}.{timestamp}.{body}"}`.
//!
//! A secret written `whsec_{base64}` (as Standard Webhooks libraries make
//! them) is the bytes that base64 holds; any other secret is its own bytes.
//!
//! A 2xx answer delivers the batch. 4xx other than 408 and 429, and a
//! redirect (not followed), are permanent (the messages go to the dead
//! letters); anything else, a timeout or a connection failure included, is
//! tried again.

use std::time::Duration;

use base64::Engine as _;
use ring::hmac;

use serde_json::json;

use super::failure::Failure;
use super::message::{batch_id, message_json};
use crate::engine::consumers::Delivery;
use crate::engine::sinks::{BodyFormat, SinkInfo, WebhookConfig};
use crate::wire::json::Format;

pub struct Webhook {
    client: reqwest::Client,
    config: WebhookConfig,
    sink: SinkInfo,
}

impl Webhook {
    pub fn new(sink: &SinkInfo, config: WebhookConfig) -> Result<Self, String> {
        let client = reqwest::Client::builder()
            .timeout(Duration::from_millis(config.timeout_ms))
            // A redirect would turn the POST into a GET without its body
            // (and send the headers to another host): it is an answer.
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("rill-sink/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| format!("cannot make an HTTP client: {e}"))?;
        Ok(Self {
            client,
            config,
            sink: sink.clone(),
        })
    }

    /// Posts `{"messages": [...]}`, with an id that is the same for every
    /// attempt at the same messages. A message that cannot be written
    /// refuses the batch (it is never sent short).
    pub async fn deliver(&self, batch: &[Delivery]) -> Result<(), Failure> {
        let format = match self.config.format {
            BodyFormat::Raw => Format::Raw,
            BodyFormat::Base64 => Format::Base64,
        };
        let messages: Option<Vec<_>> = batch.iter().map(|d| message_json(d, format)).collect();
        let body = messages
            .and_then(|messages| serde_json::to_vec(&json!({ "messages": messages })).ok())
            .ok_or_else(|| Failure::Permanent("a message could not be written as JSON".into()))?;
        self.post(&batch_id(&self.sink, batch), body).await
    }

    /// An empty batch, `{"messages": []}`: harmless to any receiver.
    pub async fn probe(&self) -> Result<(), Failure> {
        let body = serde_json::to_vec(&json!({ "messages": [] })).unwrap_or_default();
        self.post("msg_probe", body).await
    }

    /// Posts `body`, identified by `id` (stable across attempts).
    async fn post(&self, id: &str, body: Vec<u8>) -> Result<(), Failure> {
        let timestamp = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs())
            .to_string();
        let mut request = self
            .client
            .post(&self.config.url)
            .header("content-type", "application/json")
            .header("webhook-id", id)
            .header("webhook-timestamp", &timestamp);
        for (name, value) in &self.config.headers {
            request = request.header(name.as_str(), value.as_str());
        }
        if let Some(secret) = &self.config.secret {
            request = request.header("webhook-signature", sign(secret, id, &timestamp, &body));
        }
        let response = request
            .body(body)
            .send()
            .await
            // Never the URL's query or the headers: they may hold secrets.
            .map_err(|e| Failure::Transient(describe(&e)))?;
        let status = response.status();
        if status.is_success() {
            return Ok(());
        }
        let said = match status.is_redirection() {
            true => format!(
                "the webhook answered {status}; redirects are not followed: give its final URL"
            ),
            false => format!("the webhook answered {status}"),
        };
        let permanent = status.is_redirection()
            || (status.is_client_error()
                && status != reqwest::StatusCode::REQUEST_TIMEOUT
                && status != reqwest::StatusCode::TOO_MANY_REQUESTS);
        Err(match permanent {
            true => Failure::Permanent(said),
            false => Failure::Transient(said),
        })
    }
}

/// `v1,{base64 HMAC-SHA256(secret, "{id}.{timestamp}.{body}")}`.
pub fn sign(secret: &str, id: &str, timestamp: &str, body: &[u8]) -> String {
    let standard = secret
        .strip_prefix("whsec_")
        .and_then(|b64| base64::engine::general_purpose::STANDARD.decode(b64).ok());
    let key_bytes = standard.unwrap_or_else(|| secret.as_bytes().to_vec());
    let key = hmac::Key::new(hmac::HMAC_SHA256, &key_bytes);
    let mut context = hmac::Context::with_key(&key);
    context.update(id.as_bytes());
    context.update(b".");
    context.update(timestamp.as_bytes());
    context.update(b".");
    context.update(body);
    let tag = context.sign();
    format!(
        "v1,{}",
        base64::engine::general_purpose::STANDARD.encode(tag.as_ref())
    )
}

/// A send error without the URL (whose query may carry a secret).
fn describe(err: &reqwest::Error) -> String {
    let kind = if err.is_timeout() {
        "timed out"
    } else if err.is_connect() {
        "could not connect"
    } else {
        "failed"
    };
    format!("the webhook request {kind}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signatures_are_hmac_sha256_of_id_timestamp_and_body() {
        // Computed independently: HMAC-SHA256("secret", "id.1.{}").
        let signature = sign("secret", "id", "1", b"{}");
        assert!(signature.starts_with("v1,"), "{signature}");
        let key = hmac::Key::new(hmac::HMAC_SHA256, b"secret");
        let tag = hmac::sign(&key, b"id.1.{}");
        let expected = base64::engine::general_purpose::STANDARD.encode(tag.as_ref());
        assert_eq!(signature, format!("v1,{expected}"));
        assert_ne!(sign("other", "id", "1", b"{}"), signature);
        // `whsec_` + base64 of "secret" is the same key.
        assert_eq!(sign("whsec_c2VjcmV0", "id", "1", b"{}"), signature);
    }
}
