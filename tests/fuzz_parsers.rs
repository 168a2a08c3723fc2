//! Everything that parses bytes a client controls, fed arbitrary input and
//! mutations of valid input: it must answer (a value or an error), never
//! panic, and what it accepts must survive a round trip where there is one.
//!
//! Each property runs `PROPTEST_CASES` inputs (256 by default here; CI
//! runs the default). A long run is one command:
//! `PROPTEST_CASES=1000000 cargo test --release --test fuzz_parsers`.

use bytes::Bytes;
use proptest::prelude::*;
use rill::engine::consumers::ConsumerConfig;
use rill::engine::streams::names::{BasinName, StreamName};
use rill::engine::streams::scope::Scope;
use rill::engine::streams::token_index::{parse_time, AccessTokenInfo};
use rill::wire::consumers::{decode_ack_id, encode_ack_id};
use rill::wire::cursor::{decode_cursor, decode_unified_cursor, encode_cursor};
use rill::wire::json::{AppendInput, Format};
use rill::wire::proto::decode_append_input;
use rill::wire::s2s::{encode, Compression, Decoder, Frame};

/// Bytes that are often close to valid: random bytes, or a valid sample
/// with a few bytes changed, cut or added.
fn near(valid: Vec<Vec<u8>>) -> impl Strategy<Value = Vec<u8>> {
    let mutated = (
        proptest::sample::select(valid),
        proptest::collection::vec((any::<usize>(), any::<u8>()), 0..4),
        any::<usize>(),
    )
        .prop_map(|(mut bytes, flips, cut)| {
            for (at, byte) in flips {
                if !bytes.is_empty() {
                    let i = at % bytes.len();
                    bytes[i] = byte;
                }
            }
            if !bytes.is_empty() && cut % 3 == 0 {
                bytes.truncate(cut % bytes.len());
            }
            bytes
        });
    prop_oneof![proptest::collection::vec(any::<u8>(), 0..256), mutated]
}

fn text(valid: &[&str]) -> impl Strategy<Value = String> {
    let valid = valid.iter().map(|s| s.as_bytes().to_vec()).collect();
    near(valid).prop_map(|bytes| String::from_utf8_lossy(&bytes).into_owned())
}

fn s2s_frames() -> Vec<Vec<u8>> {
    let mut a = encode(b"hello", Compression::None).to_vec();
    a.extend_from_slice(&encode(&[0u8; 40], Compression::None));
    vec![a, encode(b"", Compression::None).to_vec()]
}

proptest! {
    #![proptest_config(ProptestConfig { failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn s2s_frames_never_panic(bytes in near(s2s_frames()), split in any::<usize>()) {
        let mut decoder = Decoder::default();
        let at = if bytes.is_empty() { 0 } else { split % bytes.len() };
        decoder.push(&bytes[..at]);
        let mut frames = 0;
        loop {
            match decoder.next_frame() {
                Ok(Some(Frame::Message(_))) | Ok(Some(Frame::Terminal { .. })) => frames += 1,
                Ok(None) | Err(_) => break,
            }
            prop_assert!(frames <= bytes.len() + 1);
        }
        decoder.push(&bytes[at..]);
        while let Ok(Some(_)) = decoder.next_frame() {}
        let _ = decoder.finish();
    }

    #[test]
    fn protobuf_appends_never_panic(bytes in near(vec![
        vec![0x0a, 0x07, 0x1a, 0x05, b'h', b'e', b'l', b'l', b'o'],
        vec![0x0a, 0x02, 0x12, 0x00, 0x10, 0x05],
    ])) {
        let _ = decode_append_input(Bytes::from(bytes));
    }

    #[test]
    fn json_appends_never_panic(body in text(&[
        r#"{"records": [{"body": "a", "headers": [["x", "y"]], "timestamp": 5}], "match_seq_num": 3}"#,
        r#"{"records": [{"headers": [["", "fence"]], "body": "tok"}], "fencing_token": "t"}"#,
    ]), base64 in any::<bool>()) {
        if let Ok(input) = serde_json::from_str::<AppendInput>(&body) {
            let format = if base64 { Format::Base64 } else { Format::Raw };
            let _ = input.into_engine(format);
        }
    }

    #[test]
    fn cursors_never_panic_and_round_trip(token in text(&["eyJ1IjoxLCJpIjoiYSJ9", "AAAA"])) {
        if let Ok(cursor) = decode_cursor(&token) {
            prop_assert_eq!(decode_cursor(&encode_cursor(&cursor)).ok(), Some(cursor));
        }
        let _ = decode_unified_cursor(&token);
        let _ = rill::wire::cursor::parse_time(&token);
    }

    #[test]
    fn ack_ids_never_panic_and_round_trip(id in text(&["1.2.3", "AAAAAAAAAAE"])) {
        if let Ok(decoded) = decode_ack_id(&id) {
            prop_assert_eq!(decode_ack_id(&encode_ack_id(&decoded)).ok(), Some(decoded));
        }
    }

    #[test]
    fn tokens_and_scopes_never_panic(info in text(&[
        r#"{"id": "t", "expires_at": "2027-01-01T00:00:00+02:00", "auto_prefix_streams": true,
            "scope": {"basins": {"prefix": ""}, "streams": {"prefix": "a/"}, "ops": ["read"],
                      "op_groups": {"stream": {"read": true}}}}"#,
    ]), time in text(&["2027-01-01T00:00:00Z", "2026-12-31T23:30:00-00:30"])) {
        if let Ok(info) = serde_json::from_str::<AccessTokenInfo>(&info) {
            let _ = info.validate();
        }
        let _ = serde_json::from_str::<Scope>(&time);
        let _ = parse_time(&time);
    }

    #[test]
    fn names_and_consumer_configs_never_panic(name in text(&["my-basin", "a/b/c"]), config in text(&[
        r#"{"source": {"collection": "c", "feed": "events"}, "filter": {"events": ["created"], "data": {"a": 1}}}"#,
        r#"{"source": {"stream": "s"}, "start": {"seq_num": 5}, "ack_policy": "cursor"}"#,
    ])) {
        let _ = BasinName::parse(name.clone());
        let _ = StreamName::parse(name);
        if let Ok(config) = serde_json::from_str::<ConsumerConfig>(&config) {
            let _ = config.validate();
        }
    }
}

/// The read parameters of `GET …/records` and `/updated`, through the same
/// query-string parser axum uses.
#[test]
fn query_strings_never_panic() {
    let mut runner = proptest::test_runner::TestRunner::new(ProptestConfig {
        failure_persistence: None,
        ..ProptestConfig::default()
    });
    runner
        .run(
            &text(&[
                "seq_num=1&count=5&wait=3&clamp=true",
                "updated_after=2026-01-01T00:00:00Z&after_id=x&limit=10",
            ]),
            |query| {
                let encoded: String = query
                    .bytes()
                    .map(|b| match b {
                        b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'=' | b'&' | b'_' | b'-' => {
                            (b as char).to_string()
                        }
                        other => format!("%{other:02X}"),
                    })
                    .collect();
                if let Ok(uri) = format!("/v1/streams/s/records?{encoded}").parse() {
                    let _ = axum::extract::Query::<std::collections::HashMap<String, String>>::try_from_uri(&uri);
                }
                Ok(())
            },
        )
        .unwrap();
}
