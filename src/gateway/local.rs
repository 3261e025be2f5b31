//! A single node's gateway: every request goes to the embedded in-memory store.

use std::sync::Arc;

use super::{Gateway, ScrapeRefused};
use crate::ingest::{off_runtime, PushRequest};
use crate::scrape::{render_whole, stream_rendered, ScrapeStream, SCRAPE_CHUNK_BYTES};
use crate::store::aggregate::Aggregated;
use crate::store::render::{Format, RenderStats};
use crate::store::{GroupKey, GroupSnapshot, PushError, Store, StoredFamily, Validation};
use crate::telemetry::LocalStats;
use crate::time::unix_seconds;

/// A single node: the embedded in-memory store.
pub struct LocalGateway {
    store: Arc<Store>,
    validation: Validation,
}

impl LocalGateway {
    pub fn new(store: Arc<Store>, validation: Validation) -> Self {
        LocalGateway { store, validation }
    }

    #[cfg(test)]
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
            match req.prepare_now(&v, Some(&store)) {
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

    async fn aggregate(
        &self,
        req: PushRequest,
        idempotency_key: Option<String>,
    ) -> Result<Aggregated, PushError> {
        let large = req.is_large();
        let v = self.validation.clone();
        let store = self.store.clone();
        off_runtime(large, move || {
            let PushRequest {
                key,
                body,
                format,
                ttl,
                ..
            } = req;
            let decoded = PushRequest::decode(&body, format, &v)?;
            store.aggregate(
                key,
                decoded.incoming(),
                idempotency_key.as_deref(),
                &v,
                ttl,
                unix_seconds(),
            )
        })
        .await
    }

    async fn delete(&self, key: GroupKey) -> Result<(), PushError> {
        self.store.delete(&key);
        Ok(())
    }

    async fn wipe(&self) -> Result<(), PushError> {
        self.store.wipe();
        Ok(())
    }

    async fn import(&self, group: GroupSnapshot) -> Result<(), PushError> {
        self.store.import(group).map(|_| ())
    }

    async fn render(
        &self,
        format: Format,
        own: Vec<StoredFamily>,
    ) -> Result<(Vec<u8>, RenderStats), ScrapeRefused> {
        let store = self.store.clone();
        Ok(render_whole(move |out| store.render(format, &own, out)).await)
    }

    async fn render_stream(
        &self,
        format: Format,
        own: Vec<StoredFamily>,
        gzip: bool,
        _timeout: Option<std::time::Duration>,
    ) -> Result<ScrapeStream, ScrapeRefused> {
        let store = self.store.clone();
        Ok(stream_rendered(
            gzip,
            std::time::Instant::now(),
            move |emit| Ok(store.render_chunked(format, &own, SCRAPE_CHUNK_BYTES, emit)),
        ))
    }

    async fn groups(&self) -> Result<Vec<GroupSnapshot>, ScrapeRefused> {
        Ok(self.store.snapshot())
    }

    fn local_stats(&self) -> LocalStats {
        LocalStats::of(&self.store)
    }
}
