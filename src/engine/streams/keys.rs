//! The on-disk layout: keys and value encodings. `docs/ARCHITECTURE.md`
//! describes the same layout in prose; change both together.
//!
//! All integers are big-endian so that byte order is numeric order. Streams
//! are keyed by a numeric id, never by name, so a deleted stream's leftover
//! records can never show up in a new stream of the same name.

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use super::config::{BasinConfig, StreamConfig};
use super::types::{Closure, Header, SequencedRecord};
use crate::storage::StorageError;

// Tags that open every key of the core in the meta keyspace. The layers
// above keep their own tags in their own `keys.rs`; `engine::tests` checks
// that no two layers share one.
const BASIN_TAG: u8 = b'B';
const STREAM_TAG: u8 = b'S';
const STATE_TAG: u8 = b'T';
const PURGE_TAG: u8 = b'P';
const ACCESS_TOKEN_TAG: u8 = b'A';
const PURGED_BYTES_TAG: u8 = b'Y';
const ATTACHMENT_TAG: u8 = b'X';
const NEXT_ID_KEY: &[u8] = b"N";

/// Every meta-keyspace tag the core uses.
pub const META_TAGS: &[u8] = &[
    BASIN_TAG,
    STREAM_TAG,
    STATE_TAG,
    PURGE_TAG,
    ACCESS_TOKEN_TAG,
    PURGED_BYTES_TAG,
    ATTACHMENT_TAG,
    NEXT_ID_KEY[0],
];

/// `B{basin}` → [`BasinMeta`] as JSON.
pub fn basin_key(basin: &str) -> Vec<u8> {
    let mut key = Vec::with_capacity(1 + basin.len());
    key.push(BASIN_TAG);
    key.extend_from_slice(basin.as_bytes());
    key
}

/// Every stream's `S` key, of every basin.
pub fn all_streams_prefix() -> Vec<u8> {
    vec![STREAM_TAG]
}

pub fn basin_prefix() -> Vec<u8> {
    vec![BASIN_TAG]
}

pub fn basin_name_from_key(key: &[u8]) -> Option<&str> {
    std::str::from_utf8(key.strip_prefix(&[BASIN_TAG])?).ok()
}

/// `S{basin}\0{stream}` → [`StreamMeta`] as JSON. Basin names never hold a
/// NUL byte, so all streams of a basin share the prefix `S{basin}\0`.
pub fn stream_key(basin: &str, stream: &str) -> Vec<u8> {
    basin_scoped_key(STREAM_TAG, basin, stream)
}

pub fn stream_prefix(basin: &str) -> Vec<u8> {
    basin_scoped_prefix(STREAM_TAG, basin)
}

/// `{tag}{basin}\0{name}`: the key of a named object in a basin (streams
/// here; collections and consumers in their layers).
pub(crate) fn basin_scoped_key(tag: u8, basin: &str, name: &str) -> Vec<u8> {
    let mut key = basin_scoped_prefix(tag, basin);
    key.extend_from_slice(name.as_bytes());
    key
}

/// `{tag}{basin}\0`: what every [`basin_scoped_key`] of `tag` in `basin`
/// starts with. Basin names never hold a NUL, so no other basin's keys do.
pub(crate) fn basin_scoped_prefix(tag: u8, basin: &str) -> Vec<u8> {
    let mut key = Vec::with_capacity(2 + basin.len());
    key.push(tag);
    key.extend_from_slice(basin.as_bytes());
    key.push(0);
    key
}

/// `T{stream id}` → [`StreamState`]: the tail and everything else that
/// changes with appends. Written in the same batch as the records it covers.
pub fn state_key(stream_id: u64) -> Vec<u8> {
    tagged_id(STATE_TAG, stream_id)
}

pub fn state_prefix() -> Vec<u8> {
    vec![STATE_TAG]
}

pub fn state_id_from_key(key: &[u8]) -> Option<u64> {
    read_u64(key.strip_prefix(&[STATE_TAG])?)
}

/// `Y{stream id}` → u64: the metered bytes of the stream's records that
/// purging has removed (see `sizes.rs`). Written in the same batch as the
/// deletes it counts; removed with the stream's other keys once it is
/// deleted and purged.
pub fn purged_bytes_key(stream_id: u64) -> Vec<u8> {
    tagged_id(PURGED_BYTES_TAG, stream_id)
}

/// `P{id}` → empty: a deleted stream (or collection) whose keys are still
/// being removed in the background. Every key of a stream starts with its
/// id, in every keyspace but meta, and so do the keys upper layers keep
/// for their objects; upkeep removes them all. Survives restarts so
/// removal resumes.
pub fn purge_key(stream_id: u64) -> Vec<u8> {
    tagged_id(PURGE_TAG, stream_id)
}

pub fn purge_prefix() -> Vec<u8> {
    vec![PURGE_TAG]
}

