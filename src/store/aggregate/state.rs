//! The state of an aggregating group (`/aggregate`), a state-based CRDT: every node that applies
//! increments keeps its own partial sums, named by node and incarnation; merging two copies
//! keeps each partial's newest state; the exposed value is the sum of the partials. Replaced
//! values (gauges, `clearmode="replace"`), help texts and summary quantiles are last-writer-wins
//! registers, and resets (a DELETE, `clearmode="family"`, a replaced value) are versions under
//! which older partials no longer count.
//!
//! Why this adds up exactly once: a partial has one writer (its node, in one incarnation), which
//! only ever grows it, so "newest" is well defined (`(epoch, seq)`), and taking the newest of
//! each partial is commutative, associative and idempotent (property-tested in
//! `state_tests.rs`): a copy applied twice, merged in any order, or brought back by a node that
//! was away counts each increment once. A node restarted without its state starts a new
//! incarnation, so it never reuses a sequence number another copy already holds.

use std::cmp::Ordering;
use std::collections::BTreeMap;
use std::sync::Arc;

use super::vec_map::VecMap;
use crate::exposition::MetricType;

/// A series' label pairs as pushed (sorted by name, `clearmode` removed).
pub type Labels = Vec<(String, String)>;

/// A version: the applying node's clock (Unix ms << 16 | counter), then its node id, so two
/// nodes never stamp the same value.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Stamp {
    pub version: u64,
    pub origin: u64,
}

/// Who applied a partial's increments: a node in one incarnation (a node that restarts without
/// its state gets a new one, so it never reuses a sequence number).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PartialId {
    pub node: u64,
    pub incarnation: u64,
}

/// A summary's quantiles as (quantile, value) pairs, with the stamp of the push that set them.
pub type Quantiles = (Stamp, Vec<(f64, f64)>);

/// A series' numbers: `[v]` for a counter, gauge or untyped value; `[count, sum]` for a
/// summary; `[count, sum, cumulative bucket counts...]` for a histogram, whose bucket upper
/// bounds are `bounds` (empty for the other types). Counts are kept as `f64`: exact up to 2^53.
#[derive(Debug, Clone, PartialEq)]
pub struct Value {
    pub bounds: Vec<f64>,
    pub sums: Vec<f64>,
}

impl Value {
    /// Whether `other` can be added to this value (same buckets, same length).
    pub fn same_shape(&self, other: &Value) -> bool {
        self.sums.len() == other.sums.len() && bits_eq(&self.bounds, &other.bounds)
    }

    pub fn add(&mut self, other: &Value) {
        for (a, b) in self.sums.iter_mut().zip(&other.sums) {
            *a += b;
        }
    }

    /// A total order on values, only to break ties deterministically.
    fn tie_break(&self, other: &Value) -> Ordering {
        bits(&self.bounds)
            .cmp(bits(&other.bounds))
            .then_with(|| bits(&self.sums).cmp(bits(&other.sums)))
    }
}

fn bits(v: &[f64]) -> impl Iterator<Item = u64> + '_ {
    v.iter().map(|x| x.to_bits())
}

fn bits_eq(a: &[f64], b: &[f64]) -> bool {
    a.len() == b.len() && bits(a).eq(bits(b))
}

/// One node's increments to a series since `epoch` (the series' reset it added on top of);
/// `seq` counts its updates within that epoch.
#[derive(Debug, Clone, PartialEq)]
pub struct Partial {
    pub epoch: Stamp,
    pub seq: u64,
    pub value: Value,
}

#[derive(Debug, Clone, PartialEq, Default)]
pub struct Series {
    /// A replaced value (a gauge, `clearmode="replace"` or `"family"`): it starts a new epoch.
    pub base: Option<(Stamp, Value)>,
    pub partials: VecMap<PartialId, Partial>,
    /// A summary's quantiles: those of the newest push (quantiles cannot be added up). Boxed:
    /// only summaries have them, and every series would carry the room otherwise.
    pub quantiles: Option<Box<Quantiles>>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Family {
    pub typ: (Stamp, MetricType),
    /// Interned (`family::intern`): the store's families share it.
    pub help: (Stamp, Arc<str>),
    /// `clearmode="family"`: series older than this no longer count.
    pub reset: Stamp,
    pub series: VecMap<Labels, Series>,
}

/// An idempotency key's register: the push carrying it was added (`live`), or added and then
/// taken back because it was answered 503 (`retract`), so that a retry is added again. `at` is
/// the version of that write, and the newest one wins; `until` is the Unix ms up to which a
/// retry is recognised (and the register kept, so a withdrawal outlives the copies it beats).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Seen {
    pub at: u64,
    pub until: u64,
    pub live: bool,
}

/// The whole state of an aggregating group.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct AggState {
    /// The group's last reset (DELETE): nothing older counts.
    pub reset: Stamp,
    /// By name, interned (`family::intern`): the store's families share it.
    pub families: VecMap<Arc<str>, Family>,
    /// Idempotency keys, each with its register.
    pub seen: BTreeMap<String, Seen>,
}

