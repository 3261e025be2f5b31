//! The callee's side of a collect: which groups this node sends (and which it leaves to another
//! peer the caller asks), in chunks of about `COLLECT_CHUNK_BYTES`.

use std::collections::{HashMap, HashSet};

use super::super::ring::Ring;
use super::super::rpc::{pb, wire};
use crate::store::codec::{encode_group_wire, encode_group_wire_text_only};
use crate::store::{GroupKey, GroupSnapshot, Store};

/// Groups are batched into collect chunks of about this size.
pub const COLLECT_CHUNK_BYTES: usize = 1 << 20;

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
        let room = wire::group_wire_capacity(g);
        if buf.is_empty() {
            // A whole chunk at once when enough groups are left to fill one (growing to it
            // would copy it and fault its pages in twice), less for a small last chunk.
            let left = groups.len() - i;
            buf.reserve((COLLECT_CHUNK_BYTES + room).min(room.saturating_mul(left)));
        } else {
            buf.reserve(room);
        }
        if text_only {
            encode_group_wire_text_only(g, &mut buf);
        } else {
            encode_group_wire(g, &mut buf);
        }
        ends.push(buf.len());
        current.group_keys.push(g.key.stable_hash());
        current.group_versions.push(g.version);
        if buf.len() >= COLLECT_CHUNK_BYTES {
            current.groups =
                wire::split_at_ends(std::mem::take(&mut buf), &std::mem::take(&mut ends));
            chunks.push(std::mem::take(&mut current));
        }
    }
    current.groups = wire::split_at_ends(buf, &ends);
    current.tombstones = tombstones
        .into_iter()
        .map(|(k, version)| pb::Tombstone {
            key: wire::key_to_pb(&k),
            version,
        })
        .collect();
    (current.deferred_keys, current.deferred_versions) = deferred.into_iter().unzip();
    chunks.push(current);
    chunks
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
    store: &Store,
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
    let only: Option<HashSet<u64, Fast>> =
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

#[cfg(test)]
#[path = "answer_tests.rs"]
mod tests;
