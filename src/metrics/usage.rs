//! Usage, counted as it happens, for S2's metrics API (`/v1/metrics…`):
//! operations and bytes per basin (and per account), by the minute they
//! happened in. `engine/usage.rs` moves these counts into the
//! [`History`](super::history::History) every minute (and before it
//! answers a query), and keeps that on disk.
//!
//! Each count names its metric set and the series in it, as the API
//! answers them: `append-ops` by storage class, `read-ops` by read kind,
//! `append-throughput` and `read-throughput` in bytes, `basin-ops` and
//! `account-ops` by operation.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

/// The scope of account-wide counts (`account-ops`).
pub const ACCOUNT: &str = "";

/// One count: which set, which series in it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Series {
    pub set: &'static str,
    pub name: &'static str,
}

impl Series {
    /// An acknowledged append to a stream of `storage_class`.
    pub const fn append_op(storage_class: &'static str) -> Self {
        Self {
            set: "append-ops",
            name: storage_class,
        }
    }
    pub const APPENDED_BYTES: Self = Self {
        set: "append-throughput",
        name: "append-throughput",
    };
    /// A unary read (or long poll, or a consumer's read of its source).
    pub const UNARY_READ: Self = Self {
        set: "read-ops",
        name: "unary",
    };
    /// A read session, per minute it lasts (as S2 counts them).
    pub const STREAMING_READ: Self = Self {
        set: "read-ops",
        name: "streaming",
    };
    pub const READ_BYTES: Self = Self {
        set: "read-throughput",
        name: "read-throughput",
    };
    /// An operation on the account (basins, tokens, metrics).
    pub const fn account_op(operation: &'static str) -> Self {
        Self {
            set: "account-ops",
            name: operation,
        }
    }
    /// An operation on a basin's resources other than appends and reads
    /// (streams, collections, consumers).
    pub const fn basin_op(operation: &'static str) -> Self {
        Self {
            set: "basin-ops",
            name: operation,
        }
    }

    /// An acknowledgement that took at most `le` seconds and more than
    /// the bucket below (Rill's own `ack-latency` set, account-wide): a
    /// histogram per minute, from which the console draws percentiles.
    pub fn ack_latency(seconds: f64) -> Self {
        let name = ACK_LATENCY_BUCKETS
            .iter()
            .find(|(le, _)| seconds <= *le)
            .map_or("+Inf", |(_, name)| name);
        Self {
            set: "ack-latency",
            name,
        }
    }

    /// How the history keys it: `{set}/{name}`.
    pub fn key(self) -> String {
        format!("{}/{}", self.set, self.name)
    }
}

/// The upper bounds of the `ack-latency` buckets, in seconds, and their
/// series names; slower acknowledgements count in `+Inf`.
pub const ACK_LATENCY_BUCKETS: [(f64, &str); 12] = [
    (0.000_5, "0.0005"),
    (0.001, "0.001"),
    (0.002, "0.002"),
    (0.005, "0.005"),
    (0.01, "0.01"),
    (0.02, "0.02"),
    (0.05, "0.05"),
    (0.1, "0.1"),
    (0.2, "0.2"),
    (0.5, "0.5"),
    (1.0, "1"),
    (5.0, "5"),
];

/// One drained count.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Count {
    /// Unix seconds of the minute's start.
    pub minute: u64,
    pub scope: String,
    pub series: Series,
    pub amount: u64,
}

/// Counts not yet moved into the history, by scope (a basin, or
/// [`ACCOUNT`]), then by minute and series. Keyed by scope first so that
/// counting into a known basin allocates nothing.
pub struct Usage {
    pending: Mutex<HashMap<String, ScopeCounts>>,
    /// Whether `count` counts: mirrors `holders` (read without its lock).
    recording: AtomicBool,
    /// Who wants counts: on for a server; on a cluster node, each term it
    /// holds as owner (the history is the owner's, and nothing would take
    /// a follower's counts). Two terms may overlap, a lost one stopping
    /// while the next opens, hence a count.
    holders: Mutex<usize>,
}

