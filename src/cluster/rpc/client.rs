//! The client side of the node-to-node calls: one pooled channel per peer, and the batching
//! queues of the write path's batches to it (forwarded writes and replicas).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use tonic::transport::Endpoint;
use tonic::Status;

use super::super::bounds::ClusterBounds;
use super::batch::{BatchLimits, Batcher, Transport};
use super::channel::PeerChannel;
use super::pb;
use super::pb::cluster_client::ClusterClient;
use super::tls::TlsConnector;
use super::wire::{failed, item_status};
use super::writes::WriteCall;
use crate::telemetry::metrics as m;
use crate::tls::ClusterTls;

/// HTTP/2 flow control windows of the node-to-node connections (both directions): a batched call
/// carries many groups, and h2's default 64 KiB windows made it wait for window updates.
pub const PEER_STREAM_WINDOW: u32 = 4 << 20;
pub const PEER_CONNECTION_WINDOW: u32 = 16 << 20;
/// The receive windows of a merged scrape's collect calls, on connections of their own: the
/// collecting node reads a peer's family chunks at the pace it writes the response, and with
/// `PEER_STREAM_WINDOW` each peer's unread chunks waited in its buffers, up to 4 MiB per peer.
pub const COLLECT_STREAM_WINDOW: u32 = 1 << 20;
pub const COLLECT_CONNECTION_WINDOW: u32 = 2 << 20;
/// Largest HTTP/2 frame a node accepts from a peer. h2's default (16 KiB) split a batch of a few
/// forwarded pushes into several DATA frames, each written by a system call of its own.
pub const PEER_MAX_FRAME: u32 = 1 << 20;

/// Client channels to peers, created on first use and reused (a tonic `Channel` multiplexes
/// calls over one HTTP/2 connection and reconnects by itself), with the batching queues of the
/// write path's calls to each peer.
pub struct PeerClients {
    peers: Mutex<HashMap<SocketAddr, Peer>>,
    timeout: Duration,
    limits: BatchLimits,
    /// Mutual TLS to every peer (`--cluster.tls-config`); plain h2c without it.
    tls: Option<ClusterTls>,
    /// Largest message sent or accepted (`--cluster.grpc-max-message-bytes`).
    max_message_bytes: usize,
}

/// One peer: its channel and the batching queues of the writes forwarded to it and the replicas
/// sent to it.
///
/// Each queue sends its batches on an open `Writes` call of its own (`writes::WriteCall`).
/// A write whose primary is asked to leave the replication to this node
/// (`ForwardedWrite.sender_replicates`) and a replica share a queue and a batch: the primary
/// answers such a write without calling any other node, so the batch waits on nothing but the
/// peer's store.
/// A write the primary is to replicate before answering (this node receives far more writes than it
/// applies for others; see `write::entry_load::EntryLoad`) waits on the primary's calls to other
/// nodes, so it goes in a queue of its own (`waiting`): had it shared the queue, a replica behind
/// it would wait on those calls, and three nodes forwarding to each other in a ring would wait on
/// each other until the peer timeout.
#[derive(Clone)]
pub struct Peer {
    pub client: ClusterClient<PeerChannel>,
    /// For merged scrapes' collect calls (`COLLECT_STREAM_WINDOW`), connected on first use.
    pub collect: ClusterClient<PeerChannel>,
    writes: Arc<Batcher<WriteTransport>>,
    waiting: Arc<Batcher<ForwardTransport>>,
}

impl Peer {
    /// Forwards a write to this peer as the group's primary (batched with the other writes and
    /// replicas queued for it, or with the other writes the primary is to replicate); `bytes` is
    /// about its size on the wire.
    pub async fn forward(
        &self,
        write: pb::ForwardedWrite,
        bytes: usize,
        deadline: Instant,
    ) -> Result<ForwardOutput, Status> {
        if !write.sender_replicates {
            return self.waiting.call(write, bytes, deadline).await;
        }
        match self
            .writes
            .call(PeerWrite::Forward(write), bytes, deadline)
            .await?
        {
            PeerAnswer::Forwarded(out) => Ok(out),
            PeerAnswer::Replicated(_) => Err(Status::internal(
                "a forwarded write was answered as a replica",
            )),
        }
    }

    /// Sends a group state (or tombstone) for this peer to hold; true when it applied it, false
    /// when it held a newer one.
    pub async fn replicate(
        &self,
        replica: pb::ReplicateRequest,
        bytes: usize,
        deadline: Instant,
    ) -> Result<bool, Status> {
        match self
            .writes
            .call(PeerWrite::Replicate(replica), bytes, deadline)
            .await?
        {
            PeerAnswer::Replicated(applied) => Ok(applied),
            PeerAnswer::Forwarded(_) => Err(Status::internal(
                "a replica was answered as a forwarded write",
            )),
        }
    }
}

