//! Scrape rendering: families in name order, HELP/TYPE once, then every group's pre-encoded
//! metrics in upstream's order. Rendered text of a family is cached until the family changes,
//! so scraping a store that did not change is mostly copying bytes.

use std::collections::HashMap;
use std::sync::Arc;

use bytes::Bytes;

use super::family::{encode_family_header, MetricChunk, StoredFamily};
use super::{GroupKey, Store};
use crate::exposition;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Text,
    /// Varint-delimited `MetricFamily` messages.
    Protobuf,
}

#[derive(Default)]
pub struct RenderCache {
    text: HashMap<Arc<str>, (u64, Bytes)>,
}

impl RenderCache {
    pub fn clear(&mut self) {
        self.text.clear();
    }
}

/// Counts from one render, for self-metrics.
#[derive(Debug, Default, Clone, Copy)]
pub struct RenderStats {
    pub families: usize,
    pub cached_families: usize,
    /// Members dropped because their type disagreed with the family's (only possible with the
    /// consistency check disabled, or in a cluster race) or duplicate series.
    pub inconsistent_dropped: usize,
}

type Member = (Arc<GroupKey>, Arc<StoredFamily>);

enum Part {
    Cached(Bytes),
    Render {
        name: Arc<str>,
        /// Help text that wins over the members' (a self-metric's own or a reserved name's).
        help: Option<Arc<str>>,
        members: Vec<Member>,
        /// `Some(seq)` when the result may be cached under that change number.
        cache_as: Option<u64>,
    },
}

impl Store {
    /// Writes the whole exposition: stored families merged with `own` (the gateway's own
    /// families, sorted by name, each with one member).
    pub fn render(
        &self,
        format: Format,
        own: &[Arc<StoredFamily>],
        out: &mut Vec<u8>,
    ) -> RenderStats {
        let mut stats = RenderStats::default();
        let parts = self.plan(format, own, &mut stats);
        let mut fresh: Vec<(Arc<str>, u64, Bytes)> = Vec::new();
        for part in parts {
            match part {
                Part::Cached(b) => out.extend_from_slice(&b),
                Part::Render {
                    name,
                    help,
                    members,
                    cache_as,
                } => {
                    let start = out.len();
                    let wrote = render_family(format, &name, help, members, out, &mut stats);
                    if let (Some(seq), true) = (cache_as, wrote) {
                        fresh.push((name, seq, Bytes::copy_from_slice(&out[start..])));
                    } else if let (Some(seq), false) = (cache_as, wrote) {
                        fresh.push((name, seq, Bytes::new()));
                    }
                }
            }
        }
        if !fresh.is_empty() {
            let mut cache = self.render_cache.lock();
            for (name, seq, bytes) in fresh {
                cache.text.insert(name, (seq, bytes));
            }
            // Forget families that no longer exist, so the cache cannot grow without bound.
            if cache.text.len() > stats.families.saturating_mul(2).max(64) {
                let inner = self.inner.read();
                cache.text.retain(|n, _| inner.index.contains_key(n));
            }
        }
        stats
    }

    fn plan(
        &self,
        format: Format,
        own: &[Arc<StoredFamily>],
        stats: &mut RenderStats,
    ) -> Vec<Part> {
        let inner = self.inner.read();
        let cache = self.render_cache.lock();
        let mut parts = Vec::with_capacity(inner.index.len() + own.len());
        let mut own_iter = own.iter().peekable();
        let empty_key = Arc::new(GroupKey::new(std::iter::empty()));
        for (name, entry) in inner.index.iter() {
            while let Some(o) = own_iter.next_if(|o| o.name < *name) {
                parts.push(own_part(o, &empty_key));
            }
            stats.families += 1;
            let own_same = own_iter.next_if(|o| o.name == *name);
            if own_same.is_none() && format == Format::Text {
                if let Some((seq, bytes)) = cache.text.get(name) {
                    if *seq == entry.changed {
                        stats.cached_families += 1;
                        parts.push(Part::Cached(bytes.clone()));
                        continue;
                    }
                }
            }
            let mut members: Vec<Member> = Vec::with_capacity(entry.members.len() + 1);
            let mut help = self
                .opts
                .reserved
                .get(name)
                .map(|(_, h)| Arc::<str>::from(h));
            if let Some(o) = own_same {
                help = Some(o.help.clone());
                members.push((empty_key.clone(), o.clone()));
            }
            members.extend(entry.members.values().cloned());
            parts.push(Part::Render {
                name: name.clone(),
                help,
                members,
                cache_as: (own_same.is_none() && format == Format::Text).then_some(entry.changed),
            });
        }
        for o in own_iter {
            parts.push(own_part(o, &empty_key));
        }
        parts
    }
}

