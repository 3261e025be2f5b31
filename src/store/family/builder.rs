//! Assembles the block of one or more families (see [`StoredFamily`]): heads and bytes gather
//! in per-thread buffers that stay in cache, and only the finished block is a new allocation.

use std::sync::Arc;

use bytes::Bytes;

use super::hash::layout_of;
use super::layout::{offset, Entry, FamilyHead, StoredFamily, ENTRY_BYTES};
use crate::exposition::MetricType;

/// Collects the encodings of families into one block (see [`StoredFamily`]). The bytes gather
/// in a per-thread buffer that stays in cache; only the finished block is a new allocation.
pub struct BlockBuilder {
    bytes: Vec<u8>,
    heads: Vec<FamilyHead>,
}

thread_local! {
    static BLOCK_BYTES: std::cell::Cell<Vec<u8>> = const { std::cell::Cell::new(Vec::new()) };
    static BLOCK_HEADS: std::cell::Cell<Vec<FamilyHead>> = const { std::cell::Cell::new(Vec::new()) };
}

impl Default for BlockBuilder {
    fn default() -> Self {
        let mut bytes = BLOCK_BYTES.take();
        bytes.clear();
        let mut heads = BLOCK_HEADS.take();
        heads.clear();
        BlockBuilder { bytes, heads }
    }
}

impl Drop for BlockBuilder {
    fn drop(&mut self) {
        // Hand the buffers back for the next block (large ones are let go).
        if self.bytes.capacity() <= 1 << 20 {
            BLOCK_BYTES.set(std::mem::take(&mut self.bytes));
        }
        if self.heads.capacity() <= 1 << 10 {
            self.heads.clear();
            BLOCK_HEADS.set(std::mem::take(&mut self.heads));
        }
    }
}

impl BlockBuilder {
    /// Appends a family: `entries`, then the `data_len` bytes `fill` appends (text, keys,
    /// protobuf).
    #[allow(clippy::too_many_arguments)]
    pub(super) fn add(
        &mut self,
        name: Arc<str>,
        help: Arc<str>,
        typ: MetricType,
        entries: &[Entry],
        text_len: usize,
        proto_at: usize,
        data_len: usize,
        fill: impl FnOnce(&mut Vec<u8>),
    ) {
        let start = self.bytes.len();
        self.bytes.reserve(entries.len() * ENTRY_BYTES + data_len);
        for e in entries {
            e.write(&mut self.bytes);
        }
        fill(&mut self.bytes);
        debug_assert_eq!(
            self.bytes.len() - start,
            entries.len() * ENTRY_BYTES + data_len
        );
        self.heads.push(FamilyHead {
            name,
            help,
            typ,
            entries_at: offset(start),
            data_at: offset(start + entries.len() * ENTRY_BYTES),
            end: offset(self.bytes.len()),
            count: offset(entries.len()),
            text_len: offset(text_len),
            proto_at: offset(proto_at),
            layout: layout_of(entries),
        });
    }

    /// The block, one handle per family in the order they were added.
    pub fn finish(self) -> Vec<StoredFamily> {
        let mut out = Vec::with_capacity(self.heads.len());
        self.finish_into(&mut out);
        out
    }

    /// Appends the block's handles (see [`BlockBuilder::finish`]) to `out`.
    pub fn finish_into(mut self, out: &mut Vec<StoredFamily>) {
        let n = self.heads.len();
        if n == 0 {
            return;
        }
        let block = self.block();
        out.extend((0..n).map(|i| StoredFamily {
            block: block.clone(),
            idx: offset(i),
        }));
    }

    /// The only family added.
    pub(super) fn finish_one(mut self) -> StoredFamily {
        debug_assert_eq!(self.heads.len(), 1);
        StoredFamily {
            block: self.block(),
            idx: 0,
        }
    }

    fn block(&mut self) -> triomphe::ThinArc<Bytes, FamilyHead> {
        triomphe::ThinArc::from_header_and_iter(
            Bytes::copy_from_slice(&self.bytes),
            self.heads.drain(..),
        )
    }
}
