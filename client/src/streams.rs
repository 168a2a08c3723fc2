//! Basins, streams, appends and reads (the S2 v1 JSON API).

use reqwest::Method;
use serde::Deserialize;
use serde_json::{json, Value};

use crate::client::{segment, Retry};
use crate::{Client, Error};

/// A record read from a stream. Bodies and headers are text (the `raw`
/// format of the S2 JSON API).
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
pub struct StreamRecord {
    pub seq_num: u64,
    pub timestamp: u64,
    #[serde(default)]
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl StreamRecord {
    /// The record's size as the server meters it (for `bytes` limits).
    pub fn metered_size(&self) -> u64 {
        let headers: usize = self.headers.iter().map(|(n, v)| n.len() + v.len()).sum();
        (8 + 2 * self.headers.len() + headers + self.body.len()) as u64
    }
}

/// Where a read starts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReadStart {
    SeqNum(u64),
    /// The first record with a timestamp at or after this (epoch ms).
    Timestamp(u64),
    /// This many records before the tail.
    TailOffset(u64),
}

/// A read: where it starts and when it stops (each limit optional).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ReadOptions {
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
    pub start: u64,
    pub end: u64,
    /// The stream's next seq num after the append.
    pub tail: u64,
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

    pub async fn delete_stream(&self, stream: &str) -> Result<(), Error> {
        let path = format!("/v1/streams/{}", segment(stream));
        self.call::<Value>(Method::DELETE, &path, None, Retry::Never)
            .await
            .map(drop)
    }

    /// Appends one record per body, atomically. Never retried.
    pub async fn append<B: AsRef<str>>(
        &self,
        stream: &str,
        bodies: &[B],
    ) -> Result<AppendAck, Error> {
        let records: Vec<Value> = bodies
            .iter()
            .map(|b| json!({ "body": b.as_ref() }))
            .collect();
        let path = format!("/v1/streams/{}/records", segment(stream));
        let ack: Value = self
            .call(
                Method::POST,
                &path,
                Some(&json!({ "records": records })),
                Retry::Never,
            )
            .await?;
        let seq = |v: &Value| {
            v["seq_num"]
                .as_u64()
                .ok_or_else(|| Error::Decode(format!("append ack without seq nums: {ack}")))
        };
        Ok(AppendAck {
            start: seq(&ack["start"])?,
            end: seq(&ack["end"])?,
            tail: seq(&ack["tail"])?,
        })
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
        #[derive(Deserialize)]
        struct Batch {
            records: Vec<StreamRecord>,
        }
        let path = format!("/v1/streams/{}/records?{query}", segment(stream));
        match self
            .call::<Batch>(Method::GET, &path, None, Retry::Safe)
            .await
        {
            Ok(batch) => Ok(batch.records),
            // At the tail with nothing to wait for.
            Err(Error::Api { status: 416, .. }) => Ok(Vec::new()),
            Err(err) => Err(err),
        }
    }

    /// Follows the stream from `start`: [`Follow::next`] returns every record
    /// in order, waiting for new ones. Each wait is a long poll from the
    /// next seq num, so a broken connection is retried (with backoff) and
    /// resumes exactly where it left off: nothing missed, nothing repeated.
    pub fn follow(&self, stream: &str, start: ReadStart) -> Follow {
        Follow {
            client: self.clone(),
            stream: stream.to_string(),
            start,
            buffer: std::collections::VecDeque::new(),
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

/// A live read; see [`Client::follow`].
///
/// ```no_run
/// # async fn demo(client: rill_client::Client) -> Result<(), rill_client::Error> {
/// let mut live = client.follow("orders", rill_client::ReadStart::TailOffset(0));
/// loop {
///     let record = live.next().await?;
///     println!("{}: {}", record.seq_num, record.body);
/// }
/// # }
/// ```
pub struct Follow {
    client: Client,
    stream: String,
    start: ReadStart,
    buffer: std::collections::VecDeque<StreamRecord>,
}

impl Follow {
    /// The next record, waiting as long as it takes for one.
    pub async fn next(&mut self) -> Result<StreamRecord, Error> {
        while self.buffer.is_empty() {
            let options = ReadOptions {
                start: self.start,
                count: None,
                bytes: None,
                until: None,
                wait_secs: 30,
            };
            let records = self.client.read_with(&self.stream, &options).await?;
            if let Some(last) = records.last() {
                self.start = ReadStart::SeqNum(last.seq_num + 1);
            }
            self.buffer.extend(records);
        }
        self.buffer
            .pop_front()
            .ok_or_else(|| Error::Decode("empty read".into()))
    }

    /// The seq num of the next record to return, once known.
    pub fn position(&self) -> Option<u64> {
        match (self.buffer.front(), self.start) {
            (Some(record), _) => Some(record.seq_num),
            (None, ReadStart::SeqNum(n)) => Some(n),
            _ => None,
        }
    }
}
