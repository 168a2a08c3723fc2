//! Pipelined appends: an S2S append session (`Content-Type: s2s/proto`).
//!
//! One HTTP request stays open; its body carries `AppendInput` messages and
//! its response the `AppendAck`s, in the same order. Appends are sent
//! without waiting for earlier ones to be acknowledged, so a writer is not
//! held to one round trip (and one fsync) per append, yet the server applies
//! them in the order they were submitted: if one fails, the session ends and
//! none behind it is applied.
//!
//! Two tasks make this work: the request body is fed from a channel, and a
//! reader task decodes acknowledgements and hands each to the oldest
//! waiting submitter. Submitters register before their message is sent, so
//! an acknowledgement always finds its submitter.

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use bytes::Bytes;
use prost::Message;
use reqwest::Method;
use rill_protocol::messages as proto;
use rill_protocol::{Compression, Decoder, Frame};
use tokio::sync::{mpsc, oneshot, OwnedSemaphorePermit, Semaphore};

use crate::client::{api_error, segment};
use crate::streams::{append_input, MAX_APPEND_BYTES, MAX_APPEND_RECORDS};
use crate::{AppendAck, AppendOptions, AppendRecord, Client, Error};

/// Bytes of appends a session keeps in flight (sent, not yet acknowledged)
/// before [`AppendSession::submit`] waits: half the server's own budget,
/// so the server never has to stop reading.
const IN_FLIGHT_BYTES: usize = 8 * 1024 * 1024;
/// How long acknowledgements may stop coming while appends wait for them
/// before the session is given up as hung.
const ACK_SILENCE_LIMIT: std::time::Duration = std::time::Duration::from_secs(90);

type AckResult = Result<AppendAck, Error>;

/// Submitters waiting for their acknowledgement, oldest first, with the
/// budget each holds until then.
type Waiting = Arc<Mutex<Waiters>>;

/// A submitter waiting for its acknowledgement, the budget its append
/// holds, and when it was sent.
type Waiter = (
    oneshot::Sender<AckResult>,
    OwnedSemaphorePermit,
    std::time::Instant,
);

#[derive(Default)]
struct Waiters {
    queue: VecDeque<Waiter>,
    /// Set once the session has ended: cleanly, or why it failed.
    ended: Option<Result<(), String>>,
}

/// A pipelined append session on one stream; see [`Client::append_session`].
/// Dropping it without [`Self::close`] ends the request body too: appends
/// already sent are still applied and their tickets still answered.
pub struct AppendSession {
    frames: mpsc::Sender<Bytes>,
    waiting: Waiting,
    budget: Arc<Semaphore>,
    reader: tokio::task::JoinHandle<()>,
}

/// The acknowledgement of one submitted append: await it.
pub struct AppendTicket(oneshot::Receiver<AckResult>);

impl Future for AppendTicket {
    type Output = AckResult;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<AckResult> {
        Pin::new(&mut self.0)
            .poll(cx)
            .map(|result| result.unwrap_or_else(|_| Err(Error::Closed("the session ended".into()))))
    }
}

