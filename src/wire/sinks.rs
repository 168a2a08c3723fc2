//! The JSON of sinks. A sink is shown as it was configured, less its
//! secrets: a webhook's `secret` and header values are write-only (a `PUT`
//! must give them again), and every URL's password and query are masked.

use serde_json::{json, Value};

use super::json::rfc3339;
use crate::engine::sinks::{Destination, SinkInfo};

/// A sink without its secrets, with its `state` when there is one.
pub fn sink_json(info: &SinkInfo, state: Option<Value>) -> Value {
    let mut config = serde_json::to_value(&info.config).unwrap_or(Value::Null);
    config["destination"] = destination_json(&info.config.destination);
    let mut out = json!({
        "name": info.name,
        "created_at": rfc3339(info.created_at),
        "consumer": info.consumer(),
        "config": config,
    });
    if let Some(state) = state {
        out["state"] = state;
    }
    out
}

fn destination_json(destination: &Destination) -> Value {
    match destination {
        Destination::Webhook(webhook) => json!({ "webhook": {
            "url": mask_password(&webhook.url),
            "timeout_ms": webhook.timeout_ms,
            "header_names": webhook.headers.keys().collect::<Vec<_>>(),
            "secret_set": webhook.secret.is_some(),
            "format": webhook.format,
        }}),
        Destination::Postgres(postgres) => json!({ "postgres": {
            "url": mask_password(&postgres.url),
            "table": postgres.table,
            "create_table": postgres.create_table,
            "timeout_ms": postgres.timeout_ms,
        }}),
        Destination::Redis(redis) => json!({ "redis": {
            "url": mask_password(&redis.url),
            "stream": redis.stream,
            "maxlen": redis.maxlen,
            "timeout_ms": redis.timeout_ms,
        }}),
        Destination::Nats(nats) => json!({ "nats": {
            // A user without a password is a token: masked too.
            "url": mask_user(&mask_password(&nats.url)),
            "subject": nats.subject,
            "create_stream": nats.create_stream,
            "timeout_ms": nats.timeout_ms,
        }}),
        Destination::Kafka(kafka) => json!({ "kafka": {
            "brokers": kafka.brokers,
            "topic": kafka.topic,
            "create_topic": kafka.create_topic,
            "tls": kafka.tls,
            // The password is write-only.
            "sasl": kafka.sasl.as_ref().map(|sasl| json!({
                "mechanism": sasl.mechanism,
                "username": sasl.username,
            })),
            "timeout_ms": kafka.timeout_ms,
        }}),
    }
}

/// The URL with its password and its query masked (`user:****@`,
/// `?****`): either may be a credential. (A secret in the path, as some
/// services put one, shows: give it as a header instead where you can.)
pub(crate) fn mask_password(url: &str) -> String {
    let Ok(mut parsed) = reqwest::Url::parse(url) else {
        return String::new();
    };
    if parsed.password().is_some() {
        let _ = parsed.set_password(Some("****"));
    }
    if parsed.query().is_some() {
        parsed.set_query(Some("****"));
    }
    parsed.to_string()
}

/// The URL with its user masked, if it has one.
fn mask_user(url: &str) -> String {
    let Ok(mut parsed) = reqwest::Url::parse(url) else {
        return String::new();
    };
    if !parsed.username().is_empty() {
        let _ = parsed.set_username("****");
    }
    parsed.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_in_urls_are_masked() {
        assert_eq!(
            mask_password("https://u:hunter2@example.com/hook?token=x"),
            "https://u:****@example.com/hook?****"
        );
        assert_eq!(
            mask_password("http://example.com/h"),
            "http://example.com/h"
        );
    }
}
