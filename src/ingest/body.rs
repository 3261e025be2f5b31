//! Push bodies: bounded reading, bounded decompression (gzip, snappy framed) and decoding of
//! text format 0.0.4 or protobuf-delimited `MetricFamily` streams.

use std::io::Read;

use axum::body::Body;
use http::HeaderMap;
use http_body_util::{BodyExt, Limited};

use crate::exposition::{self, MetricFamily, NameScheme};

/// A refused body: 400 for undecodable content, 413 for size limits.
#[derive(Debug, thiserror::Error)]
pub enum BodyError {
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    TooLarge(String),
}

impl BodyError {
    pub fn status(&self) -> u16 {
        match self {
            BodyError::BadRequest(_) => 400,
            BodyError::TooLarge(_) => 413,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyFormat {
    Text,
    ProtobufDelimited,
}

/// Upstream's rule: protobuf only for exactly this media type with both parameters; anything
/// else (missing, text, OpenMetrics, garbage) is parsed as text format 0.0.4.
pub fn body_format(headers: &HeaderMap) -> BodyFormat {
    let Some(ct) = headers
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
    else {
        return BodyFormat::Text;
    };
    let mut parts = ct.split(';');
    let media = parts.next().unwrap_or("").trim();
    if !media.eq_ignore_ascii_case("application/vnd.google.protobuf") {
        return BodyFormat::Text;
    }
    let (mut proto_ok, mut delimited) = (false, false);
    for p in parts {
        if let Some((k, v)) = p.split_once('=') {
            let v = v.trim().trim_matches('"');
            match k.trim().to_ascii_lowercase().as_str() {
                "proto" => proto_ok = v == "io.prometheus.client.MetricFamily",
                "encoding" => delimited = v == "delimited",
                _ => {}
            }
        }
    }
    if proto_ok && delimited {
        BodyFormat::ProtobufDelimited
    } else {
        BodyFormat::Text
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Encoding {
    Identity,
    Gzip,
    Snappy,
}

fn content_encoding(headers: &HeaderMap) -> Result<Encoding, BodyError> {
    let Some(v) = headers.get(http::header::CONTENT_ENCODING) else {
        return Ok(Encoding::Identity);
    };
    let v = v.to_str().unwrap_or("").trim();
    if v.eq_ignore_ascii_case("gzip") || v.eq_ignore_ascii_case("x-gzip") {
        Ok(Encoding::Gzip)
    } else if v.eq_ignore_ascii_case("snappy") {
        Ok(Encoding::Snappy)
    } else if v.is_empty() || v.eq_ignore_ascii_case("identity") {
        Ok(Encoding::Identity)
    } else {
        Err(BodyError::BadRequest(format!(
            "unsupported Content-Encoding {v:?} (gzip and snappy are accepted)"
        )))
    }
}

/// Reads at most `max_bytes` of the request body and decompresses it, again to at most
/// `max_bytes` (bug 11: a gzip bomb or a huge body must not drive memory up).
pub async fn read_body(
    headers: &HeaderMap,
    body: Body,
    max_bytes: usize,
) -> Result<bytes::Bytes, BodyError> {
    let encoding = content_encoding(headers)?;
    let too_large = || {
        BodyError::TooLarge(format!(
            "request body exceeds the limit of {max_bytes} bytes (--push.max-body-bytes)"
        ))
    };
    if let Some(len) = headers
        .get(http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
    {
        if len > max_bytes as u64 {
            return Err(too_large());
        }
    }
    let raw = match Limited::new(body, max_bytes).collect().await {
        Ok(c) => c.to_bytes(),
        Err(e) => {
            if e.downcast_ref::<http_body_util::LengthLimitError>()
                .is_some()
            {
                return Err(too_large());
            }
            return Err(BodyError::BadRequest(format!(
                "failed to read request body: {e}"
            )));
        }
    };
    match encoding {
        Encoding::Identity => Ok(raw),
        Encoding::Gzip => decompress(
            flate2::read::MultiGzDecoder::new(&raw[..]),
            max_bytes,
            "gzip",
        )
        .map(Into::into),
        Encoding::Snappy => {
            decompress(snap::read::FrameDecoder::new(&raw[..]), max_bytes, "snappy").map(Into::into)
        }
    }
}

/// Decompresses in fixed-size chunks, refusing as soon as the output passes `max_bytes`: the
/// memory a hostile body can claim is bounded by the limit itself, never by a growing buffer's
/// doubling (a reallocation would briefly hold old and new copies).
fn decompress(mut reader: impl Read, max_bytes: usize, what: &str) -> Result<Vec<u8>, BodyError> {
    const CHUNK: usize = 256 * 1024;
    let bad =
        |e: std::io::Error| BodyError::BadRequest(format!("invalid {what} request body: {e}"));
    let mut chunks: Vec<Vec<u8>> = Vec::new();
    let mut total = 0usize;
    loop {
        let mut chunk = vec![0u8; CHUNK];
        let mut filled = 0;
        while filled < CHUNK {
            let n = reader.read(&mut chunk[filled..]).map_err(bad)?;
            if n == 0 {
                break;
            }
            filled += n;
        }
        total += filled;
        if total > max_bytes {
            return Err(BodyError::TooLarge(format!(
                "decompressed request body exceeds the limit of {max_bytes} bytes (--push.max-body-bytes)"
            )));
        }
        chunk.truncate(filled);
        let done = filled < CHUNK;
        if filled > 0 {
            chunks.push(chunk);
        }
        if done {
            break;
        }
    }
    if chunks.len() == 1 {
        return Ok(chunks.pop().unwrap_or_default());
    }
    let mut out = Vec::with_capacity(total);
    for c in chunks {
        out.extend_from_slice(&c);
    }
    Ok(out)
}

/// Decodes a body into metric families.
pub fn decode_body(
    format: BodyFormat,
    bytes: &[u8],
    names: NameScheme,
) -> Result<Vec<MetricFamily>, BodyError> {
    match format {
        BodyFormat::Text => {
            exposition::parse_text(bytes, names).map_err(|e| BodyError::BadRequest(e.to_string()))
        }
        BodyFormat::ProtobufDelimited => {
            exposition::decode_delimited(bytes).map_err(|e| BodyError::BadRequest(e.to_string()))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, HeaderValue::from_static(v));
        }
        h
    }

    #[test]
    fn protobuf_needs_both_parameters() {
        let pb = "application/vnd.google.protobuf; proto=io.prometheus.client.MetricFamily; encoding=delimited";
        assert_eq!(
            body_format(&headers(&[("content-type", pb)])),
            BodyFormat::ProtobufDelimited
        );
        let swapped = "application/vnd.google.protobuf;encoding=delimited;proto=io.prometheus.client.MetricFamily";
        assert_eq!(
            body_format(&headers(&[("content-type", swapped)])),
            BodyFormat::ProtobufDelimited
        );
        let partial = "application/vnd.google.protobuf; proto=io.prometheus.client.MetricFamily";
        assert_eq!(
            body_format(&headers(&[("content-type", partial)])),
            BodyFormat::Text
        );
        assert_eq!(body_format(&headers(&[])), BodyFormat::Text);
    }

    #[tokio::test]
    async fn gzip_bomb_is_refused() {
        use std::io::Write;
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
        enc.write_all(&vec![b'a'; 4 << 20]).unwrap();
        let gz = enc.finish().unwrap();
        let h = headers(&[("content-encoding", "GZIP")]);
        let err = read_body(&h, Body::from(gz.clone()), 1 << 20)
            .await
            .unwrap_err();
        assert_eq!(err.status(), 413);
        let ok = read_body(&h, Body::from(gz), 8 << 20).await.unwrap();
        assert_eq!(ok.len(), 4 << 20);
    }

    #[tokio::test]
    async fn raw_limit_and_bad_gzip() {
        let err = read_body(&headers(&[]), Body::from(vec![0u8; 100]), 10)
            .await
            .unwrap_err();
        assert_eq!(err.status(), 413);
        let err = read_body(
            &headers(&[("content-encoding", "gzip")]),
            Body::from("nope"),
            10,
        )
        .await
        .unwrap_err();
        assert_eq!(err.status(), 400);
    }

    fn compressed(body: &[u8]) -> (Vec<u8>, Vec<u8>) {
        use std::io::Write;
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        gz.write_all(body).unwrap();
        let mut sn = snap::write::FrameEncoder::new(Vec::new());
        sn.write_all(body).unwrap();
        (gz.finish().unwrap(), sn.into_inner().unwrap())
    }

    proptest::proptest! {
        /// Any gzip or snappy body, valid ones edited included: an error or at most the limit,
        /// never a panic.
        #[test]
        fn decompression_never_panics_and_stays_under_the_limit(
            edits in proptest::collection::vec(
                (0usize..4096, proptest::prelude::any::<u8>(), 0u8..4), 0..6),
            random in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..256),
            limit in 1usize..4096,
        ) {
            let (gz, sn) = compressed(&b"some_metric{a=\"b\"} 1\n".repeat(40));
            let gz = crate::testsupport::mutate(&gz, &edits);
            let sn = crate::testsupport::mutate(&sn, &edits);
            for (what, input) in [("gzip", &gz), ("snappy", &sn), ("gzip", &random), ("snappy", &random)] {
                let out = if what == "gzip" {
                    decompress(flate2::read::MultiGzDecoder::new(&input[..]), limit, what)
                } else {
                    decompress(snap::read::FrameDecoder::new(&input[..]), limit, what)
                };
                if let Ok(out) = out {
                    proptest::prop_assert!(out.len() <= limit);
                    let _ = decode_body(BodyFormat::Text, &out, NameScheme::Legacy);
                    let _ = decode_body(BodyFormat::ProtobufDelimited, &out, NameScheme::Utf8);
                }
            }
        }
    }
}
