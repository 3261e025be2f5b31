//! What the fuzz targets share: a runtime for the async paths, a one-node cluster around a
//! fresh store, and the checks every target ends with (the store still renders).

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use pushgate::cluster::{ClusterCore, ClusterService, Member, MemberState, NodeId, Ring};
use pushgate::exposition::NameScheme;
use pushgate::store::render::Format;
use pushgate::store::{Store, StoreOptions, Validation};

/// One current-thread runtime for every run of a target (making one per input would cost more
/// than most inputs).
pub fn block_on<F: std::future::Future>(f: F) -> F::Output {
    static RT: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RT.get_or_init(|| {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a tokio runtime")
    })
    .block_on(f)
}

/// The name scheme an input asks for (one bit of it), so both are fuzzed.
pub fn scheme(bit: u8) -> NameScheme {
    if bit & 1 == 0 {
        NameScheme::Legacy
    } else {
        NameScheme::Utf8
    }
}

pub fn fresh_store() -> Arc<Store> {
    Arc::new(Store::new(StoreOptions::default()))
}

/// A one-node cluster ("a", replication factor 1) around `store`, as its peers reach it: every
/// write it is sent is applied to `store` and nowhere else (it has no peer to call).
pub fn one_node(store: Arc<Store>, names: NameScheme) -> ClusterService {
    let me = NodeId::from("a");
    let member = Member {
        id: me.clone(),
        generation: 1,
        grpc_addr: std::net::SocketAddr::from(([127, 0, 0, 1], 9)),
        state: MemberState::Active,
    };
    let (_tx, rx) = tokio::sync::watch::channel(Arc::new(Ring::new(me.clone(), vec![member], 1)));
    let validation = Validation {
        names,
        ..Validation::default()
    };
    ClusterService::new(ClusterCore::new(
        store,
        validation,
        rx,
        me,
        1,
        Duration::from_secs(1),
        None,
    ))
}

/// Renders `store` in both formats: whatever was applied must render without a panic.
pub fn render_all(store: &Store) {
    for format in [Format::Text, Format::Protobuf] {
        let mut out = Vec::new();
        store.render(format, &[], &mut out);
    }
}

/// A push of `families` as a client would make it: prepared (grouping labels, name and label
/// rules, limits) and applied to a fresh store. What the store takes must render as exposition
/// that parses back: the text with the text parser, the protobuf with the delimited decoder.
pub fn push_and_render(
    families: Vec<pushgate::exposition::MetricFamily>,
    names: NameScheme,
    replace_all: bool,
) {
    use pushgate::exposition::{decode_delimited, parse_text};
    use pushgate::store::{prepare_push, GroupKey};
    let key = GroupKey::new([("job".to_owned(), "fuzz".to_owned())]);
    let v = Validation {
        names,
        ..Validation::default()
    };
    let Ok(prepared) = prepare_push(key, families, replace_all, &v) else {
        return;
    };
    let store = fresh_store();
    if store.push(prepared, 1.0).is_err() {
        return;
    }
    let mut text = Vec::new();
    store.render(Format::Text, &[], &mut text);
    if let Err(e) = parse_text(&text, names) {
        panic!(
            "the store rendered text that does not parse back: {e}\n{}",
            String::from_utf8_lossy(&text)
        );
    }
    let mut proto = Vec::new();
    store.render(Format::Protobuf, &[], &mut proto);
    if let Err(e) = decode_delimited(&proto) {
        panic!("the store rendered protobuf that does not decode back: {e}");
    }
}

/// Splits `data` into parts, each preceded by its length (two bytes, little-endian), for the
/// targets that take several messages (a forwarded push's families). A length past the end
/// takes what is left.
pub fn parts(mut data: &[u8]) -> Vec<bytes::Bytes> {
    let mut out = Vec::new();
    while data.len() >= 2 {
        let len = usize::from(u16::from_le_bytes([data[0], data[1]])).min(data.len() - 2);
        out.push(bytes::Bytes::copy_from_slice(&data[2..2 + len]));
        data = &data[2 + len..];
    }
    out
}

/// A store holding a few groups (a counter, a histogram, a summary, a POSTed group) and a
/// tombstone, for the calls that read what a node holds.
pub fn filled_store(names: NameScheme) -> Arc<Store> {
    use pushgate::exposition::parse_text;
    use pushgate::store::{prepare_push, GroupKey};
    let store = fresh_store();
    let v = Validation {
        names,
        ..Validation::default()
    };
    let bodies = [
        ("a", "# HELP x some help\n# TYPE x counter\nx{l=\"1\"} 1\nx{l=\"2\"} 2\n"),
        ("b", "# TYPE h histogram\nh_bucket{le=\"1\"} 1\nh_bucket{le=\"+Inf\"} 2\nh_sum 3\nh_count 2\n"),
        ("c", "# TYPE s summary\ns{quantile=\"0.5\"} 1\ns_sum 3\ns_count 2\nplain 4\n"),
    ];
    for (i, (job, body)) in bodies.into_iter().enumerate() {
        let families = parse_text(body.as_bytes(), names).expect("valid text");
        let key = GroupKey::new([("job".to_owned(), job.to_owned())]);
        let prepared = prepare_push(key, families, i != 2, &v).expect("valid push");
        store
            .push_versioned(prepared, 1000.0 + i as f64, || 10 + i as u64)
            .expect("applied");
    }
    store.delete_versioned(&GroupKey::new([("job".to_owned(), "gone".to_owned())]), 20);
    store
}

/// Small, so a decompression bomb meets the limit quickly; real bodies of the corpus are far under it.
const MAX_BODY_BYTES: usize = 1 << 20;

/// A push body with `Content-Encoding: encoding`, read and decompressed under the body limit as
/// the HTTP layer does (never past the limit), then decoded as text and as delimited protobuf.
pub fn compressed_body(data: &[u8], encoding: &'static str) {
    use pushgate::ingest::{body::read_body, inflight::InflightBytes};
    let mut headers = http::HeaderMap::new();
    headers.insert(
        http::header::CONTENT_ENCODING,
        http::HeaderValue::from_static(encoding),
    );
    let body = axum::body::Body::from(bytes::Bytes::copy_from_slice(data));
    let pool = InflightBytes::new(usize::MAX);
    let Ok((plain, _held)) = block_on(read_body(&headers, body, MAX_BODY_BYTES, &pool)) else {
        return;
    };
    assert!(plain.len() <= MAX_BODY_BYTES, "decompressed past the limit");
    let _ = pushgate::exposition::parse_text(&plain, NameScheme::Legacy);
    let _ = pushgate::exposition::decode_delimited(&plain);
}
