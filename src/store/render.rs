//! Scrape rendering: families in name order, HELP/TYPE once, then every group's pre-encoded
//! metrics in upstream's order.
//!
//! Sorting is the expensive part (metrics of one family come from thousands of groups), but the
//! order depends only on label sets, which rarely change: jobs push new values under the same
//! labels. So the order of a family's members is cached under the family's "layout" sequence
//! number, which moves only when a member joins, leaves or changes its label sets; a scrape of
//! a family whose layout is unchanged copies every member's bytes in the cached order.

use std::sync::Arc;

use super::family::{encode_family_header, MetricChunk, StoredFamily};
use super::group::{timing_families_of, GroupSnapshot};
use super::key::{self, GroupKey};
use super::options::ReservedNames;
use super::render_cache::{MergedOrderMap, MergedOrders};
use super::Store;
use crate::exposition;

// `MergedRender::family_sorted`: a merged family written as its members arrive.
#[path = "render_sorted.rs"]
mod sorted;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Text,
    /// Varint-delimited `MetricFamily` messages.
    Protobuf,
}

/// Folds one member into a family's signature (see [`MergedOrders`]).
fn sign(sig: u64, key: &GroupKey, f: &StoredFamily) -> u64 {
    let layout = f.layout();
    let mut h = sig;
    for word in [
        key.stable_hash(),
        layout as u64,
        (layout >> 64) as u64,
        (f.typ as u64) << 1 | u64::from(f.is_empty()),
    ] {
        h = (h ^ word).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        h ^= h >> 29;
    }
    h
}

/// Counts from one render, for self-metrics.
#[derive(Debug, Default, Clone, Copy)]
pub struct RenderStats {
    pub families: usize,
    /// Families rendered in a cached member order (no sorting).
    pub cached_families: usize,
    /// Members dropped because their type disagreed with the family's (only possible with the
    /// consistency check disabled, or in a cluster race) or duplicate series.
    pub inconsistent_dropped: usize,
}

/// (id, key, family): the id is the member's slot in its name's index entry (what the render
/// cache remembers the order of), or a snapshot's group number; the gateway's own member has
/// id 0 and the empty key (a family with one is never cached).
type Member = (u64, Arc<GroupKey>, StoredFamily);

struct Part {
    name: Arc<str>,
    /// Help text that wins over the members' (a self-metric's own or a reserved name's).
    help: Option<Arc<str>>,
    members: Vec<Member>,
    /// Members are already in exposition order (from the layout cache).
    presorted: bool,
    /// Members are in group key order (the merged view adds them so): the first in key order is
    /// the first one, and sorting by key is a no-op.
    key_ordered: bool,
    /// `Some(layout)` when the order found may be cached under that layout number.
    cache_as: Option<u64>,
    /// A merged view's family: its members' signature, under which the order found may be
    /// remembered (see [`MergedOrders`]).
    merged_sig: Option<u64>,
}

impl Store {
    /// Writes the whole exposition: stored families merged with `own` (the gateway's own
    /// families, sorted by name, each with one member).
    pub fn render(&self, format: Format, own: &[StoredFamily], out: &mut Vec<u8>) -> RenderStats {
        let mut whole = Vec::new();
        let stats = self.render_chunked(format, own, usize::MAX, &mut |chunk| {
            if whole.is_empty() {
                whole = chunk;
            } else {
                whole.extend_from_slice(&chunk);
            }
        });
        if out.is_empty() {
            *out = whole;
        } else {
            out.extend_from_slice(&whole);
        }
        stats
    }

