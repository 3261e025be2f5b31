//! Node-to-node gRPC (`proto/pushgate/cluster.proto`): the generated service, the pooled client
//! channels to peers, and the conversions between the wire messages and the store's types.
//!
//! Everything that arrives from a peer is validated like a persistence file or a push body
//! before it reaches the store: a malformed message is answered with an error status, never a
//! panic.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use prost::Message;
use tonic::transport::Endpoint;
use tonic::{Code, Status};

use super::batch::{remaining, BatchLimits, Batcher, Transport};
use super::channel::PeerChannel;
use super::membership::Ring;
use crate::telemetry::metrics as m;

use crate::exposition::names::{is_valid_label_name, NameScheme};
use crate::exposition::LabelPair;
use crate::store::family::BlockBuilder;
use crate::store::persistence::{decode_group, encode_group_wire, snapshot_proto};
use crate::store::{GroupKey, GroupSnapshot, StoredFamily};

/// Generated from proto/pushgate/cluster.proto.
#[allow(clippy::all, missing_docs)]
pub mod pb {
    include!(concat!(env!("OUT_DIR"), "/pushgate.cluster.rs"));
}

pub use pb::cluster_client::ClusterClient;
pub use pb::cluster_server::{Cluster, ClusterServer};

/// Largest message a node sends or accepts: a group is bounded by the push body limit (at most
/// 1 GiB), a collect chunk by `COLLECT_CHUNK_BYTES` plus one group.
pub const MAX_MESSAGE_BYTES: usize = 1 << 30;
/// HTTP/2 flow control windows of the node-to-node connections (both directions): a batched call
/// carries many groups, and h2's default 64 KiB windows made it wait for window updates.
pub const PEER_STREAM_WINDOW: u32 = 4 << 20;
pub const PEER_CONNECTION_WINDOW: u32 = 16 << 20;
/// Largest HTTP/2 frame a node accepts from a peer. h2's default (16 KiB) split a batch of a few
/// forwarded pushes into several DATA frames, each written by a system call of its own.
pub const PEER_MAX_FRAME: u32 = 1 << 20;
/// Groups are batched into collect chunks of about this size.
pub const COLLECT_CHUNK_BYTES: usize = 1 << 20;

/// Client channels to peers, created on first use and reused (a tonic `Channel` multiplexes
/// calls over one HTTP/2 connection and reconnects by itself), with the batching queues of the
/// write path's calls to each peer.
pub struct PeerClients {
    peers: Mutex<HashMap<SocketAddr, Peer>>,
    timeout: Duration,
    limits: BatchLimits,
}

/// One peer: its channel and the batching queues of the writes forwarded to it and the replicas
/// sent to it.
///
/// A write whose primary is asked to leave the replication to this node
/// (`ForwardedWrite.sender_replicates`) and a replica share a queue and a call: the primary
/// answers such a write without calling any other node, so the call waits on nothing but the
/// peer's store. A write the primary is to replicate before answering (this node receives far
/// more writes than it applies for others; see `gateway::EntryLoad`) waits on the primary's
/// calls to other nodes, so it goes in a queue of its own (`waiting`): had it shared the queue,
/// a replica behind it would wait on those calls, and three nodes forwarding to each other in a
/// ring would wait on each other until the peer timeout.
#[derive(Clone)]
pub struct Peer {
    pub client: ClusterClient<PeerChannel>,
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
    pub fn new(timeout: Duration) -> Self {
        Self::with_limits(timeout, BatchLimits::default())
    }

    pub fn with_limits(timeout: Duration, limits: BatchLimits) -> Self {
        PeerClients {
            peers: Mutex::new(HashMap::new()),
            timeout,
            limits,
        }
    }

