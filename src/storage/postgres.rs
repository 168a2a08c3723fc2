//! Storage on Postgres (`rill serve --storage postgres://…`): every
//! keyspace in one table, `rill_kv (keyspace, key, value)`, keyed by
//! `(keyspace, key)`. `bytea` compares byte by byte, so a range scan
//! returns keys in the order fjall does.
//!
//! A write batch is one transaction, in two statements whatever its size:
//! the batch's operations are folded per key first (the last one wins, as
//! applying them in order would give), then its deletes go in one
//! `DELETE … unnest(…)` and its puts in one `INSERT … SELECT unnest(…) ON
//! CONFLICT DO UPDATE`. The committer groups many appends into one batch,
//! so one transaction commits many streams' appends.
//!
//! The `Storage` trait is blocking, and tokio-postgres is not: the store
//! runs its own small runtime, holding a connection pool
//! (deadpool-postgres), and each call waits on it from the caller's
//! thread. A call from an async task blocks that worker thread for a
//! round trip; the engine's hot paths already run storage work off the
//! async threads (the committer's thread, `spawn_blocking` for scans).
//!
//! SQL relied on, kept to what CockroachDB and YugabyteDB also run:
//! `bytea` keys compared bytewise, multi-column primary keys, `INSERT …
//! ON CONFLICT … DO UPDATE`, `unnest` of several arrays, `CREATE TABLE IF
//! NOT EXISTS`, transactions at the default isolation. Only Postgres is
//! tested here.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod};
use tokio_postgres::error::SqlState;

use super::kv::{BatchOp, Keyspace, Storage, StorageError, StorageResult, Visitor, WriteBatch};

/// Rows fetched per page of a scan.
const PAGE: i64 = 1000;
/// Connections the pool keeps at most.
const POOL_SIZE: usize = 16;

/// The schema, by version: each step runs once, in order, in the
/// transaction that records it (`rill_schema`).
const MIGRATIONS: &[&str] = &["CREATE TABLE IF NOT EXISTS rill_kv (
        keyspace SMALLINT NOT NULL,
        key BYTEA NOT NULL,
        value BYTEA NOT NULL,
        PRIMARY KEY (keyspace, key)
    )"];

pub struct PostgresStorage {
    /// Owns the pool's connections; shut down in the background on drop
    /// (a store may be dropped on an async thread, where waiting is not
    /// allowed).
    runtime: Mutex<Option<tokio::runtime::Runtime>>,
    handle: tokio::runtime::Handle,
    pool: Pool,
    /// Set by a failed write, cleared by `reopen`: writes are refused in
    /// between (the trait's fail-stop rule).
    failed: AtomicBool,
}

impl PostgresStorage {
    /// Connects to `url` (a `postgres://` URL; `sslmode` as libpq has it)
    /// and brings the schema up to date.
    pub fn open(url: &str) -> Result<Self, String> {
        let config: tokio_postgres::Config = url
            .parse()
            .map_err(|e: tokio_postgres::Error| format!("not a Postgres URL: {e}"))?;
        let manager_config = ManagerConfig {
            recycling_method: RecyclingMethod::Fast,
        };
        let manager = match config.get_ssl_mode() {
            tokio_postgres::config::SslMode::Disable => {
                Manager::from_config(config, tokio_postgres::NoTls, manager_config)
            }
            _ => {
                let tls = crate::postgres::tls().map_err(|e| format!("TLS: {e}"))?;
                Manager::from_config(config, tls, manager_config)
            }
        };
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("rill-postgres")
            .enable_all()
            .build()
            .map_err(|e| format!("cannot start the Postgres runtime: {e}"))?;
        let handle = runtime.handle().clone();
        let pool = {
            let _entered = runtime.enter();
            Pool::builder(manager)
                .max_size(POOL_SIZE)
                .build()
                .map_err(|e| format!("cannot make the connection pool: {e}"))?
        };
        let store = Self {
            runtime: Mutex::new(Some(runtime)),
            handle,
            pool,
            failed: AtomicBool::new(false),
        };
        store
            .migrate()
            .map_err(|e| format!("cannot prepare the schema: {e}"))?;
        Ok(store)
    }

