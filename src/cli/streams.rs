//! `rill append`, `read`, `tail` and `check-tail`.

use std::io::{BufRead, Write};
use std::path::PathBuf;

use rill_client::{
    AppendOptions, AppendRecord, Client, ReadOptions, ReadStart, StreamRecord, MAX_APPEND_BYTES,
    MAX_APPEND_RECORDS,
};
use serde_json::json;
use tokio::sync::mpsc;

use super::output::{fail, line, BodyFormat, Failure};

/// Appends one record per input line through a pipelined session: lines are
/// batched as they come (a batch is sent as soon as no more input is
/// waiting, so a slow producer's lines are not held back), and every batch
/// is atomic. With `match_seq_num`, the whole input must land at that seq
/// num and on, contiguous.
pub async fn append(
    client: &Client,
    stream: &str,
    file: Option<PathBuf>,
    format: BodyFormat,
    mut options: AppendOptions,
    json_out: bool,
    out: &mut impl Write,
) -> Result<(), Failure> {
    let lines = read_lines(file)?;
    let session = client.append_session(stream).await.map_err(fail)?;
    // Acks are awaited in order beside the sending, so a failure stops the
    // input early rather than at its end.
    let (tickets, mut pending) = mpsc::unbounded_channel::<rill_client::AppendTicket>();
    let acks = tokio::spawn(async move {
        let mut done = Appended::default();
        while let Some(ticket) = pending.recv().await {
            match ticket.await {
                Ok(ack) => {
                    done.first.get_or_insert(ack.start);
                    done.last = ack.end;
                    done.records += ack.end.saturating_sub(ack.start);
                }
                Err(err) => return (done, Some(err)),
            }
        }
        (done, None)
    });

    let mut batcher = Batcher {
        lines,
        format,
        carried: None,
        line_number: 0,
    };
    let mut input_error: Option<String>;
    let mut submit_error = None;
    loop {
        let (batch, bad_line) = batcher.next(&tickets).await;
        input_error = bad_line;
        if batch.is_empty() {
            break;
        }
        let count = batch.len() as u64;
        let ticket = match session.submit(batch, options.clone()).await {
            Ok(ticket) => ticket,
            // The session ended: the acks say why, or else this does.
            Err(err) => {
                submit_error = Some(err);
                break;
            }
        };
        options.match_seq_num = options.match_seq_num.map(|n| n + count);
        if tickets.send(ticket).is_err() || input_error.is_some() {
            break;
        }
    }
    drop(tickets);
    let (done, ack_error) = acks
        .await
        .map_err(|e| format!("the append task failed: {e}"))?;
    let closed = session.close().await.err();
    // The first failure is the cause; say how far the input got before it.
    let failure = ack_error
        .or(closed)
        .or(submit_error)
        .map(fail)
        .or(input_error.map(|err| format!("stopped at a bad input: {err}").into()));
    report(done, failure, json_out, out)
}

/// What `rill append` prints: how much landed, and on failure the cause
/// with how far the input got before it.
fn report(
    done: Appended,
    failure: Option<Failure>,
    json_out: bool,
    out: &mut impl Write,
) -> Result<(), Failure> {
    if let Some(mut failure) = failure {
        failure.message = match done.first {
            Some(first) => format!(
                "{} (appended {} before it)",
                failure.message,
                records_at(done.records, first, done.last)
            ),
            None => format!("{} (nothing appended)", failure.message),
        };
        return Err(failure);
    }
    match (done.first, json_out) {
        (Some(start), true) => line(
            out,
            json!({ "records": done.records, "start": start, "end": done.last }),
        ),
        (Some(start), false) => line(
            out,
            format!("appended {}", records_at(done.records, start, done.last)),
        ),
        (None, true) => line(out, json!({ "records": 0, "start": null, "end": null })),
        (None, false) => line(out, "nothing appended: the input had no lines"),
    }
}

/// `3 records, seq nums 4 to 6`: `count` records from `start` up to `end`
/// (exclusive).
fn records_at(count: u64, start: u64, end: u64) -> String {
    match count {
        1 => format!("1 record, seq num {start}"),
        _ => format!("{count} records, seq nums {start} to {}", end - 1),
    }
}

/// Input lines made into batches of records, each within S2's limits.
struct Batcher {
    lines: mpsc::Receiver<Result<Vec<u8>, String>>,
    format: BodyFormat,
    /// A record that did not fit in the last batch: the next one starts
    /// with it.
    carried: Option<AppendRecord>,
    line_number: u64,
}

