//! Streaming: the slot's transactions, in commit order, into collection
//! writes. A transaction's changes to one collection land in one write
//! (when they fit in one: 1000 records, about 512 KiB of events; a larger
//! one is cut), and the source's cursor (the transaction's end in the
//! WAL) goes in the same batch as its last write; only then is Postgres
//! told it may forget them. A crash between two writes of a transaction
//! (two collections, or a cut one) leaves the first part visible until
//! the transaction is taken again, which writes the same values (no
//! change) and the rest. After a crash the slot sends again from what it
//! was last told, and transactions before the cursor are skipped: none is
//! applied twice.
//!
//! Consecutive transactions already waiting (for at most [`MAX_WAIT`])
//! are written together when they touch different records, so that a
//! busy table is not held to one disk sync per transaction; a transaction
//! is never split across writes for that, and each record's changes keep
//! their order.
//!
//! A transaction is held in memory until its commit (Postgres sends it
//! whole at commit with pgoutput's protocol 1): a huge one needs memory in
//! proportion.

use std::collections::{HashMap, HashSet};

use futures::FutureExt;
use pgwire_replication::protocol::replication::pg_to_unix_timestamp;
use pgwire_replication::{Lsn, ReplicationClient, ReplicationEvent};
use serde_json::{Map, Value};

use super::backfill::{live_ids, record_id};
use super::catalog::TableInfo;
use super::pgoutput::{self, Cell, Message, Relation, Tuple};
use super::values::{kind_of, to_json, Kind};
use crate::engine::collections::MAX_WRITE_OPS;
use crate::engine::error::EngineError;
use crate::engine::sources::{PostgresSource, SourceCursor, SourceInfo};
use crate::engine::streams::types::now_ms;
use crate::engine::Engine;
use crate::sources::apply::{op_bytes, write_changes, Change, CHUNK_BYTES};
use crate::sources::status::SourceStatus;

/// How long taken transactions wait for others to join them.
const MAX_WAIT: std::time::Duration = std::time::Duration::from_millis(20);

/// A relation as the stream last described it, mapped to its table.
struct Mapped {
    table: usize,
    columns: Vec<(String, Kind)>,
    id_positions: Vec<usize>,
}

/// One transaction's changes, or several transactions' (see the module
/// docs), each table's in order.
#[derive(Default)]
struct Changes {
    /// By table (its place in `tables`).
    tables: Vec<Vec<Change>>,
    /// Tables truncated: every record not written after is deleted.
    truncated: Vec<bool>,
    ops: usize,
    bytes: usize,
}

impl Changes {
    fn new(tables: usize) -> Self {
        Self {
            tables: vec![Vec::new(); tables],
            truncated: vec![false; tables],
            ..Default::default()
        }
    }

    fn is_empty(&self) -> bool {
        self.ops == 0 && !self.truncated.contains(&true)
    }

    fn push(&mut self, table: usize, change: Change) {
        self.bytes += op_bytes(&change.0, change.1.as_ref());
        self.ops += 1;
        self.tables[table].push(change);
    }

    /// The data a record has within these changes (`Some(None)`: deleted).
    fn latest(&self, table: usize, id: &str) -> Option<Option<&Map<String, Value>>> {
        self.tables[table]
            .iter()
            .rev()
            .find(|(at, _)| at == id)
            .map(|(_, data)| data.as_ref())
    }

    /// Whether `other` may join these in one write: no record in both, no
    /// truncate, and the sum fits in one write.
    fn joins(&self, other: &Changes) -> bool {
        if self.truncated.contains(&true) || other.truncated.contains(&true) {
            return false;
        }
        if self.ops + other.ops > MAX_WRITE_OPS || self.bytes + other.bytes > CHUNK_BYTES {
            return false;
        }
        self.tables.iter().zip(&other.tables).all(|(mine, theirs)| {
            let ids: HashSet<&str> = mine.iter().map(|(id, _)| id.as_str()).collect();
            theirs.iter().all(|(id, _)| !ids.contains(id.as_str()))
        })
    }