pub fn purge_id_from_key(key: &[u8]) -> Option<u64> {
    read_u64(key.strip_prefix(&[PURGE_TAG])?)
}

/// `X{stream id}{name}` → what a stream carries besides its records and
/// state, written in the same batches as its appends: a producer's place
/// ([`producer_key`]), or what a layer above keeps per stream (a Durable
/// Streams stream's settings). Upkeep removes the stream's whole `X{id}`
/// range when it purges the deleted stream.
pub fn attachment_key(stream_id: u64, name: &[u8]) -> Vec<u8> {
    let mut key = attachment_prefix(stream_id);
    key.extend_from_slice(name);
    key
}

pub fn attachment_prefix(stream_id: u64) -> Vec<u8> {
    tagged_id(ATTACHMENT_TAG, stream_id)
}

/// `X{stream id}p{producer id}` → a `ProducerState` (`types.rs`) as JSON.
pub fn producer_key(stream_id: u64, producer: &str) -> Vec<u8> {
    let mut name = Vec::with_capacity(1 + producer.len());
    name.push(b'p');
    name.extend_from_slice(producer.as_bytes());
    attachment_key(stream_id, &name)
}

/// `A{token id}` → the token's `AccessTokenInfo` as JSON.
pub fn access_token_key(id: &str) -> Vec<u8> {
    let mut key = Vec::with_capacity(1 + id.len());
    key.push(ACCESS_TOKEN_TAG);
    key.extend_from_slice(id.as_bytes());
    key
}

/// `N` → the next id to hand out (u64). Streams, collections and consumers
/// all take their ids from this one counter, so an id names one object.
pub fn next_id_key() -> Vec<u8> {
    NEXT_ID_KEY.to_vec()
}

/// `{tag}{id}`: the key of a per-object record in the meta keyspace.
pub(crate) fn tagged_id(tag: u8, id: u64) -> Vec<u8> {
    let mut key = Vec::with_capacity(9);
    key.push(tag);
    key.extend_from_slice(&id.to_be_bytes());
    key
}

/// Records keyspace: `{stream id}{seq num}` → encoded record.
pub fn record_key(stream_id: u64, seq_num: u64) -> Vec<u8> {
    let mut key = Vec::with_capacity(16);
    key.extend_from_slice(&stream_id.to_be_bytes());
    key.extend_from_slice(&seq_num.to_be_bytes());
    key
}

/// Timestamps and Arrivals keyspaces: `{stream id}{time}{seq num}` → empty,
/// where time is the record timestamp or the append's arrival time. Both
/// are sparse indexes (see `docs/ARCHITECTURE.md`): Arrivals holds the
/// first record of each run of equal arrival times, Timestamps a record
/// every so many records or bytes.
pub fn index_key(stream_id: u64, time: u64, seq_num: u64) -> Vec<u8> {
    let mut key = Vec::with_capacity(24);
    key.extend_from_slice(&stream_id.to_be_bytes());
    key.extend_from_slice(&time.to_be_bytes());
    key.extend_from_slice(&seq_num.to_be_bytes());
    key
}

/// The (time, seq num) of an index key.
pub fn parse_index_key(key: &[u8]) -> Option<(u64, u64)> {
    if key.len() != 24 {
        return None;
    }
    Some((read_u64(&key[8..16])?, read_u64(&key[16..24])?))
}

/// The seq num of a records-keyspace key.
pub fn parse_record_key(key: &[u8]) -> Option<u64> {
    if key.len() != 16 {
        return None;
    }
    read_u64(&key[8..16])
}

