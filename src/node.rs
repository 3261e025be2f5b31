//! One pushgate node: builds the store from flags (loading the persistence file), serves the
//! HTTP API on pre-bound listeners, persists periodically and on shutdown.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio::net::TcpListener;
use tokio::sync::Notify;

use crate::cluster::gateway::{ClusterCore, ClusterGateway, ClusterService};
use crate::cluster::reconcile::{LifecycleSettings, Reconciler};
use crate::cluster::rpc::{
    ClusterServer, MAX_MESSAGE_BYTES, PEER_CONNECTION_WINDOW, PEER_MAX_FRAME, PEER_STREAM_WINDOW,
};
use crate::cluster::{MemberState, Membership, MembershipConfig};
use crate::config::{route_prefix, ClusterSettings, Config};
use crate::exposition::names::NameScheme;
use crate::gateway::LocalGateway;
use crate::http::grouping::GroupingLimits;
use crate::http::web_config::SharedWebConfig;
use crate::http::{router, AppState, HttpConfig};
use crate::store::{persistence, Limits, Store, StoreOptions, Validation};
use crate::telemetry::{self, metrics as m, SelfRecorder};
use crate::time::unix_seconds;

pub struct Node {
    cfg: Config,
    store: Arc<Store>,
    http: Arc<HttpConfig>,
    recorder: SelfRecorder,
    persistence: Option<PathBuf>,
}

impl Node {
    /// Validates flags and loads the persistence file. Nothing is bound yet.
    pub fn build(cfg: Config, recorder: SelfRecorder) -> anyhow::Result<Node> {
        let names = if cfg.enable_utf8_names {
            NameScheme::Utf8
        } else {
            NameScheme::Legacy
        };
        let prefix =
            route_prefix(&cfg.route_prefix, &cfg.external_url).map_err(anyhow::Error::msg)?;
        if !cfg.telemetry_path.starts_with('/') {
            anyhow::bail!(
                "--web.telemetry-path {:?} must start with /",
                cfg.telemetry_path
            );
        }
        if cfg.max_body_bytes == 0 || cfg.max_body_bytes > (1 << 30) {
            anyhow::bail!("--push.max-body-bytes must be between 1 and 1073741824");
        }
        let limits = Limits {
            max_series_per_push: cfg.max_series_per_push,
            max_label_name_bytes: cfg.max_label_name_length,
            max_label_value_bytes: cfg.max_label_value_length,
            max_grouping_labels: cfg.max_grouping_labels,
            max_groups: cfg.max_groups,
        };
        let store = Arc::new(Store::new(StoreOptions {
            consistency_check: !cfg.disable_consistency_check,
            max_groups: cfg.max_groups,
            reserved: telemetry::reserved_names(),
        }));
        let persistence =
            (!cfg.persistence_file.is_empty()).then(|| PathBuf::from(&cfg.persistence_file));
        if let Some(path) = &persistence {
            let dir = match path.parent() {
                Some(d) if !d.as_os_str().is_empty() => d.to_owned(),
                _ => PathBuf::from("."),
            };
            if !dir.is_dir() {
                anyhow::bail!(
                    "--persistence.file {:?}: directory {:?} does not exist",
                    path.display().to_string(),
                    dir.display().to_string()
                );
            }
            load_persistence(&store, path, names, cfg.persistence_start_empty_on_error)?;
        }
        let http = Arc::new(HttpConfig {
            route_prefix: prefix,
            telemetry_path: cfg.telemetry_path.clone(),
            enable_lifecycle: cfg.enable_lifecycle,
            enable_admin_api: cfg.enable_admin_api,
            consistency_check: !cfg.disable_consistency_check,
            names,
            max_body_bytes: cfg.max_body_bytes,
            grouping: GroupingLimits {
                max_labels: limits.max_grouping_labels,
                max_name_bytes: limits.max_label_name_bytes,
                max_value_bytes: limits.max_label_value_bytes,
            },
            flags: cfg.flag_values().to_vec(),
            external_url: cfg.external_url.clone(),
            start_time: unix_seconds(),
        });
        let _ = limits;
        cfg.cluster().map_err(anyhow::Error::msg)?;
        Ok(Node {
            cfg,
            store,
            http,
            recorder,
            persistence,
        })
    }

