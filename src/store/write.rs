//! The writes under the store's lock: a push, a refused push's failure time, a delete and a
//! group restored whole. One path serves a single node (versions from the store's sequence
//! number) and a cluster (versions stamped by the group's primary).

use super::check::key_collision;
use super::error::PushError;
use super::family;
use super::group::{FamilyChange, Group, GroupSnapshot};
use super::index::Inner;
use super::key::GroupKey;
use super::options::StoreOptions;
use super::prepare::PreparedPush;

/// What the caller learns about an accepted write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WriteOutcome {
    pub version: u64,
}

impl Inner {
    /// Applies a push at `now`, versioned by `stamp` (a cluster primary's clock) or else by the
    /// store's sequence number. A refused push changes no family; only the group's failure time
    /// moves (the group is created, as upstream does, when that keeps the store valid).
    pub(super) fn push(
        &mut self,
        p: PreparedPush,
        now: f64,
        opts: &StoreOptions,
        stamp: Option<u64>,
    ) -> Result<WriteOutcome, PushError> {
        // An expired group not yet swept is gone: the push starts a new one.
        self.expire_one(&p.key, now);
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
                return Err(key_collision(&p.key, existing));
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
        self.room_for(exists, opts)?;
        let seq = self.next_seq();
        let version = stamp.unwrap_or(seq);
        let tombstone = self.take_tombstone(&p.key, stamp);
        let gid = match existing_id {
            Some(id) => id,
            None => self.ensure_group(&p.key),
        };
        let group = self.groups.get_mut(&p.key).expect("group was just ensured");
        group.inherit(tombstone);
        let key = group.key.clone();
        // (old, new) pairs: a family replaced, removed (PUT) or added.
        let mut changes: Vec<FamilyChange> = Vec::with_capacity(p.families.len() + 4);
        if p.replace_all {
            group
                .families
                .replace_all(p.families.iter().map(|f| (f, now, version)), &mut changes);
            group.reset = version;
        } else {
            group
                .families
                .replace_some(&p.families, now, version, &mut changes);
        }
        group.last_push_successful = true;
        group.aggregating = p.aggregating;
        group.agg_digest = p.agg_digest;
        group.ttl = p.ttl;
        group.version = version;
        group.push_stamp = version;
        group.ttl_stamp = version;
        group.retime(now, group.failure_time, &mut changes);
        let expiry = group.expires_at();
        self.note_expiry(expiry);
        // The families added or kept are the pushed ones in order, then the two timing ones.
        let names = p.families.iter().map(|f| &f.name);
        self.apply_changes(gid, &key, changes, seq, names);
        Ok(WriteOutcome { version })
    }

    /// Starts loading, all at once, what a write to `group` reads next: its families' heads and
    /// their index slots. In a large store none of it is in cache, and each is found only after
    /// a load that depends on the one before (group, family list, head, slot), so without this
    /// the misses come one after the other, several of each kind per push.
    fn prefetch_write(&self, group: &Group) {
        let held = &group.families.0;
        family::prefetch_range(held.as_ptr().cast(), std::mem::size_of_val(held.as_slice()));
        let timing = group.timing.iter().zip(group.timing_slots);
        for (name, (f, slot)) in held
            .iter()
            .map(|(n, (f, _, slot, _))| (&**n, (f, *slot)))
            .chain(timing.map(|(f, slot)| (&*f.name, (f, slot))))
        {
            f.prefetch();
            if let Some(member) = self.index.get(name).and_then(|e| e.members.get(slot)) {
                family::prefetch_range(std::ptr::from_ref(member).cast(), 1);
            }
        }
    }

    /// Records a refused push at `now` on the group (creating it), versioned like a push.
    pub(super) fn mark_failure(
        &mut self,
        key: &GroupKey,
        now: f64,
        opts: &StoreOptions,
        stamp: Option<u64>,
    ) -> Result<(), PushError> {
        let exists = self.groups.contains_key(key);
        self.room_for(exists, opts)?;
        let seq = self.next_seq();
        let version = stamp.unwrap_or(seq);
        let tombstone = self.take_tombstone(key, stamp);
        let gid = self.ensure_group(key);
        let group = self.groups.get_mut(key).expect("group was just ensured");
        group.inherit(tombstone);
        if !exists {
            group.ttl = opts.group_ttl;
            group.ttl_stamp = version;
        }
        group.last_push_successful = false;
        group.version = version;
        group.failure_stamp = version;
        let mut changes = Vec::with_capacity(2);
        group.retime(group.push_time, now, &mut changes);
        let expiry = group.expires_at();
        let gkey = group.key.clone();
        self.note_expiry(expiry);
        self.apply_changes(gid, &gkey, changes, seq, std::iter::empty());
        Ok(())
    }

