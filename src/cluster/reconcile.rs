//! The cluster lifecycle: rebalancing, hinted handoff, anti-entropy, tombstone collection, the
//! pull of a joining node and the handover of a leaving one.
//!
//! One reconciler task per node runs a *round* on every ring change (after a short debounce)
//! and every `--cluster.anti-entropy-interval` (with jitter). A round looks at every group and
//! tombstone the node holds and computes its owners in the current ring:
//!
//! - for each owner other than this node, the held (group, version) pairs go in a `Sync` call;
//!   the owner answers with its newer states (taken here when this node is an owner too: an
//!   anti-entropy repair) and the groups it lacks or holds older (sent to it with `Replicate`);
//! - a group this node holds without owning it (a stand-in copy written while an owner was
//!   unreachable, or a copy left behind by a ring change: a *hint*) is dropped once every owner
//!   acknowledged holding it in this version or a newer one. A copy is never dropped before.
//!
//! Transfers are idempotent (a replica applies a state only when newer) and throttled
//! (`--cluster.rebalance-rate` groups per second, a few in flight per peer). Drops wait until
//! the ring has been stable for a few gossip rounds, so every node's merged read already asks
//! the new owners when the old copy disappears.

use std::collections::HashSet;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::time::unix_millis;

use tokio::sync::{watch, Notify};
use tokio::task::JoinSet;

use super::gateway::ClusterCore;
use super::membership::{Member, MemberState, NodeId, Ring};
use super::rpc::{self, pb};
use crate::store::GroupKey;
use crate::telemetry::metrics as m;

/// Lifecycle flags (`--cluster.*`), validated in `Config::cluster`.
#[derive(Debug, Clone)]
pub struct LifecycleSettings {
    pub anti_entropy_interval: Duration,
    pub tombstone_lifetime: Duration,
    pub max_hints: usize,
    pub rebalance_rate: u32,
    pub join_timeout: Duration,
    pub shutdown_timeout: Duration,
}

impl Default for LifecycleSettings {
    fn default() -> Self {
        LifecycleSettings {
            anti_entropy_interval: Duration::from_secs(10),
            tombstone_lifetime: Duration::from_secs(3600),
            max_hints: 100_000,
            rebalance_rate: 2_000,
            join_timeout: Duration::from_secs(30),
            shutdown_timeout: Duration::from_secs(30),
        }
    }
}

/// Most entries in one `Sync` call of a round.
const SYNC_BATCH: usize = 2_000;
/// Most entries a peer may list in one `Sync` call (the join pull lists everything it holds).
const MAX_SYNC_ENTRIES: usize = 10_000_000;
/// Transfers in flight to one peer.
const TRANSFERS_IN_FLIGHT: usize = 8;

/// One group or tombstone held by this node, as a round sees it.
struct Held {
    key: Arc<GroupKey>,
    version: u64,
    tombstone: bool,
    owned: bool,
    /// Owners other than this node.
    owners: Vec<Member>,
    /// Owners known to hold this version or a newer one.
    acked: usize,
}

/// What one round did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct RoundReport {
    pub held: usize,
    pub hints: usize,
    pub handed_off: usize,
    pub sent: usize,
    pub received: usize,
    pub unreachable_peers: usize,
}

/// The reconciler of one node.
pub struct Reconciler {
    core: Arc<ClusterCore>,
    settings: LifecycleSettings,
    /// Minimum ring stability before a copy is dropped.
    settle: Duration,
    /// Starts a round now (e.g. a leaving node's handover).
    kick: Notify,
}

/// Paces transfers to at most `rate` per second.
struct Pacer {
    started: Instant,
    sent: u64,
    rate: u32,
}

impl Pacer {
    fn new(rate: u32) -> Self {
        Pacer {
            started: Instant::now(),
            sent: 0,
            rate: rate.max(1),
        }
    }
    async fn tick(&mut self) {
        self.sent += 1;
        let due = self.started + Duration::from_secs_f64(self.sent as f64 / f64::from(self.rate));
        if due > Instant::now() {
            tokio::time::sleep_until(due.into()).await;
        }
    }
}

