//! The push-group store of one node: groups, the consistency index and cached encodings.
//!
//! Writes take one short exclusive lock: everything that depends only on the push (parsing,
//! label rewriting, validation, encoding) happens before it in `prepare`, and the consistency
//! check under it costs O(size of the push) thanks to two indexes kept in step with the groups:
//! metric name -> (type, member groups) and series identity -> owning group.

pub mod error;
pub mod family;
pub mod key;
pub mod persistence;
pub mod prepare;
pub mod render;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use parking_lot::{Mutex, RwLock};

pub use error::PushError;
pub use family::StoredFamily;
pub use key::GroupKey;
pub use prepare::{prepare_push, prepare_text, Limits, PreparedPush, Validation};

use crate::exposition::MetricType;
use prepare::{PUSH_FAILURE_TIME_HELP, PUSH_FAILURE_TIME_METRIC, PUSH_TIME_HELP, PUSH_TIME_METRIC};

/// Families the gateway exposes itself; pushes may not give these names another type.
#[derive(Debug, Clone, Default)]
pub struct ReservedNames {
    types: HashMap<String, (MetricType, String), foldhash::fast::RandomState>,
}

impl ReservedNames {
    pub fn new(entries: impl IntoIterator<Item = (String, MetricType, String)>) -> Self {
        ReservedNames {
            types: entries.into_iter().map(|(n, t, h)| (n, (t, h))).collect(),
        }
    }
    pub fn get(&self, name: &str) -> Option<(MetricType, &str)> {
        self.types.get(name).map(|(t, h)| (*t, h.as_str()))
    }
}

#[derive(Debug, Clone)]
pub struct StoreOptions {
    pub consistency_check: bool,
    pub max_groups: usize,
    pub reserved: ReservedNames,
}

impl Default for StoreOptions {
    fn default() -> Self {
        StoreOptions {
            consistency_check: true,
            max_groups: Limits::default().max_groups,
            reserved: ReservedNames::default(),
        }
    }
}

/// What the caller learns about an accepted write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WriteOutcome {
    pub version: u64,
}

/// A read-only copy of one group, for the JSON API, the status page and snapshots.
#[derive(Debug, Clone)]
pub struct GroupSnapshot {
    pub key: Arc<GroupKey>,
    /// Families sorted by name, each with the Unix time of the push that last set it.
    pub families: Vec<(StoredFamily, f64)>,
    pub push_time: f64,
    pub failure_time: f64,
    pub last_push_successful: bool,
    pub version: u64,
    /// The group's `push_time_seconds` and `push_failure_time_seconds` families when the copy
    /// comes from a local store (already encoded there); `None` for a copy decoded from a file
    /// or a peer, whose timing families are built when needed (`timing_families_of`).
    pub timing: Option<[StoredFamily; 2]>,
}

#[derive(Debug)]
struct Group {
    id: u64,
    key: Arc<GroupKey>,
    /// Pushed families (without the two timing families), when each was last pushed and its
    /// slot in its name's index entry.
    families: FamilyMap,
    push_time: f64,
    failure_time: f64,
    last_push_successful: bool,
    version: u64,
    timing: [StoredFamily; 2],
    /// Index slots of the two timing families.
    timing_slots: [usize; 2],
}

impl Group {
    fn snapshot(&self) -> GroupSnapshot {
        GroupSnapshot {
            key: self.key.clone(),
            families: self
                .families
                .values()
                .map(|(f, t, _)| (f.clone(), *t))
                .collect(),
            push_time: self.push_time,
            failure_time: self.failure_time,
            last_push_successful: self.last_push_successful,
            version: self.version,
            timing: Some(self.timing.clone()),
        }
    }
}

/// A family of a group, when it was last pushed and its slot in its name's index entry.
type Held = (StoredFamily, f64, usize);

/// A group's pushed families, sorted by unique name. Groups hold a handful of families, so a
/// sorted vector serves lookups as well as a tree, and a write that brings the same names (a
/// job pushing new values) stores into it in place: no allocation, no node to build and free.
#[derive(Debug, Default)]
struct FamilyMap(Vec<(Arc<str>, Held)>);

impl FamilyMap {
    fn find(&self, name: &str) -> Result<usize, usize> {
        self.0.binary_search_by(|(n, _)| (**n).cmp(name))
    }

    fn contains_key(&self, name: &str) -> bool {
        self.find(name).is_ok()
    }

    fn get(&self, name: &str) -> Option<&Held> {
        self.find(name).ok().map(|i| &self.0[i].1)
    }

    /// [`Self::get`] for a name expected at index `hint`: a re-push of the same families (both
    /// lists sorted by name) finds each one at its own index, and interned names compare by
    /// pointer, so the common case compares no bytes. (`Arc<str>`'s own `==` compares the
    /// bytes: std's pointer shortcut is only for sized types; 0.5% more instructions per push.)
    fn get_hinted(&self, name: &Arc<str>, hint: usize) -> Option<&Held> {
        match self.0.get(hint) {
            Some((n, held)) if Arc::ptr_eq(n, name) || **n == **name => Some(held),
            _ => self.get(name),
        }
    }

    fn get_mut(&mut self, name: &str) -> Option<&mut Held> {
        self.find(name).ok().map(|i| &mut self.0[i].1)
    }

    fn values(&self) -> impl Iterator<Item = &Held> + '_ {
        self.0.iter().map(|(_, h)| h)
    }

    /// Makes the families exactly `new` (sorted by unique name), each pushed at its time:
    /// every family replaced, removed or added goes to `changes`, removals first, then the new
    /// families in order (each paired with the one of the same name it replaces, whose slot it
    /// keeps until the index says otherwise).
    fn replace_all<'a>(
        &mut self,
        new: impl ExactSizeIterator<Item = (&'a StoredFamily, f64)> + Clone,
        changes: &mut Vec<FamilyChange>,
    ) {
        let same_names = self.0.len() == new.len()
            && self
                .0
                .iter()
                .zip(new.clone())
                .all(|((n, _), (f, _))| Arc::ptr_eq(n, &f.name) || **n == *f.name);
        if same_names {
            for ((_, held), (f, at)) in self.0.iter_mut().zip(new) {
                let (old, _, slot) = std::mem::replace(held, (f.clone(), at, held.2));
                changes.push((Some((old, slot)), Some(f.clone())));
            }
            return;
        }
        let mut old = std::mem::take(&mut self.0).into_iter().peekable();
        let mut pairs: Vec<FamilyChange> = Vec::with_capacity(new.len());
        let mut fresh = Vec::with_capacity(new.len());
        for (f, at) in new {
            while let Some((_, (gone, _, slot))) = old.next_if(|(n, _)| **n < *f.name) {
                changes.push((Some((gone, slot)), None));
            }
            let replaced = old
                .next_if(|(n, _)| **n == *f.name)
                .map(|(_, (o, _, slot))| (o, slot));
            fresh.push((f.name.clone(), (f.clone(), at, slot_of(&replaced))));
            pairs.push((replaced, Some(f.clone())));
        }
        changes.extend(old.map(|(_, (gone, _, slot))| (Some((gone, slot)), None)));
        changes.append(&mut pairs);
        self.0 = fresh;
    }

    /// Stores `new` (sorted by unique name) pushed at `at` over the families of the same names,
    /// keeping the others; each goes to `changes` with the family it replaces, if any.
    fn replace_some(&mut self, new: &[StoredFamily], at: f64, changes: &mut Vec<FamilyChange>) {
        if new.iter().all(|f| self.contains_key(&f.name)) {
            for f in new {
                let held = self.get_mut(&f.name).expect("every pushed name is held");
                let (old, _, slot) = std::mem::replace(held, (f.clone(), at, held.2));
                changes.push((Some((old, slot)), Some(f.clone())));
            }
            return;
        }
        // Some names are new: one merge of the two sorted lists.
        let mut old = std::mem::take(&mut self.0).into_iter().peekable();
        let mut merged = Vec::with_capacity(old.len() + new.len());
        for f in new {
            merged.extend(std::iter::from_fn(|| old.next_if(|(n, _)| **n < *f.name)));
            let replaced = old
                .next_if(|(n, _)| **n == *f.name)
                .map(|(_, (o, _, slot))| (o, slot));
            merged.push((f.name.clone(), (f.clone(), at, slot_of(&replaced))));
            changes.push((replaced, Some(f.clone())));
        }
        merged.extend(old);
        self.0 = merged;
    }
}