    /// Removes a group and its families from the indexes; false when it is not held.
    pub(super) fn delete(&mut self, key: &GroupKey) -> bool {
        let Some(group) = self.groups.remove(key) else {
            return false;
        };
        let seq = self.next_seq();
        self.normalized.remove(&key.normalized());
        let timing = group.timing.iter().zip(group.timing_slots);
        for (fam, slot) in group
            .families
            .values()
            .map(|(f, _, s, _)| (f, *s))
            .chain(timing)
        {
            self.unindex(group.id, slot, fam, seq);
        }
        true
    }

    /// Makes a group exactly `g` (a persistence file's or a replica's copy), version included.
    pub(super) fn restore(
        &mut self,
        g: GroupSnapshot,
        opts: &StoreOptions,
    ) -> Result<(), PushError> {
        if let Some(existing) = self.normalized.get(&g.key.normalized()) {
            if **existing != *g.key {
                return Err(PushError::Invalid(format!(
                    "group {} collides with group {existing}",
                    g.key
                )));
            }
        }
        if g.stamps.families.len() != g.families.len() {
            return Err(PushError::Invalid(format!(
                "group {} has {} families but {} family versions",
                g.key,
                g.families.len(),
                g.stamps.families.len()
            )));
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
        self.room_for(self.groups.contains_key(&*g.key), opts)?;
        let seq = self.next_seq();
        let gid = self.ensure_group(&g.key);
        let group = self
            .groups
            .get_mut(&*g.key)
            .expect("group was just ensured");
        group.last_push_successful = g.last_push_successful;
        group.aggregating = g.aggregating;
        group.agg_digest = g.agg_digest;
        group.ttl = g.ttl;
        group.version = g.version;
        group.reset = g.stamps.reset;
        group.cleared = g.stamps.cleared;
        group.push_stamp = g.stamps.push;
        group.failure_stamp = g.stamps.failure;
        group.ttl_stamp = g.stamps.ttl;
        let key = group.key.clone();
        // The group's families become exactly the snapshot's: pair each with the family of the
        // same name it replaces, so unchanged label sets cost no index traffic (a replica
        // receiving a new version of a group is the common case).
        let mut changes: Vec<FamilyChange> = Vec::with_capacity(g.families.len() + 4);
        group.families.replace_all(
            g.families
                .iter()
                .zip(&g.stamps.families)
                .map(|((f, t), v)| (f, *t, *v)),
            &mut changes,
        );
        group.retime(g.push_time, g.failure_time, &mut changes);
        let expiry = group.expires_at();
        self.note_expiry(expiry);
        self.seq = self.seq.max(g.version);
        // Removals first, so a series moving between two families of the group is re-owned
        // (stable: the additions keep their order, the snapshot's families then the timing).
        changes.sort_by_key(|(_, n)| n.is_some());
        let names = g.families.iter().map(|(f, _)| &f.name);
        self.apply_changes(gid, &key, changes, seq, names);
        Ok(())
    }

    /// The tombstone of a group a cluster write (`stamp` given) is about to create or change:
    /// taken out of the tombstones, and returned so that the group carries the delete on
    /// (`Group::inherit`): a copy of the group from before the delete must not bring back what
    /// it removed when it is merged in later.
    fn take_tombstone(&mut self, key: &GroupKey, stamp: Option<u64>) -> Option<u64> {
        stamp.and_then(|_| self.tombstones.remove(key))
    }

    /// Marks a held group as aggregating (its state was loaded); false when it is not held.
    pub(super) fn mark_aggregating(&mut self, key: &GroupKey) -> bool {
        match self.groups.get_mut(key) {
            Some(g) => {
                g.aggregating = true;
                true
            }
            None => false,
        }
    }

    /// Refuses a new group (`exists` false) when the store holds the maximum.
    #[inline]
    fn room_for(&self, exists: bool, opts: &StoreOptions) -> Result<(), PushError> {
        if !exists && self.groups.len() >= opts.max_groups {
            return Err(too_many_groups(opts));
        }
        Ok(())
    }
}

fn too_many_groups(opts: &StoreOptions) -> PushError {
    PushError::LimitExceeded(format!(
        "the gateway holds the maximum of {} groups (--push.max-groups); delete groups or raise the limit",
        opts.max_groups
    ))
}