impl Series {
    /// The reset the series counts from, given the family's and group's (`floor`).
    pub fn epoch(&self, floor: Stamp) -> Stamp {
        match &self.base {
            Some((s, _)) if *s > floor => *s,
            _ => floor,
        }
    }

    /// The value whose shape the exposed value takes (the first contributor that still counts:
    /// the base, then partials by id), without adding anything up.
    pub fn shape(&self, floor: Stamp) -> Option<&Value> {
        let epoch = self.epoch(floor);
        match &self.base {
            Some((s, v)) if *s == epoch => Some(v),
            _ => self
                .partials
                .values()
                .find(|p| p.epoch == epoch)
                .map(|p| &p.value),
        }
    }

    /// The exposed value: the live base plus every live partial of the same shape (the first
    /// contributor, base then partials by id, decides the shape; a partial of another shape can
    /// only come from two nodes accepting different buckets concurrently and is left out).
    pub fn value(&self, floor: Stamp) -> Option<Value> {
        let epoch = self.epoch(floor);
        let mut acc: Option<Value> = match &self.base {
            Some((s, v)) if *s == epoch => Some(v.clone()),
            _ => None,
        };
        for p in self.partials.values().filter(|p| p.epoch == epoch) {
            match &mut acc {
                None => acc = Some(p.value.clone()),
                Some(a) if a.same_shape(&p.value) => a.add(&p.value),
                Some(_) => {}
            }
        }
        acc
    }

    /// The live quantiles of a summary.
    pub fn live_quantiles(&self, floor: Stamp) -> Option<&[(f64, f64)]> {
        match self.quantiles.as_deref() {
            Some((s, q)) if *s >= self.epoch(floor) => Some(q),
            _ => None,
        }
    }

    fn merge(&mut self, other: &Series) {
        merge_lww(&mut self.base, &other.base, |a, b| a.tie_break(b));
        if let Some(theirs) = other.quantiles.as_deref() {
            let flat = |q: &[(f64, f64)]| {
                q.iter()
                    .flat_map(|(a, b)| [a.to_bits(), b.to_bits()])
                    .collect::<Vec<_>>()
            };
            // Last writer wins, as `merge_lww`; equal stamps by the values.
            let take = match self.quantiles.as_deref() {
                None => true,
                Some(mine) => {
                    theirs.0.cmp(&mine.0).then_with(|| flat(&theirs.1).cmp(&flat(&mine.1)))
                        == Ordering::Greater
                }
            };
            if take {
                self.quantiles = other.quantiles.clone();
            }
        }
        for (id, p) in other.partials.iter() {
            match self.partials.get_mut(id) {
                None => {
                    self.partials.insert(*id, p.clone());
                }
                Some(mine) => {
                    let order = (p.epoch, p.seq)
                        .cmp(&(mine.epoch, mine.seq))
                        .then_with(|| p.value.tie_break(&mine.value));
                    if order == Ordering::Greater {
                        *mine = p.clone();
                    }
                }
            }
        }
    }

    /// Drops what no longer counts under `floor`; false when nothing is left.
    fn prune(&mut self, floor: Stamp) -> bool {
        let epoch = self.epoch(floor);
        if matches!(&self.base, Some((s, _)) if *s < epoch) {
            self.base = None;
        }
        self.partials.retain(|_, p| p.epoch >= epoch);
        if matches!(self.quantiles.as_deref(), Some((s, _)) if *s < epoch) {
            self.quantiles = None;
        }
        self.base.is_some() || !self.partials.is_empty() || self.quantiles.is_some()
    }
}

/// Last writer wins by stamp; equal stamps (the same write seen twice) by `tie`.
fn merge_lww<T: Clone>(
    mine: &mut Option<(Stamp, T)>,
    theirs: &Option<(Stamp, T)>,
    tie: impl Fn(&T, &T) -> Ordering,
) {
    if let Some((ts, tv)) = theirs {
        let take = match mine {
            None => true,
            Some((ms, mv)) => ts.cmp(ms).then_with(|| tie(tv, mv)) == Ordering::Greater,
        };
        if take {
            *mine = Some((*ts, tv.clone()));
        }
    }
}

impl Family {
    pub fn new(stamp: Stamp, typ: MetricType, help: Arc<str>) -> Self {
        Family {
            typ: (stamp, typ),
            help: (stamp, help),
            reset: Stamp::default(),
            series: VecMap::default(),
        }
    }

    /// The reset its series count from: the family's or the group's, whichever is newer.
    pub fn floor(&self, group_reset: Stamp) -> Stamp {
        self.reset.max(group_reset)
    }

    /// Whether any series still counts.
    pub fn is_live(&self, group_reset: Stamp) -> bool {
        let floor = self.floor(group_reset);
        self.series.values().any(|s| s.shape(floor).is_some())
    }

