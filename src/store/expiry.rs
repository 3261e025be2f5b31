//! Groups that expire (`--push.group-ttl`, the `Pushgate-Group-TTL` request header): a group
//! whose last successful push is older than its TTL is no longer served, accepted or counted
//! by the consistency check, and the next sweep removes it. The moment is worked out from the
//! group's replicated push time, so every node holding a copy drops it at the same moment, and
//! an expired copy is expired wherever it is: no file, replica, hand-off or anti-entropy
//! transfer brings it back (each refuses it, `GroupSnapshot::expired`).

use std::sync::atomic::Ordering;

use super::index::Inner;
use super::key::GroupKey;
use super::Store;

impl Inner {
    /// Lowers the earliest expiry to `at` after a write that gave a group one.
    pub(super) fn note_expiry(&mut self, at: Option<f64>) {
        if let Some(at) = at {
            if self.next_expiry > 0.0 {
                self.next_expiry = self.next_expiry.min(at);
            }
        }
    }

    /// Removes `key` when it has expired at `now`; true when it was removed.
    pub(super) fn expire_one(&mut self, key: &GroupKey, now: f64) -> bool {
        let due = self
            .groups
            .get(key)
            .and_then(|g| g.expires_at())
            .is_some_and(|at| at <= now);
        due && self.delete(key)
    }

    /// The keys of the groups expired at `now`, and the earliest expiry of the others.
    fn due(&self, now: f64) -> (Vec<GroupKey>, f64) {
        let mut next = f64::INFINITY;
        let mut due = Vec::new();
        for g in self.groups.values() {
            match g.expires_at() {
                Some(at) if at <= now => due.push((*g.key).clone()),
                Some(at) => next = next.min(at),
                None => {}
            }
        }
        (due, next)
    }
}

impl Store {
    /// Removes every group expired at `now` (an aggregating group's state with it); returns
    /// how many were removed. Cheap when nothing is due (one read of the earliest expiry), so
    /// every read and write calls it first: a group leaves the scrape and the consistency
    /// check at its expiry, and the periodic sweep only catches a store nobody uses.
    pub fn expire(&self, now: f64) -> usize {
        if f64::from_bits(self.next_expiry.load(Ordering::Acquire)) > now {
            return 0;
        }
        let due = self.inner.read().due(now).0;
        let removed = due.iter().filter(|key| self.expire_key(key, now)).count();
        let mut inner = self.inner.write();
        inner.next_expiry = inner.due(now).1;
        self.next_expiry
            .store(inner.next_expiry.to_bits(), Ordering::Release);
        drop(inner);
        self.expired_total
            .fetch_add(removed as u64, Ordering::Relaxed);
        removed
    }

    /// Groups removed because their TTL ran out, since the start.
    pub fn expired_total(&self) -> u64 {
        self.expired_total
            .load(Ordering::Relaxed)
    }

    /// Removes `key` if it has expired at `now`, ending its aggregation like a DELETE would
    /// (without a tombstone: every copy expires at the same moment on its own).
    fn expire_key(&self, key: &GroupKey, now: f64) -> bool {
        self.plain_write(
            key,
            || self.write(|inner| inner.expire_one(key, now), |&removed| removed),
            |&removed| removed,
        )
    }
}

#[cfg(test)]
#[path = "expiry_tests.rs"]
mod tests;
