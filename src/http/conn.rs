//! The bounds on client connections: how many are open at once, how long one may wait before
//! its first request or sit idle, and a log of refusals that cannot flood the log.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, LazyLock};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::telemetry::metrics as m;

/// The connection bounds the flags set, shared by every listener of a node.
#[derive(Debug, Clone)]
pub struct ServerLimits {
    /// `--web.read-header-timeout`: hyper's header timeout, and the time a new connection has
    /// to complete its first request's headers (TLS handshake and protocol detection included).
    pub read_header_timeout: Duration,
    /// `--web.idle-timeout`: no byte either way and no request in progress for this long.
    pub idle_timeout: Duration,
    /// Open connections, at most `--web.max-connections` (lowered to fit the open-file limit).
    pub connections: Arc<Semaphore>,
    pub max_connections: usize,
}

impl ServerLimits {
    pub fn new(read_header_timeout: Duration, idle_timeout: Duration, max: usize) -> Self {
        ServerLimits {
            read_header_timeout,
            idle_timeout,
            connections: Arc::new(Semaphore::new(max)),
            max_connections: max,
        }
    }

    /// A slot for a new connection, or `None` when `max_connections` are open: the caller
    /// closes the connection at once (counted, and logged at most once per interval).
    pub(super) fn admit(&self) -> Option<OwnedSemaphorePermit> {
        match self.connections.clone().try_acquire_owned() {
            Ok(permit) => Some(permit),
            Err(_) => {
                metrics::counter!(m::HTTP_CONNECTIONS_REFUSED_TOTAL, "reason" => "limit")
                    .increment(1);
                if let Some(suppressed) = REFUSED_LOG.due() {
                    tracing::warn!(
                        limit = self.max_connections,
                        refused_since_last_line = suppressed,
                        "connection limit reached (--web.max-connections); closing new connections"
                    );
                }
                None
            }
        }
    }
}

impl Default for ServerLimits {
    /// The flags' defaults.
    fn default() -> Self {
        ServerLimits::new(Duration::from_secs(30), Duration::from_secs(120), 8192)
    }
}

/// A failed `accept` (out of file descriptors and the like): counted, logged at most once per
/// interval.
pub(super) fn accept_failed(err: &io::Error) {
    metrics::counter!(m::HTTP_CONNECTIONS_REFUSED_TOTAL, "reason" => "accept_error").increment(1);
    if let Some(suppressed) = ACCEPT_LOG.due() {
        tracing::warn!(err = %err, failed_since_last_line = suppressed, "accept failed");
    }
}

/// How often a repeated refusal is logged at most.
pub(super) const LOG_INTERVAL: Duration = Duration::from_secs(10);

static REFUSED_LOG: LazyLock<LogLimiter> = LazyLock::new(|| LogLimiter::new(LOG_INTERVAL));
static ACCEPT_LOG: LazyLock<LogLimiter> = LazyLock::new(|| LogLimiter::new(LOG_INTERVAL));

/// At most one log line per interval for an event that may repeat thousands of times a second.
pub(super) struct LogLimiter {
    interval: Duration,
    last: Mutex<Option<Instant>>,
    suppressed: AtomicU64,
}

impl LogLimiter {
    pub(super) fn new(interval: Duration) -> Self {
        LogLimiter {
            interval,
            last: Mutex::new(None),
            suppressed: AtomicU64::new(0),
        }
    }

    /// `Some(events left unlogged since the last line)` when a line is due, `None` otherwise.
    pub(super) fn due(&self) -> Option<u64> {
        let now = Instant::now();
        let mut last = self.last.lock();
        if last.is_some_and(|t| now.duration_since(t) < self.interval) {
            self.suppressed.fetch_add(1, Ordering::Relaxed);
            return None;
        }
        *last = Some(now);
        Some(self.suppressed.swap(0, Ordering::Relaxed))
    }
}

/// What the watchdog of one connection reads: when bytes last moved, whether a request came,
/// how many are in progress.
pub(super) struct Activity {
    /// Tokio's clock, so that tests with paused time drive the watchdog.
    started: tokio::time::Instant,
    /// Milliseconds since `started` of the last byte read or written.
    last_io_ms: AtomicU64,
    requested: AtomicBool,
    in_flight: AtomicUsize,
}

impl Activity {
    pub(super) fn new() -> Arc<Self> {
        Arc::new(Activity {
            started: tokio::time::Instant::now(),
            last_io_ms: AtomicU64::new(0),
            requested: AtomicBool::new(false),
            in_flight: AtomicUsize::new(0),
        })
    }

