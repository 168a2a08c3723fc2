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

use super::error::EngineResult;
use super::{Engine, Layers};

/// The longest wait between failed restart attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(5);

impl Engine {
    /// Restarts the engine over the reopened store if a write has failed.
    /// Returns whether it restarted; an error means the store could not be
    /// reopened yet (writes stay refused, reads keep working).
    pub async fn restart_if_failed(&self) -> EngineResult<bool> {
        let _one_at_a_time = self.restarting.lock().await;
        let old = self.layers.load_full();
        let Some(failure) = old.core.write_failure() else {
            return Ok(false);
        };
        if old.core.is_closing() {
            return Ok(false);
        }
        let started = Instant::now();
        let storage = self.storage.clone();
        let reopened = tokio::task::spawn_blocking(move || {
            storage.reopen()?;
            Layers::open(storage)
        })
        .await;
        let layers = match reopened {
            Ok(layers) => layers?,
            Err(_) => {
                return Err(super::error::EngineError::Storage(
                    crate::storage::StorageError::Io("reopening the storage panicked".into()),
                ))
            }
        };
        self.layers.store(Arc::new(layers));
        let restarts = self.restarts.fetch_add(1, Ordering::Relaxed) + 1;
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
}

impl Engine {
    /// Restarts the engine whenever a write fails, at once, then with
    /// [`Backoff`] while the store cannot be reopened. Ends when the engine
    /// is dropped or shuts down.
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
                tokio::time::sleep(backoff.wait).await;
                let Some(engine) = engine.upgrade() else {
                    return;
                };
                if engine.streams().is_closing() {
                    return;
                }
                backoff.record(engine.restart_if_failed().await);
            }
        })
    }
}

/// How long to wait before the next restart attempt: nothing at first,
/// then doubling from a second to [`MAX_BACKOFF`] while attempts fail, so
/// a disk that stays full is probed, and logged, only now and then.
#[derive(Default)]
struct Backoff {
    wait: Duration,
}

impl Backoff {
    /// Records an attempt's outcome: a failure pushes the next one back.
    fn record(&mut self, attempt: EngineResult<bool>) {
        match attempt {
            Ok(_) => self.wait = Duration::ZERO,
            Err(err) => {
                self.wait = (self.wait * 2).clamp(Duration::from_secs(1), MAX_BACKOFF);
                tracing::warn!(
                    error = %err,
                    retry_in_s = self.wait.as_secs(),
                    "writes are still refused: the storage cannot be reopened yet"
                );
            }
        }
    }
}
