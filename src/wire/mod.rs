//! Wire formats: how engine types look on the network. The HTTP handlers
//! convert here and nowhere else.

pub mod collections;
pub mod consumers;
pub mod cursor;
pub mod json;
pub mod proto;
/// S2S framing lives in the `rill-s2s` crate, shared with the client.
pub use rill_s2s::frame as s2s;
