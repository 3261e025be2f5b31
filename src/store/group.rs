//! A group as the store holds it: its families sorted by name with their index slots, its push
//! and failure times and the two timing families encoding them, and the read-only copy
//! (`GroupSnapshot`) handed to readers, files and peers.

use std::sync::Arc;

use super::family::{self, StoredFamily};
use super::key::GroupKey;
use super::prepare::{
    PUSH_FAILURE_TIME_HELP, PUSH_FAILURE_TIME_METRIC, PUSH_TIME_HELP, PUSH_TIME_METRIC,
};
use super::aggregate::state::AggState;
use crate::exposition::MetricType;

/// A read-only copy of one group, for the JSON API, the status page and snapshots.
#[derive(Debug, Clone)]
pub struct GroupSnapshot {
    pub key: Arc<GroupKey>,
    /// Families sorted by name, each with the Unix time of the push that last set it.
    pub families: Vec<(StoredFamily, f64)>,
    pub push_time: f64,
    pub failure_time: f64,
    pub last_push_successful: bool,
    /// Whether pushes add up in this group (`/aggregate`).
    pub aggregating: bool,
    /// Seconds after its last successful push at which the group expires (0: never).
    pub ttl: f64,
    /// The newest write in the copy: the highest of `stamps` (what digests, skew checks and
    /// hand-offs compare).
    pub version: u64,
    /// The version of each part of the copy, so that two copies merge (`store/merge.rs`).
    pub stamps: Stamps,
    /// The group's `push_time_seconds` and `push_failure_time_seconds` families when the copy
    /// comes from a local store (already encoded there); `None` for a copy decoded from a file
    /// or a peer, whose timing families are built when needed (`timing_families_of`).
    pub timing: Option<[StoredFamily; 2]>,
    /// An aggregating group's state, carried by a copy that travels to a peer (a replica, a
    /// hand-off, anti-entropy) so that the receiver merges the state, not the sums it exposes;
    /// `None` in copies for readers, files (which keep states apart) and scrapes.
    pub agg: Option<Arc<AggState>>,
    /// `AggState::digest` of an aggregating group's state (0: none): part of the group's
    /// digest, so anti-entropy tells apart two copies of one version whose states differ.
    pub agg_digest: u64,
}

#[derive(Debug)]
pub(super) struct Group {
    pub(super) id: u64,
    pub(super) key: Arc<GroupKey>,
    /// Pushed families (without the two timing families), when each was last pushed and its
    /// slot in its name's index entry.
    pub(super) families: FamilyMap,
    pub(super) push_time: f64,
    pub(super) failure_time: f64,
    pub(super) last_push_successful: bool,
    pub(super) aggregating: bool,
    /// Seconds after the last successful push at which the group expires (0: never).
    pub(super) ttl: f64,
    pub(super) version: u64,
    /// The stamps of `Stamps` but the families' (theirs are in `families`).
    pub(super) reset: u64,
    pub(super) cleared: u64,
    pub(super) push_stamp: u64,
    pub(super) failure_stamp: u64,
    pub(super) ttl_stamp: u64,
    pub(super) timing: [StoredFamily; 2],
    /// Index slots of the two timing families.
    pub(super) timing_slots: [usize; 2],
    /// As `GroupSnapshot::agg_digest`.
    pub(super) agg_digest: u64,
}

impl Group {
    pub(super) fn snapshot(&self) -> GroupSnapshot {
        GroupSnapshot {
            key: self.key.clone(),
            families: self
                .families
                .values()
                .map(|(f, t, _, _)| (f.clone(), *t))
                .collect(),
            push_time: self.push_time,
            failure_time: self.failure_time,
            last_push_successful: self.last_push_successful,
            aggregating: self.aggregating,
            ttl: self.ttl,
            version: self.version,
            stamps: Stamps {
                reset: self.reset,
                cleared: self.cleared,
                push: self.push_stamp,
                failure: self.failure_stamp,
                ttl: self.ttl_stamp,
                families: self.families.values().map(|h| h.3).collect(),
            },
            timing: Some(self.timing.clone()),
            agg: None,
            agg_digest: self.agg_digest,
        }
    }

    pub(super) fn expires_at(&self) -> Option<f64> {
        expires_at(self.push_time, self.failure_time, self.ttl)
    }

    /// `merge::digest` of the group's snapshot, without making one.
    pub(super) fn digest(&self) -> u64 {
        digest_parts(
            [
                self.version,
                self.reset,
                self.cleared,
                self.push_stamp,
                self.failure_stamp,
                self.ttl_stamp,
            ],
            [self.push_time, self.failure_time, self.ttl],
            self.agg_digest,
            // The names from the map's keys: the same interned strings as the families', which
            // are each a cold allocation to touch in a pass over a large store (anti-entropy
            // digests every group each round).
            self.families
                .0
                .iter()
                .map(|(name, (_, at, _, v))| (&**name, *v, *at)),
        )
    }

