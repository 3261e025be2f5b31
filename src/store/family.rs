//! One metric family of one group, kept pre-encoded: the text lines and the protobuf `Metric`
//! messages of its metrics in exposition order, the sort key of each metric, and the identity
//! hash of each series for the consistency index.
//!
//! Nothing else about a pushed family is kept in memory; the protobuf bytes are decoded again
//! only for the rare readers that need the data model (`/api/v1/metrics`, the status page).

use std::sync::Arc;

use bytes::Bytes;
use prost::Message;

use super::key::GroupKey;
#[cfg(test)]
use crate::exposition::proto;
use crate::exposition::{self, LabelPair, Metric, MetricFamily, MetricType};

/// Where one metric's bytes are in the family's buffer. Entries are in exposition order; the
/// text lines and the sort keys are laid out in that order, the protobuf messages in push order
/// (which is what `/api/v1/metrics` shows, like upstream).
#[derive(Debug, Clone, Copy)]
struct Entry {
    text_end: u32,
    key_end: u32,
    proto_start: u32,
    proto_len: u32,
    /// Identity of the series (name and label pairs), for the consistency index.
    series: u128,
}

/// Bytes of one [`Entry`] at the head of a family's buffer (little endian, in field order).
const ENTRY_BYTES: usize = 32;

impl Entry {
    fn write(&self, out: &mut Vec<u8>) {
        let mut b = [0u8; ENTRY_BYTES];
        b[0..4].copy_from_slice(&self.text_end.to_le_bytes());
        b[4..8].copy_from_slice(&self.key_end.to_le_bytes());
        b[8..12].copy_from_slice(&self.proto_start.to_le_bytes());
        b[12..16].copy_from_slice(&self.proto_len.to_le_bytes());
        b[16..].copy_from_slice(&self.series.to_le_bytes());
        out.extend_from_slice(&b);
    }