    /// The deadline of every call.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    pub fn client(&self, addr: SocketAddr) -> ClusterClient<PeerChannel> {
        self.peer(addr).client
    }

    pub fn peer(&self, addr: SocketAddr) -> Peer {
        let mut peers = self.peers.lock();
        peers
            .entry(addr)
            .or_insert_with(|| {
                let channel = Endpoint::from_shared(format!("http://{addr}"))
                    .expect("a socket address should form a valid URI")
                    .connect_timeout(self.timeout)
                    .tcp_nodelay(true)
                    .http2_keep_alive_interval(Duration::from_secs(10))
                    .keep_alive_timeout(self.timeout)
                    .initial_stream_window_size(PEER_STREAM_WINDOW)
                    .initial_connection_window_size(PEER_CONNECTION_WINDOW)
                    .max_frame_size(PEER_MAX_FRAME)
                    .connect_lazy();
                let client = ClusterClient::new(PeerChannel::new(channel))
                    .max_decoding_message_size(MAX_MESSAGE_BYTES)
                    .max_encoding_message_size(MAX_MESSAGE_BYTES);
                Peer {
                    writes: Batcher::new(
                        WriteTransport {
                            forward: ForwardTransport {
                                client: client.clone(),
                            },
                            replicate: ReplicateTransport {
                                client: client.clone(),
                            },
                        },
                        self.limits,
                    ),
                    waiting: Batcher::new(
                        ForwardTransport {
                            client: client.clone(),
                        },
                        self.limits,
                    ),
                    client,
                }
            })
            .clone()
    }
}

/// A status carried in a batch reply's item (`error_code`, `error`).
fn item_status(code: u32, message: String) -> Status {
    Status::new(Code::from(i32::try_from(code).unwrap_or(i32::MAX)), message)
}

fn copy_status(s: &Status) -> Status {
    Status::new(s.code(), s.message())
}

/// The `error_code`/`error` pair of a failed batch item.
pub fn status_fields(s: &Status) -> (u32, String) {
    // Code 0 means success on the wire; a failed item never carries it.
    let code = match s.code() {
        Code::Ok => Code::Unknown,
        c => c,
    };
    (code as u32, s.message().to_owned())
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

/// Sends forwarded writes to one peer (`Forward`).
pub struct ForwardTransport {
    client: ClusterClient<PeerChannel>,
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
        let n = items.len();
        metrics::histogram!(m::PEER_BATCH_ITEMS, "rpc" => "forward").record(n as f64);
        let started = Instant::now();
        let res = self
            .client
            .clone()
            .forward(request(
                pb::ForwardRequest {
                    writes: items,
                    replicas: Vec::new(),
                },
                remaining(deadline),
            ))
            .await;
        metrics::histogram!(m::PEER_RPC_DURATION_SECONDS, "rpc" => "forward")
            .record(started.elapsed().as_secs_f64());
        match res {
            Ok(reply) => forward_results(reply.into_inner().results),
            Err(status) => failed(n, &status),
        }
    }
}

/// The answers of a `Forward` call's writes.
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

/// `n` items failed with `status`.
fn failed<T>(n: usize, status: &Status) -> Vec<Result<T, Status>> {
    (0..n).map(|_| Err(copy_status(status))).collect()
}

/// `answers` when there is one per item of `n`; otherwise every item fails.
fn one_each<T>(answers: Vec<Result<T, Status>>, n: usize, what: &str) -> Vec<Result<T, Status>> {
    if answers.len() == n {
        return answers;
    }
    let status = Status::internal(format!("the peer answered {} of {n} {what}", answers.len()));
    failed(n, &status)
}

/// Sends group states to one replica (`ReplicateBatch`).
pub struct ReplicateTransport {
    client: ClusterClient<PeerChannel>,
}

impl Transport for ReplicateTransport {
    type Item = pb::ReplicateRequest;
    /// Whether the replica applied the state (false: it held a newer one).
    type Output = bool;

