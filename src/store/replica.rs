//! The cluster's side of the store: versioned writes stamped by a group's primary, tombstones
//! that keep a deleted group from coming back, replicas applied when newer, and the versions,
//! hand-overs and wipes that anti-entropy and rebalancing work with.

use std::sync::Arc;

use super::check::key_collision;
use super::error::PushError;
use super::group::{Group, GroupSnapshot};
use super::merge;
use super::index::Inner;
use super::key::GroupKey;
use super::prepare::PreparedPush;
use super::tombstones::{Deleted, TombstoneBudget};
use super::write::WriteOutcome;
use super::Store;

/// Versioned writes for a cluster node: versions are stamped by the group's primary (a hybrid
/// logical clock) and kept as given; replicas apply a group's state only when it is newer.
/// Every operation here costs O(size of the group).
impl Store {
    /// `push` with a version from `stamp` (the primary's clock) instead of the local sequence
    /// number. `stamp` runs under the store's write lock, so versions of one group follow the
    /// order in which its writes were applied.
    pub fn push_versioned(
        &self,
        p: PreparedPush,
        now: f64,
        stamp: impl FnOnce() -> u64,
    ) -> Result<WriteOutcome, PushError> {
        self.expire(now);
        if !self.aggregates.any() {
            return self.push_stamped(p, now, || Some(stamp()));
        }
        // As on a single node, an accepted plain push ends the group's aggregation.
        let key = p.key.clone();
        self.plain_write(&key, || self.push_stamped(p, now, || Some(stamp())), Result::is_ok)
    }

    /// `record_failure` with a version stamped by the primary; false when nothing was recorded.
    pub fn record_failure_versioned(
        &self,
        key: &GroupKey,
        now: f64,
        stamp: impl FnOnce() -> u64,
    ) -> bool {
        self.record_failure_stamped(key, now, || Some(stamp()))
    }

    /// Deletes a group at `version`, leaving a tombstone so an older replica of it is refused.
    /// A group holding a newer version is kept. Returns whether the tombstone was recorded.
    pub fn delete_versioned(&self, key: &GroupKey, version: u64) -> bool {
        self.delete_within_budget(key, version) == Deleted::Recorded
    }

    /// `delete_versioned`, telling why nothing changed. A tombstone for a group this node does
    /// not hold is kept only within the tombstone budget: such a delete removes nothing here,
    /// and its tombstone guards only against an older copy arriving later (rare), while an
    /// unbounded number of them (deletes of made-up groups) would fill the memory. A delete of
    /// a held group always keeps its tombstone (it frees at least as much as it keeps).
    ///
    /// The delete is merged into the group (`merge`): what was written before it goes, and
    /// what was written after it (a write whose copy reached this node first) stays, with the
    /// delete kept in the group so that an older copy merged later cannot bring back what it
    /// removed (`Deleted::Stale`: the group is still held).
    pub fn delete_within_budget(&self, key: &GroupKey, version: u64) -> Deleted {
        // A delete that removes an aggregating group ends its aggregation (its state goes).
        self.plain_write(
            key,
            || self.delete_unlocked(key, version),
            |d| *d == Deleted::Recorded,
        )
    }

    fn delete_unlocked(&self, key: &GroupKey, version: u64) -> Deleted {
        let budget = *self.tombstone_budget.lock();
        self.write(
            |inner| {
                if inner.tombstones.get(key).is_some_and(|&v| v >= version) {
                    return Deleted::Stale;
                }
                let Some(held) = inner.groups.get(key).map(Group::snapshot) else {
                    if !inner.tombstones.room_for(key, budget) {
                        return Deleted::OverBudget;
                    }
                    inner.tombstones.insert(key.clone(), version);
                    return Deleted::Recorded;
                };
                let merged = merge::merge(&held, &merge::tombstone(held.key.clone(), version));
                inner.install(&held, merged, &self.opts);
                if inner.groups.contains_key(key) {
                    Deleted::Stale
                } else {
                    Deleted::Recorded
                }
            },
            |d| *d != Deleted::OverBudget,
        )
    }

    /// Sets the bound on tombstones of groups not held (`--cluster.max-tombstones`,
    /// `--cluster.max-tombstone-bytes`).
    pub fn set_tombstone_budget(&self, budget: TombstoneBudget) {
        *self.tombstone_budget.lock() = budget;
    }

    /// How many tombstones are held, and about how many bytes their keys take.
    pub fn tombstone_usage(&self) -> (usize, usize) {
        let inner = self.inner.read();
        (inner.tombstones.len(), inner.tombstones.bytes())
    }

    /// Merges a copy of a group (a replica, a hand-off, anti-entropy) into what this node holds
    /// of it: the group, its tombstone, and the last wipe (`merge`: each part keeps its newest
    /// write, so neither copy loses a write the other missed). Returns whether anything changed.
    pub fn apply_replica(&self, g: GroupSnapshot) -> bool {
        // An expired copy is expired wherever it is: it never comes back.
        if g.expired(crate::time::unix_seconds()) {
            return false;
        }
        // An aggregating group's copy carries its state, which merges under the group's lock.
        if g.agg.is_some() || self.aggregates.holds(&g.key) {
            return self.apply_aggregate_copy(g);
        }
        let changed = self.write(
            |inner| {
                let held = inner.state(&g.key);
                let merged = inner.merged_copy(&held, &g);
                inner.install(&held, merged, &self.opts)
            },
            |changed| *changed == Some(true),
        );
        changed == Some(true)
    }

