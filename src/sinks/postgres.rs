//! The Postgres destination: keeps a table equal to the sink's source, and
//! the sink's position in a table beside it, both in one transaction, so
//! that each message is applied exactly once, across crashes of either
//! side.
//!
//! - A collection's records or events are upserted by `id` into
//!   `(id text primary key, data jsonb, version bigint, updated_at
//!   timestamptz)`, never moving a row to an older version; a delete
//!   deletes the row (unless it holds a newer version).
//! - A stream's records are inserted into `(seq_num bigint primary key,
//!   timestamp timestamptz, headers jsonb, body bytea)`; headers are
//!   `[[name, value], ...]` as text (a header that is not UTF-8 refuses
//!   its message).
//!
//! Each delivery runs `SELECT position ... FOR UPDATE` on the sink's row in
//! `rill_sink_positions`, skips the messages at or before it (delivered
//! before a crash lost their ack), writes the rest with one statement per
//! kind (arrays through `unnest`), moves the position, and commits. A
//! failure before the commit leaves nothing behind; one after it (the ack
//! lost) is skipped next time.

use std::future::Future;
use std::time::Duration;

use tokio::sync::{Mutex, MutexGuard};
use tokio_postgres::error::SqlState;
use tokio_postgres::Client;

use super::failure::Failure;
use super::message::{latest_per_id, position_bytes, sink_identity, Change};
use crate::engine::consumers::{Delivery, Payload, Source};
use crate::engine::sinks::{PostgresConfig, SinkInfo};
use crate::postgres::describe;

/// The table positions are kept in, in the target table's schema.
const POSITIONS_TABLE: &str = "rill_sink_positions";

pub struct Postgres {
    config: PostgresConfig,
    /// The sink's row in the positions table.
    sink: String,
    rows: Rows,
    /// The connection, made on first use and dropped when it fails.
    client: Mutex<Option<Client>>,
}

/// What the table holds.
#[derive(Clone, Copy)]
enum Rows {
    /// A collection's records, by id.
    Records,
    /// A stream's records, by seq num.
    Stream,
}

impl Postgres {
    pub fn new(sink: &SinkInfo, config: PostgresConfig) -> Self {
        let rows = match sink.config.source {
            Source::Collection { .. } => Rows::Records,
            Source::Stream { .. } => Rows::Stream,
        };
        Self {
            config,
            sink: sink_identity(sink),
            rows,
            client: Mutex::new(None),
        }
    }

    pub async fn deliver(&self, batch: &[Delivery]) -> Result<(), Failure> {
        // Shaped before anything is sent: a message that cannot be written
        // refuses the batch without a round trip.
        let writes = Writes::of(self.rows, batch)?;
        // The furthest position, not the last: a batch is in position
        // order, but the position must never move back if it were not.
        let Some(last) = batch.iter().map(position_bytes).max() else {
            return Ok(());
        };
        let mut slot = self.connected().await?;
        let Some(client) = slot.as_mut() else {
            return Err(Failure::Transient("no connection to Postgres".into()));
        };
        let result = self.timed(self.apply(client, writes, last)).await;
        finish(&mut slot, result)
    }

    /// Up when the table can be read (a missing table is an outage, not a
    /// reason to dead-letter what is meant for it).
    pub async fn probe(&self) -> Result<(), Failure> {
        let query = format!("SELECT 1 FROM {} LIMIT 0", self.table());
        let mut slot = self.connected().await?;
        let Some(client) = slot.as_mut() else {
            return Err(Failure::Transient("no connection to Postgres".into()));
        };
        let result = self
            .timed(async { client.execute(&query, &[]).await.map(|_| ()) })
            .await;
        finish(&mut slot, result)
    }