    fn merge(&mut self, other: &Family) {
        if other.typ > self.typ {
            self.typ = other.typ;
        }
        if other.help > self.help {
            self.help = other.help.clone();
        }
        self.reset = self.reset.max(other.reset);
        for (labels, s) in other.series.iter() {
            match self.series.get_mut(labels) {
                Some(mine) => mine.merge(s),
                None => {
                    self.series.insert(labels.clone(), s.clone());
                }
            }
        }
    }
}

impl AggState {
    /// Merges `other` into this state (the CRDT join), then drops what no longer counts.
    pub fn merge(&mut self, other: &AggState) {
        self.reset = self.reset.max(other.reset);
        for (name, f) in other.families.iter() {
            match self.families.get_mut(name) {
                Some(mine) => mine.merge(f),
                None => {
                    self.families.insert(name.clone(), f.clone());
                }
            }
        }
        for (key, theirs) in &other.seen {
            let mine = self.seen.entry(key.clone()).or_insert(*theirs);
            *mine = (*mine).max(*theirs);
        }
        self.prune();
    }

    /// Drops partials, values and series that a reset made irrelevant: nothing dropped could
    /// count again, since resets only move forward. A family is kept even when none of its
    /// series is left: its type and help are registers that another copy's live series may
    /// still need, and a merge must not depend on which copy dropped them first.
    pub fn prune(&mut self) {
        let group_reset = self.reset;
        for f in self.families.values_mut() {
            let floor = f.floor(group_reset);
            f.series.retain(|_, s| s.prune(floor));
        }
    }

    /// A fixed hash of the state (anti-entropy compares it, `GroupSnapshot::agg_digest`): two
    /// states with the same digest hold the same writes. Never 0 (0 means no state).
    pub fn digest(&self) -> u64 {
        let mut h = xxhash_rust::xxh3::Xxh3::new();
        let stamp = |h: &mut xxhash_rust::xxh3::Xxh3, s: Stamp| {
            h.update(&s.version.to_le_bytes());
            h.update(&s.origin.to_le_bytes());
        };
        let text = |h: &mut xxhash_rust::xxh3::Xxh3, t: &str| {
            h.update(&(t.len() as u64).to_le_bytes());
            h.update(t.as_bytes());
        };
        let value = |h: &mut xxhash_rust::xxh3::Xxh3, v: &Value| {
            h.update(&(v.bounds.len() as u64).to_le_bytes());
            for x in v.bounds.iter().chain(&v.sums) {
                h.update(&x.to_bits().to_le_bytes());
            }
        };
        stamp(&mut h, self.reset);
        for (name, f) in self.families.iter() {
            text(&mut h, name);
            stamp(&mut h, f.typ.0);
            h.update(&(f.typ.1 as i32).to_le_bytes());
            stamp(&mut h, f.help.0);
            text(&mut h, &f.help.1);
            stamp(&mut h, f.reset);
            for (labels, s) in f.series.iter() {
                h.update(b"s");
                h.update(&(labels.len() as u64).to_le_bytes());
                for (n, v) in labels {
                    text(&mut h, n);
                    text(&mut h, v);
                }
                // A tag before each optional part, so that parts cannot be mistaken for others.
                if let Some((st, v)) = &s.base {
                    h.update(b"b");
                    stamp(&mut h, *st);
                    value(&mut h, v);
                }
                for (id, p) in s.partials.iter() {
                    h.update(b"p");
                    h.update(&id.node.to_le_bytes());
                    h.update(&id.incarnation.to_le_bytes());
                    stamp(&mut h, p.epoch);
                    h.update(&p.seq.to_le_bytes());
                    value(&mut h, &p.value);
                }
                if let Some((st, q)) = s.quantiles.as_deref() {
                    h.update(b"q");
                    stamp(&mut h, *st);
                    for (a, b) in q {
                        h.update(&a.to_bits().to_le_bytes());
                        h.update(&b.to_bits().to_le_bytes());
                    }
                }
            }
        }
        for (key, seen) in &self.seen {
            text(&mut h, key);
            h.update(&seen.at.to_le_bytes());
            h.update(&seen.until.to_le_bytes());
            h.update(&[u8::from(seen.live)]);
        }
        h.digest().max(1)
    }

    /// The newest stamp anywhere in the state (a node's clock moves past it, so its own next
    /// writes are newer than everything it holds).
    pub fn newest_stamp(&self) -> Stamp {
        let mut newest = self.reset;
        for f in self.families.values() {
            newest = newest.max(f.typ.0).max(f.help.0).max(f.reset);
            for s in f.series.values() {
                if let Some((st, _)) = &s.base {
                    newest = newest.max(*st);
                }
                if let Some((st, _)) = s.quantiles.as_deref() {
                    newest = newest.max(*st);
                }
                for p in s.partials.values() {
                    newest = newest.max(p.epoch);
                }
            }
        }
        newest
    }
}

#[cfg(test)]
#[path = "state_tests.rs"]
mod tests;
