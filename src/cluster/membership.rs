//! Cluster membership: who is in the cluster, gossiped with chitchat (over UDP, or any chitchat
//! `Transport`: tests use the in-memory one).
//!
//! Each node gossips a few small key-values (its gRPC address and its state); its id and
//! generation travel in chitchat's own node id. One background task turns chitchat's live-node
//! view into an immutable [`Ring`] snapshot and publishes it through an `ArcSwap` (for request
//! paths: a lock-free load) and a `watch` channel (for tasks that react to changes). Nothing on a
//! request path ever takes chitchat's lock.
//!
//! Metrics never travel over gossip: gossip carries membership (and, for the Cluster page, each
//! node's version and three counts: `details`), gRPC carries data.

use std::collections::{BTreeMap, HashSet};
use std::net::SocketAddr;
use std::sync::{Arc, Weak};
use std::time::Duration;

use anyhow::{bail, Context};
use arc_swap::ArcSwap;
use chitchat::transport::{Transport, UdpTransport};
use chitchat::{
    spawn_chitchat, ChitchatConfig, ChitchatHandle, ChitchatId, FailureDetectorConfig, NodeState,
    ProtocolVersion,
};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tracing::{debug, error, info, warn};

use super::details::{self, MemberDetails, NodeStats, STATS_KEY, VERSION_KEY};
use super::events::ClusterEvent;
use super::member::{Member, MemberState, NodeId, UnknownMemberState};
use super::ring::Ring;

/// Chitchat key holding the node's gRPC address (`ip:port`).
pub const GRPC_ADDR_KEY: &str = "grpc_addr";
/// Chitchat key holding the node's [`MemberState`] in its string form.
pub const STATE_KEY: &str = "state";
/// Chitchat key holding the cluster protocol version the node speaks ([`PROTOCOL_VERSION`]).
pub const PROTOCOL_KEY: &str = "protocol";

/// The version of the protocol between nodes: the gossiped keys, the gRPC calls and messages,
/// and what they mean (placement's score included).
///
/// Version skew rule: a release that changes the protocol raises this by one, and release N
/// talks to releases N-1 and N+1, so a cluster upgrades (or rolls back) one version at a time
/// with its nodes serving throughout. A node treats as members only the peers whose gossiped
/// version is its own, one less or one more ([`compatible`]); a peer outside that window, or
/// gossiping no version, is not placed on the ring (it owns no groups and gets no writes or
/// collect calls), which is logged once per peer at warn and counted in
/// `pushgate_cluster_incompatible_peers_total`. What a release keeps only for N-1 (a call or a
/// field it still answers or sends) goes in release N+1.
pub const PROTOCOL_VERSION: u32 = 1;

/// The version skew rule of [`PROTOCOL_VERSION`]: whether a node speaking `own` places a peer
/// speaking `peer` on its ring.
pub fn compatible(own: u32, peer: u32) -> bool {
    own.abs_diff(peer) <= 1
}

/// Failure detection (chitchat's phi accrual detector) and garbage collection timings.
///
/// Chitchat declares a node dead when the time since its last heartbeat exceeds
/// `phi_threshold` × the mean heartbeat interval, where the mean starts from `initial_interval`
/// (weighted as 5 samples) and then follows the observed intervals. With the defaults (gossip
/// every 200 ms) a stopped node leaves the other nodes' rings within 2 to 3 seconds.
#[derive(Clone, Debug)]
pub struct FailureDetectorSettings {
    /// Silence of this many mean heartbeat intervals marks a node dead.
    pub phi_threshold: f64,
    /// The assumed heartbeat interval before any is observed; should match the gossip interval.
    pub initial_interval: Duration,
    /// Heartbeat intervals longer than this are not sampled (e.g. a node coming back).
    pub max_interval: Duration,
    /// Number of heartbeat intervals the detector remembers per node.
    pub sampling_window_size: usize,
    /// How long the state of a dead node is kept (so it is not re-learnt from a lagging peer)
    /// before it is forgotten.
    pub dead_node_grace_period: Duration,
    /// How long deleted keys are kept as tombstones before they are forgotten.
    pub marked_for_deletion_grace_period: Duration,
}

