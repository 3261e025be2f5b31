//! `ClusterCore`: the state a cluster node's gateway (HTTP side), its gRPC service (peer side)
//! and its reconciler share.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tonic::Status;

use super::bounds::ClusterBounds;
use super::clock::HybridClock;
use super::events::{ClusterEvent, PeerRefusal};
use super::member::NodeId;
use super::ring::Ring;
use super::rpc::client::PeerClients;
use super::write::entry_load::EntryLoad;
use crate::exposition::NameScheme;
use crate::ingest::INLINE_PREPARE_LIMIT;
use crate::store::MergedOrders;
use crate::store::{Store, Validation};
use crate::telemetry::metrics as m;
use crate::tls::ClusterTls;

/// Default deadline of the merged scrape's collect calls (well under Prometheus' default
/// 10 s scrape timeout).
pub const DEFAULT_COLLECT_DEADLINE: Duration = Duration::from_secs(3);

/// State shared by the gateway (HTTP side) and the gRPC service (peer side).
pub struct ClusterCore {
    pub(super) store: Arc<Store>,
    pub(crate) validation: Validation,
    pub(crate) ring: watch::Receiver<Arc<Ring>>,
    pub(super) self_id: NodeId,
    pub(super) replication_factor: usize,
    pub(super) clients: PeerClients,
    pub(super) clock: HybridClock,
    pub(crate) collect_deadline: Duration,
    /// Groups held without owning them: counted by the last reconciliation round, plus those
    /// taken since (counted when taken, so a burst cannot exceed `max_hints`).
    pub(super) hints: AtomicUsize,
    /// Hints taken since the current round listed what this node holds.
    pub(super) hints_taken: AtomicUsize,
    /// Groups this node is the primary owner of, counted by the last reconciliation round.
    pub(super) primary: AtomicUsize,
    /// Every live member's version, counts and last heartbeat (set once by the node), for the
    /// Cluster page.
    pub(super) details: std::sync::OnceLock<super::details::MemberDetails>,
    /// A stand-in replica is refused beyond this many hints (`--cluster.max-hints`).
    pub(super) max_hints: AtomicUsize,
    /// The member orders of the last merged render's families, reused by the next one where
    /// a family's members are unchanged.
    pub(crate) merged_orders: Arc<MergedOrders>,
    /// Whether this node is mostly an entry point (who sends a forwarded write's replicas).
    pub(crate) entry: EntryLoad,
    /// The bounds set by the cluster flags.
    pub(crate) bounds: ClusterBounds,
    /// Nodes that must hold a write before it is acknowledged (`--cluster.write-quorum`; the
    /// replication factor unless lowered).
    pub(super) write_quorum: AtomicUsize,
    /// Set when a leaving node starts its last handover: it takes no more writes or copies
    /// from its peers (they move on to the next node), so what it holds can only shrink.
    pub(super) closing: AtomicBool,
    /// Writes and copies from peers being applied here, so the last handover starts only once
    /// those accepted before `closing` are in the store.
    pub(super) applying: AtomicUsize,
}

impl ClusterCore {
    #[cfg(any(test, feature = "testsuite"))]
    pub fn new(
        store: Arc<Store>,
        validation: Validation,
        ring: watch::Receiver<Arc<Ring>>,
        self_id: NodeId,
        replication_factor: usize,
        peer_timeout: Duration,
        tls: Option<ClusterTls>,
    ) -> Arc<Self> {
        Self::with_bounds(
            store,
            validation,
            ring,
            self_id,
            replication_factor,
            peer_timeout,
            ClusterBounds::default(),
            tls,
        )
    }

    // Each argument is one of the node's settings from its own flag; a settings struct would only
    // repeat ClusterSettings field by field.
    #[allow(clippy::too_many_arguments)]
    pub fn with_bounds(
        store: Arc<Store>,
        validation: Validation,
        ring: watch::Receiver<Arc<Ring>>,
        self_id: NodeId,
        replication_factor: usize,
        peer_timeout: Duration,
        bounds: ClusterBounds,
        tls: Option<ClusterTls>,
    ) -> Arc<Self> {
        let clock = HybridClock::default();
        clock.observe(store.max_version());
        // Aggregating pushes this node adds go to a partial of its own (named by its id).
        let node = xxhash_rust::xxh3::xxh3_64(self_id.as_str().as_bytes()).max(1);
        store.join_cluster(node, validation.clone());
        let core = Arc::new(ClusterCore {
            store,
            validation,
            ring,
            self_id,
            replication_factor,
            clients: PeerClients::with_bounds(peer_timeout, &bounds).with_tls(tls),
            clock,
            collect_deadline: DEFAULT_COLLECT_DEADLINE
                .min(peer_timeout.max(Duration::from_millis(500)) * 2),
            hints: AtomicUsize::new(0),
            hints_taken: AtomicUsize::new(0),
            primary: AtomicUsize::new(0),
            details: std::sync::OnceLock::new(),
            max_hints: AtomicUsize::new(usize::MAX),
            merged_orders: Arc::default(),
            entry: EntryLoad::default(),
            bounds,
            write_quorum: AtomicUsize::new(replication_factor),
            closing: AtomicBool::new(false),
            applying: AtomicUsize::new(0),
        });
        metrics::gauge!(m::ENTRY_HEAVY).set(0.0);
        core
    }

    /// Sets how far ahead of this node's clock a peer's version may be
    /// (`--cluster.max-clock-skew`).
    pub fn set_max_clock_skew(&self, skew: Duration) {
        self.clock.set_max_skew(skew);
    }

