//! Applying a write as its primary and copying it to the other holders: quorum, replication to
//! the next nodes in rendezvous order with hedging, and taking a replica.

use std::collections::VecDeque;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use futures_util::stream::{FuturesUnordered, StreamExt};
use tonic::Status;

use super::super::core::{off_runtime_if_large, refuse_decoded, ClusterCore};
use super::super::events::{ClusterEvent, Refusal};
use super::super::member::{Member, MemberState, NodeId};
use super::super::rpc::{pb, wire};
use super::op::{decoded, WriteAnswer, WriteOp};
use crate::ingest::PushRequest;
use crate::store::aggregate::{AggregateWrite, Taken};
use crate::store::{Deleted, GroupKey, GroupSnapshot, PushError};
use crate::time::unix_seconds;

impl ClusterCore {
    /// Applies a write as the group's primary and replicates it; the answer waits for R holders.
    /// With `trip`, a replica meant for the node that forwarded the write is left in it, to
    /// travel back with the answer.
    pub(crate) async fn apply_as_primary(
        &self,
        op: WriteOp,
        unreachable: Vec<String>,
        trip: Option<&mut ReturnTrip>,
    ) -> WriteAnswer {
        let key = op.key().clone();
        let now = unix_seconds();
        let applied = self.apply_here(op);
        let Some(replica) = applied.replica else {
            return applied.answer;
        };
        let me = self.self_id.as_str();
        let holders = 1 + self
            .replicate(&key, replica, me, &unreachable, trip)
            .await;
        let answer = self.quorum(applied.answer, holders);
        if let (503, Some(taken)) = (answer.status, applied.taken) {
            // An aggregating push fewer than R nodes took is taken back before it is answered
            // 503 (its increments subtracted from this node's partial as a newer update of it,
            // its idempotency key withdrawn), and the withdrawal is copied to the same nodes:
            // the push never counts, and a client's retry counts once (docs/architecture.md,
            // "Aggregating groups on a cluster").
            let clock = || self.clock.now();
            if let Some(back) = self.store.retract_aggregate(&key, taken, now, &clock) {
                self.replicate(&key, Replica::Group(back), me, &unreachable, None)
                    .await;
            }
            ClusterEvent::AggregateRetracted.emit();
        }
        answer
    }

    /// [`Self::apply_as_primary`] for an aggregating push, on the node that adds it (the group's
    /// primary, or for a push without a key any owner it reached: `route::adds_here`), in a task
    /// of its own. The call that brought the push (a client's request, a peer's batch under
    /// `--cluster.grpc-timeout`) may be dropped while the copies are under way, and the push must
    /// still be taken back when fewer than R nodes took it: else it would count on this node
    /// alone while its client, answered 503, retries it elsewhere, and it would count twice once
    /// the copies merge.
    pub(crate) async fn aggregate_as_primary(
        self: &Arc<Self>,
        op: WriteOp,
        unreachable: Vec<String>,
    ) -> WriteAnswer {
        let core = Arc::clone(self);
        let task = tokio::spawn(async move {
            let _applying = core.applying();
            core.apply_as_primary(op, unreachable, None).await
        });
        task.await.unwrap_or_else(|e| {
            WriteAnswer::unavailable(format!(
                "adding this aggregating push failed ({e}): it may have been added; retry with the same Idempotency-Key header to have it counted once"
            ))
        })
    }

