//! Consumers: the server keeps the position; workers receive and ack.

use std::time::{Duration, Instant};

use reqwest::Method;
use serde::Deserialize;
use serde_json::{json, Value};

use crate::client::{segment, Retry};
use crate::{Client, Error};

/// What a replay did with each dead letter asked for, by its seq num.
#[derive(Clone, Debug, Default, Deserialize, PartialEq, Eq)]
pub struct Replayed {
    /// Pending again.
    pub replayed: Vec<u64>,
    /// Pending already.
    pub already_pending: Vec<u64>,
    /// No longer in the source (or no such dead letter).
    pub gone: Vec<u64>,
}

/// A delivered message.
#[derive(Clone, Debug, Deserialize)]
pub struct Message {
    /// Acks this delivery (explicit ack policy).
    pub ack_id: Option<String>,
    /// 1 on the first delivery, one more on every redelivery.
    pub delivery_count: u32,
    /// Streams and events feeds.
    pub seq_num: Option<u64>,
    /// Records feeds: commit this to move past the message.
    pub cursor: Option<String>,
    /// The message's timestamp in its source (epoch ms).
    pub timestamp: u64,
    /// A stream record, or a collection record (records feed).
    pub record: Option<Value>,
    /// A change event (events feed).
    pub event: Option<Value>,
}

/// What a handler decided about a message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Done with it: it is not delivered again.
    Ack,
    /// Give it back, to be delivered again.
    Nack {
        /// After this many milliseconds.
        delay_ms: u64,
    },
}

impl Client {
    /// Creates the consumer with `config` (the JSON of `PUT
    /// /v1/consumers/{name}`), or checks that it exists with it.
    pub async fn ensure_consumer(&self, name: &str, config: &Value) -> Result<(), Error> {
        let path = format!("/v1/consumers/{}", segment(name));
        self.call::<Value>(Method::PUT, &path, Some(config), Retry::Safe)
            .await
            .map(drop)
    }

    /// Up to `batch_size` messages, waiting up to `wait_ms` when there are
    /// none. Not retried: a lost answer's messages come back after the
    /// consumer's `ack_wait_ms`.
    pub async fn receive(
        &self,
        name: &str,
        batch_size: usize,
        wait_ms: u64,
    ) -> Result<Vec<Message>, Error> {
        #[derive(Deserialize)]
        struct Received {
            messages: Vec<Message>,
        }
        let path = format!("/v1/consumers/{}/receive", segment(name));
        let body = json!({ "batch_size": batch_size, "wait_ms": wait_ms });
        let received: Received = self
            .call(Method::POST, &path, Some(&body), Retry::Never)
            .await?;
        Ok(received.messages)
    }

    /// Acks deliveries; returns how many were newly acked. Acking twice is
    /// harmless, so this is retried.
    pub async fn ack(&self, name: &str, ack_ids: &[String]) -> Result<u64, Error> {
        self.settle(name, "ack", json!({ "ack_ids": ack_ids }), "acked")
            .await
    }

    /// Gives deliveries back, to be delivered again after `delay_ms`.
    pub async fn nack(&self, name: &str, ack_ids: &[String], delay_ms: u64) -> Result<u64, Error> {
        let body = json!({ "ack_ids": ack_ids, "delay_ms": delay_ms });
        self.settle(name, "nack", body, "nacked").await
    }

    /// Sends deliveries to the dead-letter stream at once (messages that
    /// can never succeed); returns how many. Rejecting twice is harmless,
    /// so this is retried.
    pub async fn reject(&self, name: &str, ack_ids: &[String]) -> Result<u64, Error> {
        self.settle(name, "reject", json!({ "ack_ids": ack_ids }), "rejected")
            .await
    }

    /// Makes dead letters (by their seq nums in the consumer's dead-letter
    /// stream) pending again, with fresh attempts. Replaying twice is
    /// harmless (the second finds them pending), so this is retried.
    pub async fn replay(&self, name: &str, dead_letters: &[u64]) -> Result<Replayed, Error> {
        let path = format!("/v1/consumers/{}/replay", segment(name));
        let body = json!({ "dead_letters": dead_letters });
        self.call(Method::POST, &path, Some(&body), Retry::Safe)
            .await
    }

    async fn settle(&self, name: &str, op: &str, body: Value, field: &str) -> Result<u64, Error> {
        let path = format!("/v1/consumers/{}/{op}", segment(name));
        let answer: Value = self
            .call(Method::POST, &path, Some(&body), Retry::Safe)
            .await?;
        answer[field]
            .as_u64()
            .ok_or_else(|| Error::Decode(format!("{op} answer without `{field}`: {answer}")))
    }

