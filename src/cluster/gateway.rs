//! `ClusterGateway`: the `Gateway` of a cluster node, and the gRPC service it answers peers with.
//!
//! Write path: the receiving node validates the push (`prepare_push` and a consistency check
//! against what it holds), then the group's primary (first in rendezvous order among the active
//! members) stamps a version from its hybrid logical clock, applies the write (running the
//! consistency check) and replicates the resulting group state to the next R-1 nodes in
//! rendezvous order, in parallel. An unreachable node is skipped for the next one in that order
//! (sloppy quorum); an unreachable primary is replaced by the next node, which acts as primary.
//! The client is answered once R nodes hold the write, 503 when fewer could.
//!
//! Read path: every live member is asked for the groups it holds (`Collect`) concurrently with a
//! deadline; the newest version of each group wins (tombstones included) and one exposition is
//! rendered from the result.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use tokio::sync::watch;
use tokio::task::JoinSet;
use tonic::{Request, Response, Status};

use super::membership::{Member, NodeId, Ring};
use super::rpc::{self, pb, Cluster, PeerClients};
use crate::exposition::names::NameScheme;
use crate::exposition::MetricFamily;
use crate::gateway::{unix_now, Gateway, LocalStats, PushRequest, INLINE_PREPARE_LIMIT};
use crate::store::merged::render_groups;
use crate::store::render::{Format, RenderStats};
use crate::store::{
    prepare_push, GroupKey, GroupSnapshot, PreparedPush, PushError, Store, StoredFamily, Validation,
};
use crate::telemetry::metrics as m;

/// Default deadline of the merged scrape's collect calls (well under Prometheus' default
/// 10 s scrape timeout).
pub const DEFAULT_COLLECT_DEADLINE: Duration = Duration::from_secs(3);

/// Hybrid logical clock: `unix millis << 16 | counter`, strictly increasing on this node and
/// bumped past every version it receives, so a later write to a group always gets a higher
/// version than any earlier one the node has seen.
#[derive(Debug, Default)]
pub struct HybridClock(AtomicU64);

impl HybridClock {
    pub fn now(&self) -> u64 {
        let physical = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| (d.as_millis() as u64) << 16)
            .unwrap_or(0);
        let prev = self
            .0
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |prev| {
                Some(physical.max(prev + 1))
            })
            .unwrap_or_else(|p| p);
        physical.max(prev + 1)
    }

    pub fn observe(&self, version: u64) {
        self.0.fetch_max(version, Ordering::AcqRel);
    }
}

/// A write as the primary applies it.
enum WriteOp {
    Push(PreparedPush),
    /// The receiving node refused the push: record the failure on the group, answer 400.
    Failure {
        key: GroupKey,
        message: String,
    },
    Delete(GroupKey),
}

impl WriteOp {
    fn key(&self) -> &GroupKey {
        match self {
            WriteOp::Push(p) => &p.key,
            WriteOp::Failure { key, .. } | WriteOp::Delete(key) => key,
        }
    }
}

/// What a write ended with, as the HTTP layer answers it.
#[derive(Debug, Clone)]
struct WriteAnswer {
    status: u16,
    message: String,
}

impl WriteAnswer {
    fn ok(status: u16) -> Self {
        WriteAnswer {
            status,
            message: String::new(),
        }
    }
    fn from_error(e: &PushError) -> Self {
        WriteAnswer {
            status: e.status(),
            message: e.to_string(),
        }
    }
    /// Back to the error the single node would have returned (same status, same message).
    fn into_result(self) -> Result<(), PushError> {
        match self.status {
            200 | 202 => Ok(()),
            503 => Err(PushError::Unavailable(self.message)),
            413 => Err(PushError::TooLarge(self.message)),
            _ => {
                let prefix = format!("{}: ", crate::store::error::INCONSISTENT_PREFIX);
                match self.message.strip_prefix(&prefix) {
                    Some(rest) => Err(PushError::Invalid(rest.to_owned())),
                    None => Err(PushError::LimitExceeded(self.message)),
                }
            }
        }
    }
}

