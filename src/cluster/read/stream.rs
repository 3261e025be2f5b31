//! A merged scrape rendered as the peers' answers stream in, family by family: the peers send
//! their groups' heads first (`CollectRequest.by_family`), the collecting node decides from the
//! heads alone which copy of each group the view shows (newest wins, a newer tombstone hides
//! it) and where it goes in key order, then merges the peers' families in name order with its
//! own and renders each family as soon as every source has passed its name. No peer's groups
//! are held whole; what a peer sent is dropped once its families are written.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use prost::Message;
use tokio::task::JoinSet;
use tonic::Status;

use super::super::core::ClusterCore;
use super::super::events::{ClusterEvent, PeerRefusal};
use super::super::rpc::{client, pb, wire};
use super::collect::{missing_deferred, ScrapeBudget};
use super::merge::decode_chunks;
use crate::exposition::{MetricType, NameScheme};
use crate::gateway::ScrapeRefused;
use crate::store::family::SharedBlock;
use crate::store::prepare::{PUSH_FAILURE_TIME_METRIC, PUSH_TIME_METRIC};
use crate::store::render::{kept_keys, Format, MergedRender, RenderStats};
use crate::store::{
    timing_family_of, GroupKey, GroupSnapshot, MergedOrders, ReservedNames, StoredFamily,
};
use crate::telemetry::metrics as m;

type Fast = foldhash::fast::RandomState;

/// A head's rank when the view does not show that copy.
const NOT_SHOWN: u32 = u32::MAX;

/// Decoded family chunks a peer's reader may hold ahead of the render.
const READ_AHEAD: usize = 2;

/// A source's group copies by head index: key, version and push times; the families too when
/// the source is held whole. `None`: a copy left out (dated beyond the allowed clock skew).
type Heads = Vec<Option<GroupSnapshot>>;

/// Where a source's families come from.
enum Feed {
    /// Held whole in the heads: this node's groups, or a peer's that answered group by group
    /// (a release that predates `by_family`).
    Held,
    /// A peer's stream after its heads, which declared `declared` bytes of families.
    Stream {
        peer: String,
        stream: tonic::Streaming<pb::CollectChunk>,
        declared: u64,
        started: Instant,
    },
}

struct Source {
    heads: Heads,
    feed: Feed,
}

/// What one collect call answered before its families: every chunk of a group-by-group
/// answer, or the heads part of a family-by-family one and the stream still open.
enum Answer {
    Groups(Vec<pb::CollectChunk>),
    Families(Vec<pb::CollectChunk>, tonic::Streaming<pb::CollectChunk>),
}

/// A merged scrape decided from the heads, its families still to come.
pub(crate) struct MergedPlan {
    sources: Vec<Source>,
    /// The groups shown, in key order: (source, head index).
    view: Vec<(u32, u32)>,
    /// Groups left out as colliding with an earlier key (counted as inconsistent).
    dropped: usize,
    names: NameScheme,
    /// How long the render waits for a peer's next chunk before giving the scrape up.
    chunk_deadline: Duration,
    runtime: tokio::runtime::Handle,
}

