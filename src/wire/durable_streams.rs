//! The Durable Streams protocol's formats: offsets, JSON-mode bodies,
//! and what a read's records become on the wire.
//!
//! An offset is the seq num of the next record: `{seq:016}_{0:016}`, the
//! shape of the reference server's offsets, which clients and the
//! conformance suite write themselves (`0000000000000000_0000000000000000`
//! is the start of every stream). Fixed width, so lexicographic order is
//! numeric order, as the protocol asks (a seq num past 10^16 would break
//! that: at a million records a second, in three centuries); never `-1` or
//! `now`. The second part says where in a record an offset falls: records
//! are read whole here, so it is always 0.

use bytes::{Bytes, BytesMut};
use serde_json::value::RawValue;

use crate::engine::streams::types::SequencedRecord;

/// Where a read starts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Offset {
    /// `-1`: the beginning.
    Start,
    /// `now`: the tail, as of the request.
    Now,
    At(u64),
}

const DIGITS: usize = 16;
const WITHIN_RECORD: &str = "0000000000000000";

pub fn offset(seq_num: u64) -> String {
    format!("{seq_num:0DIGITS$}_{WITHIN_RECORD}")
}

/// An offset as a client sends it; `None` unless it is one this server
/// makes (or `-1`, `now`).
pub fn parse_offset(text: &str) -> Option<Offset> {
    match text {
        "-1" => Some(Offset::Start),
        "now" => Some(Offset::Now),
        _ => {
            let (seq, within) = text.split_once('_')?;
            let digits =
                |part: &str| part.len() == DIGITS && part.bytes().all(|b| b.is_ascii_digit());
            if !digits(seq) || within != WITHIN_RECORD {
                return None;
            }
            seq.parse().ok().map(Offset::At)
        }
    }
}

/// The messages of a JSON-mode append: a top-level array is flattened one
/// level (each element a message, `[]` none); anything else is one
/// message. Each message keeps its own bytes (slices of `body`, not
/// copies). `Err` says why the body is not JSON.
pub fn json_messages(body: &Bytes) -> Result<Vec<Bytes>, String> {
    let text = std::str::from_utf8(body).map_err(|_| "the body is not UTF-8".to_string())?;
    let value: &RawValue = serde_json::from_str(text).map_err(|e| e.to_string())?;
    let raw = value.get();
    if !raw.starts_with('[') {
        return Ok(vec![body.slice_ref(raw.as_bytes())]);
    }
    let elements: Vec<&RawValue> = serde_json::from_str(raw).map_err(|e| e.to_string())?;
    Ok(elements
        .into_iter()
        .map(|element| body.slice_ref(element.get().as_bytes()))
        .collect())
}

/// Where to cut `text` (UTF-8, if the client sent it so) at most `max`
/// bytes in: before the character that would cross it, so that every
/// record of a text stream holds whole characters.
pub fn char_boundary(text: &[u8], max: usize) -> usize {
    if text.len() <= max {
        return text.len();
    }
    // A continuation byte (10xxxxxx) is inside a character; at most three
    // of them follow its first byte.
    let inside = |at: usize| text[at] & 0xC0 == 0x80;
    let mut cut = max;
    while cut > max.saturating_sub(3) && cut > 0 && inside(cut) {
        cut -= 1;
    }
    // Not UTF-8 there (no character starts within three bytes): cut where
    // asked.
    if cut == 0 || inside(cut) {
        max
    } else {
        cut
    }
}

/// A read's body: in JSON mode an array of the messages, else the bytes
/// of the records one after another.
pub fn body(records: &[SequencedRecord], json: bool) -> Bytes {
    let size: usize = records.iter().map(|r| r.body.len() + 1).sum();
    let mut out = BytesMut::with_capacity(size + 2);
    if json {
        out.extend_from_slice(b"[");
    }
    for (i, record) in records.iter().enumerate() {
        if json && i > 0 {
            out.extend_from_slice(b",");
        }
        out.extend_from_slice(&record.body);
    }
    if json {
        out.extend_from_slice(b"]");
    }
    out.freeze()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offsets_sort_as_their_seq_nums_and_parse_back() {
        let seqs = [0, 9, 10, 99, 12345, 9_999_999_999_999_999];
        let offsets: Vec<String> = seqs.map(offset).to_vec();
        let mut sorted = offsets.clone();
        sorted.sort();
        assert_eq!(offsets, sorted);
        for (seq, text) in seqs.iter().zip(&offsets) {
            assert_eq!(parse_offset(text), Some(Offset::At(*seq)));
        }
        assert_eq!(offset(0), "0000000000000000_0000000000000000");
        assert_eq!(parse_offset("-1"), Some(Offset::Start));
        assert_eq!(parse_offset("now"), Some(Offset::Now));
        for bad in [
            "",
            "5",
            "0,1",
            "0 1",
            "abc",
            "-2",
            "0000000000000005",
            "000000000000005_0000000000000000",
            "0000000000000005_0000000000000001",
            "+000000000000005_0000000000000000",
        ] {
            assert_eq!(parse_offset(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn json_arrays_are_flattened_one_level_and_keep_their_bytes() {
        let messages = |body: &str| -> Vec<String> {
            json_messages(&Bytes::copy_from_slice(body.as_bytes()))
                .unwrap()
                .iter()
                .map(|m| String::from_utf8(m.to_vec()).unwrap())
                .collect()
        };
        assert_eq!(messages(r#"{"a": 1}"#), [r#"{"a": 1}"#]);
        assert_eq!(messages(r#" [ {"a":1} , 2 ] "#), [r#"{"a":1}"#, "2"]);
        assert_eq!(messages("[[1,2],[3,4]]"), ["[1,2]", "[3,4]"]);
        assert_eq!(messages("[[[1,2,3]]]"), ["[[1,2,3]]"]);
        assert!(messages("[]").is_empty());
        for bad in [&b"{oops"[..], b"[1,", b"1 2", &[0xff]] {
            assert!(json_messages(&Bytes::copy_from_slice(bad)).is_err());
        }
    }

    #[test]
    fn text_is_cut_between_characters() {
        let text = "aé€😀".as_bytes(); // 1, 2, 3 and 4 bytes
        for max in 1..text.len() {
            let cut = char_boundary(text, max);
            assert!(cut <= max && cut > 0, "{max}: {cut}");
            assert!(std::str::from_utf8(&text[..cut]).is_ok(), "{max}: {cut}");
        }
        assert_eq!(char_boundary(text, 100), text.len());
        // Not UTF-8: cut where asked.
        assert_eq!(char_boundary(&[0x80; 10], 4), 4);
    }

    #[test]
    fn bodies_are_arrays_in_json_mode_and_bytes_otherwise() {
        let record = |seq_num, body: &'static str| SequencedRecord {
            seq_num,
            timestamp: 0,
            headers: Vec::new(),
            body: Bytes::from_static(body.as_bytes()),
        };
        let records = [record(0, "1"), record(1, r#"{"b":2}"#)];
        assert_eq!(body(&records, true), r#"[1,{"b":2}]"#);
        assert_eq!(body(&records, false), r#"1{"b":2}"#);
        assert_eq!(body(&[], true), "[]");
        assert_eq!(body(&[], false), "");
    }
}