    /// One transaction: the position read (and locked), the messages after
    /// it written, the position moved to `last`.
    async fn apply(
        &self,
        client: &mut Client,
        writes: Writes,
        last: Vec<u8>,
    ) -> Result<(), tokio_postgres::Error> {
        let table = self.table();
        let positions = self.positions_table();
        let tx = client.transaction().await?;
        let done: Option<Vec<u8>> = tx
            .query_opt(
                &format!("SELECT position FROM {positions} WHERE sink = $1 FOR UPDATE"),
                &[&self.sink],
            )
            .await?
            .map(|row| row.try_get(0))
            .transpose()?;
        let fresh = |position: &Vec<u8>| done.as_ref().is_none_or(|done| position > done);
        if !fresh(&last) {
            // All of it landed before (its ack was lost).
            return tx.commit().await;
        }
        match writes {
            Writes::Records(changes) => {
                let changes = latest_per_id(
                    changes
                        .into_iter()
                        .filter(|(position, _)| fresh(position))
                        .map(|(_, change)| change)
                        .collect(),
                );
                let (deletes, upserts): (Vec<Change>, Vec<Change>) =
                    changes.into_iter().partition(|c| c.deleted);
                if !upserts.is_empty() {
                    let ids: Vec<&str> = upserts.iter().map(|c| c.id.as_str()).collect();
                    let data: Vec<&str> = upserts.iter().map(|c| c.data.as_str()).collect();
                    let versions: Vec<i64> = upserts.iter().map(|c| c.version as i64).collect();
                    let times: Vec<i64> = upserts.iter().map(|c| c.updated_at as i64).collect();
                    let upsert = format!(
                        "INSERT INTO {table} AS t (id, data, version, updated_at) \
                         SELECT id, data::jsonb, version, 'epoch'::timestamptz + ms * interval '1 millisecond' \
                         FROM unnest($1::text[], $2::text[], $3::int8[], $4::int8[]) AS u(id, data, version, ms) \
                         ON CONFLICT (id) DO UPDATE SET data = EXCLUDED.data, version = EXCLUDED.version, \
                         updated_at = EXCLUDED.updated_at WHERE t.version < EXCLUDED.version"
                    );
                    tx.execute(&upsert, &[&ids, &data, &versions, &times])
                        .await?;
                }
                if !deletes.is_empty() {
                    let ids: Vec<&str> = deletes.iter().map(|c| c.id.as_str()).collect();
                    let versions: Vec<i64> = deletes.iter().map(|c| c.version as i64).collect();
                    let delete = format!(
                        "DELETE FROM {table} AS t USING unnest($1::text[], $2::int8[]) AS d(id, version) \
                         WHERE t.id = d.id AND t.version < d.version"
                    );
                    tx.execute(&delete, &[&ids, &versions]).await?;
                }
            }
            Writes::Stream(rows) => {
                let rows: Vec<&StreamRow> = rows.iter().filter(|r| fresh(&r.position)).collect();
                let seqs: Vec<i64> = rows.iter().map(|r| r.seq_num).collect();
                let times: Vec<i64> = rows.iter().map(|r| r.timestamp).collect();
                let headers: Vec<&str> = rows.iter().map(|r| r.headers.as_str()).collect();
                let bodies: Vec<&[u8]> = rows.iter().map(|r| r.body.as_slice()).collect();
                let append = format!(
                    "INSERT INTO {table} (seq_num, timestamp, headers, body) \
                     SELECT seq, 'epoch'::timestamptz + ms * interval '1 millisecond', headers::jsonb, body \
                     FROM unnest($1::int8[], $2::int8[], $3::text[], $4::bytea[]) AS u(seq, ms, headers, body) \
                     ON CONFLICT (seq_num) DO NOTHING"
                );
                tx.execute(&append, &[&seqs, &times, &headers, &bodies])
                    .await?;
            }
        }
        tx.execute(
            &format!(
                "INSERT INTO {positions} (sink, position) VALUES ($1, $2) \
                 ON CONFLICT (sink) DO UPDATE SET position = EXCLUDED.position, updated_at = now()"
            ),
            &[&self.sink, &last],
        )
        .await?;
        tx.commit().await
    }

    /// `work` within the timeout.
    async fn timed(
        &self,
        work: impl Future<Output = Result<(), tokio_postgres::Error>>,
    ) -> Result<(), Failure> {
        let timeout = Duration::from_millis(self.config.timeout_ms);
        match tokio::time::timeout(timeout, work).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(err)) => Err(classify(&err)),
            Err(_) => Err(Failure::Transient("a Postgres write timed out".into())),
        }
    }

    /// The connection, made first if there is none (or it closed).
    async fn connected(&self) -> Result<MutexGuard<'_, Option<Client>>, Failure> {
        let mut slot = self.client.lock().await;
        if slot.as_ref().is_none_or(|c| c.is_closed()) {
            *slot = None;
            let timeout = Duration::from_millis(self.config.timeout_ms);
            let client = tokio::time::timeout(timeout, self.connect())
                .await
                .map_err(|_| Failure::Transient("connecting to Postgres timed out".into()))??;
            *slot = Some(client);
        }
        Ok(slot)
    }

    /// The target table, quoted.
    fn table(&self) -> String {
        quoted(&self.config.table)
    }

    /// The positions table, in the target table's schema.
    fn positions_table(&self) -> String {
        match self.config.table.split_once('.') {
            Some((schema, _)) => quoted(&format!("{schema}.{POSITIONS_TABLE}")),
            None => quoted(POSITIONS_TABLE),
        }
    }

    async fn connect(&self) -> Result<Client, Failure> {
        let tls = crate::postgres::tls()
            .map_err(|e| Failure::Transient(format!("cannot set up TLS for Postgres: {e}")))?;
        let (client, connection) = tokio_postgres::connect(&self.config.url, tls)
            .await
            .map_err(|e| {
                Failure::Transient(format!("cannot connect to Postgres: {}", describe(&e)))
            })?;
        tokio::spawn(async move {
            if let Err(err) = connection.await {
                tracing::debug!(error = %describe(&err), "a sink's Postgres connection ended");
            }
        });
        let mut setup = format!(
            "CREATE TABLE IF NOT EXISTS {} (sink text PRIMARY KEY, position bytea NOT NULL, \
             updated_at timestamptz NOT NULL DEFAULT now());",
            self.positions_table()
        );
        if self.config.create_table {
            setup.push_str(&format!(
                "CREATE TABLE IF NOT EXISTS {} ({});",
                self.table(),
                match self.rows {
                    Rows::Records => {
                        "id text PRIMARY KEY, data jsonb NOT NULL, version bigint NOT NULL, \
                         updated_at timestamptz NOT NULL"
                    }
                    Rows::Stream => {
                        "seq_num bigint PRIMARY KEY, timestamp timestamptz NOT NULL, \
                         headers jsonb NOT NULL, body bytea NOT NULL"
                    }
                }
            ));
        }
        client
            .batch_execute(&setup)
            .await
            .map_err(|e| classify(&e))?;
        Ok(client)
    }
}

