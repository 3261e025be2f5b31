//! Cluster events that are logged and counted: each is recorded from one place
//! ([`ClusterEvent::emit`]), so its log line and its counter cannot drift apart (the event type
//! per event of vector's instrumentation).
//!
//! Events on a write's path log at debug only (a failing peer fails every write to it); the
//! counters are the signal there.

use std::fmt::Display;
use std::net::SocketAddr;
use std::path::Path;

use super::member::NodeId;
use super::ring::Ring;
use crate::telemetry::metrics as m;

/// Why a peer's message (or one item of it) was refused: the `reason` label of
/// `pushgate_cluster_peer_refused_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum PeerRefusal {
    /// A version, tombstone or wipe dated beyond `--cluster.max-clock-skew`.
    FutureVersion,
    /// A family that would not render as valid exposition (lines that are not its own, labels
    /// the push rules refuse, a protobuf part that does not decode).
    InvalidFamily,
    /// Anything else that does not decode or check: a group, a grouping key, a family's layout.
    Malformed,
}

impl PeerRefusal {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            PeerRefusal::FutureVersion => "future_version",
            PeerRefusal::InvalidFamily => "invalid_family",
            PeerRefusal::Malformed => "malformed",
        }
    }

    /// The reason of a decoder's error message: the exposition checks name themselves
    /// (`store::family::NOT_VALID_EXPOSITION`).
    pub(crate) fn of_error(error: &str) -> Self {
        if error.contains(crate::store::family::NOT_VALID_EXPOSITION) {
            PeerRefusal::InvalidFamily
        } else {
            PeerRefusal::Malformed
        }
    }
}

/// Why a gossip datagram was dropped: the `reason` label of
/// `pushgate_cluster_gossip_dropped_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DropReason {
    /// A plain chitchat datagram: its sender has no gossip key.
    Unsealed,
    /// Sealed, but no key here opens it: another key, another cluster name, or altered in
    /// transit.
    Unopened,
    /// Neither sealed nor chitchat (too short, unknown format), or it opened but is not a
    /// chitchat message.
    Garbage,
    /// Not sent: this node's datagram would exceed the largest UDP payload once sealed.
    Oversize,
}

impl DropReason {
    pub fn as_str(self) -> &'static str {
        match self {
            DropReason::Unsealed => "unsealed",
            DropReason::Unopened => "unopened",
            DropReason::Garbage => "garbage",
            DropReason::Oversize => "oversize",
        }
    }
}

