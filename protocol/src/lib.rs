//! What the Rill server and `rill-client` must agree on, defined once so
//! both ends use the same code:
//!
//! - [`frame`]: the S2S session protocol (`s2s.md` in the S2 v1 specs):
//!   length, flags, optional compression, terminal messages;
//! - [`messages`]: the protobuf messages of `s2.proto` that appends, reads
//!   and sessions carry;
//! - [`limits`]: S2's limits on an append or a read, and how records are
//!   metered against them;
//! - [`collections`]: the JSON of a collection record and of a change
//!   event, as the server stores and serves them.

#![warn(missing_docs)]

pub mod collections;
pub mod frame;
pub mod limits;
// The messages mirror `s2.proto` field for field; the proto documents them.
#[allow(missing_docs)]
pub mod messages;

pub use frame::{encode, encode_message, encode_terminal, Compression, Decoder, Frame, FrameError};
