//! The lease a node holds as owner, kept renewed by a task of its own from
//! the moment it is taken (the engine's opening included), on the store's
//! lease connections (`storage/postgres/lease.rs`): a slow heartbeat, a
//! tick of the node or the engine's need for connections never hold a
//! renewal up. (It does wait for the write transactions in flight, which
//! hold the owner row: milliseconds.)

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::storage::{PostgresStorage, StorageError, StorageResult};

/// Of a lease, the part an owner serves in: it stops serving this long
/// before the lease it renewed could have ended in the database, so that
/// clocks that run at slightly different rates never let it serve while
/// another node already does.
const SERVE_FRACTION: f64 = 0.8;

/// What the renewals found, read by the node on each request and tick.
pub struct Renewal {
    ttl: Duration,
    /// Until when the owner may serve: a renewal sent at `t` makes it
    /// `t` + [`SERVE_FRACTION`] of the lease. Writes are safe without it
    /// (the epoch fences them); reads need it, as a paused owner that
    /// wakes up must not answer from a state another node has moved on
    /// from.
    serve_until: Mutex<Option<Instant>>,
    /// Why the lease is gone, once it is.
    lost: Mutex<Option<&'static str>>,
}

impl Renewal {
    fn new(taken_at: Instant, ttl: Duration) -> Self {
        let renewal = Self {
            ttl,
            serve_until: Mutex::new(None),
            lost: Mutex::new(None),
        };
        renewal.confirmed(taken_at);
        renewal
    }

    /// The lease was taken or renewed by a call sent at `sent`.
    fn confirmed(&self, sent: Instant) {
        *lock(&self.serve_until) = Some(sent + self.ttl.mul_f64(SERVE_FRACTION));
    }

    fn lose(&self, why: &'static str) {
        *lock(&self.serve_until) = None;
        *lock(&self.lost) = Some(why);
    }

    /// Whether the lease is surely still this node's.
    pub fn may_serve(&self) -> bool {
        lock(&self.serve_until).is_some_and(|until| Instant::now() < until)
    }

    /// Why the lease is gone, if it is.
    pub fn lost(&self) -> Option<&'static str> {
        *lock(&self.lost)
    }
}

/// The task renewing a lease.
pub struct Renewer {
    pub renewal: Arc<Renewal>,
    task: tokio::task::JoinHandle<()>,
}

impl Renewer {
    /// Renews `node`'s lease (taken by a call sent at `taken_at`) every
    /// `tick`, until it is lost or [`Self::stop`]. A renewal that has not
    /// answered within a lease counts as failed.
    pub fn spawn(
        store: Arc<PostgresStorage>,
        node: String,
        taken_at: Instant,
        ttl: Duration,
        tick: Duration,
    ) -> Self {
        let renewal = Arc::new(Renewal::new(taken_at, ttl));
        let state = renewal.clone();
        let task = tokio::spawn(async move {
            let mut renewed = taken_at;
            loop {
                tokio::time::sleep(tick).await;
                let sent = Instant::now();
                let (store, node) = (store.clone(), node.clone());
                let renewal = blocking(move || store.renew_lease(&node, ttl));
                let answer = tokio::time::timeout(ttl, renewal)
                    .await
                    .unwrap_or_else(|_| Err(StorageError::Io("no answer within a lease".into())));
                match answer {
                    Ok(true) => {
                        renewed = sent;
                        state.confirmed(sent);
                    }
                    Ok(false) => return state.lose("another node took the lease"),
                    Err(err) if renewed.elapsed() >= ttl => {
                        tracing::warn!(%err, "renewing the lease failed for a whole lease");
                        return state.lose("the lease could not be renewed");
                    }
                    Err(err) => tracing::warn!(%err, "renewing the lease failed; retrying"),
                }
            }
        });
        Self { renewal, task }
    }

    pub fn stop(&self) {
        self.task.abort();
    }
}

/// Runs a blocking storage call off the async workers.
pub async fn blocking<T: Send + 'static>(
    call: impl FnOnce() -> StorageResult<T> + Send + 'static,
) -> StorageResult<T> {
    tokio::task::spawn_blocking(call)
        .await
        .unwrap_or_else(|_| Err(StorageError::Io("a storage call panicked".into())))
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|p| p.into_inner())
}