impl ClusterCore {
    /// Collects the heads of every group in the cluster (this node's own, and the peers' in
    /// the same round of calls as `merged_groups`, follow-ups for deferred groups included) and
    /// decides the view; the families follow in [`MergedPlan::render`]. Refused, like
    /// `merged_groups`, when the peers' answers would pass `--cluster.max-scrape-bytes`: each
    /// peer declares its families' bytes with its heads.
    pub(crate) async fn merged_plan(
        &self,
        format: Format,
        deadline: Duration,
    ) -> Result<MergedPlan, ScrapeRefused> {
        let started = Instant::now();
        let text_only = matches!(format, Format::Text);
        let budget = Arc::new(ScrapeBudget::new(self.bounds.max_scrape_bytes));
        let ring = self.ring();
        let local = self.store.snapshot_where(|_, _| true);
        let peers: Vec<_> = ring
            .members
            .iter()
            .filter(|m| m.id != self.self_id)
            .collect();
        let req = pb::CollectRequest {
            held_keys: local.iter().map(|g| g.key.stable_hash()).collect(),
            held_versions: local.iter().map(|g| g.version).collect(),
            text_only,
            responders: peers.iter().map(|m| m.id.to_string()).collect(),
            only_keys: Vec::new(),
            by_family: true,
        };
        let calls = peers
            .iter()
            .map(|m| (m.id.to_string(), m.grpc_addr, req.clone()))
            .collect();
        let running = self.start_family_collect(calls, deadline, started, &budget);
        let mut sources = vec![Source {
            heads: local.into_iter().map(Some).collect(),
            feed: Feed::Held,
        }];
        let mut tombstones = self.store.tombstones();
        let names = self.names();
        let newest_allowed = self.clock.newest_allowed();
        let answers = finish_family_collect(running).await;
        budget.check()?;
        let deferred =
            add_answers(&mut sources, &mut tombstones, answers, names, newest_allowed).await;
        let mut newest = newest_of(&sources, &tombstones);
        if !deferred.is_empty() {
            // As in `merged_groups`: groups left to a peer that did not deliver them are asked
            // for once more, from the peers that deferred them.
            let have: HashMap<u64, u64, Fast> = newest
                .iter()
                .map(|(k, (v, _))| (k.stable_hash(), *v))
                .collect();
            let missing = missing_deferred(
                deferred.iter().map(|(id, d)| (id.as_str(), d.as_slice())),
                &have,
            );
            let calls: Vec<_> = missing
                .into_iter()
                .filter_map(|(id, keys)| {
                    let m = peers.iter().find(|m| m.id.as_str() == id)?;
                    metrics::counter!(m::COLLECT_FOLLOW_UPS_TOTAL).increment(1);
                    let req = pb::CollectRequest {
                        text_only,
                        only_keys: keys,
                        by_family: true,
                        ..Default::default()
                    };
                    Some((id.to_owned(), m.grpc_addr, req))
                })
                .collect();
            if !calls.is_empty() {
                let left = deadline.saturating_sub(started.elapsed()).max(deadline / 2);
                let running = self.start_family_collect(calls, left, Instant::now(), &budget);
                let again = finish_family_collect(running).await;
                budget.check()?;
                add_answers(&mut sources, &mut tombstones, again, names, newest_allowed).await;
                newest = newest_of(&sources, &tombstones);
            }
        }
        // A peer that missed a wipe this node knows of serves its pre-wipe copies until its
        // next round learns the wipe: they stay out of the view.
        let wiped_at = self.store.wiped_at();
        let mut shown: Vec<(Arc<GroupKey>, u32, u32)> = newest
            .into_iter()
            .filter_map(|(k, (v, at))| at.filter(|_| v > wiped_at).map(|(s, i)| (k, s, i)))
            .collect();
        shown.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        let mut dropped = 0;
        if let Some(kept) = kept_keys(shown.iter().map(|s| &*s.0), true) {
            let before = shown.len();
            let mut kept = kept.into_iter();
            shown.retain(|_| kept.next().unwrap_or(false));
            dropped = before - shown.len();
        }
        metrics::histogram!(m::SCRAPE_MERGE_DURATION_SECONDS)
            .record(started.elapsed().as_secs_f64());
        Ok(MergedPlan {
            sources,
            view: shown.into_iter().map(|(_, s, i)| (s, i)).collect(),
            dropped,
            names,
            chunk_deadline: deadline,
            runtime: tokio::runtime::Handle::current(),
        })
    }

    /// Starts family-by-family collect calls: each returns once the peer's heads are in (or
    /// its whole answer, from a peer that answers group by group), within `deadline`.
    fn start_family_collect(
        &self,
        calls: Vec<(String, SocketAddr, pb::CollectRequest)>,
        deadline: Duration,
        started: Instant,
        budget: &Arc<ScrapeBudget>,
    ) -> JoinSet<Option<(String, Answer, Instant)>> {
        let mut running = JoinSet::new();
        for (id, addr, req) in calls {
            let mut client = self.clients.collect_client(addr);
            let budget = budget.clone();
            running.spawn(async move {
                let call = async {
                    let mut stream = client
                        .collect(client::request(req, deadline))
                        .await?
                        .into_inner();
                    let mut chunks = Vec::new();
                    let over = || {
                        Status::resource_exhausted(
                            "the merged scrape holds --cluster.max-scrape-bytes already",
                        )
                    };
                    while let Some(c) = stream.message().await? {
                        if !budget.take(c.encoded_len()) {
                            return Err(over());
                        }
                        if c.heads_end {
                            // The families to come count now, so that a scrape that would pass
                            // the limit is refused before any of it is written.
                            let declared = usize::try_from(c.family_bytes).unwrap_or(usize::MAX);
                            if !budget.take(declared) {
                                return Err(over());
                            }
                            chunks.push(c);
                            return Ok(Answer::Families(chunks, stream));
                        }
                        chunks.push(c);
                    }
                    Ok::<_, Status>(Answer::Groups(chunks))
                };
                let res = match tokio::time::timeout(deadline, call).await {
                    Ok(Ok(answer)) => Ok(answer),
                    Ok(Err(status)) => Err(status.to_string()),
                    Err(_) => Err("deadline exceeded".to_owned()),
                };
                // A call whose families are still to come ends when they are read (`feed`).
                if !matches!(res, Ok(Answer::Families(..))) {
                    collect_ended(&id, started, res.as_ref().err().map(String::as_str));
                }
                res.ok().map(|answer| (id, answer, started))
            });
        }
        running
    }
}