    fn read(b: &[u8]) -> Entry {
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
    entries_at: u32,
    data_at: u32,
    end: u32,
    /// Number of entries.
    count: u32,
    /// Of the data, `[..text_len]` is the text, `[text_len..proto_at]` the keys, the rest
    /// protobuf.
    text_len: u32,
    proto_at: u32,
    /// Identity of the family's series list (a hash of the entries' series identities in
    /// order), so that "same series as before" is one comparison and never walks the entries
    /// of an old family that is no longer in cache.
    layout: u128,
}

/// A family as stored in a group and as exposed at scrape time: a shared handle on one family
/// of a block.
///
/// A block is one reference-counted allocation holding the heads of one or more families
/// (next to the reference count: what a push reads of the families it replaces) and their
/// bytes in one more. Every family of a PUT shares one block, so a push writes one block and
/// a PUT that replaces a group's families frees one, instead of two allocations per family (at
/// 10,000 groups each of those is a cold cache line to touch). A block lives while any of its
/// families is held; name and help are interned.
#[derive(Clone)]
pub struct StoredFamily {
    block: triomphe::ThinArc<Bytes, FamilyHead>,
    idx: u32,
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
    fn add(
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
    fn finish_one(mut self) -> StoredFamily {
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

/// Families read from a peer's message in place: their block is the message's buffer itself
/// (shared, not copied), for families that are rendered once and dropped (a merged scrape's
/// copies); what a node keeps goes through [`BlockBuilder`], which packs it into a block of
/// its own instead of holding a whole message alive.
pub struct SharedBlock {
    bytes: Bytes,
    heads: Vec<FamilyHead>,
}

impl SharedBlock {
    pub fn new(bytes: Bytes) -> Self {
        SharedBlock {
            bytes,
            heads: Vec::new(),
        }
    }

    /// Checks and adds the family in wire form at `[at..at + len]` of the buffer (see
    /// [`StoredFamily::from_wire`]); nothing is added when it is refused.
    pub fn add_wire(
        &mut self,
        at: usize,
        len: usize,
        names: crate::exposition::names::NameScheme,
    ) -> Result<(), String> {
        let b = at
            .checked_add(len)
            .and_then(|end| self.bytes.get(at..end))
            .ok_or("family outside its message")?;
        let w = WireFamily::read(b, names)?;
        let (base, count) = (at, w.entries.len());
        self.heads.push(FamilyHead {
            name: intern(w.name),
            help: intern(w.help),
            typ: w.typ,
            entries_at: offset(base + w.entries_at),
            data_at: offset(base + w.data.start),
            end: offset(base + w.data.end),
            count: offset(count),
            text_len: offset(w.text_len),
            proto_at: offset(w.proto_at),
            layout: layout_of(&w.entries),
        });
        Ok(())
    }

    /// The families, one handle each in the order they were added.
    pub fn finish(self) -> Vec<StoredFamily> {
        let n = self.heads.len();
        if n == 0 {
            return Vec::new();
        }
        let block = triomphe::ThinArc::from_header_and_iter(self.bytes, self.heads.into_iter());
        (0..n)
            .map(|i| StoredFamily {
                block: block.clone(),
                idx: offset(i),
            })
            .collect()
    }
}

/// A family in wire form, checked: its fields, and where its parts are in the bytes read.
struct WireFamily<'a> {
    name: &'a str,
    help: &'a str,
    typ: MetricType,
    text_len: usize,
    proto_at: usize,
    /// `text ‖ keys ‖ proto`.
    data: std::ops::Range<usize>,
    /// Where the entries start (`ENTRY_BYTES` each, in the layout `Entry::write` gives).
    entries_at: usize,
    entries: Vec<Entry>,
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

/// The `layout` of a list of entries.
fn layout_of(entries: &[Entry]) -> u128 {
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

/// One metric of a family ready to be written out: its sort key and its encodings.
#[derive(Debug, Clone, Copy)]
pub struct MetricChunk<'a> {
    pub sort_key: &'a [u8],
    pub text: &'a [u8],
    pub proto: &'a [u8],
}

/// Reused encoding buffers, so encoding a family allocates only its final, exact-size buffer.
#[derive(Default)]
struct Scratch {
    text: Vec<u8>,
    keys: Vec<u8>,
    proto: Vec<u8>,
    order: Vec<(u32, u32, u32, u32)>,
    idx: Vec<usize>,
    entries: Vec<Entry>,
    /// The buffers of a family's merged label pairs, kept empty between calls (see
    /// [`reborrow_empty`]), and where each metric's pairs end in it.
    pairs: Vec<(&'static str, &'static str)>,
    pair_ends: Vec<usize>,
}

/// `v` emptied, as a vector of pairs borrowed for another lifetime, on the same allocation:
/// collecting a mapped `vec::IntoIter` into a vector of an element of the same size and
/// alignment reuses the source's buffer, so a per-thread buffer of borrowed pairs can serve
/// every call without an allocation (were the buffer not reused, this would only allocate).
fn reborrow_empty<'b>(mut v: Vec<(&str, &str)>) -> Vec<(&'b str, &'b str)> {
    v.clear();
    v.into_iter().map(|_| ("", "")).collect()
}

thread_local! {
    static SCRATCH: std::cell::RefCell<Scratch> = std::cell::RefCell::new(Scratch::default());
}

/// Shares the `Arc<str>` of metric names and help texts between families: ten thousand groups
/// pushing the same families then hold one copy of each string instead of ten thousand.
/// Strings nobody holds any more are swept when the set has doubled since the last sweep.
///
/// Every push interns each family's name and help, from every runtime thread; a small
/// per-thread cache in front of the shared set answers the common case without taking the
/// shared lock. It holds short strings only and is emptied when full, so it keeps at most
/// `LOCAL_MAX` strings per thread alive past their last family.
pub fn intern(s: &str) -> Arc<str> {
    const LOCAL_MAX: usize = 4096;
    const LOCAL_MAX_LEN: usize = 256;
    type LocalSet = std::collections::HashSet<Arc<str>, foldhash::fast::RandomState>;
    thread_local! {
        static LOCAL: std::cell::RefCell<LocalSet> = std::cell::RefCell::new(LocalSet::default());
    }
    if s.len() > LOCAL_MAX_LEN {
        return intern_shared(s);
    }
    LOCAL.with(|cell| {
        if let Some(hit) = cell.borrow().get(s) {
            return hit.clone();
        }
        let shared = intern_shared(s);
        let mut local = cell.borrow_mut();
        if local.len() >= LOCAL_MAX {
            local.clear();
        }
        local.insert(shared.clone());
        shared
    })
}

fn intern_shared(s: &str) -> Arc<str> {
    type SharedSet = std::collections::HashSet<Arc<str>, foldhash::fast::RandomState>;
    static SET: std::sync::LazyLock<parking_lot::Mutex<(SharedSet, usize)>> =
        std::sync::LazyLock::new(|| parking_lot::Mutex::new((SharedSet::default(), 1024)));
    let mut guard = SET.lock();
    let (set, sweep_at) = &mut *guard;
    if let Some(existing) = set.get(s) {
        return existing.clone();
    }
    if set.len() >= *sweep_at {
        set.retain(|a| Arc::strong_count(a) > 1);
        *sweep_at = (set.len() * 2).max(1024);
    }
    let a: Arc<str> = Arc::from(s);
    set.insert(a.clone());
    a
}

impl<'a> WireFamily<'a> {
    /// Reads `StoredFamily::to_wire`'s form, checking every offset and that the text is UTF-8
    /// lines of this family, so a malformed message is an error, never a panic or a broken
    /// exposition.
    fn read(b: &'a [u8], names: crate::exposition::names::NameScheme) -> Result<Self, String> {
        struct R<'a>(&'a [u8]);
        impl<'a> R<'a> {
            fn take(&mut self, n: usize) -> Result<&'a [u8], String> {
                if self.0.len() < n {
                    return Err("truncated encoded family".into());
                }
                let (a, rest) = self.0.split_at(n);
                self.0 = rest;
                Ok(a)
            }
            fn u32(&mut self) -> Result<u32, String> {
                let a = self.take(4)?;
                Ok(u32::from_le_bytes([a[0], a[1], a[2], a[3]]))
            }
            fn str(&mut self) -> Result<&'a str, String> {
                let n = self.u32()? as usize;
                std::str::from_utf8(self.take(n)?).map_err(|_| "non-UTF-8 name or help".to_string())
            }
        }
        let mut r = R(b);
        let name = r.str()?;
        let help = r.str()?;
        if !crate::exposition::names::is_valid_metric_name(name, names) {
            return Err(format!("invalid metric name {name:?}"));
        }
        let typ = match MetricType::try_from(i32::from(r.take(1)?[0])) {
            Ok(MetricType::GaugeHistogram) | Err(_) => return Err("unsupported metric type".into()),
            Ok(t) => t,
        };
        let text_len = r.u32()? as usize;
        let keys_len = r.u32()? as usize;
        let buf_len = r.u32()? as usize;
        let data_at = b.len() - r.0.len();
        let buf = r.take(buf_len)?;
        let proto_at = text_len
            .checked_add(keys_len)
            .filter(|&p| p <= buf.len())
            .ok_or("offsets beyond the buffer")?;
        let text =
            std::str::from_utf8(&buf[..text_len]).map_err(|_| "non-UTF-8 text".to_string())?;
        let n = r.u32()? as usize;
        let entries_at = b.len() - r.0.len();
        if n > b.len() / 32 {
            return Err("entry count larger than the message".into());
        }
        let mut entries = Vec::with_capacity(n);
        let (mut prev_text, mut prev_key, mut prev_key_start) = (0usize, 0usize, 0usize);
        let keys = &buf[text_len..proto_at];
        let proto_len_total = buf.len() - proto_at;
        for _ in 0..n {
            let (t, k, ps, pl) = (r.u32()?, r.u32()?, r.u32()?, r.u32()?);
            let series = u128::from_le_bytes(r.take(16)?.try_into().map_err(|_| "bad series")?);
            let (tu, ku) = (t as usize, k as usize);
            if tu <= prev_text
                || tu > text_len
                || ku < prev_key
                || ku > keys_len
                || (ps as usize)
                    .checked_add(pl as usize)
                    .is_none_or(|end| end > proto_len_total)
            {
                return Err("entry offsets out of order or out of bounds".into());
            }
            // Exposition order: sort keys never decrease (so repeated series are neighbours).
            if !entries.is_empty() && keys[prev_key_start..prev_key] > keys[prev_key..ku] {
                return Err("entries are not in exposition order".into());
            }
            let line = &text[prev_text..tu];
            if !line.starts_with(name) || !line.ends_with('\n') || !text.is_char_boundary(tu) {
                return Err("text of an entry is not lines of this family".into());
            }
            prev_text = tu;
            prev_key_start = prev_key;
            prev_key = ku;
            entries.push(Entry {
                text_end: t,
                key_end: k,
                proto_start: ps,
                proto_len: pl,
                series,
            });
        }
        if prev_text != text_len || prev_key != keys_len || !r.0.is_empty() {
            return Err("encoded family has trailing or unaccounted bytes".into());
        }
        Ok(WireFamily {
            name,
            help,
            typ,
            text_len,
            proto_at,
            data: data_at..data_at + buf_len,
            entries_at,
            entries,
        })
    }
}

