//! S2S session framing (`s2s.md`).
//!
//! Each message is a 3-byte big-endian length (of flag + body), a flag
//! byte `[T][CC][A][RRRR]` — T: terminal, CC: compression (00 none, 01 zstd,
//! 10 gzip), A: "reconnect advised" (server to client only; ignored when
//! received), R: reserved, must be 0 — and the body: a protobuf message, or,
//! in a terminal message, a 2-byte status code and a JSON error.

use bytes::{Buf, BufMut, Bytes, BytesMut};

/// Largest message (flag + body) the 3-byte length can express.
pub const MAX_FRAME_LEN: usize = (1 << 24) - 1;
/// Largest message body, before or after decompression, that we accept
/// (S2's limit): a full append (1 MiB metered) plus protobuf overhead fits.
pub const MAX_DECOMPRESSED_LEN: usize = 2 * 1024 * 1024;
/// Messages smaller than this are sent uncompressed, as `s2s.md` asks.
pub const COMPRESSION_THRESHOLD: usize = 1024;

const TERMINAL_BIT: u8 = 0b1000_0000;
const COMPRESSION_MASK: u8 = 0b0110_0000;
const RESERVED_MASK: u8 = 0b0000_1111;

/// How a message body is compressed (the flag byte's CC bits).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Compression {
    /// Sent as is.
    #[default]
    None,
    /// zstd.
    Zstd,
    /// gzip.
    Gzip,
}

impl Compression {
    fn bits(self) -> u8 {
        match self {
            Compression::None => 0b00,
            Compression::Zstd => 0b01,
            Compression::Gzip => 0b10,
        }
    }

    /// The best algorithm the client accepts (`Accept-Encoding`).
    pub fn negotiate(accept_encoding: Option<&str>) -> Self {
        let Some(header) = accept_encoding else {
            return Compression::None;
        };
        // Codings with `q=0` are refused, not offered (RFC 9110 §12.4.2).
        let offered: Vec<String> = header
            .split(',')
            .filter(|part| {
                !part.split(';').skip(1).any(|param| {
                    param
                        .split_once('=')
                        .is_some_and(|(k, v)| k.trim() == "q" && v.trim().parse::<f32>() == Ok(0.0))
                })
            })
            .map(|part| {
                part.split(';')
                    .next()
                    .unwrap_or("")
                    .trim()
                    .to_ascii_lowercase()
            })
            .collect();
        let offered: Vec<&str> = offered.iter().map(String::as_str).collect();
        if offered.contains(&"zstd") {
            Compression::Zstd
        } else if offered.contains(&"gzip") {
            Compression::Gzip
        } else {
            Compression::None
        }
    }
}

/// Why bytes are not a valid message; each ends the session.
#[allow(missing_docs)] // each variant's message says it
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum FrameError {
    #[error("a message declared length 0; every message has at least a flag byte")]
    Empty,
    #[error("a message has reserved flag bits set")]
    ReservedBits,
    #[error("a message uses an unknown compression (bits 0b11)")]
    UnknownCompression,
    #[error("a message of {0} bytes exceeds the {MAX_DECOMPRESSED_LEN}-byte limit")]
    TooLarge(usize),
    #[error("a compressed message could not be decompressed: {0}")]
    Decompress(String),
    #[error("the session ended in the middle of a message")]
    Truncated,
    #[error("a terminal message is malformed")]
    BadTerminal,
}

/// One decoded message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Frame {
    /// A regular message: a protobuf message's bytes, decompressed.
    Message(Bytes),
    /// The last message of a session that failed: the HTTP status it
    /// would have had, and the JSON error body.
    Terminal {
        /// The HTTP status code.
        status: u16,
        /// The JSON error.
        body: Bytes,
    },
}

/// Encodes a regular message, compressing it if it is large enough.
///
/// ```
/// use rill_protocol::{encode, Compression, Decoder, Frame};
///
/// let bytes = encode(b"hello", Compression::Zstd); // small: sent as is
/// assert_eq!(&bytes[..4], &[0, 0, 6, 0]); // length 6 = flag + 5, no flags
/// let mut decoder = Decoder::default();
/// decoder.push(&bytes);
/// assert_eq!(decoder.next_frame().unwrap(), Some(Frame::Message("hello".into())));
/// ```
pub fn encode(body: &[u8], compression: Compression) -> Bytes {
    if body.len() >= COMPRESSION_THRESHOLD {
        if let Some(compressed) = compress(body, compression) {
            return frame(compression.bits() << 5, &compressed);
        }
    }
    frame(0, body)
}

