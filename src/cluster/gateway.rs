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
use std::time::{Duration, Instant};

use futures_util::future::join_all;
use futures_util::stream::{FuturesUnordered, StreamExt};
use tokio::sync::watch;
use tokio::task::JoinSet;
use tonic::{Request, Response, Status};

use super::membership::{Member, MemberState, NodeId, Ring};
use super::rpc::{self, pb, Cluster, PeerClients};
use crate::exposition::names::NameScheme;
use crate::gateway::Gateway;
use crate::ingest::body::BodyFormat;
use crate::ingest::{off_runtime, PushRequest, INLINE_PREPARE_LIMIT};
use crate::scrape::merged::{render_groups, render_groups_chunked};
use crate::scrape::{stream_rendered, ScrapeStream, SCRAPE_CHUNK_BYTES};
use crate::store::render::MergedOrders;
use crate::store::render::{Format, RenderStats};
use crate::store::{
    prepare_push, GroupKey, GroupSnapshot, PreparedPush, PushError, ReservedNames, Store,
    StoredFamily, Validation,
};
use crate::telemetry::metrics as m;
use crate::telemetry::LocalStats;
use crate::time::unix_seconds;

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
        let physical = crate::time::unix_millis() << 16;
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
    /// A push not decoded yet: an entry-heavy node forwards the body as it came, for the
    /// primary to decode (`ForwardedWrite.body`).
    Raw(PushRequest),
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
            WriteOp::Raw(r) => &r.key,
            WriteOp::Failure { key, .. } | WriteOp::Delete(key) => key,
        }
    }
}

/// What a write ended with, as the HTTP layer answers it.
#[derive(Debug, Clone)]
struct WriteAnswer {
    status: u16,
    message: String,
    /// Which refusal an error is (`WriteReply.refusal`; unspecified: told apart by status and
    /// message).
    refusal: pb::Refusal,
}

