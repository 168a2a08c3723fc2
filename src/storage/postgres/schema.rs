//! The schema, made and migrated by Rill, and who owns the database.
//!
//! Migrations are a list, applied in order, each once, under a lock on the
//! one row of `rill_schema` that says how many are applied: two processes
//! starting at once apply each step once.
//!
//! **Ownership**: one Rill process writes a database at a time. Opening
//! the store raises the epoch in `rill_owner` and keeps the new one; every
//! write transaction first reads the epoch `FOR SHARE` and writes only if
//! it is still its own. A second process that opens the database fences
//! the first off: the first's next write fails, and so does its reopening
//! (it never takes the database back). Raising the epoch waits for the
//! write transactions holding the row, so none of the old owner's writes
//! can commit after the new owner has read the state.

use deadpool_postgres::Pool;

use super::connect::{pool_error, sql_error};
use crate::storage::kv::{StorageError, StorageResult};

/// Each step of the schema, by version (1, 2, …).
const MIGRATIONS: &[&str] = &[
    "CREATE TABLE IF NOT EXISTS rill_kv (
        keyspace SMALLINT NOT NULL,
        key BYTEA NOT NULL,
        value BYTEA NOT NULL,
        PRIMARY KEY (keyspace, key)
    );
    CREATE TABLE IF NOT EXISTS rill_owner (
        id INT PRIMARY KEY CHECK (id = 1),
        epoch BIGINT NOT NULL
    )",
    // 2: the owner as a lease (who holds it, where it answers, until when;
    // no expiry for a process that took the database outside a cluster),
    // and the nodes of a cluster with their heartbeats (`lease.rs`).
    "ALTER TABLE rill_owner ADD COLUMN IF NOT EXISTS node TEXT;
    ALTER TABLE rill_owner ADD COLUMN IF NOT EXISTS address TEXT;
    ALTER TABLE rill_owner ADD COLUMN IF NOT EXISTS expires_at TIMESTAMPTZ;
    CREATE TABLE IF NOT EXISTS rill_nodes (
        id TEXT PRIMARY KEY,
        address TEXT NOT NULL,
        started_at TIMESTAMPTZ NOT NULL,
        heartbeat_at TIMESTAMPTZ NOT NULL
    )",
    // 3: the secret a cluster's nodes prove themselves to each other with
    // (`lease.rs`), made by the first node that asks.
    "CREATE TABLE IF NOT EXISTS rill_cluster (
        id INT PRIMARY KEY CHECK (id = 1),
        secret TEXT NOT NULL
    )",
];

/// The schema up to date; retried, as two processes creating the same
/// table at once make one of them fail.
pub(super) async fn migrate(pool: &Pool) -> StorageResult<()> {
    let mut last = None;
    for _ in 0..3 {
        match migrate_once(pool).await {
            Ok(()) => return Ok(()),
            Err(err) => last = Some(err),
        }
    }
    Err(last.unwrap_or(StorageError::Closed))
}

async fn migrate_once(pool: &Pool) -> StorageResult<()> {
    let mut client = pool.get().await.map_err(pool_error)?;
    client
        .batch_execute(
            "CREATE TABLE IF NOT EXISTS rill_schema (
                 id INT PRIMARY KEY CHECK (id = 1),
                 version INT NOT NULL
             );
             INSERT INTO rill_schema (id, version) VALUES (1, 0) ON CONFLICT (id) DO NOTHING",
        )
        .await
        .map_err(sql_error)?;
    let txn = client.transaction().await.map_err(sql_error)?;
    let version: i32 = txn
        .query_one(
            "SELECT version FROM rill_schema WHERE id = 1 FOR UPDATE",
            &[],
        )
        .await
        .map_err(sql_error)?
        .get(0);
    let latest = MIGRATIONS.len() as i32;
    if version > latest {
        return Err(StorageError::Corrupt(format!(
            "the database's schema is version {version}, newer than this Rill knows \
             ({latest}): run a newer Rill"
        )));
    }
    for sql in &MIGRATIONS[version as usize..] {
        txn.batch_execute(sql).await.map_err(sql_error)?;
    }
    txn.execute(
        "UPDATE rill_schema SET version = $1 WHERE id = 1",
        &[&latest],
    )
    .await
    .map_err(sql_error)?;
    txn.commit().await.map_err(sql_error)?;
    if version < latest {
        tracing::info!(from = version, to = latest, "Postgres schema migrated");
    }
    Ok(())
}

/// Takes the database outside a cluster: the owner epoch raised, the new
/// one returned. Held with no expiry and no node named (outside a
/// cluster, the last process to open the database owns it), unless a
/// cluster's node holds a lease still running (`None`): a cluster is
/// never fenced off by a process that does not take part in it.
pub(super) async fn take_ownership(pool: &Pool) -> StorageResult<Option<i64>> {
    let client = pool.get().await.map_err(pool_error)?;
    let row = client
        .query_opt(
            "INSERT INTO rill_owner (id, epoch) VALUES (1, 1) \
             ON CONFLICT (id) DO UPDATE SET epoch = rill_owner.epoch + 1, node = NULL, \
             address = NULL, expires_at = NULL \
             WHERE rill_owner.node IS NULL OR rill_owner.expires_at < now() \
             RETURNING epoch",
            &[],
        )
        .await
        .map_err(sql_error)?;
    Ok(row.map(|row| row.get(0)))
}

/// Keeps the database, if it is still this process's (`mine`): the epoch
/// raised (waiting out write transactions still open), the new one
/// returned; an error if another process took it.
pub(super) async fn renew_ownership(pool: &Pool, mine: i64) -> StorageResult<i64> {
    let client = pool.get().await.map_err(pool_error)?;
    let row = client
        .query_opt(
            "UPDATE rill_owner SET epoch = epoch + 1 WHERE id = 1 AND epoch = $1 RETURNING epoch",
            &[&mine],
        )
        .await
        .map_err(sql_error)?;
    row.map(|row| row.get(0)).ok_or_else(|| taken(mine))
}

/// The error of a store that does not own the database (any more):
/// `mine` is the epoch it wrote under, 0 if it never owned it.
pub(super) fn taken(mine: i64) -> StorageError {
    if mine == 0 {
        return StorageError::Io("this Rill does not own the Postgres database".into());
    }
    StorageError::Io(
        "another Rill process took over this Postgres database; this one writes no more \
         (restart it to take the database back)"
            .into(),
    )
}
