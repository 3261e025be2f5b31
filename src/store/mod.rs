//! The push-group store of one node: groups, the consistency index and cached encodings.
//!
//! Writes take one short exclusive lock: everything that depends only on the push (parsing,
//! label rewriting, validation, encoding) happens before it in `prepare`, and the consistency
//! check under it costs O(size of the push) thanks to two indexes kept in step with the groups:
//! metric name -> (type, member groups) and series identity -> owning group.
//!
//! Files, lowest first: `key` (grouping keys), `family` (a family's stored encoding), `prepare`
//! (a push made ready before the lock), `group` (a group and its timing families), `index` (the
//! state under the lock and its indexes), `check` (the consistency check), `write` (the writes
//! under the lock), this facade (`Store`), `replica` (the cluster's versioned API on it),
//! `render` (the scrape of a store or of copies of groups, with the orders `render_cache` keeps), `codec` (a group's protobuf form,
//! for the file and for peers) and `persistence` (the snapshot file).

pub mod aggregate;
mod check;
pub mod codec;
pub mod error;
mod expiry;
pub mod family;
mod group;
mod index;
pub mod merge;
pub mod key;
pub mod key_order;
mod options;
pub mod persistence;
pub mod prepare;
pub mod upstream;
pub mod render;
pub mod snapshot_proto;
mod render_cache;
mod replica;
mod tombstones;
mod write;

use std::sync::atomic::{AtomicU64, Ordering};

use parking_lot::{Mutex, RwLock};

pub use error::PushError;
pub use family::StoredFamily;
pub use group::{timing_families_of, timing_family_of, timing_sort_key, GroupSnapshot, Stamps};
pub use key::GroupKey;
pub use options::{ReservedNames, StoreOptions};
pub use prepare::{
    prepare_push, prepare_push_against, prepare_text, too_many_series, Limits, PreparedPush,
    Validation,
};
pub use render_cache::MergedOrders;
pub use replica::tombstone_digest;
pub use tombstones::{Deleted, TombstoneBudget};
pub use write::WriteOutcome;

use group::Group;
use index::Inner;

pub struct Store {
    inner: RwLock<Inner>,
    opts: StoreOptions,
    render_cache: Mutex<render_cache::RenderCache>,
    /// Bumped on every change; lets the persistence loop know whether to write.
    generation: AtomicU64,
    /// Bounds the tombstones of groups never held (a cluster node's flags).
    tombstone_budget: Mutex<TombstoneBudget>,
    /// The states of the aggregating groups (`/aggregate`).
    aggregates: aggregate::registry::Aggregates,
    /// Groups removed because their TTL ran out, since the start.
    expired_total: AtomicU64,
    /// `Inner::next_expiry`'s bits as of the last write, so that the check every push and
    /// scrape makes (`expire`) takes no lock.
    next_expiry: AtomicU64,
}

impl Store {
    pub fn new(opts: StoreOptions) -> Self {
        Store {
            inner: RwLock::new(Inner::default()),
            opts,
            render_cache: Mutex::new(render_cache::RenderCache::default()),
            generation: AtomicU64::new(0),
            tombstone_budget: Mutex::new(TombstoneBudget::default()),
            aggregates: aggregate::registry::Aggregates::default(),
            expired_total: AtomicU64::new(0),
            next_expiry: AtomicU64::new(0),
        }
    }

    pub fn options(&self) -> &StoreOptions {
        &self.opts
    }

    /// Changes so far; persistence writes when this moved.
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    pub fn group_count(&self) -> usize {
        self.inner.read().groups.len()
    }

    pub fn series_count(&self) -> usize {
        self.inner.read().series_total
    }

    /// Bytes held by the stored families' encodings, for sizing.
    pub fn encoded_bytes(&self) -> usize {
        self.inner.read().encoded_bytes
    }

    /// Runs one write under the lock and, when `changed` says its outcome changed the store,
    /// counts a change for persistence once the lock is released. Every write goes through
    /// here, the single node's and the cluster's (`replica`) alike.
    #[inline]
    fn write<R>(&self, op: impl FnOnce(&mut Inner) -> R, changed: impl FnOnce(&R) -> bool) -> R {
        let mut inner = self.inner.write();
        let outcome = op(&mut inner);
        self.next_expiry
            .store(inner.next_expiry.to_bits(), Ordering::Release);
        drop(inner);
        if changed(&outcome) {
            self.generation.fetch_add(1, Ordering::AcqRel);
        }
        outcome
    }

    /// Applies a validated push at time `now` (Unix seconds). A refused push leaves every
    /// family as it was; only the group's failure time moves (and the group is created, as
    /// upstream does, when that keeps the store valid). An accepted push ends the group's
    /// aggregation, if it had one (`aggregate`).
    #[inline]
    pub fn push(&self, p: PreparedPush, now: f64) -> Result<WriteOutcome, PushError> {
        self.expire(now);
        if !self.aggregates.any() {
            return self.push_stamped(p, now, || None);
        }
        let key = p.key.clone();
        self.plain_write(&key, || self.push_stamped(p, now, || None), Result::is_ok)
    }

    /// The push of a single node (`stamp` gives None: the version is the store's sequence
    /// number) and of a cluster (`stamp` gives the primary's version). `stamp` runs under the
    /// write lock, so versions of one group follow the order in which its writes were applied.
    #[inline]
    fn push_stamped(
        &self,
        p: PreparedPush,
        now: f64,
        stamp: impl FnOnce() -> Option<u64>,
    ) -> Result<WriteOutcome, PushError> {
        self.write(
            |inner| {
                let stamp = stamp();
                inner.push(p, now, &self.opts, stamp)
            },
            |_| true,
        )
    }

