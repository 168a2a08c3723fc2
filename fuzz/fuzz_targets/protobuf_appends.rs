//! Protobuf append bodies (the S2 `AppendInput` message).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|bytes: &[u8]| {
    let _ = rill::wire::proto::decode_append_input(bytes::Bytes::copy_from_slice(bytes));
});
