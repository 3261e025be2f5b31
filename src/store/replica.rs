//! The cluster's side of the store: versioned writes stamped by a group's primary, tombstones
//! that keep a deleted group from coming back, replicas applied when newer, and the versions,
//! hand-overs and wipes that anti-entropy and rebalancing work with.

use std::sync::Arc;

use super::check::key_collision;
use super::error::PushError;
use super::group::GroupSnapshot;
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
        self.push_stamped(p, now, || Some(stamp()))
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
    pub fn delete_within_budget(&self, key: &GroupKey, version: u64) -> Deleted {
        let budget = *self.tombstone_budget.lock();
        self.write(
            |inner| {
                if inner.tombstones.get(key).is_some_and(|&v| v >= version)
                    || inner.groups.get(key).is_some_and(|g| g.version > version)
                {
                    return Deleted::Stale;
                }
                if !inner.groups.contains_key(key) && !inner.tombstones.room_for(key, budget) {
                    return Deleted::OverBudget;
                }
                inner.delete(key);
                inner.tombstones.insert(key.clone(), version);
                Deleted::Recorded
            },
            |d| *d == Deleted::Recorded,
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

    /// Replaces a group with a replica of it when the replica is newer than both the group and
    /// its tombstone (newest wins). Returns whether it was applied.
    pub fn apply_replica(&self, g: GroupSnapshot) -> bool {
        // An expired copy is expired wherever it is: it never comes back.
        if g.expired(crate::time::unix_seconds()) {
            return false;
        }
        // None when refused as stale: nothing changed.
        let applied = self.write(
            |inner| {
                if g.version <= inner.wiped_at
                    || inner
                        .tombstones
                        .get(&g.key)
                        .is_some_and(|&v| v >= g.version)
                    || inner
                        .groups
                        .get(&*g.key)
                        .is_some_and(|cur| cur.version >= g.version)
                {
                    return None;
                }
                let key = g.key.clone();
                let ok = inner.restore(g, &self.opts).is_ok();
                if ok {
                    inner.tombstones.remove(&key);
                }
                Some(ok)
            },
            Option::is_some,
        );
        applied == Some(true)
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

    /// The key and version of every group held (cheap: no family is copied), for digests.
    pub fn versions(&self) -> Vec<(Arc<GroupKey>, u64)> {
        let inner = self.inner.read();
        inner
            .groups
            .values()
            .map(|g| (g.key.clone(), g.version))
            .collect()
    }

    /// The version of a group held, if any.
    pub fn group_version(&self, key: &GroupKey) -> Option<u64> {
        self.inner.read().groups.get(key).map(|g| g.version)
    }

    /// Forgets this node's copy of a group handed over to its owners, unless a newer write
    /// arrived meanwhile (its version moved). No tombstone is left: this is a move, not a delete.
    pub fn drop_if_version(&self, key: &GroupKey, version: u64) -> bool {
        self.write(
            |inner| {
                inner.groups.get(key).is_some_and(|g| g.version == version) && inner.delete(key)
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
                let stale: Vec<GroupKey> = inner
                    .groups
                    .values()
                    .filter(|g| g.version <= watermark)
                    .map(|g| (*g.key).clone())
                    .collect();
                for key in &stale {
                    inner.delete(key);
                }
                inner.tombstones.retain(|_, v| *v > watermark);
                stale.len()
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
    pub fn max_version(&self) -> u64 {
        let inner = self.inner.read();
        let groups = inner.groups.values().map(|g| g.version).max().unwrap_or(0);
        let tombs = inner.tombstones.values().copied().max().unwrap_or(0);
        groups.max(tombs)
    }
}