fn collect_ended(peer: &str, started: Instant, error: Option<&str>) {
    let seconds = started.elapsed().as_secs_f64();
    metrics::histogram!(m::PEER_RPC_DURATION_SECONDS, "rpc" => "collect").record(seconds);
    ClusterEvent::CollectEnded {
        peer,
        seconds,
        error,
    }
    .emit();
}

async fn finish_family_collect(
    mut running: JoinSet<Option<(String, Answer, Instant)>>,
) -> Vec<(String, Answer, Instant)> {
    let mut answers = Vec::new();
    while let Some(done) = running.join_next().await {
        if let Ok(Some(answer)) = done {
            answers.push(answer);
        }
    }
    answers
}

/// Decodes the answers' heads (or whole groups) on the blocking pool, one peer each, adding a
/// source per answer and the tombstones; returns each peer's deferred groups. An answer that
/// cannot be decoded adds nothing (its groups come from other owners).
async fn add_answers(
    sources: &mut Vec<Source>,
    tombstones: &mut Vec<(GroupKey, u64)>,
    answers: Vec<(String, Answer, Instant)>,
    names: NameScheme,
    newest_allowed: u64,
) -> Vec<(String, Vec<(u64, u64)>)> {
    let mut deferred = Vec::new();
    let mut decoding = JoinSet::new();
    for (peer, answer, started) in answers {
        let chunks = match &answer {
            Answer::Groups(c) | Answer::Families(c, _) => c,
        };
        let d: Vec<(u64, u64)> = chunks
            .iter()
            .flat_map(|c| {
                c.deferred_keys
                    .iter()
                    .copied()
                    .zip(c.deferred_versions.iter().copied())
            })
            .collect();
        if !d.is_empty() {
            deferred.push((peer.clone(), d));
        }
        decoding.spawn_blocking(move || {
            let decoded = match answer {
                Answer::Groups(chunks) => decode_chunks(chunks, names, newest_allowed)
                    .map(|c| (c.groups.into_iter().map(Some).collect(), c.tombstones, Feed::Held)),
                Answer::Families(chunks, stream) => {
                    decode_heads(chunks, names, newest_allowed).map(|(heads, t, declared)| {
                        let feed = Feed::Stream {
                            peer: peer.clone(),
                            stream,
                            declared,
                            started,
                        };
                        (heads, t, feed)
                    })
                }
            };
            decoded.map_err(|e| {
                tracing::debug!(peer = %peer, err = %e, "collect answer undecodable; its groups come from replicas");
            })
        });
    }
    while let Some(done) = decoding.join_next().await {
        if let Ok(Ok((heads, t, feed))) = done {
            sources.push(Source { heads, feed });
            tombstones.extend(t);
        }
    }
    deferred
}

