//! The byte layout of a stored family: a block (one reference-counted allocation) holds the
//! heads of one or more families and their bytes, and a `StoredFamily` is a handle on one
//! family of a block. Everything here reads what `BlockBuilder` laid out.

use std::sync::Arc;

use bytes::Bytes;
use prost::Message;

use crate::exposition::{MetricFamily, MetricType};

/// Where one metric's bytes are in the family's buffer. Entries are in exposition order; the
/// text lines and the sort keys are laid out in that order, the protobuf messages in push order
/// (which is what `/api/v1/metrics` shows, like upstream).
#[derive(Debug, Clone, Copy)]
pub(super) struct Entry {
    pub(super) text_end: u32,
    pub(super) key_end: u32,
    pub(super) proto_start: u32,
    pub(super) proto_len: u32,
    /// Identity of the series (name and label pairs), for the consistency index.
    pub(super) series: u128,
}

/// Bytes of one [`Entry`] at the head of a family's buffer (little endian, in field order).
pub(super) const ENTRY_BYTES: usize = 32;

impl Entry {
    pub(super) fn write(&self, out: &mut Vec<u8>) {
        let mut b = [0u8; ENTRY_BYTES];
        b[0..4].copy_from_slice(&self.text_end.to_le_bytes());
        b[4..8].copy_from_slice(&self.key_end.to_le_bytes());
        b[8..12].copy_from_slice(&self.proto_start.to_le_bytes());
        b[12..16].copy_from_slice(&self.proto_len.to_le_bytes());
        b[16..].copy_from_slice(&self.series.to_le_bytes());
        out.extend_from_slice(&b);
    }

    pub(super) fn read(b: &[u8]) -> Entry {
        let mut fixed = [0u8; ENTRY_BYTES];
        // Entries are written by `write` only, ENTRY_BYTES each: `b` always has them all.
        let n = b.len().min(ENTRY_BYTES);
        fixed[..n].copy_from_slice(&b[..n]);
        let u = |i: usize| u32::from_le_bytes([fixed[i], fixed[i + 1], fixed[i + 2], fixed[i + 3]]);
        let mut series = [0u8; 16];
        series.copy_from_slice(&fixed[16..]);
        Entry {
            text_end: u(0),
            key_end: u(4),
            proto_start: u(8),
            proto_len: u(12),
            series: u128::from_le_bytes(series),
        }
    }
}

/// What a family is within its block: name, help and type, and where its bytes are.
#[derive(Debug)]
pub struct FamilyHead {
    pub name: Arc<str>,
    pub help: Arc<str>,
    pub typ: MetricType,
    /// Where the family is in the block's bytes: `count` entries, `ENTRY_BYTES` each, from
    /// `entries_at`; its data (`text ‖ keys ‖ proto`) is `[data_at..end]`. A block built here
    /// lays each family out as entries then data; a block of a peer's message keeps the
    /// message's own layout (data, then the entries), without copying it.
    pub(super) entries_at: u32,
    pub(super) data_at: u32,
    pub(super) end: u32,
    /// Number of entries.
    pub(super) count: u32,
    /// Of the data, `[..text_len]` is the text, `[text_len..proto_at]` the keys, the rest
    /// protobuf.
    pub(super) text_len: u32,
    pub(super) proto_at: u32,
    /// Identity of the family's series list (a hash of the entries' series identities in
    /// order), so that "same series as before" is one comparison and never walks the entries
    /// of an old family that is no longer in cache.
    pub(super) layout: u128,
}

/// A family as stored in a group and as exposed at scrape time: a shared handle on one family
/// of a block.
///
/// A block is one reference-counted allocation holding the heads of one or more families
/// (next to the reference count: what a push reads of the families it replaces) and their
/// bytes in one more. Every family of a PUT shares one block, so a push writes one block and
/// a PUT that replaces a group's families frees one, instead of two allocations per family (in
/// a large store each of those is a cold cache line to touch). A block lives while any of its
/// families is held; name and help are interned.
#[derive(Clone)]
pub struct StoredFamily {
    pub(super) block: triomphe::ThinArc<Bytes, FamilyHead>,
    pub(super) idx: u32,
}

impl std::ops::Deref for StoredFamily {
    type Target = FamilyHead;

    fn deref(&self) -> &FamilyHead {
        &self.block.slice[self.idx as usize]
    }
}

