//! The orders a scrape keeps between renders: a store's member order per family (valid while
//! the family's layout is unchanged) and a merged view's (valid while its members' signature is).

use std::collections::HashMap;
use std::sync::Arc;

/// Member order of each family, valid while the family's layout sequence number is unchanged.
#[derive(Default)]
pub struct RenderCache {
    pub(super) layouts: HashMap<Arc<str>, (u64, Arc<[u64]>)>,
}

impl RenderCache {
    pub fn clear(&mut self) {
        self.layouts.clear();
    }
}

/// Member order of each family of merged views (a cluster node's), kept from one merged render
/// to the next: a merged view is built afresh for every scrape, so the order is remembered
/// under a signature of the family's members (each member's group key and series layout, type
/// and emptiness, in key order) instead of a layout number. A family whose signature is
/// unchanged is copied in the remembered order without reading any member's sort keys.
#[derive(Default)]
pub struct MergedOrders {
    /// The orders found or used by the last merged render: positions in the family's member
    /// list. Replaced whole by every render, so families gone are forgotten.
    pub(super) last: parking_lot::Mutex<Arc<MergedOrderMap>>,
}

pub(super) type MergedOrderMap = HashMap<Arc<str>, (u64, Arc<[u32]>), foldhash::fast::RandomState>;

impl MergedOrders {
    #[cfg(any(test, feature = "testsuite"))]
    /// How many families' orders are remembered.
    pub fn len(&self) -> usize {
        self.last.lock().len()
    }

    #[cfg(any(test, feature = "testsuite"))]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}
