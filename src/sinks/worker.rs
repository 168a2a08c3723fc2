//! One sink's worker: receives a batch from the sink's consumer, posts it,
//! and settles it. Deliveries go one batch at a time, in the order the
//! consumer hands them out, so the destination sees each key's messages in
//! order (and all messages, as a single worker delivers them).
//!
//! A batch that fails is tried again after a backoff (doubling from
//! `retry.initial_ms` to `retry.max_ms`), its messages kept in flight
//! meanwhile, up to `max_deliver` attempts. A batch that cannot be
//! delivered (permanently refused, or out of attempts) is split in two and
//! each half tried on its own, so that one poison message is isolated: a
//! single message that cannot be delivered goes to the dead letters, and
//! the rest go on.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use ring::digest;
use serde_json::{json, Value};

use super::status::SinkStatus;
use super::webhook::{Failure, Webhook};
use crate::engine::consumers::{AckId, Delivery, Settle};
use crate::engine::error::EngineError;
use crate::engine::sinks::{Destination, SinkInfo};
use crate::engine::Engine;
use crate::wire::consumers::delivery_json;
use crate::wire::json::Format;

/// How long one receive waits for messages.
const RECEIVE_WAIT: Duration = Duration::from_secs(20);

/// Runs the sink until the task is aborted (the runtime aborts it when the
/// sink changes, is paused or is deleted).
pub async fn run(engine: Arc<Engine>, sink: SinkInfo, status: Arc<SinkStatus>) {
    let Destination::Webhook(config) = &sink.config.destination;
    let webhook = match Webhook::new(config.clone()) {
        Ok(webhook) => webhook,
        Err(err) => return status.failed(&err, false),
    };
    let worker = Worker {
        engine,
        sink,
        status,
        webhook,
    };
    worker.run().await
}

struct Worker {
    engine: Arc<Engine>,
    sink: SinkInfo,
    status: Arc<SinkStatus>,
    webhook: Webhook,
}

impl Worker {
    async fn run(&self) {
        let (basin, consumer) = (&self.sink.basin, self.sink.consumer());
        let config = &self.sink.config;
        // What an earlier run held is due again now.
        let mut started = false;
        loop {
            let consumers = self.engine.consumers();
            if !started {
                match consumers.release_in_flight(basin, &consumer).await {
                    Ok(_) => started = true,
                    Err(err) => {
                        self.pause_after(&err.to_string()).await;
                        continue;
                    }
                }
            }
            let mut batch = match consumers
                .receive(basin, &consumer, config.max_batch, RECEIVE_WAIT)
                .await
            {
                Ok(batch) => batch,
                Err(err) => {
                    self.pause_after(&err.to_string()).await;
                    continue;
                }
            };
            if batch.is_empty() {
                continue;
            }
            if batch.len() < config.max_batch && config.max_linger_ms > 0 {
                tokio::time::sleep(Duration::from_millis(config.max_linger_ms)).await;
                let room = config.max_batch - batch.len();
                if let Ok(more) = consumers
                    .receive(basin, &consumer, room, Duration::ZERO)
                    .await
                {
                    batch.extend(more);
                }
            }
            self.deliver_in_order(batch).await;
        }
    }

    /// After an error the worker cannot act on (the consumer's storage
    /// failing, say): said, and tried again later.
    async fn pause_after(&self, error: &str) {
        tracing::warn!(
            sink = self.sink.name,
            basin = self.sink.basin,
            error,
            "sink worker waiting"
        );
        self.status.failed(error, true);
        tokio::time::sleep(Duration::from_millis(
            self.sink.config.retry.max_ms.min(5_000),
        ))
        .await;
    }

