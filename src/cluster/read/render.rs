//! Writing a merged scrape decided from the heads (`stream::MergedPlan`): this node's groups,
//! the push time families and every peer's families (`feed`) merged by name, each family in
//! the text format written as its members arrive (`MergedRender::family_sorted`).

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use super::feed::{PeerFeed, Reader, ShownKey, READ_AHEAD};
use super::stream::{Fast, Feed, MergedPlan, NOT_SHOWN};
use crate::exposition::MetricType;
use crate::store::prepare::{PUSH_FAILURE_TIME_METRIC, PUSH_TIME_METRIC};
use crate::store::render::{Format, MergedRender, RenderStats};
use crate::store::key::PackedKey;
use crate::store::{timing_family_of, GroupKey, MergedOrders, ReservedNames, StoredFamily};

/// The first member in key order that has series decides a family's type; the first HELP in
/// key order that is not empty is the family's (`lead_type`, `lead_help` of
/// `MergedRender::family_sorted`). Ranks are key order.
#[derive(Default)]
struct Lead {
    typ: Option<(u32, MetricType)>,
    help: Option<(u32, Arc<str>)>,
}

impl Lead {
    fn add(&mut self, rank: u32, typ: MetricType, help: &Arc<str>, empty: bool) {
        if !empty && self.typ.as_ref().is_none_or(|(r, _)| rank < *r) {
            self.typ = Some((rank, typ));
        }
        if !help.is_empty() && self.help.as_ref().is_none_or(|(r, _)| rank < *r) {
            self.help = Some((rank, help.clone()));
        }
    }
}