/// State shared by the gateway (HTTP side) and the gRPC service (peer side).
pub struct ClusterCore {
    pub(super) store: Arc<Store>,
    validation: Validation,
    ring: watch::Receiver<Arc<Ring>>,
    pub(super) self_id: NodeId,
    pub(super) replication_factor: usize,
    pub(super) clients: PeerClients,
    pub(super) clock: HybridClock,
    collect_deadline: Duration,
    /// Groups held without owning them, as counted by the last reconciliation round.
    pub(super) hints: AtomicUsize,
    /// A stand-in replica is refused beyond this many hints (`--cluster.max-hints`).
    pub(super) max_hints: AtomicUsize,
}

impl ClusterCore {
    pub fn new(
        store: Arc<Store>,
        validation: Validation,
        ring: watch::Receiver<Arc<Ring>>,
        self_id: NodeId,
        replication_factor: usize,
        peer_timeout: Duration,
    ) -> Arc<Self> {
        let clock = HybridClock::default();
        clock.observe(store.max_version());
        Arc::new(ClusterCore {
            store,
            validation,
            ring,
            self_id,
            replication_factor,
            clients: PeerClients::new(peer_timeout),
            clock,
            collect_deadline: DEFAULT_COLLECT_DEADLINE
                .min(peer_timeout.max(Duration::from_millis(500)) * 2),
            hints: AtomicUsize::new(0),
            max_hints: AtomicUsize::new(usize::MAX),
        })
    }

    /// Sets the bound on hints (`--cluster.max-hints`).
    pub fn set_max_hints(&self, max: usize) {
        self.max_hints.store(max, Ordering::Relaxed);
    }

    pub(super) fn names(&self) -> NameScheme {
        self.validation.names
    }

    pub(super) fn ring(&self) -> Arc<Ring> {
        self.ring.borrow().clone()
    }

    /// Sends a write to the first reachable node in rendezvous order (the primary, or the next
    /// one acting for it) and returns its answer.
    async fn route(&self, op: WriteOp, mut unreachable: Vec<String>) -> WriteAnswer {
        let ring = self.ring();
        let order: Vec<Member> = ring
            .rendezvous_order(op.key().stable_hash())
            .into_iter()
            .cloned()
            .collect();
        let mut forward: Option<(pb::PushRequest, bool)> = None;
        for candidate in order {
            if unreachable.iter().any(|u| u == candidate.id.as_str()) {
                continue;
            }
            if candidate.id == self.self_id {
                return self.apply_as_primary(op, unreachable).await;
            }
            let (msg, is_delete) = forward
                .get_or_insert_with(|| (push_message(&op), matches!(op, WriteOp::Delete(_))));
            msg.unreachable = unreachable.clone();
            let deadline_unix_ms = forward_deadline_ms(self.clients.timeout());
            msg.deadline_unix_ms = deadline_unix_ms;
            let mut client = self.clients.client(candidate.grpc_addr);
            let started = Instant::now();
            let res = if *is_delete {
                let req = pb::DeleteRequest {
                    key: msg.key.clone(),
                    unreachable: unreachable.clone(),
                    deadline_unix_ms,
                };
                client
                    .delete(rpc::request(req, self.clients.timeout()))
                    .await
            } else {
                client
                    .push(rpc::request(msg.clone(), self.clients.timeout()))
                    .await
            };
            let rpc_name = if *is_delete { "delete" } else { "push" };
            metrics::histogram!(m::PEER_RPC_DURATION_SECONDS, "rpc" => rpc_name)
                .record(started.elapsed().as_secs_f64());
            match res {
                Ok(reply) => {
                    let reply = reply.into_inner();
                    self.clock.observe(reply.version);
                    metrics::counter!(m::FORWARDED_PUSHES_TOTAL, "result" => "success")
                        .increment(1);
                    return WriteAnswer {
                        status: u16::try_from(reply.status).unwrap_or(503),
                        message: reply.message,
                    }
                    .sanitized();
                }
                Err(status) => {
                    metrics::counter!(m::FORWARDED_PUSHES_TOTAL, "result" => "error").increment(1);
                    tracing::debug!(peer = %candidate.id, err = %status, "forwarding a write failed; trying the next node");
                    unreachable.push(candidate.id.as_str().to_owned());
                }
            }
        }
        WriteAnswer {
            status: 503,
            message: format!(
                "no cluster member could take the write ({} active, {} unreachable)",
                ring.active().count(),
                unreachable.len()
            ),
        }
    }