impl StoredFamily {
    /// Encodes `metrics` (labels already rewritten and sorted by name) in exposition order.
    pub fn encode(name: Arc<str>, help: Arc<str>, typ: MetricType, metrics: Vec<Metric>) -> Self {
        Self::encode_grouped(name, help, typ, metrics, &[])
    }

    /// [`Self::encode`] for metrics whose own labels are sorted by name and already carry the
    /// grouping key's values where they share a name with it: every metric gets the pairs of
    /// `grouping` (sorted by name, see [`grouping_pairs`]) it does not have, merged in by name,
    /// without each metric holding copies of them.
    pub fn encode_grouped(
        name: Arc<str>,
        help: Arc<str>,
        typ: MetricType,
        metrics: Vec<Metric>,
        grouping: &[(&str, &str)],
    ) -> Self {
        let mut block = BlockBuilder::default();
        Self::encode_grouped_into(&mut block, name, help, typ, &metrics, grouping);
        block.finish_one()
    }

    /// [`Self::encode_grouped`] into `block`, after the families already there. Returns the
    /// identity of a series that two of `metrics` share, if any (a push must not repeat one).
    pub fn encode_grouped_into<M: EncodeMetric>(
        block: &mut BlockBuilder,
        name: Arc<str>,
        help: Arc<str>,
        typ: MetricType,
        metrics: &[M],
        grouping: &[(&str, &str)],
    ) -> Option<u128> {
        SCRATCH.with(|cell| {
            let mut guard = cell.borrow_mut();
            let sc = &mut *guard;
            sc.text.clear();
            sc.keys.clear();
            sc.proto.clear();
            sc.order.clear();
            // Every metric's merged label pairs, one after the other, and where each one's end.
            let mut labels: Vec<(&str, &str)> = reborrow_empty(std::mem::take(&mut sc.pairs));
            let mut label_ends = std::mem::take(&mut sc.pair_ends);
            label_ends.clear();
            // Protobuf in push order; remember each metric's key range and proto range.
            for m in metrics {
                let start = labels.len();
                labels.extend(Merged::new(m.labels(), grouping));
                label_ends.push(labels.len());
                let pairs = &labels[start..];
                let key_start = offset(sc.keys.len());
                write_sort_key(&mut sc.keys, pairs);
                let proto_start = offset(sc.proto.len());
                m.write_proto(typ, pairs, &mut sc.proto);
                sc.order.push((
                    key_start,
                    offset(sc.keys.len()),
                    proto_start,
                    offset(sc.proto.len()),
                ));
            }
            // Upstream orders metrics by number of labels, then by label values position by
            // position; the sort key encodes exactly that, so a byte comparison suffices.
            // Stable, so equal keys keep push order.
            let keys = &sc.keys;
            let mut idx = std::mem::take(&mut sc.idx);
            idx.clear();
            idx.extend(0..metrics.len());
            idx.sort_by(|&a, &b| {
                let (ka, kb) = (sc.order[a], sc.order[b]);
                keys[ka.0 as usize..ka.1 as usize].cmp(&keys[kb.0 as usize..kb.1 as usize])
            });
            let mut entries = std::mem::take(&mut sc.entries);
            entries.clear();
            let mut sorted_keys_len = 0usize;
            for &i in &idx {
                let m = &metrics[i];
                let start = if i == 0 { 0 } else { label_ends[i - 1] };
                let pairs = &labels[start..label_ends[i]];
                m.write_text(&mut sc.text, &name, typ, pairs);
                let (ks, ke, ps, pe) = sc.order[i];
                sorted_keys_len += (ke - ks) as usize;
                entries.push(Entry {
                    text_end: offset(sc.text.len()),
                    key_end: offset(sorted_keys_len),
                    proto_start: ps,
                    proto_len: pe - ps,
                    series: series_hash_of(&name, pairs),
                });
            }
            // Identical series have identical sort keys, so they are neighbours now.
            let key = |i: usize| {
                let (ks, ke, _, _) = sc.order[i];
                &sc.keys[ks as usize..ke as usize]
            };
            let repeated = (1..entries.len())
                .find(|&j| {
                    entries[j].series == entries[j - 1].series && key(idx[j]) == key(idx[j - 1])
                })
                .map(|j| entries[j].series);
            let text_len = sc.text.len();
            let proto_at = text_len + sc.keys.len();
            let data_len = proto_at + sc.proto.len();
            block.add(
                name,
                help,
                typ,
                &entries,
                text_len,
                proto_at,
                data_len,
                |buf| {
                    buf.extend_from_slice(&sc.text);
                    for &i in &idx {
                        let (ks, ke, _, _) = sc.order[i];
                        buf.extend_from_slice(&sc.keys[ks as usize..ke as usize]);
                    }
                    buf.extend_from_slice(&sc.proto);
                },
            );
            sc.idx = idx;
            sc.entries = entries;
            sc.pairs = reborrow_empty(labels);
            sc.pair_ends = label_ends;
            repeated
        })
    }

