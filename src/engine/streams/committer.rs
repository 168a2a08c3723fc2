//! Group commit: one thread turns many small writes into few fsyncs.
//!
//! Every durable write in the engine (appends from all streams, metadata
//! changes, trims) is sent here. The committer thread takes whatever has
//! queued up, writes it as one atomic batch with one fsync, and only then
//! runs each write's completion, in submission order. While one fsync is in
//! flight the next group gathers on its own, so the batch grows exactly as
//! fast as load does: an idle server commits a lone append immediately, a
//! busy one amortizes each fsync over hundreds of appends.
//!
//! Completions run in order, which is what lets a stream's task hand out seq
//! nums before its earlier appends are durable: they become durable, and
//! visible to readers, in the same order.
//!
//! A failed write is fatal to this committer (fail-stop): seq nums past it
//! were already handed out, so it fails everything after it, without
//! touching the storage again, until the engine restarts over the reopened
//! store and recovery reads back what is really on disk (see
//! `engine/restart.rs`).

use std::sync::Arc;
use std::thread;

use tokio::sync::{mpsc, watch};

use super::keys;
use super::tails::{TailFeed, TailNotice};
use crate::metrics::Metrics;
use crate::storage::{BatchOp, Keyspace, Storage, StorageError, StorageResult, WriteBatch};

/// Runs on the committer thread once the write's fate is known.
pub type Completion = Box<dyn FnOnce(StorageResult<()>) + Send>;

/// Stop gathering once a group holds this many bytes; bigger groups only
/// delay the first acknowledgement in them.
const MAX_GROUP_BYTES: usize = 32 * 1024 * 1024;

struct QueuedBatch {
    batch: WriteBatch,
    completion: Completion,
}

enum Request {
    Write(QueuedBatch),
    /// Finish everything queued before this, then exit the thread.
    Close,
}

#[derive(Clone)]
pub struct Committer {
    tx: mpsc::UnboundedSender<Request>,
    /// The write failure that stopped the committer, if one did.
    failure: Arc<watch::Sender<Option<StorageError>>>,
}

impl Committer {
    /// Starts the committer thread. It exits on [`Committer::close`], or once
    /// every `Committer` clone is dropped, after draining the queue.
    /// Each group commit is counted in `metrics` (size and duration).
    /// A commit that deletes a stream is told to `tails`' listeners.
    pub fn start(
        storage: Arc<dyn Storage>,
        metrics: Arc<Metrics>,
        tails: TailFeed,
    ) -> (Self, thread::JoinHandle<()>) {
        let (tx, rx) = mpsc::unbounded_channel();
        let failure = Arc::new(watch::Sender::new(None));
        let recorded = failure.clone();
        let handle = thread::Builder::new()
            .name("rill-committer".into())
            .spawn(move || run(storage, rx, recorded, metrics, tails))
            .expect("failed to spawn the committer thread");
        (Self { tx, failure }, handle)
    }

    /// The write failure that stopped durable writes, if any: from then
    /// on, every write through this committer fails.
    pub fn failure(&self) -> Option<StorageError> {
        self.failure.borrow().clone()
    }

    /// Resolves once a write has failed (at once if one has).
    pub fn failed(&self) -> impl std::future::Future<Output = ()> + use<> {
        let mut failure = self.failure.subscribe();
        async move {
            let _ = failure.wait_for(Option::is_some).await;
        }
    }

    /// Queues `batch`; `completion` runs after it is durable or has failed.
    pub fn submit(&self, batch: WriteBatch, completion: Completion) {
        let message = Request::Write(QueuedBatch { batch, completion });
        if let Err(mpsc::error::SendError(Request::Write(pending))) = self.tx.send(message) {
            (pending.completion)(Err(StorageError::Closed));
        }
    }

    /// Asks the thread to exit once everything submitted so far is durable.
    /// Later submissions fail with [`StorageError::Closed`].
    pub fn close(&self) {
        let _ = self.tx.send(Request::Close);
    }

    /// Queues `batch` and waits until it is durable.
    pub async fn commit(&self, batch: WriteBatch) -> StorageResult<()> {
        self.queue(batch).await
    }