/// The heads part of a family-by-family answer: the group heads (a head dated beyond
/// `newest_allowed` is left out, counted), the tombstones and the family bytes declared.
fn decode_heads(
    chunks: Vec<pb::CollectChunk>,
    names: NameScheme,
    newest_allowed: u64,
) -> Result<(Heads, Vec<(GroupKey, u64)>, u64), String> {
    let future = |what: &str, version: u64| {
        let future = version > newest_allowed;
        if future {
            super::super::core::refuse_peer(
                PeerRefusal::FutureVersion,
                format!("collected {what} dated beyond --cluster.max-clock-skew; left out"),
            );
        }
        future
    };
    let mut heads = Vec::new();
    let mut tombstones = Vec::new();
    let mut declared = 0;
    for c in chunks {
        if !c.groups.is_empty() || !c.families.is_empty() {
            return Err("a collect answer's heads carry groups or families".into());
        }
        declared = c.family_bytes;
        for h in c.heads {
            let key = wire::key_from_pb(h.key, names)?;
            heads.push((!future("group", h.version)).then(|| GroupSnapshot {
                key: Arc::new(key),
                families: Vec::new(),
                push_time: h.push_time,
                failure_time: h.failure_time,
                last_push_successful: false,
                aggregating: false,
                ttl: 0.0,
                version: h.version,
                stamps: Default::default(),
                timing: None,
            }));
        }
        for t in c.tombstones {
            let key = wire::key_from_pb(t.key, names)?;
            if !future("tombstone", t.version) {
                tombstones.push((key, t.version));
            }
        }
    }
    if u32::try_from(heads.len()).is_err() {
        return Err("too many group heads".into());
    }
    Ok((heads, tombstones, declared))
}

/// The newest version of each group over every source and tombstone: `None` for a tombstone,
/// else the (source, head index) that holds it (of copies of one version, the first source's).
/// A tombstone hides a group of the same or an older version.
type Newest = HashMap<Arc<GroupKey>, (u64, Option<(u32, u32)>), Fast>;

fn newest_of(sources: &[Source], tombstones: &[(GroupKey, u64)]) -> Newest {
    let count: usize = sources.iter().map(|s| s.heads.len()).sum();
    let mut newest = Newest::with_capacity_and_hasher(count + tombstones.len(), Fast::default());
    for (k, v) in tombstones {
        let k = Arc::new(k.clone());
        match newest.get(&k) {
            Some((cur, _)) if *cur > *v => {}
            _ => {
                newest.insert(k, (*v, None));
            }
        }
    }
    for (s, source) in sources.iter().enumerate() {
        for (i, h) in source.heads.iter().enumerate() {
            let Some(h) = h else { continue };
            match newest.get(&h.key) {
                Some((cur, _)) if *cur >= h.version => {}
                _ => {
                    newest.insert(h.key.clone(), (h.version, Some((s as u32, i as u32))));
                }
            }
        }
    }
    newest
}

/// A member's entry in its name's `FamilyIndex`, for a copy the view shows.
#[derive(Debug)]
struct Entry {
    rank: u32,
    typ: MetricType,
    help: Arc<str>,
    empty: bool,
}

/// One family name's members from a peer's chunk, those the view shows: (rank, family), in
/// the order sent; the first run of a name carries the index entries of the copies shown.
#[derive(Debug)]
struct PeerFamily {
    name: String,
    index: Option<Vec<Entry>>,
    members: VecDeque<(u32, StoredFamily)>,
}

/// What a peer's reader hands the render: a chunk's families, or why the answer is given up.
type Fed = Result<Vec<PeerFamily>, String>;

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
            let keys: Vec<(u32, Option<Arc<GroupKey>>)> = source
                .heads
                .iter()
                .zip(&ranks[s])
                .map(|(h, &r)| (r, h.as_ref().map(|h| h.key.clone())))
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

/// The render's end of a peer's reader: decoded families not yet merged.
struct PeerFeed {
    rx: tokio::sync::mpsc::Receiver<Fed>,
    pending: VecDeque<PeerFamily>,
    done: bool,
    /// The first sort key and rank of the last member taken in order (`take_ordered`).
    last: (Vec<u8>, Option<u32>),
}

impl PeerFeed {
    /// The name of the next family this peer sends, waiting for its next chunk if need be;
    /// `None` once its answer is over.
    fn next_name(&mut self) -> Result<Option<&str>, String> {
        while self.pending.is_empty() && !self.done {
            match self.rx.blocking_recv() {
                Some(Ok(families)) => self.pending.extend(families),
                Some(Err(e)) => return Err(e),
                None => self.done = true,
            }
        }
        Ok(self.pending.front().map(|f| f.name.as_str()))
    }