    /// The digest (`merge::digest`) of what this node holds of a group (the group or its
    /// tombstone), and whether that is a tombstone; None when it holds neither.
    pub fn digest(&self, key: &GroupKey) -> Option<(u64, bool)> {
        let inner = self.inner.read();
        if let Some(g) = inner.groups.get(key) {
            return Some((g.digest(), false));
        }
        let t = *inner.tombstones.get(key)?;
        Some((tombstone_digest(key, t), true))
    }

    /// The tombstone version of a deleted group, if any.
    pub fn tombstone(&self, key: &GroupKey) -> Option<u64> {
        self.inner.read().tombstones.get(key).copied()
    }

    /// Every tombstone (deleted group, version).
    pub fn tombstones(&self) -> Vec<(GroupKey, u64)> {
        let inner = self.inner.read();
        inner
            .tombstones
            .iter()
            .map(|(k, v)| (k.clone(), *v))
            .collect()
    }

    /// Runs the consistency check of `p` against what this store holds, changing nothing.
    pub fn check_consistency(&self, p: &PreparedPush) -> Result<(), PushError> {
        if !self.opts.consistency_check {
            return Ok(());
        }
        self.expire(crate::time::unix_seconds());
        let inner = self.inner.read();
        let norm = p.key.normalized();
        if let Some(existing) = inner.normalized.get(&norm) {
            if **existing != p.key {
                return Err(key_collision(&p.key, existing));
            }
        }
        inner.check(p, &self.opts).map_err(PushError::Invalid)
    }

    /// The key, version and digest of every group held, for anti-entropy and hand-off.
    pub fn versions(&self) -> Vec<(Arc<GroupKey>, u64, u64)> {
        let inner = self.inner.read();
        inner
            .groups
            .values()
            .map(|g| (g.key.clone(), g.version, g.digest()))
            .collect()
    }

    /// The key hash and digest of every group and tombstone held whose key hash `keep`
    /// takes: what a `Sync` summary of this node's copies is summed from (the callee's side;
    /// its caller lists from [`Self::versions`] and [`Self::tombstones`]). Only the kept are
    /// digested: a node answers a summary from each co-owner, and each co-owns a share of it.
    pub fn sync_digests(&self, keep: impl Fn(u64) -> bool) -> Vec<(u64, u64)> {
        let mut out: Vec<(u64, u64)> = {
            let inner = self.inner.read();
            inner
                .groups
                .values()
                .filter(|g| keep(g.key.stable_hash()))
                .map(|g| (g.key.stable_hash(), g.digest()))
                .collect()
        };
        out.extend(
            self.tombstones()
                .into_iter()
                .filter(|(k, _)| keep(k.stable_hash()))
                .map(|(k, v)| (k.stable_hash(), tombstone_digest(&k, v))),
        );
        out
    }

    /// The version of a group held, if any.
    pub fn group_version(&self, key: &GroupKey) -> Option<u64> {
        self.inner.read().groups.get(key).map(|g| g.version)
    }

    /// Forgets this node's copy of a group handed over to its owners, unless it changed
    /// meanwhile (a write or a merged copy moved its digest, `merge::digest`). No tombstone is
    /// left: this is a move, not a delete.
    pub fn drop_if_digest(&self, key: &GroupKey, digest: u64) -> bool {
        self.write(
            |inner| {
                inner
                    .groups
                    .get(key)
                    .is_some_and(|g| g.digest() == digest)
                    && inner.delete(key)
            },
            |&removed| removed,
        )
    }

    /// Forgets a tombstone handed over to its owners, unless it changed meanwhile.
    pub fn drop_tombstone_if_version(&self, key: &GroupKey, version: u64) -> bool {
        let mut inner = self.inner.write();
        if inner.tombstones.get(key) != Some(&version) {
            return false;
        }
        inner.tombstones.remove(key);
        true
    }

    /// A cluster-wide wipe issued at `version`: removes every group and tombstone held (like a
    /// single node's wipe) and from then on refuses copies of groups written at or before the
    /// watermark: the newest of `version` and every version this node held, so a peer's clock
    /// running behind does not let its pre-wipe copies back in. Returns the watermark.
    pub fn wipe_versioned(&self, version: u64) -> u64 {
        let mut wiped_at = 0;
        self.replace_all(|old| {
            let held = old
                .groups
                .values()
                .map(|g| g.version)
                .chain(old.tombstones.values().copied())
                .max()
                .unwrap_or(0);
            wiped_at = old.wiped_at.max(version).max(held);
            Inner {
                wiped_at,
                seq: old.seq,
                next_group_id: old.next_group_id,
                ..Inner::default()
            }
        });
        wiped_at
    }

