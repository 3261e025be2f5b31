//! The store behind one trait, so the HTTP layer runs unchanged on a single node and on a
//! cluster node: it hands validated requests to a `Gateway` and renders what it returns.

use std::future::Future;
use std::sync::Arc;

use crate::ingest::{off_runtime, PushRequest};
use crate::scrape::{stream_rendered, ScrapeStream, SCRAPE_CHUNK_BYTES};
use crate::store::render::{Format, RenderStats};
use crate::store::{GroupKey, GroupSnapshot, PushError, Store, StoredFamily, Validation};
use crate::time::unix_seconds;

pub trait Gateway: Send + Sync + 'static {
    fn push(&self, req: PushRequest) -> impl Future<Output = Result<(), PushError>> + Send;
    fn delete(&self, key: GroupKey) -> impl Future<Output = Result<(), PushError>> + Send;
    fn wipe(&self) -> impl Future<Output = Result<(), PushError>> + Send;
    /// The full exposition: every group's families merged with `own` (self-metrics).
    fn render(
        &self,
        format: Format,
        own: Vec<StoredFamily>,
    ) -> impl Future<Output = (Vec<u8>, RenderStats)> + Send;
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
    ) -> impl Future<Output = ScrapeStream> + Send {
        async move {
            let started = std::time::Instant::now();
            let (body, stats) = self.render(format, own).await;
            stream_rendered(gzip, started, move |emit| {
                emit(body);
                stats
            })
        }
    }
    /// Every group, sorted by key.
    fn groups(&self) -> impl Future<Output = Vec<GroupSnapshot>> + Send;
    /// What this node holds, for self-metrics.
    fn local_stats(&self) -> LocalStats;
    /// Validation rules for pushes (names, limits).
    fn validation(&self) -> &Validation;
}

/// Sizes of what a node holds locally.
#[derive(Debug, Clone, Copy, Default)]
pub struct LocalStats {
    pub groups: usize,
    pub series: usize,
    pub encoded_bytes: usize,
}

/// A single node: the embedded in-memory store.
pub struct LocalGateway {
    store: Arc<Store>,
    validation: Validation,
}

impl LocalGateway {
    pub fn new(store: Arc<Store>, validation: Validation) -> Self {
        LocalGateway { store, validation }
    }

    pub fn store(&self) -> &Arc<Store> {
        &self.store
    }
}

impl Gateway for LocalGateway {
    async fn push(&self, req: PushRequest) -> Result<(), PushError> {
        let large = req.is_large();
        let v = self.validation.clone();
        let store = self.store.clone();
        let work = move || {
            let key = req.key.clone();
            match req.prepare_now(&v) {
                Ok(prepared) => store.push(prepared, unix_seconds()).map(|_| ()),
                Err(e @ PushError::Invalid(_)) => {
                    // Upstream records a refused push on the group (push_failure_time_seconds).
                    store.record_failure(&key, unix_seconds());
                    Err(e)
                }
                Err(e) => Err(e),
            }
        };
        off_runtime(large, work).await
    }

    async fn delete(&self, key: GroupKey) -> Result<(), PushError> {
        self.store.delete(&key);
        Ok(())
    }

    async fn wipe(&self) -> Result<(), PushError> {
        self.store.wipe();
        Ok(())
    }

    async fn render(&self, format: Format, own: Vec<StoredFamily>) -> (Vec<u8>, RenderStats) {
        let store = self.store.clone();
        tokio::task::spawn_blocking(move || {
            let mut out = Vec::with_capacity(64 * 1024);
            let stats = store.render(format, &own, &mut out);
            (out, stats)
        })
        .await
        .expect("render task should not panic")
    }

    async fn render_stream(
        &self,
        format: Format,
        own: Vec<StoredFamily>,
        gzip: bool,
        _timeout: Option<std::time::Duration>,
    ) -> ScrapeStream {
        let store = self.store.clone();
        stream_rendered(gzip, std::time::Instant::now(), move |emit| {
            store.render_chunked(format, &own, SCRAPE_CHUNK_BYTES, emit)
        })
    }

    async fn groups(&self) -> Vec<GroupSnapshot> {
        self.store.snapshot()
    }

    fn local_stats(&self) -> LocalStats {
        LocalStats {
            groups: self.store.group_count(),
            series: self.store.series_count(),
            encoded_bytes: self.store.encoded_bytes(),
        }
    }

    fn validation(&self) -> &Validation {
        &self.validation
    }
}