    /// Renders the exposition in pieces of about `chunk_size` bytes (whole families; a family
    /// larger than that is one piece), handing each to `emit` as soon as it is ready, so a
    /// scrape of a large store is streamed instead of built in one buffer.
    pub fn render_chunked(
        &self,
        format: Format,
        own: &[StoredFamily],
        chunk_size: usize,
        emit: &mut dyn FnMut(Vec<u8>),
    ) -> RenderStats {
        // Expired groups leave the scrape at their expiry, not at the next sweep.
        self.expire(crate::time::unix_seconds());
        let mut stats = RenderStats::default();
        let parts = self.plan(own, &mut stats);
        let (fresh, _) = render_parts(format, parts, None, chunk_size, emit, &mut stats);
        if !fresh.is_empty() {
            let mut cache = self.render_cache.lock();
            for (name, layout, order) in fresh {
                cache.layouts.insert(name, (layout, order));
            }
            // Forget families that no longer exist, so the cache cannot grow without bound.
            if cache.layouts.len() > stats.families.saturating_mul(2).max(64) {
                let inner = self.inner.read();
                cache.layouts.retain(|n, _| inner.index.contains_key(n));
            }
        }
        stats
    }

    fn plan(&self, own: &[StoredFamily], stats: &mut RenderStats) -> Vec<Part> {
        let inner = self.inner.read();
        let cache = self.render_cache.lock();
        let mut parts = Vec::with_capacity(inner.index.len() + own.len());
        let mut own_iter = own.iter().peekable();
        let empty_key = Arc::new(GroupKey::new(std::iter::empty()));
        // Families in name order (the index is a hash map: every write looks names up in it).
        let mut names: Vec<_> = inner.index.iter().collect();
        names.sort_unstable_by(|a, b| a.0.cmp(b.0));
        for (name, entry) in names {
            while let Some(o) = own_iter.next_if(|o| o.name < *name) {
                parts.push(own_part(o, &empty_key));
            }
            stats.families += 1;
            let own_same = own_iter.next_if(|o| o.name == *name);
            let mut help = self
                .opts
                .reserved
                .get(name)
                .map(|(_, h)| Arc::<str>::from(h));
            if own_same.is_none() {
                if let Some((layout, order)) = cache.layouts.get(name) {
                    if *layout == entry.layout && order.len() == entry.count {
                        let members: Option<Vec<Member>> = order
                            .iter()
                            .map(|&slot| {
                                let member = usize::try_from(slot)
                                    .ok()
                                    .and_then(|i| entry.members.get(i))?;
                                member
                                    .as_ref()
                                    .map(|(_, k, f)| (slot, k.clone(), f.clone()))
                            })
                            .collect();
                        if let Some(members) = members {
                            stats.cached_families += 1;
                            parts.push(Part {
                                name: name.clone(),
                                help,
                                members,
                                presorted: true,
                                key_ordered: false,
                                cache_as: None,
                                merged_sig: None,
                            });
                            continue;
                        }
                    }
                }
            }
            let mut members: Vec<Member> = Vec::with_capacity(entry.count + 1);
            if let Some(o) = own_same {
                help = Some(o.help.clone());
                members.push((0, empty_key.clone(), o.clone()));
            }
            members.extend(entry.members.iter().enumerate().filter_map(|(slot, m)| {
                m.as_ref()
                    .map(|(_, k, f)| (slot as u64, k.clone(), f.clone()))
            }));
            parts.push(Part {
                name: name.clone(),
                help,
                members,
                presorted: false,
                key_ordered: false,
                cache_as: own_same.is_none().then_some(entry.layout),
                merged_sig: None,
            });
        }
        for o in own_iter {
            parts.push(own_part(o, &empty_key));
        }
        parts
    }
}

/// What a render found worth remembering: the store's member orders (name, layout, slots),
/// and a merged view's (name, signature, positions).
type FreshOrders = (Vec<(Arc<str>, u64, Arc<[u64]>)>, MergedOrderMap);

/// Writes `parts` in order, emitting pieces of about `chunk_size` bytes (`merged`: the orders
/// the last merged render remembered); returns the member orders worth caching.
fn render_parts(
    format: Format,
    parts: Vec<Part>,
    merged: Option<Arc<MergedOrderMap>>,
    chunk_size: usize,
    emit: &mut dyn FnMut(Vec<u8>),
    stats: &mut RenderStats,
) -> FreshOrders {
    let estimate: usize = parts
        .iter()
        .map(|p| p.members.iter().map(|m| m.2.text().len()).sum::<usize>() + 128)
        .sum();
    let mut writer = PartWriter::new(format, merged, chunk_size, estimate, emit);
    for part in parts {
        writer.part(part, stats);
    }
    writer.finish()
}

