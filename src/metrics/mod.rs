//! What the server counts, for Prometheus (`GET /metrics`).
//!
//! One [`Metrics`] per server, made by `server.rs` and handed to the engine,
//! the HTTP layer and the accept loop. It is not a global: the tests run
//! many servers in one process, and each must count only its own.
//!
//! Two kinds of figures:
//! - **events** (appends, records read, storage writes, requests) are
//!   counted where they happen, with an atomic add;
//! - **state** (open sessions, what is on disk, uptime) is read from its
//!   owner when scraped, by the handler, so it cannot drift from the truth.
//!
//! Names and units follow Prometheus conventions: `rill_…_total` for
//! counters, `_seconds` and `_bytes` for units. This module depends on
//! nothing else in the crate, so every layer may use it.

mod consumers;
pub mod history;
mod register;
mod streams;
pub mod usage;

use std::time::Instant;

use prometheus::{
    Encoder, Gauge, HistogramVec, IntCounterVec, IntGauge, IntGaugeVec, Registry, TextEncoder,
};
use register::{counter_vec, float_gauge, gauge, gauge_vec, histogram_vec, LATENCY_BUCKETS};

pub use consumers::ConsumerSample;
pub use streams::{CommitMetrics, StreamMetrics};

pub struct Metrics {
    registry: Registry,
    started: Instant,
    pub streams: StreamMetrics,
    pub commits: CommitMetrics,
    pub http: HttpMetrics,
    pub collections: CollectionMetrics,
    /// Counts for S2's metrics API (`/v1/metrics…`), by minute.
    pub usage: usage::Usage,
    /// Set when scraped.
    state: StateGauges,
}

/// Requests, by the route they matched.
pub struct HttpMetrics {
    /// `rill_http_requests_total{method, route, status}`.
    pub requests: IntCounterVec,
    /// `rill_http_request_duration_seconds{method, route}`: until the
    /// response began (for a session: until it was open).
    pub durations: HistogramVec,
    /// `rill_errors_total{code}`: error answers by their stable `code`.
    pub errors: IntCounterVec,
    /// `rill_connections_open`.
    pub connections: IntGauge,
}

/// Collection writes and `/updated` pages, by basin.
pub struct CollectionMetrics {
    /// `rill_collection_writes_total{basin}`: write requests done.
    pub writes: IntCounterVec,
    /// `rill_collection_written_records_total{basin}`: records changed
    /// (created, updated or deleted; an upsert of what is there already
    /// changes nothing).
    pub written_records: IntCounterVec,
    /// `rill_updated_pages_total{basin}`: `/updated` pages answered.
    pub updated_pages: IntCounterVec,
}

/// The figures read from their owners at each scrape.
struct StateGauges {
    sessions: IntGaugeVec,
    storage_bytes: IntGauge,
    writable: IntGauge,
    uptime: Gauge,
}

/// What the scrape reads from the server's parts.
#[derive(Debug, Default)]
pub struct Snapshot {
    /// Open read sessions, append sessions and long polls.
    pub read_sessions: usize,
    pub append_sessions: usize,
    pub long_polls: usize,
    /// Bytes the storage takes on disk, if it is on disk.
    pub storage_bytes: Option<u64>,
    /// Whether writes can be made durable now (not after a failed write,
    /// a full disk say, until the storage is reopened).
    pub writable: bool,
    /// Every consumer.
    pub consumers: Vec<ConsumerSample>,
}

