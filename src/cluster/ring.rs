//! The ring: an immutable snapshot of the live members as one node sees them, and the placement
//! of push groups on its active members by rendezvous (highest random weight) hashing.
//!
//! Every node ranks the members for a group key by a score that depends only on the key and the
//! node id, so all nodes that see the same members agree on the owners without talking to each
//! other, and adding or removing one node moves only the groups whose top R included it.
//!
//! The score is fixed and part of the cluster's wire contract (nodes of different versions must
//! agree on it):
//!
//! ```text
//! score(node, key) = xxh3_64(key_hash as 8 little-endian bytes ++ node id as UTF-8 bytes)
//! ```
//!
//! where `key_hash` is [`GroupKey::stable_hash`](crate::store::GroupKey::stable_hash). Members are
//! ordered by score, highest first; equal scores (practically never) are ordered by node id,
//! smallest first, so the order is total and independent of the input order.

use std::cmp::Ordering;

use xxhash_rust::xxh3::xxh3_64;

use super::member::{Member, MemberState, NodeId};

/// An immutable snapshot of the live members, as seen by one node.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Ring {
    pub self_id: NodeId,
    /// Live members including this node, sorted by id, one entry per id.
    pub members: Vec<Member>,
    /// Increases by one with every published change; local to this node.
    pub version: u64,
}

impl Ring {
    /// Builds a ring, sorting the members by id and keeping the newest generation of an id that
    /// appears twice (a restarted node whose old incarnation is not yet declared dead).
    pub fn new(self_id: NodeId, mut members: Vec<Member>, version: u64) -> Self {
        members.sort_by(|a, b| a.id.cmp(&b.id).then(b.generation.cmp(&a.generation)));
        members.dedup_by(|later, first| later.id == first.id);
        Ring {
            self_id,
            members,
            version,
        }
    }

    /// Members in the `Active` state, sorted by id: the ones that own groups.
    pub fn active(&self) -> impl Iterator<Item = &Member> + Clone {
        self.members
            .iter()
            .filter(|m| m.state == MemberState::Active)
    }

    /// The `r` active owners of a group (primary first); fewer when fewer are active.
    pub fn owners(&self, key_hash: u64, r: usize) -> Vec<&Member> {
        owners(key_hash, self.active(), r)
    }

    /// Whether `a` and `b` are both among the `r` active owners of a group: [`Self::owners`]
    /// without listing them (a `Sync` summary asks this of every group a node holds).
    pub fn both_own(&self, key_hash: u64, r: usize, a: &NodeId, b: &NodeId) -> bool {
        let (sa, sb) = (score(key_hash, a), score(key_hash, b));
        let (mut has_a, mut has_b, mut before_a, mut before_b) = (false, false, 0, 0);
        for m in self.active() {
            has_a |= m.id == *a;
            has_b |= m.id == *b;
            let t = score(key_hash, &m.id);
            // Ranked before: a higher score, or the same and a smaller id (`rank`).
            before_a += usize::from(t > sa || (t == sa && m.id < *a));
            before_b += usize::from(t > sb || (t == sb && m.id < *b));
        }
        has_a && has_b && before_a < r && before_b < r
    }

    /// All active members in rendezvous order for a group: owners first, then the fallbacks
    /// (e.g. for hinted handoff).
    pub fn rendezvous_order(&self, key_hash: u64) -> Vec<&Member> {
        rendezvous_order(key_hash, self.active())
    }

    pub fn get(&self, id: &NodeId) -> Option<&Member> {
        self.members
            .binary_search_by(|m| m.id.cmp(id))
            .ok()
            .map(|i| &self.members[i])
    }

    /// This node's own entry, absent only before the first gossip round.
    pub fn self_member(&self) -> Option<&Member> {
        self.get(&self.self_id)
    }
}

/// Ids up to this length are hashed from a stack buffer; longer ones allocate.
const INLINE_ID_LEN: usize = 120;

/// The rendezvous score of `node` for a key; see the module docs for the exact definition.
pub fn score(key_hash: u64, node: &NodeId) -> u64 {
    let id = node.as_str().as_bytes();
    let key = key_hash.to_le_bytes();
    if id.len() <= INLINE_ID_LEN {
        let mut buf = [0u8; 8 + INLINE_ID_LEN];
        buf[..8].copy_from_slice(&key);
        buf[8..8 + id.len()].copy_from_slice(id);
        xxh3_64(&buf[..8 + id.len()])
    } else {
        let mut buf = Vec::with_capacity(8 + id.len());
        buf.extend_from_slice(&key);
        buf.extend_from_slice(id);
        xxh3_64(&buf)
    }
}

/// Highest score first, then smallest id.
fn rank(a: &(u64, &Member), b: &(u64, &Member)) -> Ordering {
    b.0.cmp(&a.0).then_with(|| a.1.id.cmp(&b.1.id))
}

fn scored<'a>(
    key_hash: u64,
    members: impl IntoIterator<Item = &'a Member>,
) -> Vec<(u64, &'a Member)> {
    members
        .into_iter()
        .map(|m| (score(key_hash, &m.id), m))
        .collect()
}

/// All given members in rendezvous order for `key_hash`: the primary owner first.
///
/// Takes any iterator of members, so callers can pass a slice or a filtered view (e.g. only the
/// active members of a ring) without copying.
pub fn rendezvous_order<'a>(
    key_hash: u64,
    members: impl IntoIterator<Item = &'a Member>,
) -> Vec<&'a Member> {
    let mut ranked = scored(key_hash, members);
    ranked.sort_unstable_by(rank);
    ranked.into_iter().map(|(_, m)| m).collect()
}

/// The `r` owners of `key_hash` among `members` (all of them when there are fewer), primary first.
pub fn owners<'a>(
    key_hash: u64,
    members: impl IntoIterator<Item = &'a Member>,
    r: usize,
) -> Vec<&'a Member> {
    let mut ranked = scored(key_hash, members);
    if r == 0 {
        return Vec::new();
    }
    if r < ranked.len() {
        ranked.select_nth_unstable_by(r - 1, rank);
        ranked.truncate(r);
    }
    ranked.sort_unstable_by(rank);
    ranked.into_iter().map(|(_, m)| m).collect()
}

#[cfg(test)]
#[path = "ring_tests.rs"]
mod tests;