    /// Applies a write as the group's primary and replicates it; the answer waits for R holders.
    async fn apply_as_primary(&self, op: WriteOp, unreachable: Vec<String>) -> WriteAnswer {
        let now = unix_now();
        let key = op.key().clone();
        let clock = &self.clock;
        let (answer, replica) = match op {
            WriteOp::Push(p) => match self.store.push_versioned(p, now, || clock.now()) {
                Ok(_) => (
                    WriteAnswer::ok(200),
                    self.store.group(&key).map(Replica::Group),
                ),
                // A refused push still records the failure time on the group: replicate that,
                // but the answer is the refusal whatever happens to the replicas.
                Err(e) => {
                    let state = matches!(e, PushError::Invalid(_))
                        .then(|| self.store.group(&key).map(Replica::Group))
                        .flatten();
                    if let Some(state) = state {
                        self.replicate(&key, state, &unreachable).await;
                    }
                    return WriteAnswer::from_error(&e);
                }
            },
            WriteOp::Failure { key, message } => {
                if self
                    .store
                    .record_failure_versioned(&key, now, || clock.now())
                {
                    if let Some(g) = self.store.group(&key) {
                        self.replicate(&key, Replica::Group(g), &unreachable).await;
                    }
                }
                return WriteAnswer {
                    status: 400,
                    message,
                };
            }
            WriteOp::Delete(key) => {
                let version = clock.now();
                self.store.delete_versioned(&key, version);
                (WriteAnswer::ok(202), Some(Replica::Tombstone(version)))
            }
        };
        let Some(replica) = replica else {
            return answer;
        };
        let holders = 1 + self.replicate(&key, replica, &unreachable).await;
        if holders < self.replication_factor {
            return WriteAnswer {
                status: 503,
                message: format!(
                    "only {holders} of the {} cluster nodes the write needs (--cluster.replication-factor) could take it; retry",
                    self.replication_factor
                ),
            };
        }
        answer
    }

    /// Sends a group's state to R-1 other nodes in rendezvous order, in parallel, moving on to
    /// the next node for every one that fails. Returns how many took it.
    async fn replicate(&self, key: &GroupKey, replica: Replica, unreachable: &[String]) -> usize {
        let needed = self.replication_factor.saturating_sub(1);
        if needed == 0 {
            return 0;
        }
        let ring = self.ring();
        let mut candidates: std::collections::VecDeque<Member> = ring
            .rendezvous_order(key.stable_hash())
            .into_iter()
            .filter(|m| m.id != self.self_id && !unreachable.iter().any(|u| u == m.id.as_str()))
            .cloned()
            .collect();
        let msg = match replica {
            Replica::Group(g) => pb::ReplicateRequest {
                version: g.version,
                group: rpc::group_to_bytes(&g),
                tombstone_key: Vec::new(),
            },
            Replica::Tombstone(version) => pb::ReplicateRequest {
                version,
                group: Vec::new(),
                tombstone_key: rpc::key_to_pb(key),
            },
        };
        let mut inflight = JoinSet::new();
        let spawn = |inflight: &mut JoinSet<bool>, m: Member| {
            let mut client = self.clients.client(m.grpc_addr);
            let req = rpc::request(msg.clone(), self.clients.timeout());
            inflight.spawn(async move {
                let started = Instant::now();
                let ok = client.replicate(req).await.is_ok();
                metrics::histogram!(m::PEER_RPC_DURATION_SECONDS, "rpc" => "replicate")
                    .record(started.elapsed().as_secs_f64());
                if !ok {
                    tracing::debug!(peer = %m.id, "replication failed; trying the next node");
                }
                ok
            });
        };
        for _ in 0..needed {
            match candidates.pop_front() {
                Some(m) => spawn(&mut inflight, m),
                None => break,
            }
        }
        let mut acked = 0;
        while let Some(done) = inflight.join_next().await {
            if done.unwrap_or(false) {
                acked += 1;
                metrics::counter!(m::REPLICATED_WRITES_TOTAL, "result" => "success").increment(1);
            } else {
                metrics::counter!(m::REPLICATED_WRITES_TOTAL, "result" => "error").increment(1);
                if let Some(m) = candidates.pop_front() {
                    spawn(&mut inflight, m);
                }
            }
        }
        acked
    }

