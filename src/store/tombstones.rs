//! The tombstones a cluster node keeps (deleted groups, so an older copy cannot bring them
//! back), with the bytes their keys hold and the budget that bounds those of groups never held.

use std::collections::HashMap;

use super::key::GroupKey;

/// Deleted groups and the version of their delete, with the bytes of their keys.
#[derive(Default)]
pub(super) struct Tombstones {
    map: HashMap<GroupKey, u64>,
    bytes: usize,
}

/// What a tombstone costs, about: its key's names and values, plus the map entry around them.
pub(super) fn tombstone_bytes(key: &GroupKey) -> usize {
    let labels: usize = key
        .labels()
        .iter()
        .map(|(n, v)| n.len() + v.len() + 2 * std::mem::size_of::<String>())
        .sum();
    labels + std::mem::size_of::<GroupKey>() + std::mem::size_of::<u64>()
}

impl Tombstones {
    pub(super) fn get(&self, key: &GroupKey) -> Option<&u64> {
        self.map.get(key)
    }

    pub(super) fn insert(&mut self, key: GroupKey, version: u64) {
        let size = tombstone_bytes(&key);
        if self.map.insert(key, version).is_none() {
            self.bytes += size;
        }
    }

    pub(super) fn remove(&mut self, key: &GroupKey) -> Option<u64> {
        let (k, v) = self.map.remove_entry(key)?;
        self.bytes -= tombstone_bytes(&k);
        Some(v)
    }

    pub(super) fn retain(&mut self, mut keep: impl FnMut(&GroupKey, &u64) -> bool) {
        let mut freed = 0;
        self.map.retain(|k, v| {
            let kept = keep(k, v);
            if !kept {
                freed += tombstone_bytes(k);
            }
            kept
        });
        self.bytes -= freed;
    }

    pub(super) fn len(&self) -> usize {
        self.map.len()
    }

    pub(super) fn bytes(&self) -> usize {
        self.bytes
    }

    pub(super) fn values(&self) -> impl Iterator<Item = &u64> {
        self.map.values()
    }

    pub(super) fn iter(&self) -> impl Iterator<Item = (&GroupKey, &u64)> {
        self.map.iter()
    }

    /// Whether one more tombstone for `key` fits `budget` (replacing one it holds always fits).
    pub(super) fn room_for(&self, key: &GroupKey, budget: TombstoneBudget) -> bool {
        self.map.contains_key(key)
            || (self.map.len() < budget.max_count
                && self.bytes.saturating_add(tombstone_bytes(key)) <= budget.max_bytes)
    }
}

/// The most tombstones (and bytes of their keys) a node keeps for groups it does not hold
/// (`--cluster.max-tombstones`, `--cluster.max-tombstone-bytes`); unbounded by default.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TombstoneBudget {
    pub max_count: usize,
    pub max_bytes: usize,
}

impl Default for TombstoneBudget {
    fn default() -> Self {
        TombstoneBudget {
            max_count: usize::MAX,
            max_bytes: usize::MAX,
        }
    }
}

/// What a versioned delete did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Deleted {
    /// The tombstone was recorded (and the group, if held, removed).
    Recorded,
    /// A newer group or tombstone is held: nothing changed.
    Stale,
    /// The group is not held and the tombstone budget is spent: nothing changed.
    OverBudget,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{Store, StoreOptions};

    fn key(job: &str) -> GroupKey {
        GroupKey::new(vec![("job".into(), job.into())])
    }

    #[test]
    fn tombstones_of_groups_not_held_stay_within_the_budget() {
        let s = Store::new(StoreOptions::default());
        let one = tombstone_bytes(&key("a"));
        s.set_tombstone_budget(TombstoneBudget {
            max_count: 3,
            max_bytes: usize::MAX,
        });
        for (i, job) in ["a", "b", "c"].into_iter().enumerate() {
            assert_eq!(
                s.delete_within_budget(&key(job), 10 + i as u64),
                Deleted::Recorded
            );
        }
        assert_eq!(s.delete_within_budget(&key("d"), 20), Deleted::OverBudget);
        // A newer delete of a group already tombstoned replaces its tombstone.
        assert_eq!(s.delete_within_budget(&key("a"), 30), Deleted::Recorded);
        assert_eq!(s.delete_within_budget(&key("a"), 5), Deleted::Stale);
        assert_eq!(s.tombstone_usage(), (3, 3 * one));
        // Expired tombstones free their bytes.
        assert_eq!(s.collect_tombstones(20), 2);
        assert_eq!(s.tombstone_usage(), (1, one));

        s.set_tombstone_budget(TombstoneBudget {
            max_count: usize::MAX,
            max_bytes: 2 * one,
        });
        assert_eq!(s.delete_within_budget(&key("e"), 40), Deleted::Recorded);
        assert_eq!(s.delete_within_budget(&key("f"), 41), Deleted::OverBudget);
        let long = "x".repeat(1000);
        assert_eq!(s.delete_within_budget(&key(&long), 42), Deleted::OverBudget);
        assert_eq!(s.tombstone_usage(), (2, 2 * one));
    }
}
