//! `rill bench --streams N`: flat-out appends spread over many streams.
//!
//! Many independent writers (devices, tenants, jobs) each own a stream.
//! What matters then is appends per second across all of them and the
//! latency of one: `--appenders` tasks each send a unary append of
//! `--batch` records to the next stream in turn, wait for its
//! acknowledgement, and go on. Run it with `--streams 1` and with
//! `--streams 10000` to see what spreading costs.

use std::io::Write;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::{StreamExt, TryStreamExt};
use rill_client::{AppendOptions, AppendRecord, Client};
use serde_json::json;

use super::bench_stats::{epoch_ms, Percentiles};
use super::output::{fail, line, Failure};

/// Streams created or deleted at once around the run.
const SETUP_CONCURRENCY: usize = 32;

pub struct SpreadArgs {
    pub streams: usize,
    /// Stop once this many records were appended (`--max-mib`).
    pub max_records: u64,
    pub appenders: usize,
    pub duration: Duration,
    pub record_size: usize,
    pub batch: usize,
}

pub async fn run(
    client: &Client,
    args: &SpreadArgs,
    json_out: bool,
    out: &mut impl Write,
) -> Result<(), Failure> {
    let prefix = format!("bench-{}", epoch_ms());
    let names: Arc<Vec<String>> =
        Arc::new((0..args.streams).map(|i| format!("{prefix}-{i}")).collect());
    let setup = Instant::now();
    let created = futures::stream::iter(names.iter())
        .map(|name| client.ensure_stream(name))
        .buffer_unordered(SETUP_CONCURRENCY)
        .try_collect::<Vec<()>>()
        .await;
    let setup_time = setup.elapsed();
    let measured = match created {
        Ok(_) => append(client, args, &names).await,
        Err(err) => Err(fail(err).message),
    };
    // The streams go whatever happened (those never created answer 404).
    let deleted = futures::stream::iter(names.iter())
        .map(|name| client.delete_stream(name))
        .buffer_unordered(SETUP_CONCURRENCY)
        .filter(|deleted| std::future::ready(deleted.is_ok()))
        .count()
        .await;
    let (latencies, append_time) = measured?;
    report(
        args,
        (setup_time, deleted),
        &latencies,
        append_time,
        json_out,
        out,
    )
}

/// The run itself: every appender's latencies, and how long it took.
async fn append(
    client: &Client,
    args: &SpreadArgs,
    names: &Arc<Vec<String>>,
) -> Result<(Vec<Duration>, Duration), String> {
    let started = Instant::now();
    let appended = Arc::new(AtomicU64::new(0));
    let next = Arc::new(AtomicUsize::new(0));
    let appenders: Vec<_> = (0..args.appenders)
        .map(|_| {
            let (client, names, next) = (client.clone(), names.clone(), next.clone());
            let appended = appended.clone();
            let (duration, size, batch) = (args.duration, args.record_size, args.batch);
            let max_records = args.max_records;
            tokio::spawn(async move {
                let mut latencies = Vec::new();
                // The bodies' bytes do not matter here (nothing reads them).
                let body = bytes::Bytes::from(vec![b'r'; size]);
                while started.elapsed() < duration
                    && appended.fetch_add(batch as u64, Ordering::Relaxed) < max_records
                {
                    let n = next.fetch_add(1, Ordering::Relaxed);
                    let records: Vec<AppendRecord> = (0..batch as u64)
                        .map(|_| AppendRecord::new(body.clone()))
                        .collect();
                    let sent = Instant::now();
                    let stream = &names[n % names.len()];
                    client
                        .append_records(stream, records, &AppendOptions::default())
                        .await
                        .map_err(|err| fail(err).message)?;
                    latencies.push(sent.elapsed());
                }
                Ok::<_, String>(latencies)
            })
        })
        .collect();
    let mut latencies = Vec::new();
    let mut failure = None;
    for appender in appenders {
        match appender.await {
            Ok(Ok(more)) => latencies.extend(more),
            Ok(Err(err)) => failure = failure.or(Some(err)),
            Err(err) => failure = failure.or(Some(format!("an appender failed: {err}"))),
        }
    }
    match failure {
        Some(err) => Err(err),
        None => Ok((latencies, started.elapsed())),
    }
}

fn report(
    args: &SpreadArgs,
    (setup_time, deleted): (Duration, usize),
    latencies: &[Duration],
    append_time: Duration,
    json_out: bool,
    out: &mut impl Write,
) -> Result<(), Failure> {
    let appends = latencies.len();
    let records = (appends * args.batch) as f64;
    let secs = append_time.as_secs_f64().max(0.001);
    let mib = records * args.record_size as f64 / (1024.0 * 1024.0);
    let latency = Percentiles::of(latencies);
    if json_out {
        return line(
            out,
            json!({
                "streams": args.streams,
                "streams_deleted": deleted,
                "appenders": args.appenders,
                "setup_secs": setup_time.as_secs_f64(),
                "appends": appends,
                "appends_per_sec": appends as f64 / secs,
                "append_records_per_sec": records / secs,
                "append_mib_per_sec": mib / secs,
                "append_latency_ms": latency.json(),
            }),
        );
    }
    line(
        out,
        format!(
            "streams      {} created in {:.2} s, {deleted} deleted afterwards",
            args.streams,
            setup_time.as_secs_f64()
        ),
    )?;
    line(
        out,
        format!(
            "appended     {appends} appends of {} records by {} appenders in {secs:.2} s: \
             {:.0} appends/s, {:.0} rec/s, {:.2} MiB/s",
            args.batch,
            args.appenders,
            appends as f64 / secs,
            records / secs,
            mib / secs
        ),
    )?;
    line(out, format!("ack latency  {} (per append)", latency.text()))
}
