//! The engine's own record and position types, independent of any wire format.

use bytes::Bytes;
use serde::{Deserialize, Serialize};

// S2's limits on an append or a unary read, shared with the client.
pub use rill_protocol::limits::{MAX_BATCH_BYTES, MAX_BATCH_RECORDS, MAX_FENCING_TOKEN_BYTES};

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Header {
    pub name: Bytes,
    pub value: Bytes,
}

/// A record as a client submits it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AppendRecord {
    pub timestamp: Option<u64>,
    pub headers: Vec<Header>,
    pub body: Bytes,
}

impl AppendRecord {
    pub fn metered_size(&self) -> usize {
        metered_size(&self.headers, &self.body)
    }
}

/// A record as stored: sequenced and timestamped.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SequencedRecord {
    pub seq_num: u64,
    pub timestamp: u64,
    pub headers: Vec<Header>,
    pub body: Bytes,
}

impl SequencedRecord {
    pub fn metered_size(&self) -> usize {
        metered_size(&self.headers, &self.body)
    }
}

/// S2's metering ([`rill_protocol::limits::metered_size`]): a fixed 8
/// bytes per record, 2 per header, plus the payload.
///
/// ```
/// use bytes::Bytes;
/// use rill::engine::streams::types::{metered_size, Header};
///
/// let header = Header { name: Bytes::from("k"), value: Bytes::from("vv") };
/// assert_eq!(metered_size(&[header], b"body"), 8 + 2 + 3 + 4);
/// assert_eq!(metered_size(&[], b""), 8);
/// ```
pub fn metered_size(headers: &[Header], body: &[u8]) -> usize {
    rill_protocol::limits::metered_size(headers.iter().map(|h| (&h.name, &h.value)), body)
}

/// A seq num and the timestamp that goes with it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StreamPosition {
    pub seq_num: u64,
    pub timestamp: u64,
}

/// One atomic append.
#[derive(Clone, Debug, Default)]
pub struct AppendInput {
    pub records: Vec<AppendRecord>,
    pub match_seq_num: Option<u64>,
    pub fencing_token: Option<String>,
}

impl AppendInput {
    /// Whether the input holds a command record of this kind (`fence`,
    /// `trim`): one whose only header has an empty name and this value.
    pub fn has_command(&self, kind: &[u8]) -> bool {
        self.records.iter().any(|record| {
            matches!(record.headers.as_slice(),
                [header] if header.name.is_empty() && header.value.as_ref() == kind)
        })
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AppendAck {
    pub start: StreamPosition,
    pub end: StreamPosition,
    pub tail: StreamPosition,
}

/// Where a read starts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReadStart {
    SeqNum(u64),
    Timestamp(u64),
    TailOffset(u64),
}

/// When a read stops. `None` means unbounded on that axis.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ReadLimits {
    pub count: Option<u64>,
    pub bytes: Option<u64>,
    /// Exclusive timestamp bound.
    pub until: Option<u64>,
}

/// A batch of records returned by a read, with the tail at the time.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ReadBatch {
    pub records: Vec<SequencedRecord>,
    pub tail: Option<StreamPosition>,
}

/// Milliseconds since the Unix epoch, by the wall clock.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// A producer's claim on an append: who, in which epoch, which of its
/// appends this is.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProducerClaim {
    pub id: String,
    pub epoch: u64,
    pub seq: u64,
}

/// How a stream was closed.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Closure {
    /// The producer claim of the append that closed it, if it had one: a
    /// retry of that same append is answered as a duplicate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub by: Option<ProducerClaim>,
}

/// An idempotent producer's place in a stream: its epoch and the highest
/// seq it has had accepted in that epoch.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProducerState {
    pub epoch: u64,
    pub seq: u64,
}

/// Why an append with `AppendTerms` (`terms.rs`) was not applied. Some are answers a
/// client takes as success (`Duplicate`, `AlreadyClosed`): nothing was
/// appended because it already had been.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AppendRefusal {
    /// The stream is closed; `tail` is its final seq num.
    Closed { tail: u64 },
    /// A close alone, of a stream already closed.
    AlreadyClosed { tail: u64 },
    /// The producer had this append accepted already: `seq` is the highest
    /// it has had accepted in `epoch`.
    Duplicate {
        epoch: u64,
        seq: u64,
        tail: u64,
        closed: bool,
    },
    /// The producer has moved on to `current`; this one is fenced off.
    StaleEpoch { current: u64 },
    /// A new epoch must begin at seq 0.
    NewEpochNotAtZero,
    /// Appends of the producer are missing before this one.
    SeqGap { expected: u64, received: u64 },
    /// The writer sequence did not move forward past `last`.
    WriterSeqRegression { last: String },
}

impl std::fmt::Display for AppendRefusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Closed { .. } => write!(f, "the stream is closed; it takes no more appends"),
            Self::AlreadyClosed { .. } => write!(f, "the stream is already closed"),
            Self::Duplicate { epoch, seq, .. } => write!(
                f,
                "a duplicate: the producer's appends up to seq {seq} of epoch {epoch} are in"
            ),
            Self::StaleEpoch { current } => write!(
                f,
                "the producer's epoch is stale: the stream has seen epoch {current}"
            ),
            Self::NewEpochNotAtZero => write!(f, "a producer's new epoch must begin at seq 0"),
            Self::SeqGap { expected, received } => write!(
                f,
                "the producer's seq {received} leaves a gap: the next expected is {expected}"
            ),
            Self::WriterSeqRegression { last } => write!(
                f,
                "the writer sequence must be greater than the last one, {last:?}"
            ),
        }
    }
}