impl PeerClients {
    #[cfg(any(test, feature = "testsuite"))]
    pub fn new(timeout: Duration) -> Self {
        Self::with_limits(timeout, BatchLimits::default())
    }

    pub fn with_limits(timeout: Duration, limits: BatchLimits) -> Self {
        PeerClients {
            peers: Mutex::new(HashMap::new()),
            timeout,
            limits,
            tls: None,
            max_message_bytes: ClusterBounds::default().max_message_bytes,
        }
    }

    /// Clients within the cluster flags' bounds: no batch carries more items than a peer
    /// accepts (`--cluster.max-batch-items`, assumed the same on every node), no message is
    /// larger than `--cluster.grpc-max-message-bytes`.
    pub fn with_bounds(timeout: Duration, bounds: &ClusterBounds) -> Self {
        let defaults = BatchLimits::default();
        let limits = BatchLimits {
            max_items: defaults.max_items.min(bounds.max_batch_items),
            ..defaults
        };
        PeerClients {
            max_message_bytes: bounds.max_message_bytes,
            ..Self::with_limits(timeout, limits)
        }
    }

    /// Calls every peer over mutual TLS with `tls`'s config in force at each handshake.
    pub fn with_tls(mut self, tls: Option<ClusterTls>) -> Self {
        self.tls = tls;
        self
    }

    /// The deadline of every call.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    pub fn client(&self, addr: SocketAddr) -> ClusterClient<PeerChannel> {
        self.peer(addr).client
    }

    /// The client of a merged scrape's collect calls to `addr` (see `COLLECT_STREAM_WINDOW`).
    pub fn collect_client(&self, addr: SocketAddr) -> ClusterClient<PeerChannel> {
        self.peer(addr).collect
    }

    /// A lazily connected client to `addr` with these receive windows.
    fn connect(&self, addr: SocketAddr, windows: (u32, u32)) -> ClusterClient<PeerChannel> {
        let endpoint = Endpoint::from_shared(format!("http://{addr}"))
            .expect("a socket address should form a valid URI")
            .connect_timeout(self.timeout)
            .tcp_nodelay(true)
            .http2_keep_alive_interval(Duration::from_secs(10))
            .keep_alive_timeout(self.timeout)
            .initial_stream_window_size(windows.0)
            .initial_connection_window_size(windows.1)
            .max_frame_size(PEER_MAX_FRAME);
        let channel = match &self.tls {
            Some(tls) => endpoint.connect_with_connector_lazy(TlsConnector::new(
                tls.clone(),
                addr,
                self.timeout,
            )),
            None => endpoint.connect_lazy(),
        };
        ClusterClient::new(PeerChannel::new(channel))
            .max_decoding_message_size(self.max_message_bytes)
            .max_encoding_message_size(self.max_message_bytes)
    }

    pub fn peer(&self, addr: SocketAddr) -> Peer {
        let mut peers = self.peers.lock();
        peers
            .entry(addr)
            .or_insert_with(|| {
                let client = self.connect(addr, (PEER_STREAM_WINDOW, PEER_CONNECTION_WINDOW));
                let collect =
                    self.connect(addr, (COLLECT_STREAM_WINDOW, COLLECT_CONNECTION_WINDOW));
                Peer {
                    collect,
                    writes: Batcher::new(
                        WriteTransport {
                            call: WriteCall::new(client.clone()),
                        },
                        self.limits,
                    ),
                    waiting: Batcher::new(
                        ForwardTransport {
                            call: WriteCall::new(client.clone()),
                        },
                        self.limits,
                    ),
                    client,
                }
            })
            .clone()
    }
}

/// A forwarded write's answer: the primary's reply, and the group state it returned (for this
/// node to hold, or with `left_to_sender` to replicate).
#[derive(Debug)]
pub struct ForwardOutput {
    pub reply: pb::WriteReply,
    /// The group state (or tombstone).
    pub replica: Option<pb::ReplicateRequest>,
    /// Instead of `replica`, the stamp of a successful PUT, whose state is the pushed families.
    pub own: Option<pb::OwnReplica>,
    /// The primary replicated the write to no other node: this node is to.
    pub left_to_sender: bool,
}

/// Sends the writes whose primary replicates before it answers, on a call of their own (see
/// `Peer`).
pub struct ForwardTransport {
    call: WriteCall,
}

impl Transport for ForwardTransport {
    type Item = pb::ForwardedWrite;
    /// The primary's answer, and the replica it returned for this node to hold, if any: a
    /// group state, or the stamp of a PUT for this node to hold its own prepared families.
    type Output = ForwardOutput;

