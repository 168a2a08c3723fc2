//! `rill bench`: append at a target rate (or flat out) through a pipelined
//! session while a follower reads the same stream live; then print
//! throughput and ack and end-to-end latency, having checked that every
//! record read back is exactly the one written, in order (the record's
//! contents and the check are in `bench_records.rs`).

use std::io::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};
use rill_client::{
    AppendOptions, AppendRecord, AppendTicket, Client, ReadStart, StreamRecord, MAX_APPEND_BYTES,
    MAX_APPEND_RECORDS,
};
use serde_json::json;
use tokio::sync::{mpsc, watch};

use super::bench_records::{body, verify, HEADER_LEN};
use super::bench_stats::{epoch_ms, Percentiles};
use super::output::{fail, line, Failure};

/// How long the reader may lag behind the last acknowledgement at the end.
const CATCH_UP_LIMIT: Duration = Duration::from_secs(30);

#[derive(clap::Args, Debug)]
pub struct BenchArgs {
    /// The stream to use (created if missing), read from its current tail;
    /// nobody else may append to it meanwhile. By default a new
    /// `bench-…` stream, deleted afterwards.
    stream: Option<String>,
    /// Records per second to append; flat out if not given.
    #[arg(long)]
    rate: Option<u64>,
    /// How long to append.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    duration: Duration,
    /// Stop once this many MiB of bodies were appended, even before
    /// --duration is up, so that a flat-out run cannot fill a disk (0: no
    /// limit).
    #[arg(long, default_value_t = 256)]
    max_mib: u64,
    /// Body size of each record in bytes (at least 24).
    #[arg(long, default_value_t = 1024)]
    record_size: usize,
    /// Records per append when flat out (at a target rate, appends carry
    /// whatever is due).
    #[arg(long, default_value_t = 100)]
    batch: usize,
    /// Live readers of the stream (fan-out), each checking every record's
    /// place, size and origin; the first checks every byte too.
    #[arg(long, default_value_t = 1)]
    readers: usize,
    /// Instead of one session with readers: --appenders concurrent unary
    /// appends of --batch records, spread over this many new streams
    /// (deleted afterwards). Compare `--streams 10000` with `--streams 1`.
    #[arg(long)]
    streams: Option<usize>,
    /// Concurrent appenders with --streams (writers and consumer workers
    /// with --collection).
    #[arg(long, default_value_t = 16)]
    appenders: usize,
    /// Instead of a stream: batches of --batch upserts into a new
    /// collection (deleted afterwards), then paging through its
    /// `/updated` and consuming it with a consumer.
    #[arg(long, conflicts_with_all = ["stream", "streams", "rate", "readers"])]
    collection: bool,
    /// Distinct ids the --collection upserts go to, round robin.
    #[arg(long, default_value_t = 100_000)]
    keys: u64,
}

impl BenchArgs {
    /// The records --max-mib allows.
    fn max_records(&self) -> u64 {
        match self.max_mib {
            0 => u64::MAX,
            mib => (mib << 20) / self.record_size as u64,
        }
    }
}

/// Counters the progress bar shows while the run goes on.
#[derive(Default)]
struct Progress {
    sent: AtomicU64,
    acked: AtomicU64,
    read: AtomicU64,
}

