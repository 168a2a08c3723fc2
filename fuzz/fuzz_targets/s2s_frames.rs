//! S2S session frames, fed in two pieces split anywhere: the decoder
//! answers (a frame, "need more", or an error), never panics, and never
//! makes more frames than there are bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use rill::wire::s2s::{Decoder, Frame};

fuzz_target!(|input: (u16, &[u8])| {
    let (split, bytes) = input;
    let at = if bytes.is_empty() {
        0
    } else {
        split as usize % bytes.len()
    };
    let mut decoder = Decoder::default();
    decoder.push(&bytes[..at]);
    let mut frames = 0;
    while let Ok(Some(Frame::Message(_) | Frame::Terminal { .. })) = decoder.next_frame() {
        frames += 1;
        assert!(frames <= bytes.len() + 1);
    }
    decoder.push(&bytes[at..]);
    while let Ok(Some(_)) = decoder.next_frame() {}
    let _ = decoder.finish();
});