    /// Carries a delete at `tombstone` (the group was deleted there before this write created it
    /// again) as the group's own reset.
    pub(super) fn inherit(&mut self, tombstone: Option<u64>) {
        if let Some(t) = tombstone {
            self.reset = self.reset.max(t);
            self.cleared = self.cleared.max(t);
        }
    }

    /// Sets the group's push and failure times and its timing families to match (see
    /// [`retimed`]); both timing families go to `changes`, each with the one it replaces.
    #[inline]
    pub(super) fn retime(
        &mut self,
        push_time: f64,
        failure_time: f64,
        changes: &mut Vec<FamilyChange>,
    ) {
        let before = [self.push_time, self.failure_time];
        self.push_time = push_time;
        self.failure_time = failure_time;
        let new_timing = retimed(&self.timing, &self.key, before, [push_time, failure_time]);
        let old_timing = std::mem::replace(&mut self.timing, new_timing.clone());
        changes.extend(
            old_timing
                .into_iter()
                .zip(self.timing_slots)
                .zip(new_timing)
                .map(|(old, new)| (Some(old), Some(new))),
        );
    }
}

impl GroupSnapshot {
    /// When the group expires (Unix seconds), if it has a TTL.
    pub fn expires_at(&self) -> Option<f64> {
        expires_at(self.push_time, self.failure_time, self.ttl)
    }

    /// Whether the group has expired at `now`: such a copy is no longer served or accepted
    /// anywhere (a peer's, a file's or a hand-off's), so an expired group cannot come back.
    pub fn expired(&self, now: f64) -> bool {
        self.expires_at().is_some_and(|at| at <= now)
    }
}

/// A group's expiry time: its TTL after its last successful push (after its first failure
/// when it never had one, so a group created by a refused push does not stay for ever). The
/// times are the replicated ones, so every node holding a copy computes the same moment.
pub fn expires_at(push_time: f64, failure_time: f64, ttl: f64) -> Option<f64> {
    // A NaN (never stored: decoders refuse it) counts as no TTL.
    if ttl.is_nan() || ttl <= 0.0 {
        return None;
    }
    let base = if push_time > 0.0 { push_time } else { failure_time };
    Some(base + ttl)
}

/// `merge::digest` from its parts: the group's version and stamps, its times and TTL, and each
/// family's name, version and push time (a held group hashes its own without a copy).
pub(super) fn digest_parts<'a>(
    stamps: [u64; 6],
    times: [f64; 3],
    agg_digest: u64,
    families: impl Iterator<Item = (&'a str, u64, f64)>,
) -> u64 {
    let mut h = xxhash_rust::xxh3::Xxh3::new();
    // Only an aggregating group's state adds to it: other digests are as before.
    if agg_digest != 0 {
        h.update(&agg_digest.to_le_bytes());
    }
    for v in stamps {
        h.update(&v.to_le_bytes());
    }
    for t in times {
        h.update(&t.to_bits().to_le_bytes());
    }
    for (name, v, at) in families {
        h.update(&(name.len() as u64).to_le_bytes());
        h.update(name.as_bytes());
        h.update(&v.to_le_bytes());
        h.update(&at.to_bits().to_le_bytes());
    }
    h.digest()
}

/// A family of a group, when it was last pushed, its slot in its name's index entry and the
/// version of the write that set it.
pub(super) type Held = (StoredFamily, f64, usize, u64);

/// The versions of a group's parts: each family's last write, the push and failure times', and
/// the resets that PUT and DELETE leave. Two copies of a group merge part by part, the newest
/// of each winning (`store/merge.rs`), so a write one copy missed is never lost to the other.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Stamps {
    /// The newest PUT or DELETE: families written before it are gone.
    pub reset: u64,
    /// The newest DELETE: the push and failure times (and TTL) written before it are gone too.
    pub cleared: u64,
    /// The successful push that set `push_time` (0: none since `cleared`).
    pub push: u64,
    /// The refused push that set `failure_time` (0: none since `cleared`).
    pub failure: u64,
    /// The write that set `ttl` (a push, or the refused push that created the group).
    pub ttl: u64,
    /// Each family's last write, in the order of `GroupSnapshot::families`.
    pub families: Vec<u64>,
}