impl std::fmt::Debug for StoredFamily {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoredFamily")
            .field("name", &self.name)
            .field("typ", &self.typ)
            .field("metrics", &self.count)
            .finish_non_exhaustive()
    }
}

/// Asks the processor to start loading the cache lines of `len` bytes at `p` (at least one
/// line). A hint only: nothing is read, so any address is safe.
#[allow(unsafe_code)]
pub fn prefetch_range(p: *const u8, len: usize) {
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T0};
        let mut off = 0;
        loop {
            // SAFETY: SSE is part of the x86_64 baseline, and a prefetch never dereferences
            // its address (it cannot fault, whatever the address).
            unsafe { _mm_prefetch::<_MM_HINT_T0>(p.wrapping_add(off).cast()) };
            off += 64;
            if off >= len {
                break;
            }
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = (p, len);
}

/// One metric of a family ready to be written out: its sort key and its encodings.
#[derive(Debug, Clone, Copy)]
pub struct MetricChunk<'a> {
    pub sort_key: &'a [u8],
    pub text: &'a [u8],
    pub proto: &'a [u8],
}

impl StoredFamily {
    /// Whether two handles are the same family of the same block.
    pub fn ptr_eq(a: &Self, b: &Self) -> bool {
        a.block.ptr() == b.block.ptr() && a.idx == b.idx
    }

    /// Where this family's head is from the start of its block, worked out without reading
    /// the block: the heads follow the reference count and then the bytes pointer and length,
    /// each part aligned for a head (`prefetch_points_at_the_heads` checks it against the real
    /// address).
    pub(super) fn head_offset(&self) -> usize {
        const fn up(n: usize, align: usize) -> usize {
            n.div_ceil(align) * align
        }
        const ALIGN: usize = std::mem::align_of::<FamilyHead>();
        const HEADS_AT: usize = up(std::mem::size_of::<usize>(), ALIGN)
            + up(
                std::mem::size_of::<Bytes>() + std::mem::size_of::<usize>(),
                ALIGN,
            );
        HEADS_AT + self.idx as usize * std::mem::size_of::<FamilyHead>()
    }

    /// Asks the processor to start loading this family's head (a hint: it reads nothing
    /// itself, so it never waits for memory).
    pub fn prefetch(&self) {
        prefetch_range(
            self.block
                .ptr()
                .cast::<u8>()
                .wrapping_add(self.head_offset()),
            std::mem::size_of::<FamilyHead>(),
        );
    }

    /// Whether two families share a block.
    pub fn same_block(a: &Self, b: &Self) -> bool {
        a.block.ptr() == b.block.ptr()
    }

    /// The entries' bytes, `ENTRY_BYTES` each.
    pub(super) fn entry_bytes(&self) -> &[u8] {
        let at = self.entries_at as usize;
        &self.block.header.header[at..at + self.count as usize * ENTRY_BYTES]
    }