    pub fn store(&self) -> &Arc<Store> {
        &self.store
    }

    fn validation(&self) -> Validation {
        Validation {
            names: self.http.names,
            limits: Limits {
                max_series_per_push: self.cfg.max_series_per_push,
                max_label_name_bytes: self.cfg.max_label_name_length,
                max_label_value_bytes: self.cfg.max_label_value_length,
                max_grouping_labels: self.cfg.max_grouping_labels,
                max_groups: self.cfg.max_groups,
            },
        }
    }

    /// Serves until `shutdown` resolves or `/-/quit` is called, then persists a last time.
    pub async fn serve(
        self,
        listeners: Vec<TcpListener>,
        web: SharedWebConfig,
        shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        let quit = Arc::new(Notify::new());
        let settings = self.cfg.cluster().map_err(anyhow::Error::msg)?;
        // A cluster node turns ready once it joined and pulled its groups (see ClusterNode).
        let ready = Arc::new(AtomicBool::new(settings.is_none()));
        let mut cluster = None;
        let app = match settings {
            None => {
                let gateway = Arc::new(LocalGateway::new(self.store.clone(), self.validation()));
                let state = AppState {
                    gateway,
                    config: self.http.clone(),
                    recorder: self.recorder.clone(),
                    quit: quit.clone(),
                    ready: ready.clone(),
                };
                router(state, web.clone())
            }
            Some(settings) => {
                let running = ClusterNode::start(
                    &settings,
                    self.store.clone(),
                    self.validation(),
                    ready.clone(),
                )
                .await?;
                let gateway = Arc::new(ClusterGateway::new(running.core.clone()));
                let state = AppState {
                    gateway,
                    config: self.http.clone(),
                    recorder: self.recorder.clone(),
                    quit: quit.clone(),
                    ready: ready.clone(),
                };
                cluster = Some(running);
                router(state, web.clone())
            }
        };

        // One signal for everything that must stop: flags, signals, /-/quit. A cluster node
        // first leaves (still serving reads) and hands its groups over.
        let stop = Arc::new(Notify::new());
        {
            let stop = stop.clone();
            let leaving = cluster.as_ref().map(|c| c.lifecycle.clone());
            let ready = ready.clone();
            tokio::spawn(async move {
                tokio::select! {
                    _ = shutdown => {}
                    _ = quit.notified() => tracing::info!("shutdown requested via /-/quit"),
                }
                if let Some(l) = leaving {
                    ready.store(false, Ordering::Release);
                    l.leave().await;
                }
                stop.notify_waiters();
                stop.notify_one();
            });
        }

        let persister = self.persistence.clone().map(|path| {
            let store = self.store.clone();
            let interval = self.cfg.persistence_interval;
            let stop = stop.clone();
            tokio::spawn(persist_loop(store, path, interval, stop))
        });

        let mut servers = Vec::new();
        for l in listeners {
            if let Ok(addr) = l.local_addr() {
                tracing::info!(address = %addr, "listening");
            }
            let app = app.clone();
            let web = web.clone();
            let stop = stop.clone();
            servers.push(tokio::spawn(crate::http::server::serve(
                l,
                app,
                web,
                async move { stop.notified().await },
            )));
        }
        for s in servers {
            let _ = s.await;
        }
        ready.store(false, Ordering::Release);
        if let Some(c) = cluster {
            c.stop().await;
        }
        if let Some(p) = persister {
            p.await.context("persistence task failed")??;
        }
        tracing::info!("stopped");
        Ok(())
    }
}

fn load_persistence(
    store: &Store,
    path: &Path,
    names: NameScheme,
    start_empty: bool,
) -> anyhow::Result<()> {
    match persistence::load(store, path, names) {
        Ok(n) => {
            tracing::info!(file = %path.display(), groups = n, "loaded persistence file");
            Ok(())
        }
        Err(e) if start_empty => {
            let aside = path.with_extension(format!("corrupt-{}", unix_seconds() as u64));
            std::fs::rename(path, &aside)
                .with_context(|| format!("{e}; and moving it aside to {} failed", aside.display()))?;
            store.wipe();
            tracing::error!(err = %e, kept_as = %aside.display(), "persistence file unreadable; starting empty as --persistence.start-empty-on-error asks");
            Ok(())
        }
        Err(e) => Err(anyhow::Error::new(e).context(
            "refusing to start: fix or remove the persistence file, or pass --persistence.start-empty-on-error",
        )),
    }
}

