//! The HTTP source's poller: asks the upstream for the changes after its
//! cursor, a page at a time, writes each page to the collection in one
//! atomic batch with the cursor that follows it, and asks again: at once
//! while pages come full, after `poll_interval_ms` once one does not, and
//! after a backoff doubling up to `max_backoff_ms` while requests fail (or
//! as long as a `Retry-After` asks, up to an hour). Requests are paced to
//! `max_requests_per_second`.
//!
//! A page's records become upserts (their data) and deletes (those the
//! upstream marks deleted), written as `apply` says.

use std::sync::Arc;
use std::time::Duration;

use serde_json::{Map, Value};

use super::apply::write_changes;
use super::status::SourceStatus;
use crate::engine::sources::{CursorStyle, HttpSource, SourceConfig, SourceCursor, SourceInfo};
use crate::engine::streams::types::now_ms;
use crate::engine::Engine;

/// The largest response body taken from an upstream: a full page of the
/// largest records (1000 of 256 KiB) and their JSON around them.
const MAX_RESPONSE_BYTES: usize = 320 * 1024 * 1024;

/// Polls until aborted.
pub async fn run(engine: Arc<Engine>, source: SourceInfo, status: Arc<SourceStatus>) {
    let SourceConfig::Http(config) = &source.config else {
        return;
    };
    let client = match reqwest::Client::builder()
        .timeout(Duration::from_millis(config.timeout_ms))
        .redirect(reqwest::redirect::Policy::none())
        .build()
    {
        Ok(client) => client,
        Err(err) => return status.failed(&format!("cannot make an HTTP client: {err}")),
    };
    let pace = Duration::from_secs(1) / config.max_requests_per_second;
    let mut backoff = config.poll_interval_ms;
    loop {
        let started = tokio::time::Instant::now();
        let wait = match poll_once(&engine, &source, config, &client).await {
            Ok(Page { changes, full }) => {
                status.polled(changes, full);
                backoff = config.poll_interval_ms;
                match full {
                    true => Duration::ZERO,
                    false => Duration::from_millis(config.poll_interval_ms),
                }
            }
            Err(failed) => {
                let error = &failed.message;
                tracing::debug!(source = %source.name, %error, "a source's poll failed");
                status.failed(error);
                // As long as the upstream asked (429, 503 with
                // `Retry-After`), if longer than the backoff.
                let wait =
                    Duration::from_millis(backoff).max(failed.retry_after.unwrap_or_default());
                backoff = (backoff * 2).min(config.max_backoff_ms);
                wait
            }
        };
        tokio::time::sleep_until(started + wait.max(pace)).await;
    }
}

/// Why a poll failed, and how long the upstream asked to be left alone.
struct Failed {
    message: String,
    retry_after: Option<Duration>,
}

impl From<String> for Failed {
    fn from(message: String) -> Self {
        Self {
            message,
            retry_after: None,
        }
    }
}

/// The longest `Retry-After` taken from an upstream.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(3600);

/// What one poll took.
struct Page {
    changes: u64,
    /// As many records as asked for: more may wait.
    full: bool,
}

async fn poll_once(
    engine: &Engine,
    source: &SourceInfo,
    config: &HttpSource,
    client: &reqwest::Client,
) -> Result<Page, Failed> {
    let sources = engine.sources();
    let cursor = sources.cursor(source).map_err(|e| e.to_string())?;
    let body = fetch(client, config, &cursor).await?;
    let pointers = &config.pointers;
    let records = body
        .pointer(&pointers.records)
        .and_then(Value::as_array)
        .ok_or_else(|| format!("the response has no array at `{}`", pointers.records))?;
    let mut changes: Vec<(String, Option<Map<String, Value>>)> = Vec::with_capacity(records.len());
    for record in records {
        let id = text_at(record, &pointers.id)
            .ok_or_else(|| format!("a record has no id at `{}`", pointers.id))?;
        let deleted = record.pointer(&pointers.deleted) == Some(&Value::Bool(true));
        let data = match deleted {
            true => None,
            false => match record.pointer(&pointers.data) {
                Some(Value::Object(data)) => Some(data.clone()),
                _ => {
                    return Err(
                        format!("record `{id}` has no object at `{}`", pointers.data).into(),
                    )
                }
            },
        };
        changes.push((id, data));
    }
    let mut next = SourceCursor {
        changes: cursor.changes + records.len() as u64,
        moved_at: now_ms(),
        ..cursor.clone()
    };
    match &config.cursor {
        CursorStyle::Token { next: at, .. } => {
            next.token = text_at(&body, at).or(cursor.token.clone());
            // Records without a new token would be asked for again, and
            // again: the pointer is wrong, or the upstream has no cursor.
            if !records.is_empty() && next.token == cursor.token {
                return Err(
                    format!("the upstream gave records but no new cursor at `{at}`").into(),
                );
            }
        }
        CursorStyle::UpdatedAfter { .. } => {
            if let Some(last) = records.last() {
                let updated_at = text_at(last, &pointers.updated_at).ok_or_else(|| {
                    format!("a record has no timestamp at `{}`", pointers.updated_at)
                })?;
                next.updated_after = Some(updated_at);
                next.after_id = changes.last().map(|(id, _)| id.clone());
            }
        }
    }
    let full = records.len() >= config.limit as usize;
    if records.is_empty() && next.token == cursor.token {
        return Ok(Page { changes: 0, full });
    }
    let applied = records.len() as u64;
    write_changes(engine, source, &config.collection, changes, Some(&next)).await?;
    Ok(Page {
        changes: applied,
        full,
    })
}

