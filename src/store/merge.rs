//! Merging two copies of a group (a replica, a hand-off, anti-entropy, a node back from a
//! partition): each part of the group keeps its newest write, by the version its write was
//! stamped with (`Stamps`), so no write one copy holds is lost to a copy that missed it.
//!
//! - each family: last writer wins (its version; equal versions, which only two primaries
//!   stamping in the same millisecond can give, are ordered by push time and then bytes);
//! - the push time (with the aggregation flag), the failure time and the TTL: last writer wins,
//!   each by the version of the write that set it;
//! - `reset`, the newest PUT or DELETE: families older than it are gone (a PUT replaces the
//!   group); `cleared`, the newest DELETE: the times older than it are gone too (a DELETE
//!   leaves nothing). A tombstone is the copy with a reset and nothing else.
//!
//! Every part is a maximum (or a filter by the maximum of the resets), so the merge is
//! commutative, associative and idempotent (property-tested below): copies can meet in any
//! order, any number of times, and end the same.

use std::sync::Arc;

use super::family::StoredFamily;
use super::group::{digest_parts, GroupSnapshot, Stamps};
use super::key::GroupKey;

/// The state a DELETE at `version` leaves: nothing, and a reset that hides every older write.
pub fn tombstone(key: Arc<GroupKey>, version: u64) -> GroupSnapshot {
    GroupSnapshot {
        key,
        families: Vec::new(),
        push_time: 0.0,
        failure_time: 0.0,
        last_push_successful: false,
        aggregating: false,
        ttl: 0.0,
        version,
        stamps: Stamps {
            reset: version,
            cleared: version,
            ..Stamps::default()
        },
        timing: None,
        agg: None,
        agg_digest: 0,
    }
}

/// Whether a merged copy holds nothing: neither a push nor a failure since its last delete.
/// Such a copy is the tombstone of its `stamps.cleared`.
pub fn is_gone(g: &GroupSnapshot) -> bool {
    g.stamps.push == 0 && g.stamps.failure == 0
}

/// Whether any part of a copy was written at or before `version` (a wipe at `version` would
/// remove it): only such a copy needs merging with the wipe, which otherwise leaves it as it is
/// (and its digest with it).
pub fn written_by(g: &GroupSnapshot, version: u64) -> bool {
    let s = &g.stamps;
    [s.push, s.failure, s.ttl]
        .into_iter()
        .any(|v| v != 0 && v <= version)
        || s.families.iter().any(|&v| v <= version)
}

/// The copy holding the newest write of every part of `a` and `b` (copies of the same group).
pub fn merge(a: &GroupSnapshot, b: &GroupSnapshot) -> GroupSnapshot {
    let (sa, sb) = (&a.stamps, &b.stamps);
    let reset = sa.reset.max(sb.reset);
    let cleared = sa.cleared.max(sb.cleared);
    // A register written at or before the last delete is gone.
    let live = |stamp: u64| stamp > cleared;
    // An aggregating group's state digest goes with its push register; its state itself is
    // merged by the store (`Store::apply_aggregate_copy`), which sets both.
    let (push, push_time, aggregating, agg_digest) = newest(
        (sa.push, a.push_time.to_bits(), a.aggregating, a.agg_digest),
        (sb.push, b.push_time.to_bits(), b.aggregating, b.agg_digest),
    );
    let (push, push_time, aggregating, agg_digest) = if live(push) {
        (push, f64::from_bits(push_time), aggregating, agg_digest)
    } else {
        (0, 0.0, false, 0)
    };
    let (failure, failure_time) = newest(
        (sa.failure, a.failure_time.to_bits()),
        (sb.failure, b.failure_time.to_bits()),
    );
    let (failure, failure_time) = if live(failure) {
        (failure, f64::from_bits(failure_time))
    } else {
        (0, 0.0)
    };
    let (ttl_stamp, ttl) = newest((sa.ttl, a.ttl.to_bits()), (sb.ttl, b.ttl.to_bits()));
    let (ttl_stamp, ttl) = if live(ttl_stamp) {
        (ttl_stamp, f64::from_bits(ttl))
    } else {
        (0, 0.0)
    };
    // A family is kept when written after the last reset (a PUT's own families carry its
    // version) and after the last delete.
    let kept = |v: u64| v >= reset && live(v);
    let mut families = Vec::with_capacity(a.families.len().max(b.families.len()));
    let mut versions = Vec::with_capacity(families.capacity());
    let mut left = a.families.iter().zip(&sa.families).peekable();
    let mut right = b.families.iter().zip(&sb.families).peekable();
    loop {
        let next = match (left.peek(), right.peek()) {
            (None, None) => break,
            (Some(_), None) => left.next(),
            (None, Some(_)) => right.next(),
            (Some(((fa, _), _)), Some(((fb, _), _))) => match fa.name.cmp(&fb.name) {
                std::cmp::Ordering::Less => left.next(),
                std::cmp::Ordering::Greater => right.next(),
                std::cmp::Ordering::Equal => {
                    let (x, y) = (left.next(), right.next());
                    x.zip(y).map(|(x, y)| newer_family(x, y))
                }
            },
        };
        if let Some(((f, at), &v)) = next {
            if kept(v) {
                families.push((f.clone(), *at));
                versions.push(v);
            }
        }
    }
    let stamps = Stamps {
        reset,
        cleared,
        push,
        failure,
        ttl: ttl_stamp,
        families: versions,
    };
    GroupSnapshot {
        key: a.key.clone(),
        families,
        push_time,
        failure_time,
        last_push_successful: push > failure,
        aggregating,
        ttl,
        version: stamps.newest(),
        stamps,
        timing: None,
        agg: None,
        agg_digest,
    }
}

/// The newer of two registers: by stamp, then by value (equal stamps from two nodes).
fn newest<T: Ord>(a: T, b: T) -> T {
    a.max(b)
}

type FamilyAt<'a> = (&'a (StoredFamily, f64), &'a u64);

/// The newer of two writes of one family: by version, then push time, then bytes.
fn newer_family<'a>(x: FamilyAt<'a>, y: FamilyAt<'a>) -> FamilyAt<'a> {
    let rank = |((f, at), v): FamilyAt<'a>| (*v, at.to_bits(), f.text(), f.proto_metrics());
    if rank(y) > rank(x) {
        y
    } else {
        x
    }
}

/// A fixed hash of what a copy holds, as its stamps name it: two copies with the same digest
/// hold the same writes (anti-entropy compares digests, not versions: a copy that merged in an
/// older family keeps its version but holds more).
pub fn digest(g: &GroupSnapshot) -> u64 {
    let s = &g.stamps;
    digest_parts(
        [g.version, s.reset, s.cleared, s.push, s.failure, s.ttl],
        [g.push_time, g.failure_time, g.ttl],
        g.agg_digest,
        g.families
            .iter()
            .zip(&s.families)
            .map(|((f, at), v)| (&*f.name, *v, *at)),
    )
}


#[cfg(test)]
mod tests;
