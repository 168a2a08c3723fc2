//! The owner as a lease, for the nodes of a cluster (`src/cluster/`).
//!
//! Ownership is the epoch in `rill_owner` that every write transaction
//! checks (`schema.rs`). In a cluster it is held as a lease: the row also
//! names the node holding it, the address it answers at, and when the
//! lease ends unless renewed. A node takes it only once it has ended (or
//! was never given an end: a process outside a cluster took the
//! database), raising the epoch as it does; so the node before can never
//! write again, however late its writes arrive. Time decides when a node
//! may *try* to take over, never whether a write is safe.
//!
//! Times are the database's (`now()`), so the nodes' clocks do not matter.
//! `rill_nodes` lists the nodes with their last heartbeat: who is there,
//! for operators and for what comes later (ownership per resource).

use std::time::Duration;

use deadpool_postgres::Pool;

use super::connect::{pool_error, sql_error};
use crate::storage::kv::StorageResult;

/// Who holds the database, as `rill_owner` says.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LeaseHolder {
    pub epoch: i64,
    /// The node holding it; `None` for a process outside a cluster.
    pub node: Option<String>,
    /// Where that node answers (`HOST:PORT`).
    pub address: Option<String>,
    /// Ended (or held with no end): another node may take it now.
    pub ended: bool,
}

/// A node of the cluster, from `rill_nodes`.
#[derive(Clone, Debug, PartialEq)]
pub struct NodeRow {
    pub id: String,
    pub address: String,
    /// How long ago its last heartbeat was.
    pub silent_for: Duration,
}

/// Takes the lease for `node` (answering at `address`) for `ttl` seconds,
/// if the one before has ended: the new epoch, or `None` if another node
/// holds a lease still running. Waits for the write transactions of the
/// holder before to end (they hold the row), so none of them commits
/// after this returns.
pub(super) async fn take(
    pool: Pool,
    node: String,
    address: String,
    ttl: f64,
) -> StorageResult<Option<i64>> {
    let client = pool.get().await.map_err(pool_error)?;
    let row = client
        .query_opt(
            "INSERT INTO rill_owner (id, epoch, node, address, expires_at) \
             VALUES (1, 1, $1, $2, now() + $3::float8 * interval '1 second') \
             ON CONFLICT (id) DO UPDATE SET epoch = rill_owner.epoch + 1, \
             node = excluded.node, address = excluded.address, \
             expires_at = excluded.expires_at \
             WHERE rill_owner.expires_at IS NULL OR rill_owner.expires_at < now() \
             RETURNING epoch",
            &[&node, &address, &ttl],
        )
        .await
        .map_err(sql_error)?;
    Ok(row.map(|row| row.get::<_, i64>(0)))
}

/// Extends `node`'s lease by `ttl` seconds from now; `false` if it is not
/// its own any more. By node, not by epoch: the engine's `reopen` raises
/// the epoch, and node ids are new for every process.
pub(super) async fn renew(pool: Pool, node: String, ttl: f64) -> StorageResult<bool> {
    let client = pool.get().await.map_err(pool_error)?;
    let row = client
        .query_opt(
            "UPDATE rill_owner SET expires_at = now() + $2::float8 * interval '1 second' \
             WHERE id = 1 AND node = $1 RETURNING epoch",
            &[&node, &ttl],
        )
        .await
        .map_err(sql_error)?;
    Ok(row.is_some())
}

/// Ends `node`'s lease now, if it is still its own; the node is cleared,
/// so a renewal still on its way finds it gone.
pub(super) async fn release(pool: Pool, node: String) -> StorageResult<()> {
    let client = pool.get().await.map_err(pool_error)?;
    client
        .execute(
            "UPDATE rill_owner SET expires_at = now(), node = NULL, address = NULL \
             WHERE id = 1 AND node = $1",
            &[&node],
        )
        .await
        .map_err(sql_error)?;
    Ok(())
}

/// The cluster's secret: `proposed` if no node made one before.
pub(super) async fn secret(pool: Pool, proposed: String) -> StorageResult<String> {
    let client = pool.get().await.map_err(pool_error)?;
    client
        .execute(
            "INSERT INTO rill_cluster (id, secret) VALUES (1, $1) ON CONFLICT (id) DO NOTHING",
            &[&proposed],
        )
        .await
        .map_err(sql_error)?;
    let row = client
        .query_one("SELECT secret FROM rill_cluster WHERE id = 1", &[])
        .await
        .map_err(sql_error)?;
    Ok(row.get(0))
}

/// Who holds the database, if anyone ever did.
pub(super) async fn holder(pool: Pool) -> StorageResult<Option<LeaseHolder>> {
    let client = pool.get().await.map_err(pool_error)?;
    let row = client
        .query_opt(
            "SELECT epoch, node, address, \
             (expires_at IS NULL OR expires_at < now()) AS ended \
             FROM rill_owner WHERE id = 1",
            &[],
        )
        .await
        .map_err(sql_error)?;
    Ok(row.map(|row| LeaseHolder {
        epoch: row.get(0),
        node: row.get(1),
        address: row.get(2),
        ended: row.get(3),
    }))
}

/// Says `node` (at `address`) is alive, and forgets the nodes silent for
/// longer than `forget_after` seconds.
pub(super) async fn heartbeat(
    pool: Pool,
    node: String,
    address: String,
    forget_after: f64,
) -> StorageResult<()> {
    let client = pool.get().await.map_err(pool_error)?;
    client
        .execute(
            "INSERT INTO rill_nodes (id, address, started_at, heartbeat_at) \
             VALUES ($1, $2, now(), now()) \
             ON CONFLICT (id) DO UPDATE SET address = excluded.address, \
             heartbeat_at = excluded.heartbeat_at",
            &[&node, &address],
        )
        .await
        .map_err(sql_error)?;
    client
        .execute(
            "DELETE FROM rill_nodes WHERE heartbeat_at < now() - $1::float8 * interval '1 second'",
            &[&forget_after],
        )
        .await
        .map_err(sql_error)?;
    Ok(())
}

/// The nodes that sent a heartbeat lately, by id.
pub(super) async fn nodes(pool: Pool) -> StorageResult<Vec<NodeRow>> {
    let client = pool.get().await.map_err(pool_error)?;
    let rows = client
        .query(
            "SELECT id, address, \
             greatest(EXTRACT(EPOCH FROM (now() - heartbeat_at)), 0)::float8 \
             FROM rill_nodes ORDER BY id",
            &[],
        )
        .await
        .map_err(sql_error)?;
    Ok(rows
        .into_iter()
        .map(|row| NodeRow {
            id: row.get(0),
            address: row.get(1),
            silent_for: Duration::from_secs_f64(row.get::<_, f64>(2)),
        })
        .collect())
}
