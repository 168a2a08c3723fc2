//! What a source's poller has done, for `GET /v1/sources/{name}`: counts
//! since the server started (the cursor's count of changes is the durable
//! one), whether it has caught up, and the last error and when.

use std::sync::Mutex;

use serde::Serialize;

use crate::engine::streams::types::now_ms;

#[derive(Default)]
pub struct SourceStatus {
    inner: Mutex<StatusSnapshot>,
}

/// The status as the API shows it.
#[derive(Clone, Debug, Default, Serialize)]
pub struct StatusSnapshot {
    /// `starting`, `catching_up` (the last page was full), `caught_up`,
    /// or `failing` (the last poll failed; it is tried again).
    pub state: &'static str,
    /// Requests made to the upstream.
    pub polls: u64,
    /// Requests that failed.
    pub failed: u64,
    /// Changes written to the collection.
    pub applied: u64,
    /// Epoch ms of the last poll that succeeded.
    pub last_poll_at: Option<u64>,
    pub last_error: Option<String>,
    /// Epoch ms of the last error.
    pub last_error_at: Option<u64>,
}

impl SourceStatus {
    fn lock(&self) -> std::sync::MutexGuard<'_, StatusSnapshot> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A poll that took `changes` changes; `full` if more wait.
    pub fn polled(&self, changes: u64, full: bool) {
        let mut inner = self.lock();
        inner.polls += 1;
        inner.applied += changes;
        inner.last_poll_at = Some(now_ms());
        inner.state = match full {
            true => "catching_up",
            false => "caught_up",
        };
    }

    pub fn failed(&self, error: &str) {
        let mut inner = self.lock();
        inner.polls += 1;
        inner.failed += 1;
        inner.state = "failing";
        inner.last_error = Some(error.to_string());
        inner.last_error_at = Some(now_ms());
    }

    pub fn snapshot(&self) -> StatusSnapshot {
        let mut snapshot = self.lock().clone();
        if snapshot.state.is_empty() {
            snapshot.state = "starting";
        }
        snapshot
    }
}