    fn touch(&self) {
        let ms = self.started.elapsed().as_millis() as u64;
        self.last_io_ms.fetch_max(ms, Ordering::Relaxed);
    }

    /// Marks a request in progress until the guard is dropped.
    pub(super) fn request(self: &Arc<Self>) -> RequestGuard {
        self.requested.store(true, Ordering::Relaxed);
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        RequestGuard(Arc::clone(self))
    }

    /// Resolves when the connection must be closed: no request within `header_timeout` of its
    /// start, or no byte and no request in progress for `idle_timeout`. The reason is counted.
    pub(super) async fn watchdog(&self, header_timeout: Duration, idle_timeout: Duration) {
        loop {
            let now = self.started.elapsed();
            let last_io = Duration::from_millis(self.last_io_ms.load(Ordering::Relaxed));
            let idle_for = now.saturating_sub(last_io);
            let busy = self.in_flight.load(Ordering::Relaxed) > 0;
            let requested = self.requested.load(Ordering::Relaxed);
            let reason = if !requested && now >= header_timeout {
                Some("no_request")
            } else if !busy && idle_for >= idle_timeout {
                Some("idle")
            } else {
                None
            };
            if let Some(reason) = reason {
                metrics::counter!(m::HTTP_CONNECTIONS_CLOSED_TOTAL, "reason" => reason)
                    .increment(1);
                return;
            }
            let mut wait = if busy {
                idle_timeout
            } else {
                idle_timeout - idle_for
            };
            if !requested {
                wait = wait.min(header_timeout - now);
            }
            tokio::time::sleep(wait.max(Duration::from_millis(10))).await;
        }
    }
}

pub(super) struct RequestGuard(Arc<Activity>);

impl Drop for RequestGuard {
    fn drop(&mut self) {
        self.0.touch();
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A connection's stream, noting every byte moved in its [`Activity`].
pub(super) struct Watched<S> {
    inner: S,
    activity: Arc<Activity>,
}

impl<S> Watched<S> {
    pub(super) fn new(inner: S, activity: Arc<Activity>) -> Self {
        Watched { inner, activity }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Watched<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let res = Pin::new(&mut self.inner).poll_read(cx, buf);
        if buf.filled().len() > before {
            self.activity.touch();
        }
        res
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Watched<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let res = Pin::new(&mut self.inner).poll_write(cx, buf);
        if matches!(res, Poll::Ready(Ok(n)) if n > 0) {
            self.activity.touch();
        }
        res
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let res = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        if matches!(res, Poll::Ready(Ok(n)) if n > 0) {
            self.activity.touch();
        }
        res
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// The client's address, put in each request's extensions by the server (the bcrypt queue
/// limits checks per client IP).
#[derive(Debug, Clone, Copy)]
pub struct ClientAddr(pub SocketAddr);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_log_limiter_logs_once_per_interval_and_counts_the_rest() {
        let l = LogLimiter::new(Duration::from_secs(3600));
        assert_eq!(l.due(), Some(0));
        assert_eq!(l.due(), None);
        assert_eq!(l.due(), None);
        let l0 = LogLimiter::new(Duration::ZERO);
        assert_eq!(l0.due(), Some(0));
        assert_eq!(l0.due(), Some(0));
    }

    #[test]
    fn admission_stops_at_the_limit_and_resumes_when_a_slot_frees() {
        let limits = ServerLimits::new(Duration::from_secs(1), Duration::from_secs(1), 2);
        let a = limits.admit().unwrap();
        let _b = limits.admit().unwrap();
        assert!(limits.admit().is_none());
        drop(a);
        assert!(limits.admit().is_some());
    }

    #[tokio::test(start_paused = true)]
    async fn a_connection_without_a_request_is_closed_after_the_header_timeout() {
        let a = Activity::new();
        let started = tokio::time::Instant::now();
        a.watchdog(Duration::from_secs(5), Duration::from_secs(60))
            .await;
        let waited = started.elapsed();
        assert!(waited >= Duration::from_secs(5) && waited < Duration::from_secs(6));
    }

    #[tokio::test(start_paused = true)]
    async fn a_request_in_progress_keeps_the_connection_and_idleness_closes_it() {
        let a = Activity::new();
        let guard = a.request();
        let watch = a.watchdog(Duration::from_secs(1), Duration::from_secs(10));
        tokio::pin!(watch);
        // Busy for longer than the idle timeout: kept.
        assert!(tokio::time::timeout(Duration::from_secs(30), &mut watch)
            .await
            .is_err());
        drop(guard);
        let started = tokio::time::Instant::now();
        watch.await;
        assert!(started.elapsed() <= Duration::from_secs(11));
    }
}
