//! Writes the seed corpus of the fuzz targets (`fuzz/corpus/<target>/`): small real inputs,
//! made with the gateway's own encoders so they stay in step with its formats.
//!
//! `cargo run --example fuzz_seeds -- fuzz/corpus` (scripts/fuzz.sh says when to rerun it: after
//! a change of a wire format). Every target's input starts with a selector byte (bit 0: the
//! name scheme, bit 1: which variant of the target; see each target's doc).

use std::io::Write;
use std::path::{Path, PathBuf};

use prost::Message;
use pushgate::cluster::collect_chunks;
use pushgate::cluster::rpc::{pb, wire};
use pushgate::exposition::{parse_text, LabelPair, NameScheme};
use pushgate::store::persistence::encode_snapshot;
use pushgate::store::render::Format;
use pushgate::store::{prepare_push, GroupKey, GroupSnapshot, Store, StoreOptions, Validation};

const BODIES: &[&str] = &[
    "some_metric 3.14\n",
    "# HELP x some help with \\\\ and \\n\n# TYPE x counter\nx{l=\"1\"} 1\nx{l=\"2\",m=\"a\\\"b\"} 2\n",
    "# TYPE h histogram\nh_bucket{le=\"0.5\"} 1\nh_bucket{le=\"1\"} 1\nh_bucket{le=\"+Inf\"} 2\nh_sum 3\nh_count 2\n",
    "# TYPE s summary\ns{quantile=\"0.5\"} 1\ns{quantile=\"0.99\"} NaN\ns_sum 3\ns_count 2\n",
    "# TYPE g gauge\ng -Inf\n# TYPE u untyped\nu{a=\"\"} +Inf\n",
    "# TYPE my_counter_total counter\nmy_counter_total 1e+06\n",
];

/// Bodies only the UTF-8 name scheme takes.
const UTF8_BODIES: &[&str] = &[
    "{\"my.metric\",\"some label\"=\"v\"} 1\n",
    "# TYPE \"a.b\" gauge\n{\"a.b\"} 2\n",
];

fn key(job: &str) -> GroupKey {
    GroupKey::new([("job".to_owned(), job.to_owned())])
}

fn store_of(bodies: &[&str], names: NameScheme) -> Store {
    let store = Store::new(StoreOptions::default());
    let v = Validation {
        names,
        ..Validation::default()
    };
    for (i, body) in bodies.iter().enumerate() {
        let families = parse_text(body.as_bytes(), names).expect("a valid seed body");
        let p = prepare_push(key(&format!("j{i}")), families, true, &v).expect("a valid push");
        store.push(p, 1000.0 + i as f64).expect("applied");
    }
    store.record_failure(&key("j0"), 2000.0);
    store
}

fn with_sel(sel: u8, msg: &[u8]) -> Vec<u8> {
    let mut out = vec![sel];
    out.extend_from_slice(msg);
    out
}

/// Families in `fuzz::parts` framing (two-byte length, then the bytes).
fn framed(sel: u8, parts: &[Vec<u8>]) -> Vec<u8> {
    let mut out = vec![sel];
    for p in parts {
        out.extend_from_slice(&u16::try_from(p.len()).expect("small part").to_le_bytes());
        out.extend_from_slice(p);
    }
    out
}

fn families_wire(g: &GroupSnapshot) -> Vec<Vec<u8>> {
    g.families
        .iter()
        .map(|(f, _)| {
            let mut out = Vec::new();
            f.to_wire(&mut out);
            out
        })
        .collect()
}

fn key_pb(job: &str) -> Vec<LabelPair> {
    wire::key_to_pb(&key(job))
}

struct Corpus(PathBuf);

impl Corpus {
    fn put(&self, target: &str, name: &str, bytes: &[u8]) {
        let dir = self.0.join(target);
        std::fs::create_dir_all(&dir).expect("corpus directory");
        std::fs::write(dir.join(name), bytes).expect("seed written");
    }
}

