//! The `Writes` call through real gRPC: batches answered by id in any order, the bounds a node
//! serves them within, and a call that ends opened again by the next batch.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{watch, Semaphore};

use super::{BatchAdmission, WriteCall, BATCHES_PER_CALL};
use crate::cluster::rpc::client::PeerClients;
use crate::cluster::rpc::pb;
use crate::cluster::testkit::*;

fn writes(jobs: &[&str]) -> pb::ForwardRequest {
    pb::ForwardRequest {
        writes: jobs.iter().map(|j| forwarded(j, BODY)).collect(),
        replicas: Vec::new(),
    }
}

fn replicas(jobs: &[&str]) -> pb::ForwardRequest {
    pb::ForwardRequest {
        writes: Vec::new(),
        replicas: jobs.iter().map(|j| replica_of(j, 5)).collect(),
    }
}

fn deadline() -> Instant {
    Instant::now() + Duration::from_secs(5)
}

/// Waits (at most 5 s) until the peer has recorded `n` batches.
async fn recorded(calls: &parking_lot::Mutex<Vec<RecordedCall>>, n: usize) {
    let until = Instant::now() + Duration::from_secs(5);
    while calls.lock().len() < n {
        assert!(Instant::now() < until, "{} of {n} batches arrived", calls.lock().len());
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

fn admission(permits: usize, stop: watch::Receiver<bool>) -> BatchAdmission {
    BatchAdmission {
        permits: Arc::new(Semaphore::new(permits)),
        max: permits,
        timeout: Duration::from_secs(30),
        stop,
    }
}

/// A peer serving on real gRPC whose batches with writes wait for a permit of the returned gate
/// (within `admission`), its store, its record of batches, and a call to it.
async fn held_peer(
    admission: Option<BatchAdmission>,
) -> (
    Arc<crate::store::Store>,
    Arc<Semaphore>,
    Arc<parking_lot::Mutex<Vec<RecordedCall>>>,
    Arc<WriteCall>,
) {
    let (store, svc) = service(1);
    let gate = Arc::new(Semaphore::new(0));
    let mut peer = TestPeer::new(svc);
    peer.held = Some(gate.clone());
    peer.admission = admission;
    let calls = peer.calls.clone();
    let addr = serve(peer).await;
    let call = Arc::new(WriteCall::new(
        PeerClients::new(Duration::from_secs(5)).client(addr),
    ));
    (store, gate, calls, call)
}

/// A batch held in the peer does not hold the batches sent after it on the same call: each is
/// answered as it ends, and every answer reaches the batch it belongs to.
#[tokio::test]
async fn batches_on_one_call_are_answered_in_any_order_each_with_its_own_answers() {
    let (store, gate, calls, call) = held_peer(None).await;
    let held = tokio::spawn({
        let call = call.clone();
        async move { call.send(writes(&["held1", "held2"]), deadline()).await }
    });
    recorded(&calls, 1).await;
    let answered = call.send(replicas(&["r1", "r2", "r3"]), deadline()).await;
    let answered = answered.expect("the replicas are answered while the writes wait");
    assert_eq!(answered.replica_results.len(), 3);
    assert!(answered.results.is_empty());
    assert!(!held.is_finished());
    gate.add_permits(2);
    let reply = held.await.unwrap().expect("the held batch is answered");
    assert_eq!(reply.results.len(), 2);
    assert!(reply.replica_results.is_empty());
    for r in &reply.results {
        assert_eq!(r.reply.as_ref().unwrap().status, 200);
    }
    assert!(store.group(&key("held2")).is_some());
}

/// A peer that sends batches faster than they are served waits: no more than
/// `BATCHES_PER_CALL` batches of one call are read until one is answered, and none is lost.
#[tokio::test]
async fn a_call_has_at_most_a_few_batches_served_at_once() {
    let (store, gate, calls, call) = held_peer(None).await;
    let n = BATCHES_PER_CALL + 2;
    let sent: Vec<_> = (0..n)
        .map(|i| {
            let call = call.clone();
            tokio::spawn(async move {
                let job = format!("j{i}");
                call.send(writes(&[job.as_str()]), deadline()).await
            })
        })
        .collect();
    recorded(&calls, BATCHES_PER_CALL).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(calls.lock().len(), BATCHES_PER_CALL, "read beyond the bound");
    gate.add_permits(n);
    for s in sent {
        let reply = s.await.unwrap().expect("every batch is answered");
        assert_eq!(reply.results[0].reply.as_ref().unwrap().status, 200);
    }
    assert_eq!(store.group_count(), n);
}

/// A batch that finds the node's bound on calls served at once (`--cluster.grpc-max-concurrency`)
/// reached is refused whole, unapplied, while the call stays open for the next.
#[tokio::test]
async fn a_batch_beyond_the_nodes_concurrency_bound_is_refused_unapplied() {
    let (_stop, stopped) = watch::channel(false);
    let (store, gate, calls, call) = held_peer(Some(admission(1, stopped))).await;
    let held = tokio::spawn({
        let call = call.clone();
        async move { call.send(writes(&["held"]), deadline()).await }
    });
    recorded(&calls, 1).await;
    let refused = call
        .send(replicas(&["r"]), deadline())
        .await
        .expect_err("no permit is left");
    assert_eq!(refused.code(), tonic::Code::ResourceExhausted);
    assert!(refused.message().contains("--cluster.grpc-max-concurrency"));
    assert!(store.group(&key("r")).is_none(), "nothing applied");
    gate.add_permits(1);
    assert!(held.await.unwrap().is_ok());
    // The permit is back: the same call takes the next batch.
    let reply = call.send(replicas(&["r"]), deadline()).await.unwrap();
    assert!(reply.replica_results[0].applied);
}

/// A node that stops ends every open call (the server's graceful shutdown waits for the calls
/// in progress, and these never end by themselves), and the next batch opens a new call.
#[tokio::test]
async fn a_stopping_node_ends_its_open_calls_and_the_next_batch_opens_a_new_one() {
    let (store, svc) = service(1);
    let (stop, stopped) = watch::channel(false);
    let mut peer = TestPeer::new(svc);
    peer.admission = Some(admission(16, stopped));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (shut, shutdown) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(crate::cluster::rpc::ClusterServer::new(peer.clone()))
            .serve_with_incoming_shutdown(
                tokio_stream::wrappers::TcpListenerStream::new(listener),
                async {
                    let _ = shutdown.await;
                },
            ),
    );
    let call = WriteCall::new(PeerClients::new(Duration::from_secs(5)).client(addr));
    assert!(call.send(replicas(&["a"]), deadline()).await.is_ok());
    stop.send_replace(true);
    // The call ended: the next batch goes on a new one (served at once, as the node has not
    // stopped reading new calls yet).
    let until = Instant::now() + Duration::from_secs(5);
    loop {
        assert!(Instant::now() < until, "no batch was answered after the call ended");
        if call.send(replicas(&["b"]), deadline()).await.is_ok() {
            break;
        }
    }
    assert_eq!(store.group_version(&key("b")), Some(5));
    // The new call ends at once too, so the server's graceful shutdown is not held by it.
    let _ = shut.send(());
    tokio::time::timeout(Duration::from_secs(5), server)
        .await
        .expect("the server stopped with calls open")
        .unwrap()
        .unwrap();
}

/// A batch to a node that cannot be reached fails with the connection's `UNAVAILABLE`, naming the
/// connection: the write path then knows the batch was certainly not applied (an aggregating push
/// may go to the next node; `route::certainly_not_applied`), as it did for a unary call.
#[tokio::test]
async fn a_batch_to_an_unreachable_node_fails_naming_the_connection() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    let call = WriteCall::new(PeerClients::new(Duration::from_millis(500)).client(addr));
    let failed = call
        .send(replicas(&["r"]), deadline())
        .await
        .expect_err("nobody listens");
    assert_eq!(failed.code(), tonic::Code::Unavailable, "{failed:?}");
    assert!(failed.message().contains("tcp connect error"), "{failed:?}");
}

/// A hostile peer's batch message without its items is refused under its own id, and the call
/// goes on serving the batches after it.
#[tokio::test]
async fn a_batch_without_items_is_refused_under_its_id() {
    let (store, svc) = service(1);
    let addr = serve(TestPeer::new(svc)).await;
    let mut client = PeerClients::new(Duration::from_secs(5)).client(addr);
    let batches = tokio_stream::iter([
        pb::WriteBatch { id: 7, batch: None },
        pb::WriteBatch {
            id: 8,
            batch: Some(replicas(&["after"])),
        },
    ]);
    let mut answers = client.writes(batches).await.unwrap().into_inner();
    let mut got = Vec::new();
    while let Some(a) = answers.message().await.unwrap() {
        got.push(a);
    }
    got.sort_by_key(|a| a.id);
    assert_eq!(got.len(), 2);
    assert_eq!(
        (got[0].id, got[0].error_code),
        (7, tonic::Code::InvalidArgument as u32)
    );
    assert!(got[0].reply.is_none());
    assert_eq!((got[1].id, got[1].error_code), (8, 0));
    assert!(got[1].reply.as_ref().unwrap().replica_results[0].applied);
    assert_eq!(store.group_count(), 1, "only the batch after it was applied");
}
