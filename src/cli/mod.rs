//! The data commands of the `rill` command line: thin wrappers over
//! `rill-client` that print one record per line (or JSON with `--json`)
//! and fail with one clear line and a non-zero exit code.

use std::io::{BufRead, Write};

use clap::{Args, Subcommand};
use rill_client::{Client, Kind, ReadOptions, ReadStart};
use serde_json::{json, Value};

/// Where to connect; flags or environment variables.
#[derive(Args, Clone, Debug)]
pub struct Connection {
    /// The server to talk to.
    #[arg(
        long,
        env = "RILL_ENDPOINT",
        default_value = "http://127.0.0.1:8080",
        global = true
    )]
    endpoint: String,
    /// The basin to address.
    #[arg(long, env = "RILL_BASIN", global = true)]
    basin: Option<String>,
    /// A bearer token to send.
    #[arg(long, env = "RILL_TOKEN", global = true)]
    token: Option<String>,
    /// Print JSON instead of text.
    #[arg(long, global = true)]
    json: bool,
}

/// What to do with basins, streams, collections or consumers.
#[derive(Subcommand, Debug)]
pub enum Admin {
    /// List the names.
    List,
    /// Print one as JSON (config, and state for consumers).
    Get {
        name: String,
    },
    /// Create it, or check it exists; `--config` is the JSON body of its
    /// `PUT` (required for consumers).
    Create {
        name: String,
        #[arg(long)]
        config: Option<String>,
    },
    Delete {
        name: String,
    },
}

#[derive(Subcommand, Debug)]
pub enum DataCommand {
    /// Manage basins.
    #[command(subcommand)]
    Basins(Admin),
    /// Manage streams.
    #[command(subcommand)]
    Streams(Admin),
    /// Manage collections.
    #[command(subcommand)]
    Collections(Admin),
    /// Manage consumers.
    #[command(subcommand)]
    Consumers(Admin),
    /// Receive messages from a consumer, print them (one JSON per line)
    /// and ack them.
    Consume {
        consumer: String,
        /// Stop after this many messages (default: run until interrupted).
        #[arg(long)]
        count: Option<u64>,
        #[arg(long, default_value_t = 100)]
        batch: usize,
    },
    /// Append one record per line of stdin (or of --file).
    Append {
        stream: String,
        /// Read lines from this file instead of stdin.
        #[arg(long)]
        file: Option<std::path::PathBuf>,
    },
    /// Print records, one body per line: from a seq num (default 0), a
    /// timestamp or an offset back from the tail, until a count, a number of
    /// bytes or a timestamp.
    Read {
        stream: String,
        #[arg(long, conflicts_with_all = ["timestamp", "tail_offset"])]
        seq_num: Option<u64>,
        /// Start at the first record at or after this time (epoch ms).
        #[arg(long, conflicts_with = "tail_offset")]
        timestamp: Option<u64>,
        /// Start this many records before the tail.
        #[arg(long)]
        tail_offset: Option<u64>,
        #[arg(long)]
        count: Option<u64>,
        #[arg(long)]
        bytes: Option<u64>,
        /// Stop before records with timestamps at or after this (epoch ms).
        #[arg(long)]
        until: Option<u64>,
    },
    /// Print the last records of a stream; with -f, keep following it.
    Tail {
        stream: String,
        #[arg(short = 'n', long, default_value_t = 10)]
        lines: u64,
        #[arg(short, long)]
        follow: bool,
    },
    /// Print the stream's next seq num.
    CheckTail { stream: String },
    /// Upsert a collection record from JSON.
    Put {
        collection: String,
        id: String,
        /// The record's data, a JSON object.
        #[arg(value_name = "JSON")]
        data: String,
    },
    /// Print a collection record's latest version.
    Get { collection: String, id: String },
    /// Print the records changed after a cursor, then the cursor to resume
    /// with (on stderr, or in the JSON).
    Updated {
        collection: String,
        #[arg(long)]
        cursor: Option<String>,
    },
}