/// One cluster event; [`ClusterEvent::emit`] logs and counts it.
pub(crate) enum ClusterEvent<'a> {
    /// A peer's message, or an item of it, was refused: nothing of it was stored.
    PeerRefused {
        reason: PeerRefusal,
        error: &'a dyn Display,
    },
    /// This node's ring has other members, or members in other states, than before.
    RingChanged { node: &'a NodeId, ring: &'a Ring },
    /// A gossiping peer speaks a protocol version outside the skew window, or none
    /// (`membership::PROTOCOL_VERSION`): not placed on the ring. Emitted once per peer.
    IncompatiblePeer {
        peer: &'a str,
        generation: u64,
        error: &'a dyn Display,
    },
    /// A write forwarded to its primary (or the node acting for it) was answered.
    Forwarded { peer: &'a NodeId },
    /// Forwarding a write failed: the next node in rendezvous order is tried.
    ForwardFailed {
        peer: &'a NodeId,
        error: &'a dyn Display,
    },
    /// A holder took a replica of a write (`peer` None: this node its own copy).
    ReplicaTaken { peer: Option<&'a NodeId> },
    /// A replica was not taken: by this node (`peer` None, `why` said), by a peer (the next node
    /// is tried), or by the node that forwarded the write and was counted as a holder (neither
    /// given: its client is answered 503).
    ReplicaFailed {
        peer: Option<&'a NodeId>,
        why: Option<&'a str>,
    },
    /// A replica was still missing after half the peer timeout: also asked of the next node.
    ReplicaHedged { peer: &'a NodeId },
    /// An aggregating push this node added as primary was taken back: too few nodes took it,
    /// and it was answered 503.
    AggregateRetracted,
    /// Tombstones past their lifetime were collected.
    TombstonesExpired { count: usize },
    /// This node joined a cluster as `node`: its `pushgate_cluster_node_info`, and its
    /// cluster counters at zero.
    Started { node: &'a NodeId },
    /// A collect call of a merged scrape to `peer` ended (`error`: why it failed) after
    /// `seconds`.
    CollectEnded {
        peer: &'a str,
        seconds: f64,
        error: Option<&'a str>,
    },
    /// A request to `peer` (`call`: forward, replicate) was answered or failed after `seconds`.
    PeerCall {
        peer: &'a NodeId,
        call: &'static str,
        seconds: f64,
    },
    /// Members lost earlier are back in this node's ring.
    MembersReturned {
        node: &'a NodeId,
        returned: &'a [&'a NodeId],
        members: usize,
    },
    /// Members left this node's ring without gossiping that they were leaving.
    MembersLost {
        node: &'a NodeId,
        lost: &'a [&'a NodeId],
        members: usize,
        quorum: usize,
    },
    /// Whether a write can reach its quorum of holders, set with every ring change that
    /// flips it (`announce`: logged, not only the gauge).
    Writable {
        node: &'a NodeId,
        writable: bool,
        announce: bool,
        members: usize,
        quorum: usize,
    },
    /// A reconciliation round ended.
    RoundEnded(RoundSummary<'a>),
    /// Something was refused to keep a resource bounded.
    Refused { reason: Refusal, detail: &'a str },
    /// The tombstones held changed (count, bytes of their keys).
    Tombstones { count: usize, bytes: usize },
    /// A gossip datagram was dropped (received and not opened, or not sent); always counted,
    /// logged only when `report` holds the number dropped since the last line (the sealed
    /// transport rate-limits the lines: a flood of datagrams is not a flood of logs).
    GossipDropped {
        reason: DropReason,
        peer: Option<SocketAddr>,
        report: Option<u64>,
    },
    /// The gossip key file changed and its keys are in use.
    GossipKeysReloaded { path: &'a Path, ids: &'a [&'a str] },
    /// The gossip key file changed but could not be read or parsed: the keys in use stay.
    GossipKeysRefused {
        path: &'a Path,
        error: &'a dyn Display,
    },
}

/// Why the cluster plane refused something (the `reason` label of
/// `pushgate_cluster_refused_total`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refusal {
    Concurrency,
    BatchItems,
    Hints,
    ScrapeBytes,
    Tombstones,
    MessageBytes,
    Timeout,
}

impl Refusal {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Refusal::Concurrency => "concurrency",
            Refusal::BatchItems => "batch_items",
            Refusal::Hints => "hints",
            Refusal::ScrapeBytes => "scrape_bytes",
            Refusal::Tombstones => "tombstones",
            Refusal::MessageBytes => "message_bytes",
            Refusal::Timeout => "timeout",
        }
    }
}

/// What a reconciliation round did, as its event reports it.
pub(crate) struct RoundSummary<'a> {
    pub(crate) node: &'a NodeId,
    pub(crate) held: usize,
    pub(crate) handed_off: usize,
    pub(crate) sent: usize,
    pub(crate) received: usize,
    pub(crate) hints: usize,
    /// How long the oldest hint held has been one (None: no hint).
    pub(crate) oldest_hint: Option<std::time::Duration>,
    pub(crate) unreachable_peers: usize,
}

impl ClusterEvent<'_> {
    /// Logs the event and updates its metrics.
    pub(crate) fn emit(self) {
        match self {
            ClusterEvent::PeerRefused { reason, error } => {
                // Warn: a healthy cluster never sends one (a peer that does is broken, skewed
                // or hostile); each is one line, bounded by the peer's own call rate.
                tracing::warn!(reason = reason.as_str(), err = %error, "refused a peer's message");
                metrics::counter!(m::PEER_REFUSED_TOTAL, "reason" => reason.as_str()).increment(1);
            }
            ClusterEvent::RingChanged { node, ring } => {
                metrics::counter!(m::RING_CHANGES_TOTAL).increment(1);
                // Each peer's counters at zero from the moment it is a member. Bounded: one set
                // per node id ever seen (ids are stable addresses or pod names).
                for member in ring.members.iter().filter(|m| &m.id != node) {
                    preregister_peer(member.id.as_str());
                }
                tracing::info!(
                    node = %node,
                    ring_version = ring.version,
                    members = ?ring.members.iter().map(|m| (m.id.as_str(), m.state.as_str())).collect::<Vec<_>>(),
                    "cluster ring changed"
                );
            }
            ClusterEvent::Started { node } => {
                metrics::gauge!(m::CLUSTER_NODE_INFO, "node" => node.to_string(), "version" => env!("CARGO_PKG_VERSION")).set(1.0);
                preregister_cluster();
            }
            ClusterEvent::CollectEnded {
                peer,
                seconds,
                error,
            } => {
                let result = if error.is_some() { "error" } else { "success" };
                metrics::counter!(m::COLLECT_CALLS_TOTAL, "peer" => peer.to_owned(), "result" => result).increment(1);
                metrics::histogram!(m::PEER_CALL_DURATION_SECONDS, "peer" => peer.to_owned(), "call" => "collect")
                    .record(seconds);
                if let Some(e) = error {
                    tracing::debug!(peer = %peer, err = %e, "collect failed; its groups come from replicas");
                }
            }
            ClusterEvent::PeerCall {
                peer,
                call,
                seconds,
            } => {
                metrics::histogram!(m::PEER_CALL_DURATION_SECONDS, "peer" => peer.to_string(), "call" => call)
                    .record(seconds);
            }
            ClusterEvent::MembersReturned {
                node,
                returned,
                members,
            } => {
                metrics::counter!(m::MEMBERS_RETURNED_TOTAL).increment(returned.len() as u64);
                tracing::info!(
                    node = %node,
                    returned = ?returned.iter().map(|id| id.as_str()).collect::<Vec<_>>(),
                    members,
                    "lost cluster members are back"
                );
            }
            ClusterEvent::MembersLost {
                node,
                lost,
                members,
                quorum,
            } => {
                metrics::counter!(m::MEMBERS_LOST_TOTAL).increment(lost.len() as u64);
                tracing::warn!(
                    node = %node,
                    lost = ?lost.iter().map(|id| id.as_str()).collect::<Vec<_>>(),
                    members,
                    write_quorum = quorum,
                    "lost cluster members (not seen leaving): their groups are served from the other copies"
                );
            }
            ClusterEvent::Writable {
                node,
                writable,
                announce,
                members,
                quorum,
            } => {
                metrics::gauge!(m::CLUSTER_WRITABLE).set(if writable { 1.0 } else { 0.0 });
                match (announce, writable) {
                    (false, _) => {}
                    (true, true) => tracing::info!(node = %node, members, write_quorum = quorum, "the cluster takes writes again"),
                    (true, false) => tracing::warn!(node = %node, members, write_quorum = quorum, "fewer live members than a write needs: pushes are refused with 503 until members return (or see --cluster.write-quorum)"),
                }
            }
            ClusterEvent::IncompatiblePeer {
                peer,
                generation,
                error,
            } => {
                tracing::warn!(peer = %peer, generation, error = %error, "peer not placed on the ring");
                metrics::counter!(m::INCOMPATIBLE_PEERS_TOTAL).increment(1);
            }
            ClusterEvent::Forwarded { peer } => {
                metrics::counter!(m::FORWARDED_PUSHES_TOTAL, "peer" => peer.to_string(), "result" => "success").increment(1);
            }
            ClusterEvent::ForwardFailed { peer, error } => {
                metrics::counter!(m::FORWARDED_PUSHES_TOTAL, "peer" => peer.to_string(), "result" => "error").increment(1);
                tracing::debug!(peer = %peer, err = %error, "forwarding a write failed; trying the next node");
            }
            ClusterEvent::ReplicaTaken { peer } => {
                metrics::counter!(m::REPLICATED_WRITES_TOTAL, "peer" => peer_label(peer), "result" => "success").increment(1);
            }
            ClusterEvent::ReplicaFailed { peer, why } => {
                match (peer, why) {
                    (Some(peer), _) => {
                        tracing::debug!(peer = %peer, "replication failed; trying the next node");
                    }
                    (None, Some(why)) => {
                        tracing::debug!(err = %why, "holding a replica here failed; trying the next node");
                    }
                    (None, None) => {}
                }
                metrics::counter!(m::REPLICATED_WRITES_TOTAL, "peer" => peer_label(peer), "result" => "error").increment(1);
            }
            ClusterEvent::ReplicaHedged { peer } => {
                tracing::debug!(peer = %peer, "a replica is late; asking the next node too");
                metrics::counter!(m::REPLICATED_WRITES_TOTAL, "peer" => peer.to_string(), "result" => "hedged").increment(1);
            }
            ClusterEvent::AggregateRetracted => {
                tracing::debug!("an aggregating push too few nodes took was taken back (answered 503)");
                metrics::counter!(m::AGGREGATE_RETRACTED_TOTAL).increment(1);
            }
            ClusterEvent::TombstonesExpired { count } => {
                metrics::counter!(m::REBALANCE_GROUPS_TOTAL, "result" => "expired")
                    .increment(count as u64);
                tracing::debug!(expired = count, "collected tombstones past their lifetime");
            }
            ClusterEvent::GossipDropped {
                reason,
                peer,
                report,
            } => {
                metrics::counter!(m::GOSSIP_DROPPED_TOTAL, "reason" => reason.as_str())
                    .increment(1);
                if let Some(dropped) = report {
                    let peer = peer.map(|p| p.to_string());
                    tracing::warn!(
                        reason = reason.as_str(),
                        peer = peer.as_deref().unwrap_or("-"),
                        dropped,
                        "gossip datagrams dropped (count since the last such line; see pushgate_cluster_gossip_dropped_total)"
                    );
                }
            }
            ClusterEvent::GossipKeysReloaded { path, ids } => {
                metrics::counter!(m::GOSSIP_KEY_RELOADS_TOTAL, "result" => "success").increment(1);
                tracing::info!(file = %path.display(), keys = ?ids, "gossip keys reloaded; the first seals");
            }
            ClusterEvent::GossipKeysRefused { path, error } => {
                metrics::counter!(m::GOSSIP_KEY_RELOADS_TOTAL, "result" => "error").increment(1);
                tracing::error!(file = %path.display(), err = %error, "gossip key file refused; the keys in use stay");
            }
            ClusterEvent::Refused { reason, detail } => {
                metrics::counter!(m::CLUSTER_REFUSED_TOTAL, "reason" => reason.as_str())
                    .increment(1);
                // Debug: a flood of refused calls would otherwise flood the log too.
                tracing::debug!(
                    reason = reason.as_str(),
                    detail,
                    "refused to bound a resource"
                );
            }
            ClusterEvent::Tombstones { count, bytes } => {
                metrics::gauge!(m::TOMBSTONES).set(count as f64);
                metrics::gauge!(m::TOMBSTONE_BYTES).set(bytes as f64);
            }
            ClusterEvent::RoundEnded(r) => {
                if r.handed_off > 0 {
                    metrics::counter!(m::REBALANCE_GROUPS_TOTAL, "result" => "handed_off")
                        .increment(r.handed_off as u64);
                }
                metrics::gauge!(m::HINTS_PENDING).set(r.hints as f64);
                metrics::gauge!(m::HINTS_OLDEST_AGE_SECONDS)
                    .set(r.oldest_hint.map_or(0.0, |d| d.as_secs_f64()));
                let result = if r.unreachable_peers == 0 {
                    "complete"
                } else {
                    "partial"
                };
                metrics::counter!(m::ANTIENTROPY_ROUNDS_TOTAL, "result" => result).increment(1);
                if r.handed_off + r.sent + r.received > 0 {
                    tracing::info!(
                        node = %r.node,
                        held = r.held,
                        handed_off = r.handed_off,
                        sent = r.sent,
                        received = r.received,
                        hints = r.hints,
                        unreachable_peers = r.unreachable_peers,
                        "reconciliation round"
                    );
                }
            }
        }
    }
}