impl Default for FailureDetectorSettings {
    fn default() -> Self {
        FailureDetectorSettings {
            // 12 mean intervals (~2 s at 200 ms gossip): fast enough for failover, slow enough
            // not to flap on a busy machine.
            phi_threshold: 12.0,
            initial_interval: DEFAULT_GOSSIP_INTERVAL,
            max_interval: Duration::from_secs(10),
            sampling_window_size: 1_000,
            dead_node_grace_period: Duration::from_secs(60 * 60),
            marked_for_deletion_grace_period: Duration::from_secs(60 * 60),
        }
    }
}

/// The default interval between gossip rounds.
pub const DEFAULT_GOSSIP_INTERVAL: Duration = Duration::from_millis(200);
/// The default interval between DNS resolutions of the configured peers.
pub const DEFAULT_PEER_REFRESH_INTERVAL: Duration = Duration::from_secs(30);

/// How this node joins the cluster.
#[derive(Clone, Debug)]
pub struct MembershipConfig {
    pub node_id: NodeId,
    /// Distinguishes this run from earlier runs of the same node id; must grow across restarts.
    pub generation: u64,
    /// Local UDP address chitchat binds.
    pub gossip_listen: SocketAddr,
    /// UDP address the other nodes gossip to (differs from `gossip_listen` behind NAT or when
    /// listening on 0.0.0.0).
    pub gossip_advertise: SocketAddr,
    /// gRPC address the other nodes send pushes and scrapes to.
    pub grpc_addr: SocketAddr,
    /// Seed peers as `host:port`; DNS names (e.g. a Kubernetes headless Service) are resolved at
    /// start and every `peer_refresh_interval`.
    pub peers: Vec<String>,
    /// Nodes gossiping under another cluster name are ignored (chitchat's cluster id).
    pub cluster_name: String,
    pub gossip_interval: Duration,
    pub peer_refresh_interval: Duration,
    pub failure_detector: FailureDetectorSettings,
    /// The state gossiped from the start, usually `Joining`.
    pub initial_state: MemberState,
    /// The protocol version gossiped: [`PROTOCOL_VERSION`] (tests of the skew rule set others).
    pub protocol_version: u32,
}

impl MembershipConfig {
    /// A configuration with the defaults: id = advertised gossip address, generation = now in
    /// milliseconds since the epoch, no peers, cluster name `pushgate`, state `Joining`.
    pub fn new(gossip_addr: SocketAddr, grpc_addr: SocketAddr) -> Self {
        MembershipConfig {
            node_id: NodeId::from_addr(gossip_addr),
            generation: generation_from_clock(),
            gossip_listen: gossip_addr,
            gossip_advertise: gossip_addr,
            grpc_addr,
            peers: Vec::new(),
            cluster_name: "pushgate".to_owned(),
            gossip_interval: DEFAULT_GOSSIP_INTERVAL,
            peer_refresh_interval: DEFAULT_PEER_REFRESH_INTERVAL,
            failure_detector: FailureDetectorSettings::default(),
            initial_state: MemberState::Joining,
            protocol_version: PROTOCOL_VERSION,
        }
    }

    /// Refuses a configuration that cannot work, before any socket is bound.
    pub fn validate(&self) -> anyhow::Result<()> {
        if self.node_id.as_str().is_empty() {
            bail!("cluster node id must not be empty");
        }
        if self.cluster_name.is_empty() {
            bail!("cluster name must not be empty");
        }
        if self.gossip_interval.is_zero() {
            bail!("gossip interval must be positive");
        }
        if self.peer_refresh_interval.is_zero() {
            bail!("peer refresh interval must be positive");
        }
        if self.gossip_advertise.ip().is_unspecified() {
            bail!(
                "cluster advertise address {} is unspecified: set an address the other nodes can reach",
                self.gossip_advertise
            );
        }
        let fd = &self.failure_detector;
        if !(fd.phi_threshold.is_finite() && fd.phi_threshold > 0.0) {
            bail!("failure detector phi threshold must be a positive number");
        }
        if fd.initial_interval.is_zero() || fd.sampling_window_size == 0 {
            bail!("failure detector initial interval and window size must be positive");
        }
        for peer in &self.peers {
            parse_peer(peer)?;
        }
        Ok(())
    }
}

/// Milliseconds since the epoch: grows across restarts of the same node.
fn generation_from_clock() -> u64 {
    crate::time::unix_millis()
}

