//! Basins, streams, appends and reads. Appends and reads travel as
//! protobuf (the S2 v1 binary format), so bodies and headers are bytes.

use std::borrow::Cow;

use bytes::Bytes;
use reqwest::Method;
use rill_protocol::messages as proto;
use serde_json::Value;

use crate::client::{segment, Retry};
use crate::{Client, Error};

/// A record read from a stream.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StreamRecord {
    /// Its place in the stream.
    pub seq_num: u64,
    /// Its timestamp (epoch ms).
    pub timestamp: u64,
    /// Header names and values, in order.
    pub headers: Vec<(Bytes, Bytes)>,
    /// The body.
    pub body: Bytes,
}

impl StreamRecord {
    /// The body as text (invalid UTF-8 replaced).
    pub fn body_text(&self) -> Cow<'_, str> {
        String::from_utf8_lossy(&self.body)
    }

    /// The record's size as the server meters it (for `bytes` limits).
    pub fn metered_size(&self) -> u64 {
        metered_size(&self.headers, &self.body) as u64
    }
}

impl From<proto::SequencedRecord> for StreamRecord {
    fn from(r: proto::SequencedRecord) -> Self {
        Self {
            seq_num: r.seq_num,
            timestamp: r.timestamp,
            headers: r.headers.into_iter().map(|h| (h.name, h.value)).collect(),
            body: r.body,
        }
    }
}

/// A record to append.
///
/// ```
/// use rill_client::AppendRecord;
/// let record = AppendRecord::new("hello").header("key", "user-7");
/// assert_eq!(record.body, "hello");
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AppendRecord {
    /// Epoch ms; the server's timestamping mode decides whether it is used.
    pub timestamp: Option<u64>,
    /// Header names and values, in order.
    pub headers: Vec<(Bytes, Bytes)>,
    /// The body.
    pub body: Bytes,
}

impl AppendRecord {
    /// A record with this body, no headers and no timestamp.
    pub fn new(body: impl Into<Bytes>) -> Self {
        Self {
            body: body.into(),
            ..Self::default()
        }
    }

    /// The same record with one more header.
    pub fn header(mut self, name: impl Into<Bytes>, value: impl Into<Bytes>) -> Self {
        self.headers.push((name.into(), value.into()));
        self
    }

    /// The same record with a client timestamp (epoch ms).
    pub fn timestamp(mut self, epoch_ms: u64) -> Self {
        self.timestamp = Some(epoch_ms);
        self
    }

    /// The record's size as the server meters it (1 MiB per append at most).
    pub fn metered_size(&self) -> usize {
        metered_size(&self.headers, &self.body)
    }
}

// S2's limits on one append: the most records, and the most metered bytes
// (`AppendRecord::metered_size` summed).
pub use rill_protocol::limits::{
    MAX_BATCH_BYTES as MAX_APPEND_BYTES, MAX_BATCH_RECORDS as MAX_APPEND_RECORDS,
};

/// S2's metering (`rill-protocol`'s): 8 bytes per record, 2 per header,
/// plus every name, value and body byte.
fn metered_size(headers: &[(Bytes, Bytes)], body: &[u8]) -> usize {
    rill_protocol::limits::metered_size(headers.iter().map(|(n, v)| (n, v)), body)
}

/// Conditions on an append; the server refuses the append, applying
/// nothing, when one fails.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AppendOptions {
    /// The seq num the first record must get (412 `seq_num_mismatch`
    /// otherwise).
    pub match_seq_num: Option<u64>,
    /// The stream's fencing token must be this.
    pub fencing_token: Option<String>,
}

pub(crate) fn append_input(
    records: Vec<AppendRecord>,
    options: &AppendOptions,
) -> proto::AppendInput {
    proto::AppendInput {
        records: records
            .into_iter()
            .map(|r| proto::AppendRecord {
                timestamp: r.timestamp,
                headers: r
                    .headers
                    .into_iter()
                    .map(|(name, value)| proto::Header { name, value })
                    .collect(),
                body: r.body,
            })
            .collect(),
        match_seq_num: options.match_seq_num,
        fencing_token: options.fencing_token.clone(),
    }
}

/// Where a read starts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReadStart {
    /// The record with this seq num (or the first after it, if trimmed).
    SeqNum(u64),
    /// The first record with a timestamp at or after this (epoch ms).
    Timestamp(u64),
    /// This many records before the tail.
    TailOffset(u64),
}

/// A read: where it starts and when it stops (each limit optional).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ReadOptions {
    /// Where the read starts.
    pub start: ReadStart,
    /// At most this many records (the server returns at most 1000).
    pub count: Option<u64>,
    /// At most this many metered bytes.
    pub bytes: Option<u64>,
    /// Only records with timestamps before this (epoch ms).
    pub until: Option<u64>,
    /// Wait up to this many seconds (at most 60) for records, when none are
    /// there yet.
    pub wait_secs: u32,
}

/// Where an append landed: seq nums `start..end`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AppendAck {
    /// The first record's seq num.
    pub start: u64,
    /// One past the last record's seq num.
    pub end: u64,
    /// The stream's next seq num after the append.
    pub tail: u64,
    /// The timestamp of the append's last record (epoch ms).
    pub last_timestamp: u64,
}

impl TryFrom<proto::AppendAck> for AppendAck {
    type Error = Error;

