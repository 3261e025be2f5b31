//! The cluster side of a node: it binds its gRPC listener and gossip socket when it starts,
//! joins (waits for peers, pulls its groups, turns ready) and leaves (hands its groups over).

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio::net::TcpListener;
use tokio::sync::Notify;

use super::readiness::Readiness;
use crate::cluster::gossip_key::KEY_FILE_POLL;
use crate::cluster::reconcile::{LifecycleSettings, Reconciler};
use crate::cluster::rpc::tls::tls_incoming;
use crate::cluster::rpc::limit::GlobalLimitLayer;
use crate::cluster::rpc::{
    ClusterServer, PEER_CONNECTION_WINDOW, PEER_MAX_FRAME, PEER_STREAM_WINDOW,
};
use crate::cluster::sealed_udp::SealedUdpTransport;
use crate::cluster::{ClusterBounds, ClusterCore, ClusterService};
use crate::cluster::{Member, MemberState, Membership, MembershipConfig, Ring};
use crate::config::cluster::open_plane_warning;
use crate::config::{ClusterSettings, Config};
use crate::store::{Store, TombstoneBudget, Validation};
use crate::telemetry::metrics as m;
use crate::tls::{ClusterTls, RELOAD_CHECK_INTERVAL};

/// How long a joining node waits, once active, for R active members before it turns ready.
const WRITE_QUORUM_WAIT: Duration = Duration::from_secs(5);

/// The cluster side of a node: membership (gossip over UDP), the gRPC server (TCP, same port)
/// and the state they share with the HTTP side.
pub(super) struct ClusterNode {
    pub(super) core: Arc<ClusterCore>,
    pub(super) lifecycle: Arc<Lifecycle>,
    /// How long a stopping node keeps serving HTTP while unready (`--cluster.drain-period`).
    pub(super) drain: Duration,
    grpc_stop: Arc<Notify>,
    /// Ends the peers' open `Writes` calls, which the gRPC server's shutdown waits for.
    writes_stop: tokio::sync::watch::Sender<bool>,
    grpc: tokio::task::JoinHandle<()>,
    tls_watch: Option<tokio::task::JoinHandle<()>>,
    members_gauge: tokio::task::JoinHandle<()>,
    /// Gossips this node's counts for the Cluster pages.
    stats: tokio::task::JoinHandle<()>,
    /// Keeps `pushgate_cluster_writable` and the lost-members warnings.
    writable: tokio::task::JoinHandle<()>,
    /// Re-reads the gossip key file (when there is one).
    key_watch: Option<tokio::task::JoinHandle<()>>,
    join: tokio::task::JoinHandle<()>,
    /// Taken (and awaited) by the last handover.
    reconciler: Option<tokio::task::JoinHandle<()>>,
}

/// How often a node looks at its counts for the Cluster pages (gossiped only when changed).
const STATS_INTERVAL: Duration = Duration::from_secs(1);

/// Gossips this node's counts (groups, primary, hints) whenever they change, until the node
/// stops.
async fn gossip_stats(lifecycle: std::sync::Weak<Lifecycle>, core: Arc<ClusterCore>) {
    let mut last = None;
    let mut interval = tokio::time::interval(STATS_INTERVAL);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        interval.tick().await;
        let now = core.node_stats();
        if last == Some(now) {
            continue;
        }
        let Some(l) = lifecycle.upgrade() else {
            return;
        };
        l.membership.set_stats(now).await;
        last = Some(now);
    }
}

/// What joining and leaving need: the membership, the reconciler and its stop signal.
pub(super) struct Lifecycle {
    membership: Membership,
    reconciler: Arc<Reconciler>,
    reconciler_stop: Arc<Notify>,
    shutdown_timeout: Duration,
    /// Set by a stop: a join still running must not gossip `active` or turn the node ready.
    leaving: std::sync::atomic::AtomicBool,
}

impl Lifecycle {
    /// A stop began: a join still running neither gossips `active` nor turns the node ready
    /// (call it before the node is made unready).
    pub(super) fn stop_joining(&self) {
        self.leaving
            .store(true, std::sync::atomic::Ordering::SeqCst);
    }