impl Batcher {
    /// The next batch: waits for its first line, then takes only lines
    /// already there. Empty at the end of the input, or when the session
    /// ends while waiting (the acks task holding `tickets` stops at the
    /// first failure: a slow producer should hear of it now, not at its
    /// next line). A bad line ends the batch before it and is returned.
    async fn next(
        &mut self,
        tickets: &mpsc::UnboundedSender<rill_client::AppendTicket>,
    ) -> (Vec<AppendRecord>, Option<String>) {
        let mut batch = Vec::new();
        let mut size = 0;
        if let Some(record) = self.carried.take() {
            size += record.metered_size();
            batch.push(record);
        }
        while batch.len() < MAX_APPEND_RECORDS {
            let next = if batch.is_empty() {
                tokio::select! {
                    line = self.lines.recv() => line,
                    () = tickets.closed() => None,
                }
            } else {
                self.lines.try_recv().ok()
            };
            let Some(next) = next else { break };
            self.line_number += 1;
            let line_number = self.line_number;
            let record = match next.and_then(|text| self.format.decode_line(&text)) {
                Ok(body) if body.len() + 8 > MAX_APPEND_BYTES => {
                    let error = format!(
                        "line {line_number} is {} bytes; a record may be at most {}",
                        body.len(),
                        MAX_APPEND_BYTES - 8
                    );
                    return (batch, Some(error));
                }
                Ok(body) => AppendRecord::new(body),
                Err(err) => return (batch, Some(format!("line {line_number}: {err}"))),
            };
            if size + record.metered_size() > MAX_APPEND_BYTES && !batch.is_empty() {
                self.carried = Some(record);
                break;
            }
            size += record.metered_size();
            batch.push(record);
        }
        (batch, None)
    }
}

/// What the acknowledgements of an input's appends say.
#[derive(Default)]
struct Appended {
    /// The first record's seq num.
    first: Option<u64>,
    /// After the last record.
    last: u64,
    /// Records appended (fewer than `last - first` if another writer
    /// appended between two of ours).
    records: u64,
}

impl BodyFormat {
    /// A line of input (without its line ending) as a record body.
    fn decode_line(self, line: &[u8]) -> Result<Vec<u8>, String> {
        match self {
            BodyFormat::Text => Ok(line.to_vec()),
            BodyFormat::Base64 => self.decode(&String::from_utf8_lossy(line)),
        }
    }
}

/// The lines of `file` (or stdin), read on their own thread as they come.
/// Lines are bytes: text need not be UTF-8.
fn read_lines(file: Option<PathBuf>) -> Result<mpsc::Receiver<Result<Vec<u8>, String>>, String> {
    let input: Box<dyn BufRead + Send> = match file {
        Some(path) => Box::new(std::io::BufReader::new(
            std::fs::File::open(&path)
                .map_err(|e| format!("cannot read {}: {e}", path.display()))?,
        )),
        None => Box::new(std::io::BufReader::new(std::io::stdin())),
    };
    let (tx, rx) = mpsc::channel(4 * MAX_APPEND_RECORDS);
    std::thread::spawn(move || {
        let mut input = input;
        loop {
            let mut line = Vec::new();
            match input.read_until(b'\n', &mut line) {
                Ok(0) => return,
                Ok(_) => {
                    if line.last() == Some(&b'\n') {
                        line.pop();
                        if line.last() == Some(&b'\r') {
                            line.pop();
                        }
                    }
                    if tx.blocking_send(Ok(line)).is_err() {
                        return;
                    }
                }
                Err(err) => {
                    let _ = tx.blocking_send(Err(format!("cannot read input: {err}")));
                    return;
                }
            }
        }
    });
    Ok(rx)
}

/// `rill read`.
#[derive(clap::Args, Debug)]
pub struct ReadArgs {
    /// The stream to read.
    pub stream: String,
    /// Start at this seq num (the default: 0, the first record kept).
    #[arg(long, conflicts_with_all = ["timestamp", "tail_offset"])]
    pub seq_num: Option<u64>,
    /// Start at the first record at or after this time (epoch ms).
    #[arg(long, conflicts_with = "tail_offset")]
    pub timestamp: Option<u64>,
    /// Start this many records before the tail.
    #[arg(long)]
    pub tail_offset: Option<u64>,
    /// Stop after this many records.
    #[arg(long)]
    pub count: Option<u64>,
    /// Stop once this many bytes were read (as S2 meters records: body,
    /// headers and 8 bytes each).
    #[arg(long)]
    pub bytes: Option<u64>,
    /// Stop before records with timestamps at or after this (epoch ms).
    #[arg(long)]
    pub until: Option<u64>,
    /// How bodies are printed: as text, or base64 (for binary data).
    #[arg(long, value_enum, default_value_t)]
    pub format: BodyFormat,
}