    /// A version a peer sent (`what` it dates, for the message): refused and counted when it
    /// is beyond the allowed clock skew, so a peer cannot date a write, a tombstone or a wipe
    /// in the far future and make it win over every later write.
    pub(crate) fn peer_version(&self, version: u64, what: &str) -> Result<(), Status> {
        if self.clock.believable(version) {
            return Ok(());
        }
        Err(refuse_peer(
            PeerRefusal::FutureVersion,
            format!(
                "{what} dated {} ms past this node's clock, beyond --cluster.max-clock-skew",
                (version >> 16).saturating_sub(crate::time::unix_millis())
            ),
        ))
    }

    /// Sets how many nodes must hold a write before it is acknowledged
    /// (`--cluster.write-quorum`, 1 to the replication factor).
    pub fn set_write_quorum(&self, quorum: usize) {
        let q = quorum.clamp(1, self.replication_factor.max(1));
        self.write_quorum.store(q, Ordering::Relaxed);
    }

    /// Nodes that must hold a write before it is acknowledged.
    pub fn write_quorum(&self) -> usize {
        self.write_quorum.load(Ordering::Relaxed)
    }

    /// A leaving node's last handover begins: from now on writes and copies from peers are
    /// refused (`UNAVAILABLE`: the sender moves on to the next node). Returns once those
    /// accepted before are applied, or at `deadline`.
    pub async fn close(&self, deadline: std::time::Instant) {
        self.closing.store(true, Ordering::SeqCst);
        while self.applying.load(Ordering::SeqCst) > 0 && std::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Admits a write or copy from a peer unless this node is closing; the guard counts it as
    /// being applied until dropped.
    pub(crate) fn admit(&self) -> Result<Applying<'_>, Status> {
        let guard = self.applying();
        if self.closing.load(Ordering::SeqCst) {
            return Err(Status::unavailable(
                "this node is leaving the cluster and has handed its groups over",
            ));
        }
        Ok(guard)
    }

    /// Counts a write as being applied (a node closing waits for it) until the guard is dropped.
    pub(crate) fn applying(&self) -> Applying<'_> {
        self.applying.fetch_add(1, Ordering::SeqCst);
        Applying(&self.applying)
    }

    /// Gives the Cluster page the members' details the membership tracks.
    pub fn set_member_details(&self, details: super::details::MemberDetails) {
        let _ = self.details.set(details);
    }

    /// This node's counts for the other nodes' Cluster pages: groups held, owned as primary
    /// (as of the last round), hints.
    pub fn node_stats(&self) -> super::details::NodeStats {
        super::details::NodeStats {
            groups: self.store.group_count() as u64,
            primary: self.primary.load(Ordering::Relaxed) as u64,
            hints: self.hints.load(Ordering::Relaxed) as u64,
        }
    }

    /// Sets the bound on hints (`--cluster.max-hints`).
    pub fn set_max_hints(&self, max: usize) {
        self.max_hints.store(max, Ordering::Relaxed);
    }

    /// Publishes the tombstones held (count, bytes).
    pub(crate) fn report_tombstones(&self) {
        let (count, bytes) = self.store.tombstone_usage();
        ClusterEvent::Tombstones { count, bytes }.emit();
    }

    pub(crate) fn names(&self) -> NameScheme {
        self.validation.names
    }

    /// This node's part of a cluster-wide wipe issued at `version`; later writes stamped here
    /// are newer than the watermark.
    pub(crate) fn wipe_local(&self, version: u64) {
        if version <= self.store.wiped_at() {
            // Learnt already (from a peer's `Sync`): what this node took since is newer than
            // the wipe and stays.
            return;
        }
        let watermark = self.store.wipe_versioned(version);
        self.clock.observe(watermark);
    }

    /// A peer's wipe watermark (in a `Sync` call or its answer): when it is newer than this
    /// node's, the wipe was missed here (the node was down or cut off, or restarted from a
    /// file written before it), and what this node holds from before it goes.
    pub(crate) fn learn_wipe(&self, watermark: u64, peer: &str) -> Result<(), Status> {
        if watermark <= self.store.wiped_at() {
            return Ok(());
        }
        self.peer_version(watermark, "wipe watermark")?;
        let removed = self.store.learn_wipe(watermark);
        self.clock.observe(watermark);
        tracing::info!(node = %self.self_id, peer = %peer, removed, "learnt a cluster-wide wipe this node missed; removed what it held from before it");
        Ok(())
    }

    pub(crate) fn ring(&self) -> Arc<Ring> {
        self.ring.borrow().clone()
    }
}

/// A write or copy from a peer being applied (see [`ClusterCore::admit`]).
pub(crate) struct Applying<'a>(&'a AtomicUsize);

impl Drop for Applying<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Counts and logs a refused peer message (or item), and the status it is answered with.
pub(crate) fn refuse_peer(reason: PeerRefusal, error: String) -> Status {
    ClusterEvent::PeerRefused {
        reason,
        error: &error,
    }
    .emit();
    Status::invalid_argument(error)
}

/// [`refuse_peer`] for a decoder's error, its reason read from the message.
pub(crate) fn refuse_decoded(error: String) -> Status {
    refuse_peer(PeerRefusal::of_error(&error), error)
}

/// Runs `work` inline when the payload is small (a thread handoff per forwarded push or replica
/// costs more than the work itself), on the blocking pool when it is large enough to stall a
/// runtime thread.
pub(crate) async fn off_runtime_if_large<T: Send + 'static>(
    payload_bytes: usize,
    work: impl FnOnce() -> T + Send + 'static,
) -> Result<T, tokio::task::JoinError> {
    if payload_bytes > INLINE_PREPARE_LIMIT {
        tokio::task::spawn_blocking(work).await
    } else {
        Ok(work())
    }
}
