//! The stream core's figures: appends and reads by basin (and by stream
//! when asked for), acknowledgement latency, and what each group commit
//! wrote.

use prometheus::{Histogram, HistogramVec, IntCounter, IntCounterVec, Registry};

use super::register::{counter, counter_vec, histogram, histogram_vec, LATENCY_BUCKETS};

/// Appends and reads.
pub struct StreamMetrics {
    by_basin: Families,
    /// The same families with a `stream` label too (`--metrics-per-stream`).
    by_stream: Option<Families>,
    /// `rill_append_ack_seconds{basin}`: from an append reaching its
    /// stream to its acknowledgement, once durable.
    ack: HistogramVec,
}

struct Families {
    appends: IntCounterVec,
    appended_records: IntCounterVec,
    appended_bytes: IntCounterVec,
    read_records: IntCounterVec,
    read_bytes: IntCounterVec,
}

impl Families {
    fn all(&self) -> [&IntCounterVec; 5] {
        [
            &self.appends,
            &self.appended_records,
            &self.appended_bytes,
            &self.read_records,
            &self.read_bytes,
        ]
    }

    fn new(registry: &Registry, prefix: &str, labels: &[&str]) -> Self {
        let name = |what: &str| format!("{prefix}{what}");
        Self {
            appends: counter_vec(
                registry,
                &name("appends_total"),
                "Appends acknowledged (made durable)",
                labels,
            ),
            appended_records: counter_vec(
                registry,
                &name("appended_records_total"),
                "Records in acknowledged appends",
                labels,
            ),
            appended_bytes: counter_vec(
                registry,
                &name("appended_bytes_total"),
                "Metered bytes of the records in acknowledged appends",
                labels,
            ),
            read_records: counter_vec(
                registry,
                &name("read_records_total"),
                "Records read (unary reads, sessions, consumers)",
                labels,
            ),
            read_bytes: counter_vec(
                registry,
                &name("read_bytes_total"),
                "Metered bytes of the records read",
                labels,
            ),
        }
    }
}

impl StreamMetrics {
    pub(super) fn new(registry: &Registry, per_stream: bool) -> Self {
        Self {
            by_basin: Families::new(registry, "rill_", &["basin"]),
            by_stream: per_stream
                .then(|| Families::new(registry, "rill_stream_", &["basin", "stream"])),
            ack: histogram_vec(
                registry,
                "rill_append_ack_seconds",
                "Time from an append reaching its stream to its acknowledgement",
                &["basin"],
                LATENCY_BUCKETS,
            ),
        }
    }

    /// An append of `records` records, `bytes` metered bytes, was made
    /// durable `latency` after it reached its stream.
    pub fn appended(
        &self,
        basin: &str,
        stream: &str,
        records: u64,
        bytes: u64,
        latency: std::time::Duration,
    ) {
        let count = |families: &Families, labels: &[&str]| {
            families.appends.with_label_values(labels).inc();
            families
                .appended_records
                .with_label_values(labels)
                .inc_by(records);
            families
                .appended_bytes
                .with_label_values(labels)
                .inc_by(bytes);
        };
        count(&self.by_basin, &[basin]);
        if let Some(by_stream) = &self.by_stream {
            count(by_stream, &[basin, stream]);
        }
        self.ack
            .with_label_values(&[basin])
            .observe(latency.as_secs_f64());
    }

    /// `records` records, `bytes` metered bytes, were read and handed out.
    pub fn read(&self, basin: &str, stream: &str, records: u64, bytes: u64) {
        if records == 0 {
            return;
        }
        let count = |families: &Families, labels: &[&str]| {
            families
                .read_records
                .with_label_values(labels)
                .inc_by(records);
            families.read_bytes.with_label_values(labels).inc_by(bytes);
        };
        count(&self.by_basin, &[basin]);
        if let Some(by_stream) = &self.by_stream {
            count(by_stream, &[basin, stream]);
        }
    }

    /// Forgets a deleted basin's series (its streams' go with
    /// [`Self::forget_stream`]).
    pub fn forget_basin(&self, basin: &str) {
        for family in self.by_basin.all() {
            // Absent when the basin never counted anything.
            let _ = family.remove_label_values(&[basin]);
        }
        let _ = self.ack.remove_label_values(&[basin]);
    }

    /// Forgets a deleted stream's own series (the basin's stay: they count
    /// what happened, and a deleted stream's appends did).
    pub fn forget_stream(&self, basin: &str, stream: &str) {
        if let Some(families) = &self.by_stream {
            for family in families.all() {
                // Absent when the stream never counted anything.
                let _ = family.remove_label_values(&[basin, stream]);
            }
        }
    }
}

/// What each group commit (one durable storage write) carried.
pub struct CommitMetrics {
    /// `rill_storage_write_seconds`: one durable write, fsync included.
    pub write_seconds: Histogram,
    /// `rill_commit_group_writes`: the writes (appends, metadata changes,
    /// consumer updates) one durable write carried.
    pub group_writes: Histogram,
    /// `rill_commit_group_bytes`.
    pub group_bytes: Histogram,
    /// `rill_storage_restarts_total`: the engine reopened its storage after
    /// a failed write, and writes resumed.
    pub restarts: IntCounter,
}

impl CommitMetrics {
    pub(super) fn new(registry: &Registry) -> Self {
        let powers = |base: f64, factor: f64, count: usize| -> Vec<f64> {
            (0..count).map(|i| base * factor.powi(i as i32)).collect()
        };
        Self {
            write_seconds: histogram(
                registry,
                "rill_storage_write_seconds",
                "Time of one durable storage write (a group commit), fsync included",
                LATENCY_BUCKETS,
            ),
            group_writes: histogram(
                registry,
                "rill_commit_group_writes",
                "Writes gathered into one durable storage write",
                &powers(1.0, 2.0, 13),
            ),
            group_bytes: histogram(
                registry,
                "rill_commit_group_bytes",
                "Bytes of one durable storage write",
                &powers(1024.0, 4.0, 10),
            ),
            restarts: counter(
                registry,
                "rill_storage_restarts_total",
                "Times the storage was reopened after a failed write, and writes resumed",
            ),
        }
    }

    /// A group of `writes` writes, `bytes` bytes, took `elapsed`.
    pub fn committed(&self, writes: usize, bytes: usize, elapsed: std::time::Duration) {
        self.write_seconds.observe(elapsed.as_secs_f64());
        self.group_writes.observe(writes as f64);
        self.group_bytes.observe(bytes as f64);
    }
}