/// Writes parts one after the other into pieces of about `chunk_size` bytes, handed to `emit`
/// once full, and gathers the member orders worth caching.
struct PartWriter<'a> {
    format: Format,
    merged: Option<Arc<MergedOrderMap>>,
    chunk_size: usize,
    capacity: usize,
    out: Vec<u8>,
    emit: &'a mut dyn FnMut(Vec<u8>),
    fresh: Vec<(Arc<str>, u64, Arc<[u64]>)>,
    fresh_merged: MergedOrderMap,
}

impl<'a> PartWriter<'a> {
    /// `estimate`: about how many bytes will be written in all (the first buffer's size when
    /// that is less than a piece).
    fn new(
        format: Format,
        merged: Option<Arc<MergedOrderMap>>,
        chunk_size: usize,
        estimate: usize,
        emit: &'a mut dyn FnMut(Vec<u8>),
    ) -> Self {
        let capacity = chunk_size.saturating_add(64 * 1024);
        PartWriter {
            format,
            merged,
            chunk_size,
            capacity,
            out: Vec::with_capacity(estimate.min(capacity)),
            emit,
            fresh: Vec::new(),
            fresh_merged: MergedOrderMap::default(),
        }
    }

    fn part(&mut self, part: Part, stats: &mut RenderStats) {
        let PartWriter {
            format,
            merged,
            chunk_size,
            capacity,
            out,
            emit,
            fresh,
            fresh_merged,
        } = self;
        let (format, chunk_size, capacity) = (*format, *chunk_size, *capacity);
        // Hands the buffer on once it is full, also in the middle of a family: a family held by
        // many groups is megabytes, and growing one buffer to hold it reallocates and
        // page-faults, which a merged scrape's profile showed.
        let mut flush = |out: &mut Vec<u8>| {
            if out.len() >= chunk_size {
                emit(std::mem::replace(out, Vec::with_capacity(capacity)));
            }
        };
        let known = part.merged_sig.and_then(|sig| {
            let (was, order) = merged.as_ref()?.get(&part.name)?;
            (*was == sig).then(|| order.clone())
        });
        // A remembered order is kept as it is (the same `Arc`); one found now is stored.
        let (found, kept) = match known {
            Some(order) if render_known(format, &part, &order, out, &mut flush, stats) => {
                (None, Some(order))
            }
            _ => (render_family(format, &part, out, &mut flush, stats), None),
        };
        if let (Some(layout), Some(order)) = (part.cache_as, &found) {
            let slots = order.iter().map(|&i| part.members[i as usize].0).collect();
            fresh.push((part.name.clone(), layout, slots));
        }
        if let Some(sig) = part.merged_sig {
            if let Some(order) = kept.or_else(|| found.map(Arc::from)) {
                fresh_merged.insert(part.name, (sig, order));
            }
        }
        flush(out);
    }

    /// Appends `bytes`, handing the buffer on once it is full.
    fn write(&mut self, bytes: &[u8]) {
        self.out.extend_from_slice(bytes);
        if self.out.len() >= self.chunk_size {
            let next = Vec::with_capacity(self.capacity);
            (self.emit)(std::mem::replace(&mut self.out, next));
        }
    }

    /// Emits what is left; the orders worth caching.
    fn finish(self) -> FreshOrders {
        if !self.out.is_empty() {
            (self.emit)(self.out);
        }
        (self.fresh, self.fresh_merged)
    }
}

