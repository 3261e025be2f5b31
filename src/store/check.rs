//! The consistency check: would the store still be a valid exposition after a push? The same
//! rules as client_golang's registry (one type per name, no series twice, no histogram or
//! summary suffix collisions), in O(size of the push) thanks to the indexes.

use super::error::PushError;
use super::family;
use super::group::Group;
use super::index::Inner;
use super::key::GroupKey;
use super::options::StoreOptions;
use super::prepare::{self, PreparedPush};
use crate::exposition::MetricType;

impl Inner {
    /// The consistency check: would the store be valid after applying `p`? O(size of `p`).
    pub(super) fn check(&self, p: &PreparedPush, opts: &StoreOptions) -> Result<(), String> {
        self.check_group(p, opts, self.groups.get(&p.key))
    }

    /// [`Self::check`] with the push's group (if it exists) already looked up.
    pub(super) fn check_group(
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
                .is_some_and(|(old, _, _, _)| old.typ == f.typ && old.same_series(f))
            {
                continue;
            }
            let first_labels = || {
                f.to_metric_family()
                    .metric
                    .first()
                    .map(prepare::describe_labels)
                    .unwrap_or_default()
            };
            if let Some(e) =
                self.family_conflict(opts, name, f.typ, holds(name), &effective, first_labels)
            {
                return Err(e);
            }
            // Re-pushing the same series into the same group (new values only) cannot collide:
            // every one of them is already owned by this group.
            let same_series = group
                .and_then(|g| g.families.get(name))
                .is_some_and(|(old, _, _, _)| old.same_series(f));
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

    /// The conflict a family `name` of type `typ`, pushed to a group that `holds` it or not,
    /// makes with the other names of the store after the push (`effective` gives a name's type
    /// there): its type against the type the name has in other groups (or as a name the
    /// gateway owns), the metric named by `labels`, or a histogram or summary suffix collision.
    /// Upstream's message for it.
    pub(super) fn family_conflict(
        &self,
        opts: &StoreOptions,
        name: &str,
        typ: MetricType,
        holds: bool,
        effective: &dyn Fn(&str) -> Option<MetricType>,
        labels: impl FnOnce() -> String,
    ) -> Option<String> {
        if let Some((t, _)) = opts.reserved.get(name) {
            if t != typ {
                return Some(reserved_conflict(name, typ, t));
            }
        }
        if let Some(e) = self.index.get(name) {
            // A group holding `name` is one of its members; the push replaces its family.
            let others = e.count.saturating_sub(usize::from(holds));
            if others > 0 && e.typ != typ {
                // Upstream's gatherer merges the groups' families and refuses the first
                // metric whose type is not the merged family's: named here as the pushed
                // family's metric against the stored type.
                return Some(format!(
                    "collected metric {name:?} {{ {} }} is not a {}",
                    labels(),
                    e.typ.as_str_name()
                ));
            }
        }
        // Histogram and summary suffixes (client_golang's checkSuffixCollisions).
        for suffix in ["_count", "_sum", "_bucket"] {
            if let Some(base) = name.strip_suffix(suffix) {
                match effective(base) {
                    Some(MetricType::Summary) if suffix != "_bucket" => {
                        return Some(format!(
                            "collected metric named {name:?} collides with previously collected summary named {base:?}"
                        ))
                    }
                    Some(MetricType::Histogram) => {
                        return Some(format!(
                            "collected metric named {name:?} collides with previously collected histogram named {base:?}"
                        ))
                    }
                    _ => {}
                }
            }
        }
        if matches!(typ, MetricType::Summary | MetricType::Histogram) {
            let suffixes: &[&str] = if typ == MetricType::Histogram {
                &["_count", "_sum", "_bucket"]
            } else {
                &["_count", "_sum"]
            };
            for s in suffixes {
                let other = format!("{name}{s}");
                if effective(&other).is_some() {
                    return Some(format!(
                        "collected histogram or summary named {name:?} collides with previously collected metric named {other:?}"
                    ));
                }
            }
        }
        None
    }
}

impl super::Store {
    /// The conflict a push to `key` (a PUT when `replace_all`) that repeats a series of its
    /// family `name` (of type `typ`, the series named by `labels`) is refused for instead of
    /// the repeat, if that family conflicts with the store: upstream's registry skips a metric
    /// of the wrong type, or a family whose name collides, before it looks for repeats. Only
    /// asked on that refusal ([`super::prepare::RepeatConflict`]).
    pub fn repeat_conflict(
        &self,
        key: &GroupKey,
        replace_all: bool,
        name: &str,
        typ: MetricType,
        labels: &str,
    ) -> Option<String> {
        if !self.opts.consistency_check {
            return None;
        }
        // As the check does: a group past its TTL is no conflict.
        self.expire(crate::time::unix_seconds());
        let inner = self.inner.read();
        let group = inner.groups.get(key);
        let holds = |n: &str| group.is_some_and(|g| g.families.contains_key(n));
        // The store's names after the push, as far as the store tells them: the push's other
        // families are not known here (their own conflicts are the check's).
        let effective = |n: &str| -> Option<MetricType> {
            if n == name {
                return Some(typ);
            }
            let replaced = holds(n) && replace_all;
            match inner.index.get(n) {
                Some(e) if e.count > usize::from(replaced) => Some(e.typ),
                _ => self.opts.reserved.get(n).map(|(t, _)| t),
            }
        };
        inner.family_conflict(&self.opts, name, typ, holds(name), &effective, || {
            labels.to_owned()
        })
    }
}

fn reserved_conflict(name: &str, new: MetricType, existing: MetricType) -> String {
    format!(
        "gathered metric family {name} has type {} but should have {}",
        new.as_str_name(),
        existing.as_str_name()
    )
}

/// Two keys that expose the same `push_time_seconds` series: upstream treats a key without
/// `instance` as `instance=""`, so `{job="a"}` and `{instance="",job="a"}` cannot both be held.
pub(super) fn key_collision(key: &GroupKey, existing: &GroupKey) -> PushError {
    PushError::Invalid(format!(
        "grouping key {key} collides with existing group {existing}: both expose the same push_time_seconds series (a key without instance is treated as instance=\"\")"
    ))
}