/// GETs the page after `cursor`: the URL with the limit and the cursor in
/// its query, the configured headers.
async fn fetch(
    client: &reqwest::Client,
    config: &HttpSource,
    cursor: &SourceCursor,
) -> Result<Value, Failed> {
    let url = request_url(config, cursor)?;
    let mut request = client.get(url);
    for (name, value) in &config.headers {
        request = request.header(name, value);
    }
    // Errors are said without the URL: its query may hold a key.
    let mut response = request
        .send()
        .await
        .map_err(|e| format!("the upstream did not answer: {}", e.without_url()))?;
    if !response.status().is_success() {
        let retry_after = response
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok()?.trim().parse::<u64>().ok())
            .map(|secs| Duration::from_secs(secs).min(MAX_RETRY_AFTER));
        return Err(Failed {
            message: format!("the upstream answered {}", response.status()),
            retry_after,
        });
    }
    let mut body = Vec::new();
    while let Some(chunk) = response
        .chunk()
        .await
        .map_err(|e| format!("reading the upstream's answer: {}", e.without_url()))?
    {
        if body.len() + chunk.len() > MAX_RESPONSE_BYTES {
            return Err(format!("the upstream's answer is over {MAX_RESPONSE_BYTES} bytes").into());
        }
        body.extend_from_slice(&chunk);
    }
    serde_json::from_slice(&body)
        .map_err(|e| format!("the upstream's answer is not JSON: {e}").into())
}

/// The URL of the page after `cursor`: the cursor and limit where the
/// URL's placeholders say, the rest in its query.
fn request_url(config: &HttpSource, cursor: &SourceCursor) -> Result<reqwest::Url, String> {
    let limit = config.limit.to_string();
    let mut values = vec![("{limit}", limit.as_str())];
    if let Some(token) = &cursor.token {
        values.push(("{cursor}", token));
    }
    if let (Some(after), Some(id)) = (&cursor.updated_after, &cursor.after_id) {
        values.extend([
            ("{updated_after}", after.as_str()),
            ("{after_id}", id.as_str()),
        ]);
    }
    let mut url = reqwest::Url::parse(&config.url_with(&values)).map_err(|e| e.to_string())?;
    {
        // What the URL's placeholders do not place goes in the query.
        let mut query = url.query_pairs_mut();
        if !config.templated("{limit}") {
            query.append_pair(&config.limit_param, &limit);
        }
        match &config.cursor {
            CursorStyle::Token { param, .. } => {
                if let (Some(token), false) = (&cursor.token, config.templated("{cursor}")) {
                    query.append_pair(param, token);
                }
            }
            CursorStyle::UpdatedAfter {
                updated_after_param,
                after_id_param,
            } => {
                let pair = (&cursor.updated_after, &cursor.after_id);
                if let ((Some(after), Some(id)), false) = (pair, config.templated("{after_id}")) {
                    query.append_pair(updated_after_param, after);
                    query.append_pair(after_id_param, id);
                }
            }
        }
    }
    // No empty `?` when nothing was added.
    if url.query() == Some("") {
        url.set_query(None);
    }
    Ok(url)
}

/// The text at `pointer`: a string as it is, a number written out.
fn text_at(value: &Value, pointer: &str) -> Option<String> {
    match value.pointer(pointer)? {
        Value::String(text) => Some(text.clone()),
        Value::Number(number) => Some(number.to_string()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_is_read_from_strings_and_numbers_only() {
        let record = serde_json::json!({ "id": "a", "n": 12, "b": true, "o": {} });
        assert_eq!(text_at(&record, "/id").as_deref(), Some("a"));
        assert_eq!(text_at(&record, "/n").as_deref(), Some("12"));
        assert_eq!(text_at(&record, "/b"), None);
        assert_eq!(text_at(&record, "/o"), None);
        assert_eq!(text_at(&record, "/missing"), None);
    }

    #[test]
    fn placeholders_put_the_cursor_in_the_url_and_the_rest_in_the_query() {
        let source = |url: &str| -> HttpSource {
            serde_json::from_value(serde_json::json!({ "url": url, "collection": "c" })).unwrap()
        };
        let cursor = SourceCursor {
            token: Some("a b/c".into()),
            ..Default::default()
        };
        let templated = source("http://up/changes/{cursor}?n={limit}");
        assert_eq!(
            request_url(&templated, &cursor).unwrap().as_str(),
            "http://up/changes/a%20b%2Fc?n=500"
        );
        // Before there is a cursor, its placeholder is empty.
        assert_eq!(
            request_url(&templated, &SourceCursor::default())
                .unwrap()
                .as_str(),
            "http://up/changes/?n=500"
        );
        let plain = source("http://up/changes");
        assert_eq!(
            request_url(&plain, &cursor).unwrap().as_str(),
            "http://up/changes?limit=500&cursor=a+b%2Fc"
        );
    }
}