    /// Runs `work` on the store's runtime and waits for it here.
    fn run<T: Send + 'static>(
        &self,
        work: impl Future<Output = StorageResult<T>> + Send + 'static,
    ) -> StorageResult<T> {
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        self.handle.spawn(async move {
            let _ = tx.send(work.await);
        });
        rx.recv().map_err(|_| StorageError::Closed)?
    }

    fn migrate(&self) -> StorageResult<()> {
        let pool = self.pool.clone();
        self.run(async move {
            let mut client = pool.get().await.map_err(pool_error)?;
            let txn = client.transaction().await.map_err(sql_error)?;
            txn.batch_execute("CREATE TABLE IF NOT EXISTS rill_schema (version INT NOT NULL)")
                .await
                .map_err(sql_error)?;
            let version: i32 = txn
                .query_opt("SELECT version FROM rill_schema", &[])
                .await
                .map_err(sql_error)?
                .map_or(0, |row| row.get(0));
            for (step, sql) in MIGRATIONS.iter().enumerate().skip(version as usize) {
                txn.batch_execute(sql).await.map_err(sql_error)?;
                tracing::info!(version = step + 1, "Postgres schema migrated");
            }
            let latest = MIGRATIONS.len() as i32;
            if version == 0 {
                txn.execute("INSERT INTO rill_schema (version) VALUES ($1)", &[&latest])
                    .await
                    .map_err(sql_error)?;
            } else if version < latest {
                txn.execute("UPDATE rill_schema SET version = $1", &[&latest])
                    .await
                    .map_err(sql_error)?;
            } else if version > latest {
                return Err(StorageError::Corrupt(format!(
                    "the database's schema is version {version}, newer than this Rill knows \
                     ({latest}): run a newer Rill"
                )));
            }
            txn.commit().await.map_err(sql_error)
        })
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
        self.run(async move {
            let client = pool.get().await.map_err(pool_error)?;
            let rows = match after {
                None => {
                    client
                        .query(
                            "SELECT key, value FROM rill_kv WHERE keyspace = $1 AND key >= $2 \
                             AND key < $3 ORDER BY key LIMIT $4",
                            &[&keyspace, &start, &end, &PAGE],
                        )
                        .await
                }
                Some(after) => {
                    client
                        .query(
                            "SELECT key, value FROM rill_kv WHERE keyspace = $1 AND key > $2 \
                             AND key < $3 ORDER BY key LIMIT $4",
                            &[&keyspace, &after, &end, &PAGE],
                        )
                        .await
                }
            }
            .map_err(sql_error)?;
            Ok(rows
                .into_iter()
                .map(|row| (row.get(0), row.get(1)))
                .collect())
        })
    }
}

impl Drop for PostgresStorage {
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
        let result = self.run(async move {
            let mut client = pool.get().await.map_err(pool_error)?;
            let txn = client.transaction().await.map_err(sql_error)?;
            if !del_keys.is_empty() {
                txn.execute(
                    "DELETE FROM rill_kv WHERE (keyspace, key) IN \
                     (SELECT * FROM unnest($1::int2[], $2::bytea[]))",
                    &[&del_ks, &del_keys],
                )
                .await
                .map_err(sql_error)?;
            }
            if !put_keys.is_empty() {
                txn.execute(
                    "INSERT INTO rill_kv (keyspace, key, value) \
                     SELECT * FROM unnest($1::int2[], $2::bytea[], $3::bytea[]) \
                     ON CONFLICT (keyspace, key) DO UPDATE SET value = excluded.value",
                    &[&put_ks, &put_keys, &put_values],
                )
                .await
                .map_err(sql_error)?;
            }
            txn.commit().await.map_err(sql_error)
        });
        if result.is_err() {
            // Its outcome may be unknown (a connection cut at COMMIT): no
            // write goes on until the engine has reopened.
            self.failed.store(true, Ordering::Release);
        }
        result
    }

    /// Nothing is held in memory: once the database answers again, writes
    /// may resume.
    fn reopen(&self) -> StorageResult<()> {
        let pool = self.pool.clone();
        self.run(async move {
            let client = pool.get().await.map_err(pool_error)?;
            client.simple_query("SELECT 1").await.map_err(sql_error)?;
            Ok(())
        })?;
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
        self.run(async move {
            let client = pool.get().await.map_err(pool_error)?;
            let row = client
                .query_opt(
                    "SELECT value FROM rill_kv WHERE keyspace = $1 AND key = $2",
                    &[&keyspace, &key],
                )
                .await
                .map_err(sql_error)?;
            Ok(row.map(|row| row.get(0)))
        })
    }

    /// Page by page: what a scan sees is each page as of its own read (the
    /// engine scans only what it knows is durable and settled).
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
        self.run(async move {
            let client = pool.get().await.map_err(pool_error)?;
            let row = client
                .query_opt(
                    "SELECT key, value FROM rill_kv WHERE keyspace = $1 AND key >= $2 \
                     AND key < $3 ORDER BY key DESC LIMIT 1",
                    &[&keyspace, &start, &end],
                )
                .await
                .map_err(sql_error)?;
            Ok(row.map(|row| (row.get(0), row.get(1))))
        })
    }
}

fn keyspace_id(keyspace: Keyspace) -> i16 {
    keyspace.index() as i16
}

fn pool_error(err: deadpool_postgres::PoolError) -> StorageError {
    match err {
        deadpool_postgres::PoolError::Backend(err) => sql_error(err),
        other => StorageError::Io(format!("Postgres: {other}")),
    }
}

/// A full disk on the database's side is said as one; the rest as I/O.
fn sql_error(err: tokio_postgres::Error) -> StorageError {
    let said = crate::postgres::describe(&err);
    match err.code() {
        Some(code) if *code == SqlState::DISK_FULL => StorageError::Full(said),
        _ => StorageError::Io(said),
    }
}
