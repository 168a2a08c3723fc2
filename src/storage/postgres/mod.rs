//! Storage on Postgres (`rill serve --storage postgres://…`): every
//! keyspace in one table, `rill_kv (keyspace, key, value)`, keyed by
//! `(keyspace, key)`. `bytea` compares byte by byte, so a range scan
//! returns keys in the order fjall does.
//!
//! A write batch is one transaction: the owner check (`schema.rs`), then
//! two statements whatever the batch's size: its operations are folded
//! per key first (the last one wins, as applying them in order would
//! give), then its deletes go in one `DELETE … unnest(…)` and its puts in
//! one `INSERT … SELECT unnest(…) ON CONFLICT DO UPDATE`. The committer
//! groups many appends into one batch, so one transaction commits many
//! streams' appends.
//!
//! The `Storage` trait is blocking, and tokio-postgres is not: the store
//! runs its own small runtime, holding a connection pool
//! (deadpool-postgres), and each call waits on it from the caller's
//! thread (`connect.rs`). A call from an async task blocks that worker
//! thread for a round trip: commits run on the committer's thread and
//! scans of records through `spawn_blocking`, but point reads (a stream's
//! state, a producer's place, a token) do block a worker for that long.
//!
//! One process writes a database at a time, fenced by an epoch
//! (`schema.rs`). A scan reads page by page, each page as of its own read:
//! unlike fjall's, not one snapshot (the engine scans ranges it knows are
//! settled).
//!
//! The SQL it relies on, and what CockroachDB and YugabyteDB make of it,
//! is listed in `docs/ARCHITECTURE.md` ("Storage on Postgres"); only
//! Postgres is tested here.

mod connect;
mod lease;
mod retry;
mod schema;

pub use lease::{LeaseHolder, NodeRow};

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use connect::{pool_error, sql_error};
use deadpool_postgres::Pool;
use retry::{with_retries, Failure};

use super::kv::{BatchOp, Keyspace, Storage, StorageError, StorageResult, Visitor, WriteBatch};

/// Rows fetched per page of a scan.
const PAGE: i64 = 1000;

pub struct PostgresStorage {
    db: Arc<Database>,
    /// The owner epoch this store writes under (`schema.rs`; 0: none, and
    /// every write is refused).
    epoch: AtomicI64,
    /// Set by a failed write, cleared by `reopen`: writes are refused in
    /// between (the trait's fail-stop rule).
    failed: AtomicBool,
    pool: Pool,
    /// For the lease's calls alone, so that renewing it never waits for a
    /// connection behind the engine's writes.
    lease_pool: Pool,
}

/// The connections to one database, shared by the stores over it (a
/// cluster node makes one store per term as owner, `lease.rs`).
struct Database {
    /// Owns the pool's connections; shut down in the background on drop
    /// (a store may be dropped on an async thread, where waiting is not
    /// allowed).
    runtime: Mutex<Option<tokio::runtime::Runtime>>,
    handle: tokio::runtime::Handle,
}

impl PostgresStorage {
    /// Connects to `url` (a `postgres://` URL; see `connect.rs` for what
    /// its settings mean here), brings the schema up to date and takes the
    /// database over at once, whoever held it.
    pub fn open(url: &str) -> Result<Self, String> {
        let store = Self::connect(url)?;
        let pool = store.pool.clone();
        let epoch = store
            .run(async move { schema::take_ownership(&pool).await })
            .map_err(|e| format!("cannot take the database over: {e}"))?
            .ok_or_else(|| {
                "a node of a Rill cluster holds this database: start this Rill with --cluster \
                 too, or stop the cluster first"
                    .to_string()
            })?;
        store.epoch.store(epoch, Ordering::Release);
        Ok(store)
    }

    /// Connects to `url` and brings the schema up to date, holding no
    /// ownership: every write is refused until the store is one a lease
    /// gave (`lease.rs`).
    pub fn connect(url: &str) -> Result<Self, String> {
        let runtime = connect::runtime()?;
        let pool = connect::pool(url, connect::POOL_SIZE, &runtime)?;
        let lease_pool = connect::pool(url, connect::LEASE_POOL_SIZE, &runtime)?;
        let handle = runtime.handle().clone();
        let store = Self {
            db: Arc::new(Database {
                runtime: Mutex::new(Some(runtime)),
                handle,
            }),
            epoch: AtomicI64::new(0),
            failed: AtomicBool::new(false),
            pool,
            lease_pool,
        };
        let pool = store.pool.clone();
        store
            .run(async move { schema::migrate(&pool).await })
            .map_err(|e| format!("cannot prepare the database: {e}"))?;
        Ok(store)
    }