pub async fn run(connection: Connection, command: DataCommand) -> Result<(), String> {
    let mut client = Client::new(&connection.endpoint).map_err(|e| e.to_string())?;
    if let Some(basin) = &connection.basin {
        client = client.with_basin(basin);
    }
    if let Some(token) = &connection.token {
        client = client.with_token(token);
    }
    let json_out = connection.json;
    let mut out = std::io::stdout().lock();
    let fail = |e: rill_client::Error| e.to_string();
    match command {
        DataCommand::Basins(admin) => admin_command(&client, Kind::Basin, admin, &mut out).await?,
        DataCommand::Streams(admin) => {
            admin_command(&client, Kind::Stream, admin, &mut out).await?
        }
        DataCommand::Collections(admin) => {
            admin_command(&client, Kind::Collection, admin, &mut out).await?
        }
        DataCommand::Consumers(admin) => {
            admin_command(&client, Kind::Consumer, admin, &mut out).await?
        }
        DataCommand::Consume {
            consumer,
            count,
            batch,
        } => {
            let mut seen = 0u64;
            while count.is_none_or(|count| seen < count) {
                let want = count.map_or(batch as u64, |c| (c - seen).min(batch as u64));
                let mut failed = None;
                seen += client
                    .work(&consumer, want as usize, 20_000, |m| {
                        let line = json!({
                            "seq_num": m.seq_num, "cursor": m.cursor, "timestamp": m.timestamp,
                            "delivery_count": m.delivery_count, "record": m.record, "event": m.event,
                        });
                        match writeln!(out, "{line}") {
                            Ok(()) => rill_client::Outcome::Ack,
                            // Output closed: give the message back.
                            Err(err) => {
                                failed = Some(err.to_string());
                                rill_client::Outcome::Nack { delay_ms: 0 }
                            }
                        }
                    })
                    .await
                    .map_err(fail)? as u64;
                if let Some(err) = failed {
                    return Err(format!("cannot write output: {err}"));
                }
                let _ = out.flush();
            }
        }
        DataCommand::Append { stream, file } => {
            let lines: Vec<String> = match file {
                Some(path) => std::fs::read_to_string(&path)
                    .map_err(|e| format!("cannot read {}: {e}", path.display()))?
                    .lines()
                    .map(str::to_owned)
                    .collect(),
                None => std::io::stdin()
                    .lock()
                    .lines()
                    .collect::<Result<_, _>>()
                    .map_err(|e| format!("cannot read stdin: {e}"))?,
            };
            let mut first = None;
            let mut last = None;
            for chunk in lines.chunks(1000) {
                let ack = client.append(&stream, chunk).await.map_err(fail)?;
                first.get_or_insert(ack.start);
                last = Some(ack.end);
            }
            let (start, end) = (first.unwrap_or(0), last.unwrap_or(0));
            if json_out {
                writeln!(out, "{}", json!({ "start": start, "end": end }))
            } else {
                writeln!(
                    out,
                    "appended {} records: seq nums {start}..{end}",
                    end - start
                )
            }
            .map_err(|e| e.to_string())?;
        }
        DataCommand::Read {
            stream,
            seq_num,
            timestamp,
            tail_offset,
            count,
            bytes,
            until,
        } => {
            let start = match (seq_num, timestamp, tail_offset) {
                (_, Some(t), _) => ReadStart::Timestamp(t),
                (_, _, Some(n)) => ReadStart::TailOffset(n),
                (n, _, _) => ReadStart::SeqNum(n.unwrap_or(0)),
            };
            let options = ReadOptions {
                start,
                count,
                bytes,
                until,
                wait_secs: 0,
            };
            print_records(&client, &stream, options, false, json_out, &mut out).await?;
        }
        DataCommand::Tail {
            stream,
            lines,
            follow,
        } => {
            let options = ReadOptions {
                start: ReadStart::TailOffset(lines),
                count: (!follow).then_some(lines),
                bytes: None,
                until: None,
                wait_secs: 0,
            };
            print_records(&client, &stream, options, follow, json_out, &mut out).await?;
        }
        DataCommand::CheckTail { stream } => {
            let tail = client.check_tail(&stream).await.map_err(fail)?;
            if json_out {
                writeln!(out, "{}", json!({ "seq_num": tail }))
            } else {
                writeln!(out, "{tail}")
            }
            .map_err(|e| e.to_string())?;
        }
        DataCommand::Put {
            collection,
            id,
            data,
        } => {
            let data: Value =
                serde_json::from_str(&data).map_err(|e| format!("the record is not JSON: {e}"))?;
            let record = client.put(&collection, &id, &data).await.map_err(fail)?;
            print_record(&mut out, &record, json_out)?;
        }
        DataCommand::Get { collection, id } => {
            match client.get(&collection, &id).await.map_err(fail)? {
                Some(record) => print_record(&mut out, &record, json_out)?,
                None => return Err(format!("record `{id}` not found in `{collection}`")),
            }
        }
        DataCommand::Updated { collection, cursor } => {
            let mut updates = client.updates(&collection, cursor);
            let mut records = Vec::new();
            while let Some(record) = updates.next().await.map_err(fail)? {
                records.push(record);
            }
            let cursor = updates.cursor().unwrap_or_default().to_string();
            if json_out {
                let records: Vec<Value> = records.iter().map(record_json).collect();
                writeln!(out, "{}", json!({ "records": records, "cursor": cursor }))
                    .map_err(|e| e.to_string())?;
            } else {
                for record in &records {
                    print_record(&mut out, record, false)?;
                }
                eprintln!("cursor: {cursor}");
            }
        }
    }
    Ok(())
}

