//! A snappy push body: read and decompressed under the body limit as the HTTP layer does, then
//! decoded as text and as delimited protobuf.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| pushgate_fuzz::compressed_body(data, "snappy"));