    /// Another store over the same connections, writing under `epoch`.
    fn with_epoch(&self, epoch: i64) -> Self {
        Self {
            db: self.db.clone(),
            epoch: AtomicI64::new(epoch),
            failed: AtomicBool::new(false),
            pool: self.pool.clone(),
            lease_pool: self.lease_pool.clone(),
        }
    }

    fn run<T: Send + 'static>(
        &self,
        work: impl Future<Output = StorageResult<T>> + Send + 'static,
    ) -> StorageResult<T> {
        connect::block_on(&self.db.handle, work)
    }

    /// One page of `[start, end)` after `after` (exclusive), ascending.
    fn page(
        &self,
        keyspace: Keyspace,
        start: &[u8],
        end: &[u8],
        after: Option<&[u8]>,
    ) -> StorageResult<Vec<(Vec<u8>, Vec<u8>)>> {
        let pool = self.pool.clone();
        let (start, end, after) = (start.to_vec(), end.to_vec(), after.map(<[u8]>::to_vec));
        let keyspace = keyspace_id(keyspace);
        self.run(with_retries(move || {
            let (pool, start, end, after) =
                (pool.clone(), start.clone(), end.clone(), after.clone());
            async move {
                let client = pool.get().await?;
                let rows = match after {
                    None => {
                        let statement = client
                            .prepare_cached(
                                "SELECT key, value FROM rill_kv WHERE keyspace = $1 \
                                 AND key >= $2 AND key < $3 ORDER BY key LIMIT $4",
                            )
                            .await?;
                        client
                            .query(&statement, &[&keyspace, &start, &end, &PAGE])
                            .await?
                    }
                    Some(after) => {
                        let statement = client
                            .prepare_cached(
                                "SELECT key, value FROM rill_kv WHERE keyspace = $1 \
                                 AND key > $2 AND key < $3 ORDER BY key LIMIT $4",
                            )
                            .await?;
                        client
                            .query(&statement, &[&keyspace, &after, &end, &PAGE])
                            .await?
                    }
                };
                Ok::<_, Failure>(
                    rows.into_iter()
                        .map(|row| (row.get(0), row.get(1)))
                        .collect(),
                )
            }
        }))
    }
}

/// The lease, for the nodes of a cluster (the SQL and what it means are
/// in `lease.rs`); on the lease's own connections.
impl PostgresStorage {
    /// Takes the lease for `node` (answering at `address`) for `ttl`, if
    /// the one before has ended: a store writing under the new epoch, or
    /// `None` if another node holds a lease still running. None of the
    /// holder before's writes commits after this returns.
    pub fn take_lease(
        &self,
        node: &str,
        address: &str,
        ttl: Duration,
    ) -> StorageResult<Option<PostgresStorage>> {
        let taken = lease::take(
            self.lease_pool.clone(),
            node.to_string(),
            address.to_string(),
            ttl.as_secs_f64(),
        );
        Ok(self.run(taken)?.map(|epoch| self.with_epoch(epoch)))
    }

    /// Extends `node`'s lease by `ttl` from now; `false` if it is not its
    /// own any more (another node took it, or it was released).
    pub fn renew_lease(&self, node: &str, ttl: Duration) -> StorageResult<bool> {
        self.run(lease::renew(
            self.lease_pool.clone(),
            node.to_string(),
            ttl.as_secs_f64(),
        ))
    }

    /// Ends `node`'s lease now, if it is still its own, so that another
    /// node takes over without waiting it out. This store writes no more.
    pub fn release_lease(&self, node: &str) -> StorageResult<()> {
        self.epoch.store(0, Ordering::Release);
        self.run(lease::release(self.lease_pool.clone(), node.to_string()))
    }

