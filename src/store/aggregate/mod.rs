//! Aggregating groups (`/aggregate/metrics/job/...`): pushes add up instead of replacing.
//!
//! Each aggregating group keeps its state (`state::AggState`, a CRDT) here, beside the store;
//! the store holds what the group exposes, worked out from the state after every push
//! (`apply::materialize`) and written as an ordinary PUT, so the consistency check, scrapes,
//! `/api/v1/metrics`, the status page and persistence treat it like any group. Files: `state`
//! (the CRDT and its merge), `apply` (a push added in, the state turned into families),
//! `codec` (the state's protobuf form, checked on the way in), `wire` (the state written
//! straight into that form, for peers' copies and the file).
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
pub mod wire;

use std::sync::Arc;



use self::apply::{materialize, Ctx, Incoming, Increment, Undo};
use self::registry::Pending;
use self::state::{AggState, Seen, Stamp};
use super::group::{GroupSnapshot, Stamps};
use super::merge;
use super::error::PushError;
use super::key::GroupKey;
use super::{prepare_push, PreparedPush, Validation};
use super::Store;

/// How long a retry with the same `Idempotency-Key` is recognised (and not added again).
pub const IDEMPOTENCY_WINDOW_MS: u64 = 10 * 60 * 1000;
/// Idempotency keys remembered per group; beyond it the oldest are forgotten first.
pub const MAX_IDEMPOTENCY_KEYS: usize = 10_000;
/// The longest `Idempotency-Key` accepted.
pub const MAX_IDEMPOTENCY_KEY_BYTES: usize = 256;

/// An aggregating push, decoded, as the store adds it.
#[derive(Clone, Copy)]
pub struct AggregateWrite<'a> {
    pub incoming: Incoming<'a>,
    pub idempotency_key: Option<&'a str>,
    pub v: &'a Validation,
    /// The group's TTL from this push on, in seconds (0: never).
    pub ttl: f64,
    /// Unix seconds.
    pub now: f64,
}

/// Whether `k` is a usable `Idempotency-Key`: 1 to `MAX_IDEMPOTENCY_KEY_BYTES` visible ASCII
/// characters (checked on the request and again on a key a peer forwards).
pub fn valid_idempotency_key(k: &str) -> bool {
    !k.is_empty() && k.len() <= MAX_IDEMPOTENCY_KEY_BYTES && k.bytes().all(|b| b.is_ascii_graphic())
}

/// What an aggregating push did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Aggregated {
    /// Added into the group.
    Added,
    /// A retry of a push already added (same `Idempotency-Key` within the window): acknowledged
    /// without adding it again.
    Repeated,
}

/// How an aggregating push is versioned: by a single node's own counters, or by a cluster
/// primary's clock (`clock`), whose versions order every write of the group across nodes.
#[derive(Clone, Copy)]
pub enum Versioning<'c> {
    Local,
    Cluster(&'c (dyn Fn() -> u64 + Sync)),
}

