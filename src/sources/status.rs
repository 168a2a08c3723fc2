//! What a source's worker has done, for `GET /v1/sources/{name}`: counts
//! since the server started (the cursor's count of changes is the durable
//! one), whether it has caught up, and the last error and when; for a
//! Postgres source also the backfill's progress and the lag.

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
    /// Postgres: the first copy of the tables, while it runs and after.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub backfill: Option<BackfillProgress>,
    /// Postgres: how much WAL the server has written past what this
    /// source took (other tables' writes count too).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lag_bytes: Option<u64>,
    /// Postgres: how long after its commit the last transaction taken was
    /// written here.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lag_seconds: Option<f64>,
    /// Postgres: the replication slot (and the publication, unless one was
    /// named) the source uses.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub slot: Option<String>,
    #[serde(skip)]
    pub applied_lsn: u64,
    #[serde(skip)]
    pub server_lsn: u64,
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct BackfillProgress {
    pub rows: u64,
    /// From the tables' statistics: a guide, not a promise.
    pub rows_estimated: u64,
    pub tables_done: usize,
    pub tables: usize,
    pub done: bool,
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

    /// Any other change (the Postgres source's states and figures).
    pub fn update(&self, change: impl FnOnce(&mut StatusSnapshot)) {
        change(&mut self.lock());
    }

    pub fn snapshot(&self) -> StatusSnapshot {
        let mut snapshot = self.lock().clone();
        if snapshot.state.is_empty() {
            snapshot.state = "starting";
        }
        if snapshot.slot.is_some() && snapshot.server_lsn > 0 {
            let lag = snapshot.server_lsn.saturating_sub(snapshot.applied_lsn);
            snapshot.lag_bytes = Some(lag);
        }
        snapshot
    }
}