    /// The watermark of the last cluster-wide wipe this node knows of (0: none): copies of
    /// groups written at or before it are stale.
    pub fn wiped_at(&self) -> u64 {
        self.inner.read().wiped_at
    }

    /// A wipe learnt late (a node that was down or cut off when it was issued, or a
    /// persistence file written before it): removes every group and tombstone written at or
    /// before `watermark` and keeps what is newer (written after the wipe). Watermarks merge
    /// by maximum, so learning one twice, or an older one, changes nothing. Returns how many
    /// groups were removed.
    pub fn learn_wipe(&self, watermark: u64) -> usize {
        self.write(
            |inner| {
                if watermark <= inner.wiped_at {
                    return 0;
                }
                inner.wiped_at = watermark;
                // Every group merged with the wipe as a delete: what was written before it goes
                // (a group written since keeps its newer families only).
                let older: Vec<GroupSnapshot> = inner
                    .groups
                    .values()
                    .map(Group::snapshot)
                    .filter(|g| merge::written_by(g, watermark))
                    .collect();
                let mut removed = 0;
                for held in older {
                    let wipe = merge::tombstone(held.key.clone(), watermark);
                    let merged = merge::merge(&held, &wipe);
                    let gone = merge::is_gone(&merged);
                    if inner.install_group(&held, merged, &self.opts) {
                        removed += usize::from(gone);
                    }
                }
                inner.tombstones.retain(|_, v| *v > watermark);
                removed
            },
            // The watermark moved: a persistence file must record it even when nothing held
            // was old enough to go.
            |_| true,
        )
    }

    /// Removes the tombstones whose version is below `version` (older than the tombstone
    /// lifetime); returns how many were removed.
    pub fn collect_tombstones(&self, version: u64) -> usize {
        let mut inner = self.inner.write();
        let before = inner.tombstones.len();
        inner.tombstones.retain(|_, v| *v >= version);
        before - inner.tombstones.len()
    }

    /// How many tombstones are held.
    pub fn tombstone_count(&self) -> usize {
        self.inner.read().tombstones.len()
    }

    /// The highest version held (groups and tombstones), to start a node's clock past it.
    /// (Every part's stamp is at most its group's version.)
    pub fn max_version(&self) -> u64 {
        let inner = self.inner.read();
        let groups = inner.groups.values().map(|g| g.version).max().unwrap_or(0);
        let tombs = inner.tombstones.values().copied().max().unwrap_or(0);
        groups.max(tombs)
    }
}

/// The digest of a tombstone at `version`, as `merge::digest` of the state it stands for.
pub fn tombstone_digest(key: &GroupKey, version: u64) -> u64 {
    merge::digest(&merge::tombstone(Arc::new(key.clone()), version))
}

impl Inner {
    /// What this node holds of a group, as a copy to merge: the group, its tombstone, or (held
    /// neither) the empty state.
    pub(crate) fn state(&self, key: &Arc<GroupKey>) -> GroupSnapshot {
        match self.groups.get(&**key) {
            Some(g) => g.snapshot(),
            None => merge::tombstone(key.clone(), self.tombstones.get(key).copied().unwrap_or(0)),
        }
    }

    /// Makes `merged` (the merge of `held`, this node's state, and a copy) what this node holds:
    /// the group restored, or removed with its tombstone when nothing is left. None when
    /// nothing changed, Some(false) when it could not be restored (the group limit, a key
    /// collision), Some(true) when it changed.
    /// `held` merged with a copy `g`, and with the last wipe when the result has parts written
    /// before it.
    pub(crate) fn merged_copy(
        &self,
        held: &GroupSnapshot,
        g: &GroupSnapshot,
    ) -> GroupSnapshot {
        let merged = merge::merge(held, g);
        if self.wiped_at > 0 && merge::written_by(&merged, self.wiped_at) {
            return merge::merge(&merged, &merge::tombstone(g.key.clone(), self.wiped_at));
        }
        merged
    }

    pub(crate) fn install(
        &mut self,
        held: &GroupSnapshot,
        merged: GroupSnapshot,
        opts: &super::StoreOptions,
    ) -> Option<bool> {
        if merge::digest(&merged) == merge::digest(held) {
            return None;
        }
        if merge::is_gone(&merged) {
            let held_group = self.delete(&merged.key);
            // A copy from before the last wipe leaves no tombstone: the watermark covers it.
            if !held_group && merged.stamps.cleared <= self.wiped_at {
                return None;
            }
            self.tombstones.insert((*merged.key).clone(), merged.stamps.cleared);
            return Some(true);
        }
        let key = merged.key.clone();
        let ok = self.restore(merged, opts).is_ok();
        if ok {
            self.tombstones.remove(&key);
        }
        Some(ok)
    }

    /// `install` for a held group; true when it changed.
    fn install_group(
        &mut self,
        held: &GroupSnapshot,
        merged: GroupSnapshot,
        opts: &super::StoreOptions,
    ) -> bool {
        self.install(held, merged, opts) == Some(true)
    }
}
