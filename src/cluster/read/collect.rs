//! Collecting a merged scrape: every live member is asked concurrently, within a deadline, for
//! the groups it holds that this node lacks; groups a peer left to another one that did not
//! deliver them are asked for once more.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;

use std::time::{Duration, Instant};

use prost::Message;
use tokio::task::JoinSet;
use tonic::Status;

use super::super::core::ClusterCore;
use super::super::events::{ClusterEvent, Refusal};
use super::super::member::Member;
use super::super::rpc::channel::PeerChannel;
use super::super::rpc::pb::cluster_client::ClusterClient;
use super::super::rpc::{client, pb};
use super::merge::{merge_answers, merge_newest, Newest};
use crate::gateway::ScrapeRefused;
use crate::store::GroupSnapshot;
use crate::telemetry::metrics as m;

impl ClusterCore {
    /// The deadline of a scrape's first round of collect calls when its client waits `timeout`:
    /// the configured one, shortened to 40% of the client's wait, so that a second round (at
    /// most half as long) and the render still fit in it.
    pub(crate) fn scrape_deadline(&self, timeout: Option<Duration>) -> Duration {
        match timeout {
            Some(t) => self.collect_deadline.min(t.mul_f64(0.4)),
            None => self.collect_deadline,
        }
    }

    /// `text_only`: the caller renders the text format and nothing else (peers leave the
    /// protobuf encodings out; the groups returned must not be used for anything else).
    /// Refused when the peers' answers exceed `--cluster.max-scrape-bytes`: an incomplete view
    /// would hide groups, so the whole read fails (503) rather than growing without bound.
    pub(crate) async fn merged_groups(
        &self,
        deadline: Duration,
        text_only: bool,
    ) -> Result<Vec<GroupSnapshot>, ScrapeRefused> {
        let started = Instant::now();
        let budget = Arc::new(ScrapeBudget::new(self.bounds.max_scrape_bytes));
        let ring = self.ring();
        // One snapshot serves both the list of what this node holds (peers leave those groups
        // out) and the merge below, so a group cannot drop out of the view in between. In no
        // particular order: the view is sorted once, at the end.
        let local = self.store.snapshot_where(|_, _| true);
        let peers: Vec<&Member> = ring
            .members
            .iter()
            .filter(|m| m.id != self.self_id)
            .collect();
        let held = pb::CollectRequest {
            by_family: false,
            held_keys: local.iter().map(|g| g.key.stable_hash()).collect(),
            held_versions: local.iter().map(|g| g.version).collect(),
            text_only,
            // A group this node lacks is held by several peers: each sends the groups it comes
            // first for among them and names the others (deferred).
            responders: peers.iter().map(|m| m.id.to_string()).collect(),
            only_keys: Vec::new(),
        };
        let calls = peers
            .iter()
            .map(|m| (m.id.to_string(), m.grpc_addr, held.clone()));
        let running = self.start_collect(calls.collect(), deadline, started, &budget);
        // While the peers answer, this node's own groups go in (sized for about as many again
        // from the peers: growing the map rehashes it and faults its pages in again).
        let mut newest = Newest::with_capacity_and_hasher(local.len() * 2, Default::default());
        merge_newest(&mut newest, local, self.store.tombstones());
        let answers = finish_collect(running).await;
        budget.check()?;
        let deferred: Vec<(String, Vec<(u64, u64)>)> = answers
            .iter()
            .map(|(id, chunks)| {
                let d = chunks.iter().flat_map(|c| {
                    c.deferred_keys
                        .iter()
                        .copied()
                        .zip(c.deferred_versions.iter().copied())
                });
                (id.clone(), d.collect::<Vec<_>>())
            })
            .filter(|(_, d)| !d.is_empty())
            .collect();
        let names = self.names();
        merge_answers(&mut newest, answers, names, self.clock.newest_allowed()).await;
        if !deferred.is_empty() {
            // Groups left to a peer that did not deliver them (it failed, its answer was
            // undecodable, or it ranks the owners differently): asked for once more, from the
            // peers that deferred them, within what is left of the deadline (at least half).
            let have = newest.iter().map(|(k, (v, _))| (k.stable_hash(), *v));
            let calls = follow_up_calls(&peers, &deferred, have, text_only, false);
            if !calls.is_empty() {
                let left = deadline.saturating_sub(started.elapsed()).max(deadline / 2);
                let again = self
                    .collect_from(calls, left, Instant::now(), &budget)
                    .await;
                budget.check()?;
                merge_answers(&mut newest, again, names, self.clock.newest_allowed()).await;
            }
        }
        // A peer that missed a wipe this node knows of serves its pre-wipe copies until its
        // next round learns the wipe: they stay out of the view.
        let wiped_at = self.store.wiped_at();
        let mut out: Vec<GroupSnapshot> = newest
            .into_values()
            .filter_map(|(_, g)| g)
            .filter(|g| g.version > wiped_at)
            .collect();
        // Keys are unique here (one entry per key).
        out.sort_unstable_by(|a, b| a.key.cmp(&b.key));
        metrics::histogram!(m::SCRAPE_MERGE_DURATION_SECONDS)
            .record(started.elapsed().as_secs_f64());
        Ok(out)
    }