    /// Applies a write as the group's primary, stamping its version; what is left is to copy
    /// the resulting state to the other holders.
    pub(crate) fn apply_here(&self, op: WriteOp) -> Applied {
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
                        taken: None,
                    },
                    Err(e) => self.refused(&key, &e),
                }
            }
            WriteOp::Aggregate {
                req,
                idempotency_key,
            } => self.aggregate_here(req, idempotency_key.as_deref(), now),
            // Not reached from `route` or `forwarded`, which decode a body before.
            WriteOp::Raw(req) => match decoded(req, &self.validation, &self.store, false) {
                Ok(op) => self.apply_here(op),
                Err(e) => Applied {
                    answer: WriteAnswer::from_error(&e),
                    replica: None,
                    taken: None,
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
                        .then(|| self.store.transfer_copy(&key).map(Replica::Group))
                        .flatten(),
                    taken: None,
                }
            }
            WriteOp::Delete(key) => {
                let version = clock.now();
                // Replicated whatever happens here: a co-owner may hold the group.
                self.delete_here(&key, version);
                Applied {
                    answer: WriteAnswer::ok(202),
                    replica: Some(Replica::Tombstone(version)),
                    taken: None,
                }
            }
        }
    }

    /// Adds an aggregating push into its group (into this node's partial), versioned by this
    /// node's clock; the group's copy to replicate carries the state. A repeated push (same
    /// `Idempotency-Key`) adds nothing, and its state is replicated all the same, so that its
    /// 200 too means R nodes hold what it added the first time.
    fn aggregate_here(&self, req: PushRequest, idempotency_key: Option<&str>, now: f64) -> Applied {
        let key = req.key.clone();
        let clock = || self.clock.now();
        let added = PushRequest::decode(&req.body, req.format, &self.validation).and_then(|d| {
            let write = AggregateWrite {
                incoming: d.incoming(),
                idempotency_key,
                v: &self.validation,
                ttl: req.ttl,
                now,
            };
            self.store.aggregate_versioned(key.clone(), write, &clock)
        });
        match added {
            Ok((_, taken)) => Applied {
                answer: WriteAnswer::ok(200),
                replica: self.store.transfer_copy(&key).map(Replica::Group),
                taken,
            },
            Err(e) => self.refused(&key, &e),
        }
    }

    /// A refused push: a refusal for its content still recorded the failure time on the group,
    /// which is copied too, but the answer is the refusal whatever happens to the copies.
    fn refused(&self, key: &GroupKey, e: &PushError) -> Applied {
        Applied {
            answer: WriteAnswer::from_error(e),
            replica: matches!(e, PushError::Invalid(_))
                .then(|| self.store.transfer_copy(key).map(Replica::Group))
                .flatten(),
            taken: None,
        }
    }

    /// The answer to a write that `holders` nodes took: a success needs R of them (a refusal
    /// stands whatever happened to the copies of the failure time it recorded).
    pub(crate) fn quorum(&self, answer: WriteAnswer, holders: usize) -> WriteAnswer {
        let needed = self.write_quorum();
        if !matches!(answer.status, 200 | 202) || holders >= needed {
            return answer;
        }
        WriteAnswer::unavailable(format!(
            "only {holders} of the {needed} cluster nodes the write needs (--cluster.replication-factor, --cluster.write-quorum) could take it; retry"
        ))
    }

    /// Sends a group's state to the R-1 nodes after `applied_by` (the node that applied the
    /// write: this one as primary, or the primary a forwarded write went to) in rendezvous
    /// order, in parallel, moving on to the next node for every one that fails. Returns how many
    /// took it. This node, when it comes up among them, holds its copy itself. A node that is
    /// `trip`'s sender gets it in the answer to its forward instead, and counts as having taken
    /// it.
    pub(crate) async fn replicate(
        &self,
        key: &GroupKey,
        replica: Replica,
        applied_by: &str,
        unreachable: &[String],
        trip: Option<&mut ReturnTrip>,
    ) -> usize {
        let needed = self.replication_factor.saturating_sub(1);
        self.replicate_n(key, replica, needed, applied_by, unreachable, trip)
            .await
    }

    /// Sends a group's state to its R owners in rendezvous order (this node holding its own
    /// copy when it is one), moving on to the next node for each that fails, like a push's
    /// replicas: for a state no primary applied (an imported group). Returns how many took it.
    pub(crate) async fn replicate_to_owners(&self, key: &GroupKey, replica: Replica) -> usize {
        self.replicate_n(key, replica, self.replication_factor, "", &[], None)
            .await
    }

    /// [`Self::replicate`] to `needed` nodes other than `applied_by`.
    async fn replicate_n(
        &self,
        key: &GroupKey,
        replica: Replica,
        needed: usize,
        applied_by: &str,
        unreachable: &[String],
        trip: Option<&mut ReturnTrip>,
    ) -> usize {
        if needed == 0 {
            return 0;
        }
        let ring = self.ring();
        let usable = |m: &&Member| {
            m.id.as_str() != applied_by && !unreachable.iter().any(|u| u == m.id.as_str())
        };
        let mut candidates: VecDeque<Member> = ring
            .rendezvous_order(key.stable_hash())
            .into_iter()
            .filter(usable)
            .cloned()
            .collect();
        // Members still joining, then members leaving, come last, as stand-ins (a hint, handed
        // to the owners by the reconciler, beats a write short of R holders). At a cold start
        // every node sees the others joining for a gossip round. In a rolling restart a node
        // is leaving (draining, then handing over) while the one restarted before it may not
        // be active in this node's ring yet: without the leaving node, a 3-node cluster would
        // have a single candidate. A leaving node refuses copies once its last handover
        // starts (`ClusterCore::close`), and the next candidate is asked.
        for state in [MemberState::Joining, MemberState::Leaving] {
            candidates.extend(
                ring.members
                    .iter()
                    .filter(|m| m.state == state)
                    .filter(usable)
                    .cloned(),
            );
        }
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
                    ClusterEvent::ReplicaTaken { peer: None }.emit();
                }
                Err(why) => ClusterEvent::ReplicaFailed {
                    peer: None,
                    why: Some(&why),
                }
                .emit(),
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
                    Some(peer) => {
                        let sent = Instant::now();
                        let ok = peer.replicate(msg, size, deadline).await.is_ok();
                        ClusterEvent::PeerCall {
                            peer: &m.id,
                            call: "replicate",
                            seconds: sent.elapsed().as_secs_f64(),
                        }
                        .emit();
                        ok
                    }
                    None => self.take_replica(msg).await.is_ok(),
                };
                (m, ok)
            }
        };
        // Peers that failed fast and were asked once more (see below).
        let mut retried: Vec<NodeId> = Vec::new();
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
                    Some((m, true)) => {
                        acked += 1;
                        let peer = (m.id != self.self_id).then_some(&m.id);
                        ClusterEvent::ReplicaTaken { peer }.emit();
                        if acked >= needed {
                            break;
                        }
                    }
                    Some((peer, false)) => {
                        ClusterEvent::ReplicaFailed { peer: Some(&peer.id), why: None }.emit();
                        if let Some(m) = candidates.pop_front() {
                            inflight.push(send(m));
                        } else if peer.id != self.self_id
                            && !retried.contains(&peer.id)
                            && Instant::now() < started + timeout / 2
                        {
                            // No candidate left, and this one failed at once: a call on a
                            // connection to a peer that has since restarted fails once, and
                            // the next call reconnects (tonic's channel). Asked once more,
                            // rather than answering 503 with a node that can take the copy.
                            retried.push(peer.id.clone());
                            inflight.push(send(peer));
                        }
                    }
                },
                () = &mut hedge, if !hedged => {
                    hedged = true;
                    for _ in acked..needed {
                        let Some(m) = candidates.pop_front() else { break };
                        ClusterEvent::ReplicaHedged { peer: &m.id }.emit();
                        inflight.push(send(m));
                    }
                }
            }
        }
        acked
    }

    /// A group state (or tombstone) from the primary, applied when newer than what is held;
    /// false when a newer one is held. A stand-in copy beyond `--cluster.max-hints` is refused.
    pub(crate) async fn take_replica(&self, req: pb::ReplicateRequest) -> Result<bool, Status> {
        let names = self.names();
        let what = if req.tombstone_key.is_empty() {
            "replica"
        } else {
            "tombstone"
        };
        self.peer_version(req.version, what)?;
        if !req.tombstone_key.is_empty() {
            let key = wire::key_from_pb(req.tombstone_key, names).map_err(refuse_decoded)?;
            let hint = self.reserve_hint(&key)?;
            self.clock.observe(req.version);
            let applied = self.delete_here(&key, req.version);
            if hint && !applied {
                self.release_hint();
            }
            return Ok(applied);
        }
        let group = req.group;
        let size = group.len();
        let g = off_runtime_if_large(size, move || wire::group_from_bytes(&group, names))
            .await
            .map_err(|e| Status::internal(e.to_string()))?
            .map_err(refuse_decoded)?;
        if g.version != req.version {
            return Err(refuse_decoded(
                "group version differs from the request's".to_owned(),
            ));
        }
        let hint = self.reserve_hint(&g.key)?;
        self.clock.observe(req.version);
        let store = self.store.clone();
        let applied = off_runtime_if_large(size, move || store.apply_replica(g))
            .await
            .map_err(|e| Status::internal(e.to_string()))?;
        if hint && !applied {
            self.release_hint();
        }
        Ok(applied)
    }

    /// Counts a copy of a group this node neither owns nor holds yet as a hint, when there is
    /// room for it (`--cluster.max-hints`): counted as it is taken, so a burst of stand-in copies
    /// cannot exceed the limit before the next reconciliation round counts them. True when a
    /// hint was counted (to give back if the copy is not applied).
    fn reserve_hint(&self, key: &GroupKey) -> Result<bool, Status> {
        let owned = self
            .ring()
            .owners(key.stable_hash(), self.replication_factor)
            .iter()
            .any(|m| m.id == self.self_id);
        if owned || self.store.group_version(key).is_some() || self.store.tombstone(key).is_some() {
            return Ok(false);
        }
        let max = self.max_hints.load(Ordering::Acquire);
        let counted = self
            .hints
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < max).then_some(n + 1)
            });
        if counted.is_err() {
            let detail = "this node holds --cluster.max-hints groups for other owners already";
            ClusterEvent::Refused {
                reason: Refusal::Hints,
                detail,
            }
            .emit();
            return Err(Status::resource_exhausted(detail));
        }
        self.hints_taken.fetch_add(1, Ordering::AcqRel);
        Ok(true)
    }

    fn release_hint(&self) {
        let down = |n: usize| Some(n.saturating_sub(1));
        let _ = self
            .hints
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, down);
        let _ = self
            .hints_taken
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, down);
    }

    /// Deletes a group here at `version`, within the tombstone budget (a tombstone for a group
    /// this node does not hold is not kept beyond it, and that is counted); true when the
    /// tombstone was recorded.
    pub(crate) fn delete_here(&self, key: &GroupKey, version: u64) -> bool {
        let deleted = self.store.delete_within_budget(key, version);
        match deleted {
            Deleted::Recorded => self.report_tombstones(),
            Deleted::OverBudget => ClusterEvent::Refused {
                reason: Refusal::Tombstones,
                detail: "tombstone budget spent (--cluster.max-tombstones, --cluster.max-tombstone-bytes); no tombstone kept for a group not held",
            }
            .emit(),
            Deleted::Stale => {}
        }
        deleted == Deleted::Recorded
    }

    /// Holds a copy of a write another node applied, as one of its replicas.
    pub(crate) async fn hold_here(&self, key: &GroupKey, replica: &Replica) -> Result<(), String> {
        match replica {
            Replica::Group(g) | Replica::Put(g) => {
                self.clock.observe(g.version);
                self.store.apply_replica(g.clone());
                Ok(())
            }
            Replica::Tombstone(version) => {
                self.clock.observe(*version);
                self.delete_here(key, *version);
                Ok(())
            }
            Replica::Encoded(state) => self
                .take_replica(state.clone())
                .await
                .map(|_| ())
                .map_err(|status| status.message().to_owned()),
        }
    }
}

