//! Wire formats: how engine types look on the network. The HTTP handlers
//! convert here and nowhere else.

pub mod collections;
pub mod consumers;
pub mod cursor;
pub mod durable_streams;
pub mod filter;
pub mod json;
pub mod proto;
pub mod sinks;
pub mod sources;
/// S2S framing lives in the `rill-protocol` crate, shared with the client.
pub use rill_protocol::frame as s2s;
