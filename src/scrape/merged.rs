//! Rendering a set of groups that did not come from one store: a cluster node's merged view of
//! the groups collected from every member.

use crate::store::render::{Format, RenderStats};
use crate::store::{GroupSnapshot, MergedOrders, ReservedNames, StoredFamily};

/// Writes one exposition of `groups` merged with `own`, exactly as a store holding those
/// groups would render it (see `store::render::render_snapshots`: no temporary store, no indexing;
/// the encodings are shared, not copied). Conflicts between groups that raced on different
/// primaries are resolved the same deterministic way as in one store: the first group in key
/// order keeps a name's type, the rest is dropped and counted in `inconsistent_dropped`.
pub fn render_groups(
    groups: &[GroupSnapshot],
    reserved: ReservedNames,
    own: &[StoredFamily],
    format: Format,
    orders: Option<&MergedOrders>,
    out: &mut Vec<u8>,
) -> RenderStats {
    render_groups_chunked(
        groups,
        &reserved,
        own,
        format,
        orders,
        usize::MAX,
        &mut |chunk| {
            if out.is_empty() {
                *out = chunk;
            } else {
                out.extend_from_slice(&chunk);
            }
        },
    )
}

/// Like [`render_groups`], handing the exposition on in pieces of about `chunk_size` bytes as
/// they are rendered (a scrape is streamed, never built in one growing buffer). `orders`: the
/// member orders remembered from the previous merged render, used and updated.
pub use crate::store::render::render_snapshots as render_groups_chunked;
