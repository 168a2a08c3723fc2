//! `GET …?live=sse`: records as Server-Sent Events (§5.8). Each `data`
//! event (the records of one read: a JSON array in JSON mode, text for
//! `text/*`, else base64) is followed by a `control` event with the next
//! offset; when the reader is caught up it gets a `control` event saying
//! so at once, then one every [`KEEP_ALIVE`] while nothing comes. A
//! closed stream ends with `streamClosed`; any other after about
//! [`LIFETIME`], so that the client reconnects (and a CDN can collapse
//! readers).

use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::http::{header, HeaderValue};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use serde_json::json;
use tokio::time::Instant;

use super::cursor;
use super::headers;
use crate::api::admission::SessionPermit;
use crate::api::shared::AppState;
use crate::engine::durable_streams::{Chunk, DurableStream};
use crate::engine::Engine;
use crate::wire::durable_streams::{body, offset};

const KEEP_ALIVE: Duration = Duration::from_secs(15);
const LIFETIME: Duration = Duration::from_secs(60);

/// How a `data` event carries the records' bytes.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Encoding {
    Json,
    Text,
    Base64,
}

struct Session {
    engine: std::sync::Arc<Engine>,
    stream: DurableStream,
    from: u64,
    /// The `streamCursor` of its control events: the interval the session
    /// began in (or past the client's, see `cursor.rs`), moving on with
    /// time.
    cursor: u64,
    encoding: Encoding,
    ends_at: Instant,
    /// Whether the last event told the reader it was caught up: then it
    /// waits for records before saying more.
    caught_up: bool,
    done: bool,
    _permit: SessionPermit,
}

pub(super) fn respond(
    state: &AppState,
    stream: DurableStream,
    from: u64,
    echoed: Option<&str>,
    permit: SessionPermit,
) -> Response {
    let content_type = &stream.settings.content_type;
    let encoding = if stream.settings.is_json() {
        Encoding::Json
    } else if content_type.starts_with("text/") {
        Encoding::Text
    } else {
        Encoding::Base64
    };
    let session = Session {
        engine: state.engine.clone(),
        stream,
        from,
        cursor: cursor::next(echoed),
        encoding,
        ends_at: Instant::now() + LIFETIME,
        caught_up: false,
        done: false,
        _permit: permit,
    };
    let events = futures::stream::unfold(session, |mut session| async move {
        let events = session.next_events().await?;
        Some((Ok::<_, std::convert::Infallible>(events), session))
    });
    let mut response = Body::from_stream(events).into_response();
    let out = response.headers_mut();
    out.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    );
    out.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    if encoding == Encoding::Base64 {
        headers::set(out, headers::SSE_DATA_ENCODING, "base64");
    }
    response
}

impl Session {
    /// The next events to send, once there are any; `None` ends the
    /// response.
    async fn next_events(&mut self) -> Option<Bytes> {
        if self.done || self.engine.streams().is_closing() {
            return None;
        }
        let left = self.ends_at.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return None;
        }
        let wait = if self.caught_up {
            KEEP_ALIVE.min(left)
        } else {
            Duration::ZERO
        };
        let chunk = match self
            .engine
            .durable_streams()
            .read(&self.stream, self.from, wait)
            .await
        {
            Ok(chunk) => chunk,
            // Deleted, trimmed or failing: the reader reconnects and hears
            // why from a plain `GET`.
            Err(_) => return None,
        };
        let mut out = String::new();
        if !chunk.records.is_empty() {
            self.data_event(&chunk, &mut out);
        }
        self.from = chunk.next;
        self.caught_up = chunk.up_to_date();
        self.done = chunk.at_end();
        self.cursor = self.cursor.max(cursor::current());
        let cursor = self.cursor.to_string();
        let control = control(chunk.next, Some(&cursor), chunk.up_to_date(), self.done);
        event(&mut out, "control", &control);
        Some(Bytes::from(out))
    }

    fn data_event(&self, chunk: &Chunk, out: &mut String) {
        let payload = match self.encoding {
            Encoding::Json => String::from_utf8_lossy(&body(&chunk.records, true)).into_owned(),
            Encoding::Text => String::from_utf8_lossy(&body(&chunk.records, false)).into_owned(),
            Encoding::Base64 => {
                base64::engine::general_purpose::STANDARD.encode(body(&chunk.records, false))
            }
        };
        event(out, "data", &payload);
    }
}

/// The JSON of an SSE control event.
fn control(next: u64, cursor: Option<&str>, up_to_date: bool, closed: bool) -> String {
    let mut control = json!({ "streamNextOffset": offset(next) });
    if closed {
        control["streamClosed"] = json!(true);
        control["upToDate"] = json!(true);
    } else {
        if let Some(cursor) = cursor {
            control["streamCursor"] = json!(cursor);
        }
        if up_to_date {
            control["upToDate"] = json!(true);
        }
    }
    control.to_string()
}

/// One event: each line of `data` its own `data:` line. SSE has no way to
/// carry a carriage return: one in text becomes a line break.
fn event(out: &mut String, kind: &str, data: &str) {
    out.push_str("event: ");
    out.push_str(kind);
    out.push('\n');
    let normalized = data.replace("\r\n", "\n").replace('\r', "\n");
    for line in normalized.split('\n') {
        out.push_str("data:");
        // A reader drops one space after the colon: a line that starts
        // with one gets another in front.
        if line.starts_with(' ') {
            out.push(' ');
        }
        out.push_str(line);
        out.push('\n');
    }
    out.push('\n');
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_line_of_an_event_is_a_data_line() {
        let mut out = String::new();
        event(&mut out, "data", "a\nb\r\nc\rd");
        assert_eq!(out, "event: data\ndata:a\ndata:b\ndata:c\ndata:d\n\n");
        let mut out = String::new();
        event(&mut out, "data", " leading space");
        // The reader strips the one space after the colon, only that one.
        assert_eq!(out, "event: data\ndata:  leading space\n\n");
    }
}
