//! The S2S session protocol (`s2s.md` in the S2 v1 specs), shared by the
//! Rill server and `rill-client` so both ends frame messages the same way:
//! [`frame`] is the framing (length, flags, optional compression, terminal
//! messages) and [`messages`] the protobuf messages it carries.

#![warn(missing_docs)]

pub mod frame;
// The messages mirror `s2.proto` field for field; the proto documents them.
#[allow(missing_docs)]
pub mod messages;

pub use frame::{encode, encode_terminal, Compression, Decoder, Frame, FrameError};