    fn is_leaving(&self) -> bool {
        self.leaving.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Waits for the peers (when any is configured), pulls the groups this node owns, turns
    /// active and ready. Gives up waiting after `timeout`, with a warning.
    async fn join(
        &self,
        peers_configured: bool,
        timeout: Duration,
        replication_factor: usize,
        ready: Readiness,
    ) {
        let deadline = tokio::time::Instant::now() + timeout;
        let self_id = self.membership.self_id().clone();
        let mut rings = self.membership.subscribe();
        if peers_configured {
            loop {
                if rings
                    .borrow_and_update()
                    .members
                    .iter()
                    .any(|m| m.id != self_id)
                {
                    break;
                }
                tokio::select! {
                    changed = rings.changed() => if changed.is_err() { return },
                    _ = tokio::time::sleep_until(deadline) => {
                        tracing::warn!(node = %self_id, "no cluster peer seen within --cluster.join-timeout; starting as the first node");
                        break;
                    }
                }
            }
        }
        let ring = self.membership.ring();
        let pulled = tokio::time::timeout_at(deadline, self.reconciler.pull(&ring)).await;
        if !matches!(pulled, Ok(true)) {
            tracing::warn!(node = %self_id, "could not pull from every peer; anti-entropy completes the copy");
        }
        if self.is_leaving() {
            return;
        }
        self.membership.set_state(MemberState::Active).await;
        // Ready once this node's own ring routes writes to it (the next gossip round).
        let active = own_state_seen(&mut rings, Duration::from_secs(10), |m| {
            m.is_some_and(|m| m.state == MemberState::Active)
        })
        .await;
        if !active {
            tracing::warn!(node = %self_id, "own active state not seen in the ring; ready anyway");
        }
        // At a cold start the nodes turn active at about the same time, and each sees the
        // others still joining for a gossip round: writes are placed over the active members,
        // so with fewer than R of them a push could not reach R holders (503). Wait, briefly,
        // until R are active or none is left joining (a cluster short of nodes is ready at once:
        // it serves reads).
        let enough = ring_seen(&mut rings, WRITE_QUORUM_WAIT, |ring| {
            let count = |state| ring.members.iter().filter(|m| m.state == state).count();
            count(MemberState::Active) >= replication_factor || count(MemberState::Joining) == 0
        })
        .await;
        if !enough {
            tracing::warn!(node = %self_id, "fewer than --cluster.replication-factor members active; ready anyway");
        }
        ready.set_ready();
        // Checked after: a stop that began meanwhile made the node unready before or after
        // this, and either way it stays unready.
        if self.is_leaving() {
            ready.set_not_ready();
            return;
        }
        tracing::info!(node = %self_id, "joined the cluster; ready");
        self.reconciler.kick();
    }

    /// The start of a graceful stop: gossips `leaving`, so the other nodes stop placing
    /// groups here and the reconciler's rounds start handing them over while the node drains
    /// (it keeps serving HTTP, forwarding every write, and taking stand-in copies).
    pub(super) async fn begin_leave(&self) {
        self.stop_joining();
        self.membership.set_state(MemberState::Leaving).await;
        self.reconciler.kick();
    }
}

impl ClusterNode {
    /// The end of a graceful stop, once the HTTP listeners are closed: refuses further writes
    /// and copies from peers (they move on to the next node), then hands every group still
    /// held to its owners, within `--cluster.shutdown-timeout`. Reads are served meanwhile.
    pub(super) async fn finish_leave(&mut self) {
        let lifecycle = &self.lifecycle;
        let deadline = std::time::Instant::now() + lifecycle.shutdown_timeout;
        lifecycle.reconciler_stop.notify_waiters();
        lifecycle.reconciler_stop.notify_one();
        if let Some(mut task) = self.reconciler.take() {
            // The reconciler stops between rounds: a round in progress is let finish, cut at
            // the deadline when long (the handover rounds below do the same work).
            if tokio::time::timeout_at(deadline.into(), &mut task).await.is_err() {
                task.abort();
            }
        }
        // Idempotent: the drain gossiped it already, unless the HTTP side stopped by itself.
        lifecycle.membership.set_state(MemberState::Leaving).await;
        self.core.close(deadline).await;
        let self_id = lifecycle.membership.self_id().clone();
        let mut rings = lifecycle.membership.subscribe();
        let seen = own_state_seen(&mut rings, Duration::from_secs(5), |m| {
            m.is_none_or(|m| m.state == MemberState::Leaving)
        })
        .await;
        if !seen {
            tracing::warn!(node = %self_id, "own leaving state not seen in the ring; handing over anyway");
        }
        lifecycle.reconciler.hand_over(&rings, deadline).await;
    }

