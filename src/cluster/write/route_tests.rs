//! Writes routed through nodes over gRPC: who holds the copies, who sends the replicas, who
//! decodes the body.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use crate::cluster::core::ClusterCore;
use crate::cluster::gateway::ClusterGateway;
use crate::cluster::testkit::*;
use crate::cluster::write::op::{WriteAnswer, WriteOp};
use crate::exposition::parse_text;
use crate::exposition::NameScheme;
use crate::gateway::{Gateway, LocalGateway};
use crate::ingest::body::BodyFormat;
use crate::ingest::PushRequest;
use crate::store::{prepare_push, PushError, Store, StoreOptions, Validation};

#[tokio::test]
async fn a_returned_replica_that_cannot_be_held_turns_success_into_503() {
    let (store, svc) = service(1);
    let mut bad = replica_of("j", 5);
    bad.group.truncate(bad.group.len() / 2);
    let answer = svc
        .core
        .hold_returned(&op_j(), Some(bad.clone()), None, WriteAnswer::ok(200))
        .await;
    assert_eq!(answer.status, 503);
    // A refusal stays the refusal.
    let refused = WriteAnswer::from_error(&PushError::LimitExceeded("bad".into()));
    let answer = svc
        .core
        .hold_returned(&op_j(), Some(bad), None, refused)
        .await;
    assert_eq!((answer.status, answer.message.as_str()), (400, "bad"));
    assert!(store.group(&key("j")).is_none());
}

/// A PUT through `a` of a job whose rendezvous order is `order`, acknowledged; the job.
async fn push_through(a: &Arc<ClusterCore>, order: &[&str]) -> String {
    let job = job_in_order(&a.ring(), order);
    let answer = a
        .route(WriteOp::Push(prepared(&job, BODY)), Vec::new())
        .await;
    assert_eq!(answer.status, 200, "{}", answer.message);
    job
}

/// Nodes a, b and c over gRPC, R = 2 (a serves no gRPC: a call to it fails); a and b reach c only
/// with `a_reaches_c` and `b_reaches_c` (else they see it at a closed port). a's gateway core, the
/// stores of a, b and c, and the calls c got.
async fn three_nodes(
    a_reaches_c: bool,
    b_reaches_c: bool,
) -> (
    Arc<ClusterCore>,
    [Arc<Store>; 3],
    Arc<parking_lot::Mutex<Vec<RecordedCall>>>,
) {
    let b_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let c_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let b_port = b_listener.local_addr().unwrap().port();
    let c_port = c_listener.local_addr().unwrap().port();
    let closed = closed_port();
    let c_for = |reaches: bool| if reaches { c_port } else { closed };
    let (store_a, a) = node(
        "a",
        &[("a", 1), ("b", b_port), ("c", c_for(a_reaches_c))],
        2,
    );
    let (store_b, b) = node(
        "b",
        &[("a", 1), ("b", b_port), ("c", c_for(b_reaches_c))],
        2,
    );
    let (store_c, c) = node("c", &[("a", 1), ("b", b_port), ("c", c_port)], 2);
    serve_on(b_listener, TestPeer::new(b));
    let c = TestPeer::new(c);
    let calls = c.calls.clone();
    serve_on(c_listener, c);
    (a.core, [store_a, store_b, store_c], calls)
}