/// After a failure the connection is dropped: whatever state it is in (a
/// transaction cut off by the timeout, say), the next delivery starts on
/// a new one.
fn finish(slot: &mut Option<Client>, result: Result<(), Failure>) -> Result<(), Failure> {
    if result.is_err() {
        *slot = None;
    }
    result
}

/// `name` or `schema.name`, each part quoted (they are checked to be plain
/// identifiers when the sink is made; quoting keeps their case).
fn quoted(table: &str) -> String {
    table
        .split('.')
        .map(|part| format!("\"{}\"", part.replace('"', "\"\"")))
        .collect::<Vec<_>>()
        .join(".")
}

/// Whether trying again may help. No SQL state is a failure of the
/// connection; a data exception (22: malformed JSON, say) or a broken
/// constraint (23) belongs to the message and will not pass; anything
/// else (a missing table, a permission, a restart) is the destination's
/// state, which may change.
fn classify(err: &tokio_postgres::Error) -> Failure {
    let said = describe(err);
    match err.code().map(SqlState::code) {
        Some(code) if code.starts_with("22") || code.starts_with("23") => Failure::Permanent(said),
        _ => Failure::Transient(said),
    }
}

/// The rows a batch writes, shaped before the transaction.
enum Writes {
    /// Each change with its message's position.
    Records(Vec<(Vec<u8>, Change)>),
    Stream(Vec<StreamRow>),
}

struct StreamRow {
    position: Vec<u8>,
    seq_num: i64,
    timestamp: i64,
    /// `[[name, value], ...]`.
    headers: String,
    body: Vec<u8>,
}

impl Writes {
    fn of(rows: Rows, batch: &[Delivery]) -> Result<Self, Failure> {
        let refuse = |why: String| Failure::Permanent(why);
        let signed = |n: u64, what: &str| {
            i64::try_from(n).map_err(|_| refuse(format!("{what} {n} is past a bigint")))
        };
        match rows {
            Rows::Records => batch
                .iter()
                .map(|d| {
                    let change = Change::of(d).map_err(refuse)?;
                    signed(change.version, "version")?;
                    signed(change.updated_at, "updated_at")?;
                    Ok((position_bytes(d), change))
                })
                .collect::<Result<_, _>>()
                .map(Writes::Records),
            Rows::Stream => batch
                .iter()
                .map(|d| {
                    let Payload::Record(record) = &d.message.payload else {
                        return Err(refuse("a stream sink got a collection message".into()));
                    };
                    let mut headers = Vec::with_capacity(record.headers.len());
                    for header in &record.headers {
                        let (Ok(name), Ok(value)) = (
                            std::str::from_utf8(&header.name),
                            std::str::from_utf8(&header.value),
                        ) else {
                            return Err(refuse(format!(
                                "record {} has a header that is not UTF-8",
                                record.seq_num
                            )));
                        };
                        headers.push([name, value]);
                    }
                    Ok(StreamRow {
                        position: position_bytes(d),
                        seq_num: signed(record.seq_num, "seq_num")?,
                        timestamp: signed(record.timestamp, "timestamp")?,
                        headers: serde_json::to_string(&headers).unwrap_or_default(),
                        body: record.body.to_vec(),
                    })
                })
                .collect::<Result<_, _>>()
                .map(Writes::Stream),
        }
    }
}