impl Client {
    /// Opens a pipelined append session on `stream`.
    ///
    /// ```no_run
    /// # async fn demo(client: rill_client::Client) -> Result<(), rill_client::Error> {
    /// use rill_client::{AppendOptions, AppendRecord};
    /// let session = client.append_session("events").await?;
    /// let mut tickets = Vec::new();
    /// for i in 0..100 {
    ///     let batch = vec![AppendRecord::new(format!("event {i}"))];
    ///     // Returns as soon as the append is sent.
    ///     tickets.push(session.submit(batch, AppendOptions::default()).await?);
    /// }
    /// for ticket in tickets {
    ///     let ack = ticket.await?; // in submission order
    ///     println!("stored at {}", ack.start);
    /// }
    /// session.close().await?;
    /// # Ok(()) }
    /// ```
    ///
    /// Never retried, and it does not reconnect. When the session ends
    /// early, every append not yet acknowledged fails: the first with the
    /// cause (the server's error for the append it refused, applying
    /// nothing; or a transport error), the rest with [`Error::Closed`].
    /// Unless the server refused it, an unacknowledged append may or may
    /// not have been applied: read the tail, or use `match_seq_num`, to
    /// find out. A session whose acknowledgements stop for 90 s while
    /// appends wait is given up.
    pub async fn append_session(&self, stream: &str) -> Result<AppendSession, Error> {
        let (frames, frames_rx) = mpsc::channel::<Bytes>(64);
        let body = futures_util::stream::unfold(frames_rx, |mut rx| async move {
            rx.recv()
                .await
                .map(|frame| (Ok::<_, std::io::Error>(frame), rx))
        });
        let path = format!("/v1/streams/{}/records", segment(stream));
        let request = self
            .request(Method::POST, &path)
            .body(reqwest::Body::wrap_stream(body));
        let response = self.open_session(request).await?;
        let waiting = Waiting::default();
        let reader = tokio::spawn(read_acks(response, waiting.clone()));
        Ok(AppendSession {
            frames,
            waiting,
            budget: Arc::new(Semaphore::new(IN_FLIGHT_BYTES)),
            reader,
        })
    }
}

impl AppendSession {
    /// Sends an append (atomic, like [`Client::append_records`]) and
    /// returns at once with a ticket for its acknowledgement; waits only
    /// when 8 MiB are already in flight. Acknowledgements come in
    /// submission order.
    ///
    /// An append over the server's limits (1000 records, 1 MiB metered) is
    /// refused with [`Error::Invalid`] before anything is sent, so it does
    /// not end the session. Safe to call from several tasks at once, and to
    /// cancel: an append is either queued whole, with its ticket, or not
    /// at all.
    pub async fn submit(
        &self,
        records: Vec<AppendRecord>,
        options: AppendOptions,
    ) -> Result<AppendTicket, Error> {
        let metered: usize = records.iter().map(AppendRecord::metered_size).sum();
        if records.is_empty() || records.len() > MAX_APPEND_RECORDS || metered > MAX_APPEND_BYTES {
            return Err(Error::Invalid(format!(
                "an append holds 1 to {MAX_APPEND_RECORDS} records and at most \
                 {MAX_APPEND_BYTES} metered bytes; this one has {} records, {metered} bytes",
                records.len()
            )));
        }
        let message = append_input(records, &options);
        let frame = rill_protocol::encode_message(&message, Compression::None);
        let cost = frame.len().clamp(1, IN_FLIGHT_BYTES) as u32;
        let ended = || Error::Closed("the session ended".into());
        let permit = self
            .budget
            .clone()
            .acquire_many_owned(cost)
            .await
            .map_err(|_| ended())?;
        let slot = self.frames.reserve().await.map_err(|_| ended())?;
        // Registering the waiter and sending the frame under one lock keeps
        // the waiters in the order the frames go out, whatever other tasks
        // submit meanwhile.
        let (tx, rx) = oneshot::channel();
        let mut waiting = lock(&self.waiting);
        match &waiting.ended {
            Some(Ok(())) => return Err(ended()),
            Some(Err(why)) => return Err(Error::Closed(why.clone())),
            None => {}
        }
        waiting
            .queue
            .push_back((tx, permit, std::time::Instant::now()));
        slot.send(frame);
        Ok(AppendTicket(rx))
    }

    /// Ends the session after every submitted append is acknowledged (the
    /// tickets still receive their acknowledgements). Fails if the session
    /// ended with an error instead.
    /// Gives up after 90 s without the end of the session.
    pub async fn close(self) -> Result<(), Error> {
        drop(self.frames);
        let mut reader = self.reader;
        if tokio::time::timeout(ACK_SILENCE_LIMIT, &mut reader)
            .await
            .is_err()
        {
            reader.abort();
            return Err(Error::Closed(format!(
                "the server did not end the session within {ACK_SILENCE_LIMIT:?}"
            )));
        }
        match lock(&self.waiting).ended.take() {
            Some(Err(why)) => Err(Error::Closed(why)),
            _ => Ok(()),
        }
    }
}