pub async fn run(
    client: &Client,
    args: BenchArgs,
    json_out: bool,
    out: &mut impl Write,
) -> Result<(), Failure> {
    if args.record_size < HEADER_LEN || args.record_size > MAX_APPEND_BYTES - 8 {
        return Err(format!(
            "--record-size must be between {HEADER_LEN} and {} bytes",
            MAX_APPEND_BYTES - 8
        )
        .into());
    }
    let max_batch = MAX_APPEND_RECORDS.min(MAX_APPEND_BYTES / (args.record_size + 8));
    if args.batch == 0 || args.batch > max_batch {
        return Err(format!(
            "--batch must be between 1 and {max_batch} for {}-byte records",
            args.record_size
        )
        .into());
    }
    if args.rate == Some(0) {
        return Err("--rate must be above 0 (leave it out to append flat out)".into());
    }
    if args.readers == 0 {
        return Err("--readers must be at least 1".into());
    }
    if args.streams == Some(0) || args.appenders == 0 {
        return Err("--streams and --appenders must be at least 1".into());
    }
    if args.collection {
        // A batch names each id once at most (the server refuses a write
        // that names one twice).
        if args.batch > 1000 || args.batch as u64 > args.keys {
            return Err("--collection takes --batch up to 1000 and up to --keys".into());
        }
        let collection = super::bench_collection::CollectionArgs {
            keys: args.keys,
            max_upserts: args.max_records(),
            appenders: args.appenders,
            duration: args.duration,
            record_size: args.record_size,
            batch: args.batch,
        };
        return super::bench_collection::run(client, &collection, json_out, out).await;
    }
    if let Some(streams) = args.streams {
        if args.stream.is_some() || args.readers > 1 || args.rate.is_some() {
            return Err(
                "--streams spreads flat-out appends over new streams: it takes no STREAM, \
                 --readers or --rate"
                    .into(),
            );
        }
        let spread = super::bench_spread::SpreadArgs {
            streams,
            max_records: args.max_records(),
            appenders: args.appenders,
            duration: args.duration,
            record_size: args.record_size,
            batch: args.batch,
        };
        return super::bench_spread::run(client, &spread, json_out, out).await;
    }
    let (stream, temporary) = match &args.stream {
        Some(stream) => (stream.clone(), false),
        None => (format!("bench-{}", epoch_ms()), true),
    };
    client.ensure_stream(&stream).await.map_err(fail)?;
    let result = measure(client, &stream, &args, max_batch).await;
    // Whether the temporary stream is gone: said in the report.
    let deleted = temporary && client.delete_stream(&stream).await.is_ok();
    let report = result?;
    report.print(&stream, deleted, json_out, out)
}

/// What a run measured.
struct Report {
    /// Live readers, each of which read every record.
    readers: usize,
    records: u64,
    bytes: u64,
    append_time: Duration,
    read_time: Duration,
    appends: usize,
    ack_latencies: Vec<Duration>,
    e2e_latencies: Vec<Duration>,
}

async fn measure(
    client: &Client,
    stream: &str,
    args: &BenchArgs,
    max_batch: usize,
) -> Result<Report, Failure> {
    let first_seq_num = client.check_tail(stream).await.map_err(fail)?;
    let nonce: u64 = rand::random();
    let started = Instant::now();
    let progress = Arc::new(Progress::default());
    let (total_tx, total_rx) = watch::channel(None::<u64>);

    let readers: Vec<_> = (0..args.readers)
        .map(|reader| {
            tokio::spawn(read_back(
                client.clone(),
                stream.to_string(),
                first_seq_num,
                nonce,
                (args.record_size, reader == 0),
                started,
                total_rx.clone(),
                progress.clone(),
            ))
        })
        .collect();
    let bar = progress_bar(args.duration);
    let ticker = tokio::spawn(show_progress(bar.clone(), progress.clone(), started));

    let appended = append(client, stream, args, max_batch, nonce, started, &progress).await;
    let append_time = started.elapsed();
    let (appends, ack_latencies) = match appended {
        Ok(appended) => appended,
        Err(err) => {
            readers.iter().for_each(|reader| reader.abort());
            ticker.abort();
            bar.finish_and_clear();
            return Err(err);
        }
    };
    // Every append was acknowledged: that many records are to be read.
    let _ = total_tx.send(Some(progress.acked.load(Ordering::Relaxed)));
    let mut e2e_latencies = Vec::new();
    let mut records = 0;
    // The readers stop with the run, failed or not.
    let readers: Vec<_> = readers.into_iter().map(AbortOnDrop).collect();
    for mut reader in readers {
        let read = (&mut reader.0).await;
        let latencies = match read.map_err(|e| format!("a reader failed: {e}")) {
            Ok(Ok(latencies)) => latencies,
            Ok(Err(err)) | Err(err) => {
                ticker.abort();
                bar.finish_and_clear();
                return Err(err.into());
            }
        };
        // Every reader read every acknowledged record (or failed above).
        records = latencies.len() as u64;
        e2e_latencies.extend(latencies);
    }
    ticker.abort();
    bar.finish_and_clear();
    Ok(Report {
        readers: args.readers,
        records,
        bytes: records * args.record_size as u64,
        append_time,
        read_time: started.elapsed(),
        appends,
        ack_latencies,
        e2e_latencies,
    })
}

