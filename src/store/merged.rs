//! Rendering a set of groups that did not come from one store: a cluster node's merged view of
//! the groups collected from every member.

use std::sync::Arc;

use super::render::{Format, RenderStats};
use super::{GroupSnapshot, ReservedNames, Store, StoreOptions, StoredFamily};

/// Writes one exposition of `groups` (distinct keys) merged with `own`, exactly as a store
/// holding those groups would render it.
///
/// The groups are restored into a temporary store (no consistency check: they were accepted by
/// their primaries) and rendered by the ordinary path, so conflicts between groups that raced on
/// different primaries are resolved the same deterministic way as in one store (first group in
/// key order keeps a name's type; the rest is dropped and counted in `inconsistent_dropped`).
/// Restoring costs O(series) for indexing, the encodings are shared (`Arc`), not copied.
pub fn render_groups(
    groups: &[GroupSnapshot],
    reserved: ReservedNames,
    own: &[Arc<StoredFamily>],
    format: Format,
    out: &mut Vec<u8>,
) -> RenderStats {
    let store = Store::new(StoreOptions {
        consistency_check: false,
        max_groups: usize::MAX,
        reserved,
    });
    let mut dropped = 0;
    for g in groups {
        if store.restore(g.clone()).is_err() {
            // Two keys equal once `instance=""` is added (raced on different primaries): the
            // first in key order stays.
            dropped += 1;
        }
    }
    let mut stats = store.render(format, own, out);
    stats.inconsistent_dropped += dropped;
    stats
}
