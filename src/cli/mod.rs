//! The client commands of the `rill` command line: thin wrappers over
//! `rill-client` that print tables or one record per line for people,
//! JSON with `--json` for scripts, and fail with one clear line and a
//! non-zero exit code.
//!
//! One file per group of commands: `admin` (basins, streams, collections,
//! consumers), `streams` (append, read, tail, check-tail), `collections`
//! (put, get, delete, updated), `consume`, `bench`; `output` holds the
//! formatting they share.

mod admin;
mod bench;
mod bench_collection;
mod bench_records;
mod bench_spread;
mod bench_stats;
mod collections;
mod consume;
mod help;
mod output;
mod streams;

use std::path::PathBuf;

use clap::{Args, Subcommand};
use rill_client::{AppendOptions, Client, Kind};

pub use help::{describe, EXIT_CODES};
pub use output::{print_all, Failure};

use output::{fail, line, BodyFormat};

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
    #[arg(long, env = "RILL_TOKEN", global = true, hide_env_values = true)]
    token: Option<String>,
    /// Also trust the CA certificates in this PEM file (for an https://
    /// endpoint whose certificate a private CA signed).
    #[arg(long, env = "RILL_CA_CERT", value_name = "FILE", global = true)]
    ca_cert: Option<std::path::PathBuf>,
    /// Print JSON instead of text.
    #[arg(long, global = true)]
    json: bool,
}

#[derive(Subcommand, Debug)]
pub enum ClientCommand {
    /// Manage basins.
    #[command(subcommand, arg_required_else_help = true)]
    Basins(admin::Admin),
    /// Manage streams.
    #[command(subcommand, arg_required_else_help = true)]
    Streams(admin::Admin),
    /// Manage collections.
    #[command(subcommand, arg_required_else_help = true)]
    Collections(admin::Admin),
    /// Manage consumers.
    #[command(subcommand, arg_required_else_help = true)]
    Consumers(admin::Admin),
    /// Manage sinks.
    #[command(subcommand, arg_required_else_help = true)]
    Sinks(admin::Admin),
    /// Manage sources.
    #[command(subcommand, arg_required_else_help = true)]
    Sources(admin::Admin),
    /// Receive messages from a consumer, print them (one JSON object per
    /// line) or pipe each to a command, and ack them.
    Consume {
        /// The consumer to receive from.
        consumer: String,
        /// Stop after handling this many messages, acked or failed, and say
        /// how many of each (default: run until interrupted).
        #[arg(long)]
        count: Option<u64>,
        /// Messages to receive at a time.
        #[arg(long, default_value_t = 100)]
        batch: usize,
        /// Run this shell command for each message, with the message's JSON
        /// on its stdin: ack if it exits 0, nack (redeliver) if not.
        #[arg(long, value_name = "COMMAND")]
        exec: Option<String>,
        /// With --exec: how long a failed message waits before redelivery.
        #[arg(long, default_value_t = 1000, value_name = "MS")]
        retry_delay_ms: u64,
    },
    /// Deliver a consumer's dead letters again: each (by its seq num in the
    /// consumer's dead-letter stream) becomes pending, with fresh attempts.
    Replay {
        /// The consumer whose dead letters to replay.
        consumer: String,
        /// Seq nums in its dead-letter stream.
        #[arg(required = true, value_name = "SEQ_NUM")]
        dead_letters: Vec<u64>,
    },
    /// Append one record per line of stdin (or of --file), in order,
    /// pipelined.
    Append {
        /// The stream to append to.
        stream: String,
        /// Read lines from this file instead of stdin.
        #[arg(long)]
        file: Option<PathBuf>,
        /// How each line is read: as the body itself, or base64 of it.
        #[arg(long, value_enum, default_value_t)]
        format: BodyFormat,
        /// Fail unless the first record gets this seq num (and the rest
        /// follow it).
        #[arg(long)]
        match_seq_num: Option<u64>,
        /// The stream's fencing token.
        #[arg(long)]
        fencing_token: Option<String>,
    },
    /// Print records, one body per line: from a seq num (default 0), a
    /// timestamp or an offset back from the tail, until a count, a number of
    /// bytes or a timestamp.
    Read(streams::ReadArgs),
    /// Print the last records of a stream; with -f, keep following it.
    Tail(streams::TailArgs),
    /// Print the stream's next seq num.
    CheckTail {
        /// The stream whose tail to print.
        stream: String,
    },
    /// Upsert a collection record from JSON.
    Put {
        /// The collection to write to.
        collection: String,
        /// The record's key.
        id: String,
        /// The record's data, a JSON object.
        #[arg(value_name = "JSON")]
        data: String,
    },
    /// Print a collection record's latest version.
    Get {
        /// The collection to read from.
        collection: String,
        /// The record's key.
        id: String,
    },
    /// Delete a collection record (it stays in the records stream as a
    /// tombstone until the collection's tombstone retention has passed).
    Delete {
        /// The collection to delete from.
        collection: String,
        /// The record's key.
        id: String,
    },
    /// Apply upserts and deletes to a collection as one atomic batch (all
    /// or none, at most 1000): one JSON object per line of stdin (or of
    /// --file), `{"id": "u1", "data": {...}}` or `{"id": "u1", "delete":
    /// true}`, either with `"expected_version": N`; print the records
    /// written.
    Write {
        /// The collection to write to.
        collection: String,
        /// Read the lines from this file instead of stdin.
        #[arg(long)]
        file: Option<PathBuf>,
    },
    /// Print the records changed after a position (by default, all), one
    /// per line, then the cursor to resume with (on stderr); with -f, keep
    /// following.
    Updated(collections::UpdatedArgs),
    /// Print a collection's change events (created, updated, deleted: one
    /// line each), from its events stream; with -f, keep following it.
    Events(collections::EventsArgs),
    /// Append at a target rate or flat out while reading live; print
    /// throughput and ack and end-to-end latency, and check that every
    /// record read back is the one written.
    Bench(bench::BenchArgs),
}

