//! Anti-entropy and transfers with one peer (`Sync` and `Replicate` calls), and the callee's side
//! of `Sync`.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Instant;

use tokio::task::JoinSet;

use super::super::core::{refuse_decoded, ClusterCore};
use super::super::member::{Member, MemberState, NodeId};
use super::super::ring::owners;
use super::super::rpc::{client, pb, wire};
use super::rounds::{Held, Pacer, Reconciler, SYNC_BATCH};
use crate::store::GroupKey;
use crate::telemetry::metrics as m;

/// Most entries a peer may list in one `Sync` call (the join pull lists everything it holds).
const MAX_SYNC_ENTRIES: usize = 10_000_000;
/// Transfers in flight to one peer.
const TRANSFERS_IN_FLIGHT: usize = 8;
/// Most buckets in a `Sync` summary (a peer's summary over more is refused).
const MAX_SUMMARY_BUCKETS: usize = 1 << 16;
/// Below this many copies to list to a peer, a round lists them at once: a summary would only
/// add a call.
const SUMMARY_MIN_ENTRIES: usize = 64;
/// Copies per bucket a summary aims at: a bucket holding one copy that differs then lists a
/// handful of entries, and the summary stays a small fraction of the list it replaces.
const COPIES_PER_BUCKET: usize = 8;

/// One copy's share of its bucket in a `Sync` summary: a hash of its key's stable hash and its
/// digest, so that two sets of copies sum alike only when they hold the same copies.
fn sync_mix(key_hash: u64, digest: u64) -> u64 {
    let mut b = [0u8; 16];
    b[..8].copy_from_slice(&key_hash.to_le_bytes());
    b[8..].copy_from_slice(&digest.to_le_bytes());
    xxhash_rust::xxh3::xxh3_64(&b)
}

/// The summary of `copies` (key hash, digest) in `buckets` buckets (`SyncRequest.summary`).
pub(super) fn summarize(copies: impl Iterator<Item = (u64, u64)>, buckets: usize) -> Vec<u64> {
    let mut sums = vec![0u64; buckets.max(1)];
    let n = sums.len() as u64;
    for (h, d) in copies {
        let b = (h % n) as usize;
        sums[b] = sums[b].wrapping_add(sync_mix(h, d));
    }
    sums
}

impl Reconciler {
    /// Syncs with one peer the copies `list` names (indexes into `held`): when the list is long,
    /// a summary of it first, so that in a steady cluster a round costs each pair of nodes a
    /// pass over their copies and a call of a few kilobytes, not a listing of every key; then
    /// the entries of the buckets that differ (all of them for a short list), in batches.
    /// Copies in a bucket that matches count as acknowledged. Returns (sent, received).
    pub(super) async fn sync_with(
        &self,
        peer: &Member,
        list: &[usize],
        held: &mut [Held],
        pacer: &mut Pacer,
    ) -> Result<(usize, usize), String> {
        let todo: Vec<usize> = if list.len() < SUMMARY_MIN_ENTRIES {
            list.to_vec()
        } else {
            let buckets = (list.len() / COPIES_PER_BUCKET)
                .next_power_of_two()
                .min(MAX_SUMMARY_BUCKETS);
            let summary = summarize(
                list.iter()
                    .map(|&i| (held[i].key.stable_hash(), held[i].digest)),
                buckets,
            );
            let differing = self.summary_call(peer, summary).await?;
            let mut todo = Vec::new();
            for &i in list {
                let b = held[i].key.stable_hash() % buckets as u64;
                if differing.contains(&(b as u32)) {
                    todo.push(i);
                } else {
                    held[i].acked += 1;
                }
            }
            todo
        };
        let (mut sent, mut received) = (0, 0);
        for batch in todo.chunks(SYNC_BATCH) {
            let (s, r) = self.sync_batch(peer, batch, held, pacer).await?;
            sent += s;
            received += r;
        }
        Ok((sent, received))
    }

