//! One metric family of one group, kept pre-encoded: the text lines and the protobuf `Metric`
//! messages of its metrics in exposition order, the sort key of each metric, and the identity
//! hash of each series for the consistency index.
//!
//! Nothing else about a pushed family is kept in memory; the protobuf bytes are decoded again
//! only for the rare readers that need the data model (`/api/v1/metrics`, the status page).
//!
//! `layout` is the byte layout and the handle (`StoredFamily`), `builder` assembles blocks,
//! `encode` turns metrics into a family, `wire` is the node-to-node form and its decoding
//! (`peer_check` the exposition check of what a peer sends, `proto_check` the walk of its
//! protobuf part),
//! `intern` shares names and help texts, `hash` the series identities.

mod builder;
mod encode;
mod hash;
mod intern;
mod layout;
mod peer_check;
mod proto_check;
mod wire;

pub use builder::BlockBuilder;
pub use encode::{grouping_pairs, write_sort_key, EncodeMetric, LabelRef, Merged};
pub use hash::{series_hash, series_hash_of};
pub use intern::intern;
pub use layout::{encode_family_header, prefetch_range, MetricChunk, StoredFamily};
pub use peer_check::{Expect, NOT_VALID_EXPOSITION};
pub use wire::SharedBlock;

#[cfg(test)]
mod tests;