    /// The next member of family `name` from this peer (rank, family), `None` after its last.
    fn take_member(&mut self, name: &str) -> Result<Option<(u32, StoredFamily)>, String> {
        while self.next_name()? == Some(name) {
            let front = self.pending.front_mut().expect("a family is pending");
            if let Some(m) = front.members.pop_front() {
                return Ok(Some(m));
            }
            self.pending.pop_front();
        }
        Ok(None)
    }

    /// [`Self::take_member`], checking that the peer keeps the order its index promised: by
    /// first series' sort key, then key order.
    fn take_ordered(&mut self, name: &str) -> Result<Option<(u32, StoredFamily)>, String> {
        let Some((r, f)) = self.take_member(name)? else {
            self.last = (Vec::new(), None);
            return Ok(None);
        };
        let first = f.key_range().0;
        if let (prev, Some(prev_rank)) = &self.last {
            if (first, r) <= (prev.as_slice(), *prev_rank) {
                return Err(format!(
                    "a peer sent family {name:?} out of order; the response is incomplete"
                ));
            }
        }
        self.last.0.clear();
        self.last.0.extend_from_slice(first);
        self.last.1 = Some(r);
        Ok(Some((r, f)))
    }
}

/// Reads a peer's families after its heads (on a blocking thread of its own, so that peers'
/// chunks are decoded in parallel with each other and with the render), checking every promise
/// of `CollectChunk.families` but the order within a name (the render checks that), and hands
/// them to the render a few chunks ahead.
struct Reader {
    peer: String,
    declared: u64,
    started: Instant,
    /// Per head index: its rank in the view (`NOT_SHOWN`: its families are skipped, not
    /// decoded) and its key.
    keys: Vec<(u32, Option<Arc<GroupKey>>)>,
    names: NameScheme,
    deadline: Duration,
    runtime: tokio::runtime::Handle,
}

/// Where a peer's answer stands: the name being sent, its index (head index, type, HELP and
/// emptiness of each member, in order) and how many members of it came.
#[derive(Default)]
struct Progress {
    name: Option<String>,
    index: Vec<(u32, MetricType, Arc<str>, bool)>,
    came: usize,
    /// Per head index, the number of the name whose index listed it last (1 for the first
    /// name): a group twice in one index breaks the answer.
    listed: Vec<u32>,
    names: u32,
}

impl Reader {
    fn read(
        self,
        mut stream: tonic::Streaming<pb::CollectChunk>,
        tx: tokio::sync::mpsc::Sender<Fed>,
    ) {
        let mut received: u64 = 0;
        let mut progress = Progress {
            listed: vec![0; self.keys.len()],
            ..Default::default()
        };
        let res = loop {
            let next = self
                .runtime
                .block_on(tokio::time::timeout(self.deadline, stream.message()));
            let chunk = match next {
                Ok(Ok(Some(c))) => c,
                Ok(Ok(None)) if progress.came == progress.index.len() => break Ok(()),
                Ok(Ok(None)) => break Err("the answer ended inside a family".to_owned()),
                Ok(Err(status)) => break Err(status.to_string()),
                Err(_) => break Err("deadline exceeded between chunks".to_owned()),
            };
            received = received.saturating_add(chunk.encoded_len() as u64);
            if received > self.declared {
                break Err(format!(
                    "sent more family bytes than the {} it declared",
                    self.declared
                ));
            }
            match self.decode(chunk, &mut progress) {
                Ok(families) => {
                    if tx.blocking_send(Ok(families)).is_err() {
                        // The render is over (it failed elsewhere): stop reading.
                        break Ok(());
                    }
                }
                Err(e) => {
                    super::super::core::refuse_decoded(e.clone());
                    break Err(e);
                }
            }
        };
        collect_ended(
            &self.peer,
            self.started,
            res.as_ref().err().map(String::as_str),
        );
        if let Err(e) = res {
            let _ = tx.blocking_send(Err(format!(
                "the merged scrape lost peer {}'s answer midway ({e}); the response is incomplete",
                self.peer
            )));
        }
    }