/// Reads page after page from `options.start` until a limit is reached
/// (or, with `follow`, forever), printing each record.
async fn print_records(
    client: &Client,
    stream: &str,
    mut options: ReadOptions,
    follow: bool,
    json_out: bool,
    out: &mut impl Write,
) -> Result<(), String> {
    loop {
        if options.count == Some(0) {
            return Ok(());
        }
        options.wait_secs = if follow { 30 } else { 0 };
        let records = client
            .read_with(stream, &options)
            .await
            .map_err(|e| e.to_string())?;
        let Some(last) = records.last() else {
            if follow {
                continue;
            }
            return Ok(());
        };
        options.start = ReadStart::SeqNum(last.seq_num + 1);
        options.count = options.count.map(|c| c - records.len() as u64);
        let used: u64 = records.iter().map(|r| r.metered_size()).sum();
        options.bytes = options.bytes.map(|b| b.saturating_sub(used));
        for r in &records {
            if json_out {
                let line = json!({ "seq_num": r.seq_num, "timestamp": r.timestamp, "headers": r.headers, "body": r.body });
                writeln!(out, "{line}")
            } else {
                writeln!(out, "{}", r.body)
            }
            .map_err(|e| e.to_string())?;
        }
        let _ = out.flush();
        if options.bytes == Some(0) {
            return Ok(());
        }
    }
}

async fn admin_command(
    client: &Client,
    kind: Kind,
    admin: Admin,
    out: &mut impl Write,
) -> Result<(), String> {
    let fail = |e: rill_client::Error| e.to_string();
    let line = match admin {
        Admin::List => {
            let names = client.list(kind).await.map_err(fail)?;
            if names.is_empty() {
                return Ok(());
            }
            names.join("\n")
        }
        Admin::Get { name } => client
            .describe(kind, &name)
            .await
            .map_err(fail)?
            .to_string(),
        Admin::Create { name, config } => {
            let config: Option<Value> = config
                .map(|c| serde_json::from_str(&c).map_err(|e| format!("--config is not JSON: {e}")))
                .transpose()?;
            client
                .create(kind, &name, config.as_ref())
                .await
                .map_err(fail)?
                .to_string()
        }
        Admin::Delete { name } => {
            client.delete_resource(kind, &name).await.map_err(fail)?;
            format!("deleted {name}")
        }
    };
    writeln!(out, "{line}").map_err(|e| e.to_string())
}

fn record_json(r: &rill_client::Record) -> Value {
    json!({
        "id": r.id, "data": r.data, "version": r.version, "created_at": r.created_at,
        "updated_at": r.updated_at, "deleted": r.deleted,
    })
}

/// Text: `id  version  data` (or `(deleted)`), one line.
fn print_record(
    out: &mut impl Write,
    r: &rill_client::Record,
    json_out: bool,
) -> Result<(), String> {
    if json_out {
        writeln!(out, "{}", record_json(r))
    } else if r.deleted {
        writeln!(out, "{}\tv{}\t(deleted)", r.id, r.version)
    } else {
        writeln!(out, "{}\tv{}\t{}", r.id, r.version, r.data)
    }
    .map_err(|e| e.to_string())
}