    /// Runs collect `calls` (peer id, gRPC address, request) concurrently, each within
    /// `deadline`; returns the chunks of each call that completed (a failed peer's groups come
    /// from their other owners).
    pub(crate) async fn collect_from(
        &self,
        calls: Vec<(String, SocketAddr, pb::CollectRequest)>,
        deadline: Duration,
        started: Instant,
        budget: &Arc<ScrapeBudget>,
    ) -> Vec<(String, Vec<pb::CollectChunk>)> {
        finish_collect(self.start_collect(calls, deadline, started, budget)).await
    }

    /// Starts the calls of [`Self::collect_from`]; `finish_collect` waits for them.
    pub(crate) fn start_collect(
        &self,
        calls: Vec<(String, SocketAddr, pb::CollectRequest)>,
        deadline: Duration,
        started: Instant,
        budget: &Arc<ScrapeBudget>,
    ) -> Collecting {
        let mut running = JoinSet::new();
        for (id, addr, req) in calls {
            let client = self.clients.client(addr);
            let budget = budget.clone();
            running.spawn(async move {
                let res = read_collect(client, req, deadline, &budget, false)
                    .await
                    .map(|(chunks, _)| chunks);
                collect_ended(&id, started, res.as_ref().err().map(String::as_str));
                res.ok().map(|chunks| (id, chunks))
            });
        }
        running
    }
}

/// The rest of a family-by-family answer, after its heads.
pub(super) type CollectStream = Box<tonic::Streaming<pb::CollectChunk>>;

/// One collect call to a peer within `deadline`, every chunk counted against `budget` as it
/// arrives: the whole answer, or with `until_heads`, the chunks up to the end of the heads
/// (their families' declared bytes counted too, so that a scrape that would pass the limit is
/// refused before any of it is written) and the stream still open for the families.
pub(super) async fn read_collect(
    mut client: ClusterClient<PeerChannel>,
    req: pb::CollectRequest,
    deadline: Duration,
    budget: &ScrapeBudget,
    until_heads: bool,
) -> Result<(Vec<pb::CollectChunk>, Option<CollectStream>), String> {
    let over = || Status::resource_exhausted("the merged scrape holds --cluster.max-scrape-bytes already");
    let call = async {
        let mut stream = client
            .collect(client::request(req, deadline))
            .await?
            .into_inner();
        let mut chunks = Vec::new();
        while let Some(c) = stream.message().await? {
            if !budget.take(c.encoded_len()) {
                return Err(over());
            }
            let heads_end = until_heads && c.heads_end;
            if heads_end && !budget.take(usize::try_from(c.family_bytes).unwrap_or(usize::MAX)) {
                return Err(over());
            }
            chunks.push(c);
            if heads_end {
                return Ok((chunks, Some(Box::new(stream))));
            }
        }
        if until_heads {
            // Every node answers a `by_family` call with its heads first; an answer that ends
            // without them breaks the protocol, and its groups come from replicas.
            return Err(Status::internal(
                "the answer ended before the end of its heads (heads_end)",
            ));
        }
        Ok((chunks, None))
    };
    match tokio::time::timeout(deadline, call).await {
        Ok(Ok(answer)) => Ok(answer),
        Ok(Err(status)) => Err(status.to_string()),
        Err(_) => Err("deadline exceeded".to_owned()),
    }
}

/// Records a collect call's end (its duration, and its error if any).
pub(super) fn collect_ended(peer: &str, started: Instant, error: Option<&str>) {
    let seconds = started.elapsed().as_secs_f64();
    metrics::histogram!(m::PEER_RPC_DURATION_SECONDS, "rpc" => "collect").record(seconds);
    ClusterEvent::CollectEnded {
        peer,
        seconds,
        error,
    }
    .emit();
}

