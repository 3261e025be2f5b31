//! A snappy push body: read and decompressed under the body limit as the HTTP layer does, then
//! decoded as text and as delimited protobuf.
#![no_main]
use libfuzzer_sys::fuzz_target;
use pushgate::exposition::NameScheme;
use pushgate::exposition::{decode_delimited, parse_text};
use pushgate::ingest::body::read_body;
use pushgate::ingest::inflight::InflightBytes;

/// Small, so a bomb meets the limit quickly; real bodies of the corpus are far under it.
const MAX_BODY_BYTES: usize = 1 << 20;

fuzz_target!(|data: &[u8]| {
    let mut headers = http::HeaderMap::new();
    headers.insert(
        http::header::CONTENT_ENCODING,
        http::HeaderValue::from_static("snappy"),
    );
    let body = axum::body::Body::from(bytes::Bytes::copy_from_slice(data));
    let pool = InflightBytes::new(usize::MAX);
    let Ok((plain, _held)) =
        pushgate_fuzz::block_on(read_body(&headers, body, MAX_BODY_BYTES, &pool))
    else {
        return;
    };
    assert!(plain.len() <= MAX_BODY_BYTES, "decompressed past the limit");
    let _ = parse_text(&plain, NameScheme::Legacy);
    let _ = decode_delimited(&plain);
});
