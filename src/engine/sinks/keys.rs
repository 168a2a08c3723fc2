//! The sinks layer's on-disk layout (the meta keyspace).
//! `docs/ARCHITECTURE.md` describes the same layout in prose; change both
//! together.

use serde::{Deserialize, Serialize};

use super::config::SinkConfig;
use crate::engine::streams::keys::{basin_scoped_key, basin_scoped_prefix};

pub use crate::engine::streams::keys::{decode_json, encode_json};

const SINK_TAG: u8 = b'Z';

/// Every meta-keyspace tag this layer uses.
pub const META_TAGS: &[u8] = &[SINK_TAG];

/// `Z{basin}\0{sink}` → [`SinkMeta`] as JSON.
pub fn sink_key(basin: &str, sink: &str) -> Vec<u8> {
    basin_scoped_key(SINK_TAG, basin, sink)
}

pub fn sink_prefix(basin: &str) -> Vec<u8> {
    basin_scoped_prefix(SINK_TAG, basin)
}

/// A sink's metadata: its config, secrets included.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct SinkMeta {
    pub config: SinkConfig,
    pub created_at: u64,
}