    /// The secret a cluster's nodes prove themselves to each other with,
    /// the same for every node: made (random, 256 bits) by the first that
    /// asks.
    pub fn cluster_secret(&self) -> StorageResult<String> {
        let proposed: String = (0..32)
            .map(|_| format!("{:02x}", rand::random::<u8>()))
            .collect();
        self.run(lease::secret(self.lease_pool.clone(), proposed))
    }

    /// Who holds the database, if anyone ever did.
    pub fn lease_holder(&self) -> StorageResult<Option<LeaseHolder>> {
        self.run(lease::holder(self.lease_pool.clone()))
    }

    /// Says `node` (at `address`) is alive, and forgets the nodes silent
    /// for longer than `forget_after`.
    pub fn heartbeat(
        &self,
        node: &str,
        address: &str,
        forget_after: Duration,
    ) -> StorageResult<()> {
        self.run(lease::heartbeat(
            self.lease_pool.clone(),
            node.to_string(),
            address.to_string(),
            forget_after.as_secs_f64(),
        ))
    }

    /// The nodes that sent a heartbeat lately, by id.
    pub fn nodes(&self) -> StorageResult<Vec<NodeRow>> {
        self.run(lease::nodes(self.lease_pool.clone()))
    }
}

impl Drop for Database {
    fn drop(&mut self) {
        if let Some(runtime) = self.runtime.lock().ok().and_then(|mut r| r.take()) {
            runtime.shutdown_background();
        }
    }
}

impl Storage for PostgresStorage {
    fn write(&self, batch: WriteBatch) -> StorageResult<()> {
        if self.failed.load(Ordering::Acquire) {
            return Err(StorageError::Poisoned);
        }
        // The last operation on each key is what the batch leaves there.
        let mut last: BTreeMap<(i16, Vec<u8>), Option<Vec<u8>>> = BTreeMap::new();
        for op in batch.ops {
            match op {
                BatchOp::Put(ks, key, value) => last.insert((keyspace_id(ks), key), Some(value)),
                BatchOp::Delete(ks, key) => last.insert((keyspace_id(ks), key), None),
            };
        }
        if last.is_empty() {
            return Ok(());
        }
        let (mut put_ks, mut put_keys, mut put_values) = (Vec::new(), Vec::new(), Vec::new());
        let (mut del_ks, mut del_keys) = (Vec::new(), Vec::new());
        for ((ks, key), value) in last {
            match value {
                Some(value) => {
                    put_ks.push(ks);
                    put_keys.push(key);
                    put_values.push(value);
                }
                None => {
                    del_ks.push(ks);
                    del_keys.push(key);
                }
            }
        }
        let pool = self.pool.clone();
        let mine = self.epoch.load(Ordering::Acquire);
        if mine == 0 {
            return Err(schema::taken(mine));
        }
        let rows = Arc::new((put_ks, put_keys, put_values, del_ks, del_keys));
        let result = self.run(with_retries(move || {
            let (pool, rows) = (pool.clone(), rows.clone());
            async move {
                let (put_ks, put_keys, put_values, del_ks, del_keys) = &*rows;
                let mut client = pool.get().await?;
                let txn = client.transaction().await?;
                // Still this process's database? Held until the commit, so
                // no new owner can take it in between.
                let owner = txn
                    .prepare_cached("SELECT epoch FROM rill_owner WHERE id = 1 FOR SHARE")
                    .await?;
                let epoch: i64 = txn.query_one(&owner, &[]).await?.get(0);
                if epoch != mine {
                    return Err(Failure::from(schema::taken(mine)));
                }
                if !del_keys.is_empty() {
                    let delete = txn
                        .prepare_cached(
                            "DELETE FROM rill_kv WHERE (keyspace, key) IN \
                             (SELECT * FROM unnest($1::int2[], $2::bytea[]))",
                        )
                        .await?;
                    txn.execute(&delete, &[del_ks, del_keys]).await?;
                }
                if !put_keys.is_empty() {
                    let insert = txn
                        .prepare_cached(
                            "INSERT INTO rill_kv (keyspace, key, value) \
                             SELECT * FROM unnest($1::int2[], $2::bytea[], $3::bytea[]) \
                             ON CONFLICT (keyspace, key) DO UPDATE SET value = excluded.value",
                        )
                        .await?;
                    txn.execute(&insert, &[put_ks, put_keys, put_values])
                        .await?;
                }
                // Failed before here, nothing was committed: tried again.
                // Failed here, the outcome is unknown unless the database
                // said it rolled back (`retry.rs`).
                txn.commit().await.map_err(Failure::at_commit)
            }
        }));
        if result.is_err() {
            // Its outcome may be unknown (a connection cut at COMMIT): no
            // write goes on until the engine has reopened.
            self.failed.store(true, Ordering::Release);
        }
        result
    }