/// Checks a peer is `host:port` (an IPv6 literal in brackets) with a non-zero port.
fn parse_peer(peer: &str) -> anyhow::Result<()> {
    let (host, port) = peer
        .rsplit_once(':')
        .with_context(|| format!("cluster peer {peer:?} is not host:port"))?;
    let port: u16 = port
        .parse()
        .with_context(|| format!("cluster peer {peer:?} has an invalid port"))?;
    if host.is_empty() || port == 0 {
        bail!("cluster peer {peer:?} is not host:port");
    }
    Ok(())
}

/// This node's membership in the cluster: a running chitchat instance plus the task that
/// publishes ring snapshots.
pub struct Membership {
    self_id: NodeId,
    chitchat: Arc<ChitchatHandle>,
    ring: Arc<ArcSwap<Ring>>,
    ring_rx: watch::Receiver<Arc<Ring>>,
    ring_task: JoinHandle<()>,
    peer_task: Option<JoinHandle<()>>,
    details: MemberDetails,
    details_task: JoinHandle<()>,
}

impl Membership {
    /// Validates the configuration, binds the gossip socket and starts gossiping.
    /// Gossips over UDP, as a node in production does.
    pub async fn start(cfg: MembershipConfig) -> anyhow::Result<Membership> {
        Self::start_on(cfg, &UdpTransport).await
    }

    /// Validates the configuration, opens the gossip socket on `transport` and starts gossiping.
    /// Tests pass chitchat's in-memory `ChannelTransport`, whose links they can cut, to run a
    /// cluster inside one process.
    pub async fn start_on(
        cfg: MembershipConfig,
        transport: &dyn Transport,
    ) -> anyhow::Result<Membership> {
        cfg.validate()?;
        let self_id = cfg.node_id.clone();
        let chitchat_id = ChitchatId::new(
            Arc::<str>::from(self_id.as_str()),
            cfg.generation,
            cfg.gossip_advertise,
        );
        let fd = &cfg.failure_detector;
        let chitchat_config = ChitchatConfig {
            chitchat_id,
            cluster_id: cfg.cluster_name.clone(),
            gossip_interval: cfg.gossip_interval,
            listen_addr: cfg.gossip_listen,
            // Chitchat resolves DNS seeds itself at start (and every minute); the peer task
            // below re-resolves more often and contacts what it finds.
            seed_nodes: cfg.peers.clone(),
            failure_detector_config: FailureDetectorConfig {
                phi_threshold: fd.phi_threshold,
                sampling_window_size: fd.sampling_window_size,
                max_interval: fd.max_interval,
                initial_interval: fd.initial_interval,
                dead_node_grace_period: fd.dead_node_grace_period,
            },
            marked_for_deletion_grace_period: fd.marked_for_deletion_grace_period,
            catchup_callback: None,
            extra_liveness_predicate: None,
            // V1 compresses digests; every pushgate node speaks it.
            protocol_version: ProtocolVersion::V1,
        };
        let initial_key_values = vec![
            (GRPC_ADDR_KEY.to_owned(), cfg.grpc_addr.to_string()),
            (STATE_KEY.to_owned(), cfg.initial_state.as_str().to_owned()),
            (PROTOCOL_KEY.to_owned(), cfg.protocol_version.to_string()),
            (VERSION_KEY.to_owned(), env!("CARGO_PKG_VERSION").to_owned()),
        ];
        let handle = spawn_chitchat(chitchat_config, initial_key_values, transport)
            .await
            .with_context(|| format!("failed to start gossip on {}/udp", cfg.gossip_listen))?;
        let live_nodes = handle.chitchat().lock().await.live_nodes_watcher();
        // A broken socket stops chitchat's server while its state lives on: the ring would
        // freeze silently, so say so loudly.
        let terminated = handle.termination_watcher();
        let node = self_id.clone();
        tokio::spawn(async move {
            if let Err(error) = terminated.await {
                error!(node = %node, error = %error, "gossip stopped: cluster membership is frozen");
            }
        });
        let chitchat = Arc::new(handle);

        // Until the first gossip round the ring holds only this node, as configured.
        let initial = Arc::new(Ring::new(
            self_id.clone(),
            vec![Member {
                id: self_id.clone(),
                generation: cfg.generation,
                grpc_addr: cfg.grpc_addr,
                state: cfg.initial_state,
            }],
            0,
        ));
        let ring = Arc::new(ArcSwap::new(initial.clone()));
        let (ring_tx, ring_rx) = watch::channel(initial);
        let ring_task = tokio::spawn(publish_rings(
            self_id.clone(),
            cfg.protocol_version,
            live_nodes,
            ring.clone(),
            ring_tx,
        ));
        let peer_task = (!cfg.peers.is_empty()).then(|| {
            tokio::spawn(refresh_peers(
                cfg.peers.clone(),
                cfg.gossip_advertise,
                cfg.peer_refresh_interval,
                Arc::downgrade(&chitchat),
            ))
        });
        let details = MemberDetails::default();
        let details_task = tokio::spawn(details::track(
            Arc::downgrade(&chitchat),
            self_id.clone(),
            cfg.gossip_interval,
            details.clone(),
        ));
        info!(
            node = %self_id,
            generation = cfg.generation,
            cluster = %cfg.cluster_name,
            gossip = %cfg.gossip_listen,
            advertise = %cfg.gossip_advertise,
            grpc = %cfg.grpc_addr,
            peers = ?cfg.peers,
            "started cluster membership"
        );
        ClusterEvent::Started { node: &self_id }.emit();
        Ok(Membership {
            self_id,
            chitchat,
            ring,
            ring_rx,
            ring_task,
            peer_task,
            details,
            details_task,
        })
    }