    /// The entries, in exposition order.
    pub(super) fn entries(&self) -> impl ExactSizeIterator<Item = Entry> + '_ {
        self.entry_bytes()
            .chunks_exact(ENTRY_BYTES)
            .map(Entry::read)
    }

    pub(super) fn entry(&self, i: usize) -> Entry {
        Entry::read(&self.entry_bytes()[i * ENTRY_BYTES..(i + 1) * ENTRY_BYTES])
    }

    /// Text, keys and protobuf.
    pub(super) fn data(&self) -> &[u8] {
        &self.block.header.header[self.data_at as usize..self.end as usize]
    }
    pub(super) fn text_bytes(&self) -> &[u8] {
        &self.data()[..self.text_len as usize]
    }

    pub(super) fn key_bytes(&self) -> &[u8] {
        &self.data()[self.text_len as usize..self.proto_at as usize]
    }

    pub(super) fn proto_bytes(&self) -> &[u8] {
        &self.data()[self.proto_at as usize..]
    }

    /// Whether two metrics of this family are the same series (only possible within one push,
    /// which `prepare` refuses): identical series have identical sort keys, so they are
    /// neighbours in exposition order.
    pub fn first_duplicate(&self) -> Option<usize> {
        (1..self.len()).find(|&i| {
            self.entry(i).series == self.entry(i - 1).series
                && self.chunk_key(i) == self.chunk_key(i - 1)
        })
    }

    fn chunk_key(&self, i: usize) -> &[u8] {
        let start = if i == 0 {
            0
        } else {
            self.entry(i - 1).key_end as usize
        };
        &self.key_bytes()[start..self.entry(i).key_end as usize]
    }

    pub fn len(&self) -> usize {
        self.count as usize
    }

    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// Identity hashes of the family's series (name plus label set), for the consistency index.
    pub fn series(&self) -> impl ExactSizeIterator<Item = u128> + '_ {
        self.entries().map(|e| e.series)
    }

    /// The identity of the family's series list (a hash of its series' identities in
    /// exposition order): equal for two families with the same label sets in the same order.
    pub fn layout(&self) -> u128 {
        self.layout
    }

    /// Whether `other` holds exactly the same series, in the same order (a re-push of the same
    /// label sets with new values).
    pub fn same_series(&self, other: &StoredFamily) -> bool {
        self.layout == other.layout && self.name == other.name
    }

    /// The whole family's text lines, already in exposition order.
    pub fn text(&self) -> &[u8] {
        self.text_bytes()
    }

    /// The sort keys of the family's first and last metrics in exposition order (empty for a
    /// family without metrics).
    pub fn key_range(&self) -> (&[u8], &[u8]) {
        let n = self.count as usize;
        if n == 0 {
            return (&[], &[]);
        }
        let keys = self.key_bytes();
        let end = |i: usize| self.entry(i).key_end as usize;
        let first = &keys[..end(0)];
        let last = if n == 1 {
            first
        } else {
            &keys[end(n - 2)..end(n - 1)]
        };
        (first, last)
    }

    /// The family's metrics in exposition order.
    pub fn chunks(&self) -> impl Iterator<Item = MetricChunk<'_>> + '_ {
        let mut prev = (0usize, 0usize);
        let (text, keys, proto) = (self.text_bytes(), self.key_bytes(), self.proto_bytes());
        self.entries().map(move |e| {
            let proto_start = e.proto_start as usize;
            let chunk = MetricChunk {
                sort_key: &keys[prev.1..e.key_end as usize],
                text: &text[prev.0..e.text_end as usize],
                proto: &proto[proto_start..proto_start + e.proto_len as usize],
            };
            prev = (e.text_end as usize, e.key_end as usize);
            chunk
        })
    }

    /// The concatenated, field-tagged `Metric` messages (field 4 of `MetricFamily`), in push
    /// order.
    pub fn proto_metrics(&self) -> &[u8] {
        self.proto_bytes()
    }

    /// Decodes the family back into the data model (for the JSON API, status page, snapshots).
    pub fn to_metric_family(&self) -> MetricFamily {
        let proto = self.proto_bytes();
        let mut buf = Vec::with_capacity(proto.len() + self.name.len() + self.help.len() + 16);
        encode_family_header(&mut buf, &self.name, &self.help, self.typ);
        buf.extend_from_slice(proto);
        // Every family's protobuf part was encoded here or checked on arrival
        // (`peer_check`); should one still not decode, the family shows without metrics
        // rather than failing the reader.
        MetricFamily::decode(buf.as_slice()).unwrap_or_else(|_| MetricFamily {
            name: Some(self.name.to_string()),
            help: Some(self.help.to_string()),
            r#type: Some(self.typ as i32),
            ..MetricFamily::default()
        })
    }
    /// Approximate heap bytes held, for the memory accounting self-metric.
    pub fn heap_bytes(&self) -> usize {
        self.count as usize * ENTRY_BYTES + self.data().len()
    }
}

/// Writes the `name`, `help` (when non-empty) and `type` fields of a `MetricFamily` message.
pub fn encode_family_header(buf: &mut Vec<u8>, name: &str, help: &str, typ: MetricType) {
    use prost::encoding::{encode_key, encode_varint, WireType};
    for (tag, s) in [(1u32, name), (2, help)] {
        if tag == 2 && s.is_empty() {
            continue;
        }
        encode_key(tag, WireType::LengthDelimited, buf);
        encode_varint(s.len() as u64, buf);
        buf.extend_from_slice(s.as_bytes());
    }
    prost::encoding::int32::encode(3, &(typ as i32), buf);
}

pub(super) fn offset(len: usize) -> u32 {
    u32::try_from(len)
        .expect("a family's encoding should stay below 4 GiB (bounded by body limits)")
}