impl Stamps {
    /// The stamps of a copy written whole by one write at `version` (an imported group, a file
    /// or a peer's copy that carries no stamps): every part at `version`, except that of the
    /// push and failure times the older is one less, so the newer tells whether the last push
    /// succeeded.
    pub fn whole(version: u64, families: usize, times: [f64; 2], last_push_successful: bool) -> Stamps {
        let older = version.saturating_sub(1);
        let (push, failure) = if last_push_successful {
            (version, older)
        } else {
            (older, version)
        };
        Stamps {
            reset: version,
            cleared: 0,
            push: if times[0] > 0.0 || last_push_successful { push } else { 0 },
            failure: if times[1] > 0.0 || !last_push_successful { failure } else { 0 },
            ttl: version,
            families: vec![version; families],
        }
    }

    /// The newest stamp: a copy's version.
    pub fn newest(&self) -> u64 {
        [self.reset, self.cleared, self.push, self.failure, self.ttl]
            .into_iter()
            .chain(self.families.iter().copied())
            .max()
            .unwrap_or(0)
    }
}

/// A group's pushed families, sorted by unique name. Groups hold a handful of families, so a
/// sorted vector serves lookups as well as a tree, and a write that brings the same names (a
/// job pushing new values) stores into it in place: no allocation, no node to build and free.
#[derive(Debug, Default)]
pub(super) struct FamilyMap(pub(super) Vec<(Arc<str>, Held)>);

impl FamilyMap {
    fn find(&self, name: &str) -> Result<usize, usize> {
        self.0.binary_search_by(|(n, _)| (**n).cmp(name))
    }

    pub(super) fn contains_key(&self, name: &str) -> bool {
        self.find(name).is_ok()
    }

    pub(super) fn get(&self, name: &str) -> Option<&Held> {
        self.find(name).ok().map(|i| &self.0[i].1)
    }

    /// [`Self::get`] for a name expected at index `hint`: a re-push of the same families (both
    /// lists sorted by name) finds each one at its own index, and interned names compare by
    /// pointer, so the common case compares no bytes. (`Arc<str>`'s own `==` compares the
    /// bytes: std's pointer shortcut is only for sized types, and a push looks up every name.)
    pub(super) fn get_hinted(&self, name: &Arc<str>, hint: usize) -> Option<&Held> {
        match self.0.get(hint) {
            Some((n, held)) if Arc::ptr_eq(n, name) || **n == **name => Some(held),
            _ => self.get(name),
        }
    }

    pub(super) fn get_mut(&mut self, name: &str) -> Option<&mut Held> {
        self.find(name).ok().map(|i| &mut self.0[i].1)
    }

    pub(super) fn values(&self) -> impl Iterator<Item = &Held> + '_ {
        self.0.iter().map(|(_, h)| h)
    }

    /// Makes the families exactly `new` (sorted by unique name), each pushed at its time:
    /// every family replaced, removed or added goes to `changes`, removals first, then the new
    /// families in order (each paired with the one of the same name it replaces, whose slot it
    /// keeps until the index says otherwise).
    pub(super) fn replace_all<'a>(
        &mut self,
        new: impl ExactSizeIterator<Item = (&'a StoredFamily, f64, u64)> + Clone,
        changes: &mut Vec<FamilyChange>,
    ) {
        let same_names = self.0.len() == new.len()
            && self
                .0
                .iter()
                .zip(new.clone())
                .all(|((n, _), (f, _, _))| Arc::ptr_eq(n, &f.name) || **n == *f.name);
        if same_names {
            for ((_, held), (f, at, v)) in self.0.iter_mut().zip(new) {
                let (old, _, slot, _) = std::mem::replace(held, (f.clone(), at, held.2, v));
                changes.push((Some((old, slot)), Some(f.clone())));
            }
            return;
        }
        let mut old = std::mem::take(&mut self.0).into_iter().peekable();
        let mut pairs: Vec<FamilyChange> = Vec::with_capacity(new.len());
        let mut fresh = Vec::with_capacity(new.len());
        for (f, at, v) in new {
            while let Some((_, (gone, _, slot, _))) = old.next_if(|(n, _)| **n < *f.name) {
                changes.push((Some((gone, slot)), None));
            }
            let replaced = old
                .next_if(|(n, _)| **n == *f.name)
                .map(|(_, (o, _, slot, _))| (o, slot));
            fresh.push((f.name.clone(), (f.clone(), at, slot_of(&replaced), v)));
            pairs.push((replaced, Some(f.clone())));
        }
        changes.extend(old.map(|(_, (gone, _, slot, _))| (Some((gone, slot)), None)));
        changes.append(&mut pairs);
        self.0 = fresh;
    }

    /// Stores `new` (sorted by unique name) pushed at `at` over the families of the same names,
    /// keeping the others; each goes to `changes` with the family it replaces, if any.
    pub(super) fn replace_some(
        &mut self,
        new: &[StoredFamily],
        at: f64,
        version: u64,
        changes: &mut Vec<FamilyChange>,
    ) {
        if new.iter().all(|f| self.contains_key(&f.name)) {
            for f in new {
                let held = self.get_mut(&f.name).expect("every pushed name is held");
                let (old, _, slot, _) = std::mem::replace(held, (f.clone(), at, held.2, version));
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
                .map(|(_, (o, _, slot, _))| (o, slot));
            merged.push((f.name.clone(), (f.clone(), at, slot_of(&replaced), version)));
            changes.push((replaced, Some(f.clone())));
        }
        merged.extend(old);
        self.0 = merged;
    }
}