    /// Every live member's version, counts and last heartbeat, as this node knows them.
    pub fn details(&self) -> MemberDetails {
        self.details.clone()
    }

    /// Gossips this node's counts (for the other nodes' Cluster pages).
    pub async fn set_stats(&self, stats: NodeStats) {
        self.chitchat
            .with_chitchat(|chitchat| {
                chitchat.self_node_state().set(STATS_KEY, stats.encode());
            })
            .await;
    }

    pub fn self_id(&self) -> &NodeId {
        &self.self_id
    }

    /// The current ring: a lock-free load, cheap enough for every request.
    pub fn ring(&self) -> Arc<Ring> {
        self.ring.load_full()
    }

    /// A receiver of ring snapshots: `borrow()` is the current ring, `changed()` resolves when
    /// the next one is published.
    pub fn subscribe(&self) -> watch::Receiver<Arc<Ring>> {
        let mut rx = self.ring_rx.clone();
        rx.mark_unchanged();
        rx
    }

    /// Gossips a new state for this node. The local ring shows it after the next gossip round,
    /// the other nodes' rings a few rounds later.
    pub async fn set_state(&self, state: MemberState) {
        self.chitchat
            .with_chitchat(|chitchat| {
                chitchat.self_node_state().set(STATE_KEY, state.as_str());
            })
            .await;
        info!(node = %self.self_id, state = %state, "member state set");
    }

    /// Stops gossiping. The other nodes drop this node once their failure detector declares it
    /// dead; mark it `Leaving` first for a graceful exit.
    pub async fn shutdown(self) {
        self.details_task.abort();
        let _ = self.details_task.await;
        if let Some(peer_task) = self.peer_task {
            peer_task.abort();
            let _ = peer_task.await;
        }
        match Arc::try_unwrap(self.chitchat) {
            Ok(handle) => {
                if let Err(error) = handle.shutdown().await {
                    warn!(error = %error, "gossip server stopped with an error");
                }
            }
            Err(handle) => {
                let _ = handle.initiate_shutdown();
            }
        }
        self.ring_task.abort();
        let _ = self.ring_task.await;
        info!(node = %self.self_id, "stopped cluster membership");
    }
}

/// Turns every change of chitchat's live nodes into a new ring, published only when the members
/// differ (heartbeat-only changes are not published).
async fn publish_rings(
    self_id: NodeId,
    protocol: u32,
    mut live_nodes: watch::Receiver<BTreeMap<ChitchatId, NodeState>>,
    ring: Arc<ArcSwap<Ring>>,
    ring_tx: watch::Sender<Arc<Ring>>,
) {
    // Peers already reported as incompatible, so each is logged and counted once.
    let mut incompatible = HashSet::new();
    loop {
        let members = {
            let live = live_nodes.borrow_and_update();
            // Chitchat publishes an empty map until its first gossip round; the live set always
            // includes this node after that.
            (!live.is_empty()).then(|| members_from_live(&live, protocol, &mut incompatible))
        };
        if let Some(members) = members {
            let current = ring.load();
            let next = Ring::new(self_id.clone(), members, current.version + 1);
            if next.members != current.members {
                ClusterEvent::RingChanged {
                    node: &self_id,
                    ring: &next,
                }
                .emit();
                let next = Arc::new(next);
                ring.store(next.clone());
                ring_tx.send_replace(next);
            }
        }
        if live_nodes.changed().await.is_err() {
            debug!(node = %self_id, "gossip stopped, ring publisher exits");
            return;
        }
    }
}