/// `rill tail`.
#[derive(clap::Args, Debug)]
pub struct TailArgs {
    /// The stream to print the end of.
    pub stream: String,
    /// How many of the last records to print.
    #[arg(short = 'n', long, default_value_t = 10)]
    pub lines: u64,
    /// Then keep printing records as they are appended, until interrupted.
    #[arg(short, long)]
    pub follow: bool,
    /// How bodies are printed: as text, or base64 (for binary data).
    #[arg(long, value_enum, default_value_t)]
    pub format: BodyFormat,
}

/// `rill read`: from a seq num (default 0), a timestamp or an offset back
/// from the tail.
pub async fn read(
    client: &Client,
    args: ReadArgs,
    json_out: bool,
    out: &mut impl Write,
) -> Result<(), Failure> {
    let start = match (args.seq_num, args.timestamp, args.tail_offset) {
        (_, Some(t), _) => ReadStart::Timestamp(t),
        (_, _, Some(n)) => ReadStart::TailOffset(n),
        (n, _, _) => ReadStart::SeqNum(n.unwrap_or(0)),
    };
    let options = ReadOptions {
        start,
        count: args.count,
        bytes: args.bytes,
        until: args.until,
        wait_secs: 0,
    };
    let printed = print_records(client, &args.stream, options, args.format, json_out, out).await?;
    if let (0, Some(seq_num @ 1..)) = (printed, args.seq_num) {
        // The server clamps a start past the tail to the tail (as S2
        // does); nothing printed may mean the start was wrong. (A token
        // may allow reads but not `check-tail`: then nothing is said.)
        let tail = client.check_tail(&args.stream).await.unwrap_or(u64::MAX);
        if seq_num > tail {
            return Err(Failure::not_found(format!(
                "seq num {seq_num} is past the tail of `{}`: its next seq num is {tail}",
                args.stream
            )));
        }
    }
    Ok(())
}

/// `rill tail`: the last records, then with `-f` everything after.
pub async fn tail(
    client: &Client,
    args: TailArgs,
    json_out: bool,
    out: &mut impl Write,
) -> Result<(), Failure> {
    let start = ReadStart::TailOffset(args.lines);
    if args.follow {
        return follow_records(client, &args.stream, start, args.format, json_out, out).await;
    }
    let options = ReadOptions {
        start,
        count: Some(args.lines),
        bytes: None,
        until: None,
        wait_secs: 0,
    };
    print_records(client, &args.stream, options, args.format, json_out, out).await?;
    Ok(())
}

/// Reads page after page from `options.start` until a limit is reached or
/// the tail, printing each record; returns how many it printed.
pub async fn print_records(
    client: &Client,
    stream: &str,
    mut options: ReadOptions,
    format: BodyFormat,
    json_out: bool,
    out: &mut impl Write,
) -> Result<u64, Failure> {
    let mut printed = 0;
    loop {
        if options.count == Some(0) {
            return Ok(printed);
        }
        let records = client.read_with(stream, &options).await.map_err(fail)?;
        let Some(last) = records.last() else {
            return Ok(printed);
        };
        printed += records.len() as u64;
        options.start = ReadStart::SeqNum(last.seq_num + 1);
        options.count = options
            .count
            .map(|c| c.saturating_sub(records.len() as u64));
        let used: u64 = records.iter().map(StreamRecord::metered_size).sum();
        options.bytes = options.bytes.map(|b| b.saturating_sub(used));
        for record in &records {
            print_record(out, record, format, json_out)?;
        }
        let _ = out.flush();
        if options.bytes == Some(0) {
            return Ok(printed);
        }
    }
}

/// Prints every record from `start` on, waiting for new ones, until
/// interrupted (`tail -f`). The follower reconnects by itself and resumes
/// at the next seq num.
pub async fn follow_records(
    client: &Client,
    stream: &str,
    start: ReadStart,
    format: BodyFormat,
    json_out: bool,
    out: &mut impl Write,
) -> Result<(), Failure> {
    let mut live = client.follow(stream, start);
    loop {
        let record = live.next().await.map_err(fail)?;
        print_record(out, &record, format, json_out)?;
        let _ = out.flush();
    }
}

/// Text: the body alone. JSON: seq num, timestamp, headers and body.
fn print_record(
    out: &mut impl Write,
    r: &StreamRecord,
    format: BodyFormat,
    json_out: bool,
) -> Result<(), Failure> {
    if json_out {
        let headers: Vec<[String; 2]> = r
            .headers
            .iter()
            .map(|(name, value)| [format.encode(name), format.encode(value)])
            .collect();
        line(
            out,
            json!({
                "seq_num": r.seq_num, "timestamp": r.timestamp,
                "headers": headers, "body": format.encode(&r.body),
            }),
        )
    } else {
        line(out, format.encode(&r.body))
    }
}
