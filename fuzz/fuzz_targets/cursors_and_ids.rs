//! Opaque strings clients hand back: records-stream cursors, unified
//! cursors, consumer ack ids, times, names. What decodes must encode back
//! to the same value.
#![no_main]

use libfuzzer_sys::fuzz_target;
use rill::engine::streams::names::{BasinName, StreamName};
use rill::wire::consumers::{decode_ack_id, encode_ack_id};
use rill::wire::cursor::{decode_cursor, decode_unified_cursor, encode_cursor};

fuzz_target!(|text: &str| {
    if let Ok(cursor) = decode_cursor(text) {
        assert_eq!(decode_cursor(&encode_cursor(&cursor)).ok(), Some(cursor));
    }
    let _ = decode_unified_cursor(text);
    if let Ok(id) = decode_ack_id(text) {
        assert_eq!(decode_ack_id(&encode_ack_id(&id)).ok(), Some(id));
    }
    let _ = rill::wire::cursor::parse_time(text);
    let _ = rill::engine::streams::token_index::parse_time(text);
    let _ = BasinName::parse(text.to_string());
    let _ = StreamName::parse(text.to_string());
});