/// The members among chitchat's live nodes; `incompatible` remembers the peers already reported
/// for speaking a protocol version outside [`compatible`]'s window.
fn members_from_live(
    live: &BTreeMap<ChitchatId, NodeState>,
    protocol: u32,
    incompatible: &mut HashSet<ChitchatId>,
) -> Vec<Member> {
    live.iter()
        .filter_map(
            |(id, state)| match member_from_kv(id, protocol, |key| state.get(key)) {
                Ok(member) => Some(member),
                Err(error @ MemberParseError::Protocol { .. }) => {
                    if incompatible.insert(id.clone()) {
                        ClusterEvent::IncompatiblePeer {
                            peer: &id.node_id,
                            generation: id.generation_id,
                            error: &error,
                        }
                        .emit();
                    }
                    None
                }
                Err(error) => {
                    debug!(node = %id.node_id, error = %error, "skipping member with bad state");
                    None
                }
            },
        )
        .collect()
}

/// Why a gossiped node could not become a [`Member`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MemberParseError {
    #[error("missing key {0:?}")]
    Missing(&'static str),
    #[error("invalid grpc address {0:?}")]
    GrpcAddr(String),
    #[error(transparent)]
    State(#[from] UnknownMemberState),
    #[error("empty node id")]
    EmptyId,
    /// The peer gossips no protocol version, or one outside the window of [`compatible`].
    #[error("cluster protocol version {found:?} is incompatible with this node's {own} (one less or one more at most)")]
    Protocol { found: Option<String>, own: u32 },
}

/// Builds a member from its chitchat id and key-values (given as a lookup so it can be tested
/// without a chitchat node state), for a node speaking protocol version `own`.
fn member_from_kv<'a>(
    id: &ChitchatId,
    own: u32,
    get: impl Fn(&str) -> Option<&'a str>,
) -> Result<Member, MemberParseError> {
    if id.node_id.is_empty() {
        return Err(MemberParseError::EmptyId);
    }
    let found = get(PROTOCOL_KEY);
    if !found
        .and_then(|v| v.parse().ok())
        .is_some_and(|v| compatible(own, v))
    {
        return Err(MemberParseError::Protocol {
            found: found.map(str::to_owned),
            own,
        });
    }
    let grpc = get(GRPC_ADDR_KEY).ok_or(MemberParseError::Missing(GRPC_ADDR_KEY))?;
    let grpc_addr = grpc
        .parse()
        .map_err(|_| MemberParseError::GrpcAddr(grpc.to_owned()))?;
    let state = get(STATE_KEY)
        .ok_or(MemberParseError::Missing(STATE_KEY))?
        .parse()?;
    Ok(Member {
        id: NodeId::new(id.node_id.clone()),
        generation: id.generation_id,
        grpc_addr,
        state,
    })
}

/// Re-resolves the peers periodically and gossips with every address found, so nodes behind a
/// DNS name that changed (pods rescheduled behind a headless Service) are found and a split
/// cluster heals. Ends when the membership is gone.
async fn refresh_peers(
    peers: Vec<String>,
    self_addr: SocketAddr,
    every: Duration,
    chitchat: Weak<ChitchatHandle>,
) {
    let mut interval = tokio::time::interval(every);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // Chitchat resolved the peers at start; the first tick fires at once, skip it.
    interval.tick().await;
    loop {
        interval.tick().await;
        let mut addrs = Vec::new();
        for peer in &peers {
            match tokio::net::lookup_host(peer.as_str()).await {
                Ok(found) => addrs.extend(found),
                Err(error) => debug!(peer = %peer, error = %error, "cannot resolve cluster peer"),
            }
        }
        addrs.sort();
        addrs.dedup();
        let Some(handle) = chitchat.upgrade() else {
            return;
        };
        for addr in addrs.into_iter().filter(|a| *a != self_addr) {
            if handle.gossip(addr).is_err() {
                return;
            }
        }
    }
}

#[cfg(test)]
#[path = "membership_tests.rs"]
mod tests;