    /// Delivers `batch`, splitting what cannot be delivered until each
    /// failure is one message, which goes to the dead letters.
    async fn deliver_in_order(&self, batch: Vec<Delivery>) {
        let mut queue: VecDeque<Vec<Delivery>> = VecDeque::from([batch]);
        while let Some(batch) = queue.pop_front() {
            let delivered = match self.attempt(&batch).await {
                Ok(delivered) => delivered,
                Err(err) => {
                    // The messages are someone else's now (redelivered after
                    // a restart of the consumer, say): nothing to settle.
                    tracing::warn!(sink = self.sink.name, error = %err, "sink batch abandoned");
                    continue;
                }
            };
            if delivered {
                self.settle(&batch, Settle::Ack).await;
                self.status.delivered(batch.len() as u64);
            } else if batch.len() > 1 {
                let mut first = batch;
                let second = first.split_off(first.len() / 2);
                queue.push_front(second);
                queue.push_front(first);
            } else {
                let ids = ack_ids(&batch);
                let basin = &self.sink.basin;
                match self
                    .engine
                    .consumers()
                    .reject(basin, &self.sink.consumer(), &ids)
                    .await
                {
                    Ok(_) => self.status.dead_lettered(1),
                    Err(err) => {
                        tracing::warn!(sink = self.sink.name, error = %err, "dead-lettering failed")
                    }
                }
            }
        }
    }

    /// Posts `batch` until it is delivered (`Ok(true)`), refused for good
    /// or out of attempts (`Ok(false)`), or no longer this worker's.
    async fn attempt(&self, batch: &[Delivery]) -> Result<bool, EngineError> {
        let (id, body) = self.body(batch);
        let retry = &self.sink.config.retry;
        let mut backoff = retry.initial_ms;
        for attempt in 1..=self.sink.config.max_deliver {
            match self.webhook.post(&id, body.clone()).await {
                Ok(()) => return Ok(true),
                Err(Failure::Permanent(error)) => {
                    self.status.failed(&error, false);
                    return Ok(false);
                }
                Err(Failure::Transient(error)) => {
                    let last = attempt == self.sink.config.max_deliver;
                    self.status.failed(&error, !last);
                    if last {
                        return Ok(false);
                    }
                }
            }
            tokio::time::sleep(Duration::from_millis(backoff)).await;
            backoff = (backoff * 2).min(retry.max_ms);
            // Keep the messages while trying again.
            let ids = ack_ids(batch);
            let consumer = self.sink.consumer();
            self.engine
                .consumers()
                .settle(&self.sink.basin, &consumer, &ids, Settle::Extend)
                .await?;
        }
        Ok(false)
    }

    async fn settle(&self, batch: &[Delivery], action: Settle) {
        let ids = ack_ids(batch);
        let consumer = self.sink.consumer();
        let settled = self
            .engine
            .consumers()
            .settle(&self.sink.basin, &consumer, &ids, action)
            .await;
        if let Err(err) = settled {
            tracing::warn!(sink = self.sink.name, error = %err, "settling a delivered batch failed");
        }
    }

    /// The request body, and an id that is the same for every attempt at
    /// the same messages: a digest of their positions.
    fn body(&self, batch: &[Delivery]) -> (String, Vec<u8>) {
        let messages: Vec<Value> = batch
            .iter()
            .filter_map(|d| {
                let mut message = delivery_json(d, Format::Raw).ok()?;
                if let Some(fields) = message.as_object_mut() {
                    fields.remove("ack_id");
                }
                Some(message)
            })
            .collect();
        let mut context = digest::Context::new(&digest::SHA256);
        context.update(self.sink.name.as_bytes());
        for delivery in batch {
            let position = serde_json::to_vec(&delivery.message.position).unwrap_or_default();
            context.update(b"\n");
            context.update(&position);
        }
        let id: String = context
            .finish()
            .as_ref()
            .iter()
            .take(16)
            .map(|b| format!("{b:02x}"))
            .collect();
        let body = serde_json::to_vec(&json!({ "messages": messages })).unwrap_or_default();
        (format!("msg_{id}"), body)
    }
}

fn ack_ids(batch: &[Delivery]) -> Vec<AckId> {
    batch.iter().filter_map(|d| d.ack_id.clone()).collect()
}