impl Reconciler {
    pub fn new(
        core: Arc<ClusterCore>,
        settings: LifecycleSettings,
        gossip_interval: Duration,
    ) -> Arc<Self> {
        core.set_max_hints(settings.max_hints);
        Arc::new(Reconciler {
            core,
            settings,
            settle: (gossip_interval * 5).max(Duration::from_secs(1)),
            kick: Notify::new(),
        })
    }

    /// Runs rounds on ring changes, on the anti-entropy timer and when kicked, until `stop`.
    pub async fn run(self: Arc<Self>, mut rings: watch::Receiver<Arc<Ring>>, stop: Arc<Notify>) {
        let mut last_change = Instant::now();
        let mut members = rings.borrow().members.clone();
        loop {
            let jitter = Duration::from_millis(
                unix_millis() % (self.settings.anti_entropy_interval.as_millis() as u64 / 5 + 1),
            );
            tokio::select! {
                _ = tokio::time::sleep(self.settings.anti_entropy_interval + jitter) => {}
                changed = rings.changed() => {
                    if changed.is_err() {
                        return;
                    }
                    // Let a burst of gossip settle into one ring.
                    tokio::time::sleep(Duration::from_millis(300)).await;
                }
                _ = self.kick.notified() => {}
                _ = stop.notified() => return,
            }
            let ring = rings.borrow_and_update().clone();
            if ring.members != members {
                members = ring.members.clone();
                last_change = Instant::now();
            }
            let allow_drop = last_change.elapsed() >= self.settle;
            let report = self.round(&ring, allow_drop).await;
            if !allow_drop && report.hints > 0 {
                // Come back once the ring has settled to drop what was handed over.
                let remaining = self.settle.saturating_sub(last_change.elapsed());
                let me = self.clone();
                tokio::spawn(async move {
                    tokio::time::sleep(remaining + Duration::from_millis(50)).await;
                    me.kick.notify_one();
                });
            }
        }
    }

