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
    Forwarded,
    /// Forwarding a write failed: the next node in rendezvous order is tried.
    ForwardFailed {
        peer: &'a NodeId,
        error: &'a dyn Display,
    },
    /// A holder took a replica of a write.
    ReplicaTaken,
    /// A replica was not taken: by this node (`peer` None, `why` said), by a peer (the next node
    /// is tried), or by the node that forwarded the write and was counted as a holder (neither
    /// given: its client is answered 503).
    ReplicaFailed {
        peer: Option<&'a NodeId>,
        why: Option<&'a str>,
    },
    /// A replica was still missing after half the peer timeout: also asked of the next node.
    ReplicaHedged { peer: &'a NodeId },
    /// Tombstones past their lifetime were collected.
    TombstonesExpired { count: usize },
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
                tracing::info!(
                    node = %node,
                    ring_version = ring.version,
                    members = ?ring.members.iter().map(|m| (m.id.as_str(), m.state.as_str())).collect::<Vec<_>>(),
                    "cluster ring changed"
                );
            }
            ClusterEvent::MembersLost {
                node,
                lost,
                members,
                quorum,
            } => {
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
            ClusterEvent::Forwarded => {
                metrics::counter!(m::FORWARDED_PUSHES_TOTAL, "result" => "success").increment(1);
            }
            ClusterEvent::ForwardFailed { peer, error } => {
                metrics::counter!(m::FORWARDED_PUSHES_TOTAL, "result" => "error").increment(1);
                tracing::debug!(peer = %peer, err = %error, "forwarding a write failed; trying the next node");
            }
            ClusterEvent::ReplicaTaken => {
                metrics::counter!(m::REPLICATED_WRITES_TOTAL, "result" => "success").increment(1);
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
                metrics::counter!(m::REPLICATED_WRITES_TOTAL, "result" => "error").increment(1);
            }
            ClusterEvent::ReplicaHedged { peer } => {
                tracing::debug!(peer = %peer, "a replica is late; asking the next node too");
                metrics::counter!(m::REPLICATED_WRITES_TOTAL, "result" => "hedged").increment(1);
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
