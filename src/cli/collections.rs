//! `rill put`, `get`, `delete` and `updated`: collection records.

use std::io::Write;

use rill_client::{Client, Record};
use serde_json::{json, Value};

use super::output::{fail, line};

pub async fn put(
    client: &Client,
    collection: &str,
    id: &str,
    data: &str,
    json_out: bool,
    out: &mut impl Write,
) -> Result<(), String> {
    let data: Value =
        serde_json::from_str(data).map_err(|e| format!("the record is not JSON: {e}"))?;
    let record = client.put(collection, id, &data).await.map_err(fail)?;
    print_record(out, &record, json_out)
}

pub async fn get(
    client: &Client,
    collection: &str,
    id: &str,
    json_out: bool,
    out: &mut impl Write,
) -> Result<(), String> {
    match client.get(collection, id).await.map_err(fail)? {
        Some(record) => print_record(out, &record, json_out),
        None => Err(format!("record `{id}` not found in `{collection}`")),
    }
}

pub async fn delete(
    client: &Client,
    collection: &str,
    id: &str,
    json_out: bool,
    out: &mut impl Write,
) -> Result<(), String> {
    let record = client.delete(collection, id).await.map_err(fail)?;
    print_record(out, &record, json_out)
}

/// `rill updated`.
#[derive(clap::Args, Debug)]
pub struct UpdatedArgs {
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
}

impl UpdatedArgs {
    /// The collection, and where to start.
    pub fn into_parts(self) -> (String, UpdatedFrom) {
        let from = match (self.cursor, self.updated_after) {
            (Some(cursor), _) => UpdatedFrom::Cursor(cursor),
            (None, Some(updated_after)) => UpdatedFrom::Pair {
                updated_after,
                after_id: self.after_id,
            },
            (None, None) => UpdatedFrom::Beginning,
        };
        (self.collection, from)
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

/// Prints every record changed after the start, then the cursor to resume
/// with: on stderr as `cursor: …` (so stdout stays records only), or in
/// the JSON.
pub async fn updated(
    client: &Client,
    collection: &str,
    from: UpdatedFrom,
    json_out: bool,
    out: &mut impl Write,
) -> Result<(), String> {
    let mut updates = match from {
        UpdatedFrom::Beginning => client.updates(collection, None),
        UpdatedFrom::Cursor(cursor) => client.updates(collection, Some(cursor)),
        UpdatedFrom::Pair {
            updated_after,
            after_id,
        } => client.updates_after(collection, &updated_after, after_id.as_deref()),
    };
    let mut records = Vec::new();
    while let Some(record) = updates.next().await.map_err(fail)? {
        if !json_out {
            print_record(out, &record, false)?;
        }
        records.push(record);
    }
    let cursor = updates.cursor().unwrap_or_default().to_string();
    if json_out {
        let records: Vec<Value> = records.iter().map(record_json).collect();
        line(out, json!({ "records": records, "cursor": cursor }))
    } else {
        eprintln!("cursor: {cursor}");
        Ok(())
    }
}

fn record_json(r: &Record) -> Value {
    json!({
        "id": r.id, "data": r.data, "version": r.version, "created_at": r.created_at,
        "updated_at": r.updated_at, "deleted": r.deleted,
    })
}

/// Text: `id  version  data` (or `(deleted)`), tab-separated, one line.
fn print_record(out: &mut impl Write, r: &Record, json_out: bool) -> Result<(), String> {
    if json_out {
        line(out, record_json(r))
    } else if r.deleted {
        line(out, format!("{}\tv{}\t(deleted)", r.id, r.version))
    } else {
        line(out, format!("{}\tv{}\t{}", r.id, r.version, r.data))
    }
}