    pub(super) async fn start(
        s: &ClusterSettings,
        settings: LifecycleSettings,
        store: Arc<Store>,
        validation: Validation,
        ready: Readiness,
        tls: Option<ClusterTls>,
    ) -> anyhow::Result<ClusterNode> {
        let grpc_listener = TcpListener::bind(s.listen)
            .await
            .with_context(|| format!("cannot listen on {} (cluster gRPC)", s.listen))?;
        let mut mc = MembershipConfig::new(s.advertise, s.advertise);
        mc.gossip_listen = s.listen;
        mc.peers = s.peers.clone();
        mc.cluster_name = s.name.clone();
        mc.gossip_interval = s.gossip_interval;
        mc.failure_detector.initial_interval = s.gossip_interval;
        if let Some(warning) = open_plane_warning(tls.is_some(), s.gossip_key.is_some()) {
            tracing::warn!("{warning}");
        }
        let (membership, key_watch) = match &s.gossip_key {
            Some(file) => {
                let transport = SealedUdpTransport::new(file.keys.clone(), &s.name);
                let membership = Membership::start_on(mc, &transport).await?;
                tracing::info!(file = %file.path.display(), keys = ?file.keys.load().ids(), "gossip sealed; the first key seals");
                let watch = tokio::spawn(file.clone().watch(KEY_FILE_POLL));
                (membership, Some(watch))
            }
            None => (Membership::start(mc).await?, None),
        };
        store.set_tombstone_budget(TombstoneBudget {
            max_count: s.max_tombstones,
            max_bytes: s.max_tombstone_bytes,
        });
        let bounds = ClusterBounds {
            max_message_bytes: s.grpc_max_message_bytes,
            max_batch_items: s.max_batch_items,
            max_scrape_bytes: s.max_scrape_bytes,
        };
        let core = ClusterCore::with_bounds(
            store,
            validation,
            membership.subscribe(),
            membership.self_id().clone(),
            s.replication_factor,
            s.peer_timeout,
            bounds,
            tls.clone(),
        );
        core.set_max_clock_skew(s.max_clock_skew);
        core.set_member_details(membership.details());
        core.set_write_quorum(s.write_quorum);
        let grpc_stop = Arc::new(Notify::new());
        // tonic checks a message's declared length before reading it: a message over the limit
        // is refused at its header, and no more than the limit is ever buffered per call.
        let limit = GlobalLimitLayer::new(s.grpc_max_concurrency);
        let (writes_stop, stop_writes) = tokio::sync::watch::channel(false);
        let admission = limit.batch_admission(s.grpc_timeout, stop_writes);
        let service = ClusterServer::new(ClusterService::new(core.clone()).with_admission(admission))
            .max_decoding_message_size(s.grpc_max_message_bytes)
            .max_encoding_message_size(s.grpc_max_message_bytes);
        let stop = grpc_stop.clone();
        let server = tonic::transport::Server::builder()
            .tcp_nodelay(true)
            .initial_stream_window_size(PEER_STREAM_WINDOW)
            .initial_connection_window_size(PEER_CONNECTION_WINDOW)
            .max_frame_size(PEER_MAX_FRAME)
            .max_concurrent_streams(s.grpc_max_streams)
            .timeout(s.grpc_timeout)
            .layer(limit)
            .add_service(service);
        let shutdown = async move { stop.notified().await };
        let tls_watch = tls.as_ref().map(|t| t.watch(RELOAD_CHECK_INTERVAL));
        let grpc = match tls {
            Some(tls) => tokio::spawn(async move {
                let incoming = tls_incoming(grpc_listener, tls);
                let res = server
                    .serve_with_incoming_shutdown(incoming, shutdown)
                    .await;
                if let Err(e) = res {
                    tracing::error!(err = %e, "cluster gRPC server stopped with an error");
                }
            }),
            None => {
                // `Server::tcp_nodelay` applies only to listeners tonic binds itself; without
                // it, the answers to batched calls sat in Nagle's buffer until the peer's
                // delayed ACK.
                let incoming = tokio_stream::StreamExt::map(
                    tokio_stream::wrappers::TcpListenerStream::new(grpc_listener),
                    |conn| {
                        let conn = conn?;
                        conn.set_nodelay(true)?;
                        Ok::<_, std::io::Error>(conn)
                    },
                );
                tokio::spawn(async move {
                    let res = server
                        .serve_with_incoming_shutdown(incoming, shutdown)
                        .await;
                    if let Err(e) = res {
                        tracing::error!(err = %e, "cluster gRPC server stopped with an error");
                    }
                })
            }
        };
        let (join_timeout, shutdown_timeout) = (settings.join_timeout, settings.shutdown_timeout);
        let reconciler = Reconciler::new(core.clone(), settings, s.gossip_interval);
        let reconciler_stop = Arc::new(Notify::new());
        let reconciler_task = tokio::spawn(
            reconciler
                .clone()
                .run(membership.subscribe(), reconciler_stop.clone()),
        );
        let writable = tokio::spawn(crate::cluster::health::watch_writable(
            membership.subscribe(),
            s.write_quorum,
        ));
        let mut rings = membership.subscribe();
        let members_gauge = tokio::spawn(async move {
            loop {
                let ring = rings.borrow_and_update().clone();
                for state in [
                    MemberState::Joining,
                    MemberState::Active,
                    MemberState::Leaving,
                ] {
                    let n = ring.members.iter().filter(|m| m.state == state).count();
                    metrics::gauge!(m::CLUSTER_MEMBERS, "state" => state.as_str()).set(n as f64);
                }
                if rings.changed().await.is_err() {
                    return;
                }
            }
        });
        tracing::info!(node = %membership.self_id(), listen = %s.listen, peers = ?s.peers, replication_factor = s.replication_factor, "cluster node started");
        let lifecycle = Arc::new(Lifecycle {
            membership,
            reconciler,
            reconciler_stop,
            shutdown_timeout,
            leaving: std::sync::atomic::AtomicBool::new(false),
        });
        let stats = tokio::spawn(gossip_stats(Arc::downgrade(&lifecycle), core.clone()));
        let own = [s.listen.to_string(), s.advertise.to_string()];
        let peers_configured = s.peers.iter().any(|p| !own.contains(p));
        let join = {
            let lifecycle = lifecycle.clone();
            let timeout = join_timeout;
            let r = s.replication_factor;
            tokio::spawn(async move { lifecycle.join(peers_configured, timeout, r, ready).await })
        };
        Ok(ClusterNode {
            core,
            lifecycle,
            drain: s.drain_period,
            grpc_stop,
            writes_stop,
            grpc,
            tls_watch,
            members_gauge,
            stats,
            writable,
            key_watch,
            join,
            reconciler: Some(reconciler_task),
        })
    }