impl Default for Usage {
    fn default() -> Self {
        Self {
            pending: Mutex::default(),
            recording: AtomicBool::new(true),
            holders: Mutex::new(1),
        }
    }
}

/// One scope's counts, by minute and series.
type ScopeCounts = HashMap<(u64, Series), u64>;

impl Usage {
    /// Counts `amount` of `series` in `scope`, now.
    pub fn count(&self, scope: &str, series: Series, amount: u64) {
        if amount == 0 || !self.recording.load(Ordering::Relaxed) {
            return;
        }
        let minute = current_minute();
        let mut pending = self.pending.lock().unwrap_or_else(|p| p.into_inner());
        let counts = match pending.get_mut(scope) {
            Some(counts) => counts,
            None => pending.entry(scope.to_string()).or_default(),
        };
        *counts.entry((minute, series)).or_default() += amount;
    }

    /// One more holder wants counts (a term as owner opens).
    pub fn hold(&self) {
        let mut holders = self.holders.lock().unwrap_or_else(|p| p.into_inner());
        *holders += 1;
        self.recording.store(true, Ordering::Relaxed);
    }

    /// One holder less (a cluster node as it starts: it holds no term
    /// yet; a term as it ends). With none left, counting stops and what
    /// was counted since the last drain is dropped.
    pub fn release(&self) {
        let mut holders = self.holders.lock().unwrap_or_else(|p| p.into_inner());
        *holders = holders.saturating_sub(1);
        if *holders == 0 {
            self.recording.store(false, Ordering::Relaxed);
            self.pending
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .clear();
        }
    }

    /// Everything counted since the last drain.
    pub fn drain(&self) -> Vec<Count> {
        let pending = std::mem::take(&mut *self.pending.lock().unwrap_or_else(|p| p.into_inner()));
        let mut out = Vec::new();
        for (scope, counts) in pending {
            for ((minute, series), amount) in counts {
                out.push(Count {
                    minute,
                    scope: scope.clone(),
                    series,
                    amount,
                });
            }
        }
        out
    }
}

/// Unix seconds now.
pub fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Unix seconds of the start of the current minute.
fn current_minute() -> u64 {
    let now = now_secs();
    now - now % 60
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_add_up_by_scope_minute_and_series_and_drain_once() {
        let usage = Usage::default();
        usage.count("basin-a", Series::APPENDED_BYTES, 10);
        usage.count("basin-a", Series::APPENDED_BYTES, 5);
        usage.count("basin-b", Series::APPENDED_BYTES, 7);
        usage.count(ACCOUNT, Series::account_op("list-basins"), 1);
        usage.count("basin-a", Series::READ_BYTES, 0); // nothing to count
        let mut drained = usage.drain();
        drained.sort_by(|a, b| (&a.scope, a.series.key()).cmp(&(&b.scope, b.series.key())));
        let summary: Vec<_> = drained
            .iter()
            .map(|c| (c.scope.as_str(), c.series.key(), c.amount))
            .collect();
        assert_eq!(
            summary,
            vec![
                ("", "account-ops/list-basins".to_string(), 1),
                (
                    "basin-a",
                    "append-throughput/append-throughput".to_string(),
                    15
                ),
                (
                    "basin-b",
                    "append-throughput/append-throughput".to_string(),
                    7
                ),
            ]
        );
        assert!(drained.iter().all(|c| c.minute % 60 == 0));
        assert!(usage.drain().is_empty());
    }

    #[test]
    fn ack_latencies_fall_in_the_first_bucket_that_holds_them() {
        assert_eq!(Series::ack_latency(0.0001).name, "0.0005");
        assert_eq!(Series::ack_latency(0.001).name, "0.001");
        assert_eq!(Series::ack_latency(0.0011).name, "0.002");
        assert_eq!(Series::ack_latency(7.0).name, "+Inf");
    }
}