/// What a cluster primary needs to take an added push back (`Store::retract_aggregate`) when
/// fewer than R nodes took it: the push is answered 503, and must then not count.
#[derive(Debug)]
pub struct Taken {
    increments: Vec<Increment>,
    /// The push's idempotency key, pending until the push is answered.
    pending: Option<Pending>,
    /// The group's push time before the push: the withdrawal leaves it there.
    push_time_before: f64,
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
        let write = AggregateWrite {
            incoming,
            idempotency_key,
            v,
            ttl,
            now,
        };
        self.aggregate_as(key, write, Versioning::Local)
            .map(|(done, _)| done)
    }

    /// `aggregate` on a cluster's primary: versioned by `clock`, and returning what
    /// `retract_aggregate` needs to take the push back (None for a repeated push, which added
    /// nothing).
    pub fn aggregate_versioned(
        &self,
        key: GroupKey,
        write: AggregateWrite<'_>,
        clock: &(dyn Fn() -> u64 + Sync),
    ) -> Result<(Aggregated, Option<Taken>), PushError> {
        self.aggregate_as(key, write, Versioning::Cluster(clock))
    }

    fn aggregate_as(
        &self,
        key: GroupKey,
        w: AggregateWrite<'_>,
        versioning: Versioning<'_>,
    ) -> Result<(Aggregated, Option<Taken>), PushError> {
        let now_ms = (w.now * 1000.0) as u64;
        // An expired group not yet swept is gone: its state too, so this push starts anew.
        self.expire(w.now);
        loop {
            let slot = self.aggregates.entry(&key);
            let mut guard = slot.lock();
            if !guard.live {
                continue;
            }
            let entry = &mut *guard;
            if let Some(k) = w.idempotency_key {
                if entry.pending.iter().any(|p| p == k) {
                    // Its first push may still be taken back (fewer than R nodes took it so
                    // far): neither a repeat nor to be added again until that is known.
                    return Err(PushError::Unavailable(
                        "a push with this Idempotency-Key is being added right now (not yet held by enough cluster nodes); retry with the same key".to_owned(),
                    ));
                }
                if entry
                    .state
                    .seen
                    .get(k)
                    .is_some_and(|s| s.live && s.until > now_ms)
                {
                    return Ok((Aggregated::Repeated, None));
                }
            }
            let fresh = entry.state.families.is_empty();
            let state = Arc::make_mut(&mut entry.state);
            if fresh {
                if let Versioning::Cluster(_) = versioning {
                    // A new aggregation on a cluster counts from after everything this node
                    // knows of the group (its last plain write or delete): partials of an
                    // earlier aggregation that a lagging copy still carries never count again.
                    state.reset = state.reset.max(Stamp {
                        version: self.held_version(&key),
                        origin: 0,
                    });
                }
            }
            // Only a cluster's primary may take the push back (`retract_aggregate`).
            let push_time_before = match versioning {
                Versioning::Local => 0.0,
                Versioning::Cluster(_) => self.group_push_time(&key),
            };
            let outcome = self.aggregate_locked(&key, state, &w, versioning);
            let (at, mut undo) = match outcome {
                Ok(done) => done,
                Err(e) => {
                    if fresh {
                        // Nothing was ever added: the group does not aggregate.
                        self.aggregates.end(&key, &mut guard);
                    }
                    return Err(e);
                }
            };
            if let Some(k) = w.idempotency_key {
                remember(state, k, at, now_ms);
            }
            state.prune();
            let taken = matches!(versioning, Versioning::Cluster(_)).then(|| Taken {
                increments: undo.increments(),
                pending: w
                    .idempotency_key
                    .map(|k| Pending::add(&slot, &mut entry.pending, k)),
                push_time_before,
            });
            return Ok((Aggregated::Added, taken));
        }
    }

    /// Adds the push into `state` and stores what the state then exposes; returns the write's
    /// version and what it changed (with its increments on a cluster). On an error the state is
    /// as it was.
    fn aggregate_locked(
        &self,
        key: &GroupKey,
        state: &mut AggState,
        w: &AggregateWrite<'_>,
        versioning: Versioning<'_>,
    ) -> Result<(u64, Undo), PushError> {
        let refused = |e: PushError| {
            if matches!(e, PushError::Invalid(_)) {
                match versioning {
                    Versioning::Local => self.record_failure(key, w.now),
                    Versioning::Cluster(clock) => {
                        self.record_failure_versioned(key, w.now, clock);
                    }
                }
            }
            e
        };
        if w.incoming.has_timestamps() {
            return Err(refused(PushError::Invalid(
                "pushed metrics must not have timestamps".into(),
            )));
        }
        let partial = self.aggregates.partial();
        let (stamp, version) = match versioning {
            Versioning::Local => (self.aggregates.stamp(), None),
            Versioning::Cluster(clock) => {
                let version = clock();
                let stamp = Stamp {
                    version,
                    origin: partial.node,
                };
                (stamp, Some(version))
            }
        };
        let ctx = Ctx { stamp, partial };
        let mut local = match versioning {
            Versioning::Local => Undo::default(),
            Versioning::Cluster(_) => Undo::recording(),
        };
        apply::apply(state, w.incoming, ctx, w.v, &mut local).map_err(refused)?;
        let stored = state_push(key, state, w.v, w.ttl, version.is_some())
            .map_err(refused)
            // The store records a failure of its consistency check itself.
            .and_then(|p| self.push_stamped(p, w.now, || version));
        if let Err(e) = stored {
            local.revert(state);
            return Err(e);
        }
        Ok((stamp.version, local))
    }

    /// Takes back a push `aggregate_versioned` added, because fewer than R nodes took it: its
    /// increments are subtracted from this node's partial as a new update of it, its
    /// idempotency key (if any) is withdrawn so that a retry is added, and the group is stored
    /// again under a new version with its push time as it was before the push. Returns the
    /// group's copy to send to the nodes that took the push (None: the group no longer
    /// aggregates, so nothing of the push counts anyway).
    pub fn retract_aggregate(
        &self,
        key: &GroupKey,
        taken: Taken,
        now: f64,
        clock: &(dyn Fn() -> u64 + Sync),
    ) -> Option<GroupSnapshot> {
        let entry = self.aggregates.get(key)?;
        let mut guard = entry.lock();
        if !guard.live {
            return None;
        }
        let version = clock();
        let now_ms = (now * 1000.0) as u64;
        // Worked on a copy, kept only once the store took it, so the state always matches what
        // the group exposes.
        let mut next = (*guard.state).clone();
        let state = &mut next;
        apply::retract(state, self.aggregates.partial(), &taken.increments);
        if let Some(k) = taken.pending.as_ref().map(|p| p.key().to_owned()) {
            let until = state
                .seen
                .get(&k)
                .map_or(0, |s| s.until)
                .max(now_ms.saturating_add(IDEMPOTENCY_WINDOW_MS));
            state.seen.insert(
                k,
                Seen {
                    at: version,
                    until,
                    live: false,
                },
            );
        }
        let ttl = self.group(key).map_or(0.0, |g| g.ttl);
        let v = self.aggregates.validation.read().clone();
        // The push time stays where it was; a group the push created gets the time of its
        // withdrawal rather than none.
        let push_time = if taken.push_time_before > 0.0 {
            taken.push_time_before
        } else {
            now
        };
        // What the state exposes was stored before with the push in it, so without it it
        // passes the same checks; a failure here leaves the push counted (state and group as
        // they were), and the caller's answer (503) is then wrong only in that direction.
        let stored = state_push(key, state, &v, ttl, true)
            .and_then(|p| self.push_stamped(p, push_time, || Some(version)));
        if let Err(e) = stored {
            tracing::warn!(group = %key, error = %e, "an aggregating push answered 503 could not be taken back");
            return None;
        }
        guard.state = Arc::new(next);
        // The copy for the nodes that took the push carries the state (as `transfer_copy`).
        let mut copy = self.group(key)?;
        copy.agg = Some(guard.state.clone());
        Some(copy)
    }

    /// The newest version this node holds of `key`: the group's, or its tombstone's (0: none).
    fn held_version(&self, key: &GroupKey) -> u64 {
        let inner = self.inner.read();
        match inner.groups.get(key) {
            Some(g) => g.version,
            None => inner.tombstones.get(key).copied().unwrap_or(0),
        }
    }

    /// The group's push time (0: not held).
    fn group_push_time(&self, key: &GroupKey) -> f64 {
        self.inner.read().groups.get(key).map_or(0.0, |g| g.push_time)
    }

    /// Merges a copy of an aggregating group (or any copy of a group this node holds as
    /// aggregating) from a peer: the group's registers merge as for any copy
    /// (`merge::merge`), its state merges as the CRDT it is (`AggState::merge`) under the
    /// group's lock, and the group then exposes what the merged state sums to. A copy that
    /// loses to a newer plain write or delete ends the aggregation here. Returns whether
    /// anything changed.
    pub(crate) fn apply_aggregate_copy(&self, mut g: GroupSnapshot) -> bool {
        let v = self.aggregates.validation.read().clone();
        let mut theirs = g.agg.take();
        let carries_state = theirs.is_some();
        loop {
            let entry = self.aggregates.entry(&g.key);
            let mut guard = entry.lock();
            if !guard.live {
                continue;
            }
            let mut ends = false;
            let mut merged_state = None;
            let changed = self.write(
                |inner| {
                    let held = inner.state(&g.key);
                    let merged = inner.merged_copy(&held, &g);
                    if !merged.aggregating || merge::is_gone(&merged) {
                        ends = true;
                        return inner.install(&held, merged, &self.opts);
                    }
                    // The join is commutative: this node's state merged into the copy's, which
                    // a copy from the wire owns alone (not cloned).
                    let mut state = match theirs.take() {
                        Some(t) => {
                            let mut s = Arc::try_unwrap(t).unwrap_or_else(|t| (*t).clone());
                            s.merge(&guard.state);
                            s
                        }
                        None => (*guard.state).clone(),
                    };
                    // A delete the state has not seen yet (it travelled as the group's
                    // tombstone).
                    state.reset = state.reset.max(Stamp {
                        version: merged.stamps.cleared,
                        origin: 0,
                    });
                    state.prune();
                    let digest = state.digest();
                    let families = if carries_state && digest == g.agg_digest {
                        // The copy's state is the merge's result (the common case: a replica of
                        // the primary's newest write), so what the group exposes is the copy's
                        // families, checked on their way in: not worked out and encoded again.
                        g.families.iter().map(|(f, _)| f.clone()).collect()
                    } else {
                        match prepare_push((*g.key).clone(), materialize(&state), true, &v) {
                            Ok(p) => p.families,
                            Err(e) => {
                                tracing::warn!(group = %g.key, error = %e, "refused a peer's copy of an aggregating group");
                                return None;
                            }
                        }
                    };
                    let version = merged.stamps.push;
                    let families: Vec<_> =
                        families.into_iter().map(|f| (f, merged.push_time)).collect();
                    let copy = GroupSnapshot {
                        stamps: Stamps {
                            families: vec![version; families.len()],
                            ..merged.stamps.clone()
                        },
                        families,
                        agg_digest: digest,
                        ..merged
                    };
                    let installed = inner.install(&held, copy, &self.opts);
                    if installed != Some(false) {
                        merged_state = Some(state);
                    }
                    installed
                },
                |changed| *changed == Some(true),
            );
            if let Some(state) = merged_state {
                guard.state = Arc::new(state);
            } else if ends || guard.state.families.is_empty() {
                self.aggregates.end(&g.key, &mut guard);
            }
            return changed == Some(true);
        }
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

    /// Makes this store a cluster node's: its aggregating pushes add to the partial named by
    /// `node` (the node's id hashed), and states copied from peers are checked with `v`.
    pub fn join_cluster(&self, node: u64, v: Validation) {
        self.aggregates.set_node(node);
        *self.aggregates.validation.write() = v;
    }

    /// A copy of the group `key` in the form in which it travels to a peer: an aggregating
    /// group's with its state attached, both taken under the group's lock (every write of an
    /// aggregating group holds it), so the state is the one the copy exposes.
    pub fn transfer_copy(&self, key: &GroupKey) -> Option<GroupSnapshot> {
        let Some(entry) = self.aggregates.get(key) else {
            return self.group(key);
        };
        let e = entry.lock();
        let mut copy = self.group(key)?;
        if e.live && copy.aggregating {
            copy.agg = Some(e.state.clone());
        }
        Some(copy)
    }

    /// `copy` (from `snapshot`) in the form in which it travels to a peer (`transfer_copy`).
    pub fn for_transfer(&self, copy: GroupSnapshot) -> Option<GroupSnapshot> {
        if copy.aggregating {
            return self.transfer_copy(&copy.key);
        }
        Some(copy)
    }

    /// Every aggregating group's state, sorted by key (for the persistence file).
    pub fn aggregate_states(&self) -> Vec<(GroupKey, AggState)> {
        let mut out: Vec<(GroupKey, AggState)> = self
            .aggregates
            .entries()
            .into_iter()
            .filter_map(|(k, e)| {
                let e = e.lock();
                e.live.then(|| (k, (*e.state).clone()))
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
            guard.state = Arc::new(state);
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

/// Records an applied idempotency key (written at version `at`), forgetting expired ones and,
/// beyond the bound, the oldest.
fn remember(state: &mut AggState, key: &str, at: u64, now_ms: u64) {
    state.seen.retain(|_, s| s.until > now_ms);
    let register = Seen {
        at,
        until: now_ms.saturating_add(IDEMPOTENCY_WINDOW_MS),
        live: true,
    };
    state.seen.insert(key.to_owned(), register);
    if state.seen.len() > MAX_IDEMPOTENCY_KEYS {
        let mut by_age: Vec<(u64, String)> =
            state.seen.iter().map(|(k, s)| (s.until, k.clone())).collect();
        by_age.sort();
        for (_, k) in by_age.into_iter().take(state.seen.len() - MAX_IDEMPOTENCY_KEYS) {
            state.seen.remove(&k);
        }
    }
}

/// What `state` exposes, as the PUT that stores it: the group marked aggregating, with the
/// state's digest when a cluster's anti-entropy compares it (`digest`).
fn state_push(
    key: &GroupKey,
    state: &AggState,
    v: &Validation,
    ttl: f64,
    digest: bool,
) -> Result<PreparedPush, PushError> {
    let mut p = prepare_push(key.clone(), materialize(state), true, v)?;
    p.aggregating = true;
    p.agg_digest = if digest { state.digest() } else { 0 };
    p.ttl = ttl;
    Ok(p)
}

#[cfg(test)]
#[path = "tests.rs"]
mod tests;