    /// One round: tombstone collection, handoff of what this node does not own, anti-entropy
    /// with the co-owners of what it owns.
    pub async fn round(&self, ring: &Ring, allow_drop: bool) -> RoundReport {
        let core = &self.core;
        let store = &core.store;
        let cutoff_ms =
            unix_millis().saturating_sub(self.settings.tombstone_lifetime.as_millis() as u64);
        let expired = store.collect_tombstones(cutoff_ms << 16);
        if expired > 0 {
            metrics::counter!(m::REBALANCE_GROUPS_TOTAL, "result" => "expired")
                .increment(expired as u64);
            tracing::debug!(expired, "collected tombstones past their lifetime");
        }

        let r = core.replication_factor;
        let mut held: Vec<Held> = Vec::new();
        let entries = store
            .versions()
            .into_iter()
            .map(|(k, v)| (k, v, false))
            .chain(
                store
                    .tombstones()
                    .into_iter()
                    .map(|(k, v)| (Arc::new(k), v, true)),
            );
        for (key, version, tombstone) in entries {
            let owners = ring.owners(key.stable_hash(), r);
            let owned = owners.iter().any(|o| o.id == core.self_id);
            let others: Vec<Member> = owners
                .into_iter()
                .filter(|o| o.id != core.self_id)
                .cloned()
                .collect();
            held.push(Held {
                key,
                version,
                tombstone,
                owned,
                owners: others,
                acked: 0,
            });
        }
        let mut report = RoundReport {
            held: held.len(),
            ..Default::default()
        };

        // Per peer: indexes into `held` of what that peer should hold.
        let mut peers: Vec<(Member, Vec<usize>)> = Vec::new();
        for (i, h) in held.iter().enumerate() {
            for o in &h.owners {
                match peers.iter_mut().find(|(p, _)| p.id == o.id) {
                    Some((_, list)) => list.push(i),
                    None => peers.push((o.clone(), vec![i])),
                }
            }
        }
        let mut pacer = Pacer::new(self.settings.rebalance_rate);
        for (peer, list) in peers {
            let mut reachable = true;
            for batch in list.chunks(SYNC_BATCH) {
                match self.sync_batch(&peer, batch, &mut held, &mut pacer).await {
                    Ok((sent, received)) => {
                        report.sent += sent;
                        report.received += received;
                    }
                    Err(e) => {
                        tracing::debug!(peer = %peer.id, err = %e, "reconciliation with a peer failed; retrying next round");
                        reachable = false;
                        break;
                    }
                }
            }
            if !reachable {
                report.unreachable_peers += 1;
            }
        }

        for h in &held {
            if h.owned {
                continue;
            }
            let everyone = !h.owners.is_empty() && h.acked >= h.owners.len();
            let dropped = everyone
                && allow_drop
                && if h.tombstone {
                    store.drop_tombstone_if_version(&h.key, h.version)
                } else {
                    store.drop_if_version(&h.key, h.version)
                };
            if dropped {
                report.handed_off += 1;
            } else {
                report.hints += 1;
            }
        }
        if report.handed_off > 0 {
            metrics::counter!(m::REBALANCE_GROUPS_TOTAL, "result" => "handed_off")
                .increment(report.handed_off as u64);
        }
        core.hints.store(report.hints, Ordering::Relaxed);
        metrics::gauge!(m::HINTS_PENDING).set(report.hints as f64);
        metrics::gauge!(m::TOMBSTONES).set(store.tombstone_count() as f64);
        let result = if report.unreachable_peers == 0 {
            "complete"
        } else {
            "partial"
        };
        metrics::counter!(m::ANTIENTROPY_ROUNDS_TOTAL, "result" => result).increment(1);
        if report.handed_off + report.sent + report.received > 0 {
            tracing::info!(
                node = %core.self_id,
                held = report.held,
                handed_off = report.handed_off,
                sent = report.sent,
                received = report.received,
                hints = report.hints,
                unreachable_peers = report.unreachable_peers,
                "reconciliation round"
            );
        }
        report
    }

