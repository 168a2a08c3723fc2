//! The first copy of a source's tables, read through the snapshot its
//! replication slot exported when it was made: exactly the rows committed
//! before the slot's first position, so that the stream, which starts
//! there, neither misses a change nor repeats one.
//!
//! Then each collection is swept: a record the snapshot does not hold is
//! deleted. A backfill cut short (a crash, a lost connection) starts over
//! with a new slot and snapshot, and rows deleted in between must not
//! stay behind from the first try; nor records of a collection that held
//! other things before.

use std::collections::HashSet;

use serde_json::{Map, Value};
use tokio_postgres::{Client, SimpleQueryMessage};

use super::catalog::{literal, timed, TableInfo};
use super::values::{to_json, Kind};
use crate::engine::collections::Cursor;
use crate::engine::sources::{PostgresSource, SourceInfo};
use crate::engine::Engine;
use crate::sources::apply::{write_changes, Change};
use crate::sources::status::{BackfillProgress, SourceStatus};

/// Rows read (and written to the collection) at a time.
const FETCH_ROWS: usize = 1000;

/// Copies every table; returns how many rows it wrote.
pub async fn backfill(
    engine: &Engine,
    source: &SourceInfo,
    config: &PostgresSource,
    client: &Client,
    tables: &[TableInfo],
    snapshot: &str,
    status: &SourceStatus,
) -> Result<u64, String> {
    let begin = format!(
        "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY; SET TRANSACTION SNAPSHOT {}",
        literal(snapshot)
    );
    timed(
        config,
        "opening the backfill's snapshot",
        client.batch_execute(&begin),
    )
    .await?;
    let mut progress = BackfillProgress {
        tables: tables.len(),
        ..Default::default()
    };
    for table in tables {
        let estimate = timed(
            config,
            "reading the table's statistics",
            client.query_one(
                "SELECT COALESCE(sum(GREATEST(c.reltuples, 0)), 0)::bigint \
                 FROM pg_partition_tree($1::text::regclass) t JOIN pg_class c ON c.oid = t.relid",
                &[&table.quoted()],
            ),
        )
        .await?;
        progress.rows_estimated += estimate.get::<_, i64>(0) as u64;
    }
    status.update(|s| s.backfill = Some(progress.clone()));
    for table in tables {
        let collection = &config.tables[table.index].collection;
        let columns: Vec<String> = table
            .columns
            .iter()
            .map(|(name, _)| super::catalog::quote(name))
            .collect();
        let declare = format!(
            "DECLARE rill_backfill NO SCROLL CURSOR FOR SELECT {} FROM {}",
            columns.join(", "),
            table.quoted()
        );
        timed(config, "reading the table", client.batch_execute(&declare)).await?;
        let mut seen = HashSet::new();
        let fetch = format!("FETCH {FETCH_ROWS} FROM rill_backfill");
        let read = || timed(config, "reading the table", client.simple_query(&fetch));
        let mut changes = rows_of(table, config, read().await?, &mut seen)?;
        // The next rows are read while these are written.
        while !changes.is_empty() {
            let rows = changes.len() as u64;
            let (written, next) = tokio::join!(
                write_changes(engine, source, collection, changes, None),
                read()
            );
            written?;
            progress.rows += rows;
            status.update(|s| s.backfill = Some(progress.clone()));
            changes = rows_of(table, config, next?, &mut seen)?;
        }
        timed(
            config,
            "reading the table",
            client.batch_execute("CLOSE rill_backfill"),
        )
        .await?;
        sweep(engine, source, collection, &seen).await?;
        progress.tables_done += 1;
        status.update(|s| s.backfill = Some(progress.clone()));
    }
    timed(
        config,
        "closing the backfill",
        client.batch_execute("COMMIT"),
    )
    .await?;
    Ok(progress.rows)
}

/// The rows of a `FETCH` as changes; their ids go in `seen`.
fn rows_of(
    table: &TableInfo,
    config: &PostgresSource,
    messages: Vec<SimpleQueryMessage>,
    seen: &mut HashSet<String>,
) -> Result<Vec<Change>, String> {
    let mut changes = Vec::with_capacity(FETCH_ROWS);
    for message in &messages {
        if let SimpleQueryMessage::Row(row) = message {
            let cells: Vec<Option<&str>> = (0..table.columns.len()).map(|i| row.get(i)).collect();
            let (id, data) = row_change(table, config, &cells)?;
            seen.insert(id.clone());
            changes.push((id, Some(data)));
        }
    }
    Ok(changes)
}

/// A row (each column's text, `None` for NULL) as a record: its id (the
/// id columns' values joined by `/`) and its data.
pub fn row_change(
    table: &TableInfo,
    config: &PostgresSource,
    cells: &[Option<&str>],
) -> Result<(String, Map<String, Value>), String> {
    let mut data = Map::new();
    for ((name, kind), cell) in table.columns.iter().zip(cells) {
        let value = match cell {
            Some(text) => to_json(kind, text, config.numeric),
            None => Value::Null,
        };
        data.insert(name.clone(), value);
    }
    let id = record_id(&table.name, &table.columns, &table.id_positions, |at| {
        cells.get(at).copied().flatten()
    })?;
    Ok((id, data))
}

/// The id columns' values (at `positions` among `columns`, read through
/// `cell`) joined by `/`. With several, a `/` or `\` in a value is
/// escaped by a `\`, so that two rows never share an id (`a/b`+`c` is
/// `a\/b/c`, `a`+`b/c` is `a/b\/c`).
pub fn record_id<'a>(
    table: &str,
    columns: &[(String, Kind)],
    positions: &[usize],
    cell: impl Fn(usize) -> Option<&'a str>,
) -> Result<String, String> {
    let mut parts = Vec::with_capacity(positions.len());
    for &at in positions {
        let Some(text) = cell(at) else {
            let column = columns.get(at).map_or("?", |(name, _)| name.as_str());
            return Err(format!(
                "a row of `{table}` has no value in id column `{column}`"
            ));
        };
        parts.push(match positions.len() {
            1 => text.to_string(),
            _ => text.replace('\\', "\\\\").replace('/', "\\/"),
        });
    }
    Ok(parts.join("/"))
}

/// Deletes every live record of `collection` not in `keep`.
async fn sweep(
    engine: &Engine,
    source: &SourceInfo,
    collection: &str,
    keep: &HashSet<String>,
) -> Result<(), String> {
    let gone = live_ids(engine, &source.basin, collection)
        .await?
        .into_iter()
        .filter(|id| !keep.contains(id))
        .map(|id| (id, None))
        .collect::<Vec<Change>>();
    if !gone.is_empty() {
        write_changes(engine, source, collection, gone, None).await?;
    }
    Ok(())
}

/// The ids of every record `collection` holds (not deleted).
pub async fn live_ids(
    engine: &Engine,
    basin: &str,
    collection: &str,
) -> Result<Vec<String>, String> {
    let mut ids = Vec::new();
    let mut cursor = Cursor::default();
    loop {
        let page = engine
            .collections()
            .updated(
                basin,
                collection,
                &cursor,
                1000,
                None,
                std::time::Duration::ZERO,
            )
            .await
            .map_err(|e| format!("reading collection `{collection}`: {e}"))?;
        for record in &page.records {
            let view = record
                .view()
                .map_err(|e| format!("reading collection `{collection}`: {e}"))?;
            if !view.deleted {
                ids.push(view.id);
            }
        }
        if page.records.is_empty() && page.caught_up {
            return Ok(ids);
        }
        cursor = page.next;
    }
}
