//! The state under the store's lock: the groups and the two indexes kept in step with them
//! (metric name -> type and member families, series identity -> owning group), and the moves
//! that keep them in step when a group's families change.

use std::collections::HashMap;
use std::sync::Arc;

use super::family::StoredFamily;
use super::group::{slot_of, timing_families, FamilyChange, FamilyMap, Group, NO_SLOT};
use super::key::GroupKey;
use crate::exposition::MetricType;
use crate::FastMap;

/// A group's family in the index: (group id, key, family).
pub(super) type IndexMember = (u64, Arc<GroupKey>, StoredFamily);

#[derive(Debug)]
pub(super) struct FamilyIndex {
    pub(super) typ: MetricType,
    /// (group id, key, family) of every group holding a family of this name, in slots that keep
    /// their place (a removed member leaves a hole that the next one fills): a group keeps the
    /// slot of each of its families, so replacing one is a store into its slot, not a probe of
    /// a map with one entry per group (a cache miss or two per family in a large store).
    pub(super) members: Vec<Option<IndexMember>>,
    /// Holes in `members`.
    pub(super) free: Vec<usize>,
    /// Members present.
    pub(super) count: usize,
    /// Store sequence number of the last change to a member's label sets or to the set of
    /// members: the render cache keeps the member order until this moves.
    pub(super) layout: u64,
}

#[derive(Default)]
pub(super) struct Inner {
    pub(super) groups: FastMap<Arc<GroupKey>, Group>,
    pub(super) normalized: FastMap<GroupKey, Arc<GroupKey>>,
    pub(super) index: FastMap<Arc<str>, FamilyIndex>,
    /// series identity -> id of the group holding it
    pub(super) series: HashMap<u128, u64, BuildU128>,
    pub(super) seq: u64,
    pub(super) next_group_id: u64,
    pub(super) series_total: usize,
    /// Bytes held by the families' encodings (not counting map overheads).
    pub(super) encoded_bytes: usize,
    /// Cluster only: groups deleted at a version, so an older replica cannot bring them back.
    pub(super) tombstones: super::tombstones::Tombstones,
    /// Cluster only: the version of the last cluster-wide wipe. Every group written at or
    /// before it was removed, so a copy that old arriving later (a replica, anti-entropy from a
    /// peer the wipe had not reached yet) is stale and refused.
    pub(super) wiped_at: u64,
    /// No group expires before this (Unix seconds; 0: unknown, the next sweep looks), so a
    /// sweep of a store whose groups have no TTL, or none due, takes only a read of this.
    pub(super) next_expiry: f64,
}

/// Series identities are already uniform 128-bit hashes: use their low bits directly.
#[derive(Default, Clone, Copy)]
pub(super) struct BuildU128;
#[derive(Default)]
pub(super) struct U128Hasher(u64);
impl std::hash::BuildHasher for BuildU128 {
    type Hasher = U128Hasher;
    fn build_hasher(&self) -> U128Hasher {
        U128Hasher(0)
    }
}
impl std::hash::Hasher for U128Hasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for chunk in bytes.chunks(8) {
            let mut b = [0u8; 8];
            b[..chunk.len()].copy_from_slice(chunk);
            self.0 ^= u64::from_le_bytes(b);
        }
    }
    fn write_u128(&mut self, i: u128) {
        self.0 = i as u64;
    }
}

impl Inner {
    pub(super) fn next_seq(&mut self) -> u64 {
        self.seq += 1;
        self.seq
    }

    pub(super) fn ensure_group(&mut self, key: &GroupKey) -> u64 {
        if let Some(g) = self.groups.get(key) {
            return g.id;
        }
        self.next_group_id += 1;
        let id = self.next_group_id;
        let key = Arc::new(key.clone());
        let timing = timing_families(&key, 0.0, 0.0);
        self.normalized.insert(key.normalized(), key.clone());
        let seq = self.seq;
        let timing_slots = [
            self.index_family(id, &key, &timing[0], seq),
            self.index_family(id, &key, &timing[1], seq),
        ];
        let group = Group {
            id,
            key: key.clone(),
            families: FamilyMap::default(),
            push_time: 0.0,
            failure_time: 0.0,
            last_push_successful: true,
            aggregating: false,
            ttl: 0.0,
            version: 0,
            reset: 0,
            cleared: 0,
            push_stamp: 0,
            failure_stamp: 0,
            ttl_stamp: 0,
            timing,
            timing_slots,
            agg_digest: 0,
        };
        self.groups.insert(key, group);
        id
    }