/// Of groups in ascending key order (`strictly`: each key once), which ones a merged view
/// renders: of two whose keys are equal once `instance=""` is added (possible only when they
/// raced on different primaries), or equal, the first in key order. `None` when no two can
/// collide (keys each once, none with an empty `instance`): then every one is rendered.
pub fn kept_keys<'k>(
    keys: impl ExactSizeIterator<Item = &'k GroupKey> + Clone,
    strictly: bool,
) -> Option<Vec<bool>> {
    // A key with an `instance` label is its own normalized form and is looked up as it is.
    if strictly && keys.clone().all(|k| k.instance() != key::Instance::Empty) {
        return None;
    }
    type FastSet<'a> =
        std::collections::HashSet<std::borrow::Cow<'a, GroupKey>, foldhash::fast::RandomState>;
    let mut seen: FastSet = FastSet::with_capacity_and_hasher(keys.len(), Default::default());
    Some(
        keys.map(|k| {
            seen.insert(if k.instance() != key::Instance::Absent {
                std::borrow::Cow::Borrowed(k)
            } else {
                std::borrow::Cow::Owned(k.normalized())
            })
        })
        .collect(),
    )
}

/// A merged view's exposition, written family by family as the caller hands the families over
/// in name order (a cluster node's merged scrape, which never holds every group at once), with
/// the gateway's own families merged in: exactly what [`render_snapshots`] writes for the same
/// groups.
pub struct MergedRender<'a> {
    writer: PartWriter<'a>,
    reserved: &'a ReservedNames,
    own: std::iter::Peekable<std::slice::Iter<'a, StoredFamily>>,
    orders: Option<&'a MergedOrders>,
    empty_key: Arc<GroupKey>,
    stats: RenderStats,
}

impl<'a> MergedRender<'a> {
    /// `estimate`: about how many bytes the exposition has (the first buffer's size when that
    /// is less than a piece of `chunk_size`). With `orders`, the member order of each family is
    /// remembered for the next render and reused where the family's members are unchanged (see
    /// [`MergedOrders`]).
    pub fn new(
        reserved: &'a ReservedNames,
        own: &'a [StoredFamily],
        format: Format,
        orders: Option<&'a MergedOrders>,
        chunk_size: usize,
        estimate: usize,
        emit: &'a mut dyn FnMut(Vec<u8>),
    ) -> Self {
        let last = orders.map(|o| o.last.lock().clone());
        MergedRender {
            writer: PartWriter::new(format, last, chunk_size, estimate, emit),
            reserved,
            own: own.iter().peekable(),
            orders,
            empty_key: Arc::new(GroupKey::new(std::iter::empty())),
            stats: RenderStats::default(),
        }
    }

    /// Writes the family `name` (names handed over in strictly ascending order): `members` are
    /// the groups' families of that name in group key order, a group's own family before its
    /// push time family of the same name, and only groups that [`kept_keys`] keeps.
    pub fn family(&mut self, name: Arc<str>, members: Vec<(Arc<GroupKey>, StoredFamily)>) {
        while let Some(o) = self.own.next_if(|o| o.name < name) {
            self.writer.part(own_part(o, &self.empty_key), &mut self.stats);
        }
        self.stats.families += 1;
        let sig = members.iter().fold(0, |sig, (k, f)| sign(sig, k, f));
        let mut help = self.reserved.get(&name).map(|(_, h)| Arc::<str>::from(h));
        // A family that the gateway's own one joins is not remembered (like the store's).
        let mut merged_sig = self.orders.map(|_| sig);
        let own_same = self.own.next_if(|o| o.name == name);
        let mut all: Vec<Member> = Vec::with_capacity(members.len() + 1);
        if let Some(o) = own_same {
            help = Some(o.help.clone());
            all.push((0, self.empty_key.clone(), o.clone()));
            merged_sig = None;
        }
        all.extend(
            members
                .into_iter()
                .enumerate()
                .map(|(i, (k, f))| (i as u64 + 1, k, f)),
        );
        let part = Part {
            name,
            help,
            members: all,
            presorted: false,
            // Groups come in key order, and the gateway's own member (empty key) first.
            key_ordered: true,
            cache_as: None,
            merged_sig,
        };
        self.writer.part(part, &mut self.stats);
    }

