//! A merged scrape rendered as the peers' answers stream in, family by family: the peers send
//! their groups' heads first (`CollectRequest.by_family`), the collecting node decides from the
//! heads alone which copy of each group the view shows (newest wins, a newer tombstone hides
//! it) and where it goes in key order (this file), then merges the peers' families
//! (`feed`: one reader per peer) in name order with its own and writes each family as its
//! members arrive (`render`). No peer's groups are held whole; what a peer sent is dropped once
//! its families are written.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::task::JoinSet;

use super::super::core::ClusterCore;
use super::super::events::PeerRefusal;
use super::super::rpc::{pb, wire};
use super::collect::{collect_ended, follow_up_calls, read_collect, CollectStream, ScrapeBudget};
use crate::exposition::NameScheme;
use crate::gateway::ScrapeRefused;
use crate::store::render::{kept_keys, Format};
use crate::store::key_order::sort_by_group_key;
use crate::store::{GroupKey, GroupSnapshot};
use crate::telemetry::metrics as m;

pub(super) type Fast = foldhash::fast::RandomState;

/// A head's rank when the view does not show that copy.
pub(super) const NOT_SHOWN: u32 = u32::MAX;

/// A source's group copies by head index: key, version and push times; the families too when
/// the source is held whole. `None`: a copy left out (dated beyond the allowed clock skew).
pub(super) type Heads = Vec<Option<GroupSnapshot>>;

/// Where a source's families come from.
pub(super) enum Feed {
    /// Held whole in the heads: this node's groups.
    Held,
    /// A peer's stream after its heads, which declared `declared` bytes of families.
    Stream {
        peer: String,
        stream: Box<tonic::Streaming<pb::CollectChunk>>,
        declared: u64,
        started: Instant,
    },
}

pub(super) struct Source {
    pub(super) heads: Heads,
    pub(super) feed: Feed,
}

/// What one collect call answered before its families: the heads part and the stream, still
/// open.
struct Answer {
    chunks: Vec<pb::CollectChunk>,
    stream: CollectStream,
}

/// A merged scrape decided from the heads, its families still to come.
pub(crate) struct MergedPlan {
    pub(super) sources: Vec<Source>,
    /// The groups shown, in key order: (source, head index).
    pub(super) view: Vec<(u32, u32)>,
    /// Groups left out as colliding with an earlier key (counted as inconsistent).
    pub(super) dropped: usize,
    pub(super) names: NameScheme,
    /// How long the render waits for a peer's next chunk before giving the scrape up.
    pub(super) chunk_deadline: Duration,
    pub(super) runtime: tokio::runtime::Handle,
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
            let have = newest.iter().map(|(k, (v, _))| (k.stable_hash(), *v));
            let calls = follow_up_calls(&peers, &deferred, have, text_only, true);
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
        sort_by_group_key(&mut shown, |s| &s.0);
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

    /// Starts family-by-family collect calls: each returns once the peer's heads are in, within
    /// `deadline`.
    fn start_family_collect(
        &self,
        calls: Vec<(String, SocketAddr, pb::CollectRequest)>,
        deadline: Duration,
        started: Instant,
        budget: &Arc<ScrapeBudget>,
    ) -> JoinSet<Option<(String, Answer, Instant)>> {
        let mut running = JoinSet::new();
        for (id, addr, req) in calls {
            let client = self.clients.collect_client(addr);
            let budget = budget.clone();
            running.spawn(async move {
                let res = read_collect(client, req, deadline, &budget, true).await;
                let answer = match res {
                    Ok((chunks, Some(stream))) => Answer { chunks, stream },
                    // `read_collect` returns the stream whenever it stops at the heads.
                    other => {
                        let e = other.err().unwrap_or_default();
                        collect_ended(&id, started, Some(&e));
                        return None;
                    }
                };
                // The call ends when its families are read (`feed`).
                Some((id, answer, started))
            });
        }
        running
    }
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

/// Decodes the answers' heads on the blocking pool, one peer each, adding a
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
        let d: Vec<(u64, u64)> = answer
            .chunks
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
            let Answer { chunks, stream } = answer;
            let decoded =
                decode_heads(chunks, names, newest_allowed).map(|(heads, t, declared)| {
                    let feed = Feed::Stream {
                        peer: peer.clone(),
                        stream,
                        declared,
                        started,
                    };
                    (heads, t, feed)
                });
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

/// A peer's group heads, its tombstones and the bound on its family bytes.
type DecodedHeads = (Heads, Vec<(GroupKey, u64)>, u64);

/// The heads part of a family-by-family answer: the group heads (a head dated beyond
/// `newest_allowed` is left out, counted), the tombstones and the family bytes declared.
fn decode_heads(
    chunks: Vec<pb::CollectChunk>,
    names: NameScheme,
    newest_allowed: u64,
) -> Result<DecodedHeads, String> {
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
                agg: None,
                agg_digest: 0,
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

#[cfg(test)]
#[path = "stream_tests.rs"]
mod tests;
