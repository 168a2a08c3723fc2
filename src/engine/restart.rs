//! Restarting the engine in-process after a failed write.
//!
//! A write that fails (a full disk, a failed `fsync`) stops the committer:
//! seq nums, versions and deliveries past it were handed out in memory but
//! never reached the disk. Rather than carry on from that state, or wait
//! for a person to restart the process, the engine does what a restart
//! does, in place: the store is reopened (reading back what is durable,
//! see [`Storage::reopen`]), new layers are opened over it, recovering
//! exactly as at start, and they take the old ones' place. Requests in
//! flight on the old layers fail (writes with `503 unavailable`, sessions
//! end) and clients retry on the new ones.
//!
//! Why nothing is lost or invented:
//! - The old committer touches the storage no more after the failure, so
//!   everything it acknowledged was durable before the reopen, and the
//!   reopened store is checked against that count (the commit ledger).
//! - Clients of the failed write were told it failed; if it reached the
//!   disk after all, it appears once the engine reopens, whole (batches
//!   are atomic), like a write whose acknowledgement was lost to a crash.
//! - New layers recover from the store alone, as a new process would: the
//!   crash tests already check that path.
//!
//! [`Storage::reopen`]: crate::storage::Storage::reopen

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::error::{EngineError, EngineResult};
use super::{Engine, Layers};
use crate::storage::StorageError;

/// The longest wait between restart attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(5);
/// A restart this long after the previous one starts at once; sooner, it
/// waits (a disk with just enough room would otherwise reopen in a loop).
const SETTLED: Duration = Duration::from_secs(30);

impl Engine {
    /// Restarts the engine over the reopened store if a write has failed.
    /// Returns whether it restarted; an error means the store could not be
    /// reopened (writes stay refused; reads keep working unless the store
    /// could not even be opened).
    pub async fn restart_if_failed(&self) -> EngineResult<bool> {
        let _one_at_a_time = self.restarting.lock().await;
        let old = self.layers.load_full();
        let Some(failure) = old.core.write_failure() else {
            return Ok(false);
        };
        if self.closing.load(Ordering::Acquire) {
            return Ok(false);
        }
        let started = Instant::now();
        let (storage, metrics) = (self.storage.clone(), self.metrics.clone());
        let tails = self.tails.clone();
        let reopened = tokio::task::spawn_blocking(move || {
            storage.reopen()?;
            Layers::open(storage, metrics, &tails)
        })
        .await;
        let layers = match reopened {
            Ok(layers) => Arc::new(layers?),
            Err(_) => {
                return Err(EngineError::Storage(StorageError::Io(
                    "reopening the storage panicked".into(),
                )))
            }
        };
        self.layers.store(layers.clone());
        // A shutdown that began meanwhile told the old layers only.
        if self.closing.load(Ordering::Acquire) {
            layers.core.begin_shutdown();
        }
        let restarts = self.restarts.fetch_add(1, Ordering::Relaxed) + 1;
        self.metrics.commits.restarts.inc();
        // The old layers' sessions end and their tasks stop; their writes
        // already fail without reaching the storage.
        old.core.shutdown().await;
        tracing::warn!(
            %failure,
            restarts,
            took_ms = started.elapsed().as_millis() as u64,
            "the storage was reopened after a failed write; writes resume"
        );
        Ok(true)
    }

    /// Restarts the engine whenever a write fails, then again, with a
    /// growing wait, while the store cannot be reopened. Gives up on a
    /// store found damaged (it would be found so again; the operator is
    /// told, and `/health` says so). Ends when the engine is dropped or
    /// shuts down.
    pub fn spawn_restarts(self: &Arc<Self>) -> tokio::task::JoinHandle<()> {
        let engine = Arc::downgrade(self);
        tokio::spawn(async move {
            let mut backoff = Backoff::default();
            loop {
                // Waits on the current layers without holding the engine.
                let Some(waiting) = engine
                    .upgrade()
                    .map(|e| e.streams().write_failed_or_closing())
                else {
                    return;
                };
                waiting.await;
                tokio::time::sleep(backoff.before_next()).await;
                let Some(engine) = engine.upgrade() else {
                    return;
                };
                if engine.closing.load(Ordering::Acquire) {
                    return;
                }
                match engine.restart_if_failed().await {
                    Ok(_) => backoff.succeeded(),
                    Err(EngineError::Storage(StorageError::Corrupt(why))) => {
                        tracing::error!(
                            %why,
                            "the storage is damaged: writes stay refused until the server is \
                             restarted (which will refuse to start and say what to do)"
                        );
                        return;
                    }
                    Err(err) => {
                        backoff.failed();
                        tracing::warn!(
                            error = %err,
                            retry_in_s = backoff.wait.as_secs(),
                            "writes are still refused: the storage cannot be reopened yet"
                        );
                    }
                }
            }
        })
    }
}

/// How long to wait before the next restart attempt: nothing after a
/// quiet spell, then doubling from a second to [`MAX_BACKOFF`] while
/// attempts fail or failures come back soon after a restart.
#[derive(Default)]
struct Backoff {
    wait: Duration,
    last_restart: Option<Instant>,
}

impl Backoff {
    fn before_next(&mut self) -> Duration {
        if self.last_restart.is_some_and(|at| at.elapsed() > SETTLED) {
            self.wait = Duration::ZERO;
        }
        self.wait
    }

    fn failed(&mut self) {
        self.wait = (self.wait * 2).clamp(Duration::from_secs(1), MAX_BACKOFF);
    }

    fn succeeded(&mut self) {
        // The next failure soon after this restart waits, and longer.
        self.failed();
        self.last_restart = Some(Instant::now());
    }
}
