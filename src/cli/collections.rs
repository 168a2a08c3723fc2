//! `rill put`, `get`, `delete`, `write`, `updated` and `events`:
//! collection records and what changed.

use std::io::Write;

use rill_client::{Batch, Client, Record};
use serde_json::{json, Value};

use super::output::{fail, line, Failure};

pub async fn put(
    client: &Client,
    collection: &str,
    id: &str,
    data: &str,
    json_out: bool,
    out: &mut impl Write,
) -> Result<(), Failure> {
    let data: Value =
        serde_json::from_str(data).map_err(|e| format!("the record is not JSON: {e}"))?;
    let record = client.put(collection, id, &data).await.map_err(fail)?;
    print_record(out, &record, json_out)
}

/// The most operations one batch may hold (the server's limit).
const MAX_BATCH: usize = 1000;

/// `rill write`: one JSON object per line of `input`, applied as one
/// atomic batch (all or none): `{"id": ID, "data": {...}}` upserts,
/// `{"id": ID, "delete": true}` deletes, either with `"expected_version":
/// N` to apply only at that version. Prints the records written.
pub async fn write(
    client: &Client,
    collection: &str,
    input: impl std::io::BufRead,
    json_out: bool,
    out: &mut impl Write,
) -> Result<(), Failure> {
    let mut batch = Batch::default();
    for (number, text) in input.lines().enumerate() {
        let text = text.map_err(|e| format!("cannot read the input: {e}"))?;
        if text.trim().is_empty() {
            continue;
        }
        let op: Value = serde_json::from_str(&text)
            .map_err(|e| format!("line {} is not JSON: {e}", number + 1))?;
        batch = add_operation(batch, &op).map_err(|why| format!("line {}: {why}", number + 1))?;
        if batch.len() > MAX_BATCH {
            return Err(format!("a batch holds at most {MAX_BATCH} operations").into());
        }
    }
    if batch.is_empty() {
        return line(out, "nothing written: the input had no lines");
    }
    let written = client.write_batch(collection, &batch).await.map_err(fail)?;
    for record in &written {
        print_record(out, record, json_out)?;
    }
    Ok(())
}

/// `batch` with the operation one input line describes.
fn add_operation(batch: Batch, op: &Value) -> Result<Batch, String> {
    let id = op["id"].as_str().ok_or("no \"id\" (a string)")?;
    let expected = match &op["expected_version"] {
        Value::Null => None,
        v => Some(v.as_u64().ok_or("\"expected_version\" is not a number")?),
    };
    let delete = op["delete"].as_bool().unwrap_or(false);
    match (delete, &op["data"], expected) {
        (true, Value::Null, None) => Ok(batch.delete(id)),
        (true, Value::Null, Some(version)) => Ok(batch.delete_if(id, version)),
        (true, _, _) => Err("a delete has no \"data\"".into()),
        (false, data @ Value::Object(_), None) => Ok(batch.upsert(id, data.clone())),
        (false, data @ Value::Object(_), Some(version)) => {
            Ok(batch.upsert_if(id, data.clone(), version))
        }
        (false, _, _) => Err("\"data\" must be a JSON object (or give \"delete\": true)".into()),
    }
}

pub async fn get(
    client: &Client,
    collection: &str,
    id: &str,
    json_out: bool,
    out: &mut impl Write,
) -> Result<(), Failure> {
    match client.get(collection, id).await.map_err(fail)? {
        Some(record) => print_record(out, &record, json_out),
        None => Err(Failure::not_found(format!(
            "record `{id}` not found in `{collection}`"
        ))),
    }
}

pub async fn delete(
    client: &Client,
    collection: &str,
    id: &str,
    json_out: bool,
    out: &mut impl Write,
) -> Result<(), Failure> {
    let record = client.delete(collection, id).await.map_err(fail)?;
    print_record(out, &record, json_out)
}