    /// Syncs one batch with one peer: takes its newer states (where this node owns the group),
    /// sends what it lacks, counts acknowledgements. Returns (sent, received).
    async fn sync_batch(
        &self,
        peer: &Member,
        batch: &[usize],
        held: &mut [Held],
        pacer: &mut Pacer,
    ) -> Result<(usize, usize), String> {
        let core = &self.core;
        let req = pb::SyncRequest {
            from: core.self_id.as_str().to_owned(),
            entries: batch
                .iter()
                .map(|&i| pb::SyncEntry {
                    key: rpc::key_to_pb(&held[i].key),
                    version: held[i].version,
                    tombstone: held[i].tombstone,
                })
                .collect(),
            want_owned: false,
        };
        let mut client = core.clients.client(peer.grpc_addr);
        let started = Instant::now();
        let reply = client
            .sync(rpc::request(req, core.clients.timeout() * 5))
            .await
            .map_err(|s| s.to_string())?
            .into_inner();
        metrics::histogram!(m::PEER_RPC_DURATION_SECONDS, "rpc" => "sync")
            .record(started.elapsed().as_secs_f64());
        let missing: HashSet<usize> = reply
            .missing
            .iter()
            .filter_map(|&i| batch.get(i as usize).copied())
            .collect();
        // Everything listed and not missing: the peer holds this version or a newer one.
        for &i in batch {
            if !missing.contains(&i) {
                held[i].acked += 1;
            }
        }
        // Newer states: taken only where this node is an owner (otherwise its copy goes away).
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
            let req = rpc::request(msg, core.clients.timeout());
            inflight.spawn(async move { (i, client.replicate(req).await.is_ok()) });
        }
        while let Some(done) = inflight.join_next().await {
            if let Ok((j, ok)) = done {
                sent += self.count_transfer(held, j, ok);
            }
        }
        Ok((sent, received))
    }

    fn count_transfer(&self, held: &mut [Held], i: usize, ok: bool) -> usize {
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

    /// The current state of a held group (it may have moved on since the round started: the
    /// newer state is sent, which acknowledges the older one too).
    fn replicate_message(&self, h: &Held) -> Option<pb::ReplicateRequest> {
        let store = &self.core.store;
        if h.tombstone {
            let v = store.tombstone(&h.key)?;
            return Some(pb::ReplicateRequest {
                version: v,
                group: Default::default(),
                tombstone_key: rpc::key_to_pb(&h.key),
            });
        }
        let g = store.group(&h.key)?;
        (g.version >= h.version).then(|| pb::ReplicateRequest {
            version: g.version,
            group: rpc::group_to_bytes(&g).into(),
            tombstone_key: Vec::new(),
        })
    }

    /// Applies newer states from a peer (newest wins); returns how many were taken.
    async fn apply_newer(
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
            match rpc::key_from_pb(t.key, names) {
                Ok(k) if wanted(&k) => decoded_tombstones.push((k, t.version)),
                Ok(_) => {}
                Err(e) => tracing::debug!(err = %e, "peer sent an invalid tombstone; ignored"),
            }
        }
        let store = core.store.clone();
        let decoded = tokio::task::spawn_blocking(move || {
            groups
                .iter()
                .filter_map(|raw| match rpc::group_from_bytes(raw, names) {
                    Ok(g) => Some(g),
                    Err(e) => {
                        tracing::debug!(err = %e, "peer sent an invalid group; ignored");
                        None
                    }
                })
                .collect::<Vec<_>>()
        })
        .await
        .unwrap_or_default();
        let mut taken = 0;
        for (k, v) in decoded_tombstones {
            core.clock.observe(v);
            if store.delete_versioned(&k, v) {
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

    /// The pull of a joining node: asks every other member for the groups this node will own
    /// (and newer states of what it holds). Returns whether every member answered.
    pub async fn pull(&self, ring: &Ring) -> bool {
        let core = &self.core;
        let store = &core.store;
        let entries: Vec<pb::SyncEntry> = store
            .versions()
            .into_iter()
            .map(|(k, v)| pb::SyncEntry {
                key: rpc::key_to_pb(&k),
                version: v,
                tombstone: false,
            })
            .chain(store.tombstones().into_iter().map(|(k, v)| pb::SyncEntry {
                key: rpc::key_to_pb(&k),
                version: v,
                tombstone: true,
            }))
            .collect();
        let mut all = true;
        for peer in ring.members.iter().filter(|p| p.id != core.self_id) {
            let req = pb::SyncRequest {
                from: core.self_id.as_str().to_owned(),
                entries: entries.clone(),
                want_owned: true,
            };
            let mut client = core.clients.client(peer.grpc_addr);
            match client
                .sync(rpc::request(req, core.clients.timeout() * 10))
                .await
            {
                Ok(reply) => {
                    let reply = reply.into_inner();
                    let n = self
                        .apply_newer(reply.newer_groups, reply.newer_tombstones, |_| true)
                        .await;
                    tracing::info!(node = %core.self_id, peer = %peer.id, groups = n, "pulled groups from a peer");
                }
                Err(e) => {
                    all = false;
                    tracing::warn!(node = %core.self_id, peer = %peer.id, err = %e, "pulling groups from a peer failed");
                }
            }
        }
        all
    }

    /// Starts a round now.
    pub fn kick(&self) {
        self.kick.notify_one();
    }

    /// The handover of a leaving node: rounds until it holds nothing or `deadline` passes.
    /// The ring must already show this node as leaving (it owns nothing then).
    pub async fn hand_over(&self, rings: &watch::Receiver<Arc<Ring>>, deadline: Instant) -> bool {
        let started = Instant::now();
        loop {
            let ring = rings.borrow().clone();
            let others = ring.active().any(|m| m.id != self.core.self_id);
            if !others {
                tracing::warn!(node = %self.core.self_id, "no other active member to hand groups to; they stay in the persistence file");
                return false;
            }
            // The leaving state reaches the other nodes within a few gossip rounds.
            let allow_drop = started.elapsed() >= self.settle;
            let report = self.round(&ring, allow_drop).await;
            if report.held == report.handed_off && allow_drop {
                tracing::info!(node = %self.core.self_id, "handed every group over");
                return true;
            }
            if Instant::now() >= deadline {
                tracing::warn!(node = %self.core.self_id, remaining = report.hints, "shutdown timeout reached before every group was handed over; the co-owners and the persistence file keep them");
                return false;
            }
            let pause = if allow_drop {
                Duration::from_millis(200)
            } else {
                self.settle.saturating_sub(started.elapsed())
            };
            tokio::time::sleep(pause.min(deadline.saturating_duration_since(Instant::now()))).await;
        }
    }
}

/// The callee's side of `Sync` (runs on the blocking pool: it encodes groups).
pub fn answer_sync(core: &ClusterCore, req: pb::SyncRequest) -> Result<pb::SyncReply, String> {
    if req.entries.len() > MAX_SYNC_ENTRIES {
        return Err(format!("sync with {} entries", req.entries.len()));
    }
    let names = core.names();
    let store = &core.store;
    let mut reply = pb::SyncReply::default();
    let mut listed: HashSet<GroupKey> = HashSet::new();
    for (i, e) in req.entries.into_iter().enumerate() {
        let key = rpc::key_from_pb(e.key, names)?;
        let group = store.group_version(&key);
        let tomb = store.tombstone(&key);
        let local = match (group, tomb) {
            (Some(g), Some(t)) => Some(g.max(t)),
            (g, t) => g.or(t),
        };
        match local {
            Some(v) if v > e.version => {
                if tomb == Some(v) {
                    reply.newer_tombstones.push(pb::Tombstone {
                        key: rpc::key_to_pb(&key),
                        version: v,
                    });
                } else if let Some(g) = store.group(&key) {
                    reply.newer_groups.push(rpc::group_to_bytes(&g).into());
                }
            }
            Some(v) if v == e.version => {}
            _ => reply.missing.push(i as u32),
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
            super::placement::owners(key.stable_hash(), members.iter(), r)
                .iter()
                .any(|m| m.id == from)
        };
        for g in store.snapshot() {
            if !listed.contains(&*g.key) && owns(&g.key) {
                reply.newer_groups.push(rpc::group_to_bytes(&g).into());
            }
        }
        for (k, v) in store.tombstones() {
            if !listed.contains(&k) && owns(&k) {
                reply.newer_tombstones.push(pb::Tombstone {
                    key: rpc::key_to_pb(&k),
                    version: v,
                });
            }
        }
    }
    Ok(reply)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::exposition::names::NameScheme;
    use crate::exposition::text_parse::parse_text;
    use crate::store::{prepare_push, Store, StoreOptions, Validation};

    fn key(job: &str) -> GroupKey {
        GroupKey::new([("job".to_owned(), job.to_owned())])
    }

    fn member(id: &str, port: u16) -> Member {
        Member {
            id: NodeId::from(id),
            generation: 1,
            grpc_addr: std::net::SocketAddr::from(([127, 0, 0, 1], port)),
            state: MemberState::Active,
        }
    }

    fn core_with(store: Arc<Store>, members: Vec<Member>, r: usize) -> Arc<ClusterCore> {
        let ring = Arc::new(Ring::new(NodeId::from("a"), members, 1));
        let (_tx, rx) = watch::channel(ring);
        ClusterCore::new(
            store,
            Validation::default(),
            rx,
            NodeId::from("a"),
            r,
            Duration::from_secs(1),
        )
    }

    fn push(store: &Store, job: &str, version: u64) {
        let families = parse_text(b"m 1\n", NameScheme::Legacy).expect("valid text");
        let p = prepare_push(key(job), families, true, &Validation::default()).expect("valid");
        store.push_versioned(p, 1.0, || version).expect("push");
    }

    fn entry(job: &str, version: u64, tombstone: bool) -> pb::SyncEntry {
        pb::SyncEntry {
            key: rpc::key_to_pb(&key(job)),
            version,
            tombstone,
        }
    }

    #[test]
    fn a_collect_leaves_out_exactly_the_groups_the_caller_holds_in_the_same_version() {
        let store = Store::new(StoreOptions::default());
        push(&store, "same", 10);
        push(&store, "newer_here", 30);
        push(&store, "not_held", 40);
        let held = pb::CollectRequest {
            held_keys: vec![key("same").stable_hash(), key("newer_here").stable_hash()],
            held_versions: vec![10, 20],
            ..Default::default()
        };
        let ring = Ring::new(NodeId::from("a"), Vec::new(), 1);
        let select = |req: &pb::CollectRequest| rpc::select_for_collect(&store, req, &ring, 2);
        // In no particular order.
        let jobs = |groups: &[crate::store::GroupSnapshot]| -> Vec<String> {
            let mut jobs: Vec<String> = groups.iter().map(|g| g.key.to_string()).collect();
            jobs.sort();
            jobs
        };
        let sel = select(&held);
        assert!(sel.deferred.is_empty());
        assert_eq!(
            jobs(&sel.groups),
            vec![key("newer_here").to_string(), key("not_held").to_string()]
        );
        // A malformed list (lengths differ) or none at all: everything is sent.
        for bad in [
            pb::CollectRequest::default(),
            pb::CollectRequest {
                held_keys: vec![key("same").stable_hash()],
                ..Default::default()
            },
        ] {
            assert_eq!(select(&bad).groups.len(), 3);
        }
    }

    #[test]
    fn a_group_two_peers_sent_in_the_same_version_is_decoded_once() {
        let a = Store::new(StoreOptions::default());
        push(&a, "both", 10);
        push(&a, "only_a", 11);
        push(&a, "differs", 12);
        let b = Store::new(StoreOptions::default());
        push(&b, "both", 10);
        push(&b, "differs", 13);
        let chunks = |s: &Store| rpc::collect_chunks(&s.snapshot(), Vec::new(), Vec::new(), false);
        let mut answers = vec![chunks(&a), chunks(&b)];
        // An answer of an earlier release lists no key hashes: it is left alone.
        let mut legacy = chunks(&b);
        for c in &mut legacy {
            c.group_keys.clear();
            c.group_versions.clear();
        }
        answers.push(legacy);
        let spares = rpc::drop_repeated_groups(&mut answers);
        let decoded = |chunks: Vec<pb::CollectChunk>| -> Vec<(String, u64)> {
            let mut v: Vec<(String, u64)> = rpc::decode_chunks(chunks, NameScheme::Legacy)
                .unwrap()
                .groups
                .iter()
                .map(|g| (g.key.to_string(), g.version))
                .collect();
            v.sort();
            v
        };
        let [from_a, from_b, from_legacy]: [Vec<pb::CollectChunk>; 3] = answers.try_into().unwrap();
        assert_eq!(decoded(from_a).len(), 3);
        assert_eq!(
            decoded(from_b),
            vec![(key("differs").to_string(), 13)],
            "b's copy of \"both\" is the same version as a's"
        );
        assert_eq!(decoded(from_legacy).len(), 2);
        // The copy set aside is there for when a's answer cannot be decoded.
        assert_eq!(
            decoded(vec![spares[1].clone()]),
            vec![(key("both").to_string(), 10)]
        );
        assert!(spares[0].groups.is_empty() && spares[2].groups.is_empty());
    }

    #[test]
    fn sync_answers_newer_states_and_missing_entries() {
        let store = Arc::new(Store::new(StoreOptions::default()));
        push(&store, "same", 10);
        push(&store, "newer_here", 20);
        push(&store, "older_here", 5);
        store.delete_versioned(&key("deleted_here"), 30);
        let core = core_with(store, vec![member("a", 1)], 1);
        let req = pb::SyncRequest {
            from: "b".into(),
            entries: vec![
                entry("same", 10, false),
                entry("newer_here", 15, false),
                entry("older_here", 6, false),
                entry("deleted_here", 25, false),
                entry("absent", 3, true),
            ],
            want_owned: false,
        };
        let reply = answer_sync(&core, req).expect("valid request");
        assert_eq!(reply.missing, vec![2, 4]);
        assert_eq!(reply.newer_groups.len(), 1);
        let g = rpc::group_from_bytes(&reply.newer_groups[0], NameScheme::Legacy).unwrap();
        assert_eq!((g.key.get("job"), g.version), (Some("newer_here"), 20));
        assert_eq!(reply.newer_tombstones.len(), 1);
        assert_eq!(reply.newer_tombstones[0].version, 30);
    }

    #[test]
    fn sync_refuses_a_bad_key_without_panicking() {
        let core = core_with(
            Arc::new(Store::new(StoreOptions::default())),
            vec![member("a", 1)],
            1,
        );
        let req = pb::SyncRequest {
            from: "b".into(),
            entries: vec![pb::SyncEntry {
                key: Vec::new(),
                version: 1,
                tombstone: false,
            }],
            want_owned: true,
        };
        assert!(answer_sync(&core, req).is_err());
    }

    #[test]
    fn pull_sends_the_groups_the_joiner_will_own() {
        let store = Arc::new(Store::new(StoreOptions::default()));
        for i in 0..50 {
            push(&store, &format!("j{i}"), 100 + i);
        }
        // R = 1 with the joiner counted: about half of the groups move to "b".
        let core = core_with(store, vec![member("a", 1)], 1);
        let req = pb::SyncRequest {
            from: "b".into(),
            entries: vec![entry("j0", 100, false)],
            want_owned: true,
        };
        let reply = answer_sync(&core, req).expect("valid request");
        let joined = [member("a", 1), member("b", 2)];
        let want = (1..50)
            .filter(|i| {
                let h = key(&format!("j{i}")).stable_hash();
                super::super::placement::owners(h, &joined, 1)[0]
                    .id
                    .as_str()
                    == "b"
            })
            .count();
        assert!(want > 0);
        assert_eq!(reply.newer_groups.len(), want);
    }

    #[tokio::test]
    async fn a_round_without_peers_keeps_groups_and_collects_old_tombstones() {
        let store = Arc::new(Store::new(StoreOptions::default()));
        push(&store, "kept", 1 << 16);
        store.delete_versioned(&key("old"), 1 << 16);
        let recent = unix_millis() << 16;
        store.delete_versioned(&key("recent"), recent);
        let core = core_with(store.clone(), vec![member("a", 1)], 2);
        let rec = Reconciler::new(
            core,
            LifecycleSettings::default(),
            Duration::from_millis(200),
        );
        let ring = Ring::new(NodeId::from("a"), vec![member("a", 1)], 1);
        let report = rec.round(&ring, true).await;
        assert_eq!((report.handed_off, report.hints), (0, 0));
        assert!(store.group(&key("kept")).is_some());
        assert_eq!(store.tombstone(&key("old")), None);
        assert_eq!(store.tombstone(&key("recent")), Some(recent));
    }

    #[test]
    fn handed_over_copies_are_dropped_only_in_the_acknowledged_version() {
        let store = Store::new(StoreOptions::default());
        push(&store, "g", 10);
        assert!(!store.drop_if_version(&key("g"), 9));
        assert!(store.drop_if_version(&key("g"), 10));
        assert!(store.group(&key("g")).is_none());
        assert!(
            store.tombstone(&key("g")).is_none(),
            "a move leaves no tombstone"
        );
        store.delete_versioned(&key("t"), 5);
        assert!(!store.drop_tombstone_if_version(&key("t"), 4));
        assert!(store.drop_tombstone_if_version(&key("t"), 5));
        assert_eq!(store.tombstone_count(), 0);
    }
}