impl WriteAnswer {
    fn ok(status: u16) -> Self {
        WriteAnswer {
            status,
            message: String::new(),
            refusal: pb::Refusal::Unspecified,
        }
    }
    fn unavailable(message: String) -> Self {
        WriteAnswer {
            status: 503,
            message,
            refusal: pb::Refusal::Unavailable,
        }
    }
    fn from_error(e: &PushError) -> Self {
        let refusal = match e {
            PushError::Invalid(_) => pb::Refusal::Invalid,
            PushError::Malformed(_) => pb::Refusal::Malformed,
            PushError::TooLarge(_) => pb::Refusal::TooLarge,
            PushError::LimitExceeded(_) => pb::Refusal::Limit,
            PushError::Unavailable(_) => pb::Refusal::Unavailable,
            PushError::BadBody(_) => pb::Refusal::BadBody,
        };
        WriteAnswer {
            status: e.status(),
            message: e.to_string(),
            refusal,
        }
    }
    /// Back to the error the single node would have returned (same status, same message).
    fn into_result(self) -> Result<(), PushError> {
        if matches!(self.status, 200 | 202) {
            return Ok(());
        }
        let prefix = format!("{}: ", crate::store::error::INCONSISTENT_PREFIX);
        let message = self.message;
        let unprefixed = |m: String| match m.strip_prefix(&prefix) {
            Some(rest) => rest.to_owned(),
            None => m,
        };
        let named = match self.refusal {
            pb::Refusal::Unspecified => None,
            pb::Refusal::Invalid => Some(PushError::Invalid(unprefixed(message.clone()))),
            pb::Refusal::Malformed => Some(PushError::Malformed(unprefixed(message.clone()))),
            pb::Refusal::TooLarge => Some(PushError::TooLarge(message.clone())),
            pb::Refusal::Limit => Some(PushError::LimitExceeded(message.clone())),
            pb::Refusal::Unavailable => Some(PushError::Unavailable(message.clone())),
            pb::Refusal::BadBody => Some(PushError::BadBody(message.clone())),
        };
        // A refusal that does not go with the status is not trusted.
        if let Some(e) = named.filter(|e| e.status() == self.status) {
            return Err(e);
        }
        // Nodes before 2026-12-01 name no refusal.
        match self.status {
            503 => Err(PushError::Unavailable(message)),
            413 => Err(PushError::TooLarge(message)),
            _ => match message.strip_prefix(&prefix) {
                Some(rest) => Err(PushError::Invalid(rest.to_owned())),
                None => Err(PushError::LimitExceeded(message)),
            },
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
    /// The member orders of the last merged render's families, reused by the next one where
    /// a family's members are unchanged.
    merged_orders: Arc<MergedOrders>,
    /// Whether this node is mostly an entry point (who sends a forwarded write's replicas).
    entry: EntryLoad,
}

/// Who sends the replicas of a write this node forwards. By default this node does (the primary
/// answers at once; `ForwardedWrite.sender_replicates`): then no forward waits on another call,
/// and forwards and replicas to a peer share calls, which behind a load balancer (every node
/// receiving writes and forwarding to the others) saves calls. But when this node receives far
/// more writes from clients than it applies for other nodes (most of the load enters through it,
/// e.g. the one node clients are configured with), it is the busiest node and the replicas are
/// better sent by the primaries, as nodes did before 2026-12-01: such writes travel in a queue of
/// their own (`rpc::Peer`). Decided once a second from the last second's counts.
#[derive(Default)]
struct EntryLoad {
    window_start_ms: AtomicU64,
    /// Writes from clients this node routed in the current window.
    received: AtomicU64,
    /// Writes other nodes forwarded to this node in the current window.
    served: AtomicU64,
    /// The last full window was entry-heavy.
    heavy: std::sync::atomic::AtomicBool,
}

impl EntryLoad {
    /// Fewer writes than this a second never make a node entry-heavy (at low load it does not
    /// matter which node sends the replicas).
    const MIN_WRITES: u64 = 64;

    /// Counts a write from a client; whether the primary is to replicate it.
    fn received(&self, now_ms: u64) -> bool {
        self.received.fetch_add(1, Ordering::Relaxed);
        self.roll(now_ms);
        self.heavy.load(Ordering::Relaxed)
    }

    /// Counts a write forwarded to this node.
    fn served(&self) {
        self.served.fetch_add(1, Ordering::Relaxed);
    }

    /// Starts a new window once the current one is a second old, deciding from its counts. A
    /// scrape of the node's metrics rolls it too (`ClusterGateway::local_stats`), so a node that
    /// stopped receiving writes is no longer entry-heavy; the window then spans the time since
    /// the last roll, and the writes are counted per second of it.
    fn roll(&self, now_ms: u64) {
        let start = self.window_start_ms.load(Ordering::Relaxed);
        let elapsed = now_ms.saturating_sub(start);
        if elapsed < 1000
            || self
                .window_start_ms
                .compare_exchange(start, now_ms, Ordering::Relaxed, Ordering::Relaxed)
                .is_err()
        {
            return;
        }
        let received = self.received.swap(0, Ordering::Relaxed);
        let served = self.served.swap(0, Ordering::Relaxed);
        // Behind a balancer a node applies about two writes for others for every three it
        // receives (R = 2, three nodes); an entry point for all the load applies none.
        let heavy = received.saturating_mul(1000) >= Self::MIN_WRITES.saturating_mul(elapsed)
            && served.saturating_mul(4) < received;
        if self.heavy.swap(heavy, Ordering::Relaxed) != heavy {
            metrics::gauge!(m::ENTRY_HEAVY).set(if heavy { 1.0 } else { 0.0 });
        }
    }
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
        let core = Arc::new(ClusterCore {
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
            merged_orders: Arc::default(),
            entry: EntryLoad::default(),
        });
        metrics::gauge!(m::ENTRY_HEAVY).set(0.0);
        core
    }

    /// Sets the bound on hints (`--cluster.max-hints`).
    pub fn set_max_hints(&self, max: usize) {
        self.max_hints.store(max, Ordering::Relaxed);
    }

    pub(super) fn names(&self) -> NameScheme {
        self.validation.names
    }

    /// This node's part of a cluster-wide wipe issued at `version`; later writes stamped here
    /// are newer than the watermark.
    pub(super) fn wipe_local(&self, version: u64) {
        let watermark = self.store.wipe_versioned(version);
        self.clock.observe(watermark);
    }

    pub(super) fn ring(&self) -> Arc<Ring> {
        self.ring.borrow().clone()
    }

    /// Sends a write to the first reachable node in rendezvous order (the primary, or the next
    /// one acting for it) and returns its answer.
    async fn route(&self, mut op: WriteOp, mut unreachable: Vec<String>) -> WriteAnswer {
        let ring = self.ring();
        let order: Vec<Member> = ring
            .rendezvous_order(op.key().stable_hash())
            .into_iter()
            .cloned()
            .collect();
        let primary_replicates = self.entry.received(crate::time::unix_millis());
        let mut forward: Option<(pb::ForwardedWrite, usize)> = None;
        for candidate in order {
            if unreachable.iter().any(|u| u == candidate.id.as_str()) {
                continue;
            }
            let here = candidate.id == self.self_id;
            // A body not decoded yet goes only to a primary that decodes it, from an
            // entry-heavy node; otherwise it is decoded here (and the message built anew).
            op = match op {
                WriteOp::Raw(req) if here || !(primary_replicates && candidate.raw_push) => {
                    forward = None;
                    match self.resolve(req, &unreachable).await {
                        Ok(p) => WriteOp::Push(p),
                        Err(refused) => return refused,
                    }
                }
                other => other,
            };
            if here {
                return self.apply_as_primary(op, unreachable, None).await;
            }
            let (msg, size) = forward.get_or_insert_with(|| {
                let mut m = forward_message(&op, self.self_id.as_str());
                m.0.sender_replicates = !primary_replicates;
                m
            });
            msg.unreachable = unreachable.clone();
            let timeout = self.clients.timeout();
            msg.deadline_unix_ms = forward_deadline_ms(timeout);
            let peer = self.clients.peer(candidate.grpc_addr);
            let res = peer
                .forward(msg.clone(), *size, Instant::now() + timeout)
                .await;
            match res {
                Ok(out) => {
                    self.clock.observe(out.reply.version);
                    metrics::counter!(m::FORWARDED_PUSHES_TOTAL, "result" => "success")
                        .increment(1);
                    let refusal = out.reply.refusal();
                    let answer = WriteAnswer {
                        status: u16::try_from(out.reply.status).unwrap_or(503),
                        message: out.reply.message,
                        refusal,
                    }
                    .sanitized();
                    if out.left_to_sender {
                        return self
                            .replicate_for(
                                &op,
                                candidate.id.as_str(),
                                out.replica,
                                out.own,
                                answer,
                                &unreachable,
                            )
                            .await;
                    }
                    // A primary of an earlier release replicated the write itself.
                    return self.hold_returned(&op, out.replica, out.own, answer).await;
                }
                Err(status) => {
                    metrics::counter!(m::FORWARDED_PUSHES_TOTAL, "result" => "error").increment(1);
                    tracing::debug!(peer = %candidate.id, err = %status, "forwarding a write failed; trying the next node");
                    unreachable.push(candidate.id.as_str().to_owned());
                }
            }
        }
        WriteAnswer::unavailable(format!(
            "no cluster member could take the write ({} active, {} unreachable)",
            ring.active().count(),
            unreachable.len()
        ))
    }

    /// Decodes and checks a push on this node, where it arrived or as the node to apply it, so
    /// bad input is refused before any other node is called (the check is against the groups
    /// this node holds). A push refused as `Invalid` is recorded on its group by its primary,
    /// like upstream, and answered 400 whatever becomes of that record.
    async fn resolve(
        &self,
        req: PushRequest,
        unreachable: &[String],
    ) -> Result<PreparedPush, WriteAnswer> {
        let large = req.is_large();
        let v = self.validation.clone();
        let store = self.store.clone();
        let op = off_runtime(large, move || decoded(req, &v, Some(&store)))
            .await
            .map_err(|e| WriteAnswer::from_error(&e))?;
        let failure = match op {
            WriteOp::Push(p) => return Ok(p),
            failure => failure,
        };
        let message = match &failure {
            WriteOp::Failure { message, .. } => message.clone(),
            // `decoded` makes pushes and failures only.
            _ => String::new(),
        };
        let _ = Box::pin(self.route(failure, unreachable.to_vec())).await;
        Err(WriteAnswer {
            status: 400,
            message,
            refusal: pb::Refusal::Invalid,
        })
    }

    /// Applies a write as the group's primary and replicates it; the answer waits for R holders.
    /// With `trip`, a replica meant for the node that forwarded the write is left in it, to
    /// travel back with the answer.
    async fn apply_as_primary(
        &self,
        op: WriteOp,
        unreachable: Vec<String>,
        trip: Option<&mut ReturnTrip>,
    ) -> WriteAnswer {
        let key = op.key().clone();
        let applied = self.apply_here(op);
        let Some(replica) = applied.replica else {
            return applied.answer;
        };
        let holders = 1 + self
            .replicate(&key, replica, self.self_id.as_str(), &unreachable, trip)
            .await;
        self.quorum(applied.answer, holders)
    }

    /// Applies a write as the group's primary, stamping its version; what is left is to copy
    /// the resulting state to the other holders.
    fn apply_here(&self, op: WriteOp) -> Applied {
        let now = unix_seconds();
        let clock = &self.clock;
        match op {
            WriteOp::Push(p) => {
                let key = p.key.clone();
                let put = p.replace_all;
                match self.store.push_versioned(p, now, || clock.now()) {
                    Ok(_) => Applied {
                        answer: WriteAnswer::ok(200),
                        replica: self.store.group(&key).map(|g| {
                            if put {
                                Replica::Put(g)
                            } else {
                                Replica::Group(g)
                            }
                        }),
                    },
                    // A refused push still records the failure time on the group: that is
                    // copied too, but the answer is the refusal whatever happens to the copies.
                    Err(e) => Applied {
                        answer: WriteAnswer::from_error(&e),
                        replica: matches!(e, PushError::Invalid(_))
                            .then(|| self.store.group(&key).map(Replica::Group))
                            .flatten(),
                    },
                }
            }
            // Not reached from `route` or `forwarded`, which decode a body before.
            WriteOp::Raw(req) => match decoded(req, &self.validation, None) {
                Ok(op) => self.apply_here(op),
                Err(e) => Applied {
                    answer: WriteAnswer::from_error(&e),
                    replica: None,
                },
            },
            WriteOp::Failure { key, message } => {
                let recorded = self
                    .store
                    .record_failure_versioned(&key, now, || clock.now());
                Applied {
                    // The refusal is told by its message (see into_result).
                    answer: WriteAnswer {
                        status: 400,
                        message,
                        refusal: pb::Refusal::Unspecified,
                    },
                    replica: recorded
                        .then(|| self.store.group(&key).map(Replica::Group))
                        .flatten(),
                }
            }
            WriteOp::Delete(key) => {
                let version = clock.now();
                self.store.delete_versioned(&key, version);
                Applied {
                    answer: WriteAnswer::ok(202),
                    replica: Some(Replica::Tombstone(version)),
                }
            }
        }
    }

    /// The answer to a write that `holders` nodes took: a success needs R of them (a refusal
    /// stands whatever happened to the copies of the failure time it recorded).
    fn quorum(&self, answer: WriteAnswer, holders: usize) -> WriteAnswer {
        if !matches!(answer.status, 200 | 202) || holders >= self.replication_factor {
            return answer;
        }
        WriteAnswer::unavailable(format!(
            "only {holders} of the {} cluster nodes the write needs (--cluster.replication-factor) could take it; retry",
            self.replication_factor
        ))
    }

    /// Replicates a write this node forwarded and `primary` applied, leaving the replication
    /// to this node (`ForwardedWrite.sender_replicates`): the state it returned goes to the next
    /// R-1 nodes after it in rendezvous order (this node holds its own copy when it is one of
    /// them), and the primary's answer stands once R nodes hold the write.
    async fn replicate_for(
        &self,
        op: &WriteOp,
        primary: &str,
        state: Option<pb::ReplicateRequest>,
        stamp: Option<pb::OwnReplica>,
        answer: WriteAnswer,
        unreachable: &[String],
    ) -> WriteAnswer {
        let holders = match returned_replica(op, state, stamp) {
            Ok(Some(replica)) => {
                1 + self
                    .replicate(op.key(), replica, primary, unreachable, None)
                    .await
            }
            // Nothing this node can copy (a stamp for a write that is not a PUT).
            Ok(None) | Err(_) => 1,
        };
        self.quorum(answer, holders)
    }

    /// Sends a group's state to the R-1 nodes after `applied_by` (the node that applied the
    /// write: this one as primary, or the primary a forwarded write went to) in rendezvous
    /// order, in parallel, moving on to the next node for every one that fails. Returns how many
    /// took it. This node, when it comes up among them, holds its copy itself. A node that is
    /// `trip`'s sender gets it in the answer to its forward instead, and counts as having taken
    /// it.
    async fn replicate(
        &self,
        key: &GroupKey,
        replica: Replica,
        applied_by: &str,
        unreachable: &[String],
        trip: Option<&mut ReturnTrip>,
    ) -> usize {
        let needed = self.replication_factor.saturating_sub(1);
        if needed == 0 {
            return 0;
        }
        let ring = self.ring();
        let usable = |m: &&Member| {
            m.id.as_str() != applied_by && !unreachable.iter().any(|u| u == m.id.as_str())
        };
        let mut candidates: std::collections::VecDeque<Member> = ring
            .rendezvous_order(key.stable_hash())
            .into_iter()
            .filter(usable)
            .cloned()
            .collect();
        // Members still joining come last, as stand-ins: at a cold start every node sees the
        // others joining for a gossip round, and a copy there (a hint, handed to the owners by
        // the reconciler) beats a write short of R holders.
        candidates.extend(
            ring.members
                .iter()
                .filter(|m| m.state == MemberState::Joining)
                .filter(usable)
                .cloned(),
        );
        // The stamp of a PUT, for a sender that holds its own prepared families as its replica.
        let own = match &replica {
            Replica::Put(g) => Some(stamp_of(g)),
            _ => None,
        };
        let mut acked = 0;
        // Only an owner: a stand-in may refuse the copy (--cluster.max-hints), and the primary
        // would then have to try the next node, which it cannot once the answer has left.
        let trip = trip.filter(|t| {
            ring.owners(key.stable_hash(), self.replication_factor)
                .iter()
                .any(|m| m.id.as_str() == t.sender)
        });
        let mut trip_wants_state = None;
        if let Some(t) = trip {
            let sender_at = candidates
                .iter()
                .take(needed)
                .position(|m| m.id.as_str() == t.sender);
            if let Some(i) = sender_at {
                candidates.remove(i);
                acked += 1;
                match &own {
                    Some(o) if t.own_ok => t.own = Some(*o),
                    _ => trip_wants_state = Some(t),
                }
            }
        }
        // This node is one of the holders (it forwarded the write and the primary left the
        // replication to it): it holds its copy without a call, and without encoding it.
        let here = candidates
            .iter()
            .take(needed)
            .position(|m| m.id == self.self_id);
        if let Some(i) = here {
            candidates.remove(i);
            match self.hold_here(key, &replica).await {
                Ok(()) => {
                    acked += 1;
                    metrics::counter!(m::REPLICATED_WRITES_TOTAL, "result" => "success")
                        .increment(1);
                }
                Err(why) => {
                    tracing::debug!(err = %why, "holding a replica here failed; trying the next node");
                    metrics::counter!(m::REPLICATED_WRITES_TOTAL, "result" => "error").increment(1);
                }
            }
        }
        if acked >= needed && trip_wants_state.is_none() {
            // The sender (or this node) was the only other holder needed and holds its own
            // copy: the group state is not encoded at all.
            return acked;
        }
        let msg = replica_message(key, replica);
        if let Some(t) = trip_wants_state {
            t.replica = Some(msg.clone());
        }
        let size = msg.group.len() + 64;
        let timeout = self.clients.timeout();
        let started = Instant::now();
        let deadline = started + timeout;
        let send = |m: Member| {
            // This node itself, as a stand-in further down the order.
            let peer = (m.id != self.self_id).then(|| self.clients.peer(m.grpc_addr));
            let msg = msg.clone();
            async move {
                let ok = match peer {
                    Some(peer) => peer.replicate(msg, size, deadline).await.is_ok(),
                    None => self.take_replica(msg).await.is_ok(),
                };
                if !ok {
                    tracing::debug!(peer = %m.id, "replication failed; trying the next node");
                }
                ok
            }
        };
        let mut inflight = FuturesUnordered::new();
        for _ in acked..needed {
            match candidates.pop_front() {
                Some(m) => inflight.push(send(m)),
                None => break,
            }
        }
        // A node cut off by the network usually drops packets rather than refusing them: its
        // call fails only at the deadline, too late to try the next node. So a replica still
        // missing after half the timeout is also asked of the next candidate, and the first
        // R-1 answers count (a late copy on a stand-in is handed back like any hint).
        let hedge = tokio::time::sleep_until((started + timeout / 2).into());
        tokio::pin!(hedge);
        let mut hedged = false;
        loop {
            tokio::select! {
                next = inflight.next() => match next {
                    None => break,
                    Some(true) => {
                        acked += 1;
                        metrics::counter!(m::REPLICATED_WRITES_TOTAL, "result" => "success")
                            .increment(1);
                        if acked >= needed {
                            break;
                        }
                    }
                    Some(false) => {
                        metrics::counter!(m::REPLICATED_WRITES_TOTAL, "result" => "error")
                            .increment(1);
                        if let Some(m) = candidates.pop_front() {
                            inflight.push(send(m));
                        }
                    }
                },
                () = &mut hedge, if !hedged => {
                    hedged = true;
                    for _ in acked..needed {
                        let Some(m) = candidates.pop_front() else { break };
                        tracing::debug!(peer = %m.id, "a replica is late; asking the next node too");
                        metrics::counter!(m::REPLICATED_WRITES_TOTAL, "result" => "hedged")
                            .increment(1);
                        inflight.push(send(m));
                    }
                }
            }
        }
        acked
    }

    /// A group state (or tombstone) from the primary, applied when newer than what is held;
    /// false when a newer one is held. A stand-in copy beyond `--cluster.max-hints` is refused.
    pub(super) async fn take_replica(&self, req: pb::ReplicateRequest) -> Result<bool, Status> {
        let names = self.names();
        if self.hints.load(Ordering::Relaxed) >= self.max_hints.load(Ordering::Relaxed) {
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
                let ring = self.ring();
                let owned = ring
                    .owners(key.stable_hash(), self.replication_factor)
                    .iter()
                    .any(|m| m.id == self.self_id);
                if !owned {
                    return Err(Status::resource_exhausted(
                        "this node holds --cluster.max-hints groups for other owners already",
                    ));
                }
            }
        }
        self.clock.observe(req.version);
        let applied = if !req.tombstone_key.is_empty() {
            let key =
                rpc::key_from_pb(req.tombstone_key, names).map_err(Status::invalid_argument)?;
            self.store.delete_versioned(&key, req.version)
        } else {
            let store = self.store.clone();
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
        Ok(applied)
    }

    /// Holds a copy of a write another node applied, as one of its replicas.
    async fn hold_here(&self, key: &GroupKey, replica: &Replica) -> Result<(), String> {
        match replica {
            Replica::Group(g) | Replica::Put(g) => {
                self.clock.observe(g.version);
                self.store.apply_replica(g.clone());
                Ok(())
            }
            Replica::Tombstone(version) => {
                self.clock.observe(*version);
                self.store.delete_versioned(key, *version);
                Ok(())
            }
            Replica::Encoded(state) => self
                .take_replica(state.clone())
                .await
                .map(|_| ())
                .map_err(|status| status.message().to_owned()),
        }
    }

    /// Holds the copy a primary of an earlier release returned with its answer to a write this
    /// node forwarded (the group state, or a PUT's stamp for this node's own prepared
    /// families). The primary counted this node as a holder, so a copy this node cannot hold
    /// turns a success into 503 (the write stays on the nodes that took it, as with any 503).
    async fn hold_returned(
        &self,
        op: &WriteOp,
        state: Option<pb::ReplicateRequest>,
        stamp: Option<pb::OwnReplica>,
        answer: WriteAnswer,
    ) -> WriteAnswer {
        if stamp.is_some() && !matches!(answer.status, 200 | 202) {
            return answer;
        }
        let held = match returned_replica(op, state, stamp) {
            Ok(None) => return answer,
            Ok(Some(replica)) => self.hold_here(op.key(), &replica).await,
            Err(why) => Err(why),
        };
        replica_outcome(held, answer)
    }

    /// Every group in the cluster: the newest version of each (a newer tombstone hides it).
    /// The merged view to render in `format` (a text scrape collects no protobuf encodings),
    /// with the reserved names the render needs.
    async fn merged_view(
        &self,
        format: Format,
        deadline: Duration,
    ) -> (Vec<GroupSnapshot>, ReservedNames) {
        let text_only = matches!(format, Format::Text);
        let groups = self.merged_groups(deadline, text_only).await;
        (groups, self.store.options().reserved.clone())
    }

    /// The deadline of a scrape's first round of collect calls when its client waits `timeout`:
    /// the configured one, shortened to 40% of the client's wait, so that a second round (at
    /// most half as long) and the render still fit in it.
    fn scrape_deadline(&self, timeout: Option<Duration>) -> Duration {
        match timeout {
            Some(t) => self.collect_deadline.min(t.mul_f64(0.4)),
            None => self.collect_deadline,
        }
    }

    /// `text_only`: the caller renders the text format and nothing else (peers leave the
    /// protobuf encodings out; the groups returned must not be used for anything else).
    async fn merged_groups(&self, deadline: Duration, text_only: bool) -> Vec<GroupSnapshot> {
        let started = Instant::now();
        let ring = self.ring();
        // One snapshot serves both the list of what this node holds (peers leave those groups
        // out) and the merge below, so a group cannot drop out of the view in between. In no
        // particular order: the view is sorted once, at the end.
        let local = self.store.snapshot_where(|_, _| true);
        let peers: Vec<&Member> = ring
            .members
            .iter()
            .filter(|m| m.id != self.self_id)
            .collect();
        let held = pb::CollectRequest {
            held_keys: local.iter().map(|g| g.key.stable_hash()).collect(),
            held_versions: local.iter().map(|g| g.version).collect(),
            text_only,
            // A group this node lacks is held by several peers: each sends the groups it comes
            // first for among them and names the others (deferred).
            responders: peers.iter().map(|m| m.id.to_string()).collect(),
            only_keys: Vec::new(),
        };
        let calls = peers
            .iter()
            .map(|m| (m.id.to_string(), m.grpc_addr, held.clone()));
        let running = self.start_collect(calls.collect(), deadline, started);
        // While the peers answer, this node's own groups go in (sized for about as many again
        // from the peers: growing the map rehashes it and faults its pages in again).
        let mut newest = Newest::with_capacity_and_hasher(local.len() * 2, Default::default());
        merge_newest(&mut newest, local, self.store.tombstones());
        let answers = finish_collect(running).await;
        let deferred: Vec<(String, Vec<(u64, u64)>)> = answers
            .iter()
            .map(|(id, chunks)| {
                let d = chunks.iter().flat_map(|c| {
                    c.deferred_keys
                        .iter()
                        .copied()
                        .zip(c.deferred_versions.iter().copied())
                });
                (id.clone(), d.collect::<Vec<_>>())
            })
            .filter(|(_, d)| !d.is_empty())
            .collect();
        let names = self.names();
        merge_answers(&mut newest, answers, names).await;
        if !deferred.is_empty() {
            // Groups left to a peer that did not deliver them (it failed, its answer was
            // undecodable, or it ranks the owners differently): asked for once more, from the
            // peers that deferred them, within what is left of the deadline (at least half).
            let have: HashMap<u64, u64, foldhash::fast::RandomState> = newest
                .iter()
                .map(|(k, (v, _))| (k.stable_hash(), *v))
                .collect();
            let missing = rpc::missing_deferred(
                deferred.iter().map(|(id, d)| (id.as_str(), d.as_slice())),
                &have,
            );
            let calls: Vec<_> = missing
                .into_iter()
                .filter_map(|(id, keys)| {
                    let m = peers.iter().find(|m| m.id.as_str() == id)?;
                    metrics::counter!(m::COLLECT_FOLLOW_UPS_TOTAL).increment(1);
                    let req = pb::CollectRequest {
                        text_only,
                        only_keys: keys,
                        ..Default::default()
                    };
                    Some((id.to_owned(), m.grpc_addr, req))
                })
                .collect();
            if !calls.is_empty() {
                let left = deadline.saturating_sub(started.elapsed()).max(deadline / 2);
                let again = self.collect_from(calls, left, Instant::now()).await;
                merge_answers(&mut newest, again, names).await;
            }
        }
        let mut out: Vec<GroupSnapshot> = newest.into_values().filter_map(|(_, g)| g).collect();
        // Keys are unique here (one entry per key).
        out.sort_unstable_by(|a, b| a.key.cmp(&b.key));
        metrics::histogram!(m::SCRAPE_MERGE_DURATION_SECONDS)
            .record(started.elapsed().as_secs_f64());
        out
    }

    /// Runs collect `calls` (peer id, gRPC address, request) concurrently, each within
    /// `deadline`; returns the chunks of each call that completed (a failed peer's groups come
    /// from their other owners).
    async fn collect_from(
        &self,
        calls: Vec<(String, std::net::SocketAddr, pb::CollectRequest)>,
        deadline: Duration,
        started: Instant,
    ) -> Vec<(String, Vec<pb::CollectChunk>)> {
        finish_collect(self.start_collect(calls, deadline, started)).await
    }

    /// Starts the calls of [`Self::collect_from`]; `finish_collect` waits for them.
    fn start_collect(
        &self,
        calls: Vec<(String, std::net::SocketAddr, pb::CollectRequest)>,
        deadline: Duration,
        started: Instant,
    ) -> Collecting {
        let mut running = JoinSet::new();
        for (id, addr, req) in calls {
            let mut client = self.clients.client(addr);
            running.spawn(async move {
                let call = async {
                    let mut stream = client
                        .collect(rpc::request(req, deadline))
                        .await?
                        .into_inner();
                    let mut chunks = Vec::new();
                    while let Some(c) = stream.message().await? {
                        chunks.push(c);
                    }
                    Ok::<_, Status>(chunks)
                };
                let res = match tokio::time::timeout(deadline, call).await {
                    Ok(Ok(chunks)) => Ok(chunks),
                    Ok(Err(status)) => Err(status.to_string()),
                    Err(_) => Err("deadline exceeded".to_owned()),
                };
                metrics::histogram!(m::PEER_RPC_DURATION_SECONDS, "rpc" => "collect")
                    .record(started.elapsed().as_secs_f64());
                if let Err(e) = &res {
                    tracing::debug!(peer = %id, err = %e, "collect failed; its groups come from replicas");
                }
                res.ok().map(|chunks| (id, chunks))
            });
        }
        running
    }
}

/// Collect calls under way: each yields the peer's id and chunks, or nothing if it failed.
type Collecting = JoinSet<Option<(String, Vec<pb::CollectChunk>)>>;

async fn finish_collect(mut running: Collecting) -> Vec<(String, Vec<pb::CollectChunk>)> {
    let mut answers = Vec::new();
    while let Some(done) = running.join_next().await {
        if let Ok(Some(answer)) = done {
            answers.push(answer);
        }
    }
    answers
}

/// The merged view being built: the newest version of each group, `None` for a tombstone.
type Newest = HashMap<Arc<GroupKey>, (u64, Option<GroupSnapshot>), foldhash::fast::RandomState>;

/// Keeps the newest of what is in `newest` and `groups`/`tombstones` (a tombstone hides a group
/// of the same or an older version; of two equal versions the group already there stays).
fn merge_newest(newest: &mut Newest, groups: Vec<GroupSnapshot>, tombstones: Vec<(GroupKey, u64)>) {
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
}

/// Decodes the peers' answers into `newest`, one copy of each group: a group that a peer of an
/// earlier release (which sends everything) or a peer with another view of the ring sent too is
/// set aside, and decoded after all if an answer turns out undecodable (the merge keeps one).
async fn merge_answers(
    newest: &mut Newest,
    mut answers: Vec<(String, Vec<pb::CollectChunk>)>,
    names: NameScheme,
) {
    let mut raw: Vec<Vec<pb::CollectChunk>> =
        answers.iter_mut().map(|(_, c)| std::mem::take(c)).collect();
    let spares = rpc::drop_repeated_groups(&mut raw);
    let ids: Vec<String> = answers.into_iter().map(|(id, _)| id).collect();
    if merge_decoded(newest, spawn_decoding(ids.iter().cloned().zip(raw), names)).await {
        let spares = ids.into_iter().zip(spares).map(|(id, s)| (id, vec![s]));
        merge_decoded(newest, spawn_decoding(spares, names)).await;
    }
}

/// Decodes each peer's answer on the blocking pool, in parallel.
fn spawn_decoding(
    answers: impl IntoIterator<Item = (String, Vec<pb::CollectChunk>)>,
    names: NameScheme,
) -> JoinSet<Result<rpc::Collected, ()>> {
    let mut decoding = JoinSet::new();
    for (id, chunks) in answers {
        decoding.spawn_blocking(move || {
            rpc::decode_chunks(chunks, names).map_err(|e| {
                tracing::debug!(peer = %id, err = %e, "collect answer undecodable; its groups come from replicas");
            })
        });
    }
    decoding
}

/// Merges every decoded answer into `newest`; true when one could not be decoded (none of its
/// groups is used).
async fn merge_decoded(
    newest: &mut Newest,
    mut decoding: JoinSet<Result<rpc::Collected, ()>>,
) -> bool {
    let mut failed = false;
    while let Some(done) = decoding.join_next().await {
        match done {
            Ok(Ok(c)) => merge_newest(newest, c.groups, c.tombstones),
            _ => failed = true,
        }
    }
    failed
}

enum Replica {
    Group(GroupSnapshot),
    /// The group as a successful PUT left it: exactly the pushed families.
    Put(GroupSnapshot),
    Tombstone(u64),
    /// A state the primary encoded (and left to this node to replicate).
    Encoded(pb::ReplicateRequest),
}

/// A write applied on its primary, before its state is copied to the other holders.
struct Applied {
    answer: WriteAnswer,
    /// The state the write left, to copy (None: nothing to copy).
    replica: Option<Replica>,
}

/// A replica as sent to a peer.
fn replica_message(key: &GroupKey, replica: Replica) -> pb::ReplicateRequest {
    match replica {
        Replica::Group(g) | Replica::Put(g) => pb::ReplicateRequest {
            version: g.version,
            group: rpc::group_to_bytes(&g).into(),
            tombstone_key: Vec::new(),
        },
        Replica::Tombstone(version) => pb::ReplicateRequest {
            version,
            group: Default::default(),
            tombstone_key: rpc::key_to_pb(key),
        },
        Replica::Encoded(state) => state,
    }
}

/// The copy of a forwarded write that its primary's answer carries: the group state, or a
/// PUT's stamp for the families this node prepared. Err: a stamp for a write that is not a PUT.
fn returned_replica(
    op: &WriteOp,
    state: Option<pb::ReplicateRequest>,
    stamp: Option<pb::OwnReplica>,
) -> Result<Option<Replica>, String> {
    match (stamp, state, op) {
        (Some(stamp), _, WriteOp::Push(p)) if p.replace_all => {
            Ok(Some(Replica::Put(own_state(p, stamp))))
        }
        (Some(_), _, _) => {
            Err("the primary sent a PUT's stamp for a write that is not a PUT".to_owned())
        }
        (None, Some(state), _) => Ok(Some(Replica::Encoded(state))),
        (None, None, _) => Ok(None),
    }
}

/// The version and times a PUT left on its primary.
fn stamp_of(g: &GroupSnapshot) -> pb::OwnReplica {
    pb::OwnReplica {
        version: g.version,
        push_time: g.push_time,
        failure_time: g.failure_time,
    }
}

/// The state a successful PUT left on its primary: exactly the pushed families as this node
/// prepared them, with the primary's stamp.
fn own_state(p: &PreparedPush, stamp: pb::OwnReplica) -> GroupSnapshot {
    GroupSnapshot {
        key: Arc::new(p.key.clone()),
        families: p
            .families
            .iter()
            .map(|f| (f.clone(), stamp.push_time))
            .collect(),
        push_time: stamp.push_time,
        failure_time: stamp.failure_time,
        last_push_successful: true,
        version: stamp.version,
        timing: None,
    }
}

/// A forwarded write's way back: the sender's node id and, once the primary replicated, the
/// replica the sender is to hold.
struct ReturnTrip {
    sender: String,
    replica: Option<pb::ReplicateRequest>,
    /// The sender can hold its own families of a PUT (`ForwardedWrite.own_replica`) ...
    own_ok: bool,
    /// ... and is to, with this stamp (instead of `replica`).
    own: Option<pb::OwnReplica>,
}

impl WriteAnswer {
    /// A peer's answer is used as an HTTP status: only the statuses a write can have pass.
    fn sanitized(self) -> Self {
        match self.status {
            200 | 202 | 400 | 413 | 503 => self,
            other => WriteAnswer::unavailable(format!(
                "a cluster peer answered with unexpected status {other}"
            )),
        }
    }
}

/// The answer to a client whose write this node forwarded, once it tried to hold the replica the
/// primary counted it for: a replica it could not hold turns a success into 503 (the write stays
/// on the nodes that took it, as with any 503).
fn replica_outcome(held: Result<(), String>, answer: WriteAnswer) -> WriteAnswer {
    match held {
        Ok(()) => {
            metrics::counter!(m::REPLICATED_WRITES_TOTAL, "result" => "success").increment(1);
            answer
        }
        Err(why) => {
            metrics::counter!(m::REPLICATED_WRITES_TOTAL, "result" => "error").increment(1);
            if matches!(answer.status, 200 | 202) {
                WriteAnswer::unavailable(format!(
                    "this node could not hold its replica of the write ({why}); retry"
                ))
            } else {
                answer
            }
        }
    }
}

/// A write as forwarded to its primary, and its size (to bound batches); `unreachable` and the
/// deadline are set per attempt.
fn forward_message(op: &WriteOp, from: &str) -> (pb::ForwardedWrite, usize) {
    let mut msg = pb::ForwardedWrite {
        key: rpc::key_to_pb(op.key()),
        from: from.to_owned(),
        sender_replicates: true,
        ..Default::default()
    };
    match op {
        WriteOp::Push(p) => {
            // All families in one buffer, handed out as slices of it.
            let mut buf = Vec::with_capacity(p.families.iter().map(|f| f.wire_len()).sum());
            let mut ends = Vec::with_capacity(p.families.len());
            for f in &p.families {
                f.to_wire(&mut buf);
                ends.push(buf.len());
            }
            msg.families = rpc::split_at_ends(buf, &ends);
            msg.replace_all = p.replace_all;
            msg.has_timestamps = p.has_timestamps;
            msg.own_replica = p.replace_all && !p.has_timestamps;
        }
        WriteOp::Raw(r) => {
            msg.body = Some(r.body.clone());
            msg.body_protobuf = r.format == BodyFormat::ProtobufDelimited;
            msg.replace_all = r.replace_all;
        }
        WriteOp::Failure { message, .. } => {
            msg.refused = if message.is_empty() {
                "refused".into()
            } else {
                message.clone()
            };
        }
        WriteOp::Delete(_) => msg.delete = true,
    }
    let size = msg.families.iter().map(|f| f.len()).sum::<usize>()
        + msg.body.as_ref().map_or(0, |b| b.len())
        + msg.refused.len()
        + 128;
    (msg, size)
}

/// A push decoded and validated: the write to apply (a push refused as `Invalid` is a failure
/// to record on its group, like upstream), or the refusal that changes nothing. With `held`,
/// also checked against the groups that store holds (the receiving node's check; the primary's
/// is part of applying the push).
fn decoded(req: PushRequest, v: &Validation, held: Option<&Store>) -> Result<WriteOp, PushError> {
    let key = req.key.clone();
    let checked = req.prepare_now(v).and_then(|p| match held {
        Some(store) => store.check_consistency(&p).map(|_| p),
        None => Ok(p),
    });
    match checked {
        Ok(p) => Ok(WriteOp::Push(p)),
        Err(e @ PushError::Invalid(_)) => Ok(WriteOp::Failure {
            key,
            message: e.to_string(),
        }),
        Err(e) => Err(e),
    }
}

/// The absolute deadline sent with a forwarded write: the sender's clock plus the call timeout.
fn forward_deadline_ms(timeout: Duration) -> u64 {
    ((unix_seconds() + timeout.as_secs_f64()) * 1000.0) as u64
}

/// A forwarded write that arrives after its sender stopped waiting is refused unapplied: the
/// sender has already given the write to another node (or failed it), so applying this copy
/// now could put an older value over newer acknowledged ones.
fn expired(deadline_unix_ms: u64) -> Result<(), Status> {
    let now_ms = crate::time::unix_millis();
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
        // Decoded here, or by the primary when this node is entry-heavy (`route`).
        self.core
            .route(WriteOp::Raw(req), Vec::new())
            .await
            .into_result()
    }

