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

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{watch, Notify};

use super::super::core::ClusterCore;
use super::super::events::{ClusterEvent, RoundSummary};
use super::super::member::Member;
use super::super::ring::Ring;
use crate::store::{tombstone_digest, GroupKey};
use crate::time::unix_millis;

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
pub(super) const SYNC_BATCH: usize = 2_000;

/// One group or tombstone held by this node, as a round sees it.
pub(super) struct Held {
    pub(super) key: Arc<GroupKey>,
    pub(super) version: u64,
    /// What this node holds of it (`store::merge::digest`), compared by its owners.
    pub(super) digest: u64,
    pub(super) tombstone: bool,
    pub(super) owned: bool,
    /// Owners other than this node.
    pub(super) owners: Vec<Member>,
    /// Owners known to hold this version or a newer one.
    pub(super) acked: usize,
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
    pub(super) core: Arc<ClusterCore>,
    pub(super) settings: LifecycleSettings,
    /// Minimum ring stability before a copy is dropped.
    pub(super) settle: Duration,
    /// Starts a round now (e.g. a leaving node's handover).
    pub(super) kick: Notify,
    /// When each hint held at the end of the last round was first seen as one (by key hash,
    /// tombstones apart): the age of the oldest. As many entries as hints, at most
    /// `--cluster.max-hints` plus the groups of a ring change.
    pub(super) hint_since: parking_lot::Mutex<HashMap<(u64, bool), Instant>>,
}

/// Paces transfers to at most `rate` per second.
pub(super) struct Pacer {
    started: Instant,
    sent: u64,
    rate: u32,
}

impl Pacer {
    pub(super) fn new(rate: u32) -> Self {
        Pacer {
            started: Instant::now(),
            sent: 0,
            rate: rate.max(1),
        }
    }
    pub(super) async fn tick(&mut self) {
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
            hint_since: parking_lot::Mutex::new(HashMap::new()),
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
            ClusterEvent::TombstonesExpired { count: expired }.emit();
        }

        let r = core.replication_factor;
        let mut held: Vec<Held> = Vec::new();
        // Counted from here on by the takes themselves (see the end of the round).
        core.hints_taken.store(0, Ordering::Release);
        let entries = store
            .versions()
            .into_iter()
            .map(|(k, v, d)| (k, v, d, false))
            .chain(store.tombstones().into_iter().map(|(k, v)| {
                let d = tombstone_digest(&k, v);
                (Arc::new(k), v, d, true)
            }));
        let mut primary = 0;
        for (key, version, digest, tombstone) in entries {
            let owners = ring.owners(key.stable_hash(), r);
            let owned = owners.iter().any(|o| o.id == core.self_id);
            if !tombstone && owners.first().is_some_and(|o| o.id == core.self_id) {
                primary += 1;
            }
            let others: Vec<Member> = owners
                .into_iter()
                .filter(|o| o.id != core.self_id)
                .cloned()
                .collect();
            held.push(Held {
                key,
                version,
                digest,
                tombstone,
                owned,
                owners: others,
                acked: 0,
            });
        }
        core.primary.store(primary, Ordering::Relaxed);
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
            match self.sync_with(&peer, &list, &mut held, &mut pacer).await {
                Ok((sent, received)) => {
                    report.sent += sent;
                    report.received += received;
                }
                Err(e) => {
                    tracing::debug!(peer = %peer.id, err = %e, "reconciliation with a peer failed; retrying next round");
                    report.unreachable_peers += 1;
                }
            }
        }

        let now = Instant::now();
        let mut since = self.hint_since.lock();
        let mut kept = HashMap::with_capacity(since.len());
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
                    store.drop_if_digest(&h.key, h.digest)
                };
            if dropped {
                report.handed_off += 1;
            } else {
                report.hints += 1;
                let id = (h.key.stable_hash(), h.tombstone);
                kept.insert(id, since.get(&id).copied().unwrap_or(now));
            }
        }
        let oldest_hint = kept.values().min().map(|t| now.duration_since(*t));
        *since = kept;
        drop(since);
        // Hints taken while the round ran (after its list of what is held was made) are not in
        // its count: they are added back, so a burst during a round is still bounded.
        let taken = core.hints_taken.swap(0, Ordering::AcqRel);
        core.hints.store(report.hints + taken, Ordering::Release);
        core.report_tombstones();
        ClusterEvent::RoundEnded(RoundSummary {
            node: &core.self_id,
            held: report.held,
            handed_off: report.handed_off,
            sent: report.sent,
            received: report.received,
            hints: report.hints,
            oldest_hint,
            unreachable_peers: report.unreachable_peers,
        })
        .emit();
        report
    }

    /// Starts a round now.
    pub fn kick(&self) {
        self.kick.notify_one();
    }
}