/// The state a write left, to copy to the other holders.
pub(crate) enum Replica {
    Group(GroupSnapshot),
    /// The group as a successful PUT left it: exactly the pushed families.
    Put(GroupSnapshot),
    Tombstone(u64),
    /// A state the primary encoded (and left to this node to replicate).
    Encoded(pb::ReplicateRequest),
}

/// A write applied on its primary, before its state is copied to the other holders.
pub(crate) struct Applied {
    pub(crate) answer: WriteAnswer,
    /// The state the write left, to copy (None: nothing to copy).
    pub(crate) replica: Option<Replica>,
    /// An aggregating push added in: what takes it back if it cannot be given R holders.
    pub(crate) taken: Option<Taken>,
}

/// A replica as sent to a peer.
pub(crate) fn replica_message(key: &GroupKey, replica: Replica) -> pb::ReplicateRequest {
    match replica {
        Replica::Group(g) | Replica::Put(g) => pb::ReplicateRequest {
            version: g.version,
            group: wire::group_to_bytes(&g).into(),
            tombstone_key: Vec::new(),
        },
        Replica::Tombstone(version) => pb::ReplicateRequest {
            version,
            group: Default::default(),
            tombstone_key: wire::key_to_pb(key),
        },
        Replica::Encoded(state) => state,
    }
}