/// Encodes `message` as a frame, compressed as [`encode`] would. When it
/// goes out uncompressed (most sessions), the message is encoded straight
/// into the frame: a read batch's record bodies are copied once, not three
/// times (into a buffer, then a copy of it, then the frame).
pub fn encode_message(message: &impl prost::Message, compression: Compression) -> Bytes {
    let len = message.encoded_len();
    if compression != Compression::None && len >= COMPRESSION_THRESHOLD {
        return encode(&message.encode_to_vec(), compression);
    }
    let mut out = BytesMut::with_capacity(4 + len);
    out.put_uint(1 + len as u64, 3);
    out.put_u8(0);
    message.encode_raw(&mut out);
    out.freeze()
}

/// Encodes a terminal message: status code and JSON error body.
pub fn encode_terminal(status: u16, json: &[u8]) -> Bytes {
    let mut body = Vec::with_capacity(2 + json.len());
    body.extend_from_slice(&status.to_be_bytes());
    body.extend_from_slice(json);
    frame(TERMINAL_BIT, &body)
}

fn frame(flag: u8, payload: &[u8]) -> Bytes {
    let len = 1 + payload.len();
    let mut out = BytesMut::with_capacity(3 + len);
    out.put_uint(len as u64, 3);
    out.put_u8(flag);
    out.put_slice(payload);
    out.freeze()
}

#[cfg(feature = "compression")]
fn compress(body: &[u8], compression: Compression) -> Option<Vec<u8>> {
    match compression {
        Compression::None => None,
        Compression::Zstd => zstd::bulk::compress(body, 1).ok(),
        Compression::Gzip => {
            let mut encoder =
                flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
            std::io::Write::write_all(&mut encoder, body).ok()?;
            encoder.finish().ok()
        }
    }
}

/// Built without compression: every message goes out as it is.
#[cfg(not(feature = "compression"))]
fn compress(_body: &[u8], _compression: Compression) -> Option<Vec<u8>> {
    None
}

#[cfg(feature = "compression")]
fn decompress(body: &[u8], compression: Compression) -> Result<Bytes, FrameError> {
    use std::io::Read;

    let limit = MAX_DECOMPRESSED_LEN as u64 + 1;
    let mut out = Vec::new();
    let result = match compression {
        Compression::None => return Ok(Bytes::copy_from_slice(body)),
        Compression::Zstd => {
            zstd::stream::read::Decoder::new(body).and_then(|d| d.take(limit).read_to_end(&mut out))
        }
        Compression::Gzip => flate2::read::GzDecoder::new(body)
            .take(limit)
            .read_to_end(&mut out),
    };
    result.map_err(|e| FrameError::Decompress(e.to_string()))?;
    if out.len() > MAX_DECOMPRESSED_LEN {
        return Err(FrameError::TooLarge(out.len()));
    }
    Ok(Bytes::from(out))
}

#[cfg(not(feature = "compression"))]
fn decompress(body: &[u8], compression: Compression) -> Result<Bytes, FrameError> {
    match compression {
        Compression::None => Ok(Bytes::copy_from_slice(body)),
        _ => Err(FrameError::Decompress(
            "built without compression support".into(),
        )),
    }
}

/// Incremental decoder: feed it bytes as they arrive, take whole frames.
#[derive(Default)]
pub struct Decoder {
    buffer: BytesMut,
}

impl Decoder {
    /// Adds bytes as they arrive.
    pub fn push(&mut self, chunk: &[u8]) {
        self.buffer.extend_from_slice(chunk);
    }

    /// The next complete frame, `Ok(None)` if more bytes are needed.
    pub fn next_frame(&mut self) -> Result<Option<Frame>, FrameError> {
        if self.buffer.len() < 3 {
            return Ok(None);
        }
        let len = (usize::from(self.buffer[0]) << 16)
            | (usize::from(self.buffer[1]) << 8)
            | usize::from(self.buffer[2]);
        if len == 0 {
            return Err(FrameError::Empty);
        }
        // Compressed bodies can be at most the decompressed limit too.
        if len > MAX_DECOMPRESSED_LEN + 1 {
            return Err(FrameError::TooLarge(len - 1));
        }
        // Check the flag as soon as it arrives, not only once the whole
        // message has: a bad flag should fail fast.
        if let Some(&flag) = self.buffer.get(3) {
            if flag & RESERVED_MASK != 0 {
                return Err(FrameError::ReservedBits);
            }
            if flag & COMPRESSION_MASK == COMPRESSION_MASK {
                return Err(FrameError::UnknownCompression);
            }
        }
        if self.buffer.len() < 3 + len {
            return Ok(None);
        }
        let flag = self.buffer[3];
        self.buffer.advance(4);
        let payload = self.buffer.split_to(len - 1).freeze();
        let compression = match (flag & COMPRESSION_MASK) >> 5 {
            0b00 => Compression::None,
            0b01 => Compression::Zstd,
            _ => Compression::Gzip,
        };
        let body = decompress(&payload, compression)?;
        if flag & TERMINAL_BIT != 0 {
            if body.len() < 2 {
                return Err(FrameError::BadTerminal);
            }
            let status = u16::from_be_bytes([body[0], body[1]]);
            return Ok(Some(Frame::Terminal {
                status,
                body: body.slice(2..),
            }));
        }
        Ok(Some(Frame::Message(body)))
    }