    /// Sends a summary; answers the buckets the peer sums otherwise.
    async fn summary_call(&self, peer: &Member, summary: Vec<u64>) -> Result<HashSet<u32>, String> {
        let buckets = summary.len();
        let reply = self
            .sync_call(
                peer,
                pb::SyncRequest {
                    summary,
                    ..Default::default()
                },
            )
            .await?;
        // An index past the summary names no copy of it; a peer that answers too few buckets
        // can only have this node count as held what it does not hold, as it could by
        // answering an entry's digest as its own.
        Ok(reply
            .differing
            .into_iter()
            .filter(|&b| (b as usize) < buckets)
            .collect())
    }

    /// One `Sync` call of a round, from this node with its wipe watermark; the peer's
    /// watermark is learnt before the answer is used: copies from before a wipe this node
    /// missed must not go out.
    async fn sync_call(
        &self,
        peer: &Member,
        mut req: pb::SyncRequest,
    ) -> Result<pb::SyncReply, String> {
        let core = &self.core;
        req.from = core.self_id.as_str().to_owned();
        req.wipe_watermark = core.store.wiped_at();
        let mut client = core.clients.client(peer.grpc_addr);
        let started = Instant::now();
        let reply = client
            .sync(client::request(req, core.clients.timeout() * 5))
            .await
            .map_err(|s| s.to_string())?
            .into_inner();
        metrics::histogram!(m::PEER_RPC_DURATION_SECONDS, "rpc" => "sync")
            .record(started.elapsed().as_secs_f64());
        core.learn_wipe(reply.wipe_watermark, peer.id.as_str())
            .map_err(|s| s.message().to_owned())?;
        Ok(reply)
    }

    /// Syncs one batch with one peer: takes its newer states (where this node owns the group),
    /// sends what it lacks, counts acknowledgements. Returns (sent, received).
    pub(super) async fn sync_batch(
        &self,
        peer: &Member,
        batch: &[usize],
        held: &mut [Held],
        pacer: &mut Pacer,
    ) -> Result<(usize, usize), String> {
        let core = &self.core;
        let req = pb::SyncRequest {
            entries: batch
                .iter()
                .map(|&i| pb::SyncEntry {
                    key: wire::key_to_pb(&held[i].key),
                    version: held[i].version,
                    tombstone: held[i].tombstone,
                    digest: held[i].digest,
                })
                .collect(),
            ..Default::default()
        };
        let reply = self.sync_call(peer, req).await?;
        let missing: HashSet<usize> = reply
            .missing
            .iter()
            .filter_map(|&i| batch.get(i as usize).copied())
            .collect();
        // Everything listed and not missing: the peer holds the same copy.
        for &i in batch {
            if !missing.contains(&i) {
                held[i].acked += 1;
            }
        }
        // The peer's copies: merged only where this node is an owner (otherwise its copy goes
        // away, once the peer merged it).
        let owned: HashSet<Arc<GroupKey>> = batch
            .iter()
            .filter(|&&i| held[i].owned)
            .map(|&i| held[i].key.clone())
            .collect();
        let received = self
            .apply_newer(reply.newer_groups, reply.newer_tombstones, |key| {
                owned.contains(key)
            })
            .await;

        let mut sent = 0;
        let mut inflight: JoinSet<(usize, bool)> = JoinSet::new();
        let client = core.clients.client(peer.grpc_addr);
        for i in missing {
            let Some(msg) = self.replicate_message(&held[i]) else {
                continue;
            };
            pacer.tick().await;
            while inflight.len() >= TRANSFERS_IN_FLIGHT {
                if let Some(Ok((j, ok))) = inflight.join_next().await {
                    sent += self.count_transfer(held, j, ok);
                }
            }
            let mut client = client.clone();
            let req = client::request(msg, core.clients.timeout());
            inflight.spawn(async move { (i, client.replicate(req).await.is_ok()) });
        }
        while let Some(done) = inflight.join_next().await {
            if let Ok((j, ok)) = done {
                sent += self.count_transfer(held, j, ok);
            }
        }
        Ok((sent, received))
    }

