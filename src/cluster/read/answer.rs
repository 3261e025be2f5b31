//! The callee's side of a collect: which groups this node sends (and which it leaves to another
//! peer the caller asks), in chunks of about `COLLECT_CHUNK_BYTES`.

use std::collections::{HashMap, HashSet};


use super::super::ring::Ring;
use super::super::rpc::{pb, wire};
use crate::store::codec::{encode_group_wire, encode_group_wire_text_only};
use crate::store::{GroupKey, GroupSnapshot, Store, StoredFamily};

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
    current.tombstones = tombstones_pb(tombstones);
    (current.deferred_keys, current.deferred_versions) = deferred.into_iter().unzip();
    chunks.push(current);
    chunks
}

/// Family chunks of a `by_family` answer are about this size: the caller holds a few of them
/// per peer while it renders.
pub const FAMILY_CHUNK_BYTES: usize = 256 << 10;

/// [`send_family_chunks`] into a list.
/// Tombstones as an answer carries them.
fn tombstones_pb(tombstones: Vec<(GroupKey, u64)>) -> Vec<pb::Tombstone> {
    tombstones
        .into_iter()
        .map(|(k, version)| pb::Tombstone {
            key: wire::key_to_pb(&k),
            version,
        })
        .collect()
}

#[cfg(test)]
pub fn family_chunks(
    groups: &[GroupSnapshot],
    tombstones: Vec<(GroupKey, u64)>,
    deferred: Vec<(u64, u64)>,
    text_only: bool,
) -> Vec<pb::CollectChunk> {
    let mut chunks = Vec::new();
    send_family_chunks(groups, tombstones, deferred, text_only, &mut |c| {
        chunks.push(c);
        true
    });
    chunks
}

/// Sends the answer to a `by_family` collect (`CollectChunk.heads`, `CollectChunk.families`)
/// as it is encoded, so that the caller renders while this node encodes: the heads of `groups`
/// in their order, with `tombstones` and the `deferred` groups and a bound on the family bytes
/// to come, then their families by name, in chunks of about `FAMILY_CHUNK_BYTES`: each name's
/// index first (`FamilyIndex`), then its members in the index's order, by first series then
/// group key. The members of a name in one chunk are encoded into one buffer. Stops when
/// `send` returns false (the caller went away).
pub fn send_family_chunks(
    groups: &[GroupSnapshot],
    tombstones: Vec<(GroupKey, u64)>,
    deferred: Vec<(u64, u64)>,
    text_only: bool,
    send: &mut dyn FnMut(pb::CollectChunk) -> bool,
) {
    // Every (name, group, family) once: a group's families are unique by name.
    let mut order: Vec<(&str, u32, u32)> = groups
        .iter()
        .enumerate()
        .flat_map(|(gi, g)| {
            g.families
                .iter()
                .enumerate()
                .map(move |(fi, (f, _))| (&*f.name, gi as u32, fi as u32))
        })
        .collect();
    order.sort_unstable();
    let family = |gi: u32, fi: u32| &groups[gi as usize].families[fi as usize].0;
    let wire_len = |f: &StoredFamily| {
        if text_only {
            f.wire_len_text_only()
        } else {
            f.wire_len()
        }
    };
    // What the family chunks take at most: each member's bytes with its index entry and run
    // fields (a few varints and tags each), each name twice per chunk it spans, the framing of
    // each chunk. The caller counts the bound against its scrape budget before any of it.
    let names = order.chunk_by(|a, b| a.0 == b.0).count();
    let bound: usize = order
        .iter()
        .map(|&(name, gi, fi)| wire_len(family(gi, fi)) + 48 + name.len())
        .sum::<usize>()
        + names * 64
        + groups.iter().map(|g| g.families.iter().map(|(f, _)| f.help.len()).sum::<usize>()).sum::<usize>();
    let mut heads = pb::CollectChunk::default();
    let mut size = 0;
    for g in groups {
        let key = wire::key_to_pb(&g.key);
        size += key
            .iter()
            .map(|p| p.name().len() + p.value().len() + 8)
            .sum::<usize>()
            + 32;
        heads.heads.push(pb::GroupHead {
            key,
            version: g.version,
            push_time: g.push_time,
            failure_time: g.failure_time,
        });
        if size >= COLLECT_CHUNK_BYTES {
            if !send(std::mem::take(&mut heads)) {
                return;
            }
            size = 0;
        }
    }
    heads.heads_end = true;
    heads.family_bytes = bound as u64;
    heads.tombstones = tombstones_pb(tombstones);
    (heads.deferred_keys, heads.deferred_versions) = deferred.into_iter().unzip();
    if !send(heads) {
        return;
    }
    let mut current = pb::CollectChunk::default();
    let mut size = 0;
    for same in order.chunk_by(|a, b| a.0 == b.0) {
        let name = same[0].0;
        // The order a render writes whole members in: by first series, then group key (keys
        // are unique, so the order is total).
        let mut sorted: Vec<(&[u8], &GroupKey, u32, u32)> = same
            .iter()
            .map(|&(_, gi, fi)| (family(gi, fi).key_range().0, &*groups[gi as usize].key, gi, fi))
            .collect();
        sorted.sort_unstable_by(|a, b| (a.0, a.1).cmp(&(b.0, b.1)));
        let members: Vec<(u32, u32)> = sorted.into_iter().map(|(_, _, gi, fi)| (gi, fi)).collect();
        let mut index = pb::FamilyIndex::default();
        let mut helps: HashMap<&str, u32, foldhash::fast::RandomState> = HashMap::default();
        for &(gi, fi) in &members {
            let f = family(gi, fi);
            index.groups.push(gi);
            index.types.push(f.typ as i32 as u32);
            let help = *helps.entry(&*f.help).or_insert_with(|| {
                index.help_texts.push(f.help.to_string());
                index.help_texts.len() as u32 - 1
            });
            index.helps.push(help);
            index.empty.push(f.is_empty());
        }
        let mut run = pb::CollectedFamily {
            name: name.to_owned(),
            index: Some(index),
            ..Default::default()
        };
        let mut buf: Vec<u8> = Vec::new();
        for (i, &(gi, fi)) in members.iter().enumerate() {
            let f = family(gi, fi);
            let before = buf.len();
            buf.reserve(wire_len(f));
            if text_only {
                f.to_wire_text_only(&mut buf);
            } else {
                f.to_wire(&mut buf);
            }
            run.groups.push(gi);
            run.ends.push(buf.len() as u32);
            size += buf.len() - before + 8;
            let last = i + 1 == members.len();
            if last || size >= FAMILY_CHUNK_BYTES {
                run.members = std::mem::take(&mut buf).into();
                current.families.push(std::mem::replace(
                    &mut run,
                    pb::CollectedFamily {
                        name: name.to_owned(),
                        ..Default::default()
                    },
                ));
            }
            if size >= FAMILY_CHUNK_BYTES {
                if !send(std::mem::take(&mut current)) {
                    return;
                }
                size = 0;
            }
        }
    }
    if !current.families.is_empty() {
        send(current);
    }
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