/// A write through a node that owns no copy: the primary applies it and leaves the
/// replication to the sender, which sends the replica to the other owner (the primary
/// cannot reach that owner here: only the sender's copy gets there).
#[tokio::test]
async fn a_write_through_a_node_that_owns_no_copy_is_replicated_by_that_node() {
    let (a, [store_a, store_b, store_c], calls) = three_nodes(true, false).await;
    let job = push_through(&a, &["b", "c", "a"]).await;
    let version = store_b
        .group_version(&key(&job))
        .expect("the primary holds it");
    assert_eq!(store_c.group_version(&key(&job)), Some(version));
    assert_eq!(text_of(&store_c, &job), text_of(&store_b, &job));
    assert!(store_a.group(&key(&job)).is_none());
    // c got one call, from a.
    assert_eq!(calls.lock().len(), 1, "{:?}", calls.lock());
    // A POST: c gets the merged state the primary returned.
    let more = "# TYPE z gauge\nz 1\n";
    let families = parse_text(more.as_bytes(), NameScheme::Legacy).unwrap();
    let post = prepare_push(key(&job), families, false, &Validation::default()).unwrap();
    assert_eq!(a.route(WriteOp::Push(post), Vec::new()).await.status, 200);
    let version = store_b.group_version(&key(&job)).unwrap();
    assert_eq!(store_c.group_version(&key(&job)), Some(version));
    assert_eq!(text_of(&store_c, &job), text_of(&store_b, &job));
    assert_eq!(store_c.group(&key(&job)).unwrap().families.len(), 3);
    // A delete: c holds the tombstone.
    assert_eq!(
        a.route(WriteOp::Delete(key(&job)), Vec::new()).await.status,
        202
    );
    assert!(store_b.group(&key(&job)).is_none());
    assert!(store_c.group(&key(&job)).is_none());
}

/// A write through the node that owns the other copy: it holds its copy itself, no call.
#[tokio::test]
async fn a_write_through_its_other_owner_is_held_there_without_a_call() {
    let (a, [store_a, store_b, store_c], calls) = three_nodes(true, true).await;
    let job = push_through(&a, &["b", "a", "c"]).await;
    let version = store_b.group_version(&key(&job)).unwrap();
    assert_eq!(store_a.group_version(&key(&job)), Some(version));
    assert_eq!(text_of(&store_a, &job), text_of(&store_b, &job));
    assert!(store_c.group(&key(&job)).is_none());
    assert!(calls.lock().is_empty());
}

/// The other owner cannot be reached: the sender, next in rendezvous order, stands in.
#[tokio::test]
async fn a_sender_stands_in_for_an_owner_it_cannot_reach() {
    let (a, [store_a, store_b, _], _) = three_nodes(false, false).await;
    let job = push_through(&a, &["b", "c", "a"]).await;
    let version = store_b.group_version(&key(&job)).unwrap();
    assert_eq!(store_a.group_version(&key(&job)), Some(version));
}

/// A node that receives far more writes than it applies for others (an entry point for the
/// load) leaves the replicas to the primary: a write through it whose owners are the other
/// two reaches both (it cannot reach the second owner itself here) and it holds nothing.
#[tokio::test]
async fn an_entry_heavy_node_leaves_the_replicas_to_the_primary() {
    let (a, [store_a, store_b, store_c], _) = three_nodes(false, true).await;
    entry_heavy(&a);
    let job = push_through(&a, &["b", "c", "a"]).await;
    let version = store_b.group_version(&key(&job)).unwrap();
    assert_eq!(store_c.group_version(&key(&job)), Some(version));
    assert!(store_a.group(&key(&job)).is_none());
}

/// Makes `a` entry-heavy for the rest of the test: a window that starts at the end of time
/// never rolls over (it would after a second, on a slow machine in the middle of a test, and
/// the few writes counted since would make `a` light again).
fn entry_heavy(a: &ClusterCore) {
    a.entry.heavy.store(true, Ordering::Relaxed);
    a.entry.window_start_ms.store(u64::MAX, Ordering::Relaxed);
}

/// A push as the HTTP layer hands it over.
fn raw(job: &str, body: &[u8], protobuf: bool, put: bool) -> PushRequest {
    PushRequest {
        key: key(job),
        body: bytes::Bytes::copy_from_slice(body),
        format: if protobuf {
            BodyFormat::ProtobufDelimited
        } else {
            BodyFormat::Text
        },
        replace_all: put,
        ttl: 0.0,
    }
}

/// Nodes a and b, R = 1: a's gateway, a's and b's stores, and how many bodies not decoded
/// b got.
async fn entry_and_primary() -> (ClusterGateway, [Arc<Store>; 2], Arc<AtomicUsize>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let members = [("a", 1), ("b", port)];
    let (store_a, a) = node("a", &members, 1);
    let (store_b, b) = node("b", &members, 1);
    let b = TestPeer::new(b);
    let bodies = b.bodies.clone();
    serve_on(listener, b);
    (ClusterGateway::new(a.core), [store_a, store_b], bodies)
}