    /// Renews this process's hold on the database, which waits out any
    /// write transaction still open (one whose outcome was unknown ends
    /// before the engine reads the state again); then writes may resume.
    /// Fails for good if another process took the database.
    fn reopen(&self) -> StorageResult<()> {
        let pool = self.pool.clone();
        let mine = self.epoch.load(Ordering::Acquire);
        let epoch = self.run(async move { schema::renew_ownership(&pool, mine).await })?;
        self.epoch.store(epoch, Ordering::Release);
        self.failed.store(false, Ordering::Release);
        Ok(())
    }

    /// Postgres's autovacuum gives deleted rows' space back by itself.
    fn reclaim_space(&self) -> StorageResult<()> {
        Ok(())
    }

    fn disk_space(&self) -> Option<u64> {
        let pool = self.pool.clone();
        self.run(async move {
            let client = pool.get().await.map_err(pool_error)?;
            let row = client
                .query_one("SELECT pg_total_relation_size('rill_kv')", &[])
                .await
                .map_err(sql_error)?;
            Ok(row.get::<_, i64>(0).max(0) as u64)
        })
        .ok()
    }

    fn get(&self, keyspace: Keyspace, key: &[u8]) -> StorageResult<Option<Vec<u8>>> {
        let pool = self.pool.clone();
        let (keyspace, key) = (keyspace_id(keyspace), key.to_vec());
        self.run(with_retries(move || {
            let (pool, key) = (pool.clone(), key.clone());
            async move {
                let client = pool.get().await?;
                let statement = client
                    .prepare_cached("SELECT value FROM rill_kv WHERE keyspace = $1 AND key = $2")
                    .await?;
                let row = client.query_opt(&statement, &[&keyspace, &key]).await?;
                Ok::<_, Failure>(row.map(|row| row.get(0)))
            }
        }))
    }

    /// Page by page: each page as of its own read, not one snapshot.
    fn scan(
        &self,
        keyspace: Keyspace,
        start: &[u8],
        end: &[u8],
        visit: &mut Visitor<'_>,
    ) -> StorageResult<()> {
        if start >= end {
            return Ok(());
        }
        let mut after: Option<Vec<u8>> = None;
        loop {
            let page = self.page(keyspace, start, end, after.as_deref())?;
            let full = page.len() as i64 == PAGE;
            for (key, value) in &page {
                if visit(key, value).is_break() {
                    return Ok(());
                }
            }
            match page.into_iter().last() {
                Some((key, _)) if full => after = Some(key),
                _ => return Ok(()),
            }
        }
    }

    fn last_in_range(
        &self,
        keyspace: Keyspace,
        start: &[u8],
        end: &[u8],
    ) -> StorageResult<Option<(Vec<u8>, Vec<u8>)>> {
        if start >= end {
            return Ok(None);
        }
        let pool = self.pool.clone();
        let (keyspace, start, end) = (keyspace_id(keyspace), start.to_vec(), end.to_vec());
        self.run(with_retries(move || {
            let (pool, start, end) = (pool.clone(), start.clone(), end.clone());
            async move {
                let client = pool.get().await?;
                let statement = client
                    .prepare_cached(
                        "SELECT key, value FROM rill_kv WHERE keyspace = $1 AND key >= $2 \
                         AND key < $3 ORDER BY key DESC LIMIT 1",
                    )
                    .await?;
                let row = client
                    .query_opt(&statement, &[&keyspace, &start, &end])
                    .await?;
                Ok::<_, Failure>(row.map(|row| (row.get(0), row.get(1))))
            }
        }))
    }
}

fn keyspace_id(keyspace: Keyspace) -> i16 {
    keyspace.index() as i16
}