/// The writer: submits batches through one append session and, beside it,
/// awaits the acknowledgements in order, checking each lands where the
/// run's records should. Returns the number of appends and their latencies.
async fn append(
    client: &Client,
    stream: &str,
    args: &BenchArgs,
    max_batch: usize,
    nonce: u64,
    started: Instant,
    progress: &Arc<Progress>,
) -> Result<(usize, Vec<Duration>), Failure> {
    let session = client.append_session(stream).await.map_err(fail)?;
    let (tickets_tx, mut tickets) = mpsc::unbounded_channel::<(AppendTicket, Instant, u64)>();
    let acks_progress = progress.clone();
    let acks = tokio::spawn(async move {
        let mut latencies = Vec::new();
        let mut expected_start = None;
        while let Some((ticket, sent_at, count)) = tickets.recv().await {
            let ack = ticket.await.map_err(fail)?;
            latencies.push(sent_at.elapsed());
            // Acks come in order, each right after the one before.
            if expected_start.is_some_and(|start| start != ack.start)
                || ack.end.checked_sub(ack.start) != Some(count)
            {
                return Err(format!(
                    "an append of {count} records was acknowledged at {}..{}, expected at {}",
                    ack.start,
                    ack.end,
                    expected_start.unwrap_or(ack.start)
                )
                .into());
            }
            expected_start = Some(ack.end);
            acks_progress.acked.fetch_add(count, Ordering::Relaxed);
        }
        Ok::<_, Failure>(latencies)
    });

    let mut index = 0u64;
    let mut ticks = tokio::time::interval(Duration::from_millis(1));
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let mut failure = None;
    let max_records = args.max_records();
    while started.elapsed() < args.duration && index < max_records {
        let count = match args.rate {
            None => args.batch as u64,
            Some(rate) => {
                ticks.tick().await;
                // Never past what the duration allows: the tick that ends
                // the run may come a little after it.
                let elapsed = started.elapsed().min(args.duration);
                let due = (rate as f64 * elapsed.as_secs_f64()) as u64;
                due.saturating_sub(index).min(max_batch as u64)
            }
        };
        let count = count.min(max_records - index);
        if count == 0 {
            continue;
        }
        // End to end counts from here, queueing for the in-flight budget
        // included; the ack latency counts from when the append is sent.
        let sent_us = started.elapsed().as_micros() as u64;
        let records = (index..index + count)
            .map(|i| AppendRecord::new(body(nonce, i, sent_us, args.record_size)))
            .collect();
        match session.submit(records, AppendOptions::default()).await {
            Ok(ticket) => {
                if tickets_tx.send((ticket, Instant::now(), count)).is_err() {
                    break;
                }
            }
            Err(err) => {
                failure = Some(fail(err));
                break;
            }
        }
        index += count;
        progress.sent.store(index, Ordering::Relaxed);
    }
    drop(tickets_tx);
    let latencies = acks
        .await
        .map_err(|e| format!("the ack task failed: {e}"))??;
    session.close().await.map_err(fail)?;
    if let Some(err) = failure {
        return Err(err);
    }
    Ok((latencies.len(), latencies))
}

/// The reader: follows the stream from where the run starts until it has
/// read every record the writer sent, checking each. Returns the
/// end-to-end latency of every record.
#[allow(clippy::too_many_arguments)]
async fn read_back(
    client: Client,
    stream: String,
    first_seq_num: u64,
    nonce: u64,
    (record_size, every_byte): (usize, bool),
    started: Instant,
    mut total: watch::Receiver<Option<u64>>,
    progress: Arc<Progress>,
) -> Result<Vec<Duration>, String> {
    // The follower runs on its own, so waiting here for the end of the run
    // never cancels a read half way.
    let (records_tx, mut records) = mpsc::channel::<Result<StreamRecord, String>>(1024);
    let follower = tokio::spawn(async move {
        let mut live = client.follow(&stream, ReadStart::SeqNum(first_seq_num));
        loop {
            let record = live.next().await.map_err(|e| fail(e).message);
            let failed = record.is_err();
            if records_tx.send(record).await.is_err() || failed {
                return;
            }
        }
    });
    let _stop_follower = AbortOnDrop(follower);
    let mut latencies = Vec::new();
    let mut deadline = None;
    loop {
        let read = latencies.len() as u64;
        if let Some(total) = *total.borrow() {
            if read >= total {
                return Ok(latencies);
            }
            let deadline = *deadline.get_or_insert(Instant::now() + CATCH_UP_LIMIT);
            if Instant::now() > deadline {
                return Err(format!(
                    "read back only {read} of {total} records within {CATCH_UP_LIMIT:?}"
                ));
            }
        }
        let record = tokio::select! {
            record = records.recv() => match record {
                Some(record) => record?,
                None => return Err("the follower stopped".into()),
            },
            // The writer finished: check whether everything is read.
            _ = total.changed() => continue,
            _ = tokio::time::sleep(Duration::from_secs(1)) => continue,
        };
        let sent_us = verify(&record, read, first_seq_num, nonce, record_size, every_byte)?;
        let now_us = started.elapsed().as_micros() as u64;
        latencies.push(Duration::from_micros(now_us.saturating_sub(sent_us)));
        progress.read.fetch_add(1, Ordering::Relaxed);
    }
}