    /// Every group in the cluster: the newest version of each (a newer tombstone hides it).
    async fn merged_groups(&self, deadline: Duration) -> Vec<GroupSnapshot> {
        let started = Instant::now();
        let ring = self.ring();
        let mut calls = JoinSet::new();
        for member in ring.members.iter().filter(|m| m.id != self.self_id) {
            let mut client = self.clients.client(member.grpc_addr);
            let names = self.names();
            let id = member.id.clone();
            calls.spawn(async move {
                let call = async {
                    let mut stream = client
                        .collect(rpc::request(pb::CollectRequest {}, deadline))
                        .await?
                        .into_inner();
                    let mut chunks = Vec::new();
                    while let Some(c) = stream.message().await? {
                        chunks.push(c);
                    }
                    Ok::<_, Status>(chunks)
                };
                let res = match tokio::time::timeout(deadline, call).await {
                    Ok(Ok(chunks)) => tokio::task::spawn_blocking(move || rpc::decode_chunks(chunks, names))
                        .await
                        .map_err(|e| e.to_string())
                        .and_then(|r| r),
                    Ok(Err(status)) => Err(status.to_string()),
                    Err(_) => Err("deadline exceeded".to_owned()),
                };
                metrics::histogram!(m::PEER_RPC_DURATION_SECONDS, "rpc" => "collect")
                    .record(started.elapsed().as_secs_f64());
                if let Err(e) = &res {
                    tracing::debug!(peer = %id, err = %e, "collect failed; its groups come from replicas");
                }
                res.ok()
            });
        }
        let mut newest: HashMap<Arc<GroupKey>, (u64, Option<GroupSnapshot>)> = HashMap::new();
        let mut merge = |groups: Vec<GroupSnapshot>, tombstones: Vec<(GroupKey, u64)>| {
            for (k, v) in tombstones {
                let k = Arc::new(k);
                match newest.get(&k) {
                    Some((cur, _)) if *cur > v => {}
                    _ => {
                        newest.insert(k, (v, None));
                    }
                }
            }
            for g in groups {
                match newest.get(&g.key) {
                    Some((cur, _)) if *cur >= g.version => {}
                    _ => {
                        newest.insert(g.key.clone(), (g.version, Some(g)));
                    }
                }
            }
        };
        merge(self.store.snapshot(), self.store.tombstones());
        while let Some(done) = calls.join_next().await {
            if let Ok(Some(c)) = done {
                merge(c.groups, c.tombstones);
            }
        }
        let mut out: Vec<GroupSnapshot> = newest.into_values().filter_map(|(_, g)| g).collect();
        out.sort_by(|a, b| a.key.cmp(&b.key));
        metrics::histogram!(m::SCRAPE_MERGE_DURATION_SECONDS)
            .record(started.elapsed().as_secs_f64());
        out
    }
}

enum Replica {
    Group(GroupSnapshot),
    Tombstone(u64),
}

impl WriteAnswer {
    /// A peer's answer is used as an HTTP status: only the statuses a write can have pass.
    fn sanitized(self) -> Self {
        match self.status {
            200 | 202 | 400 | 413 | 503 => self,
            other => WriteAnswer {
                status: 503,
                message: format!("a cluster peer answered with unexpected status {other}"),
            },
        }
    }
}

fn push_message(op: &WriteOp) -> pb::PushRequest {
    match op {
        WriteOp::Push(p) => pb::PushRequest {
            key: rpc::key_to_pb(&p.key),
            families: p.families.iter().map(|f| rpc::family_to_bytes(f)).collect(),
            replace_all: p.replace_all,
            refused: String::new(),
            unreachable: Vec::new(),
            deadline_unix_ms: 0,
        },
        WriteOp::Failure { key, message } => pb::PushRequest {
            key: rpc::key_to_pb(key),
            families: Vec::new(),
            replace_all: false,
            refused: if message.is_empty() {
                "refused".into()
            } else {
                message.clone()
            },
            unreachable: Vec::new(),
            deadline_unix_ms: 0,
        },
        WriteOp::Delete(key) => pb::PushRequest {
            key: rpc::key_to_pb(key),
            ..Default::default()
        },
    }
}

