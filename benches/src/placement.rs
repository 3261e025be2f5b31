//! Which of loadgen's groups a pushgate cluster places where, so a bench can push only groups a
//! given node owns no copy of (pushes through a non-owner against pushes to the primary).
//!
//! This is the one piece of the benches that knows pushgate's placement: it ranks the members
//! with `pushgate::cluster::placement`, as the nodes do.

use std::net::SocketAddr;

use pushgate::cluster::ring::owners;
use pushgate::cluster::{Member, MemberState, NodeId};
use pushgate::store::GroupKey;

/// The grouping key of loadgen's group `/metrics/job/<job>/instance/i<instance>`.
pub fn group_key(job: &str, instance: usize) -> GroupKey {
    GroupKey::new([
        ("job".to_owned(), job.to_owned()),
        ("instance".to_owned(), format!("i{instance}")),
    ])
}

/// The first `count` instance numbers whose owners among the cluster `members` (node ids) are
/// exactly `wanted`, primary first (R = `wanted.len()`). Err when the ids do not make sense or
/// too few instances qualify among the first million.
pub fn instances_owned_by(
    job: &str,
    members: &[String],
    wanted: &[String],
    count: usize,
) -> Result<Vec<usize>, String> {
    if wanted.is_empty() || wanted.len() > members.len() {
        return Err(format!(
            "the owners ({}) must be 1 to {} of the cluster members",
            wanted.len(),
            members.len()
        ));
    }
    if let Some(w) = wanted.iter().find(|w| !members.contains(w)) {
        return Err(format!("owner {w:?} is not among the cluster members"));
    }
    let ring = active_members(members);
    let mut found = Vec::with_capacity(count);
    for instance in 0..1_000_000 {
        if found.len() == count {
            break;
        }
        let hash = group_key(job, instance).stable_hash();
        let got = owners(hash, &ring, wanted.len());
        if got
            .iter()
            .map(|m| m.id.as_str())
            .eq(wanted.iter().map(String::as_str))
        {
            found.push(instance);
        }
    }
    if found.len() < count {
        return Err(format!(
            "only {} of the first million groups have the owners {wanted:?}",
            found.len()
        ));
    }
    Ok(found)
}

/// Active members with these ids (placement ranks ids only; the addresses are not used).
fn active_members(ids: &[String]) -> Vec<Member> {
    ids.iter()
        .map(|id| Member {
            id: NodeId::new(id.as_str()),
            generation: 1,
            grpc_addr: SocketAddr::from(([127, 0, 0, 1], 1)),
            state: MemberState::Active,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use pushgate::cluster::Ring;

    fn ids(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn chosen_groups_have_exactly_the_wanted_owners_as_a_node_ranks_them() {
        let members = ids(&["127.0.0.1:7001", "127.0.0.1:7002", "127.0.0.1:7003"]);
        let wanted = ids(&["127.0.0.1:7002", "127.0.0.1:7003"]);
        let got = instances_owned_by("loadgen", &members, &wanted, 50).unwrap();
        assert_eq!(got.len(), 50);
        // As a node of that cluster ranks them.
        let ring = Ring::new(NodeId::new("127.0.0.1:7001"), active_members(&members), 1);
        for i in &got {
            let order: Vec<&str> = ring
                .rendezvous_order(group_key("loadgen", *i).stable_hash())
                .iter()
                .map(|m| m.id.as_str())
                .collect();
            assert_eq!(
                order,
                ["127.0.0.1:7002", "127.0.0.1:7003", "127.0.0.1:7001"]
            );
        }
        // About one group in six has these two owners in this order.
        assert!(*got.last().unwrap() < 50 * 12, "{got:?}");
    }

    #[test]
    fn owners_outside_the_cluster_are_refused() {
        let members = ids(&["a", "b"]);
        assert!(instances_owned_by("j", &members, &ids(&["c"]), 1).is_err());
        assert!(instances_owned_by("j", &members, &[], 1).is_err());
        assert!(instances_owned_by("j", &members, &ids(&["a", "b", "a"]), 1).is_err());
    }
}