/// Whether the oldest waiting append has waited past the silence limit.
fn acks_overdue(waiting: &Waiting) -> bool {
    lock(waiting)
        .queue
        .front()
        .is_some_and(|(_, _, sent)| sent.elapsed() >= ACK_SILENCE_LIMIT)
}

fn lock(waiting: &Waiting) -> std::sync::MutexGuard<'_, Waiters> {
    // A panic while holding this lock cannot leave the queue half-changed
    // (every change is one push or pop), so a poisoned lock is still good.
    waiting
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Decodes acknowledgements off the response and completes the waiters in
/// order; on a terminal message or a broken connection, fails all of them.
async fn read_acks(mut response: reqwest::Response, waiting: Waiting) {
    let mut decoder = Decoder::default();
    // `None`: the server ended the session cleanly.
    let failure: Option<Error> = 'session: loop {
        loop {
            match decoder.next_frame() {
                Ok(Some(Frame::Message(bytes))) => {
                    let ack = proto::AppendAck::decode(bytes)
                        .map_err(|e| Error::Decode(e.to_string()))
                        .and_then(AppendAck::try_from);
                    let ack = match ack {
                        Ok(ack) => ack,
                        Err(err) => break 'session Some(err),
                    };
                    let Some((waiter, _permit, _)) = lock(&waiting).queue.pop_front() else {
                        break 'session Some(Error::Decode(
                            "an acknowledgement nobody waits for".into(),
                        ));
                    };
                    let _ = waiter.send(Ok(ack));
                }
                Ok(Some(Frame::Terminal { status, body })) => {
                    break 'session Some(api_error(status, &body));
                }
                Ok(None) => break,
                Err(err) => break 'session Some(Error::Decode(err.to_string())),
            }
        }
        // An idle session may stay silent for good; one with appends
        // waiting may not. (`chunk` only polls the body, so timing it out
        // loses nothing.)
        let chunk = loop {
            match tokio::time::timeout(ACK_SILENCE_LIMIT, response.chunk()).await {
                Ok(chunk) => break chunk,
                Err(_) if !acks_overdue(&waiting) => continue,
                Err(_) => {
                    break 'session Some(Error::Closed(format!(
                        "no acknowledgement for {ACK_SILENCE_LIMIT:?} while appends waited"
                    )))
                }
            }
        };
        match chunk {
            Ok(Some(chunk)) => decoder.push(&chunk),
            Ok(None) => match decoder.finish() {
                Ok(()) => break 'session None,
                Err(err) => break 'session Some(Error::Decode(err.to_string())),
            },
            Err(err) => break 'session Some(Error::Transport(err)),
        }
    };
    let mut waiting = lock(&waiting);
    let failure = match failure {
        None if !waiting.queue.is_empty() => Some(Error::Closed(
            "the server ended the session before acknowledging every append".into(),
        )),
        other => other,
    };
    let Some(failure) = failure else {
        waiting.ended = Some(Ok(()));
        return;
    };
    let why = match &failure {
        Error::Closed(why) => why.clone(),
        other => other.to_string(),
    };
    waiting.ended = Some(Err(why.clone()));
    // The first waiter gets the error itself (the failed append), the rest
    // learn that the session ended before them.
    let mut failure = Some(failure);
    for (waiter, _permit, _) in waiting.queue.drain(..) {
        let err = match failure.take() {
            Some(Error::Closed(_)) | None => Error::Closed(why.clone()),
            Some(err) => err,
        };
        let _ = waiter.send(Err(err));
    }
}