    /// Whether two handles are the same family of the same block.
    pub fn ptr_eq(a: &Self, b: &Self) -> bool {
        a.block.ptr() == b.block.ptr() && a.idx == b.idx
    }

    /// Where this family's head is from the start of its block, worked out without reading
    /// the block: the heads follow the reference count and then the bytes pointer and length,
    /// each part aligned for a head (`prefetch_points_at_the_heads` checks it against the real
    /// address).
    fn head_offset(&self) -> usize {
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
    fn entry_bytes(&self) -> &[u8] {
        let at = self.entries_at as usize;
        &self.block.header.header[at..at + self.count as usize * ENTRY_BYTES]
    }

    /// The entries, in exposition order.
    fn entries(&self) -> impl ExactSizeIterator<Item = Entry> + '_ {
        self.entry_bytes()
            .chunks_exact(ENTRY_BYTES)
            .map(Entry::read)
    }

    fn entry(&self, i: usize) -> Entry {
        Entry::read(&self.entry_bytes()[i * ENTRY_BYTES..(i + 1) * ENTRY_BYTES])
    }

    /// Text, keys and protobuf.
    fn data(&self) -> &[u8] {
        &self.block.header.header[self.data_at as usize..self.end as usize]
    }

    /// A one-sample gauge with its labels in the metric: the tests' reference for the timing
    /// families, which the store encodes from the key's borrowed labels instead
    /// (`encode_grouped`).
    #[cfg(test)]
    pub fn gauge(name: Arc<str>, help: Arc<str>, labels: &[(String, String)], value: f64) -> Self {
        let metric = Metric {
            label: labels
                .iter()
                .map(|(n, v)| proto::LabelPair {
                    name: Some(n.clone()),
                    value: Some(v.clone()),
                })
                .collect(),
            gauge: Some(proto::Gauge { value: Some(value) }),
            ..Default::default()
        };
        Self::encode(name, help, MetricType::Gauge, vec![metric])
    }

    /// A copy of a one-sample gauge family with another value: the text line and the protobuf
    /// message are patched in place (the gauge's double is fixed-width), nothing is re-encoded.
    /// Used for the push-time gauges every write updates. `None` when `self` is not such a
    /// family.
    pub fn with_gauge_value(&self, value: f64) -> Option<StoredFamily> {
        if self.typ != MetricType::Gauge || self.count != 1 {
            return None;
        }
        let text = self.text_bytes();
        let proto = self.proto_bytes();
        let space = text.iter().rposition(|&b| b == b' ')?;
        // The Metric message ends with its gauge: field 2, 9 bytes, holding field 1 as fixed64.
        if proto.len() < 11 || proto[proto.len() - 11..proto.len() - 8] != [0x12, 0x09, 0x09] {
            return None;
        }
        let mut new_text = Vec::with_capacity(space + 26);
        new_text.extend_from_slice(&text[..=space]);
        exposition::write_float(&mut new_text, value);
        new_text.push(b'\n');
        let keys = self.key_bytes();
        let mut entry = self.entry(0);
        entry.text_end = offset(new_text.len());
        let proto_at = new_text.len() + keys.len();
        let mut block = BlockBuilder::default();
        block.add(
            self.name.clone(),
            self.help.clone(),
            self.typ,
            &[entry],
            new_text.len(),
            proto_at,
            proto_at + proto.len(),
            |buf| {
                buf.extend_from_slice(&new_text);
                buf.extend_from_slice(keys);
                buf.extend_from_slice(&proto[..proto.len() - 8]);
                buf.extend_from_slice(&value.to_le_bytes());
            },
        );
        let fam = block.finish_one();
        debug_assert_eq!(fam.layout, self.layout);
        Some(fam)
    }