    /// Writes the gateway's own families left and emits the rest; `dropped_groups`: how many
    /// groups [`kept_keys`] left out (counted as inconsistent).
    pub fn finish(mut self, dropped_groups: usize) -> RenderStats {
        for o in self.own.by_ref() {
            self.writer.part(own_part(o, &self.empty_key), &mut self.stats);
        }
        let (_, fresh) = self.writer.finish();
        if let Some(o) = self.orders {
            *o.last.lock() = Arc::new(fresh);
        }
        self.stats.inconsistent_dropped += dropped_groups;
        self.stats
    }
}

/// Renders groups that do not live in one store (a cluster node's merged view) exactly as a
/// store holding them would: families merged by name, the same ordering, type and HELP rules.
/// Of two groups whose keys are equal once `instance=""` is added (possible only when they
/// raced on different primaries), the first in key order is kept and the other counted.
///
/// With `orders`, the member order of each family is remembered for the next call and reused
/// where the family's members are unchanged (see [`MergedOrders`]).
pub fn render_snapshots(
    groups: &[GroupSnapshot],
    reserved: &ReservedNames,
    own: &[StoredFamily],
    format: Format,
    orders: Option<&MergedOrders>,
    chunk_size: usize,
    emit: &mut dyn FnMut(Vec<u8>),
) -> RenderStats {
    let mut sorted: Vec<&GroupSnapshot> = groups.iter().collect();
    // The merged view arrives in key order already, each key once: checking costs one
    // comparison per group.
    let strictly_sorted = sorted.is_sorted_by(|a, b| a.key < b.key);
    if !strictly_sorted {
        super::key_order::sort_by_group_key(&mut sorted, |g| &g.key);
    }
    let mut dropped = 0;
    if let Some(kept) = kept_keys(sorted.iter().map(|g| &*g.key), strictly_sorted) {
        let before = sorted.len();
        let mut kept = kept.into_iter();
        sorted.retain(|_| kept.next().unwrap_or(false));
        dropped = before - sorted.len();
    }
    // Families by name: every group usually has the same few names, so a hash map (names are
    // short) beats ordered-map string comparisons; the names are sorted once at the end.
    type Members = Vec<(Arc<GroupKey>, StoredFamily)>;
    let mut by_name: std::collections::HashMap<Arc<str>, Members, foldhash::fast::RandomState> =
        Default::default();
    let last = orders.map(|o| o.last.lock().clone());
    let count = sorted.len();
    let mut estimate = 0;
    for (i, g) in sorted.into_iter().enumerate() {
        let groups_left = count - i;
        let timing = timing_families_of(g);
        for f in g.families.iter().map(|(f, _)| f).chain(timing.iter()) {
            estimate += f.text().len();
            match by_name.get_mut(&f.name) {
                Some(members) => members.push((g.key.clone(), f.clone())),
                None => {
                    // Sized for as many members as the last merged render's family had (a
                    // little more), so that it does not grow by doubling, copying and faulting.
                    let last_len = last
                        .as_ref()
                        .and_then(|l| l.get(&f.name))
                        .map_or(0, |(_, order)| order.len() + order.len() / 8);
                    let mut members = Vec::with_capacity(last_len.clamp(1, groups_left));
                    members.push((g.key.clone(), f.clone()));
                    by_name.insert(f.name.clone(), members);
                }
            }
        }
    }
    drop(last);
    let mut by_name: Vec<_> = by_name.into_iter().collect();
    by_name.sort_unstable_by(|a, b| a.0.cmp(&b.0));
    estimate += 128 * (by_name.len() + own.len())
        + own.iter().map(|o| o.text().len()).sum::<usize>();
    let mut render = MergedRender::new(reserved, own, format, orders, chunk_size, estimate, emit);
    for (name, members) in by_name {
        render.family(name, members);
    }
    render.finish(dropped)
}

fn own_part(o: &StoredFamily, empty_key: &Arc<GroupKey>) -> Part {
    Part {
        name: o.name.clone(),
        help: Some(o.help.clone()),
        members: vec![(0, empty_key.clone(), o.clone())],
        presorted: true,
        key_ordered: true,
        cache_as: None,
        merged_sig: None,
    }
}

