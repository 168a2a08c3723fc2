//! The JSON of sinks. A sink is shown as it was configured, less its
//! secrets: a webhook's `secret` and header values are write-only (a `PUT`
//! must give them again), and a password in a URL is masked.

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
        }}),
    }
}

/// `scheme://user:****@host…` for a URL with a password in it.
fn mask_password(url: &str) -> String {
    match reqwest::Url::parse(url) {
        Ok(mut parsed) if parsed.password().is_some() => {
            let _ = parsed.set_password(Some("****"));
            parsed.to_string()
        }
        _ => url.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_in_urls_are_masked() {
        assert_eq!(
            mask_password("https://u:hunter2@example.com/hook?x=1"),
            "https://u:****@example.com/hook?x=1"
        );
        assert_eq!(
            mask_password("http://example.com/h"),
            "http://example.com/h"
        );
    }
}
