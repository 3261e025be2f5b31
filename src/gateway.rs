//! The store behind one trait, so the HTTP layer runs unchanged on a single node and on a
//! cluster node: it hands validated requests to a `Gateway` and renders what it returns.

use std::future::Future;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use crate::exposition::MetricFamily;
use crate::store::render::{Format, RenderStats};
use crate::store::{
    prepare_push, GroupKey, GroupSnapshot, PushError, Store, StoredFamily, Validation,
};

/// A push as the HTTP layer hands it over: URL and body already parsed.
#[derive(Debug)]
pub struct PushRequest {
    pub key: GroupKey,
    pub families: Vec<MetricFamily>,
    /// PUT (true) replaces the whole group, POST only the families in the body.
    pub replace_all: bool,
}

pub trait Gateway: Send + Sync + 'static {
    fn push(&self, req: PushRequest) -> impl Future<Output = Result<(), PushError>> + Send;
    fn delete(&self, key: GroupKey) -> impl Future<Output = Result<(), PushError>> + Send;
    fn wipe(&self) -> impl Future<Output = Result<(), PushError>> + Send;
    /// The full exposition: every group's families merged with `own` (self-metrics).
    fn render(
        &self,
        format: Format,
        own: Vec<Arc<StoredFamily>>,
    ) -> impl Future<Output = (Vec<u8>, RenderStats)> + Send;
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

pub fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

/// Bodies above this size are parsed and encoded on the blocking pool, not a runtime thread.
pub const INLINE_PREPARE_LIMIT: usize = 256 * 1024;

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
        let big = req.families.iter().map(|f| f.metric.len()).sum::<usize>() > 2048;
        let v = self.validation.clone();
        let store = self.store.clone();
        let work = move || {
            let key = req.key.clone();
            match prepare_push(req.key, req.families, req.replace_all, &v) {
                Ok(prepared) => store.push(prepared, unix_now()).map(|_| ()),
                Err(e @ PushError::Invalid(_)) => {
                    // Upstream records a refused push on the group (push_failure_time_seconds).
                    store.record_failure(&key, unix_now());
                    Err(e)
                }
                Err(e) => Err(e),
            }
        };
        if big {
            tokio::task::spawn_blocking(work)
                .await
                .unwrap_or_else(|e| Err(PushError::Unavailable(format!("push worker failed: {e}"))))
        } else {
            work()
        }
    }

    async fn delete(&self, key: GroupKey) -> Result<(), PushError> {
        self.store.delete(&key);
        Ok(())
    }

    async fn wipe(&self) -> Result<(), PushError> {
        self.store.wipe();
        Ok(())
    }

    async fn render(&self, format: Format, own: Vec<Arc<StoredFamily>>) -> (Vec<u8>, RenderStats) {
        let store = self.store.clone();
        tokio::task::spawn_blocking(move || {
            let mut out = Vec::with_capacity(64 * 1024);
            let stats = store.render(format, &own, &mut out);
            (out, stats)
        })
        .await
        .expect("render task should not panic")
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