/// A family's HELP: the one its part sets (the gateway's own, a reserved name's), else the
/// first member's in key order that has one. Deterministic, where upstream picks one at random
/// (bug 4).
fn family_help(part: &Part) -> Option<Arc<str>> {
    part.help
        .clone()
        .or_else(|| first_help(&part.members, part.key_ordered))
}

/// The first member in key order that has help text.
fn first_help(members: &[Member], key_ordered: bool) -> Option<Arc<str>> {
    let mut with_help = members.iter().filter(|m| !m.2.help.is_empty());
    let first = if key_ordered {
        with_help.next()
    } else {
        with_help.min_by(|a, b| a.1.cmp(&b.1))
    };
    first.map(|m| m.2.help.clone())
}

/// Renders a merged view's family in the order remembered for the same members (positions in
/// `part.members`: same keys, layouts, types and emptiness, so every position is in range, of
/// one type and copied whole). False, with nothing written, when the order does not fit.
fn render_known(
    format: Format,
    part: &Part,
    order: &[u32],
    out: &mut Vec<u8>,
    flush: &mut dyn FnMut(&mut Vec<u8>),
    stats: &mut RenderStats,
) -> bool {
    let members: Option<Vec<&Member>> = order
        .iter()
        .map(|&i| part.members.get(i as usize))
        .collect();
    let Some(members) = members.filter(|m| !m.is_empty()) else {
        return false;
    };
    let typ = members[0].2.typ;
    let help = family_help(part);
    stats.cached_families += 1;
    write_family(
        format,
        part,
        help,
        typ,
        &members,
        &Ordered::Whole,
        out,
        flush,
        stats,
    );
    true
}

/// Renders one family (nothing when it has nothing to expose). Returns the member order, as
/// positions in `part.members`, when it is worth caching: every member copied whole, one type,
/// no duplicates.
fn render_family(
    format: Format,
    part: &Part,
    out: &mut Vec<u8>,
    flush: &mut dyn FnMut(&mut Vec<u8>),
    stats: &mut RenderStats,
) -> Option<Vec<u32>> {
    let mut members: Vec<&Member> = part.members.iter().filter(|m| !m.2.is_empty()).collect();
    if members.is_empty() {
        return Some(Vec::new());
    }
    // Groups can disagree on a name's type only with the consistency check disabled (or when a
    // cluster race slipped past it): the first group in key order decides (the gateway's own
    // member has the empty key, so it wins), the others are left out and counted.
    let first = if part.key_ordered {
        members.first()
    } else {
        members.iter().min_by(|a, b| a.1.cmp(&b.1))
    };
    let Some(typ) = first.map(|m| m.2.typ) else {
        return Some(Vec::new());
    };
    let before = members.len();
    members.retain(|m| m.2.typ == typ);
    let dropped = before - members.len();
    stats.inconsistent_dropped += dropped;
    let help = family_help(part);
    let presorted = part.presorted && dropped == 0;
    let ordered = if presorted {
        Ordered::Whole
    } else {
        order_members(&mut members, part.key_ordered)
    };
    let cacheable = matches!(ordered, Ordered::Whole) && dropped == 0 && !presorted;
    write_family(
        format, part, help, typ, &members, &ordered, out, flush, stats,
    );
    // Positions in `part.members` (whose elements `members` borrow).
    let base = part.members.as_ptr() as usize;
    let at = |m: &&Member| {
        ((*m as *const Member as usize - base) / std::mem::size_of::<Member>()) as u32
    };
    cacheable.then(|| members.iter().map(at).collect())
}