/// Validation on the receiving node; pushes with timestamps are left to the store (which
/// records the failure like upstream).
fn prepare(
    key: GroupKey,
    families: Vec<MetricFamily>,
    replace_all: bool,
    v: &Validation,
) -> Result<PreparedPush, PushError> {
    prepare_push(key, families, replace_all, v)
}

/// The absolute deadline sent with a forwarded write: the sender's clock plus the call timeout.
fn forward_deadline_ms(timeout: Duration) -> u64 {
    ((unix_now() + timeout.as_secs_f64()) * 1000.0) as u64
}

/// A forwarded write that arrives after its sender stopped waiting is refused unapplied: the
/// sender has already given the write to another node (or failed it), so applying this copy
/// now could put an older value over newer acknowledged ones.
fn expired(deadline_unix_ms: u64) -> Result<(), Status> {
    let now_ms = (unix_now() * 1000.0) as u64;
    if deadline_unix_ms != 0 && now_ms > deadline_unix_ms {
        return Err(Status::deadline_exceeded(format!(
            "forwarded write arrived {} ms after its sender's deadline; not applied",
            now_ms - deadline_unix_ms
        )));
    }
    Ok(())
}

/// Runs `work` inline when the payload is small (a thread handoff per forwarded push or replica
/// costs more than the work itself), on the blocking pool when it is large enough to stall a
/// runtime thread.
async fn off_runtime_if_large<T: Send + 'static>(
    payload_bytes: usize,
    work: impl FnOnce() -> T + Send + 'static,
) -> Result<T, tokio::task::JoinError> {
    if payload_bytes > INLINE_PREPARE_LIMIT {
        tokio::task::spawn_blocking(work).await
    } else {
        Ok(work())
    }
}

/// The `Gateway` of a cluster node.
pub struct ClusterGateway {
    core: Arc<ClusterCore>,
}

impl ClusterGateway {
    pub fn new(core: Arc<ClusterCore>) -> Self {
        ClusterGateway { core }
    }
}

impl Gateway for ClusterGateway {
    async fn push(&self, req: PushRequest) -> Result<(), PushError> {
        let big = req.families.iter().map(|f| f.metric.len()).sum::<usize>() > 2048
            || req.families.len() > INLINE_PREPARE_LIMIT / 1024;
        let key = req.key.clone();
        let v = self.core.validation.clone();
        let store = self.core.store.clone();
        let work = move || {
            let p = prepare(req.key, req.families, req.replace_all, &v)?;
            // Refuse where it arrives when this node already holds a conflicting group.
            store.check_consistency(&p).map(|_| p)
        };
        let prepared = if big {
            tokio::task::spawn_blocking(work)
                .await
                .unwrap_or_else(|e| Err(PushError::Unavailable(format!("push worker failed: {e}"))))
        } else {
            work()
        };
        let op = match prepared {
            Ok(p) => WriteOp::Push(p),
            Err(e @ PushError::Invalid(_)) => {
                // Recorded on the group by its primary (push_failure_time_seconds), like upstream.
                let _ = self
                    .core
                    .route(
                        WriteOp::Failure {
                            key,
                            message: e.to_string(),
                        },
                        Vec::new(),
                    )
                    .await;
                return Err(e);
            }
            Err(e) => return Err(e),
        };
        self.core.route(op, Vec::new()).await.into_result()
    }

    async fn delete(&self, key: GroupKey) -> Result<(), PushError> {
        self.core
            .route(WriteOp::Delete(key), Vec::new())
            .await
            .into_result()
    }

