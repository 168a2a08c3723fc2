//! What a `rill bench` record carries, and the check that a record read
//! back is exactly the one written: the run's nonce (so records of another
//! run or writer are caught), its index in the run, when it was sent
//! (microseconds since the run started, for end-to-end latency), and a
//! filler derived from the index, so that a changed byte shows.

use bytes::{BufMut, Bytes, BytesMut};
use rill_client::StreamRecord;

/// nonce, index, sent-at: the smallest body a bench record can have.
pub const HEADER_LEN: usize = 24;

/// The body of the run's record `index`.
pub fn body(nonce: u64, index: u64, sent_us: u64, size: usize) -> Bytes {
    let mut body = BytesMut::with_capacity(size);
    body.put_u64(nonce);
    body.put_u64(index);
    body.put_u64(sent_us);
    body.extend((HEADER_LEN..size).map(|offset| filler(index, offset)));
    body.freeze()
}

fn filler(index: u64, offset: usize) -> u8 {
    (index.wrapping_mul(31).wrapping_add(offset as u64 * 7) % 251) as u8
}

/// Checks that `record` is the run's record `index`, at its place, of its
/// size and (if `every_byte`) unchanged; returns when it was sent.
pub fn verify(
    record: &StreamRecord,
    index: u64,
    first_seq_num: u64,
    nonce: u64,
    size: usize,
    every_byte: bool,
) -> Result<u64, String> {
    let bad = |what: &str| {
        Err(format!(
            "record {} (seq num {}) is wrong: {what}",
            index, record.seq_num
        ))
    };
    let body = &record.body;
    if body.len() != size {
        return bad(&format!("{} bytes, expected {size}", body.len()));
    }
    let word = |at: usize| {
        let mut bytes = [0u8; 8];
        bytes.copy_from_slice(&body[at..at + 8]);
        u64::from_be_bytes(bytes)
    };
    if word(0) != nonce {
        return bad("written by someone else (another run or writer)");
    }
    if word(8) != index {
        return bad(&format!("it is record {}: out of order", word(8)));
    }
    if record.seq_num != first_seq_num + index {
        return bad(&format!("expected seq num {}", first_seq_num + index));
    }
    let mut offsets = (HEADER_LEN..size).filter(|_| every_byte);
    if let Some(offset) = offsets.find(|&offset| body[offset] != filler(index, offset)) {
        return bad(&format!("byte {offset} differs from what was written"));
    }
    Ok(word(16))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(seq_num: u64, body: Bytes) -> StreamRecord {
        StreamRecord {
            seq_num,
            timestamp: 0,
            headers: vec![],
            body,
        }
    }

    #[test]
    fn verification_catches_every_kind_of_damage() {
        let good = body(7, 3, 1234, 64);
        assert_eq!(
            verify(&record(13, good.clone()), 3, 10, 7, 64, true),
            Ok(1234)
        );
        // Another run, out of order, misplaced, truncated, a changed byte.
        assert!(verify(&record(13, good.clone()), 3, 10, 8, 64, true).is_err());
        assert!(verify(&record(13, good.clone()), 4, 9, 7, 64, true).is_err());
        assert!(verify(&record(14, good.clone()), 3, 10, 7, 64, true).is_err());
        assert!(verify(&record(13, good.slice(..63)), 3, 10, 7, 64, true).is_err());
        let mut damaged = good.to_vec();
        damaged[40] ^= 1;
        let damaged = record(13, Bytes::from(damaged));
        assert!(verify(&damaged, 3, 10, 7, 64, true).is_err());
        // A fan-out reader past the first checks all but the bytes.
        assert_eq!(verify(&damaged, 3, 10, 7, 64, false), Ok(1234));
    }
}
