//! Helpers of the cluster's tests: nodes seeing a given ring, peers served over real gRPC on
//! loopback (`TestPeer` records the calls it gets), and prepared writes.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio_stream::StreamExt;
use tonic::{Request, Response, Status};

use crate::cluster::bounds::ClusterBounds;
use crate::cluster::core::ClusterCore;
use crate::cluster::member::{Member, MemberState, NodeId};
use crate::cluster::ring::Ring;
use crate::cluster::rpc::server::ClusterService;
use crate::cluster::rpc::pb::cluster_server::Cluster;
use crate::cluster::rpc::{pb, wire};
use crate::cluster::write::op::WriteOp;
use crate::cluster::write::route::{forward_deadline_ms, forward_message};
use crate::exposition::parse_text;
use crate::exposition::NameScheme;
use crate::store::{prepare_push, GroupKey, PreparedPush, Store, StoreOptions, Validation};

pub(crate) fn key(job: &str) -> GroupKey {
    GroupKey::new([("job".to_owned(), job.to_owned())])
}

/// A one-node cluster (R = 1) named "a" whose gRPC address is `port`.
pub(crate) fn service(port: u16) -> (Arc<Store>, ClusterService) {
    service_with(&[("a", port)], 1)
}

/// A cluster of `members` (id, gRPC port) seen from "a", with replication factor `r`.
pub(crate) fn service_with(members: &[(&str, u16)], r: usize) -> (Arc<Store>, ClusterService) {
    node("a", members, r)
}

/// Node `self_id` of a cluster of `members` (id, gRPC port), replication factor `r`.
pub(crate) fn node(
    self_id: &str,
    members: &[(&str, u16)],
    r: usize,
) -> (Arc<Store>, ClusterService) {
    node_with(self_id, members, r, ClusterBounds::default())
}

/// [`node`] within `bounds`.
pub(crate) fn node_with(
    self_id: &str,
    members: &[(&str, u16)],
    r: usize,
    bounds: ClusterBounds,
) -> (Arc<Store>, ClusterService) {
    let active: Vec<_> = members
        .iter()
        .map(|&(id, port)| (id, port, MemberState::Active))
        .collect();
    node_in(self_id, &active, r, bounds)
}

/// Node `self_id` of a cluster of `members` (id, gRPC port, state), replication factor `r`.
pub(crate) fn node_in(
    self_id: &str,
    members: &[(&str, u16, MemberState)],
    r: usize,
    bounds: ClusterBounds,
) -> (Arc<Store>, ClusterService) {
    let store = Arc::new(Store::new(StoreOptions::default()));
    let members = members
        .iter()
        .map(|&(id, port, state)| Member {
            id: NodeId::from(id),
            generation: 1,
            grpc_addr: std::net::SocketAddr::from(([127, 0, 0, 1], port)),
            state,
        })
        .collect();
    let (_tx, rx) = watch::channel(Arc::new(Ring::new(NodeId::from(self_id), members, 1)));
    let core = ClusterCore::with_bounds(
        store.clone(),
        Validation::default(),
        rx,
        NodeId::from(self_id),
        r,
        Duration::from_secs(2),
        bounds,
        None,
    );
    (store, ClusterService::new(core))
}

/// The port of a peer that accepts connections and never answers (frozen, or cut off with
/// its packets dropped).
pub(crate) async fn silent_peer() -> u16 {
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = silent.local_addr().unwrap().port();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((conn, _)) = silent.accept().await {
            held.push(conn);
        }
    });
    port
}

/// A port nothing listens on.
pub(crate) fn closed_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

/// A PUT of job "j" (the write a returned copy belongs to).
pub(crate) fn op_j() -> WriteOp {
    WriteOp::Push(prepared("j", BODY))
}

pub(crate) fn prepared(job: &str, body: &str) -> PreparedPush {
    let families = parse_text(body.as_bytes(), NameScheme::Legacy).expect("valid text");
    prepare_push(key(job), families, true, &Validation::default()).expect("valid push")
}

/// One batch of forwarded writes to `svc`; the per-write results.
pub(crate) async fn forward_all(
    svc: &ClusterService,
    writes: Vec<pb::ForwardedWrite>,
) -> Vec<pb::ForwardResult> {
    svc.forward_batch(pb::ForwardRequest {
        writes,
        replicas: Vec::new(),
    })
    .await
    .unwrap()
    .results
}