fn own_part(o: &Arc<StoredFamily>, empty_key: &Arc<GroupKey>) -> Part {
    Part::Render {
        name: o.name.clone(),
        help: Some(o.help.clone()),
        members: vec![(empty_key.clone(), o.clone())],
        cache_as: None,
    }
}

/// Renders one family; returns false when it had nothing to expose (then nothing is written).
fn render_family(
    format: Format,
    name: &str,
    help: Option<Arc<str>>,
    mut members: Vec<Member>,
    out: &mut Vec<u8>,
    stats: &mut RenderStats,
) -> bool {
    members.retain(|(_, f)| !f.is_empty());
    if members.is_empty() {
        return false;
    }
    // Key order makes every choice below deterministic. The gateway's own member (empty key)
    // sorts first, so its type and help win.
    members.sort_by(|a, b| a.0.cmp(&b.0));
    // Groups can disagree on a name's type only with the consistency check disabled (or when a
    // cluster race slipped past it): the first group in key order decides, the others are left
    // out of the scrape and counted.
    let typ = members[0].1.typ;
    let before = members.len();
    members.retain(|(_, f)| f.typ == typ);
    stats.inconsistent_dropped += before - members.len();
    // Deterministic HELP (upstream picks one at random, bug 4): the first group in key order
    // that has help.
    let help = help.or_else(|| {
        members
            .iter()
            .find(|(_, f)| !f.help.is_empty())
            .map(|(_, f)| f.help.clone())
    });
    let ordered = order_members(&mut members);
    match format {
        Format::Text => {
            exposition::write_help_and_type(
                out,
                name,
                help.as_deref().filter(|h| !h.is_empty()),
                typ,
            );
            match ordered {
                Ordered::Whole => {
                    for (_, f) in &members {
                        out.extend_from_slice(f.text());
                    }
                }
                Ordered::Chunks(chunks) => {
                    for c in dedup(chunks, stats) {
                        out.extend_from_slice(c.text);
                    }
                }
            }
        }
        Format::Protobuf => {
            let mut msg = Vec::new();
            encode_family_header(&mut msg, name, help.as_deref().unwrap_or(""), typ);
            match ordered {
                Ordered::Whole => {
                    for (_, f) in &members {
                        for c in f.chunks() {
                            msg.extend_from_slice(c.proto);
                        }
                    }
                }
                Ordered::Chunks(chunks) => {
                    for c in dedup(chunks, stats) {
                        msg.extend_from_slice(c.proto);
                    }
                }
            }
            prost::encoding::encode_varint(msg.len() as u64, out);
            out.extend_from_slice(&msg);
        }
    }
    true
}

enum Ordered<'a> {
    /// Members' metric ranges do not interleave once members are sorted by their first key:
    /// copy each member whole.
    Whole,
    /// Every metric, sorted.
    Chunks(Vec<MetricChunk<'a>>),
}

fn first_key(f: &StoredFamily) -> &[u8] {
    f.chunks().next().map(|c| c.sort_key).unwrap_or(&[])
}

fn last_key(f: &StoredFamily) -> &[u8] {
    f.chunks().last().map(|c| c.sort_key).unwrap_or(&[])
}

fn order_members(members: &mut [Member]) -> Ordered<'_> {
    if members.len() > 1 {
        // Stable, so members with equal first keys stay in key order (deterministic dedup).
        members.sort_by(|a, b| first_key(&a.1).cmp(first_key(&b.1)));
    }
    let disjoint = members
        .windows(2)
        .all(|w| last_key(&w[0].1) < first_key(&w[1].1));
    if disjoint {
        return Ordered::Whole;
    }
    let mut chunks: Vec<MetricChunk<'_>> = members.iter().flat_map(|(_, f)| f.chunks()).collect();
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
fn dedup<'a>(chunks: Vec<MetricChunk<'a>>, stats: &mut RenderStats) -> Vec<MetricChunk<'a>> {
    let mut out: Vec<MetricChunk<'a>> = Vec::with_capacity(chunks.len());
    for c in chunks {
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
