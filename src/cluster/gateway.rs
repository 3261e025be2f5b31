//! `ClusterGateway`: the `Gateway` of a cluster node. A push or delete is routed to its owners
//! (`write::route`), a scrape renders the merged view of every member's groups (`read`), a wipe
//! reaches every member.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::task::JoinSet;

use super::core::ClusterCore;
use super::rpc::{client, pb};
use super::write::op::{WriteAnswer, WriteOp};
use super::write::replicate::Replica;
use crate::gateway::{ClusterView, Gateway, MemberView, Owners, ScrapeRefused};
use crate::ingest::PushRequest;
use crate::scrape::{stream_rendered, ScrapeStream, SCRAPE_CHUNK_BYTES};
use crate::store::aggregate::Aggregated;
use crate::store::render::{Format, RenderStats};
use crate::store::{GroupKey, GroupSnapshot, PushError, StoredFamily};
use crate::telemetry::LocalStats;

/// The `Gateway` of a cluster node.
pub struct ClusterGateway {
    pub(crate) core: Arc<ClusterCore>,
}

impl ClusterGateway {
    pub fn new(core: Arc<ClusterCore>) -> Self {
        ClusterGateway { core }
    }
}

impl Gateway for ClusterGateway {
    async fn push(&self, req: PushRequest) -> Result<(), PushError> {
        // Decoded here, or by the primary when this node is entry-heavy (`route`).
        self.core
            .route(WriteOp::Raw(req), Vec::new())
            .await
            .into_result()
    }

    async fn aggregate(
        &self,
        req: PushRequest,
        idempotency_key: Option<String>,
    ) -> Result<Aggregated, PushError> {
        // Added in by the group's primary, which replicates the state before it answers
        // (docs/architecture.md, "Aggregating groups on a cluster").
        let op = WriteOp::Aggregate {
            req,
            idempotency_key,
        };
        self.core
            .route(op, Vec::new())
            .await
            .into_result()
            .map(|()| Aggregated::Added)
    }

    async fn delete(&self, key: GroupKey) -> Result<(), PushError> {
        self.core
            .route(WriteOp::Delete(key), Vec::new())
            .await
            .into_result()
    }

    async fn import(&self, group: GroupSnapshot) -> Result<(), PushError> {
        // Checked against what this node holds, as a receiving node checks a push; the owners
        // take it as a replica: applied when newer than what they hold. Its version is its own
        // push (or failure) time, so a write made in the cluster after that time wins over it
        // and an import run twice changes nothing.
        self.core.store.check_import(&group)?;
        let key = group.key.clone();
        let holders = self
            .core
            .replicate_to_owners(&key, Replica::Group(group))
            .await;
        self.core
            .quorum(WriteAnswer::ok(200), holders)
            .into_result()
    }

    async fn wipe(&self) -> Result<(), PushError> {
        // Versioned, so that anti-entropy or a replication still in flight from a member the
        // wipe has not reached yet cannot bring wiped groups back (Store::wipe_versioned).
        let version = self.core.clock.now();
        self.core.wipe_local(version);
        let ring = self.core.ring();
        let mut calls = JoinSet::new();
        for m in ring.members.iter().filter(|m| m.id != self.core.self_id) {
            let mut client = self.core.clients.client(m.grpc_addr);
            let req = client::request(pb::WipeRequest { version }, self.core.clients.timeout());
            calls.spawn(async move { client.wipe(req).await.is_ok() });
        }
        let mut failed = 0;
        while let Some(done) = calls.join_next().await {
            if !done.unwrap_or(false) {
                failed += 1;
            }
        }
        if failed > 0 {
            return Err(PushError::Unavailable(format!(
                "wipe did not reach {failed} cluster member(s); retry"
            )));
        }
        Ok(())
    }

    async fn render(
        &self,
        format: Format,
        own: Vec<StoredFamily>,
    ) -> Result<(Vec<u8>, RenderStats), ScrapeRefused> {
        let plan = self
            .core
            .merged_plan(format, self.core.collect_deadline)
            .await?;
        let reserved = self.core.store.options().reserved.clone();
        let orders = self.core.merged_orders.clone();
        let rendered = tokio::task::spawn_blocking(move || {
            let mut out = Vec::with_capacity(64 * 1024);
            let mut emit = |chunk: Vec<u8>| out.extend_from_slice(&chunk);
            let stats = plan.render(&reserved, &own, format, Some(&orders), SCRAPE_CHUNK_BYTES, &mut emit);
            stats.map(|stats| (out, stats))
        })
        .await
        .map_err(|e| ScrapeRefused(format!("the merged render failed: {e}")))?;
        rendered.map_err(ScrapeRefused)
    }

    async fn render_stream(
        &self,
        format: Format,
        own: Vec<StoredFamily>,
        gzip: bool,
        timeout: Option<Duration>,
    ) -> Result<ScrapeStream, ScrapeRefused> {
        let started = Instant::now();
        let deadline = self.core.scrape_deadline(timeout);
        // Only the heads are collected before the response starts; the families are merged
        // and written as the peers' answers stream in (`read::stream`).
        let plan = self.core.merged_plan(format, deadline).await?;
        let reserved = self.core.store.options().reserved.clone();
        let orders = self.core.merged_orders.clone();
        Ok(stream_rendered(gzip, started, move |emit| {
            plan.render(&reserved, &own, format, Some(&orders), SCRAPE_CHUNK_BYTES, emit)
        }))
    }

    async fn groups(&self) -> Result<Vec<GroupSnapshot>, ScrapeRefused> {
        self.core
            .merged_groups(self.core.collect_deadline, false)
            .await
    }

    fn local_stats(&self) -> LocalStats {
        // Read for every scrape of the self-metrics: an idle node's entry load is brought up
        // to date, and with it `pushgate_cluster_entry_heavy`.
        self.core.entry.roll(crate::time::unix_millis());
        LocalStats {
            groups: self.core.store.group_count(),
            series: self.core.store.series_count(),
            encoded_bytes: self.core.store.encoded_bytes(),
        }
    }

    fn cluster_view(&self) -> Option<ClusterView> {
        let ring = self.core.ring();
        let details = self.core.details.get().map(|d| d.load_full());
        let now = Instant::now();
        let members = ring
            .members
            .iter()
            .map(|m| {
                let d = details.as_ref().and_then(|d| d.get(&m.id));
                let stats = d.and_then(|d| d.stats);
                MemberView {
                    id: m.id.to_string(),
                    state: m.state.as_str(),
                    address: m.grpc_addr.to_string(),
                    generation: m.generation,
                    version: d.and_then(|d| d.version.clone()),
                    groups: stats.map(|s| s.groups),
                    primary: stats.map(|s| s.primary),
                    hints: stats.map(|s| s.hints),
                    heartbeat_age: d
                        .and_then(|d| d.heartbeat_at)
                        .map(|at| now.saturating_duration_since(at)),
                }
            })
            .collect();
        Some(ClusterView {
            self_id: self.core.self_id.to_string(),
            replication_factor: self.core.replication_factor,
            write_quorum: self.core.write_quorum(),
            members,
        })
    }

    fn owners(&self, key: &GroupKey) -> Option<Owners> {
        let ring = self.core.ring();
        let r = self.core.replication_factor;
        let nodes: Vec<String> = ring
            .owners(key.stable_hash(), r)
            .into_iter()
            .map(|m| m.id.to_string())
            .collect();
        Some(Owners {
            short: nodes.len() < r,
            nodes,
        })
    }
}
