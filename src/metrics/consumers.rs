//! Consumers' figures, one series per consumer. Each consumer keeps its
//! own counts (durably, in its progress) and knows its backlog, so these
//! are read from it at each scrape rather than counted twice.

use prometheus::proto::{Counter, Gauge, LabelPair, Metric, MetricFamily, MetricType};

/// One consumer, as read at a scrape.
#[derive(Clone, Debug, Default)]
pub struct ConsumerSample {
    pub basin: String,
    pub consumer: String,
    pub delivered: u64,
    pub redelivered: u64,
    pub acked: u64,
    pub nacked: u64,
    pub dead_lettered: u64,
    pub dropped: u64,
    pub pending: u64,
    pub in_flight: u64,
    /// Messages not yet done with, and how long the first has waited;
    /// `None` when the consumer's source is gone.
    pub lag_messages: Option<u64>,
    pub lag_seconds: Option<f64>,
}

type Field = fn(&ConsumerSample) -> Option<f64>;

/// `(name, help, type, value)` of every consumer family.
const FAMILIES: &[(&str, &str, MetricType, Field)] = &[
    (
        "rill_consumer_delivered_total",
        "Messages a consumer delivered (first deliveries)",
        MetricType::COUNTER,
        |s| Some(s.delivered as f64),
    ),
    (
        "rill_consumer_redelivered_total",
        "Messages a consumer delivered again",
        MetricType::COUNTER,
        |s| Some(s.redelivered as f64),
    ),
    (
        "rill_consumer_acked_total",
        "Messages acked",
        MetricType::COUNTER,
        |s| Some(s.acked as f64),
    ),
    (
        "rill_consumer_nacked_total",
        "Messages nacked",
        MetricType::COUNTER,
        |s| Some(s.nacked as f64),
    ),
    (
        "rill_consumer_dead_lettered_total",
        "Messages moved to the dead-letter stream",
        MetricType::COUNTER,
        |s| Some(s.dead_lettered as f64),
    ),
    (
        "rill_consumer_dropped_total",
        "Pending messages that left the source before they were acked",
        MetricType::COUNTER,
        |s| Some(s.dropped as f64),
    ),
    (
        "rill_consumer_pending",
        "Messages delivered and not yet acked",
        MetricType::GAUGE,
        |s| Some(s.pending as f64),
    ),
    (
        "rill_consumer_in_flight",
        "Pending messages within their ack wait",
        MetricType::GAUGE,
        |s| Some(s.in_flight as f64),
    ),
    (
        "rill_consumer_lag_messages",
        "Messages from the first not yet done with to the end of the source",
        MetricType::GAUGE,
        |s| s.lag_messages.map(|m| m as f64),
    ),
    (
        "rill_consumer_lag_seconds",
        "How long the first message not yet done with has waited",
        MetricType::GAUGE,
        |s| s.lag_seconds,
    ),
];

/// The consumer families of `samples` (none for a family no sample has).
pub(super) fn families(samples: &[ConsumerSample]) -> Vec<MetricFamily> {
    FAMILIES
        .iter()
        .filter_map(|(name, help, kind, value)| {
            let metrics: Vec<Metric> = samples
                .iter()
                .filter_map(|sample| Some(metric(sample, *kind, value(sample)?)))
                .collect();
            if metrics.is_empty() {
                return None;
            }
            let mut family = MetricFamily::default();
            family.set_name(name.to_string());
            family.set_help(help.to_string());
            family.set_field_type(*kind);
            family.set_metric(metrics);
            Some(family)
        })
        .collect()
}

fn metric(sample: &ConsumerSample, kind: MetricType, value: f64) -> Metric {
    let label = |name: &str, value: &str| {
        let mut pair = LabelPair::default();
        pair.set_name(name.to_string());
        pair.set_value(value.to_string());
        pair
    };
    let mut metric = Metric::from_label(vec![
        label("basin", &sample.basin),
        label("consumer", &sample.consumer),
    ]);
    if kind == MetricType::COUNTER {
        let mut counter = Counter::default();
        counter.set_value(value);
        metric.set_counter(counter);
    } else {
        let mut gauge = Gauge::default();
        gauge.set_value(value);
        metric.set_gauge(gauge);
    }
    metric
}
