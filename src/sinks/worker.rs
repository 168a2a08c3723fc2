//! One sink's worker: receives a batch from the sink's consumer, delivers it,
//! and settles it. Deliveries go one batch at a time, in the order the
//! consumer hands them out, so the destination sees each key's messages in
//! order (and all messages, as a single worker delivers them).
//!
//! A batch that fails is tried again after a backoff (doubling from
//! `retry.initial_ms` to `retry.max_ms`), its messages kept in flight
//! meanwhile, up to `max_deliver` attempts. A batch that cannot be
//! delivered (refused, or out of attempts) is split in two and each half
//! tried on its own, so that one poison message is isolated. A single
//! message goes to the dead letters when it is refused, or when it ran out
//! of attempts while the destination works: others of its batch got
//! through, or a probe of the destination does and the message, tried once
//! more, still does not (a destination whose outages may be partial, as
//! Kafka's partitions are, dead-letters only what it refuses). While
//! nothing gets through the destination is down, and the message is tried on at the longest backoff rather than an
//! outage dead-lettering everything. Nothing behind a message is delivered
//! before it.
//!
//! Every engine call runs as a task of its own: aborting the worker (the
//! runtime does, on a change) never cuts one off half way. When a settle
//! fails, the worker gives back what it holds and starts over from what
//! the consumer hands out, so that order holds.

use std::collections::VecDeque;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use super::destination::Target;
use super::failure::Failure;
use super::status::SinkStatus;
use crate::engine::consumers::{AckId, Delivery, Settle};
use crate::engine::error::{EngineError, EngineResult};
use crate::engine::sinks::SinkInfo;
use crate::engine::Engine;

/// How long one receive waits for messages: also how long an idle worker
/// told to stop may take to notice.
const RECEIVE_WAIT: Duration = Duration::from_secs(2);

/// Runs the sink until `stop` turns true (the runtime says so when the
/// sink changes, is paused or is deleted). It stops between steps, never
/// inside one; what it holds then is given back by the next run.
pub async fn run(
    engine: Arc<Engine>,
    sink: SinkInfo,
    status: Arc<SinkStatus>,
    stop: watch::Receiver<bool>,
) {
    let target = match Target::new(&sink) {
        Ok(target) => target,
        Err(err) => return status.failed(&err, false),
    };
    let worker = Worker {
        engine,
        sink,
        status,
        target,
        stop,
    };
    worker.run().await
}

struct Worker {
    engine: Arc<Engine>,
    sink: SinkInfo,
    status: Arc<SinkStatus>,
    target: Target,
    stop: watch::Receiver<bool>,
}

/// What became of one batch.
enum Outcome {
    Delivered,
    /// Refused for good.
    Refused,
    /// Out of attempts, every one failing in a way that may pass.
    Exhausted,
}

/// Why a delivery stopped short.
enum Halt {
    /// The worker was told to stop.
    Stopped,
    /// A settle failed: what is held is given back, and the worker starts
    /// over from what the consumer hands out.
    Engine(EngineError),
}

impl From<EngineError> for Halt {
    fn from(err: EngineError) -> Self {
        Self::Engine(err)
    }
}

/// Runs an engine call as a task of its own, so that it runs to its end
/// even if the worker is aborted while it waits (at shutdown).
async fn detached<T: Send + 'static>(
    call: impl Future<Output = EngineResult<T>> + Send + 'static,
) -> EngineResult<T> {
    tokio::spawn(call)
        .await
        .unwrap_or(Err(EngineError::Unavailable))
}

impl Worker {
    async fn run(&self) {
        loop {
            match self.run_once().await {
                Err(Halt::Stopped) => return,
                Err(Halt::Engine(err)) => {
                    tracing::warn!(sink = self.sink.name, basin = self.sink.basin, error = %err, "sink worker starting over");
                    self.status.failed(&err.to_string(), true);
                    let pause = self.sink.config.retry.max_ms.min(5_000);
                    if let Err(Halt::Stopped) = self.sleep(pause).await {
                        return;
                    }
                }
                Ok(()) => {}
            }
        }
    }

    /// Gives back what an earlier run (or a failed settle) left in flight,
    /// due again now ahead of everything after it, then delivers until
    /// something fails or the worker is told to stop.
    async fn run_once(&self) -> Result<(), Halt> {
        let config = &self.sink.config;
        self.call(|c, b, n| async move { c.release_in_flight(&b, &n).await })
            .await?;
        loop {
            self.go_on()?;
            let max = config.max_batch;
            let mut batch = self
                .call(move |c, b, n| async move { c.receive(&b, &n, max, RECEIVE_WAIT).await })
                .await?;
            if batch.is_empty() {
                continue;
            }
            if batch.len() < max && config.max_linger_ms > 0 {
                self.sleep(config.max_linger_ms).await?;
                let room = max - batch.len();
                let more = self
                    .call(
                        move |c, b, n| async move { c.receive(&b, &n, room, Duration::ZERO).await },
                    )
                    .await?;
                batch.extend(more);
            }
            self.deliver_in_order(batch).await?;
        }
    }