/// Writes a family's HELP and TYPE and its `members` in the `ordered` way.
#[allow(clippy::too_many_arguments)]
fn write_family(
    format: Format,
    part: &Part,
    help: Option<Arc<str>>,
    typ: exposition::MetricType,
    members: &[&Member],
    ordered: &Ordered,
    out: &mut Vec<u8>,
    flush: &mut dyn FnMut(&mut Vec<u8>),
    stats: &mut RenderStats,
) {
    match format {
        Format::Text => {
            exposition::write_help_and_type(
                out,
                &part.name,
                help.as_deref().filter(|h| !h.is_empty()),
                typ,
            );
            match &ordered {
                Ordered::Whole => {
                    for m in members {
                        out.extend_from_slice(m.2.text());
                        flush(out);
                    }
                }
                Ordered::Chunks(chunks) => {
                    for c in dedup(chunks, stats) {
                        out.extend_from_slice(c.text);
                        flush(out);
                    }
                }
            }
        }
        Format::Protobuf => {
            // One length-delimited MetricFamily: the length first (header plus every metric),
            // then the bytes, which may span several chunks.
            let mut header = Vec::new();
            encode_family_header(&mut header, &part.name, help.as_deref().unwrap_or(""), typ);
            match &ordered {
                Ordered::Whole => {
                    let len: usize = members
                        .iter()
                        .flat_map(|m| m.2.chunks())
                        .map(|c| c.proto.len())
                        .sum();
                    prost::encoding::encode_varint((header.len() + len) as u64, out);
                    out.extend_from_slice(&header);
                    for m in members {
                        for c in m.2.chunks() {
                            out.extend_from_slice(c.proto);
                        }
                        flush(out);
                    }
                }
                Ordered::Chunks(chunks) => {
                    let kept = dedup(chunks, stats);
                    let len: usize = kept.iter().map(|c| c.proto.len()).sum();
                    prost::encoding::encode_varint((header.len() + len) as u64, out);
                    out.extend_from_slice(&header);
                    for c in kept {
                        out.extend_from_slice(c.proto);
                        flush(out);
                    }
                }
            }
        }
    }
}

enum Ordered<'a> {
    /// Members' metric ranges do not interleave once members are sorted by their first key:
    /// copy each member whole.
    Whole,
    /// Every metric, sorted.
    Chunks(Vec<MetricChunk<'a>>),
}

fn order_members<'a>(members: &mut [&'a Member], key_ordered: bool) -> Ordered<'a> {
    if members.len() > 1 && !key_ordered {
        members.sort_by(|a, b| a.1.cmp(&b.1));
    }
    // Each member's first and last sort key, looked up once (not once per comparison).
    let mut keyed: Vec<(&'a [u8], &'a [u8], &'a Member)> = members
        .iter()
        .map(|m| {
            let (first, last) = m.2.key_range();
            (first, last, *m)
        })
        .collect();
    // A stable sort by first metric after key order: members with equal first keys stay in
    // key order, which keeps the dedup below deterministic.
    keyed.sort_by(|a, b| a.0.cmp(b.0));
    for (slot, k) in members.iter_mut().zip(&keyed) {
        *slot = k.2;
    }
    let disjoint = keyed.windows(2).all(|w| w[0].1 < w[1].0);
    if disjoint {
        return Ordered::Whole;
    }
    let mut chunks: Vec<MetricChunk<'a>> = members.iter().flat_map(|m| m.2.chunks()).collect();
    chunks.sort_by(|a, b| a.sort_key.cmp(b.sort_key));
    Ordered::Chunks(chunks)
}

/// The series part of a metric's first line: everything before the value.
fn series_id(text: &[u8]) -> &[u8] {
    let line_end = text.iter().position(|&b| b == b'\n').unwrap_or(text.len());
    let line = &text[..line_end];
    match line.iter().rposition(|&b| b == b' ') {
        Some(i) => &line[..i],
        None => line,
    }
}

/// Drops later copies of a series already written (equal sort key and identical series text).
fn dedup<'a>(chunks: &[MetricChunk<'a>], stats: &mut RenderStats) -> Vec<MetricChunk<'a>> {
    let mut out: Vec<MetricChunk<'a>> = Vec::with_capacity(chunks.len());
    for &c in chunks {
        let dup = out
            .iter()
            .rev()
            .take_while(|p| p.sort_key == c.sort_key)
            .any(|p| series_id(p.text) == series_id(c.text));
        if dup {
            stats.inconsistent_dropped += 1;
        } else {
            out.push(c);
        }
    }
    out
}