/// `rill updated`.
#[derive(clap::Args, Debug)]
pub struct UpdatedArgs {
    /// The collection whose changed records to print.
    pub collection: String,
    /// Resume from a cursor printed before.
    #[arg(long, conflicts_with_all = ["updated_after", "after_id"])]
    pub cursor: Option<String>,
    /// Records changed after this time (epoch ms or RFC 3339)…
    #[arg(long)]
    pub updated_after: Option<String>,
    /// …or at that time, with an id after this one.
    #[arg(long, requires = "updated_after")]
    pub after_id: Option<String>,
    /// Then keep waiting for changes (long polls) and print each, until
    /// interrupted; the cursor is printed after each page.
    #[arg(short, long)]
    pub follow: bool,
    /// Only records for which this holds: `plan=pro`, `seats>=10`,
    /// `plan in pro,team`, `exists(address.city)` (repeat: all must hold).
    #[arg(long = "where", value_name = "CONDITION")]
    pub conditions: Vec<String>,
    /// Only records whose id starts with this.
    #[arg(long)]
    pub id_prefix: Option<String>,
    /// Only records this filter object passes (JSON, as a consumer's
    /// `filter`), instead of --where and --id-prefix.
    #[arg(long, value_name = "JSON", conflicts_with_all = ["conditions", "id_prefix"])]
    pub filter: Option<String>,
}

impl UpdatedArgs {
    /// The collection, and where to start.
    /// The collection, where to start, whether to follow, and the filter.
    pub fn into_parts(self) -> (String, UpdatedFrom, bool, UpdatedFilter) {
        let from = match (self.cursor, self.updated_after) {
            (Some(cursor), _) => UpdatedFrom::Cursor(cursor),
            (None, Some(updated_after)) => UpdatedFrom::Pair {
                updated_after,
                after_id: self.after_id,
            },
            (None, None) => UpdatedFrom::Beginning,
        };
        let filter = UpdatedFilter {
            conditions: self.conditions,
            id_prefix: self.id_prefix,
            json: self.filter,
        };
        (self.collection, from, self.follow, filter)
    }
}

/// What `rill updated` keeps.
pub struct UpdatedFilter {
    conditions: Vec<String>,
    id_prefix: Option<String>,
    json: Option<String>,
}

impl UpdatedFilter {
    fn apply(self, mut updates: rill_client::Updates) -> Result<rill_client::Updates, Failure> {
        if let Some(json) = &self.json {
            let filter: Value =
                serde_json::from_str(json).map_err(|e| format!("--filter is not JSON: {e}"))?;
            updates = updates.filter(&filter);
        }
        if let Some(prefix) = &self.id_prefix {
            updates = updates.id_prefix(prefix);
        }
        for condition in &self.conditions {
            updates = updates.filter_where(condition);
        }
        Ok(updates)
    }
}

/// Where `rill updated` starts.
pub enum UpdatedFrom {
    Beginning,
    Cursor(String),
    Pair {
        updated_after: String,
        after_id: Option<String>,
    },
}

/// How long a `--follow` long poll waits for changes (the server's most).
const FOLLOW_WAIT_SECS: u32 = 60;

/// Prints every record changed after the start (one line each, text or
/// JSON), then the cursor to resume with, on stderr as `cursor: …` so
/// that stdout stays records only. With `follow`, goes on waiting.
pub async fn updated(
    client: &Client,
    collection: &str,
    from: UpdatedFrom,
    follow: bool,
    filter: UpdatedFilter,
    json_out: bool,
    out: &mut impl Write,
) -> Result<(), Failure> {
    let mut updates = match from {
        UpdatedFrom::Beginning => client.updates(collection, None),
        UpdatedFrom::Cursor(cursor) => client.updates(collection, Some(cursor)),
        UpdatedFrom::Pair {
            updated_after,
            after_id,
        } => client.updates_after(collection, &updated_after, after_id.as_deref()),
    };
    updates = filter.apply(updates)?;
    if follow {
        updates = updates.wait(FOLLOW_WAIT_SECS);
    }
    loop {
        while let Some(record) = updates.next().await.map_err(fail)? {
            print_record(out, &record, json_out)?;
            // Following: the cursor after each page, so that a follower
            // stopped at any time knows where to resume.
            if let (true, Some(cursor)) = (follow, updates.cursor()) {
                let _ = out.flush();
                eprintln!("cursor: {cursor}");
            }
        }
        let _ = out.flush();
        if !follow {
            eprintln!("cursor: {}", updates.cursor().unwrap_or_default());
            return Ok(());
        }
    }
}