/// The version and times a PUT left on its primary.
pub(crate) fn stamp_of(g: &GroupSnapshot) -> pb::OwnReplica {
    pb::OwnReplica {
        version: g.version,
        push_time: g.push_time,
        failure_time: g.failure_time,
        failure_stamp: g.stamps.failure,
        cleared: g.stamps.cleared,
    }
}

/// A forwarded write's way back: the sender's node id and, once the primary replicated, the
/// replica the sender is to hold.
pub(crate) struct ReturnTrip {
    pub(crate) sender: String,
    pub(crate) replica: Option<pb::ReplicateRequest>,
    /// The sender can hold its own families of a PUT (`ForwardedWrite.own_replica`) ...
    pub(crate) own_ok: bool,
    /// ... and is to, with this stamp (instead of `replica`).
    pub(crate) own: Option<pb::OwnReplica>,
}

#[cfg(test)]
mod tests {

    use super::*;
    use crate::cluster::testkit::*;

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

    /// A rolling restart of 3 nodes: b is leaving (draining), c restarted and is not in a's
    /// ring yet. a is the only active member: b stands in for the copy, and the write is
    /// acknowledged (it answered "only 1 of the 2 ..." when leaving members were no
    /// candidates). Once b starts its last handover it refuses copies, and the next stand-in
    /// (a joining member) takes it instead.
    #[tokio::test]
    async fn a_leaving_member_stands_in_until_its_last_handover() {
        use crate::cluster::bounds::ClusterBounds;
        let b_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let b_port = b_listener.local_addr().unwrap().port();
        let c_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let c_port = c_listener.local_addr().unwrap().port();
        let restarting = [
            ("a", 1, MemberState::Active),
            ("b", b_port, MemberState::Leaving),
        ];
        let (_, a) = node_in("a", &restarting, 2, ClusterBounds::default());
        let (store_b, b) = node_in("b", &restarting, 2, ClusterBounds::default());
        let b_core = b.core.clone();
        serve_on(b_listener, b);
        let answer = a
            .core
            .apply_as_primary(WriteOp::Push(prepared("j1", BODY)), Vec::new(), None)
            .await;
        assert_eq!(answer.status, 200, "{}", answer.message);
        assert!(store_b.group(&key("j1")).is_some(), "b holds the copy");

        b_core.close(std::time::Instant::now()).await;
        let joined = [
            ("a", 1, MemberState::Active),
            ("b", b_port, MemberState::Leaving),
            ("c", c_port, MemberState::Joining),
        ];
        let (_, a) = node_in("a", &joined, 2, ClusterBounds::default());
        let (store_c, c) = node_in("c", &joined, 2, ClusterBounds::default());
        serve_on(c_listener, c);
        let answer = a
            .core
            .apply_as_primary(WriteOp::Push(prepared("j2", BODY)), Vec::new(), None)
            .await;
        assert_eq!(answer.status, 200, "{}", answer.message);
        assert!(store_b.group(&key("j2")).is_none(), "b refused: closing");
        assert!(store_c.group(&key("j2")).is_some(), "c holds the copy");
    }

