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
            if let Some((t, _)) = opts.reserved.get(name) {
                if t != f.typ {
                    return Err(type_conflict(name, f.typ, t));
                }
            }
            if let Some(e) = self.index.get(name) {
                // A group holding `name` is one of its members.
                let others = e.count.saturating_sub(usize::from(replaced(name)));
                if others > 0 && e.typ != f.typ {
                    // Upstream's gatherer merges the groups' families and refuses the first
                    // metric whose type is not the merged family's: named here as the
                    // pushed family's first metric against the stored type.
                    let example = f.to_metric_family();
                    let labels = example
                        .metric
                        .first()
                        .map(prepare::describe_labels)
                        .unwrap_or_default();
                    return Err(format!(
                        "collected metric {name:?} {{ {labels} }} is not a {}",
                        e.typ.as_str_name()
                    ));
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
}

fn type_conflict(name: &str, new: MetricType, existing: MetricType) -> String {
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