/// `rill events`.
#[derive(clap::Args, Debug)]
pub struct EventsArgs {
    /// The collection whose change events to print.
    pub collection: String,
    /// Start at this seq num of the events stream (the default: 0).
    #[arg(long, default_value_t = 0)]
    pub seq_num: u64,
    /// Stop after this many events.
    #[arg(long)]
    pub count: Option<u64>,
    /// Then keep waiting for events and print each, until interrupted.
    #[arg(short, long, conflicts_with = "count")]
    pub follow: bool,
    /// Only these kinds: `created`, `updated`, `deleted` (comma-separated).
    #[arg(long, value_name = "KINDS")]
    pub event: Option<String>,
    /// Only events for which this holds: `plan=pro`, `seats>=10`,
    /// `changed(plan)` (repeat: all must hold).
    #[arg(long = "where", value_name = "CONDITION")]
    pub conditions: Vec<String>,
    /// Only events of records whose id starts with this.
    #[arg(long)]
    pub id_prefix: Option<String>,
}

/// Prints change events from the events stream: text
/// `seq_num  event  id  vN  data`, or one JSON object per line.
pub async fn events(
    client: &Client,
    args: EventsArgs,
    json_out: bool,
    out: &mut impl Write,
) -> Result<(), Failure> {
    let (mut seq_num, mut left) = (args.seq_num, args.count.unwrap_or(u64::MAX));
    let wait = if args.follow { FOLLOW_WAIT_SECS } else { 0 };
    let mut filter: Vec<(&str, &str)> = Vec::new();
    if let Some(kinds) = &args.event {
        filter.push(("event", kinds));
    }
    if let Some(prefix) = &args.id_prefix {
        filter.push(("id_prefix", prefix));
    }
    filter.extend(args.conditions.iter().map(|c| ("where", c.as_str())));
    while left > 0 {
        let (events, next) = client
            .read_events_where(&args.collection, seq_num, left.min(1000), wait, &filter)
            .await
            .map_err(fail)?;
        // A filter may leave a page empty that still moved on.
        if events.is_empty() && next == seq_num && !args.follow {
            return Ok(());
        }
        seq_num = next;
        for event in &events {
            if json_out {
                let mut value = serde_json::to_value(&event.change)
                    .map_err(|e| format!("cannot print an event: {e}"))?;
                value["seq_num"] = event.seq_num.into();
                value["timestamp"] = event.timestamp.into();
                line(out, value)?;
            } else {
                let kind = serde_json::to_value(event.event).unwrap_or_default();
                line(
                    out,
                    format!(
                        "{}\t{}\t{}\tv{}\t{}",
                        event.seq_num,
                        kind.as_str().unwrap_or_default(),
                        event.id,
                        event.version,
                        event.data
                    ),
                )?;
            }
            left -= 1;
        }
        let _ = out.flush();
    }
    Ok(())
}

fn record_json(r: &Record) -> Value {
    json!({
        "id": r.id, "data": r.data, "version": r.version, "created_at": r.created_at,
        "updated_at": r.updated_at, "deleted": r.deleted,
    })
}

/// Text: `id  version  data` (or `(deleted)`), tab-separated, one line.
fn print_record(out: &mut impl Write, r: &Record, json_out: bool) -> Result<(), Failure> {
    if json_out {
        line(out, record_json(r))
    } else if r.deleted {
        line(out, format!("{}\tv{}\t(deleted)", r.id, r.version))
    } else {
        line(out, format!("{}\tv{}\t{}", r.id, r.version, r.data))
    }
}
