//! Calls that fail for a passing reason are tried again, where that is
//! safe: a connection the database dropped (a restart, a failover, an
//! administrator's `pg_terminate_backend`), a serialization failure or a
//! deadlock (which distributed Postgres-compatible databases report far
//! more often than Postgres does, and expect clients to retry).
//!
//! Reads are always safe to try again. A write transaction is, if it
//! failed before its `COMMIT` was sent (the database rolls back what a
//! dropped connection left open), or if the `COMMIT` itself reported the
//! transaction rolled back (a serialization failure, a deadlock). A `COMMIT` that failed otherwise has
//! an unknown outcome: never tried again; the engine restarts over what
//! the database holds (`engine/restart.rs`).

use std::future::Future;
use std::time::Duration;

use tokio_postgres::error::SqlState;

use super::connect::{pool_error, sql_error};
use crate::storage::kv::{StorageError, StorageResult};

/// Tries in all, of a call whose failures pass.
const ATTEMPTS: u32 = 6;
/// The wait before the second try; doubled before each later one.
const FIRST_BACKOFF: Duration = Duration::from_millis(25);

/// How one try failed: what it means to the storage, and whether trying
/// again is safe and may succeed.
pub(super) struct Failure {
    pub error: StorageError,
    pub again: bool,
}

impl From<tokio_postgres::Error> for Failure {
    fn from(err: tokio_postgres::Error) -> Self {
        let again = passing(&err);
        Self {
            error: sql_error(err),
            again,
        }
    }
}

impl From<deadpool_postgres::PoolError> for Failure {
    fn from(err: deadpool_postgres::PoolError) -> Self {
        // A connection that could not be opened, or not in time: the pool
        // waited already.
        let again = matches!(&err, deadpool_postgres::PoolError::Backend(e) if passing(e));
        Self {
            error: pool_error(err),
            again,
        }
    }
}

impl From<StorageError> for Failure {
    fn from(error: StorageError) -> Self {
        Self {
            error,
            again: false,
        }
    }
}

impl Failure {
    /// A `COMMIT` that failed: tried again only if the database said it
    /// rolled the transaction back.
    pub(super) fn at_commit(err: tokio_postgres::Error) -> Self {
        let again = aborted(&err);
        Self {
            error: sql_error(err),
            again,
        }
    }
}

/// Runs `attempt` until it succeeds, fails for good, or has been tried
/// [`ATTEMPTS`] times.
pub(super) async fn with_retries<T, F, Fut>(mut attempt: F) -> StorageResult<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, Failure>>,
{
    let mut backoff = FIRST_BACKOFF;
    let mut tried = 1;
    loop {
        match attempt().await {
            Ok(value) => return Ok(value),
            Err(failure) if failure.again && tried < ATTEMPTS => {
                tracing::warn!(error = %failure.error, tried, "a Postgres call failed; trying again");
                tokio::time::sleep(backoff).await;
                backoff *= 2;
                tried += 1;
            }
            Err(failure) => return Err(failure.error),
        }
    }
}

/// The database rolled the transaction back for a passing reason (a
/// serialization failure, a deadlock): nothing of it was committed, and
/// it may succeed if tried again. Not all of class 40: 40003 says the
/// outcome is unknown (CockroachDB's "ambiguous result").
fn aborted(err: &tokio_postgres::Error) -> bool {
    err.code().is_some_and(|code| {
        *code == SqlState::T_R_SERIALIZATION_FAILURE || *code == SqlState::T_R_DEADLOCK_DETECTED
    })
}

/// Trying the statement again, on another connection, may succeed.
fn passing(err: &tokio_postgres::Error) -> bool {
    if aborted(err) || err.is_closed() {
        return true;
    }
    match err.code() {
        // The connection failed, or the server is shutting down or
        // starting up (class 08, 57P01–57P03).
        Some(code) => {
            code.code().starts_with("08")
                || *code == SqlState::ADMIN_SHUTDOWN
                || *code == SqlState::CRASH_SHUTDOWN
                || *code == SqlState::CANNOT_CONNECT_NOW
        }
        // No answer from the server: the connection broke.
        None => std::error::Error::source(err).is_some_and(|source| source.is::<std::io::Error>()),
    }
}