    fn absorb(&mut self, other: Changes) {
        for (mine, theirs) in self.truncated.iter_mut().zip(&other.truncated) {
            *mine |= theirs;
        }
        self.ops += other.ops;
        self.bytes += other.bytes;
        for (mine, theirs) in self.tables.iter_mut().zip(other.tables) {
            mine.extend(theirs);
        }
    }
}

pub struct Streamer<'a> {
    pub engine: &'a Engine,
    pub source: &'a SourceInfo,
    pub config: &'a PostgresSource,
    pub tables: &'a [TableInfo],
    pub status: &'a SourceStatus,
    pub cursor: SourceCursor,
    relations: HashMap<u32, Option<Mapped>>,
    /// Transactions taken but not yet written, and the last one's commit
    /// end and time.
    waiting: Changes,
    waiting_end: Option<(u64, i64)>,
    /// When the first of them was taken.
    waiting_since: std::time::Instant,
}

impl<'a> Streamer<'a> {
    pub fn new(
        engine: &'a Engine,
        source: &'a SourceInfo,
        config: &'a PostgresSource,
        tables: &'a [TableInfo],
        status: &'a SourceStatus,
        cursor: SourceCursor,
    ) -> Self {
        Self {
            engine,
            source,
            config,
            tables,
            status,
            cursor,
            relations: HashMap::new(),
            waiting: Changes::new(tables.len()),
            waiting_end: None,
            waiting_since: std::time::Instant::now(),
        }
    }

    /// Takes the stream until it fails (it does not end by itself).
    pub async fn run(&mut self, client: &mut ReplicationClient) -> Result<(), String> {
        // The transaction being read: its changes, and whether it was
        // applied before (at or before the cursor).
        let mut open: Option<(Changes, bool)> = None;
        loop {
            let event = match self.waiting_end.is_some() {
                // Something waits to be written: only events already here
                // join it (for a little while); otherwise it is written now.
                true if self.waiting_since.elapsed() > MAX_WAIT => {
                    self.flush(client).await?;
                    continue;
                }
                true => match client.recv().now_or_never() {
                    Some(event) => event,
                    None => {
                        self.flush(client).await?;
                        continue;
                    }
                },
                false => client.recv().await,
            };
            let event = event.map_err(|e| format!("the replication stream failed: {e}"))?;
            let Some(event) = event else {
                return Err("the replication stream ended".into());
            };
            match event {
                ReplicationEvent::Begin { final_lsn, .. } => {
                    let done = self.cursor.lsn.is_some_and(|lsn| final_lsn.as_u64() < lsn);
                    open = Some((Changes::new(self.tables.len()), done));
                }
                ReplicationEvent::XLogData { data, .. } => {
                    let message = pgoutput::decode(&data)?;
                    let (changes, done) = match open.as_mut() {
                        Some((changes, done)) => (Some(changes), *done),
                        None => (None, true),
                    };
                    self.take(message, changes.filter(|_| !done)).await?;
                }
                ReplicationEvent::Commit {
                    end_lsn,
                    commit_time_micros,
                    ..
                } => {
                    let Some((changes, done)) = open.take() else {
                        return Err("a commit came without its begin".into());
                    };
                    if done {
                        continue;
                    }
                    if !self.waiting.joins(&changes) {
                        self.flush(client).await?;
                    }
                    if self.waiting_end.is_none() {
                        self.waiting_since = std::time::Instant::now();
                    }
                    self.waiting.absorb(changes);
                    self.waiting_end = Some((end_lsn.as_u64(), commit_time_micros));
                }
                // Nothing open or waiting: every transaction that ends
                // before `wal_end` was sent, and taken.
                ReplicationEvent::KeepAlive { wal_end, .. }
                    if open.is_none() && self.waiting_end.is_none() =>
                {
                    let at = wal_end.as_u64().max(self.cursor.lsn.unwrap_or(0));
                    client.update_applied_lsn(Lsn::from_u64(at));
                    self.status.update(|s| s.applied_lsn = at);
                }
                _ => {}
            }
        }
    }

