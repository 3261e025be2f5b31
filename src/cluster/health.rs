//! Whether the cluster can take writes, as this node's ring shows it, and which members the
//! node lost: the `pushgate_cluster_writable` gauge and the warnings an operator needs when
//! nodes go down (`--cluster.write-quorum` says how many holders a write needs).

use std::sync::Arc;

use tokio::sync::watch;

use super::events::ClusterEvent;
use super::member::{MemberState, NodeId};
use super::ring::Ring;

/// Whether a write can reach `quorum` holders: an active member to apply it and, counting
/// the members still joining or leaving (stand-ins for the copies), `quorum` live members.
pub fn writable(ring: &Ring, quorum: usize) -> bool {
    ring.active().next().is_some() && ring.members.len() >= quorum
}

/// The members of `before` that are gone from `after` without having gossiped that they were
/// leaving: crashed, killed, cut off by the network (a graceful stop is not a loss).
pub fn lost<'a>(before: &'a Ring, after: &Ring) -> Vec<&'a NodeId> {
    before
        .members
        .iter()
        .filter(|m| m.state != MemberState::Leaving && after.get(&m.id).is_none())
        .map(|m| &m.id)
        .collect()
}

/// The members lost earlier (`lost_earlier`) that are in `ring` again.
pub fn returned<'a>(lost_earlier: &[NodeId], ring: &'a Ring) -> Vec<&'a NodeId> {
    ring.members
        .iter()
        .filter(|m| lost_earlier.contains(&m.id))
        .map(|m| &m.id)
        .collect()
}

/// Follows the rings until they stop: sets the gauge on every ring, warns with the names of
/// the members lost, names them again when they are back, and says when writes stop and
/// start being possible again.
pub async fn watch_writable(mut rings: watch::Receiver<Arc<Ring>>, quorum: usize) {
    let mut before: Option<Arc<Ring>> = None;
    let mut was_writable = false;
    // Until the node first had enough members (a starting node), a missing quorum is no news.
    let mut ever_writable = false;
    // Lost and not back yet. Bounded by the ids ever seen in the ring.
    let mut missing: Vec<NodeId> = Vec::new();
    loop {
        let ring = rings.borrow_and_update().clone();
        let now = writable(&ring, quorum);
        let back = returned(&missing, &ring);
        if !back.is_empty() {
            ClusterEvent::MembersReturned {
                node: &ring.self_id,
                returned: &back,
                members: ring.members.len(),
            }
            .emit();
            missing.retain(|id| ring.get(id).is_none());
        }
        if let Some(prev) = &before {
            let gone = lost(prev, &ring);
            missing.extend(gone.iter().map(|id| (*id).clone()));
            if !gone.is_empty() {
                ClusterEvent::MembersLost {
                    node: &ring.self_id,
                    lost: &gone,
                    members: ring.members.len(),
                    quorum,
                }
                .emit();
            }
        }
        if now != was_writable || before.is_none() {
            ClusterEvent::Writable {
                node: &ring.self_id,
                writable: now,
                announce: ever_writable,
                members: ring.members.len(),
                quorum,
            }
            .emit();
        }
        was_writable = now;
        ever_writable |= now;
        before = Some(ring);
        if rings.changed().await.is_err() {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::member::Member;

    fn ring(members: &[(&str, MemberState)]) -> Ring {
        let members = members
            .iter()
            .map(|(id, state)| Member {
                id: NodeId::new(*id),
                generation: 1,
                grpc_addr: "127.0.0.1:1".parse().unwrap(),
                state: *state,
            })
            .collect();
        Ring::new(NodeId::new("a"), members, 1)
    }

    #[test]
    fn writable_needs_an_active_member_and_quorum_live_members() {
        use MemberState::*;
        let three = ring(&[("a", Active), ("b", Active), ("c", Active)]);
        assert!(writable(&three, 2));
        let one_left = ring(&[("a", Active)]);
        assert!(!writable(&one_left, 2), "fewer live members than the quorum");
        assert!(writable(&one_left, 1), "degraded mode: one holder is enough");
        // Joining and leaving members stand in for copies, but none applies a write.
        let restarting = ring(&[("a", Active), ("b", Leaving), ("c", Joining)]);
        assert!(writable(&restarting, 3));
        let starting = ring(&[("a", Joining), ("b", Joining)]);
        assert!(!writable(&starting, 1), "no active member to apply a write");
    }

    #[test]
    fn lost_members_are_those_gone_without_leaving() {
        use MemberState::*;
        let before = ring(&[("a", Active), ("b", Active), ("c", Leaving), ("d", Joining)]);
        let after = ring(&[("a", Active)]);
        let gone: Vec<&str> = lost(&before, &after).iter().map(|id| id.as_str()).collect();
        assert_eq!(gone, ["b", "d"], "c left gracefully");
        assert!(lost(&before, &before).is_empty());
    }

    #[test]
    fn returned_members_are_lost_ones_back_in_the_ring() {
        use MemberState::*;
        let lost_earlier = [NodeId::new("b"), NodeId::new("c")];
        let ring = ring(&[("a", Active), ("b", Joining), ("d", Active)]);
        let back: Vec<&str> = returned(&lost_earlier, &ring).iter().map(|id| id.as_str()).collect();
        assert_eq!(back, ["b"], "d was never lost, c is still away");
        assert!(returned(&[], &ring).is_empty());
    }
}
