//! Calls to a peer through real gRPC: batching, and writes and replicas sharing a call.

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::future::join_all;

use crate::cluster::rpc::batch::BatchLimits;
use crate::cluster::rpc::client::PeerClients;
use crate::cluster::rpc::{pb, wire};
use crate::cluster::testkit::*;
use crate::cluster::write::route::forward_deadline_ms;
use crate::store::{Store, StoreOptions};

/// Forwards and replications through real gRPC.
#[tokio::test]
async fn batched_calls_round_trip_over_grpc() {
    let (store, svc) = service(1);
    let addr = serve(svc).await;
    let clients = PeerClients::with_limits(
        Duration::from_secs(5),
        BatchLimits {
            max_inflight: 1,
            ..BatchLimits::default()
        },
    );
    let peer = clients.peer(addr);
    let deadline = || Instant::now() + Duration::from_secs(5);
    // Concurrent calls: the first goes alone, the rest share a batch; each its own answer.
    let mut bad = forwarded("bad", BODY);
    bad.families[0].truncate(5);
    let writes = vec![forwarded("f1", BODY), bad, forwarded("f2", BODY)];
    let answers = join_all(writes.into_iter().map(|w| peer.forward(w, 100, deadline()))).await;
    assert_eq!(answers[0].as_ref().unwrap().reply.status, 200);
    assert!(answers[1].is_err());
    assert_eq!(answers[2].as_ref().unwrap().reply.status, 200);
    for job in ["f1", "f2"] {
        let direct = Store::new(StoreOptions::default());
        direct.push(prepared(job, BODY), 1.0).unwrap();
        assert_eq!(text_of(&store, job), text_of(&direct, job));
    }
    assert!(store.group(&key("bad")).is_none());
    let mut broken = replica_of("r3", 7);
    broken.group.truncate(broken.group.len() / 2);
    let items = vec![
        replica_of("r1", 5),
        replica_of("r1", 4),
        broken,
        replica_of("r2", 6),
    ];
    let applied = join_all(
        items
            .into_iter()
            .map(|r| peer.replicate(r, 100, deadline())),
    )
    .await;
    assert!(applied[0].as_ref().unwrap());
    assert!(
        !applied[1].as_ref().unwrap(),
        "an older state is not applied"
    );
    assert_eq!(
        applied[2].as_ref().unwrap_err().code(),
        tonic::Code::InvalidArgument
    );
    assert!(applied[3].as_ref().unwrap());
    assert_eq!(store.group_version(&key("r1")), Some(5));
    assert_eq!(store.group_version(&key("r2")), Some(6));
    assert!(store.group(&key("r3")).is_none());
    // A delete travels too.
    let del = pb::ForwardedWrite {
        key: wire::key_to_pb(&key("f1")),
        delete: true,
        deadline_unix_ms: forward_deadline_ms(Duration::from_secs(5)),
        ..Default::default()
    };
    assert_eq!(
        peer.forward(del, 100, deadline())
            .await
            .unwrap()
            .reply
            .status,
        202
    );
    assert!(store.group(&key("f1")).is_none());
}

