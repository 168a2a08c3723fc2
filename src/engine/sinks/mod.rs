//! Sinks: consumers whose worker lives inside the server, writing what they
//! read to a destination (a webhook today). This layer, over consumers,
//! keeps their definitions; `src/sinks/` runs them.

pub mod config;
pub mod keys;
mod layer;

pub use config::{Destination, SinkConfig, SinkConfigPatch, SinkName, WebhookConfig};
pub use layer::{SinkInfo, Sinks};
