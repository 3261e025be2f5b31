//! Streaming a scrape response: chunks of a render as it is produced, gzip-compressed when
//! the client accepts it, with the render's self-metrics.

use crate::store::render::RenderStats;

/// Chunks of a scrape response as they are produced.
pub type ScrapeStream = tokio::sync::mpsc::Receiver<Result<bytes::Bytes, std::io::Error>>;

/// Chunk size of streamed scrapes.
pub const SCRAPE_CHUNK_BYTES: usize = 256 * 1024;

/// Runs `render` on the blocking pool into one buffer, for a caller that needs the whole
/// exposition at once (`Gateway::render`).
pub async fn render_whole(
    render: impl FnOnce(&mut Vec<u8>) -> RenderStats + Send + 'static,
) -> (Vec<u8>, RenderStats) {
    tokio::task::spawn_blocking(move || {
        let mut out = Vec::with_capacity(64 * 1024);
        let stats = render(&mut out);
        (out, stats)
    })
    .await
    .expect("render task should not panic")
}

/// Runs `render` on the blocking pool, streaming the chunks it emits (gzip-compressed when
/// `gzip`) as they come, and records the render's figures with the time since `started`. A
/// render that fails after it began (a cluster node's peer lost midway) ends the stream with
/// an error.
pub fn stream_rendered(
    gzip: bool,
    started: std::time::Instant,
    render: impl FnOnce(&mut dyn FnMut(Vec<u8>)) -> Result<RenderStats, String> + Send + 'static,
) -> ScrapeStream {
    let (mut sink, rx) = ChunkSink::new(gzip);
    tokio::task::spawn_blocking(move || {
        let rendered = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            render(&mut |c| sink.push(c))
        }));
        match rendered {
            Ok(Ok(stats)) => {
                sink.finish();
                record_render(&stats, started.elapsed());
            }
            Ok(Err(e)) => {
                tracing::warn!(err = %e, "scrape render failed");
                sink.fail(&e);
            }
            // The response must not end as if it were complete: the error makes the server
            // abort it, so the client sees a broken response instead of a short valid one.
            Err(_) => sink.fail("the scrape's render failed; the response is incomplete"),
        }
    });
    rx
}

/// Counts one render in the self-metrics.
fn record_render(stats: &RenderStats, elapsed: std::time::Duration) {
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
            Ok(RenderStats::default())
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