    async fn wipe(&self) -> Result<(), PushError> {
        self.core.store.wipe();
        let ring = self.core.ring();
        let mut calls = JoinSet::new();
        for m in ring.members.iter().filter(|m| m.id != self.core.self_id) {
            let mut client = self.core.clients.client(m.grpc_addr);
            let req = rpc::request(pb::WipeRequest {}, self.core.clients.timeout());
            calls.spawn(async move { client.wipe(req).await.is_ok() });
        }
        let mut failed = 0;
        while let Some(done) = calls.join_next().await {
            if !done.unwrap_or(false) {
                failed += 1;
            }
        }
        if failed > 0 {
            return Err(PushError::Unavailable(format!(
                "wipe did not reach {failed} cluster member(s); retry"
            )));
        }
        Ok(())
    }

    async fn render(&self, format: Format, own: Vec<Arc<StoredFamily>>) -> (Vec<u8>, RenderStats) {
        let groups = self.core.merged_groups(self.core.collect_deadline).await;
        let reserved = self.core.store.options().reserved.clone();
        tokio::task::spawn_blocking(move || {
            let mut out = Vec::with_capacity(64 * 1024);
            let stats = render_groups(&groups, reserved, &own, format, &mut out);
            (out, stats)
        })
        .await
        .expect("render task should not panic")
    }

    async fn groups(&self) -> Vec<GroupSnapshot> {
        self.core.merged_groups(self.core.collect_deadline).await
    }

    fn local_stats(&self) -> LocalStats {
        LocalStats {
            groups: self.core.store.group_count(),
            series: self.core.store.series_count(),
            encoded_bytes: self.core.store.encoded_bytes(),
        }
    }

    fn validation(&self) -> &Validation {
        &self.core.validation
    }
}

/// The gRPC service peers call.
pub struct ClusterService {
    core: Arc<ClusterCore>,
}

impl ClusterService {
    pub fn new(core: Arc<ClusterCore>) -> Self {
        ClusterService { core }
    }
}

fn write_reply(a: WriteAnswer) -> Response<pb::WriteReply> {
    Response::new(pb::WriteReply {
        status: u32::from(a.status),
        message: a.message,
        version: 0,
    })
}

/// Keeps the list of nodes a peer found unreachable bounded.
fn bounded(mut unreachable: Vec<String>) -> Vec<String> {
    unreachable.truncate(64);
    unreachable
}

#[tonic::async_trait]
impl Cluster for ClusterService {
    async fn push(
        &self,
        request: Request<pb::PushRequest>,
    ) -> Result<Response<pb::WriteReply>, Status> {
        let req = request.into_inner();
        expired(req.deadline_unix_ms)?;
        let names = self.core.names();
        let key = rpc::key_from_pb(req.key, names).map_err(Status::invalid_argument)?;
        let unreachable = bounded(req.unreachable);
        if !req.refused.is_empty() {
            let op = WriteOp::Failure {
                key,
                message: req.refused,
            };
            return Ok(write_reply(
                self.core.apply_as_primary(op, unreachable).await,
            ));
        }
        let size: usize = req.families.iter().map(Vec::len).sum();
        let families = rpc::families_from_bytes(req.families).map_err(Status::invalid_argument)?;
        let v = self.core.validation.clone();
        let prepared =
            off_runtime_if_large(size, move || prepare(key, families, req.replace_all, &v))
                .await
                .map_err(|e| Status::internal(e.to_string()))?;
        let answer = match prepared {
            Ok(p) => {
                self.core
                    .apply_as_primary(WriteOp::Push(p), unreachable)
                    .await
            }
            Err(e) => WriteAnswer::from_error(&e),
        };
        Ok(write_reply(answer))
    }

    async fn delete(
        &self,
        request: Request<pb::DeleteRequest>,
    ) -> Result<Response<pb::WriteReply>, Status> {
        let req = request.into_inner();
        expired(req.deadline_unix_ms)?;
        let key = rpc::key_from_pb(req.key, self.core.names()).map_err(Status::invalid_argument)?;
        let answer = self
            .core
            .apply_as_primary(WriteOp::Delete(key), bounded(req.unreachable))
            .await;
        Ok(write_reply(answer))
    }

