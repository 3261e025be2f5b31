//! Aggregating groups (`/aggregate/metrics/job/...`): pushes add up instead of replacing.
//!
//! Each aggregating group keeps its state (`state::AggState`, a CRDT) here, beside the store;
//! the store holds what the group exposes, worked out from the state after every push
//! (`apply::materialize`) and written as an ordinary PUT, so the consistency check, scrapes,
//! `/api/v1/metrics`, the status page and persistence treat it like any group. Files: `state`
//! (the CRDT and its merge), `apply` (a push added in, the state turned into families),
//! `codec` (the state's protobuf form, checked on the way in).
//!
//! Writes to one aggregating group are serialised by the group's own lock, held while its new
//! state is worked out, encoded and stored, so the stored group always matches the state. A
//! plain PUT, POST or DELETE of the group takes that lock too and ends the aggregation: the
//! group is then an ordinary one, and a later `/aggregate` push starts from zero.

pub mod apply;
pub mod codec;
pub mod state;

use std::hash::BuildHasher;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;

use parking_lot::Mutex;

use self::apply::{has_timestamps, materialize, Ctx, Undo};
use self::state::{AggState, PartialId, Stamp};
use super::error::PushError;
use super::key::GroupKey;
use super::prepare::{prepare_push, Validation};
use super::Store;
use crate::exposition::MetricFamily;
use crate::FastMap;

/// How long a retry with the same `Idempotency-Key` is recognised (and not added again).
pub const IDEMPOTENCY_WINDOW_MS: u64 = 10 * 60 * 1000;
/// Idempotency keys remembered per group; beyond it the oldest are forgotten first.
pub const MAX_IDEMPOTENCY_KEYS: usize = 10_000;
/// The longest `Idempotency-Key` accepted.
pub const MAX_IDEMPOTENCY_KEY_BYTES: usize = 256;

/// What an aggregating push did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Aggregated {
    /// Added into the group.
    Added,
    /// A retry of a push already added (same `Idempotency-Key` within the window): acknowledged
    /// without adding it again.
    Repeated,
}

/// One aggregating group's state and whether it still aggregates (a plain write or a delete
/// ends it; a writer that waited for the lock then starts over).
#[derive(Debug, Default)]
struct Entry {
    state: AggState,
    live: bool,
}

/// The aggregating groups of a store.
#[derive(Debug)]
pub(super) struct Aggregates {
    groups: Mutex<FastMap<GroupKey, Arc<Mutex<Entry>>>>,
    /// Groups in `groups`: lets a plain write skip the map when nothing aggregates.
    count: AtomicUsize,
    /// Last stamp's version: Unix ms << 16 | counter, strictly increasing.
    clock: AtomicU64,
    /// This process's partial: node 0 (a single node), an incarnation drawn at start, so a
    /// restart never continues an older partial's sequence.
    partial: PartialId,
}

impl Default for Aggregates {
    fn default() -> Self {
        let incarnation = std::collections::hash_map::RandomState::new()
            .hash_one((std::process::id(), crate::time::unix_millis()));
        Aggregates {
            groups: Mutex::default(),
            count: AtomicUsize::new(0),
            clock: AtomicU64::new(0),
            partial: PartialId {
                node: 0,
                incarnation,
            },
        }
    }
}

impl Aggregates {
    fn stamp(&self) -> Stamp {
        let physical = crate::time::unix_millis() << 16;
        let next = |prev: u64| physical.max(prev.saturating_add(1));
        let prev = self
            .clock
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |p| Some(next(p)))
            .unwrap_or_else(|p| p);
        Stamp {
            version: next(prev),
            origin: self.partial.node,
        }
    }

    /// Moves the clock past every stamp of `state` (loaded from a file), so this process's
    /// writes are newer than what it loaded.
    fn observe(&self, state: &AggState) {
        self.clock
            .fetch_max(state.newest_stamp().version, Ordering::AcqRel);
    }

    fn entry(&self, key: &GroupKey) -> Arc<Mutex<Entry>> {
        let mut groups = self.groups.lock();
        let entry = groups.entry(key.clone()).or_insert_with(|| {
            self.count.fetch_add(1, Ordering::AcqRel);
            Arc::new(Mutex::new(Entry {
                state: AggState::default(),
                live: true,
            }))
        });
        entry.clone()
    }

    /// Whether any group aggregates.
    pub(super) fn any(&self) -> bool {
        self.count.load(Ordering::Acquire) > 0
    }

    fn get(&self, key: &GroupKey) -> Option<Arc<Mutex<Entry>>> {
        if !self.any() {
            return None;
        }
        self.groups.lock().get(key).cloned()
    }

    /// Forgets `key`'s state; its lock must be held (`entry`), and is marked dead so a writer
    /// waiting for it starts over.
    fn end(&self, key: &GroupKey, entry: &mut Entry) {
        entry.live = false;
        if self.groups.lock().remove(key).is_some() {
            self.count.fetch_sub(1, Ordering::AcqRel);
        }
    }
}