    /// Records a refused push on the group (creating it, as upstream does, unless that would
    /// collide with another group's timing series or exceed the group limit).
    pub fn record_failure(&self, key: &GroupKey, now: f64) {
        self.record_failure_stamped(key, now, || None);
    }

    /// `record_failure` versioned like [`Self::push_stamped`]; false when nothing was recorded.
    fn record_failure_stamped(
        &self,
        key: &GroupKey,
        now: f64,
        stamp: impl FnOnce() -> Option<u64>,
    ) -> bool {
        self.write(
            |inner| {
                let stamp = stamp();
                if !inner.groups.contains_key(key)
                    && inner.normalized.contains_key(&key.normalized())
                {
                    return false;
                }
                inner.mark_failure(key, now, &self.opts, stamp).is_ok()
            },
            |&recorded| recorded,
        )
    }

    /// Deletes a group; deleting a missing group is not an error.
    pub fn delete(&self, key: &GroupKey) -> bool {
        self.plain_write(
            key,
            || self.write(|inner| inner.delete(key), |&removed| removed),
            |_| true,
        )
    }

    /// Removes every group. The old contents are dropped off the caller's path.
    pub fn wipe(&self) {
        self.end_all_aggregates();
        self.replace_all(|_| Inner::default());
    }

    /// Replaces the whole store by `fresh(&old)` in one step and frees the old contents.
    fn replace_all(&self, fresh: impl FnOnce(&Inner) -> Inner) {
        let mut inner = self.inner.write();
        let new = fresh(&inner);
        let old = std::mem::replace(&mut *inner, new);
        self.next_expiry
            .store(inner.next_expiry.to_bits(), Ordering::Release);
        drop(inner);
        self.generation.fetch_add(1, Ordering::AcqRel);
        self.render_cache.lock().clear();
        // Freeing a large store takes a while; do it on another thread.
        let _ = std::thread::Builder::new()
            .name("pushgate-wipe".into())
            .spawn(move || drop(old));
    }

    /// Copies of every group, sorted by key.
    pub fn snapshot(&self) -> Vec<GroupSnapshot> {
        let mut out = self.snapshot_where(|_, _| true);
        key_order::sort_by_group_key(&mut out, |g| &g.key);
        out
    }

    /// Copies of the groups `keep` selects by key and version, in no particular order: a peer
    /// answering a collect looks at every group and copies the few it sends.
    pub fn snapshot_where(
        &self,
        mut keep: impl FnMut(&GroupKey, u64) -> bool,
    ) -> Vec<GroupSnapshot> {
        let now = crate::time::unix_seconds();
        let inner = self.inner.read();
        inner
            .groups
            .values()
            .filter(|g| keep(&g.key, g.version) && !expired(g, now))
            .map(Group::snapshot)
            .collect()
    }

    /// A copy of one group, if held (and not expired).
    pub fn group(&self, key: &GroupKey) -> Option<GroupSnapshot> {
        let now = crate::time::unix_seconds();
        let inner = self.inner.read();
        inner
            .groups
            .get(key)
            .filter(|g| !expired(g, now))
            .map(Group::snapshot)
    }

    /// Inserts a group wholesale (persistence load, replication): the consistency index is
    /// checked so a bad snapshot cannot make the store invalid. A copy expired already is
    /// left out (it would be removed at once anyway, and must not be served meanwhile).
    pub fn restore(&self, g: GroupSnapshot) -> Result<(), PushError> {
        if g.expired(crate::time::unix_seconds()) {
            return Ok(());
        }
        self.write(|inner| inner.restore(g, &self.opts), |_| true)
    }

    /// Imports a group from another gateway (a migration): it replaces the group of its key,
    /// families and times as given, after the consistency check a PUT of those families gets,
    /// unless the store holds that group as written later (its push or failure time is at
    /// least the import's: a push that reached pushgate after the group was read upstream is
    /// kept, and running an import twice changes nothing). True when it was applied.
    pub fn import(&self, g: GroupSnapshot) -> Result<bool, PushError> {
        let written_at = |push: f64, failure: f64| push.max(failure);
        if g.expired(crate::time::unix_seconds()) {
            return Ok(false);
        }
        self.write(
            |inner| {
                if let Some(held) = inner.groups.get(&*g.key) {
                    if written_at(held.push_time, held.failure_time)
                        >= written_at(g.push_time, g.failure_time)
                    {
                        return Ok(false);
                    }
                }
                if self.opts.consistency_check {
                    inner
                        .check(&import_as_put(&g), &self.opts)
                        .map_err(PushError::Invalid)?;
                }
                inner.restore(g, &self.opts).map(|()| true)
            },
            |applied| matches!(applied, Ok(true)),
        )
    }

    /// [`Self::check_consistency`] of an imported group, as the PUT of its families.
    pub fn check_import(&self, g: &GroupSnapshot) -> Result<(), PushError> {
        self.check_consistency(&import_as_put(g))
    }
}

/// Whether a held group has expired at `now` (the sweep has not removed it yet).
fn expired(g: &Group, now: f64) -> bool {
    g.expires_at().is_some_and(|at| at <= now)
}

/// An imported group as the PUT of its families, for the consistency check.
fn import_as_put(g: &GroupSnapshot) -> PreparedPush {
    PreparedPush {
        key: (*g.key).clone(),
        families: g.families.iter().map(|(f, _)| f.clone()).collect(),
        replace_all: true,
        has_timestamps: false,
        aggregating: false,
        agg_digest: 0,
        ttl: g.ttl,
    }
}

#[cfg(test)]
mod tests;