/// The bytes of peers' answers one merged read may hold (`--cluster.max-scrape-bytes`), shared
/// by its collect calls: each chunk is counted as it arrives, and once one would pass the limit
/// every call stops and the read is refused.
pub(crate) struct ScrapeBudget {
    used: AtomicUsize,
    max: usize,
    exceeded: AtomicBool,
}

impl ScrapeBudget {
    pub(crate) fn new(max: usize) -> Self {
        ScrapeBudget {
            used: AtomicUsize::new(0),
            max,
            exceeded: AtomicBool::new(false),
        }
    }

    /// Counts `bytes` more; false (and from then on for every call) when they pass the limit.
    pub(crate) fn take(&self, bytes: usize) -> bool {
        if self.exceeded.load(Ordering::Acquire) {
            return false;
        }
        let before = self.used.fetch_add(bytes, Ordering::AcqRel);
        if before.saturating_add(bytes) > self.max {
            self.exceeded.store(true, Ordering::Release);
            return false;
        }
        true
    }

    /// The refusal of the read, once the limit was passed (counted and logged here).
    pub(crate) fn check(&self) -> Result<(), ScrapeRefused> {
        if !self.exceeded.load(Ordering::Acquire) {
            return Ok(());
        }
        let detail = format!(
            "the cluster's groups exceed the {} bytes a merged scrape may hold (--cluster.max-scrape-bytes); retry later or raise the limit",
            self.max
        );
        ClusterEvent::Refused {
            reason: Refusal::ScrapeBytes,
            detail: &detail,
        }
        .emit();
        Err(ScrapeRefused(detail))
    }
}

/// Collect calls under way: each yields the peer's id and chunks, or nothing if it failed.
pub(crate) type Collecting = JoinSet<Option<(String, Vec<pb::CollectChunk>)>>;

pub(crate) async fn finish_collect(
    mut running: Collecting,
) -> Vec<(String, Vec<pb::CollectChunk>)> {
    let mut answers = Vec::new();
    while let Some(done) = running.join_next().await {
        if let Ok(Some(answer)) = done {
            answers.push(answer);
        }
    }
    answers
}

/// The follow-up collect calls after a round whose answers deferred groups to other peers
/// (`deferred`: per peer, `(key hash, version)` of the groups it left to another): one call per
/// peer still holding groups that no answer delivered and the caller does not hold in at least
/// that version (`have`: key hash to newest version, tombstones included), each counted.
pub(crate) fn follow_up_calls(
    peers: &[&Member],
    deferred: &[(String, Vec<(u64, u64)>)],
    have: impl Iterator<Item = (u64, u64)>,
    text_only: bool,
    by_family: bool,
) -> Vec<(String, SocketAddr, pb::CollectRequest)> {
    let have: HashMap<u64, u64, foldhash::fast::RandomState> = have.collect();
    let missing = missing_deferred(
        deferred.iter().map(|(id, d)| (id.as_str(), d.as_slice())),
        &have,
    );
    missing
        .into_iter()
        .filter_map(|(id, keys)| {
            let m = peers.iter().find(|m| m.id.as_str() == id)?;
            metrics::counter!(m::COLLECT_FOLLOW_UPS_TOTAL).increment(1);
            let req = pb::CollectRequest {
                text_only,
                only_keys: keys,
                by_family,
                ..Default::default()
            };
            Some((id.to_owned(), m.grpc_addr, req))
        })
        .collect()
}

/// The groups a collecting node is still missing after a round of collect calls: for each
/// answer's deferred groups (`(peer, [(key hash, version)])`), those that no answer delivered
/// and the caller does not hold in at least that version (`have`: key hash to newest version,
/// tombstones included). Returns, per peer, the key hashes to ask it for again.
pub(crate) fn missing_deferred<'a>(
    deferred: impl IntoIterator<Item = (&'a str, &'a [(u64, u64)])>,
    have: &HashMap<u64, u64, foldhash::fast::RandomState>,
) -> Vec<(&'a str, Vec<u64>)> {
    deferred
        .into_iter()
        .filter_map(|(peer, groups)| {
            let missing: Vec<u64> = groups
                .iter()
                .filter(|(h, v)| have.get(h).is_none_or(|got| got < v))
                .map(|(h, _)| *h)
                .collect();
            (!missing.is_empty()).then_some((peer, missing))
        })
        .collect()
}

#[cfg(test)]
#[path = "collect_tests.rs"]
mod tests;
