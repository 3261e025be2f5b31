//! Routing a write to its owners: the node a push or delete arrived at decodes and checks it,
//! then sends it to the first reachable node in rendezvous order (the primary, or the next one
//! acting for it), and, when the primary leaves the replication to it, sends the replicas.

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::super::core::ClusterCore;
use super::super::events::ClusterEvent;
use super::super::member::{Member, NodeId};
use super::super::rpc::{pb, wire};
use super::op::{decoded, WriteAnswer, WriteOp};
use super::replicate::Replica;
use crate::ingest::body::BodyFormat;
use crate::ingest::{off_runtime, PushRequest};
use crate::store::{GroupSnapshot, PreparedPush, Stamps};
use crate::time::unix_seconds;

impl ClusterCore {
    /// Sends a write to the first reachable node in rendezvous order (the primary, or the next
    /// one acting for it) and returns its answer.
    pub(crate) async fn route(
        self: &Arc<Self>,
        mut op: WriteOp,
        mut unreachable: Vec<String>,
    ) -> WriteAnswer {
        let ring = self.ring();
        let order: Vec<Member> = ring
            .rendezvous_order(op.key().stable_hash())
            .into_iter()
            .cloned()
            .collect();
        let primary_replicates = self.entry.received(crate::time::unix_millis());
        if adds_here(&op, &order, self.replication_factor, &self.self_id) {
            return self.aggregate_as_primary(op, unreachable).await;
        }
        let mut forward: Option<(pb::ForwardedWrite, usize)> = None;
        for candidate in order {
            if unreachable.iter().any(|u| u == candidate.id.as_str()) {
                continue;
            }
            let here = candidate.id == self.self_id;
            // A body not decoded yet goes to the primary only from an entry-heavy node;
            // otherwise it is decoded here (and the message built anew).
            op = match op {
                WriteOp::Raw(req) if here || !primary_replicates => {
                    forward = None;
                    match self.resolve(req, &unreachable).await {
                        Ok(p) => WriteOp::Push(p),
                        Err(refused) => return refused,
                    }
                }
                other => other,
            };
            if here {
                if matches!(op, WriteOp::Aggregate { .. }) {
                    return self.aggregate_as_primary(op, unreachable).await;
                }
                return self.apply_as_primary(op, unreachable, None).await;
            }
            let (msg, size) = forward.get_or_insert_with(|| {
                let mut m = forward_message(&op, self.self_id.as_str());
                // An aggregating push is always replicated by its primary (ForwardedWrite.aggregate).
                m.0.sender_replicates = !primary_replicates && !m.0.aggregate;
                m
            });
            msg.unreachable = unreachable.clone();
            let timeout = self.clients.timeout();
            msg.deadline_unix_ms = forward_deadline_ms(timeout);
            let peer = self.clients.peer(candidate.grpc_addr);
            let sent = Instant::now();
            let res = peer.forward(msg.clone(), *size, sent + timeout).await;
            ClusterEvent::PeerCall {
                peer: &candidate.id,
                call: "forward",
                seconds: sent.elapsed().as_secs_f64(),
            }
            .emit();
            match res {
                Ok(out) => {
                    self.clock.observe(out.reply.version);
                    ClusterEvent::Forwarded {
                        peer: &candidate.id,
                    }
                    .emit();
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
                    // The primary replicated the write itself (this node asked it to).
                    return self.hold_returned(&op, out.replica, out.own, answer).await;
                }
                Err(status) => {
                    ClusterEvent::ForwardFailed {
                        peer: &candidate.id,
                        error: &status,
                    }
                    .emit();
                    // An aggregating push adds up: the next node may be asked only when this
                    // one certainly did not add it, or a push could count twice.
                    if matches!(op, WriteOp::Aggregate { .. }) && !certainly_not_applied(&status) {
                        return WriteAnswer::unavailable(format!(
                            "cluster node {} adding this aggregating push did not answer ({}): it may have been added; retry with the same Idempotency-Key header to have it counted once",
                            candidate.id,
                            status.message()
                        ));
                    }
                    unreachable.push(candidate.id.as_str().to_owned());
                }
            }
        }
        let active = ring.active().count();
        if active == 0 {
            // A node starting up has not learnt the members yet (or every one is joining): the
            // answer carries Retry-After, and the node takes writes once it knows the ring.
            return WriteAnswer::unavailable(
                "this node does not know an active cluster member yet (starting up); retry"
                    .to_owned(),
            );
        }
        WriteAnswer::unavailable(format!(
            "no cluster member could take the write ({active} active, {} unreachable)",
            unreachable.len()
        ))
    }