/// Stops a task when dropped.
struct AbortOnDrop<T>(tokio::task::JoinHandle<T>);

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

fn progress_bar(duration: Duration) -> ProgressBar {
    let bar = ProgressBar::new(duration.as_millis() as u64);
    // The template is fixed and valid; fall back to the default if not.
    if let Ok(style) = ProgressStyle::with_template("{bar:30.cyan/blue} {elapsed:>4} {msg}") {
        bar.set_style(style.progress_chars("=> "));
    }
    bar
}

async fn show_progress(bar: ProgressBar, progress: Arc<Progress>, started: Instant) {
    let mut ticks = tokio::time::interval(Duration::from_millis(200));
    loop {
        ticks.tick().await;
        let elapsed = started.elapsed();
        let acked = progress.acked.load(Ordering::Relaxed);
        bar.set_position(elapsed.as_millis() as u64);
        bar.set_message(format!(
            "sent {}  acked {}  read {}  ({:.0} rec/s)",
            progress.sent.load(Ordering::Relaxed),
            acked,
            progress.read.load(Ordering::Relaxed),
            acked as f64 / elapsed.as_secs_f64().max(0.001)
        ));
    }
}

impl Report {
    fn print(
        &self,
        stream: &str,
        deleted: bool,
        json_out: bool,
        out: &mut impl Write,
    ) -> Result<(), Failure> {
        let mib = self.bytes as f64 / (1024.0 * 1024.0);
        let rate = |time: Duration| self.records as f64 / time.as_secs_f64().max(0.001);
        let mib_rate = |time: Duration| mib / time.as_secs_f64().max(0.001);
        let ack = Percentiles::of(&self.ack_latencies);
        let e2e = Percentiles::of(&self.e2e_latencies);
        if json_out {
            return line(
                out,
                json!({
                    "stream": stream,
                    "stream_deleted": deleted,
                    "records": self.records,
                    "bytes": self.bytes,
                    "appends": self.appends,
                    "append_secs": self.append_time.as_secs_f64(),
                    "append_records_per_sec": rate(self.append_time),
                    "append_mib_per_sec": mib_rate(self.append_time),
                    "readers": self.readers,
                    "read_secs": self.read_time.as_secs_f64(),
                    "delivered_mib_per_sec": mib_rate(self.read_time) * self.readers as f64,
                    "verified": true,
                    "ack_latency_ms": ack.json(),
                    "end_to_end_latency_ms": e2e.json(),
                }),
            );
        }
        let kept = if deleted {
            "deleted afterwards: the server gives its disk space back within seconds"
        } else {
            "kept"
        };
        line(out, format!("stream       {stream} ({kept})"))?;
        line(
            out,
            format!(
                "appended     {} records ({mib:.1} MiB) in {:.2} s: {:.0} rec/s, {:.2} MiB/s, {} appends",
                self.records,
                self.append_time.as_secs_f64(),
                rate(self.append_time),
                mib_rate(self.append_time),
                self.appends,
            ),
        )?;
        let by = match self.readers {
            1 => String::new(),
            n => format!(
                " by each of {n} readers ({:.2} MiB/s delivered)",
                mib_rate(self.read_time) * n as f64
            ),
        };
        line(
            out,
            format!(
                "read back    {} records{by}, every one verified (order, seq num, bytes), {:.2} s after the start",
                self.records,
                self.read_time.as_secs_f64()
            ),
        )?;
        line(out, format!("ack latency  {} (per append)", ack.text()))?;
        line(out, format!("end to end   {} (per record)", e2e.text()))
    }
}
