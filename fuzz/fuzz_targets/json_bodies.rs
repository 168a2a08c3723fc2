//! JSON bodies: appends (both record formats), access token requests,
//! scopes and consumer configs, each through its validation.
#![no_main]

use libfuzzer_sys::fuzz_target;
use rill::engine::consumers::ConsumerConfig;
use rill::engine::streams::scope::Scope;
use rill::engine::streams::token_index::AccessTokenInfo;
use rill::wire::json::{AppendInput, Format};

fuzz_target!(|bytes: &[u8]| {
    for format in [Format::Raw, Format::Base64] {
        if let Ok(input) = serde_json::from_slice::<AppendInput>(bytes) {
            let _ = input.into_engine(format);
        }
    }
    if let Ok(info) = serde_json::from_slice::<AccessTokenInfo>(bytes) {
        let _ = info.validate();
    }
    let _ = serde_json::from_slice::<Scope>(bytes);
    if let Ok(config) = serde_json::from_slice::<ConsumerConfig>(bytes) {
        let _ = config.validate();
    }
});