/// A family of a group replaced (old with its index slot, and new), removed (old only) or
/// added (new only).
type FamilyChange = (Option<(StoredFamily, usize)>, Option<StoredFamily>);

/// The slot of a family not placed in the index yet.
const NO_SLOT: usize = usize::MAX;

/// The slot a change's old family had (`NO_SLOT` for an added family).
fn slot_of(old: &Option<(StoredFamily, usize)>) -> usize {
    old.as_ref().map_or(NO_SLOT, |(_, slot)| *slot)
}

use crate::FastMap;

/// A group's family in the index: (group id, key, family).
type IndexMember = (u64, Arc<GroupKey>, StoredFamily);

#[derive(Debug)]
struct FamilyIndex {
    typ: MetricType,
    /// (group id, key, family) of every group holding a family of this name, in slots that keep
    /// their place (a removed member leaves a hole that the next one fills): a group keeps the
    /// slot of each of its families, so replacing one is a store into its slot, not a probe of
    /// a map with one entry per group (a cache miss or two per family at 10,000 groups).
    members: Vec<Option<IndexMember>>,
    /// Holes in `members`.
    free: Vec<usize>,
    /// Members present.
    count: usize,
    /// Store sequence number of the last change to a member's label sets or to the set of
    /// members: the render cache keeps the member order until this moves.
    layout: u64,
}

#[derive(Default)]
struct Inner {
    groups: FastMap<Arc<GroupKey>, Group>,
    normalized: FastMap<GroupKey, Arc<GroupKey>>,
    index: FastMap<Arc<str>, FamilyIndex>,
    /// series identity -> id of the group holding it
    series: HashMap<u128, u64, BuildU128>,
    seq: u64,
    next_group_id: u64,
    series_total: usize,
    /// Bytes held by the families' encodings (not counting map overheads).
    encoded_bytes: usize,
    /// Cluster only: groups deleted at a version, so an older replica cannot bring them back.
    tombstones: HashMap<GroupKey, u64>,
    /// Cluster only: the version of the last cluster-wide wipe. Every group written at or
    /// before it was removed, so a copy that old arriving later (a replica, anti-entropy from a
    /// peer the wipe had not reached yet) is stale and refused.
    wiped_at: u64,
}

/// Series identities are already uniform 128-bit hashes: use their low bits directly.
#[derive(Default, Clone, Copy)]
struct BuildU128;
#[derive(Default)]
struct U128Hasher(u64);
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

pub struct Store {
    inner: RwLock<Inner>,
    opts: StoreOptions,
    render_cache: Mutex<render::RenderCache>,
    /// Bumped on every change; lets the persistence loop know whether to write.
    generation: AtomicU64,
}

/// The group's `push_time_seconds` and `push_failure_time_seconds` families.
pub fn timing_families_of(g: &GroupSnapshot) -> [StoredFamily; 2] {
    match &g.timing {
        Some(timing) => timing.clone(),
        None => timing_families(&g.key, g.push_time, g.failure_time),
    }
}

/// The timing families for the times `after` (push, failure), from the `current` ones encoding
/// the times `before`: a family whose time is unchanged is kept as it is (a successful push
/// leaves the failure time alone), a changed one is a patched copy (no re-encoding); built
/// afresh when the current ones cannot be patched.
fn retimed(
    current: &[StoredFamily; 2],
    key: &GroupKey,
    before: [f64; 2],
    after: [f64; 2],
) -> [StoredFamily; 2] {
    let next = |i: usize| -> Option<StoredFamily> {
        if before[i].to_bits() == after[i].to_bits() {
            Some(current[i].clone())
        } else {
            current[i].with_gauge_value(after[i])
        }
    };
    match (next(0), next(1)) {
        (Some(p), Some(f)) => [p, f],
        _ => timing_families(key, after[0], after[1]),
    }
}

/// The group's `push_time_seconds` and `push_failure_time_seconds` gauges, labelled with its
/// normalized key, encoded from the key's labels without copying them (a merged scrape builds
/// these for every group a peer sent).
fn timing_families(key: &GroupKey, push_time: f64, failure_time: f64) -> [StoredFamily; 2] {
    static NAMES: std::sync::OnceLock<[Arc<str>; 4]> = std::sync::OnceLock::new();
    let [push_name, push_help, failure_name, failure_help] = NAMES.get_or_init(|| {
        [
            PUSH_TIME_METRIC,
            PUSH_TIME_HELP,
            PUSH_FAILURE_TIME_METRIC,
            PUSH_FAILURE_TIME_HELP,
        ]
        .map(family::intern)
    });
    let pairs = key.normalized_pairs();
    let gauge = |name: &Arc<str>, help: &Arc<str>, value: f64| {
        let metric = crate::exposition::Metric {
            gauge: Some(crate::exposition::proto::Gauge { value: Some(value) }),
            ..Default::default()
        };
        let (name, help) = (name.clone(), help.clone());
        StoredFamily::encode_grouped(name, help, MetricType::Gauge, vec![metric], &pairs)
    };
    // A block each: a push replaces the push time's family and keeps the other, which must
    // not hold the replaced one's bytes alive.
    [
        gauge(push_name, push_help, push_time),
        gauge(failure_name, failure_help, failure_time),
    ]
}

impl Store {
    pub fn new(opts: StoreOptions) -> Self {
        Store {
            inner: RwLock::new(Inner::default()),
            opts,
            render_cache: Mutex::new(render::RenderCache::default()),
            generation: AtomicU64::new(0),
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

    /// Applies a validated push at time `now` (Unix seconds). A refused push leaves every
    /// family as it was; only the group's failure time moves (and the group is created, as
    /// upstream does, when that keeps the store valid).
    pub fn push(&self, p: PreparedPush, now: f64) -> Result<WriteOutcome, PushError> {
        let mut inner = self.inner.write();
        let result = inner.push(p, now, &self.opts, None);
        drop(inner);
        self.generation.fetch_add(1, Ordering::AcqRel);
        result
    }

    /// Records a refused push on the group (creating it, as upstream does, unless that would
    /// collide with another group's timing series or exceed the group limit).
    pub fn record_failure(&self, key: &GroupKey, now: f64) {
        let mut inner = self.inner.write();
        if !inner.groups.contains_key(key) && inner.normalized.contains_key(&key.normalized()) {
            return;
        }
        if inner.mark_failure(key, now, &self.opts, None).is_ok() {
            drop(inner);
            self.generation.fetch_add(1, Ordering::AcqRel);
        }
    }

    /// Deletes a group; deleting a missing group is not an error.
    pub fn delete(&self, key: &GroupKey) -> bool {
        let removed = self.inner.write().delete(key);
        if removed {
            self.generation.fetch_add(1, Ordering::AcqRel);
        }
        removed
    }

    /// Removes every group. The old contents are dropped off the caller's path.
    pub fn wipe(&self) {
        self.replace_all(|_| Inner::default());
    }

    /// Replaces the whole store by `fresh(&old)` in one step and frees the old contents.
    fn replace_all(&self, fresh: impl FnOnce(&Inner) -> Inner) {
        let mut inner = self.inner.write();
        let new = fresh(&inner);
        let old = std::mem::replace(&mut *inner, new);
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
        out.sort_by(|a, b| a.key.cmp(&b.key));
        out
    }

    /// Copies of the groups `keep` selects by key and version, in no particular order: a peer
    /// answering a collect looks at every group and copies the few it sends.
    pub fn snapshot_where(
        &self,
        mut keep: impl FnMut(&GroupKey, u64) -> bool,
    ) -> Vec<GroupSnapshot> {
        let inner = self.inner.read();
        inner
            .groups
            .values()
            .filter(|g| keep(&g.key, g.version))
            .map(Group::snapshot)
            .collect()
    }

    /// Inserts a group wholesale (persistence load, replication): the consistency index is
    /// checked so a bad snapshot cannot make the store invalid.
    pub fn restore(&self, g: GroupSnapshot) -> Result<(), PushError> {
        let mut inner = self.inner.write();
        let r = inner.restore(g, &self.opts);
        drop(inner);
        self.generation.fetch_add(1, Ordering::AcqRel);
        r
    }
}

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
        let mut inner = self.inner.write();
        let version = stamp();
        let result = inner.push(p, now, &self.opts, Some(version));
        drop(inner);
        self.generation.fetch_add(1, Ordering::AcqRel);
        result
    }