    /// A new name's index, checked: names strictly ascending, the previous name complete, one
    /// entry per member with a valid type and HELP, each head existing and listed once.
    fn start_name(
        &self,
        name: &str,
        index: Option<pb::FamilyIndex>,
        progress: &mut Progress,
    ) -> Result<Vec<Entry>, String> {
        if progress.name.as_deref().is_some_and(|n| name <= n) {
            return Err(format!("family {name:?} out of order"));
        }
        if progress.came != progress.index.len() {
            return Err(format!("family {name:?} before the last one ended"));
        }
        let index = index.ok_or_else(|| format!("family {name:?} without its index"))?;
        let n = index.groups.len();
        if index.types.len() != n || index.helps.len() != n || index.empty.len() != n {
            return Err(format!("family {name:?} with an index of unmatched lengths"));
        }
        progress.names += 1;
        progress.name = Some(name.to_owned());
        progress.came = 0;
        progress.index.clear();
        let helps: Vec<Arc<str>> = index
            .help_texts
            .iter()
            .map(|h| crate::store::family::intern(h))
            .collect();
        let mut shown = Vec::new();
        for i in 0..n {
            let gi = index.groups[i];
            let listed = progress
                .listed
                .get_mut(gi as usize)
                .ok_or_else(|| format!("family {name:?} of a group without a head"))?;
            if *listed == progress.names {
                return Err(format!("family {name:?} lists a group twice"));
            }
            *listed = progress.names;
            let typ = i32::try_from(index.types[i])
                .ok()
                .and_then(|t| MetricType::try_from(t).ok())
                .ok_or_else(|| format!("family {name:?} with an unknown type"))?;
            let help = helps
                .get(index.helps[i] as usize)
                .ok_or_else(|| format!("family {name:?} with a HELP out of its index"))?
                .clone();
            let rank = self.keys[gi as usize].0;
            if rank != NOT_SHOWN {
                shown.push(Entry {
                    rank,
                    typ,
                    help: help.clone(),
                    empty: index.empty[i],
                });
            }
            progress.index.push((gi, typ, help, index.empty[i]));
        }
        Ok(shown)
    }

    /// One chunk's families, checked: only families, each run following its name's index,
    /// every member a valid family of its group matching its index entry. Members of copies
    /// the view does not show are skipped.
    fn decode(
        &self,
        c: pb::CollectChunk,
        progress: &mut Progress,
    ) -> Result<Vec<PeerFamily>, String> {
        if !c.groups.is_empty()
            || !c.heads.is_empty()
            || !c.tombstones.is_empty()
            || c.heads_end
            || !c.deferred_keys.is_empty()
        {
            return Err("a collect answer's families carry heads or groups".into());
        }
        let mut out = Vec::with_capacity(c.families.len());
        for fam in c.families {
            let index = if progress.name.as_deref() == Some(fam.name.as_str()) {
                if fam.index.is_some() {
                    return Err(format!("family {:?} indexed twice", fam.name));
                }
                None
            } else {
                Some(self.start_name(&fam.name, fam.index, progress)?)
            };
            if fam.groups.len() != fam.ends.len() {
                return Err(format!("family {:?} with unmatched ends", fam.name));
            }
            let mut block = SharedBlock::new(fam.members.clone());
            let mut ranks = Vec::new();
            let mut at = 0usize;
            for (&gi, &end) in fam.groups.iter().zip(&fam.ends) {
                let Some((want, typ, help, empty)) = progress.index.get(progress.came) else {
                    return Err(format!("family {:?} with more members than its index", fam.name));
                };
                if *want != gi {
                    return Err(format!("family {:?} out of its index's order", fam.name));
                }
                progress.came += 1;
                let end = end as usize;
                if end < at || end > fam.members.len() {
                    return Err(format!("family {:?} outside its message", fam.name));
                }
                let (rank, key) = &self.keys[gi as usize];
                if let (true, Some(key)) = (*rank != NOT_SHOWN, key) {
                    block
                        .add_wire(at, end - at, key, self.names)
                        .map_err(|e| format!("group {key}: {e}"))?;
                    ranks.push((*rank, *typ, help.clone(), *empty));
                }
                at = end;
            }
            let families = block.finish();
            let mut members = VecDeque::with_capacity(families.len());
            for (f, (rank, typ, help, empty)) in families.into_iter().zip(ranks) {
                if *f.name != *fam.name || f.typ != typ || f.help != help || f.is_empty() != empty
                {
                    return Err(format!(
                        "family {:?} other than its index says ({:?})",
                        fam.name, f.name
                    ));
                }
                members.push_back((rank, f));
            }
            out.push(PeerFamily {
                name: fam.name,
                index,
                members,
            });
        }
        Ok(out)
    }
}

#[cfg(test)]
#[path = "stream_tests.rs"]
mod tests;
