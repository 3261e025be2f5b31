//! The aggregating groups of a store: each group's state behind its own lock, the clock that
//! stamps their writes and this process's partial.

use std::hash::BuildHasher;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;

use parking_lot::{Mutex, RwLock};

use super::state::{AggState, PartialId, Stamp};
use crate::store::key::GroupKey;
use crate::store::prepare::Validation;
use crate::FastMap;

/// One aggregating group's state and whether it still aggregates (a plain write or a delete
/// ends it; a writer that waited for the lock then starts over).
#[derive(Debug, Default)]
pub(super) struct Entry {
    /// Shared with the copies of the group on their way to peers (`Store::transfer_copy`): a
    /// writer clones it (`Arc::make_mut`) only when such a copy is still being sent.
    pub(super) state: Arc<AggState>,
    pub(super) live: bool,
    /// Idempotency keys of pushes a cluster primary added that R nodes have not all taken yet
    /// (`Pending`): a retry of one is neither added again nor acknowledged as a repeat, since
    /// the push may still be taken back.
    pub(super) pending: Vec<String>,
}

/// A push's idempotency key in its group's `Entry::pending` until this is dropped: when the
/// push was answered (taken by R nodes, or taken back). Dropped without the group's lock held.
#[derive(Debug)]
pub struct Pending {
    entry: Arc<Mutex<Entry>>,
    key: String,
}

impl Pending {
    /// Marks `key` pending in `entry`, whose lock the caller holds (`pending` is its list).
    pub(super) fn add(entry: &Arc<Mutex<Entry>>, pending: &mut Vec<String>, key: &str) -> Pending {
        pending.push(key.to_owned());
        Pending {
            entry: entry.clone(),
            key: key.to_owned(),
        }
    }

    pub(super) fn key(&self) -> &str {
        &self.key
    }
}

impl Drop for Pending {
    fn drop(&mut self) {
        let mut entry = self.entry.lock();
        if let Some(i) = entry.pending.iter().position(|k| *k == self.key) {
            entry.pending.swap_remove(i);
        }
    }
}

/// The aggregating groups of a store.
#[derive(Debug)]
pub struct Aggregates {
    groups: Mutex<FastMap<GroupKey, Arc<Mutex<Entry>>>>,
    /// Groups in `groups`: lets a plain write skip the map when nothing aggregates.
    count: AtomicUsize,
    /// Last stamp's version: Unix ms << 16 | counter, strictly increasing.
    clock: AtomicU64,
    /// This process's partial: its node (0 for a single node; a cluster node's id hashed,
    /// `Store::join_cluster`) and an incarnation drawn at start, so a restart never continues
    /// an older partial's sequence.
    node: AtomicU64,
    incarnation: u64,
    /// How a state copied from a peer is checked when the store turns it into families (the
    /// cluster's validation, `Store::join_cluster`).
    pub(super) validation: RwLock<Validation>,
}

impl Default for Aggregates {
    fn default() -> Self {
        let incarnation = std::collections::hash_map::RandomState::new()
            .hash_one((std::process::id(), crate::time::unix_millis()));
        Aggregates {
            groups: Mutex::default(),
            count: AtomicUsize::new(0),
            clock: AtomicU64::new(0),
            node: AtomicU64::new(0),
            incarnation,
            validation: RwLock::new(Validation::default()),
        }
    }
}

impl Aggregates {
    /// This process's partial.
    pub(super) fn partial(&self) -> PartialId {
        PartialId {
            node: self.node.load(Ordering::Acquire),
            incarnation: self.incarnation,
        }
    }

    pub(super) fn set_node(&self, node: u64) {
        self.node.store(node, Ordering::Release);
    }

    pub(super) fn stamp(&self) -> Stamp {
        let physical = crate::time::unix_millis() << 16;
        let next = |prev: u64| physical.max(prev.saturating_add(1));
        let prev = self
            .clock
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |p| Some(next(p)))
            .unwrap_or_else(|p| p);
        Stamp {
            version: next(prev),
            origin: self.node.load(Ordering::Acquire),
        }
    }

    /// Moves the clock past every stamp of `state` (loaded from a file), so this process's
    /// writes are newer than what it loaded.
    pub(super) fn observe(&self, state: &AggState) {
        self.clock
            .fetch_max(state.newest_stamp().version, Ordering::AcqRel);
    }

    pub(super) fn entry(&self, key: &GroupKey) -> Arc<Mutex<Entry>> {
        let mut groups = self.groups.lock();
        // The common case, a group that aggregates already, without copying the key.
        if let Some(entry) = groups.get(key) {
            return entry.clone();
        }
        let entry = groups.entry(key.clone()).or_insert_with(|| {
            self.count.fetch_add(1, Ordering::AcqRel);
            Arc::new(Mutex::new(Entry {
                state: Arc::default(),
                live: true,
                pending: Vec::new(),
            }))
        });
        entry.clone()
    }

    /// Whether any group aggregates.
    pub(crate) fn any(&self) -> bool {
        self.count.load(Ordering::Acquire) > 0
    }

    pub(super) fn get(&self, key: &GroupKey) -> Option<Arc<Mutex<Entry>>> {
        if !self.any() {
            return None;
        }
        self.groups.lock().get(key).cloned()
    }

    /// Whether `key` aggregates here.
    pub(crate) fn holds(&self, key: &GroupKey) -> bool {
        self.any() && self.groups.lock().contains_key(key)
    }

    /// Every group and its entry.
    pub(super) fn entries(&self) -> Vec<(GroupKey, Arc<Mutex<Entry>>)> {
        let groups = self.groups.lock();
        groups.iter().map(|(k, e)| (k.clone(), e.clone())).collect()
    }

    /// Forgets every group, handing back their entries (to be marked dead under their locks).
    pub(super) fn drain(&self) -> Vec<Arc<Mutex<Entry>>> {
        let mut groups = self.groups.lock();
        self.count.store(0, Ordering::Release);
        groups.drain().map(|(_, e)| e).collect()
    }

    /// Forgets `key`'s state; its lock must be held (`entry`), and is marked dead so a writer
    /// waiting for it starts over.
    pub(super) fn end(&self, key: &GroupKey, entry: &mut Entry) {
        entry.live = false;
        if self.groups.lock().remove(key).is_some() {
            self.count.fetch_sub(1, Ordering::AcqRel);
        }
    }
}

