//! Serving a pre-bound listener: HTTP/1.1 and HTTP/2, optional TLS from the web config, and a
//! graceful shutdown that lets in-flight requests finish (bounded by a timeout). Each
//! connection is bounded by `conn`: a slot among `--web.max-connections`, hyper's header-read
//! timeout, and a watchdog for connections that never send a request or sit idle.

use std::future::Future;
use std::time::Duration;

use axum::body::Body;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;

use super::app::App;
use super::conn::{self, Activity, ClientAddr, ServerLimits, Watched};
use super::web_config::SharedWebConfig;
use crate::telemetry::metrics as m;

/// How long open connections get to finish after shutdown is requested.
pub const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);

pub async fn serve(
    listener: TcpListener,
    app: App,
    web: SharedWebConfig,
    limits: ServerLimits,
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
                    conn::accept_failed(&e);
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = &mut shutdown => break,
        };
        // Over the limit the connection is closed at once (the client sees it closed, not a
        // hang), so the node's file descriptors and memory stay bounded.
        let Some(slot) = limits.admit() else {
            drop(stream);
            continue;
        };
        let _ = stream.set_nodelay(true);
        let cfg = web.current();
        let mut builder = auto::Builder::new(TokioExecutor::new());
        // Clients may shut down their write side while waiting for the answer (Go's server
        // allows it); without this hyper would drop such requests unanswered.
        builder
            .http1()
            .half_close(true)
            .timer(TokioTimer::new())
            .header_read_timeout(limits.read_header_timeout);
        builder.http2().timer(TokioTimer::new());
        if !cfg.http2_enabled() {
            builder = builder.http1_only();
        }
        let app = app.clone();
        let activity = Activity::new();
        let svc = {
            let activity = activity.clone();
            hyper::service::service_fn(move |req: hyper::Request<Incoming>| {
                let guard = activity.request();
                let mut req = req.map(Body::new);
                req.extensions_mut().insert(ClientAddr(peer));
                let answer = app.call(req);
                async move {
                    let response = answer.await;
                    drop(guard);
                    Ok::<_, std::convert::Infallible>(response)
                }
            })
        };
        let watcher = graceful.watcher();
        let tls = cfg.tls_acceptor();
        let limits = limits.clone();
        tokio::spawn(async move {
            let _slot = slot;
            let open = metrics::gauge!(m::HTTP_CONNECTIONS_OPEN);
            open.increment(1.0);
            let watchdog = activity.watchdog(limits.read_header_timeout, limits.idle_timeout);
            let served = async {
                match tls {
                    None => {
                        let io = TokioIo::new(Watched::new(stream, activity.clone()));
                        let conn = builder.serve_connection_with_upgrades(io, svc);
                        if let Err(e) = watcher.watch(conn.into_owned()).await {
                            tracing::debug!(%peer, err = %e, "connection ended with an error");
                        }
                    }
                    Some(acceptor) => {
                        let tls = match tokio::time::timeout(
                            limits.read_header_timeout,
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
                        let io = TokioIo::new(Watched::new(tls, activity.clone()));
                        let conn = builder.serve_connection_with_upgrades(io, svc);
                        if let Err(e) = watcher.watch(conn.into_owned()).await {
                            tracing::debug!(%peer, err = %e, "connection ended with an error");
                        }
                    }
                }
            };
            // Whichever ends first: the connection, or the watchdog (which then drops it).
            tokio::select! {
                _ = served => {}
                _ = watchdog => tracing::debug!(%peer, "connection closed by the server's timeouts"),
            }
            open.decrement(1.0);
        });
    }
    drop(listener);
    tokio::select! {
        _ = graceful.shutdown() => {}
        _ = tokio::time::sleep(DRAIN_TIMEOUT) => {
            tracing::warn!("open connections did not finish in time; closing them");
        }
    }
}
