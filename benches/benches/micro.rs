//! Micro benchmarks of pushgate's hot paths, in-process (divan): parsing a push body, decoding a
//! protobuf body, preparing (validating + encoding) a push, applying it to a store of 10,000
//! groups with the consistency check, rendering a 200k-series scrape, placing a key on the ring,
//! merging groups collected from peers, and sorting a merged view's keys. Allocation counts come
//! from divan's `AllocProfiler`.
//!
//! Run: `cargo bench -p pushgate-benches --bench micro`. Inputs are the load generator's bodies
//! (a 10-series histogram, counters and gauges: 20 series, about 2.4 KB).

use std::net::SocketAddr;
use std::sync::Arc;

use divan::counter::{BytesCount, ItemsCount};
use divan::{black_box, AllocProfiler, Bencher};
use pushgate::cluster::{collect_chunks, decode_chunks, ring, rpc};
use pushgate::cluster::{Member, MemberState, NodeId};
use pushgate::exposition::parse_text_borrowed;
use pushgate::exposition::{self, NameScheme};
use pushgate::scrape::merged;
use pushgate::store::prepare::NO_STORE;
use pushgate::store::render::Format;
use pushgate::store::{prepare_push, prepare_text, GroupKey, Store, StoreOptions, Validation};
use pushgate_benches::body::render;

#[global_allocator]
static ALLOC: AllocProfiler = AllocProfiler::system();

const SERIES: usize = 20;
const GROUPS: usize = 10_000;

fn main() {
    divan::main();
}

fn key(i: usize) -> GroupKey {
    GroupKey::new([
        ("job".to_owned(), "loadgen".to_owned()),
        ("instance".to_owned(), format!("i{i}")),
    ])
}

fn body() -> String {
    render(SERIES, 1)
}

fn filled_store() -> Store {
    filled_store_with(true)
}

fn filled_store_with(consistency_check: bool) -> Store {
    let store = Store::new(StoreOptions {
        consistency_check,
        reserved: pushgate::telemetry::reserved_names(),
        ..StoreOptions::default()
    });
    let b = body();
    for i in 0..GROUPS {
        let fams =
            exposition::parse_text(b.as_bytes(), NameScheme::Legacy).expect("bench body parses");
        let p =
            prepare_push(key(i), fams, true, &Validation::default()).expect("bench body is valid");
        store.push(p, 1.0).expect("bench push is consistent");
    }
    store
}

#[divan::bench]
fn parse_text(bencher: Bencher) {
    bench_body(bencher, |b| exposition::parse_text(b, NameScheme::Legacy));
}

#[divan::bench]
fn decode_protobuf(bencher: Bencher) {
    let fams = exposition::parse_text(body().as_bytes(), NameScheme::Legacy).expect("parses");
    let mut pb = Vec::new();
    for f in &fams {
        exposition::encode_delimited(&mut pb, f);
    }
    bencher
        .counter(BytesCount::new(pb.len()))
        .counter(ItemsCount::new(SERIES))
        .bench(|| exposition::decode_delimited(black_box(&pb)));
}

#[divan::bench]
fn prepare(bencher: Bencher) {
    let fams = exposition::parse_text(body().as_bytes(), NameScheme::Legacy).expect("parses");
    let v = Validation::default();
    bencher
        .counter(ItemsCount::new(SERIES))
        .with_inputs(|| fams.clone())
        .bench_values(|f| prepare_push(key(7), f, true, &v));
}

/// Runs `op` on the bench body, counting its bytes and series.
fn bench_body<O>(bencher: Bencher, op: impl Fn(&[u8]) -> O + Sync) {
    let b = body();
    bencher
        .counter(BytesCount::new(b.len()))
        .counter(ItemsCount::new(SERIES))
        .bench(|| op(black_box(b.as_bytes())));
}

/// A text body parsed and prepared, push after push on one thread, as a server decodes them
/// (`PushRequest::prepare_now`): the borrowed model, checked and encoded from it.
#[divan::bench]
fn parse_and_prepare(bencher: Bencher) {
    let v = Validation::default();
    bench_body(bencher, |b| {
        let parsed = parse_text_borrowed(b, NameScheme::Legacy).expect("parses");
        prepare_text(key(7), &parsed, true, &v, NO_STORE)
    });
}

/// [`parse_and_prepare`] through the protobuf model, as a protobuf body (or, before the
/// thirteenth round, every body) is prepared: the objects are built, then checked and encoded.
#[divan::bench]
fn parse_and_prepare_via_model(bencher: Bencher) {
    let v = Validation::default();
    bench_body(bencher, |b| {
        let fams = exposition::parse_text(b, NameScheme::Legacy).expect("parses");
        prepare_push(key(7), fams, true, &v)
    });
}

/// The parse alone into the borrowed model (compare `parse_text`, which builds the objects).
/// The model borrows the body, so it is dropped inside the timed closure.
#[divan::bench]
fn parse_text_borrowed_model(bencher: Bencher) {
    bench_body(bencher, |b| {
        parse_text_borrowed(b, NameScheme::Legacy).is_ok()
    });
}

/// Apply + consistency check of a re-push (new values, same labels) into 10,000 groups.
#[divan::bench(sample_count = 50, args = [true, false])]
fn store_push(bencher: Bencher, check: bool) {
    let store = filled_store_with(check);
    let fams =
        exposition::parse_text(render(SERIES, 2).as_bytes(), NameScheme::Legacy).expect("parses");
    let next = std::sync::atomic::AtomicUsize::new(0);
    bencher
        .counter(ItemsCount::new(SERIES))
        .with_inputs(|| {
            let i = next.fetch_add(7919, std::sync::atomic::Ordering::Relaxed) % GROUPS;
            prepare_push(key(i), fams.clone(), true, &Validation::default()).expect("valid")
        })
        .bench_values(|p| store.push(p, 2.0));
}

