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

    /// The stream's next seq num.
    pub async fn check_tail(&self, stream: &str) -> Result<u64, Error> {
        let path = format!("/v1/streams/{}/records/tail", segment(stream));
        let tail: Value = self.call(Method::GET, &path, None, Retry::Safe).await?;
        tail["tail"]["seq_num"]
            .as_u64()
            .ok_or_else(|| Error::Decode(format!("tail without a seq num: {tail}")))
    }
}