    /// Decodes and checks a push on this node, where it arrived or as the node to apply it, so
    /// bad input is refused before any other node is called (the check is against the groups
    /// this node holds). A push refused as `Invalid` is recorded on its group by its primary,
    /// like upstream, and answered 400 whatever becomes of that record.
    pub(crate) async fn resolve(
        self: &Arc<Self>,
        req: PushRequest,
        unreachable: &[String],
    ) -> Result<PreparedPush, WriteAnswer> {
        let large = req.is_large();
        let v = self.validation.clone();
        let store = self.store.clone();
        let op = off_runtime(large, move || decoded(req, &v, &store, true))
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

    /// Replicates a write this node forwarded and `primary` applied, leaving the replication
    /// to this node (`ForwardedWrite.sender_replicates`): the state it returned goes to the next
    /// R-1 nodes after it in rendezvous order (this node holds its own copy when it is one of
    /// them), and the primary's answer stands once R nodes hold the write.
    pub(crate) async fn replicate_for(
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

    /// Holds the copy a primary that replicated the write itself returned with its answer to a
    /// write this node forwarded (the group state, or a PUT's stamp for this node's own prepared
    /// families). The primary counted this node as a holder, so a copy this node cannot hold
    /// turns a success into 503 (the write stays on the nodes that took it, as with any 503).
    pub(crate) async fn hold_returned(
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
}

/// The copy of a forwarded write that its primary's answer carries: the group state, or a
/// PUT's stamp for the families this node prepared. Err: a stamp for a write that is not a PUT.
pub(crate) fn returned_replica(
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

/// The state a successful PUT left on its primary: exactly the pushed families as this node
/// prepared them, with the primary's stamp.
pub(crate) fn own_state(p: &PreparedPush, stamp: pb::OwnReplica) -> GroupSnapshot {
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
        aggregating: false,
        ttl: p.ttl,
        version: stamp.version,
        stamps: Stamps {
            reset: stamp.version,
            cleared: stamp.cleared,
            push: stamp.version,
            failure: stamp.failure_stamp,
            ttl: stamp.version,
            families: vec![stamp.version; p.families.len()],
        },
        timing: None,
        agg: None,
        agg_digest: 0,
    }
}

/// The answer to a client whose write this node forwarded, once it tried to hold the replica the
/// primary counted it for: a replica it could not hold turns a success into 503 (the write stays
/// on the nodes that took it, as with any 503).
pub(crate) fn replica_outcome(held: Result<(), String>, answer: WriteAnswer) -> WriteAnswer {
    match held {
        Ok(()) => {
            ClusterEvent::ReplicaTaken { peer: None }.emit();
            answer
        }
        Err(why) => {
            ClusterEvent::ReplicaFailed {
                peer: None,
                why: None,
            }
            .emit();
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
pub(crate) fn forward_message(op: &WriteOp, from: &str) -> (pb::ForwardedWrite, usize) {
    let mut msg = pb::ForwardedWrite {
        key: wire::key_to_pb(op.key()),
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
            msg.families = wire::split_at_ends(buf, &ends);
            msg.replace_all = p.replace_all;
            msg.has_timestamps = p.has_timestamps;
            msg.own_replica = p.replace_all && !p.has_timestamps;
            msg.ttl = (p.ttl > 0.0).then_some(p.ttl);
        }
        WriteOp::Raw(r) => {
            msg.body = Some(r.body.clone());
            msg.body_protobuf = r.format == BodyFormat::ProtobufDelimited;
            msg.replace_all = r.replace_all;
            msg.ttl = (r.ttl > 0.0).then_some(r.ttl);
        }
        WriteOp::Failure { message, .. } => {
            msg.refused = if message.is_empty() {
                "refused".into()
            } else {
                message.clone()
            };
        }
        WriteOp::Delete(_) => msg.delete = true,
        WriteOp::Aggregate {
            req,
            idempotency_key,
        } => {
            msg.body = Some(req.body.clone());
            msg.body_protobuf = req.format == BodyFormat::ProtobufDelimited;
            msg.replace_all = req.replace_all;
            msg.ttl = (req.ttl > 0.0).then_some(req.ttl);
            msg.aggregate = true;
            msg.idempotency_key = idempotency_key.clone();
            // Its primary replicates it and does not hand a replica back (see the proto).
            msg.from = String::new();
        }
    }
    let size = msg.families.iter().map(|f| f.len()).sum::<usize>()
        + msg.body.as_ref().map_or(0, |b| b.len())
        + msg.refused.len()
        + 128;
    (msg, size)
}

/// Whether this node adds an aggregating push itself instead of forwarding it to the group's
/// primary: a push without an `Idempotency-Key` that reached one of the group's R owners (the
/// first R active members in rendezvous `order`). The state is built for several writers (each
/// node adds into its own partial, and the partials merge), so any owner can add a push and
/// take it back; the push then costs one copy to the other owner instead of a forward and a
/// copy back. A push with a key still goes to the primary: the key's register is checked and
/// set by one node, so a retry that reaches another owner is not added twice.
fn adds_here(op: &WriteOp, order: &[Member], r: usize, me: &NodeId) -> bool {
    matches!(
        op,
        WriteOp::Aggregate {
            idempotency_key: None,
            ..
        }
    ) && order.iter().take(r).any(|m| m.id == *me)
}

/// Whether a failed forward certainly left the write unapplied: the peer could not be reached
/// (no connection), or refused the call before applying anything (closing, over its limits).
/// A call that timed out, or broke after it was sent, may have been applied.
fn certainly_not_applied(status: &tonic::Status) -> bool {
    match status.code() {
        tonic::Code::ResourceExhausted => true,
        tonic::Code::Unavailable => {
            // A connection that could not be made (hyper's TCP connector, or the TLS
            // connector's timeout), or a node leaving the cluster (`ClusterCore::admit`), which
            // refuses before applying. Not any message with "connect" in it: a connection that
            // broke after the batch was sent ("connection reset", "connection closed") may have
            // carried it, and on an open `Writes` call many batches ride one connection.
            let m = status.message();
            m.contains("tcp connect error")
                || m.starts_with("connecting to ")
                || m.contains("leaving the cluster")
        }
        _ => false,
    }
}

/// The absolute deadline sent with a forwarded write: the sender's clock plus the call timeout.
pub(crate) fn forward_deadline_ms(timeout: Duration) -> u64 {
    ((unix_seconds() + timeout.as_secs_f64()) * 1000.0) as u64
}

#[cfg(test)]
#[path = "route_tests.rs"]
mod tests;