    /// The only other node fails its first call (a connection to it from before it
    /// restarted): it is asked once more, and the write has its R holders instead of 503.
    #[tokio::test]
    async fn the_last_candidate_failing_at_once_is_asked_once_more() {
        let b_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let b_port = b_listener.local_addr().unwrap().port();
        let members = [("a", 1), ("b", b_port)];
        let (_, a) = node("a", &members, 2);
        let (store_b, b) = node("b", &members, 2);
        let b = TestPeer::new(b);
        b.refuse_first.store(1, std::sync::atomic::Ordering::SeqCst);
        serve_on(b_listener, b);
        let job = job_in_order(&a.core.ring(), &["a", "b"]);
        let answer = a
            .core
            .apply_as_primary(WriteOp::Push(prepared(&job, BODY)), Vec::new(), None)
            .await;
        assert_eq!(answer.status, 200, "{}", answer.message);
        assert!(store_b.group(&key(&job)).is_some(), "b holds the copy");
    }

    /// With `--cluster.write-quorum=1` a write no other node can take is acknowledged by its
    /// primary alone; with the default (R) it is refused.
    #[tokio::test]
    async fn the_write_quorum_sets_how_many_holders_a_write_needs() {
        let members = [("a", 1), ("b", closed_port())];
        let (_, a) = node("a", &members, 2);
        let ring = a.core.ring();
        let job = (0..)
            .map(|i| format!("j{i}"))
            .find(|job| ring.owners(key(job).stable_hash(), 1)[0].id.as_str() == "a")
            .unwrap();
        let push = || WriteOp::Push(prepared(&job, BODY));
        let answer = a.core.apply_as_primary(push(), Vec::new(), None).await;
        assert_eq!(answer.status, 503, "{}", answer.message);
        assert!(answer.message.contains("only 1 of the 2"), "{}", answer.message);
        a.core.set_write_quorum(1);
        let answer = a.core.apply_as_primary(push(), Vec::new(), None).await;
        assert_eq!(answer.status, 200, "{}", answer.message);
    }
}