impl Metrics {
    /// A fresh set, every figure at zero. With `per_stream`, stream
    /// figures are also kept per stream (a label per stream: for servers
    /// with few of them).
    pub fn new(per_stream: bool) -> Self {
        let registry = Registry::new();
        let streams = StreamMetrics::new(&registry, per_stream);
        let commits = CommitMetrics::new(&registry);
        let http = HttpMetrics {
            requests: counter_vec(
                &registry,
                "rill_http_requests_total",
                "HTTP requests answered, by method, matched route and status",
                &["method", "route", "status"],
            ),
            durations: histogram_vec(
                &registry,
                "rill_http_request_duration_seconds",
                "Time until a response began (for a session: until it was open)",
                &["method", "route"],
                LATENCY_BUCKETS,
            ),
            errors: counter_vec(
                &registry,
                "rill_errors_total",
                "Error answers, by their `code`",
                &["code"],
            ),
            connections: gauge(
                &registry,
                "rill_connections_open",
                "Open client connections",
            ),
        };
        let collections = CollectionMetrics {
            writes: counter_vec(
                &registry,
                "rill_collection_writes_total",
                "Collection write requests done (one batch, one put or one delete each)",
                &["basin"],
            ),
            written_records: counter_vec(
                &registry,
                "rill_collection_written_records_total",
                "Collection records changed (created, updated or deleted)",
                &["basin"],
            ),
            updated_pages: counter_vec(
                &registry,
                "rill_updated_pages_total",
                "Pages of /updated answered",
                &["basin"],
            ),
        };
        let state = StateGauges {
            sessions: gauge_vec(
                &registry,
                "rill_sessions_open",
                "Open read sessions, append sessions and long polls",
                &["kind"],
            ),
            storage_bytes: gauge(
                &registry,
                "rill_storage_bytes",
                "Bytes the storage takes on disk (journals and table files)",
            ),
            writable: gauge(
                &registry,
                "rill_writable",
                "1 when writes can be made durable; 0 after a failed write (a full disk, a failed \
                 fsync) until the storage is reopened",
            ),
            uptime: float_gauge(
                &registry,
                "rill_uptime_seconds",
                "Seconds since the server started",
            ),
        };
        // The process's memory, CPU, open files and start time, read from
        // /proc at each scrape (`process_*`, Prometheus's standard names).
        #[cfg(target_os = "linux")]
        let _ = registry.register(Box::new(
            prometheus::process_collector::ProcessCollector::for_self(),
        ));
        Self {
            registry,
            started: Instant::now(),
            streams,
            commits,
            http,
            collections,
            usage: usage::Usage::default(),
            state,
        }
    }

    /// An append of `records` records, `bytes` metered bytes, to a stream
    /// of `storage_class`, was made durable `latency` after it reached its
    /// stream.
    pub fn appended(
        &self,
        (basin, stream, storage_class): (&str, &str, &'static str),
        records: u64,
        bytes: u64,
        latency: std::time::Duration,
    ) {
        self.streams
            .appended(basin, stream, records, bytes, latency);
        self.usage
            .count(basin, usage::Series::append_op(storage_class), 1);
        self.usage
            .count(basin, usage::Series::APPENDED_BYTES, bytes);
        let latency = usage::Series::ack_latency(latency.as_secs_f64());
        self.usage.count(usage::ACCOUNT, latency, 1);
    }

    /// `records` records, `bytes` metered bytes, were read and handed out.
    /// (Read operations are counted apart: a session counts one a minute.)
    pub fn read(&self, basin: &str, stream: &str, records: u64, bytes: u64) {
        self.streams.read(basin, stream, records, bytes);
        self.usage.count(basin, usage::Series::READ_BYTES, bytes);
    }

    /// The Prometheus text exposition of every figure, the state ones set
    /// from `snapshot` first.
    pub fn render(&self, snapshot: &Snapshot) -> String {
        let sessions = &self.state.sessions;
        sessions
            .with_label_values(&["read"])
            .set(snapshot.read_sessions as i64);
        sessions
            .with_label_values(&["append"])
            .set(snapshot.append_sessions as i64);
        sessions
            .with_label_values(&["long_poll"])
            .set(snapshot.long_polls as i64);
        if let Some(bytes) = snapshot.storage_bytes {
            self.state.storage_bytes.set(bytes as i64);
        }
        self.state.writable.set(i64::from(snapshot.writable));
        self.state.uptime.set(self.started.elapsed().as_secs_f64());
        let mut out = Vec::new();
        // Encoding into a Vec cannot fail on I/O; a family the encoder
        // refuses would be a bug here, and leaves the rest out.
        let mut families = self.registry.gather();
        families.extend(consumers::families(&snapshot.consumers));
        if let Err(err) = TextEncoder::new().encode(&families, &mut out) {
            tracing::error!(%err, "encoding metrics failed");
        }
        String::from_utf8(out).unwrap_or_default()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new(false)
    }
}

/// The content type of [`Metrics::render`]'s text.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";
