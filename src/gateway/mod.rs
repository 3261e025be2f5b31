//! The store behind one trait, so the HTTP layer runs unchanged on a single node and on a
//! cluster node: it hands validated requests to a `Gateway` and renders what it returns.

pub mod local;
pub mod view;

use std::future::Future;

use crate::ingest::PushRequest;
use crate::scrape::{stream_rendered, ScrapeStream};
use crate::store::render::{Format, RenderStats};
use crate::store::aggregate::Aggregated;
use crate::store::{GroupKey, GroupSnapshot, PushError, StoredFamily};
use crate::telemetry::LocalStats;

pub use local::LocalGateway;
pub use view::{ClusterView, MemberView, Owners};

/// A read of every group that cannot be served now (answered 503 with this message): on a
/// cluster node, the peers' answers would exceed `--cluster.max-scrape-bytes`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScrapeRefused(pub String);

/// What the HTTP layer asks of the groups, wherever they live (this node's store, or the
/// cluster's nodes).
pub trait Gateway: Send + Sync + 'static {
    fn push(&self, req: PushRequest) -> impl Future<Output = Result<(), PushError>> + Send;
    /// Adds a push into its aggregating group (`/aggregate`; `req.replace_all` is ignored: PUT
    /// and POST both add). A retry carrying an `idempotency_key` already added within the
    /// window is acknowledged without being added again.
    fn aggregate(
        &self,
        req: PushRequest,
        idempotency_key: Option<String>,
    ) -> impl Future<Output = Result<Aggregated, PushError>> + Send;
    fn delete(&self, key: GroupKey) -> impl Future<Output = Result<(), PushError>> + Send;
    fn wipe(&self) -> impl Future<Output = Result<(), PushError>> + Send;
    /// Imports a whole group from another gateway (a migration, `PUT P/api/v1/admin/import`):
    /// its families with their push times and the group's push and failure times, as given.
    /// It replaces the group like a PUT (consistency check included) unless the group is held
    /// as written later than the imported copy, which is then kept; on a cluster node it lands
    /// on the group's owners with R copies, like a push.
    fn import(&self, group: GroupSnapshot) -> impl Future<Output = Result<(), PushError>> + Send;
    /// The full exposition: every group's families merged with `own` (self-metrics).
    fn render(
        &self,
        format: Format,
        own: Vec<StoredFamily>,
    ) -> impl Future<Output = Result<(Vec<u8>, RenderStats), ScrapeRefused>> + Send;
    /// The full exposition as a stream of chunks (gzip-compressed when `gzip`), so a large
    /// scrape is sent while it is rendered instead of being built in one buffer first. The
    /// default renders it whole with `render` and sends it as one chunk. `timeout`: how long
    /// the client waits for the scrape, when it says (Prometheus'
    /// `X-Prometheus-Scrape-Timeout-Seconds`); a cluster node keeps its peer calls within it.
    fn render_stream(
        &self,
        format: Format,
        own: Vec<StoredFamily>,
        gzip: bool,
        _timeout: Option<std::time::Duration>,
    ) -> impl Future<Output = Result<ScrapeStream, ScrapeRefused>> + Send {
        async move {
            let started = std::time::Instant::now();
            let (body, stats) = self.render(format, own).await?;
            Ok(stream_rendered(gzip, started, move |emit| {
                emit(body);
                Ok(stats)
            }))
        }
    }
    /// Every group, sorted by key.
    fn groups(&self) -> impl Future<Output = Result<Vec<GroupSnapshot>, ScrapeRefused>> + Send;
    /// What this node holds, for self-metrics.
    fn local_stats(&self) -> LocalStats;
    /// The cluster's members as this node sees them; `None` on a single node.
    fn cluster_view(&self) -> Option<ClusterView> {
        None
    }
    /// The nodes that own a group now (ring placement); `None` on a single node.
    fn owners(&self, _key: &GroupKey) -> Option<Owners> {
        None
    }
}
