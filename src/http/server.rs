//! Serving a pre-bound listener: HTTP/1.1 and HTTP/2, optional TLS from the web config, and a
//! graceful shutdown that lets in-flight requests finish (bounded by a timeout).

use std::future::Future;
use std::time::Duration;

use axum::body::Body;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;

use super::app::App;
use super::web_config::SharedWebConfig;

/// How long open connections get to finish after shutdown is requested.
pub const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);

pub async fn serve(
    listener: TcpListener,
    app: App,
    web: SharedWebConfig,
    shutdown: impl Future<Output = ()>,
) {
    let graceful = GracefulShutdown::new();
    tokio::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(c) => c,
                Err(e) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    tracing::warn!(err = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = &mut shutdown => break,
        };
        let _ = stream.set_nodelay(true);
        let cfg = web.current();
        let mut builder = auto::Builder::new(TokioExecutor::new());
        // Clients may shut down their write side while waiting for the answer (Go's server
        // allows it); without this hyper would drop such requests unanswered.
        builder.http1().half_close(true);
        if !cfg.http2_enabled() {
            builder = builder.http1_only();
        }
        let app = app.clone();
        let svc = hyper::service::service_fn(move |req: hyper::Request<Incoming>| {
            let answer = app.call(req.map(Body::new));
            async move { Ok::<_, std::convert::Infallible>(answer.await) }
        });
        let watcher = graceful.watcher();
        match cfg.tls_acceptor() {
            None => {
                tokio::spawn(async move {
                    let conn = builder.serve_connection_with_upgrades(TokioIo::new(stream), svc);
                    if let Err(e) = watcher.watch(conn.into_owned()).await {
                        tracing::debug!(%peer, err = %e, "connection ended with an error");
                    }
                });
            }
            Some(acceptor) => {
                tokio::spawn(async move {
                    let tls = match tokio::time::timeout(
                        Duration::from_secs(10),
                        acceptor.accept(stream),
                    )
                    .await
                    {
                        Ok(Ok(s)) => s,
                        Ok(Err(e)) => {
                            tracing::debug!(%peer, err = %e, "TLS handshake failed");
                            return;
                        }
                        Err(_) => {
                            tracing::debug!(%peer, "TLS handshake timed out");
                            return;
                        }
                    };
                    let conn = builder.serve_connection_with_upgrades(TokioIo::new(tls), svc);
                    if let Err(e) = watcher.watch(conn.into_owned()).await {
                        tracing::debug!(%peer, err = %e, "connection ended with an error");
                    }
                });
            }
        }
    }
    drop(listener);
    tokio::select! {
        _ = graceful.shutdown() => {}
        _ = tokio::time::sleep(DRAIN_TIMEOUT) => {
            tracing::warn!("open connections did not finish in time; closing them");
        }
    }
}