    fn text_bytes(&self) -> &[u8] {
        &self.data()[..self.text_len as usize]
    }

    fn key_bytes(&self) -> &[u8] {
        &self.data()[self.text_len as usize..self.proto_at as usize]
    }

    fn proto_bytes(&self) -> &[u8] {
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
        MetricFamily::decode(buf.as_slice())
            .expect("a family re-assembled from its own encoding should decode")
    }

    /// The node-to-node form: the encodings exactly as held, so a peer does not re-encode.
    /// Layout (little endian): name, help (u32 length + bytes each), type (u8), text length,
    /// key length, buffer (u32 length + bytes), entry count (u32), then per entry
    /// text_end, key_end, proto_start, proto_len (u32 each) and the series identity (u128).
    pub fn to_wire(&self, out: &mut Vec<u8>) {
        self.write_wire(out, true);
    }

    /// `to_wire` without the protobuf encoding (every metric's protobuf range empty): for a
    /// merged scrape in the text format, whose copies are rendered once and never stored.
    pub fn to_wire_text_only(&self, out: &mut Vec<u8>) {
        self.write_wire(out, false);
    }

    fn write_wire(&self, out: &mut Vec<u8>, with_proto: bool) {
        let put = |out: &mut Vec<u8>, v: u32| out.extend_from_slice(&v.to_le_bytes());
        for s in [&*self.name, &*self.help] {
            put(out, offset(s.len()));
            out.extend_from_slice(s.as_bytes());
        }
        out.push(self.typ as i32 as u8);
        put(out, self.text_len);
        put(out, self.proto_at - self.text_len);
        let data = if with_proto {
            self.data()
        } else {
            &self.data()[..self.proto_at as usize]
        };
        put(out, offset(data.len()));
        out.extend_from_slice(data);
        put(out, self.count);
        for e in self.entries() {
            let (proto_start, proto_len) = if with_proto {
                (e.proto_start, e.proto_len)
            } else {
                (0, 0)
            };
            for v in [e.text_end, e.key_end, proto_start, proto_len] {
                put(out, v);
            }
            out.extend_from_slice(&e.series.to_le_bytes());
        }
    }

    /// The length of `to_wire_text_only`'s output.
    pub fn wire_len_text_only(&self) -> usize {
        self.wire_len() - (self.data().len() - self.proto_at as usize)
    }

    /// The length of `to_wire`'s output.
    pub fn wire_len(&self) -> usize {
        4 + self.name.len() + 4 + self.help.len() + 1 + 4 * 4 + self.heap_bytes()
    }

    /// Reads `to_wire`'s form from a peer, checking every offset and that the text is UTF-8
    /// lines of this family, so a malformed message is an error, never a panic or a broken
    /// exposition.
    pub fn from_wire(
        b: &[u8],
        names: crate::exposition::names::NameScheme,
    ) -> Result<StoredFamily, String> {
        let mut block = BlockBuilder::default();
        Self::from_wire_into(&mut block, b, names)?;
        Ok(block.finish_one())
    }