    /// Moves the indexes for every change (see `swap_family`). When a new family did not take
    /// the slot of the one it replaces (the group records that one until told otherwise), the
    /// group then records the slots of all its new families: `names` are those of its pushed
    /// ones, in the order of their changes, which end with its two timing families.
    pub(super) fn apply_changes<'n>(
        &mut self,
        gid: u64,
        key: &Arc<GroupKey>,
        changes: Vec<FamilyChange>,
        seq: u64,
        names: impl Iterator<Item = &'n Arc<str>>,
    ) {
        let mut slots = Vec::with_capacity(changes.len());
        let mut moved = false;
        for (old, new) in changes {
            let added = new.is_some();
            let before = slot_of(&old);
            let slot = self.swap_family(gid, key, old, new, seq);
            if added {
                moved |= slot != before;
                slots.push(slot);
            }
        }
        if moved {
            self.set_slots(key, names, &slots);
        }
    }

    /// Records in the group the index slots of its families named `names` (in order) and, in
    /// the last two of `slots`, of its timing families.
    fn set_slots<'n>(
        &mut self,
        key: &GroupKey,
        names: impl Iterator<Item = &'n Arc<str>>,
        slots: &[usize],
    ) {
        let Some(group) = self.groups.get_mut(key) else {
            return;
        };
        for (name, &slot) in names.zip(slots) {
            if let Some(held) = group.families.get_mut(name) {
                held.2 = slot;
            }
        }
        if let [.., push, failure] = *slots {
            group.timing_slots = [push, failure];
        }
    }

    /// Moves the indexes from `old` (with its slot) to `new` (either may be absent) and returns
    /// the slot of `new` (`NO_SLOT` when there is none). Replacing a family by one with the same
    /// series — the common case of a job pushing new values — only swaps the family in its slot:
    /// no series-index traffic at all.
    fn swap_family(
        &mut self,
        gid: u64,
        key: &Arc<GroupKey>,
        old: Option<(StoredFamily, usize)>,
        new: Option<StoredFamily>,
        seq: u64,
    ) -> usize {
        if let (Some((o, slot)), Some(n)) = (&old, &new) {
            if StoredFamily::ptr_eq(o, n) {
                // Kept as it was (a timing family whose time did not change).
                return *slot;
            }
            if o.same_series(n) {
                if let Some(entry) = self.index.get_mut(&n.name) {
                    if let Some(Some(member)) = entry.members.get_mut(*slot) {
                        if member.0 == gid {
                            // Same label sets: the render order is unchanged.
                            member.2 = n.clone();
                            if entry.count == 1 {
                                entry.typ = n.typ;
                            }
                            self.encoded_bytes = (self.encoded_bytes + n.heap_bytes())
                                .saturating_sub(o.heap_bytes());
                            return *slot;
                        }
                    }
                }
            }
        }
        if let Some((o, slot)) = old {
            self.unindex(gid, slot, &o, seq);
        }
        match new {
            Some(n) => self.index_family(gid, key, &n, seq),
            None => NO_SLOT,
        }
    }

    fn index_family(
        &mut self,
        gid: u64,
        key: &Arc<GroupKey>,
        fam: &StoredFamily,
        seq: u64,
    ) -> usize {
        let entry = self
            .index
            .entry(fam.name.clone())
            .or_insert_with(|| FamilyIndex {
                typ: fam.typ,
                members: Vec::new(),
                free: Vec::new(),
                count: 0,
                layout: seq,
            });
        if entry.count == 0 {
            entry.typ = fam.typ;
        }
        let member = Some((gid, key.clone(), fam.clone()));
        let slot = match entry.free.pop() {
            Some(hole) => {
                entry.members[hole] = member;
                hole
            }
            None => {
                entry.members.push(member);
                entry.members.len() - 1
            }
        };
        entry.count += 1;
        entry.layout = seq;
        for h in fam.series() {
            self.series.insert(h, gid);
        }
        self.series_total += fam.len();
        self.encoded_bytes += fam.heap_bytes();
        slot
    }

    pub(super) fn unindex(&mut self, gid: u64, slot: usize, fam: &StoredFamily, seq: u64) {
        if let Some(entry) = self.index.get_mut(&fam.name) {
            if let Some(member) = entry.members.get_mut(slot) {
                if member
                    .as_ref()
                    .is_some_and(|(g, _, current)| *g == gid && StoredFamily::ptr_eq(current, fam))
                {
                    *member = None;
                    entry.free.push(slot);
                    entry.count -= 1;
                }
            }
            entry.layout = seq;
            if entry.count == 0 {
                self.index.remove(&fam.name);
            }
        }
        for h in fam.series() {
            if self.series.get(&h) == Some(&gid) {
                self.series.remove(&h);
            }
        }
        self.series_total = self.series_total.saturating_sub(fam.len());
        self.encoded_bytes = self.encoded_bytes.saturating_sub(fam.heap_bytes());
    }
}