    fn go_on(&self) -> Result<(), Halt> {
        match *self.stop.borrow() {
            true => Err(Halt::Stopped),
            false => Ok(()),
        }
    }

    /// Waits `ms`, or less if told to stop.
    async fn sleep(&self, ms: u64) -> Result<(), Halt> {
        let mut stop = self.stop.clone();
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(ms)) => {}
            _ = stop.wait_for(|stop| *stop) => {}
        }
        self.go_on()
    }

    /// Runs `call` on the consumers layer for this sink's consumer,
    /// detached.
    async fn call<T, F, Fut>(&self, call: F) -> EngineResult<T>
    where
        T: Send + 'static,
        F: FnOnce(Arc<crate::engine::consumers::Consumers>, String, String) -> Fut,
        Fut: Future<Output = EngineResult<T>> + Send + 'static,
    {
        let consumers = self.engine.consumers();
        detached(call(
            consumers,
            self.sink.basin.clone(),
            self.sink.consumer(),
        ))
        .await
    }

    /// Delivers `batch` in order, splitting what cannot be delivered. A
    /// failed settle ends it: the caller gives back what is held.
    async fn deliver_in_order(&self, batch: Vec<Delivery>) -> Result<(), Halt> {
        let mut queue: VecDeque<Vec<Delivery>> = VecDeque::from([batch]);
        // Whether anything got through since the trouble began.
        let mut got_through = false;
        while let Some(batch) = queue.pop_front() {
            let outcome = self.attempt(&batch).await?;
            match outcome {
                Outcome::Delivered => {
                    got_through = true;
                    self.ack(&batch).await?;
                }
                _ if batch.len() > 1 => {
                    let mut first = batch;
                    let second = first.split_off(first.len() / 2);
                    queue.push_front(second);
                    queue.push_front(first);
                }
                Outcome::Exhausted if self.target.outage_may_be_partial() => {
                    self.sleep(self.sink.config.retry.max_ms).await?;
                    queue.push_front(batch);
                }
                Outcome::Exhausted if !got_through => {
                    // Is the destination down, or this message bad? Probe
                    // it (a webhook gets an empty batch): if it is up, the
                    // message gets one more try and then goes to the dead
                    // letters; if not, the message is tried on at the
                    // longest backoff. Nothing after it goes first.
                    let up = self.target.probe().await.is_ok();
                    if !up {
                        self.sleep(self.sink.config.retry.max_ms).await?;
                        queue.push_front(batch);
                        continue;
                    }
                    got_through = true;
                    match self.attempt_once(&batch).await {
                        true => self.ack(&batch).await?,
                        false => self.dead_letter(batch).await?,
                    }
                }
                _ => self.dead_letter(batch).await?,
            }
        }
        Ok(())
    }

    async fn ack(&self, batch: &[Delivery]) -> Result<(), Halt> {
        let ids = ack_ids(batch);
        self.call(move |c, b, n| async move { c.settle(&b, &n, &ids, Settle::Ack).await })
            .await?;
        self.status.delivered(batch.len() as u64);
        Ok(())
    }

    /// One delivery of `batch`, no retry: whether it got through.
    async fn attempt_once(&self, batch: &[Delivery]) -> bool {
        match self.target.deliver(batch).await {
            Ok(()) => true,
            Err(Failure::Transient(error) | Failure::Permanent(error)) => {
                self.status.failed(&error, false);
                false
            }
        }
    }

    async fn dead_letter(&self, batch: Vec<Delivery>) -> Result<(), Halt> {
        let ids = ack_ids(&batch);
        self.call(move |c, b, n| async move { c.settle(&b, &n, &ids, Settle::Reject).await })
            .await?;
        self.status.dead_lettered(batch.len() as u64);
        Ok(())
    }

    /// Delivers `batch` until it is delivered, refused for good or out of
    /// attempts; fails if its messages could not be kept meanwhile.
    async fn attempt(&self, batch: &[Delivery]) -> Result<Outcome, Halt> {
        let retry = &self.sink.config.retry;
        let mut backoff = retry.initial_ms;
        for attempt in 1..=self.sink.config.max_deliver {
            self.go_on()?;
            match self.target.deliver(batch).await {
                Ok(()) => return Ok(Outcome::Delivered),
                Err(Failure::Permanent(error)) => {
                    self.status.failed(&error, false);
                    return Ok(Outcome::Refused);
                }
                Err(Failure::Transient(error)) => {
                    let last = attempt == self.sink.config.max_deliver;
                    self.status.failed(&error, !last);
                    if last {
                        return Ok(Outcome::Exhausted);
                    }
                }
            }
            self.sleep(backoff).await?;
            backoff = (backoff * 2).min(retry.max_ms);
            // Keep the messages while trying again.
            let ids = ack_ids(batch);
            self.call(move |c, b, n| async move { c.settle(&b, &n, &ids, Settle::Extend).await })
                .await?;
        }
        Ok(Outcome::Exhausted)
    }
}

fn ack_ids(batch: &[Delivery]) -> Vec<AckId> {
    batch.iter().filter_map(|d| d.ack_id.clone()).collect()
}