/// An entry-heavy node forwards a push's body as it came to a primary that decodes it (the
/// decoding is the largest share of a push's cost that can move off the node most of the
/// load enters through); the group is stored as a single node stores it. A node that is not
/// entry-heavy decodes its pushes itself.
#[tokio::test]
async fn an_entry_heavy_node_leaves_the_decoding_to_the_primary() {
    let (a, [store_a, store_b], bodies) = entry_and_primary().await;
    let job = job_in_order(&a.core.ring(), &["b", "a"]);
    let single = LocalGateway::new(
        Arc::new(Store::new(StoreOptions::default())),
        Validation::default(),
    );
    single
        .push(raw(&job, BODY.as_bytes(), false, true))
        .await
        .unwrap();

    a.push(raw(&job, BODY.as_bytes(), false, true))
        .await
        .unwrap();
    assert_eq!(
        bodies.load(Ordering::Relaxed),
        0,
        "decoded where it arrived"
    );
    entry_heavy(&a.core);
    let more = "# TYPE z gauge\nz 1\n";
    a.push(raw(&job, more.as_bytes(), false, false))
        .await
        .unwrap();
    single
        .push(raw(&job, more.as_bytes(), false, false))
        .await
        .unwrap();
    assert_eq!(bodies.load(Ordering::Relaxed), 1, "left to the primary");
    assert_eq!(text_of(&store_b, &job), text_of(single.store(), &job));
    assert!(store_a.group(&key(&job)).is_none());
}

/// A body the primary decodes is refused as the single node refuses it: the same error
/// (status, message, and what the HTTP layer makes of it), a refused push recorded on its
/// group only when the single node records it, and nothing else changed.
#[tokio::test]
async fn a_body_decoded_by_the_primary_is_refused_as_a_single_node_refuses_it() {
    let (a, [_, store_b], bodies) = entry_and_primary().await;
    entry_heavy(&a.core);
    let ring = a.core.ring();
    let jobs: Vec<String> = (0..)
        .map(|i| format!("r{i}"))
        .filter(|job| {
            let order = ring.rendezvous_order(key(job).stable_hash());
            order[0].id.as_str() == "b"
        })
        .take(2)
        .collect();
    let single = LocalGateway::new(
        Arc::new(Store::new(StoreOptions::default())),
        Validation::default(),
    );
    let bad_name = {
        let mut out = Vec::new();
        let family = crate::exposition::MetricFamily {
            name: Some("bad-name".into()),
            r#type: Some(crate::exposition::MetricType::Gauge as i32),
            ..Default::default()
        };
        crate::exposition::encode_delimited(&mut out, &family);
        out
    };
    // What the single node answers, and its error's kind.
    let cases: Vec<(&str, PushRequest, &str)> = vec![
        ("stored", raw(&jobs[0], BODY.as_bytes(), false, true), "Ok"),
        (
            "text that does not parse",
            raw(&jobs[0], b"a{", false, true),
            "Err(BadBody",
        ),
        (
            "protobuf that does not decode",
            raw(&jobs[0], &[0xff, 0x01], true, true),
            "Err(BadBody",
        ),
        (
            "an invalid name",
            raw(&jobs[0], &bad_name, true, false),
            "Err(Malformed",
        ),
        (
            "timestamps",
            raw(&jobs[0], b"t 1 1000\n", false, false),
            "Err(Invalid",
        ),
        // `a` is untyped in the first group.
        (
            "a conflict with another group",
            raw(&jobs[1], b"# TYPE a counter\na 1\n", false, true),
            "Err(Invalid",
        ),
    ];
    for (what, req, kind) in cases {
        let job = req.key.clone();
        let copy = PushRequest {
            key: job.clone(),
            body: req.body.clone(),
            format: req.format,
            replace_all: req.replace_all,
            ttl: req.ttl,
        };
        let want = single.push(copy).await;
        assert!(format!("{want:?}").starts_with(kind), "{what}: {want:?}");
        let before = bodies.load(Ordering::Relaxed);
        let got = a.push(req).await;
        assert_eq!(
            bodies.load(Ordering::Relaxed),
            before + 1,
            "{what}: sent as a body"
        );
        assert_eq!(got, want, "{what}");
        let failed = |s: &Store| {
            s.group(&job)
                .map(|g| (g.failure_time > 0.0, g.families.len()))
        };
        assert_eq!(failed(&store_b), failed(single.store()), "{what}");
    }
}