pub(crate) fn forwarded(job: &str, body: &str) -> pb::ForwardedWrite {
    let mut w = forward_message(&WriteOp::Push(prepared(job, body)), "sender").0;
    w.deadline_unix_ms = forward_deadline_ms(Duration::from_secs(5));
    w
}

/// A write as an entry-heavy node forwards it: its primary replicates it before answering
/// (the primary's side of the tests above).
pub(crate) fn primary_replicates(mut w: pb::ForwardedWrite) -> pb::ForwardedWrite {
    w.sender_replicates = false;
    w
}

/// The exposition of one group's pushed families (no push time families).
pub(crate) fn text_of(store: &Store, job: &str) -> String {
    let g = store.group(&key(job)).expect("group held");
    g.families
        .iter()
        .map(|(f, _)| String::from_utf8(f.text().to_vec()).unwrap())
        .collect()
}

pub(crate) const BODY: &str = "# TYPE b counter\nb{x=\"2\"} 2\nb{x=\"1\"} 1\n# HELP a help\na 3\n";

/// Serves `svc` on an ephemeral port; returns the address.
/// Waits (at most 5 s) until `cond` holds.
pub(crate) async fn serve<S: Cluster>(svc: S) -> std::net::SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    serve_on(listener, svc)
}

pub(crate) fn serve_on<S: Cluster>(
    listener: tokio::net::TcpListener,
    svc: S,
) -> std::net::SocketAddr {
    let addr = listener.local_addr().unwrap();
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(crate::cluster::rpc::ClusterServer::new(svc))
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
    );
    addr
}

/// A node's service as a peer, recording each `Writes` batch it gets (as "forward" with its
/// writes and replicas, or "replicate_batch" for replicas alone). With `damaged`, the first
/// group of every chunk its collect answers carry is cut short. With `held`, a batch with
/// writes is recorded on arrival and then waits for a permit before it is served (as a
/// primary's does while it replicates to other nodes).
#[derive(Clone)]
pub(crate) struct TestPeer {
    pub(crate) svc: ClusterService,
    pub(crate) damaged: bool,
    /// Answers a `CollectRequest.by_family` call group by group, as no node does (a breach of
    /// the protocol).
    pub(crate) groups_only: bool,
    pub(crate) held: Option<Arc<tokio::sync::Semaphore>>,
    pub(crate) calls: Arc<parking_lot::Mutex<Vec<RecordedCall>>>,
    /// Forwarded writes that carried a body not decoded yet.
    pub(crate) bodies: Arc<AtomicUsize>,
    /// The bounds its `Writes` batches are served within (none: unbounded, as a service called
    /// directly).
    pub(crate) admission: Option<crate::cluster::rpc::writes::BatchAdmission>,
    /// This many batches are refused `UNAVAILABLE` first (as a batch on a connection to a
    /// node that has since restarted fails).
    pub(crate) refuse_first: Arc<AtomicUsize>,
}

/// The method, and how many writes and replicas it carried (for "sync": entries and summary
/// buckets).
pub(crate) type RecordedCall = (&'static str, usize, usize);

impl TestPeer {
    /// Answers the next call `UNAVAILABLE` when it is still to refuse one.
    fn refused(&self) -> Result<(), Status> {
        let refuse = self
            .refuse_first
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1));
        match refuse {
            Ok(_) => Err(Status::unavailable("connection reset")),
            Err(_) => Ok(()),
        }
    }

    /// One batch: recorded, held while `held` has no permit (batches with writes), served.
    async fn batch(&self, req: pb::ForwardRequest) -> Result<pb::ForwardReply, Status> {
        self.refused()?;
        if req.writes.is_empty() {
            self.calls
                .lock()
                .push(("replicate_batch", 0, req.replicas.len()));
            return self.svc.forward_batch(req).await;
        }
        self.calls
            .lock()
            .push(("forward", req.writes.len(), req.replicas.len()));
        let bodies = req.writes.iter().filter(|w| w.body.is_some()).count();
        self.bodies.fetch_add(bodies, Ordering::Relaxed);
        if let Some(gate) = &self.held {
            let _permit = gate.acquire().await.unwrap();
        }
        self.svc.forward_batch(req).await
    }

    pub(crate) fn new(svc: ClusterService) -> Self {
        TestPeer {
            svc,
            damaged: false,
            groups_only: false,
            held: None,
            admission: None,
            calls: Default::default(),
            bodies: Default::default(),
            refuse_first: Default::default(),
        }
    }
}