    /// Writes what waits, the cursor with it, then tells Postgres.
    async fn flush(&mut self, client: &ReplicationClient) -> Result<(), String> {
        let Some((end, commit_us)) = self.waiting_end.take() else {
            return Ok(());
        };
        let waiting = std::mem::replace(&mut self.waiting, Changes::new(self.tables.len()));
        let taken = waiting.ops as u64;
        let next = SourceCursor {
            lsn: Some(end),
            changes: self.cursor.changes + taken,
            moved_at: now_ms(),
            ..self.cursor.clone()
        };
        if !waiting.is_empty() {
            let mut writes: Vec<(usize, Vec<Change>)> = Vec::new();
            for (table, mut changes) in waiting.tables.into_iter().enumerate() {
                if waiting.truncated[table] {
                    changes = self.truncation(table, changes).await?;
                }
                if !changes.is_empty() {
                    writes.push((table, changes));
                }
            }
            // The cursor goes with the last collection's write (alone in
            // the first's when a truncate found nothing to delete).
            let last = writes.len().saturating_sub(1);
            if writes.is_empty() {
                writes.push((0, Vec::new()));
            }
            for (at, (table, changes)) in writes.into_iter().enumerate() {
                let collection = &self.config.tables[table].collection;
                let cursor = (at == last).then_some(&next);
                write_changes(self.engine, self.source, collection, changes, cursor).await?;
            }
            self.cursor = next;
        }
        // An empty transaction need not be kept: sent again after a crash,
        // it changes nothing.
        client.update_applied_lsn(Lsn::from_u64(end));
        let committed_us = pg_to_unix_timestamp(commit_us.min(i64::MAX / 2));
        let lag = (now_ms() as i64 * 1000).saturating_sub(committed_us).max(0) as f64 / 1e6;
        self.status.update(|s| {
            s.applied += taken;
            s.applied_lsn = end;
            s.lag_seconds = Some(lag);
            s.last_poll_at = Some(now_ms());
        });
        Ok(())
    }

    /// A truncated table's changes: a delete of every record held, then
    /// what the transaction wrote after the truncate.
    async fn truncation(&self, table: usize, changes: Vec<Change>) -> Result<Vec<Change>, String> {
        let collection = &self.config.tables[table].collection;
        let written: HashSet<&str> = changes.iter().map(|(id, _)| id.as_str()).collect();
        let mut all: Vec<Change> = live_ids(self.engine, &self.source.basin, collection)
            .await?
            .into_iter()
            .filter(|id| !written.contains(id.as_str()))
            .map(|id| (id, None))
            .collect();
        all.extend(changes);
        Ok(all)
    }

    /// One message of a transaction; `changes` is `None` for one applied
    /// before (its relations are still read).
    async fn take(
        &mut self,
        message: Message,
        changes: Option<&mut Changes>,
    ) -> Result<(), String> {
        match message {
            Message::Relation(relation) => {
                let mapped = self.map(&relation)?;
                self.relations.insert(relation.oid, mapped);
            }
            Message::Insert { relation, new } => {
                if let (Some(changes), Some(m)) = (changes, self.mapped(relation)?) {
                    let (id, data) = self.row(m, &new, None, changes, None).await?;
                    changes.push(m.table, (id, Some(data)));
                }
            }
            Message::Update { relation, old, new } => {
                if let (Some(changes), Some(m)) = (changes, self.mapped(relation)?) {
                    let old_id = match &old {
                        Some(old) => Some(tuple_id(m, self.tables, old)?),
                        None => None,
                    };
                    let (id, data) = self
                        .row(m, &new, old.as_ref(), changes, old_id.as_deref())
                        .await?;
                    // The key changed: the old record goes.
                    if let Some(old_id) = old_id.filter(|old_id| *old_id != id) {
                        changes.push(m.table, (old_id, None));
                    }
                    changes.push(m.table, (id, Some(data)));
                }
            }
            Message::Delete { relation, old } => {
                if let (Some(changes), Some(m)) = (changes, self.mapped(relation)?) {
                    let id = tuple_id(m, self.tables, &old)?;
                    changes.push(m.table, (id, None));
                }
            }
            Message::Truncate { relations } => {
                if let Some(changes) = changes {
                    for relation in relations {
                        if let Some(m) = self.mapped(relation)? {
                            changes.tables[m.table].clear();
                            changes.truncated[m.table] = true;
                        }
                    }
                }
            }
            Message::Other => {}
        }
        Ok(())
    }