pub(crate) fn read_u64(bytes: &[u8]) -> Option<u64> {
    Some(u64::from_be_bytes(bytes.try_into().ok()?))
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BasinMeta {
    pub config: BasinConfig,
    /// Milliseconds since the epoch.
    pub created_at: u64,
    /// The `s2-request-token` of the create that made it: a retry of that
    /// create succeeds instead of failing with "already exists".
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_token: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StreamMeta {
    pub id: u64,
    pub config: StreamConfig,
    pub created_at: u64,
    /// As in [`BasinMeta`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_token: Option<String>,
}

/// Everything about a stream that changes as records are appended.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StreamState {
    /// The seq num the next record gets.
    pub next_seq_num: u64,
    /// Timestamp of the last record (0 before the first).
    pub last_timestamp: u64,
    /// Records below this seq num are trimmed.
    pub trim_point: u64,
    /// Set by `fence` command records; empty means unfenced.
    pub fencing_token: String,
    /// Arrival time of the last append (or of creation), for delete-on-empty.
    pub last_write_at: u64,
    /// Metered bytes of every record appended since the stream was made,
    /// trimmed ones included (`sizes.rs`). `None` only in states written
    /// before Rill counted them; opening the core counts those once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub appended_bytes: Option<u64>,
    /// Set once the stream is closed: it takes no more appends, ever.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub closed: Option<Closure>,
    /// The highest writer sequence (`Stream-Seq` of Durable Streams) an
    /// append has carried; the next must be greater, bytewise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub writer_seq: Option<String>,
}

pub fn encode_json<T: Serialize>(value: &T) -> Vec<u8> {
    // Serializing these plain structs cannot fail.
    serde_json::to_vec(value).unwrap_or_default()
}

pub fn decode_json<T: for<'de> Deserialize<'de>>(bytes: &[u8]) -> Result<T, StorageError> {
    serde_json::from_slice(bytes).map_err(|e| StorageError::Corrupt(e.to_string()))
}

// Record value: timestamp u64 | header count u32 | (name len u32, name,
// value len u32, value)* | body (the rest).
pub fn encode_record(timestamp: u64, headers: &[Header], body: &[u8]) -> Vec<u8> {
    let header_bytes: usize = headers
        .iter()
        .map(|h| 8 + h.name.len() + h.value.len())
        .sum();
    let mut out = Vec::with_capacity(12 + header_bytes + body.len());
    out.extend_from_slice(&timestamp.to_be_bytes());
    out.extend_from_slice(&(headers.len() as u32).to_be_bytes());
    for h in headers {
        out.extend_from_slice(&(h.name.len() as u32).to_be_bytes());
        out.extend_from_slice(&h.name);
        out.extend_from_slice(&(h.value.len() as u32).to_be_bytes());
        out.extend_from_slice(&h.value);
    }
    out.extend_from_slice(body);
    out
}

/// The metered size ([`super::types::metered_size`]) of a record stored
/// as [`encode_record`] wrote it, without decoding it: each header costs 8
/// bytes of lengths stored against 2 metered, and the timestamp and header
/// count 12 stored against 8. `None` if the value is malformed.
pub fn stored_metered_size(value: &[u8]) -> Option<u64> {
    let count = u32::from_be_bytes(value.get(8..12)?.try_into().ok()?) as u64;
    (value.len() as u64).checked_sub(4 + 6 * count)
}

pub fn decode_record(seq_num: u64, value: &[u8]) -> Result<SequencedRecord, StorageError> {
    let corrupt = || StorageError::Corrupt(format!("record {seq_num} is malformed"));
    let bytes = Bytes::copy_from_slice(value);
    let mut pos = 0usize;
    let mut take = |n: usize| -> Result<Bytes, StorageError> {
        let end = pos
            .checked_add(n)
            .filter(|&e| e <= bytes.len())
            .ok_or_else(corrupt)?;
        let slice = bytes.slice(pos..end);
        pos = end;
        Ok(slice)
    };
    let timestamp = read_u64(&take(8)?).ok_or_else(corrupt)?;
    let count = u32::from_be_bytes(take(4)?.as_ref().try_into().map_err(|_| corrupt())?);
    let mut headers = Vec::with_capacity(count.min(1024) as usize);
    for _ in 0..count {
        let len = u32::from_be_bytes(take(4)?.as_ref().try_into().map_err(|_| corrupt())?);
        let name = take(len as usize)?;
        let len = u32::from_be_bytes(take(4)?.as_ref().try_into().map_err(|_| corrupt())?);
        let value = take(len as usize)?;
        headers.push(Header { name, value });
    }
    let body = bytes.slice(pos..);
    Ok(SequencedRecord {
        seq_num,
        timestamp,
        headers,
        body,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn record_round_trip() {
        let headers = vec![
            Header {
                name: Bytes::from_static(b"k"),
                value: Bytes::from_static(b"v"),
            },
            Header {
                name: Bytes::new(),
                value: Bytes::from_static(b"fence"),
            },
        ];
        let encoded = encode_record(42, &headers, b"body");
        let record = decode_record(7, &encoded).unwrap();
        assert_eq!(record.seq_num, 7);
        assert_eq!(record.timestamp, 42);
        assert_eq!(record.headers, headers);
        assert_eq!(&record.body[..], b"body");
        assert!(decode_record(7, &encoded[..10]).is_err());
        assert_eq!(
            stored_metered_size(&encoded),
            Some(record.metered_size() as u64)
        );
        assert_eq!(stored_metered_size(&encoded[..10]), None);
        let plain = encode_record(1, &[], b"");
        assert_eq!(stored_metered_size(&plain), Some(8));
    }

    #[test]
    fn keys_sort_numerically() {
        assert!(record_key(1, 255) < record_key(1, 256));
        assert!(record_key(1, u64::MAX) < record_key(2, 0));
        assert!(index_key(1, 5, 9) < index_key(1, 6, 0));
        assert_eq!(parse_index_key(&index_key(3, 5, 9)), Some((5, 9)));
        assert_eq!(parse_record_key(&record_key(3, 77)), Some(77));
        assert!(stream_key("basin", "a") < stream_key("basin", "b"));
        assert!(stream_key("basin", "zzz") < stream_key("basin-2", "a"));
    }
}