    /// `record_failure` with a version stamped by the primary; false when nothing was recorded.
    pub fn record_failure_versioned(
        &self,
        key: &GroupKey,
        now: f64,
        stamp: impl FnOnce() -> u64,
    ) -> bool {
        let mut inner = self.inner.write();
        let version = stamp();
        if !inner.groups.contains_key(key) && inner.normalized.contains_key(&key.normalized()) {
            return false;
        }
        let ok = inner
            .mark_failure(key, now, &self.opts, Some(version))
            .is_ok();
        drop(inner);
        if ok {
            self.generation.fetch_add(1, Ordering::AcqRel);
        }
        ok
    }

    /// Deletes a group at `version`, leaving a tombstone so an older replica of it is refused.
    /// A group holding a newer version is kept. Returns whether the tombstone was recorded.
    pub fn delete_versioned(&self, key: &GroupKey, version: u64) -> bool {
        let mut inner = self.inner.write();
        if inner.tombstones.get(key).is_some_and(|&v| v >= version)
            || inner.groups.get(key).is_some_and(|g| g.version > version)
        {
            return false;
        }
        inner.delete(key);
        inner.tombstones.insert(key.clone(), version);
        drop(inner);
        self.generation.fetch_add(1, Ordering::AcqRel);
        true
    }

    /// Replaces a group with a replica of it when the replica is newer than both the group and
    /// its tombstone (newest wins). Returns whether it was applied.
    pub fn apply_replica(&self, g: GroupSnapshot) -> bool {
        let mut inner = self.inner.write();
        if g.version <= inner.wiped_at
            || inner
                .tombstones
                .get(&*g.key)
                .is_some_and(|&v| v >= g.version)
            || inner
                .groups
                .get(&*g.key)
                .is_some_and(|cur| cur.version >= g.version)
        {
            return false;
        }
        let key = g.key.clone();
        let ok = inner.restore(g, &self.opts).is_ok();
        if ok {
            inner.tombstones.remove(&*key);
        }
        drop(inner);
        self.generation.fetch_add(1, Ordering::AcqRel);
        ok
    }