fn main() {
    let root = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "fuzz/corpus".into());
    let c = Corpus(Path::new(&root).to_owned());
    let legacy = store_of(BODIES, NameScheme::Legacy);
    let utf8 = store_of(UTF8_BODIES, NameScheme::Utf8);
    let groups = legacy.snapshot();

    for (i, b) in BODIES.iter().enumerate() {
        c.put(
            "text_parser",
            &format!("legacy-{i}"),
            &with_sel(0, b.as_bytes()),
        );
        c.put(
            "text_parser",
            &format!("post-{i}"),
            &with_sel(2, b.as_bytes()),
        );
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        gz.write_all(b.as_bytes()).expect("gzip");
        c.put(
            "body_gzip",
            &format!("body-{i}"),
            &gz.finish().expect("gzip"),
        );
        let mut sn = snap::write::FrameEncoder::new(Vec::new());
        sn.write_all(b.as_bytes()).expect("snappy");
        c.put(
            "body_snappy",
            &format!("body-{i}"),
            &sn.into_inner().expect("snappy"),
        );
    }
    // Refused by the store (upstream refuses timestamps), but parsed first.
    c.put(
        "text_parser",
        "timestamp",
        &with_sel(0, b"a{b=\"c\"} 1 1700000000000\n"),
    );
    for (i, b) in UTF8_BODIES.iter().enumerate() {
        c.put(
            "text_parser",
            &format!("utf8-{i}"),
            &with_sel(1, b.as_bytes()),
        );
    }
    for (name, store, sel) in [("legacy", &legacy, 0), ("utf8", &utf8, 1)] {
        let mut out = Vec::new();
        store.render(Format::Protobuf, &[], &mut out);
        c.put("delimited", name, &with_sel(sel, &out));
    }

    for (i, path) in [
        "/job/some_job",
        "/job/some_job/instance/a/path/b",
        "/job@base64/c29tZV9qb2I/path@base64/L3Zhci90bXA",
        "/job/j/empty@base64/=",
        "/job/j/a/1/a/2",
    ]
    .iter()
    .enumerate()
    {
        c.put(
            "grouping_path",
            &format!("path-{i}"),
            &with_sel(0, path.as_bytes()),
        );
    }
    c.put(
        "grouping_path",
        "utf8",
        &with_sel(1, "/job/j/some.label/v".as_bytes()),
    );

    let file = encode_snapshot(&groups, &[], 3000.0, 0);
    // Bit 1 clear: the target makes the header for the payload; set: the file as it is.
    c.put("snapshot", "payload", &with_sel(0, &file[24..]));
    c.put("snapshot", "file", &with_sel(2, &file));
    let file = encode_snapshot(&utf8.snapshot(), &[], 3000.0, 7);
    c.put("snapshot", "utf8-payload", &with_sel(1, &file[24..]));
    // A file the real upstream Pushgateway 1.5.1 wrote (tests/data; every metric type,
    // @base64 keys, an empty label value, a refused push).
    let upstream = include_bytes!("../tests/data/upstream-1.5.1.gob");
    c.put("upstream_gob", "upstream-1.5.1", &with_sel(0, upstream));

    for (i, yaml) in [
        "",
        "basic_auth_users:\n  dave: $2y$10$2UXri9cIDdgeKjBo4Rlpx.U3ZLDV8X1IxKmsfOvhcM5oXQt/mLmXq\n",
        "http_server_config:\n  http2: false\n  headers:\n    X-Frame-Options: deny\n",
        "tls_server_config:\n  cert_file: server.crt\n  key_file: server.key\n  client_auth_type: RequireAndVerifyClientCert\n  client_ca_file: ca.crt\n  min_version: TLS12\n  cipher_suites: [TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256]\n",
        "rate_limit:\n  interval: 1s\n  burst: 10\n",
    ]
    .iter()
    .enumerate()
    {
        c.put("web_config", &format!("config-{i}"), yaml.as_bytes());
    }

    for (i, g) in groups.iter().enumerate() {
        c.put(
            "family_wire",
            &format!("put-{i}"),
            &framed(0, &families_wire(g)),
        );
        c.put(
            "family_wire",
            &format!("post-{i}"),
            &framed(2, &families_wire(g)),
        );
        c.put(
            "group_codec",
            &format!("group-{i}"),
            &with_sel(0, &wire::group_to_bytes(g)),
        );
    }
    for (i, g) in utf8.snapshot().iter().enumerate() {
        c.put(
            "group_codec",
            &format!("utf8-{i}"),
            &with_sel(1, &wire::group_to_bytes(g)),
        );
    }

    let replica = |g: &GroupSnapshot| pb::ReplicateRequest {
        group: wire::group_to_bytes(g).into(),
        tombstone_key: Vec::new(),
        version: g.version,
    };
    let tombstone = pb::ReplicateRequest {
        group: Default::default(),
        tombstone_key: key_pb("gone"),
        version: 99,
    };
    c.put(
        "grpc_replicate",
        "group",
        &with_sel(0, &replica(&groups[0]).encode_to_vec()),
    );
    c.put(
        "grpc_replicate",
        "tombstone",
        &with_sel(0, &tombstone.encode_to_vec()),
    );
    let batch = pb::ForwardRequest {
        writes: Vec::new(),
        replicas: groups
            .iter()
            .map(replica)
            .chain([tombstone.clone()])
            .collect(),
    };
    c.put(
        "grpc_replicate",
        "batch",
        &with_sel(2, &batch.encode_to_vec()),
    );

    let write = |g: &GroupSnapshot, sender_replicates: bool| pb::ForwardedWrite {
        key: wire::key_to_pb(&g.key),
        families: families_wire(g).into_iter().map(Into::into).collect(),
        replace_all: true,
        from: "b".into(),
        own_replica: true,
        sender_replicates,
        ..Default::default()
    };
    let forward = pb::ForwardRequest {
        writes: vec![
            write(&groups[0], true),
            write(&groups[1], false),
            pb::ForwardedWrite {
                key: key_pb("body"),
                body: Some(BODIES[2].as_bytes().to_vec().into()),
                replace_all: false,
                ..Default::default()
            },
            pb::ForwardedWrite {
                key: key_pb("j0"),
                delete: true,
                ..Default::default()
            },
            pb::ForwardedWrite {
                key: key_pb("j1"),
                refused: "push refused".into(),
                ..Default::default()
            },
        ],
        replicas: vec![replica(&groups[2]), tombstone.clone()],
    };
    c.put(
        "grpc_forward",
        "mixed",
        &with_sel(0, &forward.encode_to_vec()),
    );
    let mut one = forward.clone();
    one.writes.truncate(1);
    one.replicas.clear();
    c.put("grpc_forward", "one", &with_sel(0, &one.encode_to_vec()));

    let collect = pb::CollectRequest {
        held_keys: vec![1, 2],
        held_versions: vec![10, 11],
        text_only: true,
        responders: vec!["a".into()],
        only_keys: Vec::new(),
        by_family: false,
    };
    c.put(
        "grpc_collect",
        "held",
        &with_sel(0, &collect.encode_to_vec()),
    );
    let by_family = pb::CollectRequest {
        by_family: true,
        ..collect.clone()
    };
    c.put(
        "grpc_collect",
        "by_family",
        &with_sel(0, &by_family.encode_to_vec()),
    );
    c.put(
        "grpc_collect",
        "all",
        &with_sel(0, &pb::CollectRequest::default().encode_to_vec()),
    );

    let sync = pb::SyncRequest {
        from: "b".into(),
        entries: vec![
            pb::SyncEntry {
                key: key_pb("a"),
                version: 5,
                tombstone: false,
                digest: 5,
            },
            pb::SyncEntry {
                key: key_pb("gone"),
                version: 30,
                tombstone: true,
                digest: 30,
            },
            pb::SyncEntry {
                key: key_pb("new"),
                version: 40,
                tombstone: false,
                digest: 40,
            },
        ],
        want_owned: true,
        wipe_watermark: 3,
        summary: Vec::new(),
    };
    c.put(
        "grpc_sync_wipe",
        "sync",
        &with_sel(0, &sync.encode_to_vec()),
    );
    let summary = pb::SyncRequest {
        from: "b".into(),
        summary: vec![0, 7, u64::MAX, 1],
        wipe_watermark: 3,
        ..Default::default()
    };
    c.put(
        "grpc_sync_wipe",
        "sync-summary",
        &with_sel(0, &summary.encode_to_vec()),
    );
    c.put(
        "grpc_sync_wipe",
        "wipe",
        &with_sel(2, &pb::WipeRequest { version: 15 }.encode_to_vec()),
    );

    let tombstones = vec![(key("gone"), 50)];
    for (i, chunk) in collect_chunks(&groups, tombstones, vec![(7, 8)], false)
        .iter()
        .enumerate()
    {
        c.put(
            "grpc_replies",
            &format!("chunk-{i}"),
            &with_sel(0, &chunk.encode_to_vec()),
        );
    }
    let reply = pb::SyncReply {
        newer_groups: groups
            .iter()
            .map(|g| wire::group_to_bytes(g).into())
            .collect(),
        newer_tombstones: vec![pb::Tombstone {
            key: key_pb("gone"),
            version: 50,
        }],
        missing: vec![0],
        wipe_watermark: 3,
        differing: vec![1],
    };
    c.put(
        "grpc_replies",
        "sync-reply",
        &with_sel(2, &reply.encode_to_vec()),
    );
    println!("seed corpus written to {root}");
}