    async fn send(
        &self,
        items: Vec<pb::ForwardedWrite>,
        deadline: Instant,
    ) -> Vec<Result<Self::Output, Status>> {
        send_batch(&self.call, items, Vec::new(), deadline).await.0
    }
}

/// Writes, and replicas for the peer to hold beside them, in one batch on `call`.
async fn send_batch(
    call: &WriteCall,
    writes: Vec<pb::ForwardedWrite>,
    replicas: Vec<pb::ReplicateRequest>,
    deadline: Instant,
) -> BothAnswers {
    let (nf, nr) = (writes.len(), replicas.len());
    let rpc = if nf == 0 { "replicate" } else { "forward" };
    metrics::histogram!(m::PEER_BATCH_ITEMS, "rpc" => rpc).record((nf + nr) as f64);
    let started = Instant::now();
    let res = call
        .send(pb::ForwardRequest { writes, replicas }, deadline)
        .await;
    metrics::histogram!(m::PEER_RPC_DURATION_SECONDS, "rpc" => rpc)
        .record(started.elapsed().as_secs_f64());
    match res {
        Ok(reply) => (
            one_each(forward_results(reply.results), nf, "forwarded writes"),
            one_each(replicate_results(reply.replica_results), nr, "replicas"),
        ),
        Err(status) => (failed(nf, &status), failed(nr, &status)),
    }
}

/// The answers of a batch's forwarded writes.
fn forward_results(results: Vec<pb::ForwardResult>) -> Vec<Result<ForwardOutput, Status>> {
    results
        .into_iter()
        .map(|r| match (r.error_code, r.reply) {
            (0, Some(reply)) => Ok(ForwardOutput {
                reply,
                replica: r.replica,
                own: r.own_replica,
                left_to_sender: r.left_to_sender,
            }),
            (0, None) => Err(Status::internal("a batch item's answer has no reply")),
            (code, _) => Err(item_status(code, r.error)),
        })
        .collect()
}

/// The answers of a batch's replicas.
fn replicate_results(results: Vec<pb::ReplicateResult>) -> Vec<Result<bool, Status>> {
    results
        .into_iter()
        .map(|r| match r.error_code {
            0 => Ok(r.applied),
            code => Err(item_status(code, r.error)),
        })
        .collect()
}

/// `answers` when there is one per item of `n`; otherwise every item fails.
fn one_each<T>(answers: Vec<Result<T, Status>>, n: usize, what: &str) -> Vec<Result<T, Status>> {
    if answers.len() == n {
        return answers;
    }
    let status = Status::internal(format!("the peer answered {} of {n} {what}", answers.len()));
    failed(n, &status)
}

/// A write for one peer: forwarded to it as the group's primary, or a group state (or
/// tombstone) for it to hold.
pub enum PeerWrite {
    Forward(pb::ForwardedWrite),
    Replicate(pb::ReplicateRequest),
}

/// The answer to a `PeerWrite`, of the same kind.
pub enum PeerAnswer {
    Forwarded(ForwardOutput),
    Replicated(bool),
}

/// Sends the writes and replicas queued for one peer in one batch on its call.
pub struct WriteTransport {
    call: WriteCall,
}

impl Transport for WriteTransport {
    type Item = PeerWrite;
    type Output = PeerAnswer;

    async fn send(
        &self,
        items: Vec<PeerWrite>,
        deadline: Instant,
    ) -> Vec<Result<PeerAnswer, Status>> {
        let mut forwards = Vec::new();
        let mut replicas = Vec::new();
        let kinds: Vec<bool> = items
            .into_iter()
            .map(|item| match item {
                PeerWrite::Forward(w) => {
                    forwards.push(w);
                    true
                }
                PeerWrite::Replicate(r) => {
                    replicas.push(r);
                    false
                }
            })
            .collect();
        let (fw, rp) = send_batch(&self.call, forwards, replicas, deadline).await;
        let (mut fw, mut rp) = (fw.into_iter(), rp.into_iter());
        kinds
            .into_iter()
            .map(|forward| {
                let answer = if forward {
                    fw.next().map(|a| a.map(PeerAnswer::Forwarded))
                } else {
                    rp.next().map(|a| a.map(PeerAnswer::Replicated))
                };
                answer.unwrap_or_else(|| Err(Status::internal("a batch item was not answered")))
            })
            .collect()
    }
}

/// The answers to a batch's writes and to its replicas.
type BothAnswers = (
    Vec<Result<ForwardOutput, Status>>,
    Vec<Result<bool, Status>>,
);

/// A request with the per-call deadline set (sent as `grpc-timeout` too).
pub fn request<T>(msg: T, timeout: Duration) -> tonic::Request<T> {
    let mut req = tonic::Request::new(msg);
    req.set_timeout(timeout);
    req
}

#[cfg(test)]
#[path = "client_tests.rs"]
mod tests;
