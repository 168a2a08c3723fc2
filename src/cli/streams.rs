//! `rill append`, `read`, `tail` and `check-tail`.

use std::io::{BufRead, Write};
use std::path::PathBuf;

use rill_client::{AppendOptions, AppendRecord, Client, ReadOptions, ReadStart, StreamRecord};
use serde_json::json;
use tokio::sync::mpsc;

use super::fail;
use super::output::{line, BodyFormat};

/// The most records, and metered bytes, one append may carry.
const MAX_BATCH_RECORDS: usize = 1000;
const MAX_BATCH_BYTES: usize = 1024 * 1024;

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
) -> Result<(), String> {
    let mut lines = read_lines(file)?;
    let session = client.append_session(stream).await.map_err(fail)?;
    // Acks are awaited in order beside the sending, so a failure stops the
    // input early rather than at its end.
    let (tickets, mut pending) = mpsc::unbounded_channel::<rill_client::AppendTicket>();
    let acks = tokio::spawn(async move {
        let (mut first, mut last) = (None, None);
        while let Some(ticket) = pending.recv().await {
            let ack = ticket.await?;
            first.get_or_insert(ack.start);
            last = Some(ack.end);
        }
        Ok::<_, rill_client::Error>((first, last))
    });

    let mut carried: Option<AppendRecord> = None;
    let mut input_error = None;
    let mut submit_error = None;
    'input: loop {
        let mut batch = Vec::new();
        let mut size = 0;
        if let Some(record) = carried.take() {
            size += record.metered_size();
            batch.push(record);
        }
        while batch.len() < MAX_BATCH_RECORDS {
            // Wait for the first line of a batch; take the rest only if
            // they are already there.
            let next = if batch.is_empty() {
                lines.recv().await
            } else {
                lines.try_recv().ok()
            };
            let Some(next) = next else { break };
            let record = match next.and_then(|text| format.decode_line(&text)) {
                Ok(body) => AppendRecord::new(body),
                Err(err) => {
                    input_error = Some(err);
                    break;
                }
            };
            if size + record.metered_size() > MAX_BATCH_BYTES && !batch.is_empty() {
                carried = Some(record);
                break;
            }
            size += record.metered_size();
            batch.push(record);
        }
        if batch.is_empty() {
            break 'input;
        }
        let count = batch.len() as u64;
        let ticket = match session.submit(batch, options.clone()).await {
            Ok(ticket) => ticket,
            // The session ended: the acks say why, or else this does.
            Err(err) => {
                submit_error = Some(err);
                break 'input;
            }
        };
        options.match_seq_num = options.match_seq_num.map(|n| n + count);
        if tickets.send(ticket).is_err() || input_error.is_some() {
            break 'input;
        }
    }
    drop(tickets);
    let acked = acks
        .await
        .map_err(|e| format!("the append task failed: {e}"))?;
    let closed = session.close().await;
    let (first, last) = acked.map_err(fail)?;
    closed.map_err(fail)?;
    if let Some(err) = submit_error {
        return Err(fail(err));
    }
    if let Some(err) = input_error {
        return Err(format!("stopped at a bad input line: {err}"));
    }
    let (start, end) = (first.unwrap_or(0), last.unwrap_or(0));
    if json_out {
        line(out, json!({ "start": start, "end": end }))
    } else {
        line(
            out,
            format!("appended {} records: seq nums {start}..{end}", end - start),
        )
    }
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
    let (tx, rx) = mpsc::channel(4 * MAX_BATCH_RECORDS);
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

/// Reads page after page from `options.start` until a limit is reached
/// (or, with `follow`, forever), printing each record.
pub async fn print_records(
    client: &Client,
    stream: &str,
    mut options: ReadOptions,
    follow: bool,
    format: BodyFormat,
    json_out: bool,
    out: &mut impl Write,
) -> Result<(), String> {
    loop {
        if options.count == Some(0) {
            return Ok(());
        }
        options.wait_secs = if follow { 30 } else { 0 };
        let records = client.read_with(stream, &options).await.map_err(fail)?;
        let Some(last) = records.last() else {
            if follow {
                continue;
            }
            return Ok(());
        };
        options.start = ReadStart::SeqNum(last.seq_num + 1);
        options.count = options.count.map(|c| c - records.len() as u64);
        let used: u64 = records.iter().map(StreamRecord::metered_size).sum();
        options.bytes = options.bytes.map(|b| b.saturating_sub(used));
        for record in &records {
            print_record(out, record, format, json_out)?;
        }
        let _ = out.flush();
        if options.bytes == Some(0) {
            return Ok(());
        }
    }
}

/// Text: the body alone. JSON: seq num, timestamp, headers and body.
fn print_record(
    out: &mut impl Write,
    r: &StreamRecord,
    format: BodyFormat,
    json_out: bool,
) -> Result<(), String> {
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
