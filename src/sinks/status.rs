//! What a sink's worker has done, for `GET /v1/sinks/{name}`: counts since
//! the server started (the consumer's own counts are the durable ones),
//! the last error and when, and the recent throughput.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde::Serialize;

#[derive(Default)]
pub struct SinkStatus {
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    delivered: u64,
    failed: u64,
    dead_lettered: u64,
    retrying: bool,
    last_error: Option<(String, u64)>,
    /// Deliveries of the last minute: when, and how many messages.
    recent: VecDeque<(Instant, u64)>,
}

/// The status as the API shows it.
#[derive(Clone, Debug, Default, Serialize)]
pub struct StatusSnapshot {
    /// Messages delivered (acknowledged by the destination).
    pub delivered: u64,
    /// Delivery attempts that failed.
    pub failed: u64,
    /// Messages sent to the dead letters.
    pub dead_lettered: u64,
    /// A delivery is failing and being tried again.
    pub retrying: bool,
    pub last_error: Option<String>,
    /// Epoch ms of the last error.
    pub last_error_at: Option<u64>,
    /// Messages delivered per second, over the last minute.
    pub throughput: f64,
}

const WINDOW: Duration = Duration::from_secs(60);

impl SinkStatus {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn delivered(&self, messages: u64) {
        let mut inner = self.lock();
        inner.delivered += messages;
        inner.retrying = false;
        let now = Instant::now();
        inner.recent.push_back((now, messages));
        while inner
            .recent
            .front()
            .is_some_and(|(at, _)| now - *at > WINDOW)
        {
            inner.recent.pop_front();
        }
    }

    pub fn failed(&self, error: &str, retrying: bool) {
        let mut inner = self.lock();
        inner.failed += 1;
        inner.retrying = retrying;
        inner.last_error = Some((error.to_string(), now_ms()));
    }

    pub fn dead_lettered(&self, messages: u64) {
        let mut inner = self.lock();
        inner.dead_lettered += messages;
        inner.retrying = false;
    }

    pub fn snapshot(&self) -> StatusSnapshot {
        let inner = self.lock();
        let now = Instant::now();
        let recent: u64 = inner
            .recent
            .iter()
            .filter(|(at, _)| now - *at <= WINDOW)
            .map(|(_, n)| n)
            .sum();
        StatusSnapshot {
            delivered: inner.delivered,
            failed: inner.failed,
            dead_lettered: inner.dead_lettered,
            retrying: inner.retrying,
            last_error: inner.last_error.as_ref().map(|(e, _)| e.clone()),
            last_error_at: inner.last_error.as_ref().map(|(_, at)| *at),
            throughput: recent as f64 / WINDOW.as_secs_f64(),
        }
    }
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}
