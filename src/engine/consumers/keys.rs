//! The consumers layer's on-disk layout (all in the meta keyspace).
//! `docs/ARCHITECTURE.md` describes the same layout in prose; change both
//! together.

use serde::{Deserialize, Serialize};

use super::config::ConsumerConfig;
use crate::engine::streams::keys::{basin_scoped_key, basin_scoped_prefix, tagged_id};

pub use crate::engine::streams::keys::{decode_json, encode_json};

// Tags of the consumers layer's keys in the meta keyspace.
const CONSUMER_TAG: u8 = b'Q';
const CONSUMER_PROGRESS_TAG: u8 = b'R';
const CONSUMER_PENDING_TAG: u8 = b'D';

/// Every meta-keyspace tag this layer uses.
pub const META_TAGS: &[u8] = &[CONSUMER_TAG, CONSUMER_PROGRESS_TAG, CONSUMER_PENDING_TAG];

/// `Q{basin}\0{consumer}` → [`ConsumerMeta`] as JSON.
pub fn consumer_key(basin: &str, consumer: &str) -> Vec<u8> {
    basin_scoped_key(CONSUMER_TAG, basin, consumer)
}

pub fn consumer_prefix(basin: &str) -> Vec<u8> {
    basin_scoped_prefix(CONSUMER_TAG, basin)
}

/// `R{consumer id}` → the consumer's progress (JSON): its frontier (or
/// committed position) and counters. Rewritten with every change.
pub fn consumer_progress_key(consumer_id: u64) -> Vec<u8> {
    tagged_id(CONSUMER_PROGRESS_TAG, consumer_id)
}

/// `D{consumer id}{position}` → a pending message's entry (JSON). One key
/// per message delivered (or held back) and not yet acked.
pub fn consumer_pending_key(consumer_id: u64, position: &[u8]) -> Vec<u8> {
    let mut key = consumer_pending_prefix(consumer_id);
    key.extend_from_slice(position);
    key
}

pub fn consumer_pending_prefix(consumer_id: u64) -> Vec<u8> {
    tagged_id(CONSUMER_PENDING_TAG, consumer_id)
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ConsumerMeta {
    pub id: u64,
    pub config: ConsumerConfig,
    pub created_at: u64,
    /// The id of the source (stream or collection) when the consumer was
    /// made; a source made again under the same name has another.
    pub source_id: u64,
}