impl MergedPlan {
    /// Renders the view (on a blocking thread): this node's groups and every peer's families
    /// merged by name. In the text format each family is written as its members arrive, in the
    /// order the peers send them (`FamilyIndex`), so no family is held whole; the protobuf
    /// format, whose families start with their length, holds one family at a time. An error
    /// when a peer's stream fails or breaks its promises (order, declared size, decoding)
    /// after part of the exposition is written: the response cannot be completed.
    pub(crate) fn render(
        mut self,
        reserved: &ReservedNames,
        own: &[StoredFamily],
        format: Format,
        orders: Option<&MergedOrders>,
        chunk_size: usize,
        emit: &mut dyn FnMut(Vec<u8>),
    ) -> Result<RenderStats, String> {
        // Rank of each head in the view, per source.
        let mut ranks: Vec<Vec<u32>> = self
            .sources
            .iter()
            .map(|s| vec![NOT_SHOWN; s.heads.len()])
            .collect();
        for (r, &(s, i)) in self.view.iter().enumerate() {
            ranks[s as usize][i as usize] = r as u32;
        }
        let mut feeds = Vec::new();
        for (s, source) in self.sources.iter_mut().enumerate() {
            let Feed::Stream {
                peer,
                stream,
                declared,
                started,
            } = std::mem::replace(&mut source.feed, Feed::Held)
            else {
                continue;
            };
            let keys: Vec<(u32, Option<ShownKey>)> = source
                .heads
                .iter()
                .zip(&ranks[s])
                .map(|(h, &r)| {
                    let shown = h.as_ref().filter(|_| r != NOT_SHOWN);
                    (r, shown.map(|h| (h.key.clone(), PackedKey::of(&h.key))))
                })
                .collect();
            let reader = Reader {
                peer,
                declared,
                started,
                keys,
                names: self.names,
                deadline: self.chunk_deadline,
                runtime: self.runtime.clone(),
            };
            let (tx, rx) = tokio::sync::mpsc::channel(READ_AHEAD);
            self.runtime.spawn_blocking(move || reader.read(stream, tx));
            feeds.push(PeerFeed {
                rx,
                pending: VecDeque::new(),
                done: false,
                last: (Vec::new(), None),
            });
        }
        let head = |r: u32| {
            let (s, i) = self.view[r as usize];
            self.sources[s as usize].heads[i as usize]
                .as_ref()
                .expect("a shown head is present")
        };
        let family = |r: u32, fi: u32| &head(r).families[fi as usize].0;
        // The families of the groups held whole (this node's, a peer's that answered group by
        // group) by name, then rank: (name's place among the names, rank, family index), sorted
        // as numbers (a comparison through the names would look each one up again).
        let mut names: HashMap<&str, u32, Fast> = HashMap::default();
        for r in 0..self.view.len() as u32 {
            for (f, _) in &head(r).families {
                names.entry(&*f.name).or_insert(0);
            }
        }
        let mut sorted: Vec<&str> = names.keys().copied().collect();
        sorted.sort_unstable();
        for (i, n) in sorted.iter().enumerate() {
            names.insert(n, i as u32);
        }
        let mut held: Vec<(u32, u32, u32)> = Vec::new();
        for r in 0..self.view.len() as u32 {
            held.extend(
                head(r)
                    .families
                    .iter()
                    .enumerate()
                    .map(|(fi, (f, _))| (names[&*f.name], r, fi as u32)),
            );
        }
        held.sort_unstable();
        drop(names);
        let mut held = held.into_iter().map(|(_, r, fi)| (r, fi)).peekable();
        // Every shown group has the two push time families, built when written: their names
        // come up once each, and (text format) their members in sort key order.
        let mut timing: VecDeque<(&str, usize)> = if self.view.is_empty() {
            VecDeque::new()
        } else {
            VecDeque::from([(PUSH_FAILURE_TIME_METRIC, 1), (PUSH_TIME_METRIC, 0)])
        };
        let mut timing_order: Option<Arc<[u32]>> = None;
        let mut render = MergedRender::new(
            reserved,
            own,
            format,
            orders,
            chunk_size,
            chunk_size.saturating_add(64 * 1024).min(4 << 20),
            emit,
        );
        loop {
            // The least name any source has next.
            let mut next: Option<String> =
                held.peek().map(|&(r, fi)| family(r, fi).name.to_string());
            if let Some((name, _)) = timing.front() {
                if next.as_deref().is_none_or(|n| *name < n) {
                    next = Some((*name).to_owned());
                }
            }
            for feed in feeds.iter_mut() {
                if let Some(name) = feed.next_name()? {
                    if next.as_deref().is_none_or(|n| name < n) {
                        next = Some(name.to_owned());
                    }
                }
            }
            let Some(name) = next else { break };
            let mut mine: Vec<(u32, bool, StoredFamily)> = Vec::new();
            while let Some((r, fi)) = held.next_if(|&(r, fi)| *family(r, fi).name == *name) {
                mine.push((r, false, family(r, fi).clone()));
            }
            let timing_of = match timing.front() {
                Some(&(n, which)) if n == name => {
                    timing.pop_front();
                    Some(which)
                }
                _ => None,
            };
            if format == Format::Text {
                let mut lead = Lead::default();
                for (r, _, f) in &mine {
                    lead.add(*r, f.typ, &f.help, f.is_empty());
                }
                let mut lazy = None;
                if let Some(which) = timing_of {
                    // One per shown group, every one with a series and the same HELP: the
                    // first group's stands for all.
                    let first = timing_family_of(head(0), which);
                    lead.add(0, first.typ, &first.help, first.is_empty());
                    let order = timing_order
                        .get_or_insert_with(|| timing_sort_order(self.view.len(), |r| &head(r).key))
                        .clone();
                    lazy = Some(Lazy {
                        order,
                        at: 0,
                        build: Box::new(move |r| timing_family_of(head(r), which)),
                    });
                }
                let mut shown = !mine.is_empty() || lazy.is_some();
                for feed in feeds.iter_mut() {
                    if feed.next_name()? == Some(name.as_str()) {
                        let index = feed.pending.front_mut().and_then(|f| f.index.take());
                        for e in index.iter().flatten() {
                            lead.add(e.rank, e.typ, &e.help, e.empty);
                            shown = true;
                        }
                    }
                }
                // Held members in the order the peers send theirs (each first key looked up
                // once; ranks are unique, so the order is total).
                let mut keyed: Vec<(&[u8], u32, usize)> = mine
                    .iter()
                    .enumerate()
                    .map(|(i, (r, _, f))| (f.key_range().0, *r, i))
                    .collect();
                keyed.sort_unstable();
                let order: Vec<usize> = keyed.into_iter().map(|k| k.2).collect();
                let mut taken: Vec<Option<_>> = mine.into_iter().map(Some).collect();
                let mine: Vec<_> = order.into_iter().filter_map(|i| taken[i].take()).collect();
                let mut merge = FamilyMerge::new(&name, mine, lazy, &mut feeds)?;
                if shown {
                    render.family_sorted(
                        crate::store::family::intern(&name),
                        lead.typ.map(|(_, t)| t),
                        lead.help.map(|(_, h)| h),
                        &mut || merge.next(),
                    )?;
                } else {
                    while merge.next()?.is_some() {}
                }
                continue;
            }
            let mut members = mine;
            if let Some(which) = timing_of {
                let count = self.view.len() as u32;
                members.extend((0..count).map(|r| (r, true, timing_family_of(head(r), which))));
            }
            for feed in feeds.iter_mut() {
                while let Some((r, f)) = feed.take_member(&name)? {
                    members.push((r, false, f));
                }
            }
            if members.is_empty() {
                continue;
            }
            members.sort_unstable_by_key(|m| (m.0, m.1));
            let name: Arc<str> = members[0].2.name.clone();
            let members = members
                .into_iter()
                .map(|(r, _, f)| (head(r).key.clone(), f))
                .collect();
            render.family(name, members);
        }
        Ok(render.finish(self.dropped))
    }
}

