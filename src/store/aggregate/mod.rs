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
pub(super) mod registry;
pub mod state;
pub mod vec_map;



use self::apply::{materialize, Ctx, Incoming, Undo};
use self::registry::Entry;
use self::state::AggState;
use super::error::PushError;
use super::key::GroupKey;
use super::prepare::{prepare_push, Validation};
use super::Store;

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

impl Store {
    /// Adds a decoded push into the aggregating group `key` at `now` (Unix seconds). A retry
    /// with an `idempotency_key` already added within the window is acknowledged without being
    /// added again. A refused push leaves the group's state and its metrics as they were (only
    /// the failure time moves, as for any push refused for its content).
    pub fn aggregate(
        &self,
        key: GroupKey,
        incoming: Incoming<'_>,
        idempotency_key: Option<&str>,
        v: &Validation,
        ttl: f64,
        now: f64,
    ) -> Result<Aggregated, PushError> {
        let now_ms = (now * 1000.0) as u64;
        // An expired group not yet swept is gone: its state too, so this push starts anew.
        self.expire(now);
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
            let outcome = self.aggregate_locked(&key, entry, incoming, v, ttl, now);
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
        incoming: Incoming<'_>,
        v: &Validation,
        ttl: f64,
        now: f64,
    ) -> Result<(), PushError> {
        let refused = |e: PushError| {
            if matches!(e, PushError::Invalid(_)) {
                self.record_failure(key, now);
            }
            e
        };
        if incoming.has_timestamps() {
            return Err(refused(PushError::Invalid(
                "pushed metrics must not have timestamps".into(),
            )));
        }
        let ctx = Ctx {
            stamp: self.aggregates.stamp(),
            partial: self.aggregates.partial,
        };
        let mut undo = Undo::default();
        apply::apply(&mut entry.state, incoming, ctx, v, &mut undo).map_err(refused)?;
        let stored = prepare_push(key.clone(), materialize(&entry.state), true, v)
            .map_err(refused)
            .and_then(|mut p| {
                p.aggregating = true;
                p.ttl = ttl;
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
        let mut out: Vec<(GroupKey, AggState)> = self
            .aggregates
            .entries()
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
    /// False, and nothing installed, when the group is not held: the file's groups were taken
    /// before its states, so a group first pushed in between has a state and no group, and
    /// its pushes came after the snapshot anyway.
    pub fn install_aggregate(
        &self,
        key: GroupKey,
        state: AggState,
        v: &Validation,
    ) -> Result<bool, PushError> {
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
                return Ok(false);
            }
            guard.state = state;
            return Ok(true);
        }
    }

    /// Ends every aggregation (a wipe): each group's lock is taken, so no writer is halfway.
    pub(super) fn end_all_aggregates(&self) {
        for e in self.aggregates.drain() {
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
