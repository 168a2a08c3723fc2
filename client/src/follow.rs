//! Live reads: an S2S read session that reconnects.
//!
//! One request stays open and the server pushes batches as records become
//! durable, with a heartbeat (an empty batch carrying the tail) as soon as
//! the reader is caught up and every 5–15 s after. The follower remembers
//! the seq num after the last record it received; when the connection
//! breaks, the server restarts or heartbeats stop, it opens a new session
//! from exactly there. A start given as a timestamp or tail offset is
//! turned into a seq num by the first heartbeat (the server sends it once
//! the reader is caught up, so nothing comes between), so a reconnect never
//! resolves it again and skips what was appended meanwhile.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use prost::Message;
use reqwest::Method;
use rill_protocol::messages as proto;
use rill_protocol::{Decoder, Frame};

use crate::client::{api_error, segment};
use crate::{Client, Error, ReadStart, StreamRecord};

/// How long a follower keeps reconnecting before giving up, and the bounds
/// of its backoff (a quarter of the time failed so far).
const RECONNECT_LIMIT: Duration = Duration::from_secs(60);
const MIN_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(5);
/// Silence after which a session counts as dead: twice the server's
/// longest gap between heartbeats.
const HEARTBEAT_SILENCE: Duration = Duration::from_secs(30);

impl Client {
    /// Follows the stream from `start`: [`Follow::next`] returns every record
    /// in order, waiting for new ones. A broken connection or a restarting
    /// server is retried (with backoff, for up to a minute of failures in a
    /// row) and the read resumes exactly where it left off: nothing missed,
    /// nothing repeated.
    pub fn follow(&self, stream: &str, start: ReadStart) -> Follow {
        Follow {
            client: self.clone(),
            stream: stream.to_string(),
            start,
            buffer: VecDeque::new(),
            session: None,
            failing_since: None,
            retry_at: None,
            opened: false,
        }
    }
}

/// A live read; see [`Client::follow`].
///
/// ```no_run
/// # async fn demo(client: rill_client::Client) -> Result<(), rill_client::Error> {
/// let mut live = client.follow("orders", rill_client::ReadStart::TailOffset(0));
/// loop {
///     let record = live.next().await?;
///     println!("{}: {}", record.seq_num, record.body_text());
/// }
/// # }
/// ```
pub struct Follow {
    client: Client,
    stream: String,
    /// Where a new session starts: after the last record received.
    start: ReadStart,
    buffer: VecDeque<StreamRecord>,
    session: Option<Session>,
    /// When reads started failing, while they do.
    failing_since: Option<Instant>,
    /// No new session before this (backoff), kept here so that a caller
    /// cancelling `next` cannot skip it.
    retry_at: Option<Instant>,
    /// Whether a session was opened before: only the first may clamp a
    /// start past the tail to the tail.
    opened: bool,
}

/// An open S2S read session.
struct Session {
    response: reqwest::Response,
    decoder: Decoder,
}

impl Follow {
    /// The next record, waiting as long as it takes for one. Cancel-safe:
    /// dropping the future loses nothing, the next call goes on.
    pub async fn next(&mut self) -> Result<StreamRecord, Error> {
        loop {
            if let Some(record) = self.buffer.pop_front() {
                return Ok(record);
            }
            match self.receive().await {
                Ok(()) => self.failing_since = None,
                Err(err) => {
                    self.session = None;
                    if !err.is_transient() && !matches!(err, Error::Closed(_)) {
                        return Err(err);
                    }
                    // A restarting server or a broken network: try again
                    // for a while, from the same position.
                    let since = *self.failing_since.get_or_insert_with(Instant::now);
                    if since.elapsed() >= RECONNECT_LIMIT {
                        return Err(err);
                    }
                    let backoff = (since.elapsed() / 4).clamp(MIN_BACKOFF, MAX_BACKOFF);
                    self.retry_at = Some(Instant::now() + backoff);
                }
            }
        }
    }

    /// The seq num of the next record to return, once known.
    pub fn position(&self) -> Option<u64> {
        match (self.buffer.front(), self.start) {
            (Some(record), _) => Some(record.seq_num),
            (None, ReadStart::SeqNum(n)) => Some(n),
            _ => None,
        }
    }

    /// Receives one batch (opening a session first if there is none) and
    /// buffers its records.
    async fn receive(&mut self) -> Result<(), Error> {
        let session = match self.session.take() {
            Some(session) => session,
            None => {
                if let Some(at) = self.retry_at {
                    tokio::time::sleep_until(at.into()).await;
                    self.retry_at = None;
                }
                let session = self.open().await?;
                self.opened = true;
                session
            }
        };
        let session = self.session.insert(session);
        let batch = session.next_batch().await?;
        match (batch.records.last(), &batch.tail, self.start) {
            (Some(last), _, _) => self.start = ReadStart::SeqNum(last.seq_num + 1),
            // The first heartbeat fixes a timestamp or tail-offset start to
            // a seq num; later ones may run ahead of records still on their
            // way, so they move nothing.
            (None, Some(tail), ReadStart::Timestamp(_) | ReadStart::TailOffset(_)) => {
                self.start = ReadStart::SeqNum(tail.seq_num)
            }
            _ => {}
        }
        self.buffer
            .extend(batch.records.into_iter().map(StreamRecord::from));
        Ok(())
    }

    async fn open(&self) -> Result<Session, Error> {
        let query = match self.start {
            ReadStart::SeqNum(n) => format!("seq_num={n}"),
            ReadStart::Timestamp(t) => format!("timestamp={t}"),
            ReadStart::TailOffset(n) => format!("tail_offset={n}"),
        };
        // Resuming, the position is one the stream had: if it is now past
        // the tail, the stream was recreated, and clamping would repeat seq
        // nums. Let that be an error (416) instead.
        let path = format!(
            "/v1/streams/{}/records?{query}&clamp={}",
            segment(&self.stream),
            !self.opened
        );
        let response = self
            .client
            .open_session(self.client.request(Method::GET, &path))
            .await?;
        Ok(Session {
            response,
            decoder: Decoder::default(),
        })
    }
}

impl Session {
    /// The next batch (or heartbeat). Any failure ends the session: the
    /// server's terminal error, a broken or silent connection, a bad frame.
    async fn next_batch(&mut self) -> Result<proto::ReadBatch, Error> {
        loop {
            match self.decoder.next_frame() {
                Ok(Some(Frame::Message(bytes))) => {
                    return proto::ReadBatch::decode(bytes)
                        .map_err(|e| Error::Closed(format!("a malformed batch: {e}")));
                }
                Ok(Some(Frame::Terminal { status, body })) => {
                    return Err(api_error(status, &body));
                }
                Ok(None) => {}
                Err(err) => return Err(Error::Closed(format!("a malformed frame: {err}"))),
            }
            // `chunk` only polls the body: timing it out, or dropping this
            // future, loses nothing.
            match tokio::time::timeout(HEARTBEAT_SILENCE, self.response.chunk()).await {
                Ok(Ok(Some(chunk))) => self.decoder.push(&chunk),
                Ok(Ok(None)) => return Err(Error::Closed("the server ended the session".into())),
                Ok(Err(err)) => return Err(Error::Transport(err)),
                Err(_) => {
                    return Err(Error::Closed(format!(
                        "no heartbeat for {HEARTBEAT_SILENCE:?}"
                    )))
                }
            }
        }
    }
}