/// The ranks `0..count` in the order of their groups' push time series (sort key, then rank),
/// from the keys alone: the families are built one at a time as they are written.
fn timing_sort_order<'k>(count: usize, key: impl Fn(u32) -> &'k Arc<GroupKey>) -> Arc<[u32]> {
    let mut keys: Vec<u8> = Vec::new();
    let mut ends: Vec<(u32, u32)> = Vec::with_capacity(count);
    for r in 0..count as u32 {
        let start = keys.len() as u32;
        crate::store::timing_sort_key(key(r), &mut keys);
        ends.push((start, keys.len() as u32));
    }
    let at = |r: u32| {
        let (s, e) = ends[r as usize];
        &keys[s as usize..e as usize]
    };
    let mut order: Vec<u32> = (0..count as u32).collect();
    order.sort_by(|&a, &b| (at(a), a).cmp(&(at(b), b)));
    order.into()
}

/// Members built as they are taken, in a precomputed order of ranks.
struct Lazy<'a> {
    order: Arc<[u32]>,
    at: usize,
    build: Box<dyn Fn(u32) -> StoredFamily + 'a>,
}

/// One family's members from every source, merged in the order a render writes whole members
/// in (first series' sort key, then rank): each source's next member waits in a slot.
struct FamilyMerge<'a, 'f> {
    name: &'a str,
    mine: std::vec::IntoIter<(u32, bool, StoredFamily)>,
    lazy: Option<Lazy<'a>>,
    feeds: &'f mut [PeerFeed],
    /// Slot 0: this node's next member; slot 1: the next built one; slot i + 2: feed i's.
    /// (rank, member).
    slots: Vec<Option<(u32, StoredFamily)>>,
    /// The first series' sort key of each slot's member (compared on every step).
    firsts: Vec<Vec<u8>>,
}

impl<'a, 'f> FamilyMerge<'a, 'f> {
    fn new(
        name: &'a str,
        mine: Vec<(u32, bool, StoredFamily)>,
        lazy: Option<Lazy<'a>>,
        feeds: &'f mut [PeerFeed],
    ) -> Result<Self, String> {
        let mut merge = FamilyMerge {
            name,
            mine: mine.into_iter(),
            lazy,
            slots: vec![None; feeds.len() + 2],
            firsts: vec![Vec::new(); feeds.len() + 2],
            feeds,
        };
        for i in 0..merge.slots.len() {
            merge.fill(i)?;
        }
        Ok(merge)
    }

    fn fill(&mut self, i: usize) -> Result<(), String> {
        self.slots[i] = match i {
            0 => self.mine.next().map(|(r, _, f)| (r, f)),
            1 => self.lazy.as_mut().and_then(|l| {
                let r = *l.order.get(l.at)?;
                l.at += 1;
                Some((r, (l.build)(r)))
            }),
            _ => self.feeds[i - 2].take_ordered(self.name)?,
        };
        if let Some((_, f)) = &self.slots[i] {
            self.firsts[i].clear();
            self.firsts[i].extend_from_slice(f.key_range().0);
        }
        Ok(())
    }

    fn next(&mut self) -> Result<Option<StoredFamily>, String> {
        let least = self
            .slots
            .iter()
            .enumerate()
            .filter_map(|(i, s)| s.as_ref().map(|(r, _)| (i, (self.firsts[i].as_slice(), *r))))
            .min_by(|a, b| a.1.cmp(&b.1))
            .map(|(i, _)| i);
        let Some(i) = least else { return Ok(None) };
        let taken = self.slots[i].take().map(|(_, f)| f);
        self.fill(i)?;
        Ok(taken)
    }
}