impl Store {
    /// Adds a decoded push into the aggregating group `key` at `now` (Unix seconds). A retry
    /// with an `idempotency_key` already added within the window is acknowledged without being
    /// added again. A refused push leaves the group's state and its metrics as they were (only
    /// the failure time moves, as for any push refused for its content).
    pub fn aggregate(
        &self,
        key: GroupKey,
        families: &[MetricFamily],
        idempotency_key: Option<&str>,
        v: &Validation,
        now: f64,
    ) -> Result<Aggregated, PushError> {
        let now_ms = (now * 1000.0) as u64;
        loop {
            let entry = self.aggregates.entry(&key);
            let mut guard = entry.lock();
            if !guard.live {
                continue;
            }
            let entry = &mut *guard;
            if let Some(k) = idempotency_key {
                if entry.state.seen.get(k).is_some_and(|until| *until > now_ms) {
                    return Ok(Aggregated::Repeated);
                }
            }
            let outcome = self.aggregate_locked(&key, entry, families, v, now);
            if let Err(e) = outcome {
                if entry.state == AggState::default() {
                    // Nothing was ever added: the group does not aggregate.
                    self.aggregates.end(&key, entry);
                }
                return Err(e);
            }
            if let Some(k) = idempotency_key {
                remember(&mut entry.state, k, now_ms);
            }
            entry.state.prune();
            return Ok(Aggregated::Added);
        }
    }

    fn aggregate_locked(
        &self,
        key: &GroupKey,
        entry: &mut Entry,
        families: &[MetricFamily],
        v: &Validation,
        now: f64,
    ) -> Result<(), PushError> {
        let refused = |e: PushError| {
            if matches!(e, PushError::Invalid(_)) {
                self.record_failure(key, now);
            }
            e
        };
        if has_timestamps(families) {
            return Err(refused(PushError::Invalid(
                "pushed metrics must not have timestamps".into(),
            )));
        }
        let ctx = Ctx {
            stamp: self.aggregates.stamp(),
            partial: self.aggregates.partial,
        };
        let mut undo = Undo::default();
        apply::apply(&mut entry.state, families, ctx, v, &mut undo).map_err(refused)?;
        let stored = prepare_push(key.clone(), materialize(&entry.state), true, v)
            .map_err(refused)
            .and_then(|mut p| {
                p.aggregating = true;
                // The store records a failure of its consistency check itself.
                self.push_stamped(p, now, || None)
            });
        if let Err(e) = stored {
            undo.revert(&mut entry.state);
            return Err(e);
        }
        Ok(())
    }

    /// Runs a plain write (`op`) of `key`; when the group aggregates, under its lock, and a
    /// write that `ends` says succeeded ends the aggregation.
    pub(super) fn plain_write<R>(
        &self,
        key: &GroupKey,
        op: impl FnOnce() -> R,
        ends: impl FnOnce(&R) -> bool,
    ) -> R {
        let Some(entry) = self.aggregates.get(key) else {
            return op();
        };
        let mut guard = entry.lock();
        let outcome = op();
        if guard.live && ends(&outcome) {
            self.aggregates.end(key, &mut guard);
        }
        outcome
    }

    /// Every aggregating group's state, sorted by key (for the persistence file).
    pub fn aggregate_states(&self) -> Vec<(GroupKey, AggState)> {
        let entries: Vec<(GroupKey, Arc<Mutex<Entry>>)> = self
            .aggregates
            .groups
            .lock()
            .iter()
            .map(|(k, e)| (k.clone(), e.clone()))
            .collect();
        let mut out: Vec<(GroupKey, AggState)> = entries
            .into_iter()
            .filter_map(|(k, e)| {
                let e = e.lock();
                e.live.then(|| (k, e.state.clone()))
            })
            .collect();
        out.sort_by(|a, b| a.0.cmp(&b.0));
        out
    }

    /// Makes the held group `key` an aggregating group with `state` (loaded from a file, with
    /// the group's exposed families). The state is checked like a push of what it exposes.
    pub fn install_aggregate(
        &self,
        key: GroupKey,
        state: AggState,
        v: &Validation,
    ) -> Result<(), PushError> {
        prepare_push(key.clone(), materialize(&state), true, v)?;
        self.aggregates.observe(&state);
        loop {
            let entry = self.aggregates.entry(&key);
            let mut guard = entry.lock();
            if !guard.live {
                continue;
            }
            let marked = self.write(|inner| inner.mark_aggregating(&key), |_| false);
            if !marked {
                self.aggregates.end(&key, &mut guard);
                return Err(PushError::Malformed(format!(
                    "aggregation state for group {key}, which is not held"
                )));
            }
            guard.state = state;
            return Ok(());
        }
    }

    /// Ends every aggregation (a wipe): each group's lock is taken, so no writer is halfway.
    pub(super) fn end_all_aggregates(&self) {
        let entries: Vec<Arc<Mutex<Entry>>> = {
            let mut groups = self.aggregates.groups.lock();
            self.aggregates.count.store(0, Ordering::Release);
            groups.drain().map(|(_, e)| e).collect()
        };
        for e in entries {
            e.lock().live = false;
        }
    }
}

/// Records an applied idempotency key, forgetting expired ones and, beyond the bound, the
/// oldest.
fn remember(state: &mut AggState, key: &str, now_ms: u64) {
    state.seen.retain(|_, until| *until > now_ms);
    state
        .seen
        .insert(key.to_owned(), now_ms.saturating_add(IDEMPOTENCY_WINDOW_MS));
    if state.seen.len() > MAX_IDEMPOTENCY_KEYS {
        let mut by_age: Vec<(u64, String)> =
            state.seen.iter().map(|(k, u)| (*u, k.clone())).collect();
        by_age.sort();
        for (_, k) in by_age.into_iter().take(state.seen.len() - MAX_IDEMPOTENCY_KEYS) {
            state.seen.remove(&k);
        }
    }
}

#[cfg(test)]
#[path = "tests.rs"]
mod tests;
