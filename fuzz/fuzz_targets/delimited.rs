//! The delimited protobuf decoder (a push body), then the push it makes, rendered and parsed
//! back.
#![no_main]
use libfuzzer_sys::fuzz_target;
use pushgate::exposition::decode_delimited;
use pushgate_fuzz::{push_and_render, scheme};

fuzz_target!(|data: &[u8]| {
    let Some((&sel, body)) = data.split_first() else {
        return;
    };
    if let Ok(families) = decode_delimited(body) {
        push_and_render(families, scheme(sel), sel & 2 == 0);
    }
});
