//! Hashes of series and of a family's series list, for the consistency index and the render
//! cache.

use super::layout::Entry;
use crate::exposition::Metric;

/// The `layout` of a list of entries.
pub(super) fn layout_of(entries: &[Entry]) -> u128 {
    hash_bytes(|buf| {
        for e in entries {
            buf.extend_from_slice(&e.series.to_le_bytes());
        }
    })
}

/// xxh3-128 of the bytes `fill` lays out in a reused per-thread buffer: one call to the hash
/// (the same value a streaming hasher gives for the same bytes, at a fraction of its cost when
/// they come as many short fields).
fn hash_bytes(fill: impl FnOnce(&mut Vec<u8>)) -> u128 {
    thread_local! {
        static BYTES: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
    }
    BYTES.with(|cell| {
        let mut buf = cell.borrow_mut();
        buf.clear();
        fill(&mut buf);
        xxhash_rust::xxh3::xxh3_128(&buf)
    })
}

/// Identity of a series: metric name and label pairs. 0xFF never occurs in UTF-8, so it
/// separates fields unambiguously.
pub fn series_hash(name: &str, metric: &Metric) -> u128 {
    series_hash_of(name, &metric.label_pairs().collect::<Vec<_>>())
}

/// [`series_hash`] of a metric whose label pairs are `labels`.
pub fn series_hash_of(name: &str, labels: &[(&str, &str)]) -> u128 {
    hash_bytes(|buf| {
        buf.extend_from_slice(name.as_bytes());
        buf.push(0xFF);
        for &(n, v) in labels {
            buf.extend_from_slice(n.as_bytes());
            buf.push(0xFF);
            buf.extend_from_slice(v.as_bytes());
            buf.push(0xFF);
        }
    })
}