    async fn delete(&self, key: GroupKey) -> Result<(), PushError> {
        self.core
            .route(WriteOp::Delete(key), Vec::new())
            .await
            .into_result()
    }

    async fn wipe(&self) -> Result<(), PushError> {
        // Versioned, so that anti-entropy or a replication still in flight from a member the
        // wipe has not reached yet cannot bring wiped groups back (Store::wipe_versioned).
        let version = self.core.clock.now();
        self.core.wipe_local(version);
        let ring = self.core.ring();
        let mut calls = JoinSet::new();
        for m in ring.members.iter().filter(|m| m.id != self.core.self_id) {
            let mut client = self.core.clients.client(m.grpc_addr);
            let req = rpc::request(pb::WipeRequest { version }, self.core.clients.timeout());
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

    async fn render(&self, format: Format, own: Vec<StoredFamily>) -> (Vec<u8>, RenderStats) {
        let (groups, reserved) = self
            .core
            .merged_view(format, self.core.collect_deadline)
            .await;
        let orders = self.core.merged_orders.clone();
        tokio::task::spawn_blocking(move || {
            let mut out = Vec::with_capacity(64 * 1024);
            let stats = render_groups(&groups, reserved, &own, format, Some(&orders), &mut out);
            (out, stats)
        })
        .await
        .expect("render task should not panic")
    }

    async fn render_stream(
        &self,
        format: Format,
        own: Vec<StoredFamily>,
        gzip: bool,
        timeout: Option<Duration>,
    ) -> ScrapeStream {
        let started = Instant::now();
        let deadline = self.core.scrape_deadline(timeout);
        let (groups, reserved) = self.core.merged_view(format, deadline).await;
        let orders = self.core.merged_orders.clone();
        stream_rendered(gzip, started, move |emit| {
            let chunk = SCRAPE_CHUNK_BYTES;
            render_groups_chunked(&groups, &reserved, &own, format, Some(&orders), chunk, emit)
        })
    }

    async fn groups(&self) -> Vec<GroupSnapshot> {
        self.core
            .merged_groups(self.core.collect_deadline, false)
            .await
    }

    fn local_stats(&self) -> LocalStats {
        // Read for every scrape of the self-metrics: an idle node's entry load is brought up
        // to date, and with it `pushgate_cluster_entry_heavy`.
        self.core.entry.roll(crate::time::unix_millis());
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

    /// A group state (or tombstone) from the primary, applied when newer than what is held.
    /// Applies a batch's replicas concurrently; one result each, in order.
    async fn replicate_all(&self, items: Vec<pb::ReplicateRequest>) -> Vec<pb::ReplicateResult> {
        let applied = join_all(items.into_iter().map(|r| self.replicate_one(r))).await;
        applied
            .into_iter()
            .map(|a| match a {
                Ok(applied) => pb::ReplicateResult {
                    applied,
                    error_code: 0,
                    error: String::new(),
                },
                Err(status) => {
                    let (error_code, error) = rpc::status_fields(&status);
                    pb::ReplicateResult {
                        applied: false,
                        error_code,
                        error,
                    }
                }
            })
            .collect()
    }

    async fn replicate_one(&self, req: pb::ReplicateRequest) -> Result<bool, Status> {
        self.core.take_replica(req).await
    }

    /// One write of a `Forward` call: the families arrive prepared by the receiving node, so
    /// their layout is validated (`StoredFamily::from_wire`) but nothing is decoded or encoded.
    async fn forwarded(&self, w: pb::ForwardedWrite) -> Result<ForwardedAnswer, Status> {
        self.core.entry.served();
        expired(w.deadline_unix_ms)?;
        let names = self.core.names();
        let key = rpc::key_from_pb(w.key, names).map_err(Status::invalid_argument)?;
        let unreachable = bounded(w.unreachable);
        let op = if w.delete {
            WriteOp::Delete(key)
        } else if let Some(body) = w.body {
            // Decoded and checked here, refused as a single node would refuse it.
            let req = PushRequest {
                key: key.clone(),
                body,
                format: if w.body_protobuf {
                    BodyFormat::ProtobufDelimited
                } else {
                    BodyFormat::Text
                },
                replace_all: w.replace_all,
            };
            let large = req.is_large();
            let v = self.core.validation.clone();
            match off_runtime(large, move || decoded(req, &v, None)).await {
                Ok(op) => op,
                Err(e) => {
                    return Ok(ForwardedAnswer {
                        answer: WriteAnswer::from_error(&e),
                        replica: None,
                        own: None,
                        left_to_sender: w.sender_replicates,
                    })
                }
            }
        } else if !w.refused.is_empty() {
            WriteOp::Failure {
                key,
                message: w.refused,
            }
        } else {
            let size: usize = w.families.iter().map(|f| f.len()).sum();
            let raw = w.families;
            let replace_all = w.replace_all;
            let families = off_runtime_if_large(size, move || {
                rpc::prepared_from_wire(&raw, names, replace_all)
            })
            .await
            .map_err(|e| Status::internal(e.to_string()))?
            .map_err(Status::invalid_argument)?;
            WriteOp::Push(PreparedPush {
                key,
                families,
                replace_all: w.replace_all,
                has_timestamps: w.has_timestamps,
            })
        };
        if w.sender_replicates {
            // Applied here and answered at once: the sender sends the replicas, so this call
            // waits on no other call.
            let key = op.key().clone();
            let applied = self.core.apply_here(op);
            let (replica, own) = match applied.replica {
                Some(Replica::Put(g)) if w.own_replica => (None, Some(stamp_of(&g))),
                Some(r) => (Some(replica_message(&key, r)), None),
                None => (None, None),
            };
            return Ok(ForwardedAnswer {
                answer: applied.answer,
                replica,
                own,
                left_to_sender: true,
            });
        }
        // A sender that leaves the replication to this node (an entry point for most of its
        // load, or a node of an earlier release): replicated before it is answered.
        let mut trip =
            (!w.from.is_empty() && w.from != self.core.self_id.as_str()).then_some(ReturnTrip {
                sender: w.from,
                replica: None,
                own_ok: w.own_replica,
                own: None,
            });
        let answer = self
            .core
            .apply_as_primary(op, unreachable, trip.as_mut())
            .await;
        let (replica, own) = trip.map(|t| (t.replica, t.own)).unwrap_or_default();
        Ok(ForwardedAnswer {
            answer,
            replica,
            own,
            left_to_sender: false,
        })
    }
}

/// A forwarded write's answer on the primary, with what travels back for the sender to hold or
/// (`left_to_sender`) to replicate.
struct ForwardedAnswer {
    answer: WriteAnswer,
    replica: Option<pb::ReplicateRequest>,
    own: Option<pb::OwnReplica>,
    left_to_sender: bool,
}

fn write_reply(a: WriteAnswer) -> Response<pb::WriteReply> {
    Response::new(write_reply_pb(a))
}

fn write_reply_pb(a: WriteAnswer) -> pb::WriteReply {
    pb::WriteReply {
        status: u32::from(a.status),
        message: a.message,
        version: 0,
        refusal: a.refusal.into(),
    }
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
                self.core.apply_as_primary(op, unreachable, None).await,
            ));
        }
        let size: usize = req.families.iter().map(Vec::len).sum();
        let families = rpc::families_from_bytes(req.families).map_err(Status::invalid_argument)?;
        let v = self.core.validation.clone();
        let prepared = off_runtime_if_large(size, move || {
            prepare_push(key, families, req.replace_all, &v)
        })
        .await
        .map_err(|e| Status::internal(e.to_string()))?;
        let answer = match prepared {
            Ok(p) => {
                self.core
                    .apply_as_primary(WriteOp::Push(p), unreachable, None)
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
            .apply_as_primary(WriteOp::Delete(key), bounded(req.unreachable), None)
            .await;
        Ok(write_reply(answer))
    }

    async fn replicate(
        &self,
        request: Request<pb::ReplicateRequest>,
    ) -> Result<Response<pb::ReplicateReply>, Status> {
        let applied = self.replicate_one(request.into_inner()).await?;
        Ok(Response::new(pb::ReplicateReply { applied }))
    }

    async fn forward(
        &self,
        request: Request<pb::ForwardRequest>,
    ) -> Result<Response<pb::ForwardReply>, Status> {
        let req = request.into_inner();
        let (answers, replica_results) = tokio::join!(
            join_all(req.writes.into_iter().map(|w| self.forwarded(w))),
            self.replicate_all(req.replicas)
        );
        let results = answers
            .into_iter()
            .map(|a| match a {
                Ok(a) => pb::ForwardResult {
                    reply: Some(write_reply_pb(a.answer)),
                    error_code: 0,
                    error: String::new(),
                    replica: a.replica,
                    own_replica: a.own,
                    left_to_sender: a.left_to_sender,
                },
                Err(status) => {
                    let (error_code, error) = rpc::status_fields(&status);
                    pb::ForwardResult {
                        reply: None,
                        error_code,
                        error,
                        ..Default::default()
                    }
                }
            })
            .collect();
        Ok(Response::new(pb::ForwardReply {
            results,
            replica_results,
        }))
    }

    async fn replicate_batch(
        &self,
        request: Request<pb::ReplicateBatchRequest>,
    ) -> Result<Response<pb::ReplicateBatchReply>, Status> {
        let results = self.replicate_all(request.into_inner().items).await;
        Ok(Response::new(pb::ReplicateBatchReply { results }))
    }

    type CollectStream = tokio_stream::Iter<std::vec::IntoIter<Result<pb::CollectChunk, Status>>>;

    async fn collect(
        &self,
        request: Request<pb::CollectRequest>,
    ) -> Result<Response<Self::CollectStream>, Status> {
        let store = self.core.store.clone();
        let req = request.into_inner();
        let (ring, r) = (self.core.ring(), self.core.replication_factor);
        let chunks = tokio::task::spawn_blocking(move || {
            let sel = rpc::select_for_collect(&store, &req, &ring, r);
            rpc::collect_chunks(&sel.groups, store.tombstones(), sel.deferred, req.text_only)
        })
        .await
        .map_err(|e| Status::internal(e.to_string()))?;
        Ok(Response::new(tokio_stream::iter(
            chunks.into_iter().map(Ok).collect::<Vec<_>>(),
        )))
    }

    async fn wipe(
        &self,
        request: Request<pb::WipeRequest>,
    ) -> Result<Response<pb::WipeReply>, Status> {
        let version = match request.into_inner().version {
            0 => self.core.clock.now(),
            v => v,
        };
        self.core.wipe_local(version);
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
    use crate::cluster::batch::BatchLimits;
    use crate::cluster::MemberState;
    use crate::exposition::text_parse::parse_text;
    use crate::gateway::LocalGateway;
    use crate::store::StoreOptions;

    fn key(job: &str) -> GroupKey {
        GroupKey::new([("job".to_owned(), job.to_owned())])
    }

    /// A one-node cluster (R = 1) named "a" whose gRPC address is `port`.
    fn service(port: u16) -> (Arc<Store>, ClusterService) {
        service_with(&[("a", port)], 1)
    }

    /// A cluster of `members` (id, gRPC port) seen from "a", with replication factor `r`.
    fn service_with(members: &[(&str, u16)], r: usize) -> (Arc<Store>, ClusterService) {
        node("a", members, r)
    }

    /// Node `self_id` of a cluster of `members` (id, gRPC port), replication factor `r`.
    fn node(self_id: &str, members: &[(&str, u16)], r: usize) -> (Arc<Store>, ClusterService) {
        node_seeing(self_id, members, r, |_| true)
    }

    /// As `node`, seeing the members for which `raw_push` is false as nodes of an earlier
    /// release (they do not gossip the feature).
    fn node_seeing(
        self_id: &str,
        members: &[(&str, u16)],
        r: usize,
        raw_push: impl Fn(&str) -> bool,
    ) -> (Arc<Store>, ClusterService) {
        let store = Arc::new(Store::new(StoreOptions::default()));
        let members = members
            .iter()
            .map(|&(id, port)| Member {
                id: NodeId::from(id),
                generation: 1,
                grpc_addr: std::net::SocketAddr::from(([127, 0, 0, 1], port)),
                state: MemberState::Active,
                raw_push: raw_push(id),
            })
            .collect();
        let (_tx, rx) = watch::channel(Arc::new(Ring::new(NodeId::from(self_id), members, 1)));
        let core = ClusterCore::new(
            store.clone(),
            Validation::default(),
            rx,
            NodeId::from(self_id),
            r,
            Duration::from_secs(2),
        );
        (store, ClusterService::new(core))
    }

    /// The port of a peer that accepts connections and never answers (frozen, or cut off with
    /// its packets dropped).
    async fn silent_peer() -> u16 {
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
    fn closed_port() -> u16 {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    }

    #[tokio::test]
    async fn a_replica_for_the_forwarding_node_travels_back_with_the_answer() {
        let (store, svc) = service_with(&[("a", 1), ("b", closed_port())], 2);
        let mut w = earlier_release(forwarded("j", BODY));
        w.from = "b".into();
        // A sender that cannot hold its own families (an older node, or a POST).
        w.own_replica = false;
        let results = forward_all(&svc, vec![w]).await;
        // "b" is the only other node: no call was made to it (its port is closed), it counts
        // as a holder and gets the group's state in the answer.
        assert!(results[0].own_replica.is_none());
        assert_eq!(results[0].reply.as_ref().unwrap().status, 200);
        let replica = results[0].replica.as_ref().expect("replica returned");
        let held = store.group(&key("j")).unwrap();
        assert_eq!(replica.version, held.version);
        let g = rpc::group_from_bytes(&replica.group, NameScheme::Legacy).unwrap();
        assert_eq!(g.version, held.version);
        assert_eq!(g.families.len(), held.families.len());
        // The forwarding node holds it like any replica.
        let (sender_store, sender) = service(1);
        let answer = sender
            .core
            .hold_returned(&op_j(), Some(replica.clone()), None, WriteAnswer::ok(200))
            .await;
        assert_eq!(answer.status, 200);
        assert_eq!(sender_store.group_version(&key("j")), Some(held.version));
    }

    #[tokio::test]
    async fn a_put_replica_for_the_forwarding_node_is_its_own_families_with_the_primary_stamp() {
        let (store, svc) = service_with(&[("a", 1), ("b", closed_port())], 2);
        let mut w = earlier_release(forwarded("j", BODY));
        assert!(w.own_replica, "a PUT asks to hold its own families");
        w.from = "b".into();
        let results = forward_all(&svc, vec![w]).await;
        assert_eq!(results[0].reply.as_ref().unwrap().status, 200);
        assert!(results[0].replica.is_none(), "no group state travels back");
        let own = results[0].own_replica.expect("the PUT's stamp returned");
        let held = store.group(&key("j")).unwrap();
        assert_eq!(own.version, held.version);
        assert_eq!(own.push_time.to_bits(), held.push_time.to_bits());
        assert_eq!(own.failure_time.to_bits(), held.failure_time.to_bits());
        // The sender holds exactly what the primary holds.
        let (sender_store, sender) = service(1);
        let op = WriteOp::Push(prepared("j", BODY));
        let answer = sender
            .core
            .hold_returned(&op, None, Some(own), WriteAnswer::ok(200))
            .await;
        assert_eq!(answer.status, 200);
        let copy = sender_store.group(&key("j")).unwrap();
        assert_eq!(copy.version, held.version);
        assert_eq!(copy.push_time.to_bits(), held.push_time.to_bits());
        assert_eq!(text_of(&sender_store, "j"), text_of(&store, "j"));
        let scrape = |s: &Store| {
            let mut out = Vec::new();
            s.render(crate::store::render::Format::Text, &[], &mut out);
            String::from_utf8(out).unwrap()
        };
        assert_eq!(scrape(&sender_store), scrape(&store));
        // A stamp for something that is not a PUT is not held: the success becomes a 503.
        let post = WriteOp::Delete(key("j"));
        let answer = sender
            .core
            .hold_returned(&post, None, Some(own), WriteAnswer::ok(202))
            .await;
        assert_eq!(answer.status, 503);
    }

    #[tokio::test]
    async fn a_post_gets_the_group_state_even_when_its_sender_asks_for_its_own_copy() {
        let (_store, svc) = service_with(&[("a", 1), ("b", closed_port())], 2);
        let families = parse_text(BODY.as_bytes(), NameScheme::Legacy).unwrap();
        let post = prepare_push(key("j"), families, false, &Validation::default()).unwrap();
        let mut w = earlier_release(forward_message(&WriteOp::Push(post), "b").0);
        assert!(!w.own_replica);
        w.deadline_unix_ms = forward_deadline_ms(Duration::from_secs(5));
        // A sender claiming it could: a POST merges into the group, so only its state will do.
        w.own_replica = true;
        let results = forward_all(&svc, vec![w]).await;
        assert_eq!(results[0].reply.as_ref().unwrap().status, 200);
        assert!(results[0].own_replica.is_none());
        assert!(results[0].replica.is_some());
    }

    #[tokio::test]
    async fn without_a_return_trip_the_replica_is_sent_and_its_failure_counts() {
        let (_store, svc) = service_with(&[("a", 1), ("b", closed_port())], 2);
        // No sender id (an older node), then a sender that is not a replica candidate.
        for from in ["", "c"] {
            let mut w = earlier_release(forwarded("j", BODY));
            w.from = from.into();
            let results = forward_all(&svc, vec![w]).await;
            assert!(results[0].replica.is_none());
            // "b" could not be reached: only one of the two holders the write needs.
            assert_eq!(
                results[0].reply.as_ref().unwrap().status,
                503,
                "from {from:?}"
            );
        }
    }

    /// A replica candidate that accepts connections and never answers (cut off by the network,
    /// packets dropped): after half the peer timeout the next node is asked too, and the write
    /// reaches its R holders within the timeout instead of failing at it.
    #[tokio::test]
    async fn a_silent_replica_is_hedged_by_the_next_node() {
        let silent_port = silent_peer().await;
        let c_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let c_port = c_listener.local_addr().unwrap().port();
        let members = [("a", 1), ("b", silent_port), ("c", c_port)];
        let (_store_a, a) = node("a", &members, 2);
        let (store_c, c) = node("c", &members, 2);
        serve_on(c_listener, c);
        // A group whose rendezvous order is a (primary), b (the silent one), c.
        let ring = a.core.ring();
        let job = (0..)
            .map(|i| format!("j{i}"))
            .find(|job| {
                let order: Vec<&str> = ring
                    .rendezvous_order(key(job).stable_hash())
                    .iter()
                    .map(|m| m.id.as_str())
                    .collect();
                order == ["a", "b", "c"]
            })
            .unwrap();
        let answer = a
            .core
            .apply_as_primary(WriteOp::Push(prepared(&job, BODY)), Vec::new(), None)
            .await;
        assert_eq!(answer.status, 200, "{}", answer.message);
        assert!(store_c.group(&key(&job)).is_some(), "c holds the copy");
    }

    #[tokio::test]
    async fn a_stand_in_sender_gets_its_replica_by_a_call_not_with_the_answer() {
        let (_store, svc) =
            service_with(&[("a", 1), ("b", closed_port()), ("c", closed_port())], 2);
        let ring = svc.core.ring();
        // A group owned by "a" and one other node; the third node is the outsider.
        let (job, other_owner, outsider) = (0..)
            .find_map(|i| {
                let job = format!("j{i}");
                let owners: Vec<&str> = ring
                    .owners(key(&job).stable_hash(), 2)
                    .iter()
                    .map(|m| m.id.as_str())
                    .collect();
                let other = owners.iter().find(|&&id| id != "a")?.to_string();
                let outsider = ["b", "c"].into_iter().find(|id| !owners.contains(id))?;
                owners
                    .contains(&"a")
                    .then(|| (job, other, outsider.to_owned()))
            })
            .unwrap();
        // The other owner is unreachable, so the outsider stands in for it.
        let mut w = earlier_release(forwarded(&job, BODY));
        w.from = outsider;
        w.unreachable = vec![other_owner];
        let results = forward_all(&svc, vec![w]).await;
        assert!(results[0].replica.is_none());
        // The call to the stand-in failed (its port is closed): one holder of two.
        assert_eq!(results[0].reply.as_ref().unwrap().status, 503);
    }

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

    /// A PUT of job "j" (the write a returned copy belongs to).
    fn op_j() -> WriteOp {
        WriteOp::Push(prepared("j", BODY))
    }

    fn prepared(job: &str, body: &str) -> PreparedPush {
        let families = parse_text(body.as_bytes(), NameScheme::Legacy).expect("valid text");
        prepare_push(key(job), families, true, &Validation::default()).expect("valid push")
    }

    /// One `Forward` call to `svc`; the per-write results.
    async fn forward_all(
        svc: &ClusterService,
        writes: Vec<pb::ForwardedWrite>,
    ) -> Vec<pb::ForwardResult> {
        svc.forward(Request::new(pb::ForwardRequest {
            writes,
            replicas: Vec::new(),
        }))
        .await
        .unwrap()
        .into_inner()
        .results
    }

    fn forwarded(job: &str, body: &str) -> pb::ForwardedWrite {
        let mut w = forward_message(&WriteOp::Push(prepared(job, body)), "sender").0;
        w.deadline_unix_ms = forward_deadline_ms(Duration::from_secs(5));
        w
    }

    /// A write as a node of a release before 2026-12-01 forwards it: its primary replicates it
    /// before answering (the primary's side of the tests above).
    fn earlier_release(mut w: pb::ForwardedWrite) -> pb::ForwardedWrite {
        w.sender_replicates = false;
        w
    }

    /// The exposition of one group's pushed families (no push time families).
    fn text_of(store: &Store, job: &str) -> String {
        let g = store.group(&key(job)).expect("group held");
        g.families
            .iter()
            .map(|(f, _)| String::from_utf8(f.text().to_vec()).unwrap())
            .collect()
    }

    const BODY: &str = "# TYPE b counter\nb{x=\"2\"} 2\nb{x=\"1\"} 1\n# HELP a help\na 3\n";

    #[tokio::test]
    async fn forwarded_families_are_stored_as_the_receiving_node_prepared_them() {
        let (store, svc) = service(1);
        let direct = Store::new(StoreOptions::default());
        direct.push(prepared("j", BODY), 1.0).unwrap();
        let req = pb::ForwardRequest {
            writes: vec![forwarded("j", BODY)],
            replicas: Vec::new(),
        };
        let reply = svc.forward(Request::new(req)).await.unwrap().into_inner();
        assert_eq!(reply.results.len(), 1);
        assert_eq!(reply.results[0].error_code, 0);
        assert_eq!(reply.results[0].reply.as_ref().unwrap().status, 200);
        assert_eq!(text_of(&store, "j"), text_of(&direct, "j"));
        let (a, b) = (
            store.group(&key("j")).unwrap(),
            direct.group(&key("j")).unwrap(),
        );
        for ((fa, _), (fb, _)) in a.families.iter().zip(b.families.iter()) {
            assert_eq!(fa.proto_metrics(), fb.proto_metrics());
            assert!(fa.same_series(fb));
        }
    }

    #[tokio::test]
    async fn a_forward_batch_answers_every_item_on_its_own_and_bad_items_change_nothing() {
        let (store, svc) = service(1);
        let good = forwarded("good", BODY);
        let mut truncated = forwarded("truncated", BODY);
        let n = truncated.families[0].len();
        truncated.families[0].truncate(n - 3);
        let mut expired_item = forwarded("late", BODY);
        expired_item.deadline_unix_ms = 1;
        let mut no_job = forwarded("nojob", BODY);
        no_job.key.clear();
        let mut unsorted = forwarded("unsorted", BODY);
        unsorted.families.reverse();
        let mut twice = forwarded("twice", BODY);
        twice.families.push(twice.families[0].clone());
        let mut own_timing = forwarded("timing", BODY);
        let timing = StoredFamily::gauge(
            "push_time_seconds".into(),
            "h".into(),
            &[("job".into(), "timing".into())],
            1.0,
        );
        let mut raw = Vec::new();
        timing.to_wire(&mut raw);
        own_timing.families.push(raw.into());
        let mut with_timestamps = forwarded("ts", "m 1 1000\n");
        with_timestamps.has_timestamps = true;
        let refused = pb::ForwardedWrite {
            key: rpc::key_to_pb(&key("refused")),
            refused: "bad body".into(),
            ..Default::default()
        };
        let req = pb::ForwardRequest {
            writes: vec![
                good,
                truncated,
                expired_item,
                no_job,
                unsorted,
                twice,
                own_timing,
                with_timestamps,
                refused,
            ],
            replicas: Vec::new(),
        };
        let results = svc
            .forward(Request::new(req))
            .await
            .unwrap()
            .into_inner()
            .results;
        let codes: Vec<u32> = results.iter().map(|r| r.error_code).collect();
        let invalid = tonic::Code::InvalidArgument as u32;
        assert_eq!(
            codes,
            vec![
                0,
                invalid,
                tonic::Code::DeadlineExceeded as u32,
                invalid,
                invalid,
                invalid,
                invalid,
                0,
                0
            ]
        );
        assert_eq!(results[0].reply.as_ref().unwrap().status, 200);
        // A push with timestamps is refused like upstream, its failure recorded on the group.
        assert_eq!(results[7].reply.as_ref().unwrap().status, 400);
        assert_eq!(results[8].reply.as_ref().unwrap().status, 400);
        assert_eq!(results[8].reply.as_ref().unwrap().message, "bad body");
        assert!(store.group(&key("good")).is_some());
        for job in ["truncated", "late", "unsorted", "twice", "timing"] {
            assert!(store.group(&key(job)).is_none(), "{job} stored");
        }
        assert!(!store.group(&key("ts")).unwrap().last_push_successful);
        assert!(store.group(&key("refused")).unwrap().failure_time > 0.0);
        // A delete in a later batch.
        let del = pb::ForwardedWrite {
            key: rpc::key_to_pb(&key("good")),
            delete: true,
            ..Default::default()
        };
        let results = forward_all(&svc, vec![del]).await;
        assert_eq!(results[0].reply.as_ref().unwrap().status, 202);
        assert!(store.group(&key("good")).is_none());
        assert!(store.tombstone(&key("good")).is_some());
    }

    #[tokio::test]
    async fn damaged_forwarded_families_are_refused_without_panicking() {
        let (store, svc) = service(1);
        let w = forwarded("j", BODY);
        let fam = w.families[0].clone();
        for i in 0..fam.len() {
            for flip in [0x01u8, 0x80, 0xFF] {
                let mut bad = w.clone();
                let mut damaged = fam.to_vec();
                damaged[i] ^= flip;
                bad.families[0] = damaged.into();
                let results = forward_all(&svc, vec![bad]).await;
                assert_eq!(results.len(), 1);
            }
        }
        // Whatever was accepted is a consistent group the store can still render.
        let _ = store.snapshot();
    }

    /// Serves `svc` on an ephemeral port; returns the address.
    /// Waits (at most 5 s) until `cond` holds.
    async fn serve<S: Cluster>(svc: S) -> std::net::SocketAddr {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        serve_on(listener, svc)
    }

    fn serve_on<S: Cluster>(listener: tokio::net::TcpListener, svc: S) -> std::net::SocketAddr {
        let addr = listener.local_addr().unwrap();
        tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(rpc::ClusterServer::new(svc))
                .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
        );
        addr
    }

    /// Which release a `TestPeer` acts as.
    #[derive(Clone, Copy, PartialEq)]
    enum Release {
        /// Before the batch calls: `Forward` and `ReplicateBatch` are unimplemented, and
        /// collect requests lose the fields it does not know (responders, only_keys).
        Old,
        /// Before the sixth round of 2026-11-30: `Forward` ignores the replicas it carries
        /// (and, like every release before 2026-12-01, `sender_replicates`).
        PreMerge,
        /// Before 2026-12-01: a primary ignores `sender_replicates` and replicates the writes
        /// forwarded to it before it answers.
        PrimaryReplicates,
        Current,
    }

    /// A node's service as a peer of `release` would answer, recording each `Forward` and
    /// `ReplicateBatch` call it gets (writes, replicas). With `damaged`, the first group of
    /// every chunk its collect answers carry is cut short. With `held`, a `Forward` call is
    /// recorded on arrival and then waits for a permit before it is served (as a primary's does
    /// while it replicates to other nodes).
    struct TestPeer {
        svc: ClusterService,
        release: Release,
        damaged: bool,
        held: Option<Arc<tokio::sync::Semaphore>>,
        calls: Arc<parking_lot::Mutex<Vec<RecordedCall>>>,
        /// Forwarded writes that carried a body not decoded yet.
        bodies: Arc<AtomicUsize>,
    }

    /// The method, and how many writes and replicas it carried.
    type RecordedCall = (&'static str, usize, usize);

    impl TestPeer {
        fn new(svc: ClusterService, release: Release) -> Self {
            TestPeer {
                svc,
                release,
                damaged: false,
                held: None,
                calls: Default::default(),
                bodies: Default::default(),
            }
        }
    }

    fn old(svc: ClusterService) -> TestPeer {
        TestPeer::new(svc, Release::Old)
    }

    fn damaged(svc: ClusterService) -> TestPeer {
        TestPeer {
            damaged: true,
            ..old(svc)
        }
    }

    #[tonic::async_trait]
    impl Cluster for TestPeer {
        async fn push(
            &self,
            r: Request<pb::PushRequest>,
        ) -> Result<Response<pb::WriteReply>, Status> {
            self.svc.push(r).await
        }
        async fn delete(
            &self,
            r: Request<pb::DeleteRequest>,
        ) -> Result<Response<pb::WriteReply>, Status> {
            self.svc.delete(r).await
        }
        async fn replicate(
            &self,
            r: Request<pb::ReplicateRequest>,
        ) -> Result<Response<pb::ReplicateReply>, Status> {
            self.svc.replicate(r).await
        }
        type CollectStream = <ClusterService as Cluster>::CollectStream;
        async fn collect(
            &self,
            mut r: Request<pb::CollectRequest>,
        ) -> Result<Response<Self::CollectStream>, Status> {
            if self.release == Release::Old {
                // An earlier release drops the fields it does not know.
                r.get_mut().responders.clear();
                r.get_mut().only_keys.clear();
            }
            let mut answer = self.svc.collect(r).await?;
            if self.damaged {
                let chunks: Vec<_> = answer.get_mut().collect().await;
                let chunks = chunks.into_iter().map(|mut c| {
                    if let Some(g) = c.as_mut().ok().and_then(|c| c.groups.first_mut()) {
                        g.truncate(g.len() / 2);
                    }
                    c
                });
                return Ok(Response::new(tokio_stream::iter(
                    chunks.collect::<Vec<_>>(),
                )));
            }
            Ok(answer)
        }
        async fn wipe(
            &self,
            r: Request<pb::WipeRequest>,
        ) -> Result<Response<pb::WipeReply>, Status> {
            self.svc.wipe(r).await
        }
        async fn sync(
            &self,
            r: Request<pb::SyncRequest>,
        ) -> Result<Response<pb::SyncReply>, Status> {
            self.svc.sync(r).await
        }
        async fn forward(
            &self,
            mut r: Request<pb::ForwardRequest>,
        ) -> Result<Response<pb::ForwardReply>, Status> {
            if self.release == Release::Old {
                return Err(Status::unimplemented("old peer"));
            }
            if matches!(self.release, Release::PreMerge | Release::PrimaryReplicates) {
                for w in &mut r.get_mut().writes {
                    w.sender_replicates = false;
                }
            }
            if self.release == Release::PreMerge {
                r.get_mut().replicas.clear();
            }
            let req = r.get_ref();
            self.calls
                .lock()
                .push(("forward", req.writes.len(), req.replicas.len()));
            let bodies = req.writes.iter().filter(|w| w.body.is_some()).count();
            self.bodies.fetch_add(bodies, Ordering::Relaxed);
            if let Some(gate) = &self.held {
                let _permit = gate.acquire().await.unwrap();
            }
            self.svc.forward(r).await
        }
        async fn replicate_batch(
            &self,
            r: Request<pb::ReplicateBatchRequest>,
        ) -> Result<Response<pb::ReplicateBatchReply>, Status> {
            if self.release == Release::Old {
                return Err(Status::unimplemented("old peer"));
            }
            self.calls
                .lock()
                .push(("replicate_batch", 0, r.get_ref().items.len()));
            self.svc.replicate_batch(r).await
        }
    }

    /// A merged view from node a of a, b, c (R = 3), b and c holding the same 60 groups and a
    /// none; `c` is how c answers.
    async fn merged_view_of_three(c: Option<fn(ClusterService) -> TestPeer>) -> Vec<String> {
        let mut listeners = Vec::new();
        for _ in 0..3 {
            listeners.push(tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap());
        }
        let port = |i: usize| listeners[i].local_addr().unwrap().port();
        let members = [("a", port(0)), ("b", port(1)), ("c", port(2))];
        let (_, a) = node("a", &members, 3);
        let (store_b, b) = node("b", &members, 3);
        let (store_c, svc_c) = node("c", &members, 3);
        for g in 0..60 {
            for store in [&store_b, &store_c] {
                store.push(prepared(&format!("g{g}"), BODY), 1.0).unwrap();
            }
        }
        let mut listeners = listeners.into_iter().skip(1);
        serve_on(listeners.next().unwrap(), b);
        let lc = listeners.next().unwrap();
        match c {
            Some(wrap) => {
                serve_on(lc, wrap(svc_c));
            }
            // Down: nothing listens on c's port any more.
            None => drop(lc),
        }
        let view = a.core.merged_groups(Duration::from_secs(2), false).await;
        view.iter().map(|g| g.key.to_string()).collect()
    }

    #[tokio::test]
    async fn a_merged_view_asks_again_for_the_groups_left_to_a_peer_that_failed() {
        let want: std::collections::BTreeSet<String> =
            (0..60).map(|g| key(&format!("g{g}")).to_string()).collect();
        // c is down: b sends the groups it comes first for and names the others, which a then
        // asks b for (without the second call about half the groups would be missing).
        let got = merged_view_of_three(None).await;
        assert_eq!(got.len(), 60);
        assert_eq!(
            got.into_iter().collect::<std::collections::BTreeSet<_>>(),
            want
        );
        // c of an earlier release sends everything: each group is in the view once; and when
        // c's answer cannot be decoded, of the groups b sent those set aside as repeats of c's
        // are decoded after all, and those b left to c are asked for again.
        for c in [old, damaged] {
            let got = merged_view_of_three(Some(c)).await;
            assert_eq!(got.len(), 60);
            assert_eq!(
                got.into_iter().collect::<std::collections::BTreeSet<_>>(),
                want
            );
        }
    }

    /// A peer that accepts connections and never answers holds a scrape for the collect
    /// deadline (3 s here), or for 40% of the client's scrape timeout when that is shorter.
    #[tokio::test]
    async fn a_scrape_waits_for_a_silent_peer_within_the_client_timeout() {
        let port = silent_peer().await;
        let (store, a) = service_with(&[("a", 1), ("b", port)], 2);
        store.push(prepared("here", BODY), 1.0).unwrap();
        assert_eq!(a.core.scrape_deadline(None), Duration::from_secs(3));
        let gateway = ClusterGateway::new(a.core.clone());
        let started = Instant::now();
        let mut chunks = gateway
            .render_stream(
                Format::Text,
                Vec::new(),
                false,
                Some(Duration::from_millis(500)),
            )
            .await;
        let mut body = Vec::new();
        while let Some(c) = chunks.recv().await {
            body.extend_from_slice(&c.unwrap());
        }
        let took = started.elapsed();
        // The first round's deadline is 200 ms; nothing was deferred, so there is no second.
        assert!(took < Duration::from_millis(1500), "took {took:?}");
        assert!(String::from_utf8(body).unwrap().contains("job=\"here\""));
    }

    fn replica_of(job: &str, version: u64) -> pb::ReplicateRequest {
        let store = Store::new(StoreOptions::default());
        store
            .push_versioned(prepared(job, BODY), 1.0, || version)
            .unwrap();
        pb::ReplicateRequest {
            group: rpc::group_to_bytes(&store.group(&key(job)).unwrap()).into(),
            tombstone_key: Vec::new(),
            version,
        }
    }

    /// Forwards and replications through real gRPC, to a current peer and to an older one.
    async fn round_trip(older: bool) {
        let (store, svc) = service(1);
        let addr = if older {
            serve(old(svc)).await
        } else {
            serve(svc).await
        };
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
            key: rpc::key_to_pb(&key("f1")),
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
    /// one `Forward` call, or, to a peer of a release before the sixth round of 2026-11-30
    /// (`pre_merge`), travel side by side; each item gets its own answer either way.
    async fn writes_and_replicas_together(pre_merge: bool) {
        let (store, svc) = service(1);
        let release = if pre_merge {
            Release::PreMerge
        } else {
            Release::Current
        };
        let peer = TestPeer::new(svc, release);
        let calls = peer.calls.clone();
        let addr = serve(peer).await;
        let clients = PeerClients::new(Duration::from_secs(5));
        let peer = clients.peer(addr);
        let deadline = || Instant::now() + Duration::from_secs(5);
        // A first write alone: the peer is then known to answer `Forward`.
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
        let expected = if pre_merge {
            vec![
                ("forward", 1, 0),
                // The first mixed batch: the replicas it carried went unseen and unanswered, so
                // they were sent again by themselves; the next batch goes side by side.
                ("forward", 3, 0),
                ("replicate_batch", 0, 4),
                ("forward", 3, 0),
                ("replicate_batch", 0, 4),
            ]
        } else {
            vec![("forward", 1, 0), ("forward", 3, 4), ("forward", 3, 4)]
        };
        // The last round's two calls side by side may arrive in either order.
        let (mut got, mut want) = (calls.clone(), expected);
        got[3..].sort();
        want[3..].sort();
        assert_eq!(got, want, "calls: {calls:?}");
    }

    #[tokio::test]
    async fn writes_and_replicas_for_one_peer_share_a_call() {
        writes_and_replicas_together(false).await;
    }

    #[tokio::test]
    async fn a_peer_that_ignores_replicas_in_a_forward_gets_them_by_replicate_batch() {
        writes_and_replicas_together(true).await;
    }

    /// A port that accepts connections and counts them, never answering.
    async fn counting_peer() -> (u16, Arc<AtomicUsize>) {
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
    fn job_in_order(ring: &Ring, order: &[&str]) -> String {
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

    /// A primary asked to leave the replication to the sender answers without calling any
    /// node: a `Forward` call then waits on nothing but the primary's store, so replicas may
    /// share its queue and call (three nodes forwarding to each other in a ring cannot wait on
    /// each other). Here the other owner never answers; had the primary called it, the write
    /// would have waited for it and failed.
    #[tokio::test]
    async fn a_forward_left_to_its_sender_is_answered_without_calling_any_node() {
        let (port, accepted) = counting_peer().await;
        let (store, svc) = service_with(&[("a", 1), ("b", port)], 2);
        for (job, put) in [("put", true), ("post", false)] {
            let families = parse_text(BODY.as_bytes(), NameScheme::Legacy).unwrap();
            let p = prepare_push(key(job), families, put, &Validation::default()).unwrap();
            let mut w = forward_message(&WriteOp::Push(p), "c").0;
            w.deadline_unix_ms = forward_deadline_ms(Duration::from_secs(5));
            assert!(w.sender_replicates);
            let r = &forward_all(&svc, vec![w]).await[0];
            assert_eq!(r.reply.as_ref().unwrap().status, 200);
            assert!(r.left_to_sender);
            let held = store.group(&key(job)).unwrap();
            if put {
                // A PUT: the stamp, for the sender to send its own prepared families.
                assert!(r.replica.is_none());
                assert_eq!(r.own_replica.unwrap().version, held.version);
            } else {
                // A POST merged into the group: its state.
                assert!(r.own_replica.is_none());
                assert_eq!(r.replica.as_ref().unwrap().version, held.version);
            }
        }
        // A delete: its tombstone.
        let del = pb::ForwardedWrite {
            key: rpc::key_to_pb(&key("put")),
            delete: true,
            sender_replicates: true,
            deadline_unix_ms: forward_deadline_ms(Duration::from_secs(5)),
            ..Default::default()
        };
        let r = &forward_all(&svc, vec![del]).await[0];
        assert_eq!(r.reply.as_ref().unwrap().status, 202);
        assert!(r.left_to_sender);
        assert!(!r.replica.as_ref().unwrap().tombstone_key.is_empty());
        assert!(store.group(&key("put")).is_none());
        tokio::task::yield_now().await;
        assert_eq!(accepted.load(Ordering::SeqCst), 0, "no node was called");
    }

    /// A PUT through `a` of a job whose rendezvous order is `order`, acknowledged; the job.
    async fn push_through(a: &ClusterCore, order: &[&str]) -> String {
        let job = job_in_order(&a.ring(), order);
        let answer = a
            .route(WriteOp::Push(prepared(&job, BODY)), Vec::new())
            .await;
        assert_eq!(answer.status, 200, "{}", answer.message);
        job
    }

    /// Nodes a, b and c over gRPC, R = 2 (a serves no gRPC: a call to it fails); b answers as
    /// `b_release`; a and b reach c only with `a_reaches_c` and `b_reaches_c` (else they see it
    /// at a closed port). a's gateway core, the stores of a, b and c, and the calls c got.
    async fn three_nodes(
        b_release: Release,
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
        serve_on(b_listener, TestPeer::new(b, b_release));
        let c = TestPeer::new(c, Release::Current);
        let calls = c.calls.clone();
        serve_on(c_listener, c);
        (a.core, [store_a, store_b, store_c], calls)
    }

    /// A write through a node that owns no copy: the primary applies it and leaves the
    /// replication to the sender, which sends the replica to the other owner (the primary
    /// cannot reach that owner here: only the sender's copy gets there).
    #[tokio::test]
    async fn a_write_through_a_node_that_owns_no_copy_is_replicated_by_that_node() {
        let (a, [store_a, store_b, store_c], calls) =
            three_nodes(Release::Current, true, false).await;
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
        let (a, [store_a, store_b, store_c], calls) =
            three_nodes(Release::Current, true, true).await;
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
        let (a, [store_a, store_b, _], _) = three_nodes(Release::Current, false, false).await;
        let job = push_through(&a, &["b", "c", "a"]).await;
        let version = store_b.group_version(&key(&job)).unwrap();
        assert_eq!(store_a.group_version(&key(&job)), Some(version));
    }

    /// A node that receives far more writes than it applies for others (an entry point for the
    /// load) leaves the replicas to the primary: a write through it whose owners are the other
    /// two reaches both (it cannot reach the second owner itself here) and it holds nothing.
    #[tokio::test]
    async fn an_entry_heavy_node_leaves_the_replicas_to_the_primary() {
        let (a, [store_a, store_b, store_c], _) = three_nodes(Release::Current, false, true).await;
        entry_heavy(&a);
        let job = push_through(&a, &["b", "c", "a"]).await;
        let version = store_b.group_version(&key(&job)).unwrap();
        assert_eq!(store_c.group_version(&key(&job)), Some(version));
        assert!(store_a.group(&key(&job)).is_none());
    }

    /// Makes `a` entry-heavy for the current second.
    fn entry_heavy(a: &ClusterCore) {
        a.entry.heavy.store(true, Ordering::Relaxed);
        a.entry
            .window_start_ms
            .store(crate::time::unix_millis(), Ordering::Relaxed);
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
        }
    }

    /// Nodes a and b, R = 1: a's gateway, a's and b's stores, and how many bodies not decoded
    /// b got. a sees b gossip the raw-push feature when `b_decodes`.
    async fn entry_and_primary(
        b_decodes: bool,
    ) -> (ClusterGateway, [Arc<Store>; 2], Arc<AtomicUsize>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let members = [("a", 1), ("b", port)];
        let (store_a, a) = node_seeing("a", &members, 1, |id| id == "a" || b_decodes);
        let (store_b, b) = node("b", &members, 1);
        let b = TestPeer::new(b, Release::Current);
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
        let (a, [store_a, store_b], bodies) = entry_and_primary(true).await;
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

    /// A member that does not gossip the raw-push feature (a node of an earlier release) gets
    /// the families decoded, even from an entry-heavy node.
    #[tokio::test]
    async fn a_body_goes_only_to_a_primary_that_decodes_bodies() {
        let (a, [_, store_b], bodies) = entry_and_primary(false).await;
        entry_heavy(&a.core);
        let job = job_in_order(&a.core.ring(), &["b", "a"]);
        a.push(raw(&job, BODY.as_bytes(), false, true))
            .await
            .unwrap();
        assert_eq!(bodies.load(Ordering::Relaxed), 0);
        assert!(store_b.group(&key(&job)).is_some());
    }

    /// A body the primary decodes is refused as the single node refuses it: the same error
    /// (status, message, and what the HTTP layer makes of it), a refused push recorded on its
    /// group only when the single node records it, and nothing else changed.
    #[tokio::test]
    async fn a_body_decoded_by_the_primary_is_refused_as_a_single_node_refuses_it() {
        let (a, [_, store_b], bodies) = entry_and_primary(true).await;
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

    #[test]
    fn a_node_is_entry_heavy_when_it_receives_far_more_writes_than_it_applies_for_others() {
        let load = EntryLoad::default();
        let t0 = 10_000_000;
        assert!(!load.received(t0), "starts light");
        // A second of 200 writes received and none forwarded to it: heavy from the next one.
        for _ in 0..199 {
            load.received(t0 + 500);
        }
        assert!(load.received(t0 + 1500), "entry-heavy");
        // Behind a balancer: 2 applied for others per 3 received.
        for _ in 0..200 {
            load.received(t0 + 2000);
        }
        for _ in 0..130 {
            load.served();
        }
        assert!(!load.received(t0 + 2600), "balanced");
        // Below 64 writes a second, never heavy.
        for _ in 0..40 {
            load.received(t0 + 3000);
        }
        assert!(!load.received(t0 + 3700));
        // Heavy again, then no writes: the next roll (a scrape) finds the node light.
        for _ in 0..200 {
            load.received(t0 + 4000);
        }
        assert!(load.received(t0 + 4800));
        load.roll(t0 + 9000);
        assert!(!load.heavy.load(Ordering::Relaxed), "idle");
        // The first of 100 writes rolls the window; 99 more over the next 3.2 s are fewer than
        // 64 a second.
        for _ in 0..100 {
            load.received(t0 + 10_000);
        }
        load.roll(t0 + 13_200);
        assert!(!load.heavy.load(Ordering::Relaxed), "sparse");
    }

    /// A write the primary is to replicate before it answers travels in a queue of its own: a
    /// replica for the same peer is not held behind it while it is in flight (even with no slow
    /// call rule to let another call start), or three nodes forwarding such writes to each other
    /// in a ring would wait on each other until the timeout.
    #[tokio::test]
    async fn a_replica_is_not_held_behind_a_write_its_primary_replicates() {
        let (store, svc) = service(1);
        let gate = Arc::new(tokio::sync::Semaphore::new(0));
        let mut peer = TestPeer::new(svc, Release::Current);
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
            let w = earlier_release(forwarded("held", BODY));
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

    /// A primary of an earlier release replicates the write itself and says nothing of leaving
    /// it to the sender: the sender does not replicate it again.
    #[tokio::test]
    async fn a_write_an_earlier_primary_replicated_is_not_replicated_again() {
        let (a, [store_a, store_b, store_c], calls) =
            three_nodes(Release::PrimaryReplicates, true, true).await;
        let job = push_through(&a, &["b", "c", "a"]).await;
        let version = store_b.group_version(&key(&job)).unwrap();
        assert_eq!(store_c.group_version(&key(&job)), Some(version));
        assert!(store_a.group(&key(&job)).is_none());
        // One call to c: the primary's.
        assert_eq!(calls.lock().len(), 1, "{:?}", calls.lock());
    }

    /// A node of the previous release sends its replicas inside `Forward`
    /// (`ForwardRequest.replicas`); they are applied and answered item by item, beside the
    /// writes.
    #[tokio::test]
    async fn replicas_inside_a_forward_call_are_answered_for_an_earlier_release() {
        let (store, svc) = service(1);
        let mut broken = replica_of("broken", 7);
        broken.group.truncate(broken.group.len() / 2);
        let req = pb::ForwardRequest {
            writes: vec![forwarded("w", BODY)],
            replicas: vec![replica_of("r", 5), replica_of("r", 4), broken],
        };
        let reply = svc.forward(Request::new(req)).await.unwrap().into_inner();
        assert_eq!(reply.results.len(), 1);
        assert_eq!(reply.results[0].reply.as_ref().unwrap().status, 200);
        let r = &reply.replica_results;
        assert_eq!(r.len(), 3);
        assert_eq!((r[0].error_code, r[0].applied), (0, true));
        assert_eq!((r[1].error_code, r[1].applied), (0, false));
        assert_eq!(r[2].error_code, tonic::Code::InvalidArgument as u32);
        assert_eq!(store.group_version(&key("r")), Some(5));
        assert!(store.group(&key("w")).is_some());
        assert!(store.group(&key("broken")).is_none());
    }

    #[tokio::test]
    async fn batched_calls_round_trip_over_grpc() {
        round_trip(false).await;
    }

    #[tokio::test]
    async fn a_peer_without_batch_calls_gets_single_calls() {
        round_trip(true).await;
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
        let every = [
            PushError::Invalid("x".into()),
            PushError::Malformed("bad name".into()),
            PushError::TooLarge("too big".into()),
            PushError::LimitExceeded("too many".into()),
            PushError::Unavailable("retry".into()),
            PushError::BadBody("text format parsing error".into()),
        ];
        for e in every {
            // Through the wire, as a peer's reply.
            let reply = write_reply_pb(WriteAnswer::from_error(&e));
            let back = WriteAnswer {
                status: reply.status as u16,
                refusal: reply.refusal(),
                message: reply.message,
            };
            assert_eq!(back.into_result(), Err(e));
        }
        assert!(WriteAnswer::ok(202).into_result().is_ok());
        let odd = WriteAnswer {
            status: 999,
            message: String::new(),
            refusal: pb::Refusal::Unspecified,
        }
        .sanitized();
        assert_eq!(odd.status, 503);
    }

    #[test]
    fn a_refusal_without_a_name_or_with_another_status_is_told_by_status_and_message() {
        let answer = |status, message: &str, refusal| WriteAnswer {
            status,
            message: message.to_owned(),
            refusal,
        };
        let prefixed = PushError::Invalid("x".into()).to_string();
        let unnamed = pb::Refusal::Unspecified;
        // As nodes before 2026-12-01 answer.
        assert_eq!(
            answer(400, &prefixed, unnamed).into_result(),
            Err(PushError::Invalid("x".into()))
        );
        assert_eq!(
            answer(400, "limit", unnamed).into_result(),
            Err(PushError::LimitExceeded("limit".into()))
        );
        assert_eq!(
            answer(413, "big", unnamed).into_result(),
            Err(PushError::TooLarge("big".into()))
        );
        assert_eq!(
            answer(503, "down", unnamed).into_result(),
            Err(PushError::Unavailable("down".into()))
        );
        // A name that does not go with the status is not trusted.
        assert_eq!(
            answer(503, "down", pb::Refusal::BadBody).into_result(),
            Err(PushError::Unavailable("down".into()))
        );
    }
}