/// Writes the snapshot at most once per interval when something changed, and once more at
/// shutdown.
async fn persist_loop(
    store: Arc<Store>,
    path: PathBuf,
    interval: Duration,
    stop: Arc<Notify>,
) -> anyhow::Result<()> {
    let mut written = store.generation();
    let interval = interval.max(Duration::from_millis(100));
    loop {
        let stopping = tokio::select! {
            _ = tokio::time::sleep(interval) => false,
            _ = stop.notified() => true,
        };
        let generation = store.generation();
        if generation != written || stopping {
            let s = store.clone();
            let p = path.clone();
            let res = tokio::task::spawn_blocking(move || persistence::save(&s, &p))
                .await
                .context("persistence writer panicked")?;
            match res {
                Ok(groups) => {
                    written = generation;
                    metrics::counter!(m::PERSISTENCE_WRITES_TOTAL, "result" => "success")
                        .increment(1);
                    metrics::gauge!(m::PERSISTENCE_LAST_WRITE_SECONDS).set(unix_seconds());
                    tracing::debug!(file = %path.display(), groups, "wrote persistence file");
                }
                Err(e) => {
                    metrics::counter!(m::PERSISTENCE_WRITES_TOTAL, "result" => "error")
                        .increment(1);
                    tracing::error!(err = %e, "writing the persistence file failed");
                    if stopping {
                        return Err(e.into());
                    }
                }
            }
        }
        if stopping {
            return Ok(());
        }
    }
}

/// How long a joining node waits, once active, for R active members before it turns ready.
const WRITE_QUORUM_WAIT: Duration = Duration::from_secs(5);

/// The cluster side of a node: membership (gossip over UDP), the gRPC server (TCP, same port)
/// and the state they share with the HTTP side.
struct ClusterNode {
    core: Arc<ClusterCore>,
    lifecycle: Arc<Lifecycle>,
    grpc_stop: Arc<Notify>,
    grpc: tokio::task::JoinHandle<()>,
    members_gauge: tokio::task::JoinHandle<()>,
    join: tokio::task::JoinHandle<()>,
    reconciler: tokio::task::JoinHandle<()>,
}

/// What joining and leaving need: the membership, the reconciler and its stop signal.
struct Lifecycle {
    membership: Membership,
    reconciler: Arc<Reconciler>,
    reconciler_stop: Arc<Notify>,
    shutdown_timeout: Duration,
}

impl Lifecycle {
    /// Waits for the peers (when any is configured), pulls the groups this node owns, turns
    /// active and ready. Gives up waiting after `timeout`, with a warning.
    async fn join(
        &self,
        peers_configured: bool,
        timeout: Duration,
        replication_factor: usize,
        ready: Arc<AtomicBool>,
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
        ready.store(true, Ordering::Release);
        tracing::info!(node = %self_id, "joined the cluster; ready");
        self.reconciler.kick();
    }

    /// Marks this node leaving and hands its groups to their next owners, within the
    /// shutdown timeout. Reads are served meanwhile.
    async fn leave(&self) {
        let deadline = std::time::Instant::now() + self.shutdown_timeout;
        self.reconciler_stop.notify_waiters();
        self.reconciler_stop.notify_one();
        self.membership.set_state(MemberState::Leaving).await;
        let self_id = self.membership.self_id().clone();
        let mut rings = self.membership.subscribe();
        let seen = own_state_seen(&mut rings, Duration::from_secs(5), |m| {
            m.is_none_or(|m| m.state == MemberState::Leaving)
        })
        .await;
        if !seen {
            tracing::warn!(node = %self_id, "own leaving state not seen in the ring; handing over anyway");
        }
        self.reconciler.hand_over(&rings, deadline).await;
    }
}