    pub(super) fn count_transfer(&self, held: &mut [Held], i: usize, ok: bool) -> usize {
        if ok {
            held[i].acked += 1;
            if held[i].owned {
                metrics::counter!(m::ANTIENTROPY_REPAIRS_TOTAL, "direction" => "sent").increment(1);
            }
            1
        } else {
            metrics::counter!(m::REBALANCE_GROUPS_TOTAL, "result" => "error").increment(1);
            0
        }
    }

    /// The current state of a held group (it may have changed since the round started: the
    /// current state is sent, and the copy is dropped only while its digest is the listed one).
    pub(super) fn replicate_message(&self, h: &Held) -> Option<pb::ReplicateRequest> {
        let store = &self.core.store;
        if h.tombstone {
            let v = store.tombstone(&h.key)?;
            return Some(pb::ReplicateRequest {
                version: v,
                group: Default::default(),
                tombstone_key: wire::key_to_pb(&h.key),
            });
        }
        let g = store.transfer_copy(&h.key)?;
        Some(pb::ReplicateRequest {
            version: g.version,
            group: wire::group_to_bytes(&g).into(),
            tombstone_key: Vec::new(),
        })
    }

    /// Merges a peer's copies into what this node holds; returns how many changed something.
    pub(super) async fn apply_newer(
        &self,
        groups: Vec<bytes::Bytes>,
        tombstones: Vec<pb::Tombstone>,
        wanted: impl Fn(&GroupKey) -> bool,
    ) -> usize {
        if groups.is_empty() && tombstones.is_empty() {
            return 0;
        }
        let core = &self.core;
        let names = core.names();
        let mut decoded_tombstones = Vec::new();
        for t in tombstones {
            if core.peer_version(t.version, "synced tombstone").is_err() {
                continue;
            }
            match wire::key_from_pb(t.key, names) {
                Ok(k) if wanted(&k) => decoded_tombstones.push((k, t.version)),
                Ok(_) => {}
                Err(e) => drop(refuse_decoded(e)),
            }
        }
        let store = core.store.clone();
        let decoded = tokio::task::spawn_blocking(move || {
            groups
                .iter()
                .filter_map(|raw| match wire::group_from_bytes(raw, names) {
                    Ok(g) => Some(g),
                    Err(e) => {
                        drop(refuse_decoded(e));
                        None
                    }
                })
                .collect::<Vec<_>>()
        })
        .await
        .unwrap_or_default();
        // Refused (and counted) before anything is applied: a group dated in the future would
        // otherwise win over every later write to it.
        let decoded: Vec<_> = decoded
            .into_iter()
            .filter(|g| core.peer_version(g.version, "synced group").is_ok())
            .collect();
        let mut taken = 0;
        for (k, v) in decoded_tombstones {
            core.clock.observe(v);
            if core.delete_here(&k, v) {
                taken += 1;
            }
        }
        for g in decoded {
            if !wanted(&g.key) {
                continue;
            }
            core.clock.observe(g.version);
            if store.apply_replica(g) {
                taken += 1;
            }
        }
        if taken > 0 {
            metrics::counter!(m::ANTIENTROPY_REPAIRS_TOTAL, "direction" => "received")
                .increment(taken as u64);
        }
        taken
    }
}