    /// Queues `batch` now and returns a future of its durability. Batches
    /// become durable in the order they are queued, so a caller that queues
    /// under its own lock and waits outside it keeps its place in line
    /// without holding the lock across an fsync.
    pub fn queue(
        &self,
        batch: WriteBatch,
    ) -> impl std::future::Future<Output = StorageResult<()>> + use<> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.submit(
            batch,
            Box::new(move |result| {
                let _ = tx.send(result);
            }),
        );
        async move { rx.await.unwrap_or(Err(StorageError::Closed)) }
    }

    /// A future that resolves once everything queued before this call is
    /// durable (or has failed): an empty batch through the queue.
    pub fn barrier(&self) -> impl std::future::Future<Output = StorageResult<()>> + use<> {
        self.queue(WriteBatch::default())
    }
}

fn run(
    storage: Arc<dyn Storage>,
    mut rx: mpsc::UnboundedReceiver<Request>,
    recorded: Arc<watch::Sender<Option<StorageError>>>,
    metrics: Arc<Metrics>,
    tails: TailFeed,
) {
    // The first failure; later writes fail with it (a full disk stays a
    // full disk to the client), or as poisoned.
    let mut failed: Option<StorageError> = None;
    let mut closing = false;
    while !closing {
        let first = match rx.blocking_recv() {
            Some(Request::Write(pending)) => pending,
            Some(Request::Close) | None => break,
        };
        let mut group = vec![first];
        let mut size = group[0].batch.approximate_size();
        while size < MAX_GROUP_BYTES {
            match rx.try_recv() {
                Ok(Request::Write(next)) => {
                    size += next.batch.approximate_size();
                    group.push(next);
                }
                Ok(Request::Close) => {
                    closing = true;
                    break;
                }
                Err(_) => break,
            }
        }

        let mut combined = WriteBatch::default();
        let mut completions = Vec::with_capacity(group.len());
        for pending in group {
            combined.extend(pending.batch);
            completions.push(pending.completion);
        }

        // Whether this group reaches the storage (none does after a failure).
        let tried = failed.is_none();
        let result = if let Some(first) = &failed {
            Err(first.clone())
        } else if combined.is_empty() {
            Ok(())
        } else {
            let started = std::time::Instant::now();
            let writes = completions.len();
            let deleted = if tails.listened() {
                deleted_streams(&combined)
            } else {
                Vec::new()
            };
            let result = storage.write(combined);
            metrics.commits.committed(writes, size, started.elapsed());
            if result.is_ok() {
                for id in deleted {
                    tails.publish(TailNotice { id, visible: None });
                }
            }
            result
        };
        if let (Err(err), None) = (&result, &failed) {
            tracing::error!(error = %err, "durable write failed; refusing further writes until the storage is reopened");
            recorded.send_replace(Some(err.clone()));
            failed = Some(err.clone());
        }
        // The group whose write failed learns that it failed, and that its
        // outcome is unknown (the write may have reached the disk, even on
        // a full one); later groups were never tried, and hear why: a full
        // disk, or writes paused until the storage is reopened.
        for completion in completions {
            completion(match &result {
                Ok(()) => Ok(()),
                Err(StorageError::Full(why)) if tried => Err(StorageError::Io(format!(
                    "the disk is full, and this write may or may not have been made durable \
                     ({why})"
                ))),
                Err(err) if tried => Err(err.clone()),
                Err(StorageError::Full(why)) => Err(StorageError::Full(why.clone())),
                Err(_) => Err(StorageError::Poisoned),
            });
        }
    }
    // Fail whatever raced in after the close instead of leaving it hanging.
    rx.close();
    while let Ok(message) = rx.try_recv() {
        if let Request::Write(pending) = message {
            (pending.completion)(Err(StorageError::Closed));
        }
    }
}

/// The streams whose state `batch` deletes: the streams it deletes.
fn deleted_streams(batch: &WriteBatch) -> Vec<u64> {
    batch
        .ops
        .iter()
        .filter_map(|op| match op {
            BatchOp::Delete(Keyspace::Meta, key) => keys::state_id_from_key(key),
            _ => None,
        })
        .collect()
}
