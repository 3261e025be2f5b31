//! The pull of a joining node and the handover of a leaving one.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::watch;

use super::super::ring::Ring;
use super::super::rpc::{client, pb, wire};
use super::rounds::Reconciler;
use crate::store::tombstone_digest;

impl Reconciler {
    /// The pull of a joining node: asks every other member for the groups this node will own
    /// (and newer states of what it holds). Returns whether every member answered.
    pub async fn pull(&self, ring: &Ring) -> bool {
        let core = &self.core;
        let store = &core.store;
        let entries: Vec<pb::SyncEntry> = store
            .versions()
            .into_iter()
            .map(|(k, v, digest)| pb::SyncEntry {
                key: wire::key_to_pb(&k),
                version: v,
                tombstone: false,
                digest,
            })
            .chain(store.tombstones().into_iter().map(|(k, v)| pb::SyncEntry {
                digest: tombstone_digest(&k, v),
                key: wire::key_to_pb(&k),
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
                wipe_watermark: store.wiped_at(),
                summary: Vec::new(),
            };
            let mut client = core.clients.client(peer.grpc_addr);
            match client
                .sync(client::request(req, core.clients.timeout() * 10))
                .await
            {
                Ok(reply) => {
                    let reply = reply.into_inner();
                    // Learnt before the groups are taken: this node may have been down during
                    // a wipe, or restarted from a file written before it.
                    if let Err(e) = core.learn_wipe(reply.wipe_watermark, peer.id.as_str()) {
                        tracing::warn!(node = %core.self_id, peer = %peer.id, err = %e.message(), "refused a peer's wipe watermark");
                    }
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