    /// One round of a worker: receives up to `batch_size` messages (waiting
    /// up to `wait_ms`), runs `handler` on each in order, and acks or nacks
    /// each as it says. Returns how many messages were handled. See
    /// [`Self::run_worker`] for the loop around it.
    pub async fn work(
        &self,
        name: &str,
        batch_size: usize,
        wait_ms: u64,
        mut handler: impl AsyncFnMut(&Message) -> Outcome,
    ) -> Result<usize, Error> {
        let messages = self.receive(name, batch_size, wait_ms).await?;
        if messages.iter().any(|m| m.ack_id.is_none()) {
            return Err(Error::Invalid(format!(
                "consumer `{name}` commits positions (ack_policy cursor); `work` needs explicit acks"
            )));
        }
        // Acks are sent together, but never held long, even while a slow
        // handler runs: an ack held past the consumer's ack wait would let
        // the message go to another worker.
        let mut acks: Vec<String> = Vec::new();
        let mut flush_at: Option<Instant> = None;
        for message in &messages {
            let ack_id = message.ack_id.clone().unwrap_or_default();
            let outcome = {
                let handling = handler(message);
                let mut handling = std::pin::pin!(handling);
                loop {
                    let flush = async {
                        match flush_at {
                            Some(at) => tokio::time::sleep_until(at.into()).await,
                            None => std::future::pending().await,
                        }
                    };
                    tokio::select! {
                        outcome = &mut handling => break outcome,
                        () = flush => {
                            flush_at = None;
                            self.settle_leniently(name, &std::mem::take(&mut acks), None).await?;
                        }
                    }
                }
            };
            match outcome {
                Outcome::Ack => {
                    acks.push(ack_id);
                    flush_at.get_or_insert_with(|| Instant::now() + MAX_ACK_HOLD);
                }
                Outcome::Nack { delay_ms } => {
                    // What is held goes first, so a failing nack loses no ack.
                    flush_at = None;
                    self.settle_leniently(name, &std::mem::take(&mut acks), None)
                        .await?;
                    self.settle_leniently(name, &[ack_id], Some(delay_ms))
                        .await?;
                }
            }
        }
        self.settle_leniently(name, &acks, None).await?;
        Ok(messages.len())
    }

    /// Acks (or, with a delay, nacks) `ack_ids`. If some have expired (their
    /// messages went to another worker), the server refuses the whole
    /// request; then each is sent alone and the expired ones are skipped,
    /// so the others still count.
    async fn settle_leniently(
        &self,
        name: &str,
        ack_ids: &[String],
        nack_delay_ms: Option<u64>,
    ) -> Result<(), Error> {
        let settle = async |ids: &[String]| match nack_delay_ms {
            None => self.ack(name, ids).await,
            Some(delay_ms) => self.nack(name, ids, delay_ms).await,
        };
        if ack_ids.is_empty() {
            return Ok(());
        }
        match settle(ack_ids).await {
            Err(err) if err.code() == Some("ack_expired") && ack_ids.len() > 1 => {}
            Err(err) if err.code() == Some("ack_expired") => return Ok(()),
            other => return other.map(drop),
        }
        for id in ack_ids {
            match settle(std::slice::from_ref(id)).await {
                Err(err) if err.code() == Some("ack_expired") => {}
                other => {
                    other?;
                }
            }
        }
        Ok(())
    }

    /// The worker loop: [`Self::work`] rounds, for good. A lost connection
    /// or a `502`–`504` is waited out (backoff up to 30 s; messages whose acks
    /// were lost come back after the consumer's `ack_wait_ms`); any other
    /// error ends the loop.
    ///
    /// ```no_run
    /// # async fn demo(client: rill_client::Client) -> Result<(), rill_client::Error> {
    /// use rill_client::Outcome;
    /// client
    ///     .run_worker("billing", 10, async |message| {
    ///         match message.record.as_ref() {
    ///             Some(record) => {
    ///                 println!("charging for {record}");
    ///                 Outcome::Ack
    ///             }
    ///             None => Outcome::Nack { delay_ms: 1_000 },
    ///         }
    ///     })
    ///     .await?;
    /// # Ok(()) }
    /// ```
    pub async fn run_worker(
        &self,
        name: &str,
        batch_size: usize,
        mut handler: impl AsyncFnMut(&Message) -> Outcome,
    ) -> Result<(), Error> {
        let mut backoff = WORKER_FIRST_BACKOFF;
        loop {
            match self.work(name, batch_size, 20_000, &mut handler).await {
                Ok(_) => backoff = WORKER_FIRST_BACKOFF,
                Err(err) if err.is_transient() => {
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(WORKER_MAX_BACKOFF);
                }
                Err(err) => return Err(err),
            }
        }
    }
}

/// The longest [`Client::work`] holds acks back to send them together.
const MAX_ACK_HOLD: Duration = Duration::from_secs(1);
const WORKER_FIRST_BACKOFF: Duration = Duration::from_millis(100);
const WORKER_MAX_BACKOFF: Duration = Duration::from_secs(30);