    /// After the last handover and the final snapshot: stop serving peers and gossiping.
    pub(super) async fn stop(self) {
        self.join.abort();
        let _ = self.join.await;
        self.lifecycle.reconciler_stop.notify_waiters();
        self.lifecycle.reconciler_stop.notify_one();
        if let Some(task) = self.reconciler {
            let _ = task.await;
        }
        self.lifecycle
            .membership
            .set_state(MemberState::Leaving)
            .await;
        self.writes_stop.send_replace(true);
        self.grpc_stop.notify_waiters();
        self.grpc_stop.notify_one();
        let _ = self.grpc.await;
        self.members_gauge.abort();
        self.stats.abort();
        let _ = self.stats.await;
        self.writable.abort();
        if let Some(w) = self.tls_watch {
            w.abort();
        }
        if let Some(watch) = self.key_watch {
            watch.abort();
        }
        let _ = self.core;
        match Arc::try_unwrap(self.lifecycle) {
            Ok(l) => l.membership.shutdown().await,
            Err(_) => tracing::warn!(
                "cluster membership still in use at shutdown; gossip stops with the process"
            ),
        }
    }
}

/// What joining, leaving and the reconciler need of the cluster flags (checked by
/// `Config::cluster`).
pub(super) fn lifecycle_settings(cfg: &Config) -> LifecycleSettings {
    LifecycleSettings {
        anti_entropy_interval: cfg.cluster_anti_entropy_interval,
        tombstone_lifetime: cfg.cluster_tombstone_lifetime,
        max_hints: cfg.cluster_max_hints,
        rebalance_rate: cfg.cluster_rebalance_rate,
        join_timeout: cfg.cluster_join_timeout,
        shutdown_timeout: cfg.cluster_shutdown_timeout,
    }
}

/// Waits (at most `limit`) until this node's own entry in its ring satisfies `done`, i.e. the
/// gossip round that carries a state change has come back; false on timeout.
async fn own_state_seen(
    rings: &mut tokio::sync::watch::Receiver<Arc<Ring>>,
    limit: Duration,
    done: impl Fn(Option<&Member>) -> bool,
) -> bool {
    ring_seen(rings, limit, |ring| done(ring.self_member())).await
}

/// Waits (at most `limit`) until this node's ring satisfies `done`; false on timeout.
async fn ring_seen(
    rings: &mut tokio::sync::watch::Receiver<Arc<Ring>>,
    limit: Duration,
    done: impl Fn(&Ring) -> bool,
) -> bool {
    tokio::time::timeout(limit, async {
        loop {
            if done(&rings.borrow_and_update()) || rings.changed().await.is_err() {
                return;
            }
        }
    })
    .await
    .is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[test]
    fn the_lifecycle_settings_are_the_cluster_flags() {
        let cfg = Config::try_parse_from([
            "pushgate",
            "--cluster.listen-address=127.0.0.1:9094",
            "--cluster.anti-entropy-interval=11s",
            "--cluster.tombstone-lifetime=2h",
            "--cluster.max-hints=7",
            "--cluster.rebalance-rate=9",
            "--cluster.join-timeout=12s",
            "--cluster.shutdown-timeout=13s",
        ])
        .unwrap();
        let s = lifecycle_settings(&cfg);
        assert_eq!(s.anti_entropy_interval, Duration::from_secs(11));
        assert_eq!(s.tombstone_lifetime, Duration::from_secs(7200));
        assert_eq!(s.max_hints, 7);
        assert_eq!(s.rebalance_rate, 9);
        assert_eq!(s.join_timeout, Duration::from_secs(12));
        assert_eq!(s.shutdown_timeout, Duration::from_secs(13));
    }
}
