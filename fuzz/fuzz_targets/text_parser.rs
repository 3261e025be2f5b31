//! The text exposition parser (a push body), then the push it makes, rendered and parsed back.
#![no_main]
use libfuzzer_sys::fuzz_target;
use pushgate::exposition::parse_text;
use pushgate_fuzz::{push_and_render, scheme};

fuzz_target!(|data: &[u8]| {
    let Some((&sel, body)) = data.split_first() else {
        return;
    };
    let names = scheme(sel);
    if let Ok(families) = parse_text(body, names) {
        push_and_render(families, names, sel & 2 == 0);
    }
});