/// The buckets of a caller's summary (`SyncRequest.summary`) whose sum differs from this
/// node's: what it holds that the caller and it both own (as this node's ring places them),
/// summed the same way. Copies the caller holds for others (hints) are not in this node's sums,
/// so their buckets differ and their entries are listed, as before summaries.
fn differing_buckets(core: &ClusterCore, req: &pb::SyncRequest) -> Result<Vec<u32>, String> {
    let buckets = req.summary.len();
    // Refused and counted like any malformed message from a peer; nothing was changed.
    let refuse = |why: String| {
        drop(refuse_decoded(why.clone()));
        Err(why)
    };
    if buckets > MAX_SUMMARY_BUCKETS {
        return refuse(format!(
            "a sync summary of {buckets} buckets (at most {MAX_SUMMARY_BUCKETS})"
        ));
    }
    if !req.entries.is_empty() || req.want_owned {
        return refuse("a sync summary comes alone, without entries or want_owned".into());
    }
    let from = NodeId::from(req.from.as_str());
    let ring = core.ring();
    let r = core.replication_factor;
    let ours = summarize(
        core.store
            .sync_digests(|h| ring.both_own(h, r, &core.self_id, &from))
            .into_iter(),
        buckets,
    );
    Ok((0..buckets)
        .filter(|&b| ours[b] != req.summary[b])
        .map(|b| b as u32)
        .collect())
}

/// The callee's side of `Sync` (runs on the blocking pool: it encodes groups, or sums what it
/// holds for a summary).
pub fn answer_sync(core: &ClusterCore, req: pb::SyncRequest) -> Result<pb::SyncReply, String> {
    if req.entries.len() > MAX_SYNC_ENTRIES {
        return Err(format!("sync with {} entries", req.entries.len()));
    }
    let names = core.names();
    let store = &core.store;
    // A caller that knows of a wipe this node missed: what it lists is compared with what is
    // left once the wipe is learnt.
    core.learn_wipe(req.wipe_watermark, &req.from)
        .map_err(|s| s.message().to_owned())?;
    let mut reply = pb::SyncReply {
        wipe_watermark: store.wiped_at(),
        ..Default::default()
    };
    if !req.summary.is_empty() {
        reply.differing = differing_buckets(core, &req)?;
        return Ok(reply);
    }
    let mut listed: HashSet<GroupKey> = HashSet::new();
    for (i, e) in req.entries.into_iter().enumerate() {
        core.peer_version(e.version, "sync entry")
            .map_err(|s| s.message().to_owned())?;
        let key = wire::key_from_pb(e.key, names)?;
        // Copies that differ go both ways: either may hold writes the other lacks.
        match store.digest(&key) {
            Some((d, _)) if d == e.digest => {}
            Some((_, true)) => {
                if let Some(v) = store.tombstone(&key) {
                    reply.newer_tombstones.push(pb::Tombstone {
                        key: wire::key_to_pb(&key),
                        version: v,
                    });
                }
                reply.missing.push(i as u32);
            }
            Some((_, false)) => {
                if let Some(g) = store.transfer_copy(&key) {
                    reply.newer_groups.push(wire::group_to_bytes(&g).into());
                }
                reply.missing.push(i as u32);
            }
            None => reply.missing.push(i as u32),
        }
        if req.want_owned {
            listed.insert(key);
        }
    }
    if req.want_owned {
        let from = NodeId::from(req.from);
        let ring = core.ring();
        let mut members: Vec<Member> = ring.active().cloned().collect();
        match members.iter_mut().find(|m| m.id == from) {
            Some(_) => {}
            None => members.push(Member {
                id: from.clone(),
                generation: 0,
                grpc_addr: std::net::SocketAddr::from(([0, 0, 0, 0], 0)),
                state: MemberState::Active,
            }),
        }
        let r = core.replication_factor;
        let owns = |key: &GroupKey| {
            owners(key.stable_hash(), members.iter(), r)
                .iter()
                .any(|m| m.id == from)
        };
        for g in store.snapshot() {
            if !listed.contains(&*g.key) && owns(&g.key) {
                let Some(g) = store.for_transfer(g) else {
                    continue;
                };
                reply.newer_groups.push(wire::group_to_bytes(&g).into());
            }
        }
        for (k, v) in store.tombstones() {
            if !listed.contains(&k) && owns(&k) {
                reply.newer_tombstones.push(pb::Tombstone {
                    key: wire::key_to_pb(&k),
                    version: v,
                });
            }
        }
    }
    Ok(reply)
}