    /// The table a relation is, with its columns as the stream sends them;
    /// `None` for a table of the publication this source does not take.
    fn map(&self, relation: &Relation) -> Result<Option<Mapped>, String> {
        // By oid: a table renamed (or moved to another schema) while the
        // source runs is still the one it copied.
        let Some(table) = self.tables.iter().find(|t| t.oid == relation.oid) else {
            return Ok(None);
        };
        let columns: Vec<(String, Kind)> = relation
            .columns
            .iter()
            .map(|c| (c.name.clone(), kind_of(c.type_oid)))
            .collect();
        let id_positions = table
            .id_positions
            .iter()
            .map(|&at| {
                let name = &table.columns[at].0;
                columns.iter().position(|(c, _)| c == name).ok_or_else(|| {
                    format!(
                        "id column `{name}` of `{}` is gone from the table",
                        table.name
                    )
                })
            })
            .collect::<Result<_, _>>()?;
        Ok(Some(Mapped {
            table: table.index,
            columns,
            id_positions,
        }))
    }

    fn mapped(&self, relation: u32) -> Result<Option<&Mapped>, String> {
        match self.relations.get(&relation) {
            Some(mapped) => Ok(mapped.as_ref()),
            None => Err(format!(
                "a change of relation {relation} came before its description"
            )),
        }
    }

    /// A new row as a record. A large value the update left unchanged is
    /// not sent: it is in the old row (replica identity full), or it is
    /// the record's, as this transaction, those waiting, or the collection
    /// last left it.
    async fn row(
        &self,
        m: &Mapped,
        tuple: &Tuple,
        old: Option<&Tuple>,
        changes: &Changes,
        old_id: Option<&str>,
    ) -> Result<(String, Map<String, Value>), String> {
        let id = tuple_id(m, self.tables, tuple)?;
        let mut earlier: Option<Map<String, Value>> = None;
        let mut data = Map::new();
        for (at, ((name, kind), cell)) in m.columns.iter().zip(tuple).enumerate() {
            let was = old.and_then(|old| old.get(at));
            let value = match (cell, was) {
                (Cell::Text(text), _) | (Cell::Unchanged, Some(Cell::Text(text))) => {
                    to_json(kind, text, self.config.numeric)
                }
                (Cell::Null, _) => Value::Null,
                (Cell::Unchanged, _) => {
                    if earlier.is_none() {
                        let from = old_id.unwrap_or(&id);
                        earlier = Some(self.earlier(m.table, from, changes).await?);
                    }
                    earlier
                        .as_ref()
                        .and_then(|e| e.get(name).cloned())
                        .unwrap_or(Value::Null)
                }
            };
            data.insert(name.clone(), value);
        }
        Ok((id, data))
    }

    async fn earlier(
        &self,
        table: usize,
        id: &str,
        changes: &Changes,
    ) -> Result<Map<String, Value>, String> {
        let found = changes
            .latest(table, id)
            .or_else(|| self.waiting.latest(table, id));
        if let Some(data) = found {
            return data
                .cloned()
                .ok_or_else(|| format!("an update of record `{id}` came after its delete"));
        }
        let collection = &self.config.tables[table].collection;
        match self
            .engine
            .collections()
            .get_record(&self.source.basin, collection, id)
            .await
        {
            Ok(record) if !record.deleted => Ok(record.data),
            Ok(_) | Err(EngineError::RecordNotFound(_)) => Err(format!(
                "an update of record `{id}` left a large value unchanged, and the record \
                 is not here to take it from"
            )),
            Err(err) => Err(format!("reading collection `{collection}`: {err}")),
        }
    }
}

/// A row's id, from its id columns (which a key or full old row holds).
fn tuple_id(m: &Mapped, tables: &[TableInfo], tuple: &Tuple) -> Result<String, String> {
    record_id(
        &tables[m.table].name,
        &m.columns,
        &m.id_positions,
        |at| match tuple.get(at) {
            Some(Cell::Text(text)) => Some(text.as_str()),
            _ => None,
        },
    )
}
