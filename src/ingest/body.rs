//! Push bodies: bounded reading, bounded decompression (gzip, snappy framed) and decoding of
//! text format 0.0.4 or protobuf-delimited `MetricFamily` streams.

use std::io::Read;
use std::sync::Arc;

use axum::body::Body;
use http::HeaderMap;
use http_body_util::{BodyExt, Limited};

use super::inflight::{InflightBytes, Reservation};

/// A refused body: 400 for undecodable content, 413 for size limits, 503 when the bytes of
/// pushes in flight are at their cap (the client should retry).
#[derive(Debug, thiserror::Error)]
pub enum BodyError {
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    TooLarge(String),
    #[error("{0}")]
    Busy(String),
}

impl BodyError {
    pub fn status(&self) -> u16 {
        match self {
            BodyError::BadRequest(_) => 400,
            BodyError::TooLarge(_) => 413,
            BodyError::Busy(_) => 503,
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

/// Compressed bodies above this size are decompressed on the blocking pool: decompressing
/// megabytes takes milliseconds that would stall every connection of a runtime thread.
pub const INLINE_DECOMPRESS_LIMIT: usize = 64 * 1024;

/// Reads at most `max_bytes` of the request body and decompresses it, again to at most
/// `max_bytes` (bug 11: a gzip bomb or a huge body must not drive memory up). Every byte held
/// is reserved in `inflight` first; the returned reservation holds the body's bytes until the
/// caller drops it (after the push).
pub async fn read_body(
    headers: &HeaderMap,
    body: Body,
    max_bytes: usize,
    inflight: &Arc<InflightBytes>,
) -> Result<(bytes::Bytes, Reservation), BodyError> {
    let encoding = content_encoding(headers)?;
    let too_large = || {
        BodyError::TooLarge(format!(
            "request body exceeds the limit of {max_bytes} bytes (--push.max-body-bytes)"
        ))
    };
    let busy = || BodyError::Busy(busy_message(inflight));
    let declared = headers
        .get(http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|len| len > max_bytes as u64) {
        return Err(too_large());
    }
    let mut reservation = inflight.reservation();
    // A declared length is reserved (and allocated) whole up front: refused before any byte
    // is read, and read without a growing buffer's copies.
    let declared = declared.map_or(0, |len| len as usize);
    if !reservation.grow(declared) {
        return Err(busy());
    }
    let mut raw = bytes::BytesMut::with_capacity(declared);
    let mut body = Limited::new(body, max_bytes);
    while let Some(frame) = body.frame().await {
        let frame = match frame {
            Ok(f) => f,
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
        let Ok(data) = frame.into_data() else {
            continue;
        };
        let beyond = (raw.len() + data.len()).saturating_sub(reservation.bytes());
        if !reservation.grow(beyond) {
            return Err(busy());
        }
        raw.extend_from_slice(&data);
    }
    let raw = raw.freeze();
    let what = match encoding {
        Encoding::Identity => return Ok((raw, reservation)),
        Encoding::Gzip => "gzip",
        Encoding::Snappy => "snappy",
    };
    let raw_len = raw.len();
    let run = move |mut reservation: Reservation| {
        let out = match encoding {
            Encoding::Snappy => decompress(
                snap::read::FrameDecoder::new(&raw[..]),
                max_bytes,
                what,
                &mut reservation,
            ),
            _ => decompress(
                flate2::read::MultiGzDecoder::new(&raw[..]),
                max_bytes,
                what,
                &mut reservation,
            ),
        };
        (out, reservation)
    };
    let (out, mut reservation) = if raw_len > INLINE_DECOMPRESS_LIMIT {
        tokio::task::spawn_blocking(move || run(reservation))
            .await
            .map_err(|e| BodyError::Busy(format!("decompression worker failed: {e}")))?
    } else {
        run(reservation)
    };
    let out = out?;
    // The compressed copy is freed now.
    reservation.shrink(raw_len);
    Ok((out.into(), reservation))
}

fn busy_message(inflight: &InflightBytes) -> String {
    format!(
        "too many push bytes in flight (limit {} bytes, --push.max-inflight-bytes); retry later",
        inflight.cap()
    )
}

/// Decompresses in fixed-size chunks, refusing as soon as the output passes `max_bytes`: the
/// memory a hostile body can claim is bounded by the limit itself, never by a growing buffer's
/// doubling (a reallocation would briefly hold old and new copies). Each chunk, and the final
/// copy, is reserved in `reservation` before it is allocated.
fn decompress(
    mut reader: impl Read,
    max_bytes: usize,
    what: &str,
    reservation: &mut Reservation,
) -> Result<Vec<u8>, BodyError> {
    const CHUNK: usize = 256 * 1024;
    let bad =
        |e: std::io::Error| BodyError::BadRequest(format!("invalid {what} request body: {e}"));
    let busy = |r: &Reservation| {
        BodyError::Busy(format!(
            "too many push bytes in flight (--push.max-inflight-bytes, {} held by this push); retry later",
            r.bytes()
        ))
    };
    let mut chunks: Vec<Vec<u8>> = Vec::new();
    let mut total = 0usize;
    loop {
        if !reservation.grow(CHUNK) {
            return Err(busy(reservation));
        }
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
        reservation.shrink(CHUNK - filled);
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
    if !reservation.grow(total) {
        return Err(busy(reservation));
    }
    let mut out = Vec::with_capacity(total);
    for c in chunks {
        out.extend_from_slice(&c);
    }
    // The chunks are freed: one copy is left.
    reservation.shrink(total);
    Ok(out)
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
        let pool = InflightBytes::new(64 << 20);
        let err = read_body(&h, Body::from(gz.clone()), 1 << 20, &pool)
            .await
            .unwrap_err();
        assert_eq!(err.status(), 413);
        assert_eq!(pool.used(), 0);
        let (ok, held) = read_body(&h, Body::from(gz), 8 << 20, &pool).await.unwrap();
        assert_eq!(ok.len(), 4 << 20);
        assert_eq!(held.bytes(), 4 << 20, "only the decompressed copy is left");
        drop(held);
        assert_eq!(pool.used(), 0);
    }

    #[tokio::test]
    async fn raw_limit_and_bad_gzip() {
        let pool = InflightBytes::new(1 << 20);
        let err = read_body(&headers(&[]), Body::from(vec![0u8; 100]), 10, &pool)
            .await
            .unwrap_err();
        assert_eq!(err.status(), 413);
        let err = read_body(
            &headers(&[("content-encoding", "gzip")]),
            Body::from("nope"),
            10,
            &pool,
        )
        .await
        .unwrap_err();
        assert_eq!(err.status(), 400);
    }

    #[tokio::test]
    async fn bodies_over_the_inflight_cap_are_refused_with_503_and_release_everything() {
        use std::io::Write;
        let pool = InflightBytes::new(2 << 20);
        let mut other = pool.reservation();
        assert!(other.grow(1900 << 10));
        // Declared length: refused before reading.
        let mut h = headers(&[]);
        h.insert("content-length", HeaderValue::from(200_000));
        let err = read_body(&h, Body::from(vec![b'a'; 200_000]), 1 << 20, &pool)
            .await
            .unwrap_err();
        assert_eq!(err.status(), 503);
        // No declared length: refused as the bytes arrive.
        let err = read_body(
            &headers(&[]),
            Body::from(vec![b'a'; 200_000]),
            1 << 20,
            &pool,
        )
        .await
        .unwrap_err();
        assert_eq!(err.status(), 503);
        // A small compressed body that decompresses past what is left.
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
        enc.write_all(&vec![b'a'; 512 << 10]).unwrap();
        let gz = enc.finish().unwrap();
        let err = read_body(
            &headers(&[("content-encoding", "gzip")]),
            Body::from(gz.clone()),
            1 << 20,
            &pool,
        )
        .await
        .unwrap_err();
        assert_eq!(err.status(), 503);
        assert_eq!(pool.used(), 1900 << 10, "refused pushes hold nothing");
        drop(other);
        let (body, held) = read_body(
            &headers(&[("content-encoding", "gzip")]),
            Body::from(gz),
            1 << 20,
            &pool,
        )
        .await
        .unwrap();
        assert_eq!((body.len(), held.bytes()), (512 << 10, 512 << 10));
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
            let pool = InflightBytes::new(usize::MAX);
            for (what, input) in [("gzip", &gz), ("snappy", &sn), ("gzip", &random), ("snappy", &random)] {
                let out = if what == "gzip" {
                    decompress(flate2::read::MultiGzDecoder::new(&input[..]), limit, what, &mut pool.reservation())
                } else {
                    decompress(snap::read::FrameDecoder::new(&input[..]), limit, what, &mut pool.reservation())
                };
                if let Ok(out) = out {
                    proptest::prop_assert!(out.len() <= limit);
                    let _ = crate::exposition::parse_text(&out, crate::exposition::NameScheme::Legacy);
                    let _ = crate::exposition::decode_delimited(&out);
                }
            }
        }
    }
}