pub async fn run(connection: Connection, command: ClientCommand) -> Result<(), Failure> {
    let mut client = match &connection.ca_cert {
        None => Client::new(&connection.endpoint),
        Some(path) => {
            let pem = std::fs::read(path)
                .map_err(|e| format!("cannot read --ca-cert {}: {e}", path.display()))?;
            Client::with_root_certificates(&connection.endpoint, &pem)
        }
    }
    .map_err(fail)?;
    // An empty basin (`RILL_BASIN=`) is no basin.
    if let Some(basin) = connection.basin.as_deref().filter(|b| !b.is_empty()) {
        client = client.with_basin(basin);
    }
    if let Some(token) = &connection.token {
        client = client.with_token(token);
    }
    let json_out = connection.json;
    let mut out = std::io::stdout().lock();
    let out = &mut out;
    match command {
        ClientCommand::Basins(cmd) => admin::run(&client, Kind::Basin, cmd, json_out, out).await,
        ClientCommand::Streams(cmd) => admin::run(&client, Kind::Stream, cmd, json_out, out).await,
        ClientCommand::Collections(cmd) => {
            admin::run(&client, Kind::Collection, cmd, json_out, out).await
        }
        ClientCommand::Consumers(cmd) => {
            admin::run(&client, Kind::Consumer, cmd, json_out, out).await
        }
        ClientCommand::Sinks(cmd) => admin::run(&client, Kind::Sink, cmd, json_out, out).await,
        ClientCommand::Sources(cmd) => admin::run(&client, Kind::Source, cmd, json_out, out).await,
        ClientCommand::Consume {
            consumer,
            count,
            batch,
            exec,
            retry_delay_ms,
        } => consume::run(&client, &consumer, count, batch, exec, retry_delay_ms, out).await,
        ClientCommand::Append {
            stream,
            file,
            format,
            match_seq_num,
            fencing_token,
        } => {
            let options = AppendOptions {
                match_seq_num,
                fencing_token,
            };
            streams::append(&client, &stream, file, format, options, json_out, out).await
        }
        ClientCommand::Read(args) => streams::read(&client, args, json_out, out).await,
        ClientCommand::Tail(args) => streams::tail(&client, args, json_out, out).await,
        ClientCommand::Replay {
            consumer,
            dead_letters,
        } => consume::replay(&client, &consumer, &dead_letters, json_out, out).await,
        ClientCommand::CheckTail { stream } => {
            let tail = client.check_tail(&stream).await.map_err(fail)?;
            if json_out {
                line(out, serde_json::json!({ "seq_num": tail }))
            } else {
                line(out, tail)
            }
        }
        ClientCommand::Put {
            collection,
            id,
            data,
        } => collections::put(&client, &collection, &id, &data, json_out, out).await,
        ClientCommand::Get { collection, id } => {
            collections::get(&client, &collection, &id, json_out, out).await
        }
        ClientCommand::Delete { collection, id } => {
            collections::delete(&client, &collection, &id, json_out, out).await
        }
        ClientCommand::Updated(args) => {
            let (collection, from, follow, filter) = args.into_parts();
            collections::updated(&client, &collection, from, follow, filter, json_out, out).await
        }
        ClientCommand::Write { collection, file } => {
            let input: Box<dyn std::io::BufRead> = match file {
                Some(path) => Box::new(std::io::BufReader::new(
                    std::fs::File::open(&path)
                        .map_err(|e| format!("cannot open {}: {e}", path.display()))?,
                )),
                None => Box::new(std::io::stdin().lock()),
            };
            collections::write(&client, &collection, input, json_out, out).await
        }
        ClientCommand::Events(args) => collections::events(&client, args, json_out, out).await,
        ClientCommand::Bench(args) => bench::run(&client, args, json_out, out).await,
    }
}