pub(crate) fn damaged(svc: ClusterService) -> TestPeer {
    TestPeer {
        damaged: true,
        ..TestPeer::new(svc)
    }
}

pub(crate) fn groups_only(svc: ClusterService) -> TestPeer {
    TestPeer {
        groups_only: true,
        ..TestPeer::new(svc)
    }
}

pub(crate) fn replica_of(job: &str, version: u64) -> pb::ReplicateRequest {
    let store = Store::new(StoreOptions::default());
    store
        .push_versioned(prepared(job, BODY), 1.0, || version)
        .unwrap();
    pb::ReplicateRequest {
        group: wire::group_to_bytes(&store.group(&key(job)).unwrap()).into(),
        tombstone_key: Vec::new(),
        version,
    }
}

/// A port that accepts connections and counts them, never answering.
pub(crate) async fn counting_peer() -> (u16, Arc<AtomicUsize>) {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = l.local_addr().unwrap().port();
    let accepted = Arc::new(AtomicUsize::new(0));
    let count = accepted.clone();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((conn, _)) = l.accept().await {
            count.fetch_add(1, Ordering::SeqCst);
            held.push(conn);
        }
    });
    (port, accepted)
}

/// A job whose rendezvous order on `ring` is `order`.
pub(crate) fn job_in_order(ring: &Ring, order: &[&str]) -> String {
    (0..)
        .map(|i| format!("j{i}"))
        .find(|job| {
            let got: Vec<&str> = ring
                .rendezvous_order(key(job).stable_hash())
                .iter()
                .map(|m| m.id.as_str())
                .collect();
            got == order
        })
        .unwrap()
}

#[tonic::async_trait]
impl Cluster for TestPeer {
    async fn replicate(
        &self,
        r: Request<pb::ReplicateRequest>,
    ) -> Result<Response<pb::ReplicateReply>, Status> {
        self.svc.replicate(r).await
    }
    type CollectStream = <ClusterService as Cluster>::CollectStream;
    async fn collect(
        &self,
        r: Request<pb::CollectRequest>,
    ) -> Result<Response<Self::CollectStream>, Status> {
        let mut r = r;
        if self.groups_only {
            r.get_mut().by_family = false;
        }
        let mut answer = self.svc.collect(r).await?;
        if self.damaged {
            let chunks: Vec<_> = answer.get_mut().collect().await;
            let chunks = chunks.into_iter().map(|mut c| {
                if let Some(g) = c.as_mut().ok().and_then(|c| c.groups.first_mut()) {
                    g.truncate(g.len() / 2);
                }
                // A family-by-family answer: its first family's members cut short.
                if let Some(f) = c.as_mut().ok().and_then(|c| c.families.first_mut()) {
                    f.members.truncate(f.members.len() / 2);
                }
                c
            });
            return Ok(Response::new(Box::pin(tokio_stream::iter(
                chunks.collect::<Vec<_>>(),
            ))));
        }
        Ok(answer)
    }
    async fn wipe(&self, r: Request<pb::WipeRequest>) -> Result<Response<pb::WipeReply>, Status> {
        self.svc.wipe(r).await
    }
    async fn sync(&self, r: Request<pb::SyncRequest>) -> Result<Response<pb::SyncReply>, Status> {
        let req = r.get_ref();
        self.calls
            .lock()
            .push(("sync", req.entries.len(), req.summary.len()));
        self.svc.sync(r).await
    }
    type WritesStream = crate::cluster::rpc::writes::WritesStream;
    async fn writes(
        &self,
        r: Request<tonic::Streaming<pb::WriteBatch>>,
    ) -> Result<Response<Self::WritesStream>, Status> {
        let me = self.clone();
        Ok(Response::new(crate::cluster::rpc::writes::serve_writes(
            r.into_inner(),
            self.admission.clone(),
            move |batch| {
                let me = me.clone();
                async move { me.batch(batch).await }
            },
        )))
    }
}
