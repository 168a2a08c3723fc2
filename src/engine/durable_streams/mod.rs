//! Durable Streams (the protocol of `@durable-streams/*`) over the stream
//! core: each of its streams is an S2 stream of one basin, [`BASIN`], named
//! by its path.
//!
//! - a message (JSON mode) or an append's bytes (byte mode) is a record,
//!   without headers; offsets are seq nums (the wire layer writes them);
//! - closure, idempotent producers and `Stream-Seq` are the core's append
//!   terms (`streams/terms.rs`): checked by the stream's task, written in
//!   the append's batch;
//! - content type and expiry are this layer's, in an attachment of the
//!   stream (`meta.rs`); expiry is checked on every access and swept by
//!   upkeep (`expiry.rs`).
//!
//! An S2 stream made in [`BASIN`] through the S2 API reads here as an
//! `application/octet-stream` stream that never expires.

mod create;
mod expiry;
mod forks;
mod layer;
pub mod meta;
mod read;
mod write;

pub use create::{CreateRequest, Creation, ForkRequest};
pub use layer::{DurableStream, DurableStreams};
pub use meta::{Expiry, Settings, BASIN};
pub use read::Chunk;
pub use write::{MAX_MESSAGES, MAX_MESSAGE_BYTES};