impl ClusterNode {
    async fn start(
        s: &ClusterSettings,
        store: Arc<Store>,
        validation: Validation,
        ready: Arc<AtomicBool>,
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
        let membership = Membership::start(mc).await?;
        let core = ClusterCore::new(
            store,
            validation,
            membership.subscribe(),
            membership.self_id().clone(),
            s.replication_factor,
            s.peer_timeout,
        );
        let grpc_stop = Arc::new(Notify::new());
        let service = ClusterServer::new(ClusterService::new(core.clone()))
            .max_decoding_message_size(MAX_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_MESSAGE_BYTES);
        let stop = grpc_stop.clone();
        // `Server::tcp_nodelay` applies only to listeners tonic binds itself; without it, the
        // answers to batched calls sat in Nagle's buffer until the peer's delayed ACK.
        let incoming = tokio_stream::StreamExt::map(
            tokio_stream::wrappers::TcpListenerStream::new(grpc_listener),
            |conn| {
                let conn = conn?;
                conn.set_nodelay(true)?;
                Ok::<_, std::io::Error>(conn)
            },
        );
        let grpc = tokio::spawn(async move {
            let res = tonic::transport::Server::builder()
                .tcp_nodelay(true)
                .initial_stream_window_size(PEER_STREAM_WINDOW)
                .initial_connection_window_size(PEER_CONNECTION_WINDOW)
                .max_frame_size(PEER_MAX_FRAME)
                .add_service(service)
                .serve_with_incoming_shutdown(incoming, async move { stop.notified().await })
                .await;
            if let Err(e) = res {
                tracing::error!(err = %e, "cluster gRPC server stopped with an error");
            }
        });
        let reconciler = Reconciler::new(core.clone(), lifecycle_settings(s), s.gossip_interval);
        let reconciler_stop = Arc::new(Notify::new());
        let reconciler_task = tokio::spawn(
            reconciler
                .clone()
                .run(membership.subscribe(), reconciler_stop.clone()),
        );
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
            shutdown_timeout: s.shutdown_timeout,
        });
        let own = [s.listen.to_string(), s.advertise.to_string()];
        let peers_configured = s.peers.iter().any(|p| !own.contains(p));
        let join = {
            let lifecycle = lifecycle.clone();
            let timeout = s.join_timeout;
            let r = s.replication_factor;
            tokio::spawn(async move { lifecycle.join(peers_configured, timeout, r, ready).await })
        };
        Ok(ClusterNode {
            core,
            lifecycle,
            grpc_stop,
            grpc,
            members_gauge,
            join,
            reconciler: reconciler_task,
        })
    }

    /// After the HTTP servers drained: leave the ring, then stop serving peers.
    async fn stop(self) {
        self.join.abort();
        let _ = self.join.await;
        self.lifecycle.reconciler_stop.notify_waiters();
        self.lifecycle.reconciler_stop.notify_one();
        let _ = self.reconciler.await;
        self.lifecycle
            .membership
            .set_state(MemberState::Leaving)
            .await;
        self.grpc_stop.notify_waiters();
        self.grpc_stop.notify_one();
        let _ = self.grpc.await;
        self.members_gauge.abort();
        let _ = self.core;
        match Arc::try_unwrap(self.lifecycle) {
            Ok(l) => l.membership.shutdown().await,
            Err(_) => tracing::warn!(
                "cluster membership still in use at shutdown; gossip stops with the process"
            ),
        }
    }
}

/// What the reconciler needs of the cluster flags.
fn lifecycle_settings(s: &ClusterSettings) -> LifecycleSettings {
    LifecycleSettings {
        anti_entropy_interval: s.anti_entropy_interval,
        tombstone_lifetime: s.tombstone_lifetime,
        max_hints: s.max_hints,
        rebalance_rate: s.rebalance_rate,
        join_timeout: s.join_timeout,
        shutdown_timeout: s.shutdown_timeout,
    }
}

/// Waits (at most `limit`) until this node's own entry in its ring satisfies `done`, i.e. the
/// gossip round that carries a state change has come back; false on timeout.
async fn own_state_seen(
    rings: &mut tokio::sync::watch::Receiver<Arc<crate::cluster::Ring>>,
    limit: Duration,
    done: impl Fn(Option<&crate::cluster::Member>) -> bool,
) -> bool {
    ring_seen(rings, limit, |ring| done(ring.self_member())).await
}

/// Waits (at most `limit`) until this node's ring satisfies `done`; false on timeout.
async fn ring_seen(
    rings: &mut tokio::sync::watch::Receiver<Arc<crate::cluster::Ring>>,
    limit: Duration,
    done: impl Fn(&crate::cluster::Ring) -> bool,
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