    /// [`Self::from_wire`] into `block`, after the families already there (nothing is added
    /// when `b` is refused).
    pub fn from_wire_into(
        block: &mut BlockBuilder,
        b: &[u8],
        names: crate::exposition::names::NameScheme,
    ) -> Result<(), String> {
        let w = WireFamily::read(b, names)?;
        let data = &b[w.data.clone()];
        block.add(
            intern(w.name),
            intern(w.help),
            w.typ,
            &w.entries,
            w.text_len,
            w.proto_at,
            data.len(),
            |out| out.extend_from_slice(data),
        );
        Ok(())
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

fn offset(len: usize) -> u32 {
    u32::try_from(len)
        .expect("a family's encoding should stay below 4 GiB (bounded by body limits)")
}

/// Order-preserving key: label count (big endian), then each value with 0x00 and 0x01 escaped
/// and a 0x00 terminator, so that byte order equals upstream's metric order.
pub fn sort_key(metric: &Metric) -> Vec<u8> {
    let mut key = Vec::new();
    write_sort_key(&mut key, &metric.label_pairs().collect::<Vec<_>>());
    key
}

/// The grouping key's label pairs every metric of a push gets when it lacks them, sorted by
/// name: the key's labels, and `instance=""` when the key has no `instance` label (upstream
/// adds it to every metric that has none).
pub fn grouping_pairs(key: &GroupKey) -> Vec<(&str, &str)> {
    let mut pairs: Vec<(&str, &str)> = key
        .labels()
        .iter()
        .map(|(n, v)| (n.as_str(), v.as_str()))
        .collect();
    if let Err(at) = pairs.binary_search_by(|(n, _)| (*n).cmp("instance")) {
        pairs.insert(at, ("instance", ""));
    }
    pairs
}

/// A label pair as the encoders read it: the protobuf model's, or a parsed body's.
pub trait LabelRef {
    fn name(&self) -> &str;
    fn value(&self) -> &str;
}

impl LabelRef for LabelPair {
    fn name(&self) -> &str {
        LabelPair::name(self)
    }
    fn value(&self) -> &str {
        LabelPair::value(self)
    }
}

impl LabelRef for (&str, &str) {
    fn name(&self) -> &str {
        self.0
    }
    fn value(&self) -> &str {
        self.1
    }
}

/// A metric the store can encode: a decoded protobuf `Metric`, or a metric of a parsed text
/// body with its label pairs ([`crate::store::prepare::TextMetric`]).
pub trait EncodeMetric {
    type Label: LabelRef;
    /// The metric's own labels, sorted by name, carrying the grouping key's values where they
    /// share a name with it.
    fn labels(&self) -> &[Self::Label];
    /// Its sample lines, with `pairs` as the labels (the grouping pairs merged in).
    fn write_text(&self, out: &mut Vec<u8>, name: &str, typ: MetricType, pairs: &[(&str, &str)]);
    /// It as field 4 of a `MetricFamily` message, with `pairs` as the labels.
    fn write_proto(&self, typ: MetricType, pairs: &[(&str, &str)], out: &mut Vec<u8>);
}

impl EncodeMetric for Metric {
    type Label = LabelPair;
    fn labels(&self) -> &[LabelPair] {
        &self.label
    }
    fn write_text(&self, out: &mut Vec<u8>, name: &str, typ: MetricType, pairs: &[(&str, &str)]) {
        exposition::write_metric_labelled(out, name, typ, self, pairs);
    }
    fn write_proto(&self, _typ: MetricType, pairs: &[(&str, &str)], out: &mut Vec<u8>) {
        exposition::metric_proto::encode_metric_field_labelled(self, pairs, out);
    }
}

/// `body` (a metric's labels, sorted by name) merged by name with the pairs of `grouping`
/// (sorted, unique) whose names the body lacks: the same pairs in the same order as appending
/// those grouping pairs and sorting stably by name.
pub struct Merged<'a, 'g, L = LabelPair> {
    body: std::slice::Iter<'a, L>,
    extra: std::slice::Iter<'g, (&'a str, &'a str)>,
}

impl<L> Clone for Merged<'_, '_, L> {
    fn clone(&self) -> Self {
        Merged {
            body: self.body.clone(),
            extra: self.extra.clone(),
        }
    }
}

impl<'a, 'g, L: LabelRef> Merged<'a, 'g, L> {
    pub fn new(body: &'a [L], grouping: &'g [(&'a str, &'a str)]) -> Self {
        Merged {
            body: body.iter(),
            extra: grouping.iter(),
        }
    }
}

impl<'a, L: LabelRef> Iterator for Merged<'a, '_, L> {
    type Item = (&'a str, &'a str);

    fn next(&mut self) -> Option<Self::Item> {
        let Some(lp) = self.body.as_slice().first() else {
            return self.extra.next().copied();
        };
        let name = lp.name();
        if let Some(&(extra_name, extra_value)) = self.extra.as_slice().first() {
            if extra_name < name {
                self.extra.next();
                return Some((extra_name, extra_value));
            }
            if extra_name == name {
                // The body has this name: its value (already the key's, see prepare) wins.
                self.extra.next();
            }
        }
        self.body.next();
        Some((name, lp.value()))
    }
}

fn write_sort_key(key: &mut Vec<u8>, labels: &[(&str, &str)]) {
    let n = u16::try_from(labels.len()).unwrap_or(u16::MAX);
    key.extend_from_slice(&n.to_be_bytes());
    for &(_, value) in labels {
        let value = value.as_bytes();
        if value.iter().all(|&b| b > 1) {
            // The common case: nothing to escape.
            key.extend_from_slice(value);
        } else {
            for &b in value {
                match b {
                    0 => key.extend_from_slice(&[1, 1]),
                    1 => key.extend_from_slice(&[1, 2]),
                    b => key.push(b),
                }
            }
        }
        key.push(0);
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reborrowed_pair_buffer_keeps_its_allocation() {
        let text = String::from("name value");
        let mut v: Vec<(&str, &str)> = Vec::with_capacity(8);
        v.push((&text[..4], &text[5..]));
        let (at, cap) = (v.as_ptr() as usize, v.capacity());
        let kept: Vec<(&'static str, &'static str)> = reborrow_empty(v);
        assert!(kept.is_empty());
        assert_eq!((kept.as_ptr() as usize, kept.capacity()), (at, cap));
    }

    fn metric(labels: &[(&str, &str)]) -> Metric {
        Metric {
            label: labels
                .iter()
                .map(|(n, v)| proto::LabelPair {
                    name: Some(n.to_string()),
                    value: Some(v.to_string()),
                })
                .collect(),
            gauge: Some(proto::Gauge { value: Some(1.0) }),
            ..Default::default()
        }
    }

    #[test]
    fn sort_key_orders_like_upstream() {
        // fewer labels first
        assert!(sort_key(&metric(&[("a", "z")])) < sort_key(&metric(&[("a", "a"), ("b", "a")])));
        // then values position by position, a prefix first
        assert!(sort_key(&metric(&[("a", "a")])) < sort_key(&metric(&[("a", "ab")])));
        assert!(
            sort_key(&metric(&[("a", "a"), ("b", "z")]))
                < sort_key(&metric(&[("a", "ab"), ("b", "a")]))
        );
        // control bytes keep their order
        assert!(sort_key(&metric(&[("a", "a\u{0}")])) < sort_key(&metric(&[("a", "a\u{1}")])));
        assert!(sort_key(&metric(&[("a", "a\u{1}")])) < sort_key(&metric(&[("a", "a\u{2}")])));
        assert!(sort_key(&metric(&[("a", "a")])) < sort_key(&metric(&[("a", "a\u{0}")])));
    }

    #[test]
    fn patched_gauge_equals_a_fresh_encoding() {
        let labels = [
            ("instance".to_string(), String::new()),
            ("job".to_string(), "j\"x".to_string()),
        ];
        let base = StoredFamily::gauge("push_time_seconds".into(), "h".into(), &labels, 0.0);
        for v in [
            1.7956715203070993e9,
            -0.5,
            f64::NAN,
            f64::INFINITY,
            123456.0,
            0.0,
        ] {
            let patched = base.with_gauge_value(v).unwrap();
            let fresh = StoredFamily::gauge("push_time_seconds".into(), "h".into(), &labels, v);
            assert_eq!(patched.text(), fresh.text(), "{v}");
            assert_eq!(patched.proto_metrics(), fresh.proto_metrics(), "{v}");
            assert!(patched.same_series(&fresh));
            if !v.is_nan() {
                assert_eq!(patched.to_metric_family(), fresh.to_metric_family());
            }
        }
        let counter = StoredFamily::encode("c".into(), "".into(), MetricType::Counter, vec![]);
        assert!(counter.with_gauge_value(1.0).is_none());
    }

    /// The families of `body` encoded into one block, with `grouping` merged in.
    fn block_of(body: &str, grouping: &[(&str, &str)]) -> Vec<StoredFamily> {
        let fams =
            crate::exposition::parse_text(body.as_bytes(), crate::exposition::NameScheme::Legacy)
                .unwrap();
        let mut block = BlockBuilder::default();
        for mf in fams {
            let typ = mf.r#type();
            StoredFamily::encode_grouped_into(
                &mut block,
                intern(mf.name()),
                intern(mf.help()),
                typ,
                &mf.metric,
                grouping,
            );
        }
        block.finish()
    }

    #[test]
    fn key_range_is_the_first_and_last_chunk_key() {
        let body = "a 1\nb{x=\"2\"} 2\nb{x=\"1\"} 3\nb{x=\"1\",y=\"0\"} 4\n# TYPE h histogram\nh_bucket{le=\"1\"} 1\nh_bucket{le=\"+Inf\"} 2\nh_sum 3\nh_count 2\n";
        for f in block_of(body, &[("job", "j")]) {
            let keys: Vec<&[u8]> = f.chunks().map(|c| c.sort_key).collect();
            assert!(!keys.is_empty());
            assert_eq!(f.key_range(), (keys[0], keys[keys.len() - 1]), "{}", f.name);
        }
        let empty = StoredFamily::encode(intern("e"), intern(""), MetricType::Gauge, vec![]);
        assert_eq!(empty.key_range(), (&[][..], &[][..]));
    }

    #[test]
    fn prefetch_points_at_the_heads() {
        // `prefetch` computes where a head is without reading the block; check the layout it
        // assumes (a wrong guess would be harmless, only slower).
        let handles = block_of("a 1\nb 2\nc{x=\"y\"} 3\n", &[]);
        assert_eq!(handles.len(), 3);
        for (i, f) in handles.iter().enumerate() {
            let head = std::ptr::from_ref::<FamilyHead>(f) as usize;
            let base = f.block.ptr() as usize;
            assert_eq!(head - base, f.head_offset(), "family {i}");
        }
    }

    /// A gauge family of two metrics pushed out of exposition order.
    fn two_gauges() -> StoredFamily {
        StoredFamily::encode(
            "g".into(),
            "help".into(),
            MetricType::Gauge,
            vec![metric(&[("job", "b")]), metric(&[("job", "a")])],
        )
    }

    #[test]
    fn wire_form_round_trips_and_refuses_damage() {
        let fam = two_gauges();
        let mut w = Vec::new();
        fam.to_wire(&mut w);
        assert_eq!(w.len(), fam.wire_len());
        let back = StoredFamily::from_wire(&w, Default::default()).unwrap();
        assert_eq!(back.text(), fam.text());
        assert_eq!(back.proto_metrics(), fam.proto_metrics());
        assert!(back.same_series(&fam));
        assert_eq!(back.chunks().count(), 2);
        for cut in 0..w.len() {
            assert!(
                StoredFamily::from_wire(&w[..cut], Default::default()).is_err(),
                "cut at {cut}"
            );
        }
        for i in 0..w.len() {
            let mut bad = w.clone();
            bad[i] ^= 0xA5;
            // Must never panic; most flips are refused.
            let _ = StoredFamily::from_wire(&bad, Default::default());
        }
    }

    /// Everything a render or the API reads of a family.
    fn view(f: &StoredFamily) -> (String, String, MetricType, Vec<u8>, Vec<u8>, Vec<u128>) {
        let keys = f.chunks().flat_map(|c| c.sort_key.to_vec()).collect();
        (
            f.name.to_string(),
            f.help.to_string(),
            f.typ,
            f.text().to_vec(),
            [keys, f.proto_metrics().to_vec()].concat(),
            f.series().collect(),
        )
    }

    #[test]
    fn families_read_in_place_equal_copied_ones_and_share_the_buffer() {
        let fams = block_of(
            "# HELP a_total first\n# TYPE a_total counter\na_total{x=\"2\"} 1\na_total{x=\"1\"} 2\n\
             # TYPE h histogram\nh_bucket{le=\"1\"} 1\nh_bucket{le=\"+Inf\"} 2\nh_sum 3\nh_count 2\n",
            &[("job", "j")],
        );
        for text_only in [false, true] {
            // Families after some unrelated bytes, as in a message.
            let mut buf = b"prefix".to_vec();
            let mut places = Vec::new();
            for f in &fams {
                let at = buf.len();
                if text_only {
                    f.to_wire_text_only(&mut buf);
                } else {
                    f.to_wire(&mut buf);
                }
                places.push((at, buf.len() - at));
            }
            let bytes = Bytes::from(buf);
            let mut shared = SharedBlock::new(bytes.clone());
            for &(at, len) in &places {
                shared.add_wire(at, len, Default::default()).unwrap();
            }
            let in_place = shared.finish();
            assert_eq!(in_place.len(), fams.len());
            let range = bytes.as_ptr_range();
            for (i, (f, &(at, len))) in in_place.iter().zip(&places).enumerate() {
                let copied = StoredFamily::from_wire(&bytes[at..at + len], Default::default());
                let copied = copied.unwrap();
                assert_eq!(view(f), view(&copied), "family {i}, text only: {text_only}");
                assert!(f.same_series(&copied));
                assert_eq!(f.key_range(), copied.key_range());
                assert_eq!(f.heap_bytes(), copied.heap_bytes());
                if !text_only {
                    assert_eq!(view(f), view(&fams[i]));
                    assert_eq!(f.to_metric_family(), fams[i].to_metric_family());
                }
                // Not copied: the text is read where it lies in the message.
                assert!(range.contains(&f.text().as_ptr()), "family {i}");
                assert!(!range.contains(&copied.text().as_ptr()));
            }
            assert!(StoredFamily::same_block(&in_place[0], &in_place[1]));
        }
    }

    #[test]
    fn families_read_in_place_refuse_damage_and_places_outside_the_buffer() {
        let fam = two_gauges();
        let mut w = Vec::new();
        fam.to_wire(&mut w);
        let bytes = Bytes::from(w.clone());
        let one = |at: usize, len: usize| {
            let mut b = SharedBlock::new(bytes.clone());
            let res = b.add_wire(at, len, Default::default());
            (res, b.finish().len())
        };
        assert_eq!(one(0, w.len()).1, 1);
        for (at, len) in [
            (0, w.len() + 1),
            (1, w.len()),
            (usize::MAX, 2),
            (3, usize::MAX),
        ] {
            let (res, n) = one(at, len);
            assert!(res.is_err() && n == 0, "{at}+{len}");
        }
        for cut in 0..w.len() {
            let (res, n) = one(0, cut);
            assert!(res.is_err() && n == 0, "cut at {cut}");
        }
        for i in 0..w.len() {
            let mut bad = w.clone();
            bad[i] ^= 0xA5;
            let mut b = SharedBlock::new(Bytes::from(bad.clone()));
            // Never a panic, and the same verdict as the copying read.
            let res = b.add_wire(0, bad.len(), Default::default());
            let copied = StoredFamily::from_wire(&bad, Default::default());
            assert_eq!(res.is_ok(), copied.is_ok(), "flip at {i}");
            if let Ok(copied) = copied {
                assert_eq!(view(&b.finish()[0]), view(&copied));
            }
        }
    }

    #[test]
    fn text_only_wire_form_keeps_text_order_and_identity() {
        let fam = two_gauges();
        let mut w = Vec::new();
        fam.to_wire_text_only(&mut w);
        assert_eq!(w.len(), fam.wire_len_text_only());
        assert!(w.len() < fam.wire_len());
        let back = StoredFamily::from_wire(&w, Default::default()).unwrap();
        assert_eq!(back.text(), fam.text());
        assert!(back.proto_metrics().is_empty());
        assert!(back.same_series(&fam));
        let keys = |f: &StoredFamily| f.chunks().map(|c| c.sort_key.to_vec()).collect::<Vec<_>>();
        assert_eq!(keys(&back), keys(&fam));
        assert!(back.chunks().all(|c| c.proto.is_empty()));
    }

    #[test]
    fn encode_round_trips_through_the_model() {
        let fam = StoredFamily::encode(
            "g".into(),
            "help".into(),
            MetricType::Gauge,
            vec![metric(&[("job", "b")]), metric(&[("job", "a")])],
        );
        assert_eq!(fam.len(), 2);
        let mf = fam.to_metric_family();
        assert_eq!(mf.name(), "g");
        assert_eq!(mf.help(), "help");
        // The model keeps push order (what /api/v1/metrics shows); exposition is sorted.
        assert_eq!(mf.metric[0].label[0].value(), "b");
        let text: Vec<u8> = fam.chunks().flat_map(|c| c.text.to_vec()).collect();
        assert_eq!(
            String::from_utf8(text).unwrap(),
            "g{job=\"a\"} 1\ng{job=\"b\"} 1\n"
        );
        let keys: Vec<_> = fam.chunks().map(|c| c.sort_key.to_vec()).collect();
        assert!(keys[0] < keys[1]);
        let series: Vec<u128> = fam.series().collect();
        assert_ne!(series[0], series[1]);
    }
}