/// Only a connection that was never made, or a refusal before anything was applied, lets an
/// aggregating push go to the next node; a connection that broke may have carried it.
#[test]
fn only_a_failure_before_sending_is_certainly_not_applied() {
    use tonic::Status;
    for certain in [
        Status::unavailable("tcp connect error"),
        Status::unavailable("connecting to 127.0.0.1:7 timed out"),
        Status::unavailable("this node is leaving the cluster and has handed its groups over"),
        Status::resource_exhausted("a batch of 300 items exceeds this node's limit"),
    ] {
        assert!(super::certainly_not_applied(&certain), "{certain:?}");
    }
    for maybe in [
        Status::unavailable("connection reset"),
        Status::unavailable("error reading a body from connection"),
        Status::unavailable("the peer ended the call"),
        Status::deadline_exceeded("no answer from the peer before the deadline"),
        Status::unknown("h2 protocol error: connection closed"),
    ] {
        assert!(!super::certainly_not_applied(&maybe), "{maybe:?}");
    }
}

/// An aggregating push without an `Idempotency-Key` that reaches the group's second owner is
/// added there, into that node's own partial, and copied to the primary: no forward, and the
/// third node gets no call. With a key it goes to the primary, which adds it into its partial
/// (the key's register has one writer), and holds both partials.
#[tokio::test]
async fn an_aggregating_push_without_a_key_is_added_by_the_owner_it_reaches() {
    let (a, [store_a, store_b, store_c], calls) = three_nodes(true, true).await;
    let job = job_in_order(&a.ring(), &["b", "a", "c"]);
    let push = |idempotency_key: Option<&str>| WriteOp::Aggregate {
        req: PushRequest {
            key: key(&job),
            body: bytes::Bytes::from_static(b"# TYPE c counter\nc 1\n"),
            format: BodyFormat::Text,
            replace_all: true,
            ttl: 0.0,
        },
        idempotency_key: idempotency_key.map(str::to_owned),
    };
    let partials = |s: &Store| -> Vec<(u64, f64)> {
        let states = s.aggregate_states();
        let (_, state) = states.iter().find(|(k, _)| *k == key(&job)).expect("aggregating");
        let series = state.families.values().next().unwrap().series.values().next().unwrap();
        series.partials.iter().map(|(id, p)| (id.node, p.value.sums[0])).collect()
    };
    let id = |n: &str| xxhash_rust::xxh3::xxh3_64(n.as_bytes()).max(1);
    assert_eq!(a.route(push(None), Vec::new()).await.status, 200);
    assert_eq!(partials(&store_a), [(id("a"), 1.0)]);
    assert_eq!(partials(&store_b), partials(&store_a), "copied to the primary");
    assert!(store_c.group(&key(&job)).is_none());
    assert!(calls.lock().is_empty(), "{:?}", calls.lock());
    // (b cannot call a here, so b's copy of the keyed push goes to c, standing in for a.)
    assert_eq!(a.route(push(Some("k1")), Vec::new()).await.status, 200);
    let mut both = vec![(id("a"), 1.0), (id("b"), 1.0)];
    both.sort_by_key(|p| p.0);
    assert_eq!(partials(&store_b), both, "the keyed push added by the primary");
    assert_eq!(partials(&store_a), [(id("a"), 1.0)], "not added where it arrived");
    assert!(text_of(&store_b, &job).contains(&format!("c{{instance=\"\",job=\"{job}\"}} 2\n")));
}