    fn try_from(ack: proto::AppendAck) -> Result<Self, Error> {
        match (&ack.start, &ack.end, &ack.tail) {
            (Some(start), Some(end), Some(tail)) => Ok(Self {
                start: start.seq_num,
                end: end.seq_num,
                tail: tail.seq_num,
                last_timestamp: end.timestamp,
            }),
            _ => Err(Error::Decode(format!(
                "append ack without positions: {ack:?}"
            ))),
        }
    }
}

impl Client {
    /// Creates the basin if it does not exist.
    pub async fn ensure_basin(&self, basin: &str) -> Result<(), Error> {
        let path = format!("/v1/basins/{}", segment(basin));
        self.call::<Value>(Method::PUT, &path, None, Retry::Safe)
            .await
            .map(drop)
    }

    /// Creates the stream, in this client's basin, if it does not exist.
    pub async fn ensure_stream(&self, stream: &str) -> Result<(), Error> {
        let path = format!("/v1/streams/{}", segment(stream));
        self.call::<Value>(Method::PUT, &path, None, Retry::Safe)
            .await
            .map(drop)
    }

    /// Deletes the stream and its records. Not retried.
    pub async fn delete_stream(&self, stream: &str) -> Result<(), Error> {
        let path = format!("/v1/streams/{}", segment(stream));
        self.call::<Value>(Method::DELETE, &path, None, Retry::Never)
            .await
            .map(drop)
    }

    /// Appends one record per body, atomically. Never retried.
    pub async fn append<B: AsRef<[u8]>>(
        &self,
        stream: &str,
        bodies: &[B],
    ) -> Result<AppendAck, Error> {
        let records = bodies
            .iter()
            .map(|b| AppendRecord::new(Bytes::copy_from_slice(b.as_ref())))
            .collect();
        self.append_records(stream, records, &AppendOptions::default())
            .await
    }

    /// Appends records with headers and timestamps, atomically, under
    /// `options`' conditions. Never retried: after a transport error the
    /// append may or may not have been applied (`match_seq_num` makes a
    /// retry safe).
    pub async fn append_records(
        &self,
        stream: &str,
        records: Vec<AppendRecord>,
        options: &AppendOptions,
    ) -> Result<AppendAck, Error> {
        let path = format!("/v1/streams/{}/records", segment(stream));
        let input = append_input(records, options);
        let ack: proto::AppendAck = self
            .call_proto(Method::POST, &path, Some(&input), Retry::Never)
            .await?;
        AppendAck::try_from(ack)
    }

    /// Up to `count` records (at most 1000) from `seq_num` on; empty at the
    /// tail.
    pub async fn read(
        &self,
        stream: &str,
        seq_num: u64,
        count: u64,
    ) -> Result<Vec<StreamRecord>, Error> {
        self.read_query(
            stream,
            &format!("seq_num={seq_num}&count={count}&clamp=true"),
        )
        .await
    }

    /// Like [`Self::read`], but waits up to `wait_secs` (at most 60) for
    /// records when there are none yet (long poll).
    pub async fn read_wait(
        &self,
        stream: &str,
        seq_num: u64,
        count: u64,
        wait_secs: u32,
    ) -> Result<Vec<StreamRecord>, Error> {
        self.read_query(
            stream,
            &format!("seq_num={seq_num}&count={count}&clamp=true&wait={wait_secs}"),
        )
        .await
    }

    /// One read with all the options of the API; empty at the tail.
    pub async fn read_with(
        &self,
        stream: &str,
        options: &ReadOptions,
    ) -> Result<Vec<StreamRecord>, Error> {
        let mut query = match options.start {
            ReadStart::SeqNum(n) => format!("seq_num={n}"),
            ReadStart::Timestamp(t) => format!("timestamp={t}"),
            ReadStart::TailOffset(n) => format!("tail_offset={n}"),
        };
        query.push_str(&format!("&clamp=true&wait={}", options.wait_secs.min(60)));
        if let Some(count) = options.count {
            query.push_str(&format!("&count={count}"));
        }
        if let Some(bytes) = options.bytes {
            query.push_str(&format!("&bytes={bytes}"));
        }
        if let Some(until) = options.until {
            query.push_str(&format!("&until={until}"));
        }
        self.read_query(stream, &query).await
    }

    async fn read_query(&self, stream: &str, query: &str) -> Result<Vec<StreamRecord>, Error> {
        let path = format!("/v1/streams/{}/records?{query}", segment(stream));
        let batch = self.call_proto::<proto::ReadBatch>(
            Method::GET,
            &path,
            None::<&proto::ReadBatch>,
            Retry::Safe,
        );
        match batch.await {
            Ok(batch) => Ok(batch.records.into_iter().map(StreamRecord::from).collect()),
            // At the tail with nothing to wait for.
            Err(Error::Api { status: 416, .. }) => Ok(Vec::new()),
            Err(err) => Err(err),
        }
    }

    /// The stream's next seq num.
    pub async fn check_tail(&self, stream: &str) -> Result<u64, Error> {
        let path = format!("/v1/streams/{}/records/tail", segment(stream));
        let tail: Value = self.call(Method::GET, &path, None, Retry::Safe).await?;
        tail["tail"]["seq_num"]
            .as_u64()
            .ok_or_else(|| Error::Decode(format!("tail without a seq num: {tail}")))
    }
}