/// A family of a group replaced (old with its index slot, and new), removed (old only) or
/// added (new only).
pub(super) type FamilyChange = (Option<(StoredFamily, usize)>, Option<StoredFamily>);

/// The slot of a family not placed in the index yet.
pub(super) const NO_SLOT: usize = usize::MAX;

/// The slot a change's old family had (`NO_SLOT` for an added family).
pub(super) fn slot_of(old: &Option<(StoredFamily, usize)>) -> usize {
    old.as_ref().map_or(NO_SLOT, |(_, slot)| *slot)
}

/// The group's `push_time_seconds` and `push_failure_time_seconds` families.
pub fn timing_families_of(g: &GroupSnapshot) -> [StoredFamily; 2] {
    match &g.timing {
        Some(timing) => timing.clone(),
        None => timing_families(&g.key, g.push_time, g.failure_time),
    }
}

/// One of the group's timing families: `push_time_seconds` (0) or `push_failure_time_seconds`
/// (1), as [`timing_families_of`] has it, built alone (a merged scrape renders the two names
/// apart, and keeping the other of every group in between would hold one per group).
pub fn timing_family_of(g: &GroupSnapshot, which: usize) -> StoredFamily {
    match &g.timing {
        Some(timing) => timing[which & 1].clone(),
        None => timing_family(&g.key, which & 1, [g.push_time, g.failure_time][which & 1]),
    }
}

/// Appends the sort key of the one series of the group `key`'s timing families (their first
/// and last key), without building them: a merged scrape orders them by it.
pub fn timing_sort_key(key: &GroupKey, out: &mut Vec<u8>) {
    family::write_sort_key(out, &key.normalized_pairs());
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
pub(super) fn timing_families(
    key: &GroupKey,
    push_time: f64,
    failure_time: f64,
) -> [StoredFamily; 2] {
    // A block each: a push replaces the push time's family and keeps the other, which must
    // not hold the replaced one's bytes alive.
    [
        timing_family(key, 0, push_time),
        timing_family(key, 1, failure_time),
    ]
}

/// `push_time_seconds` (`which` 0) or `push_failure_time_seconds` (1) of the group `key` at
/// `value`.
fn timing_family(key: &GroupKey, which: usize, value: f64) -> StoredFamily {
    static NAMES: std::sync::OnceLock<[[Arc<str>; 2]; 2]> = std::sync::OnceLock::new();
    let names = NAMES.get_or_init(|| {
        [
            [PUSH_TIME_METRIC, PUSH_TIME_HELP].map(family::intern),
            [PUSH_FAILURE_TIME_METRIC, PUSH_FAILURE_TIME_HELP].map(family::intern),
        ]
    });
    let [name, help] = &names[which & 1];
    let pairs = key.normalized_pairs();
    let metric = crate::exposition::Metric {
        gauge: Some(crate::exposition::proto::Gauge { value: Some(value) }),
        ..Default::default()
    };
    StoredFamily::encode_grouped(
        name.clone(),
        help.clone(),
        MetricType::Gauge,
        vec![metric],
        &pairs,
    )
}

#[cfg(test)]
mod tests {
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
                .map(|(i, n)| (family::intern(n), (fam(n, i as f64), 0.0, i, 0)))
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
                    map.replace_all(new.iter().map(|f| (f, at, step as u64)), &mut got);
                } else {
                    map.replace_some(&new, at, step as u64, &mut got);
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
                    .map(|(n, (f, t, slot, v))| {
                        assert_eq!(**n, *f.name);
                        assert_eq!(*v, *t as u64, "a family carries the version of its write");
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
                for (i, (_, (_, _, slot, _))) in map.0.iter_mut().enumerate() {
                    *slot = i;
                }
                for (i, (_, (_, _, slot))) in model.iter_mut().enumerate() {
                    *slot = i;
                }
            }
        }
    }
}