    async fn send(
        &self,
        items: Vec<pb::ReplicateRequest>,
        deadline: Instant,
    ) -> Vec<Result<bool, Status>> {
        let n = items.len();
        metrics::histogram!(m::PEER_BATCH_ITEMS, "rpc" => "replicate").record(n as f64);
        let started = Instant::now();
        let res = self
            .client
            .clone()
            .replicate_batch(request(
                pb::ReplicateBatchRequest { items },
                remaining(deadline),
            ))
            .await;
        metrics::histogram!(m::PEER_RPC_DURATION_SECONDS, "rpc" => "replicate_batch")
            .record(started.elapsed().as_secs_f64());
        match res {
            Ok(reply) => replicate_results(reply.into_inner().results),
            Err(status) => failed(n, &status),
        }
    }
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

/// Sends the writes and replicas queued for one peer in one `Forward` call
/// (`ForwardRequest.replicas`); replicas alone go in a `ReplicateBatch` call.
pub struct WriteTransport {
    forward: ForwardTransport,
    replicate: ReplicateTransport,
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
        let (nf, nr) = (forwards.len(), replicas.len());
        let (fw, rp) = if nr == 0 {
            (self.forward.send(forwards, deadline).await, Vec::new())
        } else if nf == 0 {
            (Vec::new(), self.replicate.send(replicas, deadline).await)
        } else {
            self.send_both(forwards, replicas, deadline).await
        };
        let mut fw = one_each(fw, nf, "forwarded writes").into_iter();
        let mut rp = one_each(rp, nr, "replicas").into_iter();
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

impl WriteTransport {
    /// Writes and replicas in one `Forward` call.
    async fn send_both(
        &self,
        writes: Vec<pb::ForwardedWrite>,
        replicas: Vec<pb::ReplicateRequest>,
        deadline: Instant,
    ) -> BothAnswers {
        let (nf, nr) = (writes.len(), replicas.len());
        metrics::histogram!(m::PEER_BATCH_ITEMS, "rpc" => "forward").record((nf + nr) as f64);
        let started = Instant::now();
        let res = self
            .forward
            .client
            .clone()
            .forward(request(
                pb::ForwardRequest { writes, replicas },
                remaining(deadline),
            ))
            .await;
        metrics::histogram!(m::PEER_RPC_DURATION_SECONDS, "rpc" => "forward")
            .record(started.elapsed().as_secs_f64());
        match res {
            Ok(reply) => {
                let reply = reply.into_inner();
                (
                    forward_results(reply.results),
                    replicate_results(reply.replica_results),
                )
            }
            Err(status) => (failed(nf, &status), failed(nr, &status)),
        }
    }
}

/// A request with the per-call deadline set (sent as `grpc-timeout` too).
pub fn request<T>(msg: T, timeout: Duration) -> tonic::Request<T> {
    let mut req = tonic::Request::new(msg);
    req.set_timeout(timeout);
    req
}

pub fn key_to_pb(key: &GroupKey) -> Vec<LabelPair> {
    key.labels()
        .iter()
        .map(|(n, v)| LabelPair {
            name: Some(n.clone()),
            value: Some(v.clone()),
        })
        .collect()
}

/// A grouping key from a peer: label names valid, `job` present and non-empty.
pub fn key_from_pb(pairs: Vec<LabelPair>, names: NameScheme) -> Result<GroupKey, String> {
    if pairs.is_empty() || pairs.len() > 1024 {
        return Err(format!("grouping key with {} labels", pairs.len()));
    }
    let key = GroupKey::new(
        pairs
            .into_iter()
            .map(|lp| (lp.name.unwrap_or_default(), lp.value.unwrap_or_default())),
    );
    if key.get("job").is_none_or(str::is_empty) {
        return Err("grouping key without a job label".into());
    }
    if let Some((n, _)) = key
        .labels()
        .iter()
        .find(|(n, _)| !is_valid_label_name(n, names))
    {
        return Err(format!("grouping key has an invalid label name {n:?}"));
    }
    Ok(key)
}

/// The families of a forwarded push (`StoredFamily` wire form), validated: each family's layout
/// (`StoredFamily::from_wire`), no series twice in a family, names sorted and unique, and none
/// of the push time families the gateway owns. The receiving node prepared them (grouping
/// labels, name and label rules, limits) before forwarding.
pub fn prepared_from_wire(
    raw: &[bytes::Bytes],
    names: NameScheme,
    replace_all: bool,
) -> Result<Vec<StoredFamily>, String> {
    use crate::store::prepare::{PUSH_FAILURE_TIME_METRIC, PUSH_TIME_METRIC};
    // The families of a PUT share a block; a POST's get one each (see `StoredFamily`).
    let mut block = BlockBuilder::default();
    let mut out: Vec<StoredFamily> = Vec::with_capacity(raw.len());
    for b in raw {
        StoredFamily::from_wire_into(&mut block, b, names)?;
        if !replace_all {
            out.extend(std::mem::take(&mut block).finish());
        }
    }
    if replace_all {
        out = block.finish();
    }
    for (i, f) in out.iter().enumerate() {
        if &*f.name == PUSH_TIME_METRIC || &*f.name == PUSH_FAILURE_TIME_METRIC {
            return Err(format!(
                "forwarded push carries the gateway's own {:?}",
                f.name
            ));
        }
        if i > 0 && out[i - 1].name >= f.name {
            return Err(format!(
                "forwarded families are not sorted by unique name at {:?}",
                f.name
            ));
        }
        if f.first_duplicate().is_some() {
            return Err(format!("forwarded family {:?} repeats a series", f.name));
        }
    }
    Ok(out)
}

pub fn group_to_bytes(g: &GroupSnapshot) -> Vec<u8> {
    let mut buf = Vec::with_capacity(group_wire_capacity(g));
    encode_group_wire(g, &mut buf);
    buf
}

/// Room for a group's wire form (families, plus key, times and tags): one allocation, no
/// regrowth.
fn group_wire_capacity(g: &GroupSnapshot) -> usize {
    let families: usize = g.families.iter().map(|(f, _)| f.wire_len() + 8).sum();
    let key: usize = g
        .key
        .labels()
        .iter()
        .map(|(n, v)| n.len() + v.len() + 8)
        .sum();
    families + key + 64 + 9 * g.families.len()
}

/// A group from a peer, validated like a persistence file's. Its families are decoded as slices
/// of `raw`; the one copy made is into the group's block.
pub fn group_from_bytes(raw: &bytes::Bytes, names: NameScheme) -> Result<GroupSnapshot, String> {
    let g = snapshot_proto::Group::decode(raw.clone())
        .map_err(|e| format!("undecodable group: {e}"))?;
    decode_group(0, g, names, None)
}

/// [`group_from_bytes`] for a copy rendered once and dropped (a merged scrape's): the families
/// stay where they are in `raw` instead of being copied out, and hold it alive meanwhile.
pub fn group_in_bytes(raw: &bytes::Bytes, names: NameScheme) -> Result<GroupSnapshot, String> {
    let g = snapshot_proto::Group::decode(raw.clone())
        .map_err(|e| format!("undecodable group: {e}"))?;
    decode_group(0, g, names, Some(raw))
}

/// `groups` and every tombstone of a node, in chunks of about `COLLECT_CHUNK_BYTES`, the
/// tombstones and the `deferred` groups' hashes and versions in the last one. The groups of a
/// chunk are encoded into one buffer and handed out as slices of it.
pub fn collect_chunks(
    groups: &[GroupSnapshot],
    tombstones: Vec<(GroupKey, u64)>,
    deferred: Vec<(u64, u64)>,
    text_only: bool,
) -> Vec<pb::CollectChunk> {
    let mut chunks = Vec::new();
    let mut current = pb::CollectChunk::default();
    let mut buf: Vec<u8> = Vec::new();
    let mut ends = Vec::new();
    for (i, g) in groups.iter().enumerate() {
        let room = group_wire_capacity(g);
        if buf.is_empty() {
            // A whole chunk at once when enough groups are left to fill one (growing to it
            // would copy it and fault its pages in twice), less for a small last chunk.
            let left = groups.len() - i;
            buf.reserve((COLLECT_CHUNK_BYTES + room).min(room.saturating_mul(left)));
        } else {
            buf.reserve(room);
        }
        if text_only {
            crate::store::persistence::encode_group_wire_text_only(g, &mut buf);
        } else {
            encode_group_wire(g, &mut buf);
        }
        ends.push(buf.len());
        current.group_keys.push(g.key.stable_hash());
        current.group_versions.push(g.version);
        if buf.len() >= COLLECT_CHUNK_BYTES {
            current.groups = split_at_ends(std::mem::take(&mut buf), &std::mem::take(&mut ends));
            chunks.push(std::mem::take(&mut current));
        }
    }
    current.groups = split_at_ends(buf, &ends);
    current.tombstones = tombstones
        .into_iter()
        .map(|(k, version)| pb::Tombstone {
            key: key_to_pb(&k),
            version,
        })
        .collect();
    (current.deferred_keys, current.deferred_versions) = deferred.into_iter().unzip();
    chunks.push(current);
    chunks
}

/// `buf` as consecutive slices ending at `ends` (ascending, the last one `buf.len()`), sharing
/// one allocation.
pub fn split_at_ends(buf: Vec<u8>, ends: &[usize]) -> Vec<bytes::Bytes> {
    let all = bytes::Bytes::from(buf);
    let mut start = 0;
    ends.iter()
        .map(|&end| {
            let part = all.slice(start..end);
            start = end;
            part
        })
        .collect()
}

/// What a peer sends for one collect call (`CollectRequest`), and what it leaves to others.
pub struct Selected {
    pub groups: Vec<GroupSnapshot>,
    /// Key hash and version of each group left to another peer the caller asks.
    pub deferred: Vec<(u64, u64)>,
}

/// Chooses what `store` sends for `req` (copying only that): never what the caller holds in the
/// same version; for a follow-up (`only_keys`) exactly the groups asked for; otherwise, when the
/// caller lists the peers it asks (`responders`), only the groups this node is to send by `ring`
/// (see [`sends_itself`]), the rest deferred. The groups are in no particular order.
pub fn select_for_collect(
    store: &crate::store::Store,
    req: &pb::CollectRequest,
    ring: &Ring,
    r: usize,
) -> Selected {
    type Fast = foldhash::fast::RandomState;
    // A malformed list (lengths differ) is ignored: everything is sent.
    let held: HashMap<u64, u64, Fast> = if req.held_keys.len() == req.held_versions.len() {
        req.held_keys
            .iter()
            .copied()
            .zip(req.held_versions.iter().copied())
            .collect()
    } else {
        HashMap::default()
    };
    let only: Option<std::collections::HashSet<u64, Fast>> =
        (!req.only_keys.is_empty()).then(|| req.only_keys.iter().copied().collect());
    // Only members of this node's ring can be owners by it: the list is cut to those once, so a
    // long list costs nothing per group.
    let responders: Vec<&str> = ring
        .members
        .iter()
        .map(|m| m.id.as_str())
        .filter(|id| req.responders.iter().any(|r| r == id))
        .collect();
    let mut deferred = Vec::new();
    let groups = store.snapshot_where(|key, version| {
        let h = key.stable_hash();
        if held.get(&h) == Some(&version) {
            return false;
        }
        match &only {
            Some(only) => only.contains(&h),
            None if !responders.is_empty() && !sends_itself(ring, h, r, &responders) => {
                deferred.push((h, version));
                false
            }
            None => true,
        }
    });
    Selected { groups, deferred }
}

/// Whether this node (`ring.self_id`) is the one to send the group with key hash `h` to a
/// collecting node that asks `responders`: the first of the group's `r` owners by `ring` that
/// is listed there, or this node when no listed peer owns the group (it may be the only copy).
fn sends_itself(ring: &Ring, h: u64, r: usize, responders: &[&str]) -> bool {
    ring.owners(h, r)
        .into_iter()
        .find(|o| responders.contains(&o.id.as_str()))
        .is_none_or(|o| o.id == ring.self_id)
}

/// The groups a collecting node is still missing after a round of collect calls: for each
/// answer's deferred groups (`(peer, [(key hash, version)])`), those that no answer delivered
/// and the caller does not hold in at least that version (`have`: key hash to newest version,
/// tombstones included). Returns, per peer, the key hashes to ask it for again.
pub fn missing_deferred<'a>(
    deferred: impl IntoIterator<Item = (&'a str, &'a [(u64, u64)])>,
    have: &HashMap<u64, u64, foldhash::fast::RandomState>,
) -> Vec<(&'a str, Vec<u64>)> {
    deferred
        .into_iter()
        .filter_map(|(peer, groups)| {
            let missing: Vec<u64> = groups
                .iter()
                .filter(|(h, v)| have.get(h).is_none_or(|got| got < v))
                .map(|(h, _)| *h)
                .collect();
            (!missing.is_empty()).then_some((peer, missing))
        })
        .collect()
}

/// Shared by the server and the gateway: what a collect returned.
pub struct Collected {
    pub groups: Vec<GroupSnapshot>,
    pub tombstones: Vec<(GroupKey, u64)>,
}

/// Decodes collect chunks for a merged view (on the blocking pool: this validates every
/// family). The groups' families are read in place (`group_in_bytes`): they keep the chunks'
/// buffers alive until the view is dropped, and are not copied.
pub fn decode_chunks(
    chunks: Vec<pb::CollectChunk>,
    names: NameScheme,
) -> Result<Collected, String> {
    let mut out = Collected {
        groups: Vec::new(),
        tombstones: Vec::new(),
    };
    for c in chunks {
        for g in c.groups {
            out.groups.push(group_in_bytes(&g, names)?);
        }
        for t in c.tombstones {
            out.tombstones.push((key_from_pb(t.key, names)?, t.version));
        }
    }
    Ok(out)
}

/// Moves out of `answers` (one list of chunks per peer) the groups that an earlier chunk, of
/// this or an earlier peer's answer, already carries in the same version: with replication,
/// every group the collecting node lacks comes from each of its other owners, and decoding one
/// copy is enough. Only chunks that list their groups' key hashes and versions are looked at.
/// Returns the copies moved out, one chunk per peer, for the case where a kept copy turns out
/// undecodable.
pub fn drop_repeated_groups(answers: &mut [Vec<pb::CollectChunk>]) -> Vec<pb::CollectChunk> {
    let mut seen: std::collections::HashSet<(u64, u64), foldhash::fast::RandomState> =
        Default::default();
    let mut spares = Vec::with_capacity(answers.len());
    for answer in answers.iter_mut() {
        let mut spare = pb::CollectChunk::default();
        for chunk in answer.iter_mut() {
            let n = chunk.groups.len();
            if chunk.group_keys.len() != n || chunk.group_versions.len() != n {
                continue;
            }
            let groups = std::mem::take(&mut chunk.groups);
            for (i, g) in groups.into_iter().enumerate() {
                if seen.insert((chunk.group_keys[i], chunk.group_versions[i])) {
                    chunk.groups.push(g);
                } else {
                    spare.groups.push(g);
                }
            }
            chunk.group_keys.clear();
            chunk.group_versions.clear();
        }
        spares.push(spare);
    }
    spares
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::prepare::{prepare_push, Validation};

    fn wire(body: &str) -> Vec<bytes::Bytes> {
        let fams = crate::exposition::parse_text(body.as_bytes(), NameScheme::Legacy).unwrap();
        let key = GroupKey::new([("job".to_string(), "j".to_string())]);
        let p = prepare_push(key, fams, true, &Validation::default()).unwrap();
        p.families
            .iter()
            .map(|f| {
                let mut out = Vec::new();
                f.to_wire(&mut out);
                bytes::Bytes::from(out)
            })
            .collect()
    }

    #[test]
    fn forwarded_families_share_a_block_for_a_put_and_not_for_a_post() {
        let raw = wire("a 1\nb{x=\"1\"} 2\nc 3\n");
        let put = prepared_from_wire(&raw, NameScheme::Legacy, true).unwrap();
        let post = prepared_from_wire(&raw, NameScheme::Legacy, false).unwrap();
        assert_eq!(put.len(), 3);
        assert_eq!(post.len(), 3);
        for (i, (f, g)) in put.iter().zip(&post).enumerate() {
            assert_eq!(f.name, g.name);
            assert_eq!(f.text(), g.text());
            assert_eq!(
                f.series().collect::<Vec<_>>(),
                g.series().collect::<Vec<_>>()
            );
            assert!(StoredFamily::same_block(f, &put[0]));
            assert_eq!(StoredFamily::same_block(g, &post[0]), i == 0);
        }
    }

    #[test]
    fn forwarded_families_are_refused_when_malformed() {
        let raw = wire("a 1\nb 2\n");
        for replace_all in [true, false] {
            let refuse = |raw: &[bytes::Bytes], want: &str| {
                let err = prepared_from_wire(raw, NameScheme::Legacy, replace_all).unwrap_err();
                assert!(err.contains(want), "{err} (wanted {want:?})");
            };
            refuse(
                &[raw[1].clone(), raw[0].clone()],
                "not sorted by unique name",
            );
            refuse(
                &[raw[0].clone(), raw[0].clone()],
                "not sorted by unique name",
            );
            let own = StoredFamily::gauge(
                crate::store::family::intern("push_time_seconds"),
                crate::store::family::intern(""),
                &[("job".to_string(), "j".to_string())],
                1.0,
            );
            let mut own_wire = Vec::new();
            own.to_wire(&mut own_wire);
            refuse(&[bytes::Bytes::from(own_wire)], "the gateway's own");
            let mut cut = raw[0].to_vec();
            cut.truncate(cut.len() - 3);
            refuse(&[bytes::Bytes::from(cut)], "");
        }
    }

    #[test]
    fn collect_chunks_decode_to_the_same_groups_read_in_place_and_replicas_are_copied() {
        use crate::store::{Store, StoreOptions};
        let store = Store::new(StoreOptions::default());
        // About 2 KB per group: 1,500 groups fill more than two chunks.
        let body: String = (0..40).map(|i| format!("m{{i=\"{i}\"}} {i}\n")).collect();
        for g in 0..1500 {
            let fams = crate::exposition::parse_text(body.as_bytes(), NameScheme::Legacy).unwrap();
            let key = GroupKey::new([("job".to_string(), format!("j{g}"))]);
            let p = prepare_push(key, fams, true, &Validation::default()).unwrap();
            store.push(p, 1.0).unwrap();
        }
        let groups = store.snapshot();
        let chunks = collect_chunks(&groups, Vec::new(), Vec::new(), false);
        assert!(chunks.len() > 2, "{} chunks", chunks.len());
        // As received: each chunk is decoded from a buffer of its own.
        let received: Vec<bytes::Bytes> = chunks
            .iter()
            .map(|c| bytes::Bytes::from(c.encode_to_vec()))
            .collect();
        let decoded = received
            .iter()
            .map(|b| pb::CollectChunk::decode(b.clone()).unwrap())
            .collect();
        let got = decode_chunks(decoded, NameScheme::Legacy).unwrap().groups;
        assert_eq!(got.len(), groups.len());
        for (a, b) in groups.iter().zip(&got) {
            assert_eq!(a.key, b.key);
            assert_eq!(a.version, b.version);
            assert_eq!(a.families.len(), b.families.len());
            for ((fa, ta), (fb, tb)) in a.families.iter().zip(&b.families) {
                assert_eq!(
                    (fa.text(), fa.proto_metrics(), ta),
                    (fb.text(), fb.proto_metrics(), tb)
                );
            }
        }
        // A merged view's groups are read where they lie in the received buffers, which they
        // hold until they are dropped, and nothing else does.
        for g in &got {
            for (f, _) in g.families.iter() {
                let inside = received
                    .iter()
                    .any(|b| b.as_ptr_range().contains(&f.text().as_ptr()));
                assert!(inside, "group {} was copied", g.key);
            }
        }
        assert!(received.iter().all(|b| !b.is_unique()));
        drop(got);
        assert!(received.iter().all(|b| b.is_unique()));
        // A group kept by a node (a replica) is copied out: the message is not held.
        let chunk = pb::CollectChunk::decode(received[0].clone()).unwrap();
        let kept = group_from_bytes(&chunk.groups[0], NameScheme::Legacy).unwrap();
        let in_place = group_in_bytes(&chunk.groups[0], NameScheme::Legacy).unwrap();
        drop(chunk);
        assert_eq!(kept.families.len(), in_place.families.len());
        for ((a, _), (b, _)) in kept.families.iter().zip(&in_place.families) {
            assert_eq!((a.text(), a.proto_metrics()), (b.text(), b.proto_metrics()));
        }
        drop(in_place);
        assert!(received[0].is_unique());
        assert_eq!(kept.key, groups[0].key);
    }

    fn ring_of(self_id: &str, ids: &[&str]) -> Ring {
        use super::super::membership::{Member, MemberState, NodeId};
        let members = ids
            .iter()
            .enumerate()
            .map(|(i, id)| Member {
                id: NodeId::from(*id),
                generation: 1,
                grpc_addr: SocketAddr::from(([127, 0, 0, 1], 1000 + i as u16)),
                state: MemberState::Active,
            })
            .collect();
        Ring::new(NodeId::from(self_id), members, 1)
    }

    fn store_of(groups: usize) -> crate::store::Store {
        let store = crate::store::Store::new(crate::store::StoreOptions::default());
        for g in 0..groups {
            let fams = crate::exposition::parse_text(b"m 1\n", NameScheme::Legacy).unwrap();
            let key = GroupKey::new([("job".to_string(), format!("j{g}"))]);
            let p = prepare_push(key, fams, true, &Validation::default()).unwrap();
            store.push(p, 1.0).unwrap();
        }
        store
    }

    fn hashes(groups: &[GroupSnapshot]) -> std::collections::BTreeSet<u64> {
        groups.iter().map(|g| g.key.stable_hash()).collect()
    }

    #[test]
    fn peers_asked_together_send_each_group_once_and_name_the_rest() {
        // Nodes b and c both hold every group (R = 3 of a, b, c); a asks both.
        let store = store_of(200);
        let all = hashes(&store.snapshot());
        let req = pb::CollectRequest {
            // "x" is no member: it changes nothing.
            responders: vec!["b".into(), "x".into(), "c".into()],
            ..Default::default()
        };
        let from = |id: &str| select_for_collect(&store, &req, &ring_of(id, &["a", "b", "c"]), 3);
        let (b, c) = (from("b"), from("c"));
        let (sent_b, sent_c) = (hashes(&b.groups), hashes(&c.groups));
        assert!(sent_b.is_disjoint(&sent_c));
        assert_eq!(&sent_b | &sent_c, all);
        // Both sent a fair share, and each named exactly what the other sent.
        assert!(
            sent_b.len() > 50 && sent_c.len() > 50,
            "{} / {}",
            sent_b.len(),
            sent_c.len()
        );
        let deferred = |s: &Selected| {
            s.deferred
                .iter()
                .map(|&(h, _)| h)
                .collect::<std::collections::BTreeSet<_>>()
        };
        assert_eq!(deferred(&b), sent_c);
        assert_eq!(deferred(&c), sent_b);
        let versions: HashMap<u64, u64> = store
            .snapshot()
            .iter()
            .map(|g| (g.key.stable_hash(), g.version))
            .collect();
        assert!(b.deferred.iter().all(|(h, v)| versions[h] == *v));
        // Asked alone, b is the first listed owner of every group it owns, and no listed peer
        // owns the others: it sends everything, defers nothing.
        let alone = pb::CollectRequest {
            responders: vec!["b".into()],
            ..Default::default()
        };
        let b_alone = select_for_collect(&store, &alone, &ring_of("b", &["a", "b", "c"]), 2);
        assert_eq!(hashes(&b_alone.groups), all);
        assert!(b_alone.deferred.is_empty());
    }

    #[test]
    fn a_follow_up_gets_exactly_the_groups_asked_for() {
        let store = store_of(50);
        let snapshot = store.snapshot();
        let want: Vec<u64> = snapshot
            .iter()
            .step_by(7)
            .map(|g| g.key.stable_hash())
            .collect();
        let req = pb::CollectRequest {
            only_keys: want.clone(),
            // Ignored for a follow-up.
            responders: vec!["b".into(), "c".into()],
            // Still honoured: the caller holds the first one in this version.
            held_keys: vec![want[0]],
            held_versions: vec![snapshot[0].version],
            ..Default::default()
        };
        let sel = select_for_collect(&store, &req, &ring_of("b", &["a", "b", "c"]), 3);
        assert!(sel.deferred.is_empty());
        assert_eq!(
            hashes(&sel.groups),
            want[1..]
                .iter()
                .copied()
                .collect::<std::collections::BTreeSet<_>>()
        );
    }

    #[test]
    fn deferred_groups_nobody_delivered_are_asked_for_again() {
        let have: HashMap<u64, u64, foldhash::fast::RandomState> =
            [(1, 10), (2, 20), (3, 30)].into_iter().collect();
        let b = [(1, 10), (2, 25), (4, 1)];
        let c = [(3, 30)];
        let missing = missing_deferred([("b", &b[..]), ("c", &c[..])], &have);
        // 1 was delivered in that version, 2 only in an older one, 4 not at all; c's is there.
        assert_eq!(missing, vec![("b", vec![2, 4])]);
    }
}
