//! What a store is configured with: the consistency check, the group limit and the names the
//! gateway exposes itself.

use std::collections::HashMap;

use super::prepare::Limits;
use crate::exposition::MetricType;

/// Families the gateway exposes itself; pushes may not give these names another type.
#[derive(Debug, Clone, Default)]
pub struct ReservedNames {
    types: HashMap<String, (MetricType, String), foldhash::fast::RandomState>,
}

impl ReservedNames {
    pub fn new(entries: impl IntoIterator<Item = (String, MetricType, String)>) -> Self {
        ReservedNames {
            types: entries.into_iter().map(|(n, t, h)| (n, (t, h))).collect(),
        }
    }
    pub fn get(&self, name: &str) -> Option<(MetricType, &str)> {
        self.types.get(name).map(|(t, h)| (*t, h.as_str()))
    }
}

#[derive(Debug, Clone)]
pub struct StoreOptions {
    pub consistency_check: bool,
    pub max_groups: usize,
    pub reserved: ReservedNames,
    /// The TTL (seconds, 0: never) of a group a refused push creates (`--push.group-ttl`).
    pub group_ttl: f64,
}

impl Default for StoreOptions {
    fn default() -> Self {
        StoreOptions {
            consistency_check: true,
            max_groups: Limits::default().max_groups,
            reserved: ReservedNames::default(),
            group_ttl: 0.0,
        }
    }
}