    /// A copy of one group, if held.
    pub fn group(&self, key: &GroupKey) -> Option<GroupSnapshot> {
        let inner = self.inner.read();
        inner.groups.get(key).map(Group::snapshot)
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
        let inner = self.inner.read();
        let norm = p.key.normalized();
        if let Some(existing) = inner.normalized.get(&norm) {
            if **existing != p.key {
                return Err(PushError::Invalid(format!(
                    "grouping key {} collides with existing group {}: both expose the same push_time_seconds series (a key without instance is treated as instance=\"\")",
                    p.key, existing
                )));
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
        let mut inner = self.inner.write();
        if inner.groups.get(key).is_none_or(|g| g.version != version) {
            return false;
        }
        let removed = inner.delete(key);
        drop(inner);
        if removed {
            self.generation.fetch_add(1, Ordering::AcqRel);
        }
        removed
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

impl Inner {
    fn next_seq(&mut self) -> u64 {
        self.seq += 1;
        self.seq
    }

    fn push(
        &mut self,
        p: PreparedPush,
        now: f64,
        opts: &StoreOptions,
        stamp: Option<u64>,
    ) -> Result<WriteOutcome, PushError> {
        // One lookup serves the check and tells whether the group exists.
        let existing = self.groups.get(&p.key);
        if let Some(g) = existing {
            self.prefetch_write(g);
        }
        let existing_id = existing.map(|g| g.id);
        let exists = existing.is_some();
        let verdict = if opts.consistency_check && !p.has_timestamps {
            self.check_group(&p, opts, existing)
        } else {
            Ok(())
        };
        if !exists {
            let norm = p.key.normalized();
            if let Some(existing) = self.normalized.get(&norm) {
                return Err(PushError::Invalid(format!(
                    "grouping key {} collides with existing group {}: both expose the same push_time_seconds series (a key without instance is treated as instance=\"\")",
                    p.key, existing
                )));
            }
        }
        if p.has_timestamps {
            self.mark_failure(&p.key, now, opts, stamp)?;
            return Err(PushError::Invalid(
                "pushed metrics must not have timestamps".into(),
            ));
        }
        if let Err(msg) = verdict {
            self.mark_failure(&p.key, now, opts, stamp)?;
            return Err(PushError::Invalid(msg));
        }
        if !exists && self.groups.len() >= opts.max_groups {
            return Err(too_many_groups(opts));
        }
        let seq = self.next_seq();
        let version = stamp.unwrap_or(seq);
        if stamp.is_some() {
            self.tombstones.remove(&p.key);
        }
        let gid = match existing_id {
            Some(id) => id,
            None => self.ensure_group(&p.key),
        };
        let group = self.groups.get_mut(&p.key).expect("group was just ensured");
        let key = group.key.clone();
        // (old, new) pairs: a family replaced, removed (PUT) or added.
        let mut changes: Vec<FamilyChange> = Vec::with_capacity(p.families.len() + 4);
        if p.replace_all {
            group
                .families
                .replace_all(p.families.iter().map(|f| (f, now)), &mut changes);
        } else {
            group.families.replace_some(&p.families, now, &mut changes);
        }
        let before = [group.push_time, group.failure_time];
        group.push_time = now;
        group.last_push_successful = true;
        group.version = version;
        let new_timing = retimed(&group.timing, &key, before, [now, group.failure_time]);
        let old_timing = std::mem::replace(&mut group.timing, new_timing.clone());
        changes.extend(
            old_timing
                .into_iter()
                .zip(group.timing_slots)
                .zip(new_timing)
                .map(|(old, new)| (Some(old), Some(new))),
        );
        // The families added or kept are the pushed ones in order, then the two timing ones.
        if let Some(slots) = self.apply_changes(gid, &key, changes, seq) {
            self.set_slots(&p.key, p.families.iter().map(|f| &f.name), &slots);
        }
        Ok(WriteOutcome { version })
    }

    /// Starts loading, all at once, what a write to `group` reads next: its families' heads and
    /// their index slots. At 10,000 groups none of it is in cache, and each is found only after
    /// a load that depends on the one before (group, family list, head, slot), so without this
    /// the misses come one after the other, about a dozen of each kind per push.
    fn prefetch_write(&self, group: &Group) {
        let held = &group.families.0;
        family::prefetch_range(held.as_ptr().cast(), std::mem::size_of_val(held.as_slice()));
        let timing = group.timing.iter().zip(group.timing_slots);
        for (name, (f, slot)) in held
            .iter()
            .map(|(n, (f, _, slot))| (&**n, (f, *slot)))
            .chain(timing.map(|(f, slot)| (&*f.name, (f, slot))))
        {
            f.prefetch();
            if let Some(member) = self.index.get(name).and_then(|e| e.members.get(slot)) {
                family::prefetch_range(std::ptr::from_ref(member).cast(), 1);
            }
        }
    }

    /// Moves the indexes for every change (see `swap_family`). When a new family did not take
    /// the slot of the one it replaces (the group records that one until told otherwise),
    /// returns the slots of all new families, in the order of the changes that have one.
    fn apply_changes(
        &mut self,
        gid: u64,
        key: &Arc<GroupKey>,
        changes: Vec<FamilyChange>,
        seq: u64,
    ) -> Option<Vec<usize>> {
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
        moved.then_some(slots)
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

    fn ensure_group(&mut self, key: &GroupKey) -> u64 {
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
            version: 0,
            timing,
            timing_slots,
        };
        self.groups.insert(key, group);
        id
    }

    fn mark_failure(
        &mut self,
        key: &GroupKey,
        now: f64,
        opts: &StoreOptions,
        stamp: Option<u64>,
    ) -> Result<(), PushError> {
        if !self.groups.contains_key(key) && self.groups.len() >= opts.max_groups {
            return Err(too_many_groups(opts));
        }
        let seq = self.next_seq();
        if stamp.is_some() {
            self.tombstones.remove(key);
        }
        let gid = self.ensure_group(key);
        let group = self.groups.get_mut(key).expect("group was just ensured");
        let before = [group.push_time, group.failure_time];
        group.failure_time = now;
        group.last_push_successful = false;
        group.version = stamp.unwrap_or(seq);
        let new_timing = retimed(&group.timing, &group.key, before, [group.push_time, now]);
        let old_timing = std::mem::replace(&mut group.timing, new_timing.clone());
        let gkey = group.key.clone();
        let changes = old_timing
            .into_iter()
            .zip(group.timing_slots)
            .zip(new_timing)
            .map(|(old, new)| (Some(old), Some(new)))
            .collect();
        if let Some(slots) = self.apply_changes(gid, &gkey, changes, seq) {
            self.set_slots(key, std::iter::empty(), &slots);
        }
        Ok(())
    }

    fn delete(&mut self, key: &GroupKey) -> bool {
        let Some(group) = self.groups.remove(key) else {
            return false;
        };
        let seq = self.next_seq();
        self.normalized.remove(&key.normalized());
        let timing = group.timing.iter().zip(group.timing_slots);
        for (fam, slot) in group
            .families
            .values()
            .map(|(f, _, s)| (f, *s))
            .chain(timing)
        {
            self.unindex(group.id, slot, fam, seq);
        }
        true
    }

    fn restore(&mut self, g: GroupSnapshot, opts: &StoreOptions) -> Result<(), PushError> {
        if let Some(existing) = self.normalized.get(&g.key.normalized()) {
            if **existing != *g.key {
                return Err(PushError::Invalid(format!(
                    "group {} collides with group {existing}",
                    g.key
                )));
            }
        }
        if g.families.windows(2).any(|w| w[0].0.name >= w[1].0.name) {
            return Err(PushError::Invalid(format!(
                "families of group {} are not sorted by unique name",
                g.key
            )));
        }
        // No consistency check: the data was accepted before (perhaps with the check disabled),
        // and refusing it now would drop acknowledged pushes. Conflicts, if any, are resolved at
        // render time like any other.
        if !self.groups.contains_key(&*g.key) && self.groups.len() >= opts.max_groups {
            return Err(too_many_groups(opts));
        }
        let seq = self.next_seq();
        let gid = self.ensure_group(&g.key);
        let group = self
            .groups
            .get_mut(&*g.key)
            .expect("group was just ensured");
        let before = [group.push_time, group.failure_time];
        group.push_time = g.push_time;
        group.failure_time = g.failure_time;
        group.last_push_successful = g.last_push_successful;
        group.version = g.version;
        let key = group.key.clone();
        // The group's families become exactly the snapshot's: pair each with the family of the
        // same name it replaces, so unchanged label sets cost no index traffic (a replica
        // receiving a new version of a group is the common case).
        let mut changes: Vec<FamilyChange> = Vec::with_capacity(g.families.len() + 4);
        group
            .families
            .replace_all(g.families.iter().map(|(f, t)| (f, *t)), &mut changes);
        let new_timing = retimed(&group.timing, &key, before, [g.push_time, g.failure_time]);
        let old_timing = std::mem::replace(&mut group.timing, new_timing.clone());
        changes.extend(
            old_timing
                .into_iter()
                .zip(group.timing_slots)
                .zip(new_timing)
                .map(|(o, n)| (Some(o), Some(n))),
        );
        self.seq = self.seq.max(g.version);
        // Removals first, so a series moving between two families of the group is re-owned
        // (stable: the additions keep their order, the snapshot's families then the timing).
        changes.sort_by_key(|(_, n)| n.is_some());
        if let Some(slots) = self.apply_changes(gid, &key, changes, seq) {
            self.set_slots(&key, g.families.iter().map(|(f, _)| &f.name), &slots);
        }
        Ok(())
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

    fn unindex(&mut self, gid: u64, slot: usize, fam: &StoredFamily, seq: u64) {
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

    /// The consistency check: would the store be valid after applying `p`? O(size of `p`).
    fn check(&self, p: &PreparedPush, opts: &StoreOptions) -> Result<(), String> {
        self.check_group(p, opts, self.groups.get(&p.key))
    }

    /// [`Self::check`] with the push's group (if it exists) already looked up.
    fn check_group(
        &self,
        p: &PreparedPush,
        opts: &StoreOptions,
        group: Option<&Group>,
    ) -> Result<(), String> {
        let gid = group.map(|g| g.id);
        let holds = |name: &str| group.is_some_and(|g| g.families.contains_key(name));
        // Is `name` replaced (or removed) in this group by the push?
        let replaced = |name: &str| holds(name) && (p.replace_all || p.family(name).is_some());
        // The type `name` would have across the store after the push, if it exists at all.
        let effective = |name: &str| -> Option<MetricType> {
            if let Some(f) = p.family(name) {
                return Some(f.typ);
            }
            if let Some(e) = self.index.get(name) {
                if e.count > usize::from(replaced(name)) {
                    return Some(e.typ);
                }
            }
            opts.reserved.get(name).map(|(t, _)| t)
        };
        for (i, f) in p.families.iter().enumerate() {
            let name: &str = &f.name;
            // A family re-pushed with the same type and the same series (new values only)
            // cannot add a conflict: it was consistent when stored, and every later push was
            // checked against it. This is the common case, and it makes the check nearly free.
            if group
                .and_then(|g| g.families.get_hinted(&f.name, i))
                .is_some_and(|(old, _, _)| old.typ == f.typ && old.same_series(f))
            {
                continue;
            }
            if let Some((t, _)) = opts.reserved.get(name) {
                if t != f.typ {
                    return Err(type_conflict(name, f.typ, t));
                }
            }
            if let Some(e) = self.index.get(name) {
                // A group holding `name` is one of its members.
                let others = e.count.saturating_sub(usize::from(replaced(name)));
                if others > 0 && e.typ != f.typ {
                    return Err(type_conflict(name, f.typ, e.typ));
                }
            }
            // Histogram and summary suffixes (client_golang's checkSuffixCollisions).
            for suffix in ["_count", "_sum", "_bucket"] {
                if let Some(base) = name.strip_suffix(suffix) {
                    match effective(base) {
                        Some(MetricType::Summary) if suffix != "_bucket" => {
                            return Err(format!(
                                "collected metric named {name:?} collides with previously collected summary named {base:?}"
                            ))
                        }
                        Some(MetricType::Histogram) => {
                            return Err(format!(
                                "collected metric named {name:?} collides with previously collected histogram named {base:?}"
                            ))
                        }
                        _ => {}
                    }
                }
            }
            if matches!(f.typ, MetricType::Summary | MetricType::Histogram) {
                let suffixes: &[&str] = if f.typ == MetricType::Histogram {
                    &["_count", "_sum", "_bucket"]
                } else {
                    &["_count", "_sum"]
                };
                for s in suffixes {
                    let other = format!("{name}{s}");
                    if effective(&other).is_some() {
                        return Err(format!(
                            "collected histogram or summary named {name:?} collides with previously collected metric named {other:?}"
                        ));
                    }
                }
            }
            // Re-pushing the same series into the same group (new values only) cannot collide:
            // every one of them is already owned by this group.
            let same_series = group
                .and_then(|g| g.families.get(name))
                .is_some_and(|(old, _, _)| old.same_series(f));
            for h in f.series().filter(|_| !same_series) {
                if let Some(owner) = self.series.get(&h) {
                    if Some(*owner) != gid {
                        let example = f.to_metric_family();
                        let labels = example
                            .metric
                            .iter()
                            .find(|m| family::series_hash(name, m) == h)
                            .map(prepare::describe_labels)
                            .unwrap_or_default();
                        return Err(format!(
                            "collected metric {name:?} {{ {labels} }} was collected before with the same name and label values"
                        ));
                    }
                }
            }
        }
        Ok(())
    }
}

fn type_conflict(name: &str, new: MetricType, existing: MetricType) -> String {
    format!(
        "gathered metric family {name} has type {} but should have {}",
        new.as_str_name(),
        existing.as_str_name()
    )
}

fn too_many_groups(opts: &StoreOptions) -> PushError {
    PushError::LimitExceeded(format!(
        "the gateway holds the maximum of {} groups (--push.max-groups); delete groups or raise the limit",
        opts.max_groups
    ))
}

#[cfg(test)]
mod tests {
    use super::render::Format;
    use super::*;
    use crate::exposition::{names::NameScheme, parse_text};
    use crate::scrape::merged;

    mod family_map {
        use super::*;
        use proptest::prelude::*;

        fn fam(name: &str, value: f64) -> StoredFamily {
            StoredFamily::gauge(family::intern(name), family::intern(""), &[], value)
        }

        #[test]
        fn a_hinted_lookup_finds_what_get_finds_wherever_the_hint_points() {
            let names = ["a", "b", "c"];
            let map = FamilyMap(
                names
                    .iter()
                    .enumerate()
                    .map(|(i, n)| (family::intern(n), (fam(n, i as f64), 0.0, i)))
                    .collect(),
            );
            for probe in ["a", "b", "c", "bb", ""] {
                let interned = family::intern(probe);
                // An equal name that is not the interned one compares by bytes.
                let copy: Arc<str> = Arc::from(probe);
                for hint in 0..5 {
                    for name in [&interned, &copy] {
                        assert_eq!(
                            map.get_hinted(name, hint).map(|h| h.2),
                            map.get(probe).map(|h| h.2),
                            "{probe:?} at {hint}"
                        );
                    }
                }
            }
        }

        /// What a change says, by name and text line: (old, slot) and new.
        type Said = (Option<(String, String, usize)>, Option<(String, String)>);

        fn said(changes: &[FamilyChange]) -> Vec<Said> {
            let line = |f: &StoredFamily| String::from_utf8_lossy(f.text()).into_owned();
            changes
                .iter()
                .map(|(old, new)| {
                    (
                        old.as_ref()
                            .map(|(f, slot)| (f.name.to_string(), line(f), *slot)),
                        new.as_ref().map(|f| (f.name.to_string(), line(f))),
                    )
                })
                .collect()
        }

        proptest! {
            /// Every write against a tree-map model of the same rules: which families the group
            /// holds afterwards (with time and slot), and every change in order (removals first
            /// for a replace-all, then each new family with the one it replaces).
            #[test]
            fn writes_match_a_tree_map_model(
                ops in prop::collection::vec((any::<bool>(), prop::collection::btree_set(0u8..8, 0..6)), 1..12),
            ) {
                let mut map = FamilyMap::default();
                let mut model: std::collections::BTreeMap<String, (StoredFamily, f64, usize)> =
                    std::collections::BTreeMap::new();
                for (step, (all, names)) in ops.into_iter().enumerate() {
                    let at = step as f64;
                    let new: Vec<StoredFamily> =
                        names.iter().map(|n| fam(&format!("f{n}"), at)).collect();
                    let mut got = Vec::new();
                    if all {
                        map.replace_all(new.iter().map(|f| (f, at)), &mut got);
                    } else {
                        map.replace_some(&new, at, &mut got);
                    }
                    let mut want: Vec<FamilyChange> = Vec::new();
                    let mut pairs: Vec<FamilyChange> = Vec::new();
                    if all {
                        let keep: std::collections::BTreeSet<String> =
                            new.iter().map(|f| f.name.to_string()).collect();
                        let gone: Vec<String> =
                            model.keys().filter(|n| !keep.contains(*n)).cloned().collect();
                        for n in gone {
                            let (f, _, slot) = model.remove(&n).unwrap();
                            want.push((Some((f, slot)), None));
                        }
                    }
                    for f in &new {
                        let old = model.remove(&*f.name).map(|(o, _, slot)| (o, slot));
                        model.insert(f.name.to_string(), (f.clone(), at, slot_of(&old)));
                        pairs.push((old, Some(f.clone())));
                    }
                    want.append(&mut pairs);
                    prop_assert_eq!(said(&got), said(&want));
                    let held: Vec<(String, u64, usize)> = map
                        .0
                        .iter()
                        .map(|(n, (f, t, slot))| {
                            assert_eq!(**n, *f.name);
                            (n.to_string(), t.to_bits(), *slot)
                        })
                        .collect();
                    let modelled: Vec<(String, u64, usize)> = model
                        .iter()
                        .map(|(n, (_, t, slot))| (n.clone(), t.to_bits(), *slot))
                        .collect();
                    prop_assert_eq!(held, modelled);
                    // Give the families slots, as the index would, so that the next write has
                    // slots to carry over.
                    for (i, (_, (_, _, slot))) in map.0.iter_mut().enumerate() {
                        *slot = i;
                    }
                    for (i, (_, (_, _, slot))) in model.iter_mut().enumerate() {
                        *slot = i;
                    }
                }
            }
        }
    }

    fn key(job: &str, extra: &[(&str, &str)]) -> GroupKey {
        GroupKey::new(
            std::iter::once(("job".to_owned(), job.to_owned()))
                .chain(extra.iter().map(|(n, v)| (n.to_string(), v.to_string()))),
        )
    }

    fn store() -> Store {
        Store::new(StoreOptions {
            reserved: crate::telemetry::reserved_names(),
            ..StoreOptions::default()
        })
    }

    fn push(s: &Store, k: GroupKey, body: &str, put: bool) -> Result<WriteOutcome, PushError> {
        let fams = parse_text(body.as_bytes(), NameScheme::Legacy).expect("test bodies parse");
        let p = prepare_push(k, fams, put, &Validation::default())?;
        s.push(p, 1000.0)
    }

    fn scrape(s: &Store) -> String {
        let mut out = Vec::new();
        s.render(Format::Text, &[], &mut out);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn restore_refuses_families_not_sorted_by_unique_name_and_changes_nothing() {
        let s = store();
        let k = key("r", &[]);
        push(&s, k.clone(), "a 1\nb 2\n", true).unwrap();
        let before = scrape(&s);
        let good = s.group(&k).unwrap();
        let (a, b) = (good.families[0].clone(), good.families[1].clone());
        for families in [vec![a.clone(), a.clone()], vec![b.clone(), a.clone()]] {
            let bad = GroupSnapshot {
                families,
                version: good.version + 1,
                ..good.clone()
            };
            let err = s.restore(bad).unwrap_err();
            assert!(
                err.to_string().contains("not sorted by unique name"),
                "{err}"
            );
            assert_eq!(scrape(&s), before);
        }
        // The same group in order is taken.
        s.restore(GroupSnapshot {
            version: good.version + 1,
            ..good.clone()
        })
        .unwrap();
        assert_eq!(scrape(&s), before);
    }

    #[test]
    fn index_slots_freed_by_deletes_are_reused_and_scrapes_stay_exact() {
        let s = store();
        let lines = |t: &str, prefix: &str| t.lines().filter(|l| l.starts_with(prefix)).count();
        for job in ["a", "b", "c"] {
            push(&s, key(job, &[]), "x 1\n", true).unwrap();
        }
        // Twice, so that the second scrape comes from the render cache.
        for _ in 0..2 {
            let t = scrape(&s);
            assert_eq!(lines(&t, "x{"), 3, "{t}");
        }
        assert!(s.delete(&key("b", &[])));
        // "d" takes the slot "b" left; "a" re-pushes the same series (its slot is updated in
        // place), then "c" changes its label set (its family leaves and re-enters the index).
        push(&s, key("d", &[]), "x 4\n", true).unwrap();
        push(&s, key("a", &[]), "x 5\n", true).unwrap();
        push(&s, key("c", &[]), "x{l=\"v\"} 6\n", true).unwrap();
        for _ in 0..2 {
            let t = scrape(&s);
            assert_eq!(lines(&t, "x{"), 3, "{t}");
            assert!(t.contains("x{instance=\"\",job=\"a\"} 5\n"), "{t}");
            assert!(t.contains("x{instance=\"\",job=\"c\",l=\"v\"} 6\n"), "{t}");
            assert!(t.contains("x{instance=\"\",job=\"d\"} 4\n"), "{t}");
            assert!(!t.contains("job=\"b\""), "{t}");
            assert_eq!(lines(&t, "push_time_seconds{"), 3, "{t}");
        }
        // A series of a deleted group can be pushed by another group again.
        push(&s, key("e", &[]), "y 1\n", true).unwrap();
        assert!(s.delete(&key("e", &[])));
        push(&s, key("a", &[]), "x 5\ny 2\n", true).unwrap();
        for job in ["a", "c", "d"] {
            assert!(s.delete(&key(job, &[])));
        }
        assert_eq!(scrape(&s), "");
        assert_eq!(s.series_count(), 0);
    }

    #[test]
    fn put_replaces_post_merges_delete_removes() {
        let s = store();
        push(&s, key("a", &[]), "x{l=\"1\"} 1\nx{l=\"2\"} 2\ny 1\n", true).unwrap();
        push(&s, key("a", &[]), "x{l=\"3\"} 3\n", false).unwrap();
        let t = scrape(&s);
        assert!(
            t.contains("x{instance=\"\",job=\"a\",l=\"3\"} 3\n") && !t.contains("l=\"1\""),
            "{t}"
        );
        assert!(t.contains("y{instance=\"\",job=\"a\"} 1\n"), "{t}");
        push(&s, key("a", &[]), "z 1\n", true).unwrap();
        let t = scrape(&s);
        assert!(!t.contains("y{") && t.contains("z{"), "{t}");
        assert!(s.delete(&key("a", &[])));
        assert_eq!(scrape(&s), "");
        assert!(!s.delete(&key("a", &[])));
    }

    #[test]
    fn type_conflicts_across_groups_are_refused_and_leave_data_alone() {
        let s = store();
        push(&s, key("a", &[]), "# TYPE m counter\nm 1\n", true).unwrap();
        let before = scrape(&s);
        let err = push(&s, key("b", &[]), "# TYPE m gauge\nm 1\n", true).unwrap_err();
        assert!(matches!(err, PushError::Invalid(_)), "{err}");
        // the same group may change the type of its own family
        push(&s, key("a", &[]), "# TYPE m gauge\nm 2\n", true).unwrap();
        assert_ne!(before, scrape(&s));
        // once nobody else uses the name, a new type is fine
        s.delete(&key("a", &[]));
        push(&s, key("b", &[]), "# TYPE m counter\nm 1\n", true).unwrap();
    }

    #[test]
    fn duplicate_series_across_groups_is_refused() {
        let s = store();
        push(&s, key("a", &[("l", "x")]), "m 1\n", true).unwrap();
        // group {job=a} pushing a sample with l="x" would expose the same series
        let err = push(&s, key("a", &[]), "m{l=\"x\"} 1\n", true).unwrap_err();
        assert!(err.to_string().contains("was collected before"), "{err}");
        // re-pushing the same series into its own group is fine
        push(&s, key("a", &[("l", "x")]), "m 2\n", true).unwrap();
    }

    #[test]
    fn suffix_collisions_and_reserved_names() {
        let s = store();
        push(
            &s,
            key("h", &[]),
            "# TYPE h histogram\nh_bucket{le=\"+Inf\"} 1\nh_sum 1\nh_count 1\n",
            true,
        )
        .unwrap();
        let err = push(&s, key("g", &[]), "# TYPE h_count gauge\nh_count 1\n", true).unwrap_err();
        assert!(
            err.to_string()
                .contains("collides with previously collected histogram"),
            "{err}"
        );
        push(&s, key("g", &[]), "# TYPE q gauge\nq_sum 1\n", true).unwrap();
        let err = push(
            &s,
            key("q", &[]),
            "# TYPE q summary\nq_sum 1\nq_count 1\n",
            true,
        )
        .unwrap_err();
        assert!(
            err.to_string()
                .contains("collides with previously collected metric"),
            "{err}"
        );
        let err = push(
            &s,
            key("r", &[]),
            "# TYPE pushgateway_build_info counter\npushgateway_build_info 1\n",
            true,
        )
        .unwrap_err();
        assert!(
            err.to_string()
                .contains("has type COUNTER but should have GAUGE"),
            "{err}"
        );
    }

    #[test]
    fn instance_less_key_collision_is_refused_without_leaving_a_group() {
        let s = store();
        push(&s, key("u", &[]), "x 1\n", true).unwrap();
        let before = s.snapshot().len();
        let err = push(&s, key("u", &[("instance", "")]), "x 1\n", true).unwrap_err();
        assert!(matches!(err, PushError::Invalid(_)));
        s.record_failure(&key("u", &[("instance", "")]), 5.0);
        assert_eq!(
            s.snapshot().len(),
            before,
            "bug 3: a rejected push must not leave a group"
        );
    }

    #[test]
    fn timestamps_refused_but_failure_recorded() {
        let s = store();
        let err = push(&s, key("t", &[]), "x 1 123\n", true).unwrap_err();
        assert_eq!(
            err.to_string(),
            format!(
                "{}: pushed metrics must not have timestamps",
                error::INCONSISTENT_PREFIX
            )
        );
        let g = &s.snapshot()[0];
        assert!(!g.last_push_successful);
        assert_eq!(g.push_time, 0.0);
        assert_eq!(g.failure_time, 1000.0);
        assert!(g.families.is_empty());
    }

    #[test]
    fn a_time_that_does_not_change_keeps_its_timing_family() {
        let s = store();
        let k = key("t", &[]);
        let push_at = |now: f64| {
            let fams = parse_text(b"x 1\n", NameScheme::Legacy).unwrap();
            let p = prepare_push(k.clone(), fams, true, &Validation::default()).unwrap();
            s.push(p, now).unwrap();
        };
        let timing = || {
            s.group(&k)
                .unwrap()
                .timing
                .expect("a local group has its timing")
        };
        push_at(10.0);
        let first = timing();
        s.record_failure(&k, 20.0);
        let failed = timing();
        assert!(
            StoredFamily::ptr_eq(&first[0], &failed[0]),
            "push time unchanged"
        );
        assert!(!StoredFamily::ptr_eq(&first[1], &failed[1]));
        push_at(30.0);
        let again = timing();
        assert!(!StoredFamily::ptr_eq(&failed[0], &again[0]));
        assert!(
            StoredFamily::ptr_eq(&failed[1], &again[1]),
            "failure time unchanged"
        );
        let text = scrape(&s);
        assert!(
            text.contains("push_time_seconds{instance=\"\",job=\"t\"} 30\n"),
            "{text}"
        );
        assert!(
            text.contains("push_failure_time_seconds{instance=\"\",job=\"t\"} 20\n"),
            "{text}"
        );
    }

    #[test]
    fn scrape_orders_across_groups_like_upstream() {
        let s = store();
        push(&s, key("b", &[]), "m 1\nm{a=\"2\"} 1\n", true).unwrap();
        push(
            &s,
            key("a", &[("instance", "i9")]),
            "m 1\nm{a=\"10\"} 1\n",
            true,
        )
        .unwrap();
        let t = scrape(&s);
        let lines: Vec<&str> = t.lines().filter(|l| l.starts_with("m{")).collect();
        assert_eq!(
            lines,
            [
                "m{instance=\"\",job=\"b\"} 1",
                "m{instance=\"i9\",job=\"a\"} 1",
                "m{a=\"10\",instance=\"i9\",job=\"a\"} 1",
                "m{a=\"2\",instance=\"\",job=\"b\"} 1",
            ]
        );
        // a cached render gives the same bytes
        assert_eq!(scrape(&s), t);
    }

    #[test]
    fn cached_member_order_follows_values_and_label_changes() {
        let s = store();
        for j in ["b", "d"] {
            push(&s, key(j, &[]), "m 1\n", true).unwrap();
        }
        let lines = |s: &Store| -> Vec<String> {
            scrape(s)
                .lines()
                .filter(|l| l.starts_with("m{"))
                .map(String::from)
                .collect()
        };
        assert_eq!(
            lines(&s),
            [
                "m{instance=\"\",job=\"b\"} 1",
                "m{instance=\"\",job=\"d\"} 1"
            ]
        );
        // values change, labels do not: the cached order is reused and the new values appear
        push(&s, key("d", &[]), "m 7\n", true).unwrap();
        assert_eq!(
            lines(&s),
            [
                "m{instance=\"\",job=\"b\"} 1",
                "m{instance=\"\",job=\"d\"} 7"
            ]
        );
        // a group joins in the middle: re-sorted
        push(&s, key("c", &[]), "m 3\n", true).unwrap();
        assert_eq!(
            lines(&s),
            [
                "m{instance=\"\",job=\"b\"} 1",
                "m{instance=\"\",job=\"c\"} 3",
                "m{instance=\"\",job=\"d\"} 7"
            ]
        );
        // a member's label set changes so it now sorts first: re-sorted
        push(&s, key("d", &[("instance", "a")]), "m 9\n", true).unwrap();
        s.delete(&key("d", &[]));
        push(&s, key("c", &[]), "m{a=\"0\"} 3\n", true).unwrap();
        assert_eq!(
            lines(&s),
            [
                "m{instance=\"\",job=\"b\"} 1",
                "m{instance=\"a\",job=\"d\"} 9",
                "m{a=\"0\",instance=\"\",job=\"c\"} 3"
            ]
        );
    }

    #[test]
    fn help_is_deterministic_first_group_in_key_order() {
        let s = store();
        push(&s, key("b", &[]), "# HELP m help B\nm 1\n", true).unwrap();
        push(&s, key("c", &[]), "# HELP m help C\nm 1\n", true).unwrap();
        push(&s, key("a", &[]), "m 1\n", true).unwrap();
        assert!(scrape(&s).contains("# HELP m help B\n"));
    }

    #[test]
    fn without_the_check_conflicts_are_stored_and_resolved_at_render() {
        let s = Store::new(StoreOptions {
            consistency_check: false,
            ..StoreOptions::default()
        });
        push(&s, key("b", &[]), "# TYPE m gauge\nm 1\n", true).unwrap();
        push(&s, key("a", &[]), "# TYPE m counter\nm 1\n", true).unwrap();
        let mut out = Vec::new();
        let stats = s.render(Format::Text, &[], &mut out);
        let t = String::from_utf8(out).unwrap();
        assert!(
            t.contains("# TYPE m counter\nm{instance=\"\",job=\"a\"} 1\n"),
            "{t}"
        );
        assert!(
            !t.contains("job=\"b\"} 1\n# ") && !t.contains("m{instance=\"\",job=\"b\"}"),
            "{t}"
        );
        assert_eq!(stats.inconsistent_dropped, 1);
    }

    #[test]
    fn accounting_returns_to_zero_and_series_index_follows_label_changes() {
        let s = store();
        for i in 0..5 {
            push(
                &s,
                key("a", &[]),
                &format!("x{{l=\"1\"}} {i}\ny {i}\n"),
                true,
            )
            .unwrap();
            push(
                &s,
                key("b", &[]),
                &format!("x{{l=\"2\"}} {i}\n"),
                i % 2 == 0,
            )
            .unwrap();
        }
        assert_eq!(
            s.series_count(),
            3 + 4,
            "3 pushed metrics plus 2x2 timing gauges"
        );
        // the label set of a family changes: the old series must leave the series index
        push(&s, key("a", &[]), "x{l=\"3\"} 1\n", false).unwrap();
        push(&s, key("b", &[]), "x{l=\"1\"} 1\n", true).unwrap();
        let err = push(&s, key("b", &[]), "x{l=\"3\",job=\"a\"} 1\n", true);
        assert!(
            err.is_ok(),
            "job is overwritten by the grouping key, so no collision: {err:?}"
        );
        s.delete(&key("a", &[]));
        s.delete(&key("b", &[]));
        assert_eq!(s.series_count(), 0);
        assert_eq!(s.encoded_bytes(), 0);
        // nothing left behind in the indexes: a new group may take any type and series
        push(&s, key("c", &[]), "# TYPE x counter\nx{l=\"1\"} 1\n", true).unwrap();
    }

    #[test]
    fn versioned_writes_newest_wins_and_tombstones_block_resurrection() {
        let primary = store();
        let replica = store();
        let fams = parse_text(b"m 1\n", NameScheme::Legacy).unwrap();
        let p = prepare_push(key("v", &[]), fams, true, &Validation::default()).unwrap();
        assert_eq!(primary.push_versioned(p, 5.0, || 100).unwrap().version, 100);
        let g1 = primary.group(&key("v", &[])).unwrap();
        assert_eq!(g1.version, 100);
        assert!(replica.apply_replica(g1.clone()));
        assert!(
            !replica.apply_replica(g1.clone()),
            "same version is not applied twice"
        );
        assert_eq!(replica.group(&key("v", &[])).unwrap().version, 100);
        // delete at 200, then the old state arrives late: refused
        assert!(replica.delete_versioned(&key("v", &[]), 200));
        assert!(!replica.apply_replica(g1.clone()));
        assert!(replica.group(&key("v", &[])).is_none());
        assert_eq!(replica.tombstone(&key("v", &[])), Some(200));
        // an older delete does not remove a newer group
        let mut g3 = g1.clone();
        g3.version = 300;
        assert!(replica.apply_replica(g3));
        assert!(replica.tombstone(&key("v", &[])).is_none());
        assert!(!replica.delete_versioned(&key("v", &[]), 250));
        assert!(replica.group(&key("v", &[])).is_some());
        assert_eq!(replica.max_version(), 300);
    }

    #[test]
    fn a_versioned_wipe_removes_everything_and_refuses_late_copies() {
        let s = store();
        for (job, version) in [("old", 100), ("tombstoned", 0), ("new", 300)] {
            let fams = parse_text(format!("{job}_m 1\n").as_bytes(), NameScheme::Legacy).unwrap();
            let p = prepare_push(key(job, &[]), fams, true, &Validation::default()).unwrap();
            if version > 0 {
                s.push_versioned(p, 1.0, || version).unwrap();
            }
        }
        s.delete_versioned(&key("tombstoned", &[]), 150);
        let old_copy = s.group(&key("old", &[])).unwrap();
        // Everything held goes, and the watermark covers the newest version held (300), not
        // only the wipe's own (200): that copy came from a clock running ahead.
        assert_eq!(s.wipe_versioned(200), 300);
        assert!(s.group(&key("old", &[])).is_none());
        assert!(s.group(&key("new", &[])).is_none());
        assert_eq!(s.tombstone(&key("tombstoned", &[])), None);
        assert!(!scrape(&s).contains("_m"));
        assert!(
            !s.apply_replica(old_copy.clone()),
            "a copy from before the wipe is stale"
        );
        let mut ahead = old_copy.clone();
        ahead.version = 300;
        assert!(
            !s.apply_replica(ahead),
            "nor one as new as anything held at the wipe"
        );
        let mut later = old_copy;
        later.version = 301;
        assert!(s.apply_replica(later), "a write after the wipe is applied");
        assert!(scrape(&s).contains("old_m"));
        // A later wipe with an older version keeps the higher watermark.
        assert_eq!(s.wipe_versioned(10), 301);
    }

    #[test]
    fn merged_render_of_snapshots_equals_the_store_render() {
        let s = store();
        push(
            &s,
            key("b", &[]),
            "# HELP m help\nm 1\nm{a=\"2\"} 1\n",
            true,
        )
        .unwrap();
        push(
            &s,
            key("a", &[("instance", "i9")]),
            "m 1\nm{a=\"10\"} 1\n# TYPE h histogram\nh_bucket{le=\"+Inf\"} 1\nh_sum 1\nh_count 1\n",
            true,
        )
        .unwrap();
        push(&s, key("c", &[]), "x 3\n", true).unwrap();
        // Local snapshots carry their timing families; copies from peers or files do not, and
        // build them: both must render exactly like the store.
        let local = s.snapshot();
        assert!(local.iter().all(|g| g.timing.is_some()));
        let mut decoded = local.clone();
        for g in &mut decoded {
            g.timing = None;
        }
        for format in [Format::Text, Format::Protobuf] {
            let mut direct = Vec::new();
            s.render(format, &[], &mut direct);
            for snapshots in [&local, &decoded] {
                let mut merged = Vec::new();
                merged::render_groups(
                    snapshots,
                    crate::telemetry::reserved_names(),
                    &[],
                    format,
                    None,
                    &mut merged,
                );
                assert_eq!(direct, merged, "{format:?}");
            }
        }
    }

    #[test]
    fn merged_render_keeps_one_of_two_groups_that_collide_once_instance_is_added() {
        // Groups that raced on different primaries: {job="a"} and {instance="",job="a"} expose
        // the same series; a key twice (or out of order) is checked the same way. The first in
        // key order is kept and the other counted, whichever way the view arrives.
        let one = |k: GroupKey, v: u32| {
            let s = store();
            push(&s, k, &format!("m {v}\n"), true).unwrap();
            s.snapshot().remove(0)
        };
        let bare = one(key("a", &[]), 1);
        let empty = one(key("a", &[("instance", "")]), 2);
        let other = one(key("b", &[]), 3);
        let render = |groups: Vec<GroupSnapshot>| {
            let mut out = Vec::new();
            let stats = merged::render_groups(
                &groups,
                crate::telemetry::reserved_names(),
                &[],
                Format::Text,
                None,
                &mut out,
            );
            let text = String::from_utf8(out).unwrap();
            let m: Vec<String> = text
                .lines()
                .filter(|l| l.starts_with("m{"))
                .map(str::to_owned)
                .collect();
            (m, stats.inconsistent_dropped)
        };
        let b = "m{instance=\"\",job=\"b\"} 3".to_owned();
        // {instance="",job="a"} sorts before {job="a"}: it is the one kept.
        let kept_empty = (
            vec!["m{instance=\"\",job=\"a\"} 2".to_owned(), b.clone()],
            1,
        );
        for groups in [
            vec![empty.clone(), bare.clone(), other.clone()],
            vec![bare.clone(), empty.clone(), other.clone()],
            vec![other.clone(), bare.clone(), empty.clone()],
        ] {
            assert_eq!(render(groups), kept_empty);
        }
        let kept_bare = (
            vec!["m{instance=\"\",job=\"a\"} 1".to_owned(), b.clone()],
            1,
        );
        for groups in [
            vec![bare.clone(), bare.clone(), other.clone()],
            vec![bare.clone(), other.clone(), bare.clone()],
        ] {
            assert_eq!(render(groups), kept_bare);
        }
        let none_dropped = (vec!["m{instance=\"\",job=\"a\"} 1".to_owned(), b], 0);
        assert_eq!(render(vec![bare, other]), none_dropped);
    }

    #[test]
    fn timing_families_equal_gauges_of_the_normalized_key() {
        let keys = [
            key("a", &[]),
            key("a", &[("instance", "")]),
            key("a", &[("instance", "i-1")]),
            key("j", &[("a", "x"), ("zz", "1")]),
            key("j", &[("ab", "q\"u\\o\nte"), ("instancf", "2")]),
            key("j", &[("i", "1"), ("instance", "3"), ("z", "")]),
        ];
        for k in &keys {
            let labels = k.normalized().labels().to_vec();
            for (push, failure) in [(1.5, 0.0), (1.7e9, 1.7e9 + 0.25)] {
                let got = timing_families(k, push, failure);
                let want = [
                    (PUSH_TIME_METRIC, PUSH_TIME_HELP, push),
                    (PUSH_FAILURE_TIME_METRIC, PUSH_FAILURE_TIME_HELP, failure),
                ]
                .map(|(n, h, v)| {
                    StoredFamily::gauge(family::intern(n), family::intern(h), &labels, v)
                });
                for (g, w) in got.iter().zip(&want) {
                    let wire = |f: &StoredFamily| {
                        let mut b = Vec::new();
                        f.to_wire(&mut b);
                        b
                    };
                    assert_eq!(wire(g), wire(w), "{k}");
                    assert_eq!(g.to_metric_family(), w.to_metric_family(), "{k}");
                    assert!(g.same_series(w), "{k}");
                }
                assert!(!StoredFamily::same_block(&got[0], &got[1]));
            }
        }
    }

    #[test]
    fn merged_member_orders_are_reused_only_for_unchanged_members() {
        // Six groups; `n`'s series sort against key order (b falls as the job rises), so its
        // order is a real permutation; `m`'s members interleave (never remembered); `e` is
        // a family without metrics in every group.
        let view = |change: Option<&str>| -> Vec<GroupSnapshot> {
            let s = store();
            for i in 0..6u32 {
                let b = match change {
                    Some("relabel") if i == 3 => 9,
                    _ => 5 - i,
                };
                let body = format!(
                    "m{{a=\"{i}\"}} {i}\nm{{a=\"z\"}} 1\nn{{b=\"{b}\"}} 2\n# TYPE e counter\n"
                );
                push(&s, key(&format!("j{i}"), &[]), &body, true).unwrap();
            }
            match change {
                Some("add") => {
                    push(&s, key("j6", &[]), "n{b=\"7\"} 1\n", true).unwrap();
                }
                Some("remove") => assert!(s.delete(&key("j2", &[]))),
                _ => {}
            }
            let mut groups = s.snapshot();
            // As from peers: the timing families are built at render.
            for g in &mut groups {
                g.timing = None;
            }
            groups
        };
        let render = |groups: &[GroupSnapshot], orders: Option<&render::MergedOrders>| {
            let mut out = Vec::new();
            let reserved = crate::telemetry::reserved_names();
            let stats =
                merged::render_groups(groups, reserved, &[], Format::Text, orders, &mut out);
            (String::from_utf8(out).unwrap(), stats.cached_families)
        };
        let orders = render::MergedOrders::default();
        let base = view(None);
        let fresh = render(&base, None).0;
        assert_eq!(render(&base, Some(&orders)), (fresh.clone(), 0));
        // n and the two timing families are remembered (m interleaves, e is empty).
        assert_eq!(orders.len(), 3);
        assert_eq!(render(&base, Some(&orders)), (fresh, 3));
        for change in ["relabel", "add", "remove"] {
            let changed = view(Some(change));
            let (want, _) = render(&changed, None);
            let (got, hits) = render(&changed, Some(&orders));
            assert_eq!(got, want, "{change}");
            // n's members changed: its order is found again, not reused.
            let expected_hits = if change == "relabel" { 2 } else { 0 };
            assert_eq!(hits, expected_hits, "{change}");
            assert_eq!(render(&changed, Some(&orders)), (want, 3), "{change}");
            assert_eq!(
                render(&base, Some(&orders)).1,
                expected_hits,
                "{change}, back"
            );
        }
    }

    #[test]
    fn small_chunks_split_families_and_concatenate_to_the_whole_render() {
        let s = store();
        for i in 0..20 {
            let body = format!("# TYPE h histogram\nh_bucket{{le=\"+Inf\"}} {i}\nh_sum 1\nh_count {i}\nm{{a=\"{i}\"}} 1\n");
            push(&s, key("j", &[("instance", &format!("i{i}"))]), &body, true).unwrap();
        }
        let reserved = crate::telemetry::reserved_names();
        for format in [Format::Text, Format::Protobuf] {
            let mut whole = Vec::new();
            s.render(format, &[], &mut whole);
            let mut pieces = Vec::new();
            s.render_chunked(format, &[], 64, &mut |c| pieces.push(c));
            assert!(pieces.len() > 10, "{format:?}: families are split");
            assert_eq!(pieces.concat(), whole, "{format:?}");
            let mut merged_pieces = Vec::new();
            render::render_snapshots(&s.snapshot(), &reserved, &[], format, None, 64, &mut |c| {
                merged_pieces.push(c)
            });
            assert!(merged_pieces.len() > 10);
            assert_eq!(merged_pieces.concat(), whole, "{format:?} from snapshots");
        }
    }

    #[test]
    fn group_limit() {
        let s = Store::new(StoreOptions {
            max_groups: 1,
            ..StoreOptions::default()
        });
        push(&s, key("a", &[]), "x 1\n", true).unwrap();
        let err = push(&s, key("b", &[]), "x 1\n", true).unwrap_err();
        assert!(matches!(err, PushError::LimitExceeded(_)));
        push(&s, key("a", &[]), "x 2\n", true).unwrap();
    }

    #[test]
    fn protobuf_render_is_sorted_and_decodable() {
        use prost::Message;
        let s = store();
        push(&s, key("b", &[]), "m 1\n", true).unwrap();
        push(&s, key("a", &[]), "m 2\n", true).unwrap();
        let mut out = Vec::new();
        s.render(Format::Protobuf, &[], &mut out);
        let fams = crate::exposition::decode_delimited(&out).unwrap();
        let m = fams.iter().find(|f| f.name() == "m").unwrap();
        let jobs: Vec<&str> = m.metric.iter().map(|m| m.label[1].value()).collect();
        assert_eq!(jobs, ["a", "b"]);
        assert!(m.encoded_len() > 0);
    }
}
