//! Connecting: the URL's settings with Rill's timeouts, TLS as the URL
//! asks, the connection pool, and the runtime the store's calls run on.

use std::future::Future;
use std::time::Duration;

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};
use tokio_postgres::error::SqlState;

use crate::storage::kv::{StorageError, StorageResult};

/// Connections the pool keeps at most.
pub(super) const POOL_SIZE: usize = 16;
/// How long a connection may take to open, and a call to wait for one.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long any one call may take. A write past it counts as failed (its
/// outcome unknown): writes stop until the engine reopens the store.
pub(super) const CALL_TIMEOUT: Duration = Duration::from_secs(30);
/// How long the server lets a Rill session sit idle inside a transaction.
/// Rill's transactions send their statements back to back: one idle this
/// long belongs to a process that is paused or cut off.
const IDLE_IN_TRANSACTION: Duration = Duration::from_secs(5);

/// Connections the lease's pool keeps at most (`lease.rs`): its calls
/// never wait behind the engine's.
pub(super) const LEASE_POOL_SIZE: usize = 4;

/// The pool for `url`, of up to `size` connections, built on `runtime`.
///
/// - TLS: `sslmode=disable` and `prefer` (the default) connect in the
///   clear; `require`, `verify-ca` and `verify-full` use TLS, verified
///   against the web's root certificates (libpq's `require` would not
///   verify; a self-signed server needs `prefer`, on a network you
///   trust).
/// - A connection that stops answering is found out within about a
///   minute (TCP keepalives, `tcp_user_timeout`), not hours.
/// - `synchronous_commit` is on for Rill's sessions whatever the server's
///   default (an acknowledged write must be durable), and a session idle
///   inside a transaction for [`IDLE_IN_TRANSACTION`] is ended by the
///   server: a paused or cut-off owner's transaction cannot hold the
///   owner row (and with it a takeover) for longer. Options the URL sets
///   come after these and win.
pub(super) fn pool(
    url: &str,
    size: usize,
    runtime: &tokio::runtime::Runtime,
) -> Result<Pool, String> {
    let mut config: tokio_postgres::Config = url
        .parse()
        .map_err(|e: tokio_postgres::Error| format!("not a Postgres URL: {e}"))?;
    if config.get_connect_timeout().is_none() {
        config.connect_timeout(CONNECT_TIMEOUT);
    }
    // Rill's sessions, as `pg_stat_activity` names them.
    if config.get_application_name().is_none() {
        config.application_name("rill");
    }
    config
        .keepalives(true)
        .keepalives_idle(Duration::from_secs(30))
        .keepalives_interval(Duration::from_secs(10))
        .keepalives_retries(3)
        .tcp_user_timeout(Duration::from_secs(60));
    let ours = format!(
        "-c synchronous_commit=on -c idle_in_transaction_session_timeout={}",
        IDLE_IN_TRANSACTION.as_millis()
    );
    let options = match config.get_options() {
        Some(theirs) => format!("{ours} {theirs}"),
        None => ours,
    };
    config.options(&options);
    let manager_config = ManagerConfig {
        recycling_method: RecyclingMethod::Fast,
    };
    use tokio_postgres::config::SslMode;
    let manager = match config.get_ssl_mode() {
        SslMode::Disable | SslMode::Prefer => {
            Manager::from_config(config, tokio_postgres::NoTls, manager_config)
        }
        _ => {
            let tls = crate::postgres::tls().map_err(|e| format!("TLS: {e}"))?;
            Manager::from_config(config, tls, manager_config)
        }
    };
    let _entered = runtime.enter();
    Pool::builder(manager)
        .max_size(size)
        .runtime(Runtime::Tokio1)
        .wait_timeout(Some(CONNECT_TIMEOUT))
        .create_timeout(Some(CONNECT_TIMEOUT))
        .recycle_timeout(Some(CONNECT_TIMEOUT))
        .build()
        .map_err(|e| format!("cannot make the connection pool: {e}"))
}

/// The store's own runtime: two threads, whatever the server's.
pub(super) fn runtime() -> Result<tokio::runtime::Runtime, String> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("rill-postgres")
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the Postgres runtime: {e}"))
}

/// Runs `work` on `handle`'s runtime, within [`CALL_TIMEOUT`], and waits
/// for it on this thread (a plain blocking wait: callable from an async
/// task of another runtime, never from the store's own).
pub(super) fn block_on<T: Send + 'static>(
    handle: &tokio::runtime::Handle,
    work: impl Future<Output = StorageResult<T>> + Send + 'static,
) -> StorageResult<T> {
    let (tx, rx) = std::sync::mpsc::sync_channel(1);
    handle.spawn(async move {
        let answer = match tokio::time::timeout(CALL_TIMEOUT, work).await {
            Ok(answer) => answer,
            Err(_) => Err(StorageError::Io(format!(
                "Postgres did not answer within {CALL_TIMEOUT:?}"
            ))),
        };
        let _ = tx.send(answer);
    });
    rx.recv().map_err(|_| {
        StorageError::Io("the Postgres call ended without an answer (its task failed)".into())
    })?
}

pub(super) fn pool_error(err: deadpool_postgres::PoolError) -> StorageError {
    match err {
        deadpool_postgres::PoolError::Backend(err) => sql_error(err),
        other => StorageError::Io(format!("Postgres: {other}")),
    }
}

/// A full disk on the database's side is said as one; the rest as I/O.
pub(super) fn sql_error(err: tokio_postgres::Error) -> StorageError {
    let said = crate::postgres::describe(&err);
    match err.code() {
        Some(code) if *code == SqlState::DISK_FULL => StorageError::Full(said),
        _ => StorageError::Io(said),
    }
}