    async fn replicate(
        &self,
        request: Request<pb::ReplicateRequest>,
    ) -> Result<Response<pb::ReplicateReply>, Status> {
        let req = request.into_inner();
        let names = self.core.names();
        if self.core.hints.load(Ordering::Relaxed) >= self.core.max_hints.load(Ordering::Relaxed) {
            // Only a stand-in copy (this node is not among the group's owners) is refused.
            let raw = if req.tombstone_key.is_empty() {
                None
            } else {
                Some(req.tombstone_key.clone())
            };
            let key = match raw {
                Some(k) => rpc::key_from_pb(k, names).ok(),
                None => rpc::group_from_bytes(&req.group, names)
                    .ok()
                    .map(|g| (*g.key).clone()),
            };
            if let Some(key) = key {
                let ring = self.core.ring();
                let owned = ring
                    .owners(key.stable_hash(), self.core.replication_factor)
                    .iter()
                    .any(|m| m.id == self.core.self_id);
                if !owned {
                    return Err(Status::resource_exhausted(
                        "this node holds --cluster.max-hints groups for other owners already",
                    ));
                }
            }
        }
        self.core.clock.observe(req.version);
        let applied = if !req.tombstone_key.is_empty() {
            let key =
                rpc::key_from_pb(req.tombstone_key, names).map_err(Status::invalid_argument)?;
            self.core.store.delete_versioned(&key, req.version)
        } else {
            let store = self.core.store.clone();
            off_runtime_if_large(req.group.len(), move || {
                let g = rpc::group_from_bytes(&req.group, names)?;
                if g.version != req.version {
                    return Err("group version differs from the request's".to_owned());
                }
                Ok(store.apply_replica(g))
            })
            .await
            .map_err(|e| Status::internal(e.to_string()))?
            .map_err(Status::invalid_argument)?
        };
        Ok(Response::new(pb::ReplicateReply { applied }))
    }

    type CollectStream = tokio_stream::Iter<std::vec::IntoIter<Result<pb::CollectChunk, Status>>>;

    async fn collect(
        &self,
        _request: Request<pb::CollectRequest>,
    ) -> Result<Response<Self::CollectStream>, Status> {
        let store = self.core.store.clone();
        let chunks = tokio::task::spawn_blocking(move || {
            rpc::collect_chunks(&store.snapshot(), store.tombstones())
        })
        .await
        .map_err(|e| Status::internal(e.to_string()))?;
        Ok(Response::new(tokio_stream::iter(
            chunks.into_iter().map(Ok).collect::<Vec<_>>(),
        )))
    }

    async fn wipe(
        &self,
        _request: Request<pb::WipeRequest>,
    ) -> Result<Response<pb::WipeReply>, Status> {
        self.core.store.wipe();
        Ok(Response::new(pb::WipeReply {}))
    }

    async fn sync(
        &self,
        request: Request<pb::SyncRequest>,
    ) -> Result<Response<pb::SyncReply>, Status> {
        let req = request.into_inner();
        let core = self.core.clone();
        let reply = tokio::task::spawn_blocking(move || super::reconcile::answer_sync(&core, req))
            .await
            .map_err(|e| Status::internal(e.to_string()))?
            .map_err(Status::invalid_argument)?;
        Ok(Response::new(reply))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clock_is_monotonic_and_jumps_past_observed_versions() {
        let c = HybridClock::default();
        let a = c.now();
        let b = c.now();
        assert!(b > a);
        c.observe(b + 1_000_000);
        assert!(c.now() > b + 1_000_000);
    }

    #[test]
    fn forwarded_writes_past_their_deadline_are_refused() {
        assert!(expired(0).is_ok());
        assert!(expired(forward_deadline_ms(Duration::from_secs(5))).is_ok());
        let past = forward_deadline_ms(Duration::ZERO) - 1;
        let err = expired(past).unwrap_err();
        assert_eq!(err.code(), tonic::Code::DeadlineExceeded);
    }

    #[test]
    fn answers_round_trip_to_the_single_node_errors() {
        let e = PushError::Invalid("x".into());
        assert_eq!(WriteAnswer::from_error(&e).into_result(), Err(e));
        assert!(WriteAnswer::ok(202).into_result().is_ok());
        let odd = WriteAnswer {
            status: 999,
            message: String::new(),
        }
        .sanitized();
        assert_eq!(odd.status, 503);
    }
}