/// Writes and replicas queued for one peer at the same time, through real gRPC: they share
/// one batch; each item gets its own answer.
#[tokio::test]
async fn writes_and_replicas_for_one_peer_share_a_call() {
    let (store, svc) = service(1);
    let peer = TestPeer::new(svc);
    let calls = peer.calls.clone();
    let addr = serve(peer).await;
    let clients = PeerClients::new(Duration::from_secs(5));
    let peer = clients.peer(addr);
    let deadline = || Instant::now() + Duration::from_secs(5);
    // A first write alone: the peer is then known to answer batches.
    assert_eq!(
        peer.forward(forwarded("w0", BODY), 100, deadline())
            .await
            .unwrap()
            .reply
            .status,
        200
    );
    for round in 0..2 {
        let mut bad = forwarded(&format!("bad{round}"), BODY);
        bad.families[0].truncate(5);
        let mut broken = replica_of(&format!("broken{round}"), 7);
        broken.group.truncate(broken.group.len() / 2);
        let (w1, w2) = (format!("w1-{round}"), format!("w2-{round}"));
        let (r1, r2) = (format!("r1-{round}"), format!("r2-{round}"));
        let (f1, f2, fb, a1, a1_old, ab, a2) = tokio::join!(
            peer.forward(forwarded(&w1, BODY), 100, deadline()),
            peer.forward(forwarded(&w2, BODY), 100, deadline()),
            peer.forward(bad, 100, deadline()),
            peer.replicate(replica_of(&r1, 5), 100, deadline()),
            peer.replicate(replica_of(&r1, 4), 100, deadline()),
            peer.replicate(broken, 100, deadline()),
            peer.replicate(replica_of(&r2, 6), 100, deadline()),
        );
        assert_eq!(f1.unwrap().reply.status, 200);
        assert_eq!(f2.unwrap().reply.status, 200);
        assert_eq!(fb.unwrap_err().code(), tonic::Code::InvalidArgument);
        assert!(a1.unwrap());
        assert!(!a1_old.unwrap(), "an older state is not applied");
        assert_eq!(ab.unwrap_err().code(), tonic::Code::InvalidArgument);
        assert!(a2.unwrap());
        assert_eq!(store.group_version(&key(&r1)), Some(5));
        assert_eq!(store.group_version(&key(&r2)), Some(6));
        for job in [&w1, &w2] {
            let direct = Store::new(StoreOptions::default());
            direct.push(prepared(job, BODY), 1.0).unwrap();
            assert_eq!(text_of(&store, job), text_of(&direct, job));
        }
        assert!(store.group(&key(&format!("bad{round}"))).is_none());
        assert!(store.group(&key(&format!("broken{round}"))).is_none());
    }
    let calls = calls.lock().clone();
    assert_eq!(
        calls,
        vec![("forward", 1, 0), ("forward", 3, 4), ("forward", 3, 4)]
    );
}

/// A write the primary is to replicate before it answers travels in a queue of its own: a
/// replica for the same peer is not held behind it while it is in flight (even with no slow
/// call rule to let another call start), or three nodes forwarding such writes to each other
/// in a ring would wait on each other until the timeout.
#[tokio::test]
async fn a_replica_is_not_held_behind_a_write_its_primary_replicates() {
    let (store, svc) = service(1);
    let gate = Arc::new(tokio::sync::Semaphore::new(0));
    let mut peer = TestPeer::new(svc);
    peer.held = Some(gate.clone());
    let calls = peer.calls.clone();
    let addr = serve(peer).await;
    let clients = PeerClients::with_limits(
        Duration::from_secs(2),
        BatchLimits {
            slow_call: None,
            ..BatchLimits::default()
        },
    );
    let peer = clients.peer(addr);
    let deadline = || Instant::now() + Duration::from_secs(2);
    let held = tokio::spawn({
        let peer = peer.clone();
        let deadline = deadline();
        let w = primary_replicates(forwarded("held", BODY));
        async move { peer.forward(w, 100, deadline).await }
    });
    let until = Instant::now() + Duration::from_secs(5);
    while calls.lock().is_empty() {
        assert!(Instant::now() < until, "the forward did not arrive");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    // The forward is in the peer, unanswered; a replica to the same peer is answered.
    let applied = peer.replicate(replica_of("r", 5), 100, deadline()).await;
    assert!(applied.unwrap());
    assert_eq!(store.group_version(&key("r")), Some(5));
    assert!(!held.is_finished());
    gate.add_permits(1);
    assert_eq!(held.await.unwrap().unwrap().reply.status, 200);
    assert!(store.group(&key("held")).is_some());
}

#[tokio::test]
async fn an_unreachable_peer_fails_each_forwarded_write() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    let clients = PeerClients::new(Duration::from_millis(500));
    let peer = clients.peer(addr);
    let deadline = Instant::now() + Duration::from_millis(500);
    let answers =
        join_all(["x", "y"].map(|j| peer.forward(forwarded(j, BODY), 100, deadline))).await;
    for a in answers {
        assert!(a.is_err());
    }
}