    /// Call at end of input: leftover bytes mean a message was cut off.
    pub fn finish(&self) -> Result<(), FrameError> {
        if self.buffer.is_empty() {
            Ok(())
        } else {
            Err(FrameError::Truncated)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode_all(bytes: &[u8]) -> Result<Vec<Frame>, FrameError> {
        let mut decoder = Decoder::default();
        let mut frames = Vec::new();
        // Feed one byte at a time to exercise partial frames.
        for b in bytes {
            decoder.push(std::slice::from_ref(b));
            while let Some(frame) = decoder.next_frame()? {
                frames.push(frame);
            }
        }
        decoder.finish()?;
        Ok(frames)
    }

    #[test]
    #[cfg(feature = "compression")]
    fn a_message_encodes_as_its_bytes_would() {
        let message = |n: usize| crate::messages::AppendRecord {
            body: Bytes::from(vec![7u8; n]),
            ..Default::default()
        };
        for compression in [Compression::None, Compression::Zstd, Compression::Gzip] {
            for n in [0, 5, COMPRESSION_THRESHOLD, 100_000] {
                let message = message(n);
                let expected = encode(&prost::Message::encode_to_vec(&message), compression);
                assert_eq!(encode_message(&message, compression), expected, "{n} bytes");
            }
        }
    }

    #[test]
    #[cfg(feature = "compression")]
    fn round_trips_in_every_compression() {
        let small = b"hello".to_vec();
        let large: Vec<u8> = (0..10_000).map(|i| (i % 7) as u8).collect();
        for compression in [Compression::None, Compression::Zstd, Compression::Gzip] {
            let mut bytes = encode(&small, compression).to_vec();
            bytes.extend_from_slice(&encode(&large, compression));
            bytes.extend_from_slice(&encode_terminal(412, br#"{"seq_num_mismatch":3}"#));
            let frames = decode_all(&bytes).unwrap();
            assert_eq!(frames[0], Frame::Message(Bytes::from(small.clone())));
            assert_eq!(frames[1], Frame::Message(Bytes::from(large.clone())));
            assert_eq!(
                frames[2],
                Frame::Terminal {
                    status: 412,
                    body: Bytes::from_static(br#"{"seq_num_mismatch":3}"#)
                }
            );
        }
        // Large messages really are compressed when asked.
        assert!(encode(&large, Compression::Zstd).len() < large.len() / 2);
    }

    #[test]
    fn rejects_malformed_frames() {
        assert_eq!(decode_all(&[0, 0, 0]), Err(FrameError::Empty));
        assert_eq!(
            decode_all(&[0, 0, 2, 0b0000_0001, 9]),
            Err(FrameError::ReservedBits)
        );
        assert_eq!(
            decode_all(&[0, 0, 2, 0b0110_0000, 9]),
            Err(FrameError::UnknownCompression)
        );
        assert_eq!(
            decode_all(&[0xff, 0xff, 0xff, 0]),
            Err(FrameError::TooLarge(MAX_FRAME_LEN - 1))
        );
        assert_eq!(decode_all(&[0, 0, 5, 0, 1, 2]), Err(FrameError::Truncated));
        assert!(matches!(
            decode_all(&[0, 0, 3, 0b0010_0000, 1, 2]),
            Err(FrameError::Decompress(_))
        ));
        assert_eq!(
            decode_all(&[0, 0, 2, TERMINAL_BIT, 1]),
            Err(FrameError::BadTerminal)
        );
    }

    #[test]
    fn negotiates_compression() {
        assert_eq!(
            Compression::negotiate(Some("gzip, zstd")),
            Compression::Zstd
        );
        assert_eq!(
            Compression::negotiate(Some("gzip;q=1.0")),
            Compression::Gzip
        );
        assert_eq!(Compression::negotiate(Some("br")), Compression::None);
        assert_eq!(
            Compression::negotiate(Some("zstd;q=0, gzip")),
            Compression::Gzip
        );
        assert_eq!(Compression::negotiate(Some("ZSTD")), Compression::Zstd);
        assert_eq!(Compression::negotiate(None), Compression::None);
    }
}