/// The `peer` label of a replica: the holder's node id, `local` for this node's own copy.
fn peer_label(peer: Option<&NodeId>) -> String {
    peer.map_or_else(|| LOCAL_PEER.to_owned(), NodeId::to_string)
}

/// The `peer` label value of this node's own copy of a write.
pub(crate) const LOCAL_PEER: &str = "local";

/// A peer's counters, at zero.
fn preregister_peer(peer: &str) {
    for result in ["success", "error"] {
        metrics::counter!(m::FORWARDED_PUSHES_TOTAL, "peer" => peer.to_owned(), "result" => result).increment(0);
        metrics::counter!(m::COLLECT_CALLS_TOTAL, "peer" => peer.to_owned(), "result" => result).increment(0);
    }
    for result in ["success", "error", "hedged"] {
        metrics::counter!(m::REPLICATED_WRITES_TOTAL, "peer" => peer.to_owned(), "result" => result).increment(0);
    }
}

/// Every counter of a cluster node, at zero (the per-peer ones as peers appear).
fn preregister_cluster() {
    use crate::telemetry::preregister;
    let peer_refusals = [PeerRefusal::FutureVersion, PeerRefusal::InvalidFamily, PeerRefusal::Malformed];
    let drops = [DropReason::Unsealed, DropReason::Unopened, DropReason::Garbage, DropReason::Oversize];
    let refusals = [
        Refusal::Concurrency,
        Refusal::BatchItems,
        Refusal::Hints,
        Refusal::ScrapeBytes,
        Refusal::Tombstones,
        Refusal::MessageBytes,
        Refusal::Timeout,
    ];
    let peer_refusals: Vec<&'static str> = peer_refusals.iter().map(|r| r.as_str()).collect();
    let drops: Vec<&'static str> = drops.iter().map(|r| r.as_str()).collect();
    let refusals: Vec<&'static str> = refusals.iter().map(|r| r.as_str()).collect();
    let counters: &[(&'static str, &'static str, &[&'static str])] = &[
        (m::RING_CHANGES_TOTAL, "", &[]),
        (m::MEMBERS_LOST_TOTAL, "", &[]),
        (m::MEMBERS_RETURNED_TOTAL, "", &[]),
        (m::COLLECT_FOLLOW_UPS_TOTAL, "", &[]),
        (m::AGGREGATE_RETRACTED_TOTAL, "", &[]),
        (m::INCOMPATIBLE_PEERS_TOTAL, "", &[]),
        (m::REBALANCE_GROUPS_TOTAL, "result", &["handed_off", "error", "expired"]),
        (m::ANTIENTROPY_REPAIRS_TOTAL, "direction", &["sent", "received"]),
        (m::ANTIENTROPY_ROUNDS_TOTAL, "result", &["complete", "partial"]),
        (m::CLUSTER_TLS_RELOADS_TOTAL, "result", &["success", "failure"]),
        (m::CLUSTER_TLS_HANDSHAKE_FAILURES_TOTAL, "side", &["server", "client"]),
        (m::GOSSIP_KEY_RELOADS_TOTAL, "result", &["success", "error"]),
        (m::PEER_REFUSED_TOTAL, "reason", &peer_refusals),
        (m::GOSSIP_DROPPED_TOTAL, "reason", &drops),
        (m::CLUSTER_REFUSED_TOTAL, "reason", &refusals),
    ];
    for (name, label, values) in counters {
        preregister(name, label, values);
    }
    for result in ["success", "error"] {
        metrics::counter!(m::REPLICATED_WRITES_TOTAL, "peer" => LOCAL_PEER, "result" => result).increment(0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::member::{Member, MemberState};
    use crate::telemetry::SelfRecorder;

    /// On a fresh cluster node, before any event: every counter it can ever count is in its
    /// metrics at 0 (each peer's as soon as the peer is a member).
    #[test]
    fn every_counter_is_present_at_zero_on_a_fresh_node() {
        let r = SelfRecorder::default();
        let me = NodeId::new("10.0.0.1:9094");
        let ring = Ring::new(
            me.clone(),
            ["10.0.0.1:9094", "10.0.0.2:9094"]
                .into_iter()
                .map(|id| Member {
                    id: NodeId::new(id),
                    generation: 1,
                    grpc_addr: "127.0.0.1:1".parse().unwrap(),
                    state: MemberState::Active,
                })
                .collect(),
            1,
        );
        metrics::with_local_recorder(&r, || {
            crate::telemetry::preregister_node();
            ClusterEvent::Started { node: &me }.emit();
        });
        let before_ring = r.text();
        metrics::with_local_recorder(&r, || {
            ClusterEvent::RingChanged {
                node: &me,
                ring: &ring,
            }
            .emit()
        });
        let text = r.text();
        // Every counter family but upstream's request counter (labelled by the request, as
        // upstream, and created by the first request there too).
        for (name, typ, _) in m::SELF_FAMILIES {
            if *typ != crate::exposition::MetricType::Counter
                || *name == m::HTTP_REQUESTS_TOTAL
                || *name == m::RING_CHANGES_TOTAL
                || !name.starts_with("pushgate")
            {
                continue;
            }
            assert!(
                text.lines().any(|l| l.starts_with(name) && l.ends_with(" 0")),
                "{name} missing at 0 before any event:\n{text}"
            );
        }
        assert!(
            before_ring.contains("pushgate_cluster_ring_changes_total 0\n"),
            "{before_ring}"
        );
        assert!(
            text.contains("pushgate_cluster_node_info{node=\"10.0.0.1:9094\",version=\""),
            "{text}"
        );
        assert!(text.contains("pushgate_cluster_ring_changes_total 1\n"), "{text}");
        for line in [
            "pushgate_forwarded_pushes_total{peer=\"10.0.0.2:9094\",result=\"error\"} 0",
            "pushgate_replicated_writes_total{peer=\"10.0.0.2:9094\",result=\"hedged\"} 0",
            "pushgate_replicated_writes_total{peer=\"local\",result=\"error\"} 0",
            "pushgate_collect_calls_total{peer=\"10.0.0.2:9094\",result=\"success\"} 0",
            "pushgate_refused_pushes_total{reason=\"unavailable\"} 0",
        ] {
            assert!(text.contains(line), "{line} missing:\n{text}");
        }
        // This node is not its own peer.
        assert!(
            !text.contains("pushgate_forwarded_pushes_total{peer=\"10.0.0.1:9094\""),
            "{text}"
        );
    }
}
