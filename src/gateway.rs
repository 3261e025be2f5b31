//! The store behind one trait, so the HTTP layer runs unchanged on a single node and on a
//! cluster node: it hands validated requests to a `Gateway` and renders what it returns.

use std::future::Future;
use std::sync::Arc;

use crate::ingest::{off_runtime, PushRequest};
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
            let (mut sink, rx) = ChunkSink::new(gzip);
            tokio::task::spawn_blocking(move || {
                sink.push(body);
                sink.finish();
                record_render(&stats, started.elapsed());
            });
            rx
        }
    }
    /// Every group, sorted by key.
    fn groups(&self) -> impl Future<Output = Vec<GroupSnapshot>> + Send;
    /// What this node holds, for self-metrics.
    fn local_stats(&self) -> LocalStats;
    /// Validation rules for pushes (names, limits).
    fn validation(&self) -> &Validation;
}

/// Chunks of a scrape response as they are produced.
pub type ScrapeStream = tokio::sync::mpsc::Receiver<Result<bytes::Bytes, std::io::Error>>;

/// Chunk size of streamed scrapes.
pub const SCRAPE_CHUNK_BYTES: usize = 256 * 1024;

/// Counts one render in the self-metrics.
/// Runs `render` on the blocking pool, streaming the chunks it emits (gzip-compressed when
/// `gzip`) as they come, and records the render's figures with the time since `started`.
pub fn stream_rendered(
    gzip: bool,
    started: std::time::Instant,
    render: impl FnOnce(&mut dyn FnMut(Vec<u8>)) -> RenderStats + Send + 'static,
) -> ScrapeStream {
    let (mut sink, rx) = ChunkSink::new(gzip);
    tokio::task::spawn_blocking(move || {
        let rendered = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            render(&mut |c| sink.push(c))
        }));
        match rendered {
            Ok(stats) => {
                sink.finish();
                record_render(&stats, started.elapsed());
            }
            // The response must not end as if it were complete: the error makes the server
            // abort it, so the client sees a broken response instead of a short valid one.
            Err(_) => sink.fail("the scrape's render failed; the response is incomplete"),
        }
    });
    rx
}

pub fn record_render(stats: &RenderStats, elapsed: std::time::Duration) {
    use crate::telemetry::metrics as m;
    metrics::histogram!(m::SCRAPE_RENDER_SECONDS).record(elapsed.as_secs_f64());
    if stats.inconsistent_dropped > 0 {
        metrics::counter!(m::INCONSISTENT_DROPPED_TOTAL)
            .increment(stats.inconsistent_dropped as u64);
    }
}

/// The producing end of a `ScrapeStream`, used from a blocking thread: compresses when asked
/// and hands chunks to the response body. If the client went away, the rest is discarded.
pub struct ChunkSink {
    tx: tokio::sync::mpsc::Sender<Result<bytes::Bytes, std::io::Error>>,
    gzip: Option<flate2::write::GzEncoder<Vec<u8>>>,
    closed: bool,
}

impl ChunkSink {
    pub fn new(gzip: bool) -> (ChunkSink, ScrapeStream) {
        let (tx, rx) = tokio::sync::mpsc::channel(4);
        // Fast compression: a scrape is CPU the gateway spends on every Prometheus interval.
        let gzip = gzip.then(|| {
            flate2::write::GzEncoder::new(
                Vec::with_capacity(SCRAPE_CHUNK_BYTES / 2),
                flate2::Compression::fast(),
            )
        });
        (
            ChunkSink {
                tx,
                gzip,
                closed: false,
            },
            rx,
        )
    }

    fn send(&mut self, b: Vec<u8>) {
        if !self.closed && !b.is_empty() && self.tx.blocking_send(Ok(b.into())).is_err() {
            self.closed = true;
        }
    }

    pub fn push(&mut self, chunk: Vec<u8>) {
        if self.closed {
            return;
        }
        match self.gzip.as_mut() {
            None => self.send(chunk),
            Some(enc) => {
                use std::io::Write;
                if let Err(e) = enc.write_all(&chunk) {
                    let _ = self.tx.blocking_send(Err(e));
                    self.closed = true;
                    return;
                }
                let out = std::mem::take(enc.get_mut());
                self.send(out);
            }
        }
    }

    /// Ends the stream with an error (the response is aborted, not ended).
    pub fn fail(self, message: &str) {
        let _ = self
            .tx
            .blocking_send(Err(std::io::Error::other(message.to_owned())));
    }

    pub fn finish(mut self) {
        if let Some(enc) = self.gzip.take() {
            match enc.finish() {
                Ok(tail) => self.send(tail),
                Err(e) => {
                    let _ = self.tx.blocking_send(Err(e));
                }
            }
        }
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    async fn drain(mut rx: ScrapeStream) -> Vec<Result<Vec<u8>, String>> {
        let mut out = Vec::new();
        while let Some(item) = rx.recv().await {
            out.push(item.map(|b| b.to_vec()).map_err(|e| e.to_string()));
        }
        out
    }

    fn render_two(fail_between: bool) -> ScrapeStream {
        stream_rendered(false, std::time::Instant::now(), move |emit| {
            emit(b"first".to_vec());
            if fail_between {
                panic!("a render bug (expected by this test)");
            }
            emit(b"second".to_vec());
            RenderStats::default()
        })
    }

    #[tokio::test]
    async fn a_render_that_completes_ends_its_stream_cleanly() {
        let got = drain(render_two(false)).await;
        assert_eq!(got, vec![Ok(b"first".to_vec()), Ok(b"second".to_vec())]);
    }

    #[tokio::test]
    async fn a_render_that_fails_midway_ends_its_stream_with_an_error_not_cleanly() {
        let got = drain(render_two(true)).await;
        assert_eq!(got.len(), 2, "{got:?}");
        assert_eq!(got[0], Ok(b"first".to_vec()));
        assert!(got[1].as_ref().unwrap_err().contains("incomplete"));
    }
}