/// A scrape of 10,000 groups x 20 series (220k lines with the push-time gauges), text.
#[divan::bench(sample_count = 10)]
fn render_200k_series(bencher: Bencher) {
    let store = filled_store();
    bencher
        .counter(ItemsCount::new(GROUPS * (SERIES + 2)))
        .bench(|| {
            let mut bytes = 0usize;
            store.render_chunked(Format::Text, &[], 256 * 1024, &mut |c| bytes += c.len());
            bytes
        });
}

/// A cluster node's merged view: the same 200k series arriving as group snapshots.
#[divan::bench(sample_count = 10)]
fn merge_200k_series(bencher: Bencher) {
    bench_merged(bencher, None);
}

/// The same merged view rendered again, with the member orders the previous render of the
/// same families remembered (`MergedOrders`: a cluster node's repeated scrapes).
#[divan::bench(sample_count = 10)]
fn merge_200k_series_orders_remembered(bencher: Bencher) {
    let orders = pushgate::store::MergedOrders::default();
    bench_merged(bencher, Some(&orders));
}

/// Renders the 200k-series merged view once outside the measurement (so `orders`, if any,
/// holds the families' orders), then measures rendering it.
fn bench_merged(bencher: Bencher, orders: Option<&pushgate::store::MergedOrders>) {
    let groups = filled_store().snapshot();
    let reserved = pushgate::telemetry::reserved_names();
    let render = || {
        let mut out = Vec::new();
        merged::render_groups(
            &groups,
            reserved.clone(),
            &[],
            Format::Text,
            orders,
            &mut out,
        );
        out.len()
    };
    render();
    assert!(orders.is_none_or(|o| !o.is_empty()));
    bencher
        .counter(ItemsCount::new(GROUPS * (SERIES + 2)))
        .bench(render);
}

/// A replica as it arrives from a group's primary (one replica of a `Writes` batch, decoded
/// from the received buffer), turned into the group state the replica stores.
#[divan::bench]
fn decode_replica(bencher: Bencher) {
    use prost::Message;
    let groups = filled_store().snapshot();
    let wire = rpc::pb::ReplicateRequest {
        version: 1,
        group: rpc::group_to_bytes(&groups[0]).into(),
        tombstone_key: Vec::new(),
    }
    .encode_to_vec();
    let wire = bytes::Bytes::from(wire);
    bencher
        .counter(BytesCount::new(wire.len()))
        .with_inputs(|| wire.clone())
        .bench_values(|raw| {
            let req = rpc::pb::ReplicateRequest::decode(raw).expect("bench replica decodes");
            rpc::group_from_bytes(&req.group, NameScheme::Legacy)
                .expect("bench replica is valid")
                .families
                .len()
        });
}

/// A cluster node decoding what a peer sent for a merged scrape: the 10,000 groups' states in
/// collect chunks, each decoded from its received buffer.
#[divan::bench(sample_count = 10)]
fn decode_collected_10k_groups(bencher: Bencher) {
    use prost::Message;
    let groups = filled_store().snapshot();
    let chunks: Vec<bytes::Bytes> = collect_chunks(&groups, Vec::new(), Vec::new(), false)
        .into_iter()
        .map(|c| c.encode_to_vec().into())
        .collect();
    bencher
        .counter(ItemsCount::new(GROUPS))
        .with_inputs(|| chunks.clone())
        .bench_values(|chunks| {
            let chunks = chunks
                .into_iter()
                .map(|c| rpc::pb::CollectChunk::decode(c).expect("bench chunk decodes"))
                .collect();
            decode_chunks(chunks, NameScheme::Legacy, u64::MAX)
                .expect("bench chunks are valid")
                .groups
                .len()
        });
}

#[divan::bench]
fn placement_owners_5_nodes(bencher: Bencher) {
    let members: Vec<Member> = (0..5)
        .map(|i| Member {
            id: NodeId::new(format!("10.0.0.{i}:9094")),
            generation: 1,
            grpc_addr: SocketAddr::from(([10, 0, 0, i as u8], 9094)),
            state: MemberState::Active,
        })
        .collect();
    let members = Arc::new(members);
    let mut h = 0u64;
    bencher.bench_local(|| {
        h = h.wrapping_add(0x9E37_79B9_7F4A_7C15);
        ring::owners(black_box(h), members.iter(), 2).len()
    });
}

/// The merged scrape's sort of every group it shows (55,000 keys, in the hash order a merged
/// view is collected in): `GroupKey`'s `Ord` on each comparison (`plain`, what the merged plan
/// did before) against `store::key_order`'s prefix sort, side by side in one run.
#[divan::bench(sample_count = 20, args = ["plain", "key_order"])]
fn sort_55k_keys(bencher: Bencher, how: &str) {
    let mut keys: Vec<(Arc<GroupKey>, u32, u32)> = (0..55_000)
        .map(|i| (Arc::new(key(i)), 0, i as u32))
        .collect();
    keys.sort_unstable_by_key(|k| k.0.stable_hash());
    bencher
        .with_inputs(|| keys.clone())
        .bench_local_values(|mut v| {
            if how == "plain" {
                v.sort_unstable_by(|a, b| a.0.cmp(&b.0));
            } else {
                pushgate::store::key_order::sort_by_group_key(&mut v, |s| &s.0);
            }
            v
        });
}
