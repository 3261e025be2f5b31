//! Mutual TLS on the node-to-node connections (`--cluster.tls-config`): the connector a peer's
//! channel dials through (TCP, then a rustls handshake that presents this node's certificate and
//! checks the peer's), and the server's incoming connections (each handshake in a task of its
//! own, so a slow or hostile caller holds up no other).
//!
//! Both take the config in force at the handshake from [`ClusterTls`], so a rotated certificate
//! is used by new connections while the open ones keep going.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use hyper_util::rt::TokioIo;
use rustls::pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncWrite, BufReader, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, Semaphore};
use tokio_stream::StreamExt as _;
use tonic::transport::server::{Connected, TcpConnectInfo};

use crate::telemetry::metrics as m;
use crate::tls::ClusterTls;

/// Longest a caller may take to complete its handshake with this node's server.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Bytes read from the socket at once under TLS. rustls reads about 4 KiB per call, so without
/// a buffer underneath, a merged scrape's megabytes from a peer cost a syscall per 4 KiB; one
/// buffer this size per peer connection makes that one per 64 KiB.
const READ_BUFFER: usize = 64 * 1024;
/// Handshakes the server runs at once; the accept loop waits for a free one beyond that, so
/// callers that open connections and never finish their handshake cannot take unbounded tasks.
const MAX_CONCURRENT_HANDSHAKES: usize = 256;

fn handshake_failed(side: &'static str) {
    metrics::counter!(m::CLUSTER_TLS_HANDSHAKE_FAILURES_TOTAL, "side" => side).increment(1);
}

/// Dials one peer: TCP (no Nagle: the batched calls are small writes that must leave at once),
/// then TLS, verifying the peer's certificate against the configured name, or by default
/// against the IP address the peer advertises (so one node's certificate cannot serve
/// another's address).
#[derive(Clone)]
pub struct TlsConnector {
    tls: ClusterTls,
    addr: SocketAddr,
    timeout: Duration,
}

impl TlsConnector {
    pub fn new(tls: ClusterTls, addr: SocketAddr, timeout: Duration) -> Self {
        TlsConnector { tls, addr, timeout }
    }
}

type ClientStream = TokioIo<tokio_rustls::client::TlsStream<BufReader<TcpStream>>>;

impl tower::Service<http::Uri> for TlsConnector {
    type Response = ClientStream;
    type Error = io::Error;
    type Future = Pin<Box<dyn Future<Output = io::Result<ClientStream>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, _uri: http::Uri) -> Self::Future {
        let (config, addr, timeout) = (self.tls.current(), self.addr, self.timeout);
        Box::pin(async move {
            let connect = async {
                let tcp = TcpStream::connect(addr).await?;
                tcp.set_nodelay(true)?;
                let name = config
                    .server_name
                    .clone()
                    .unwrap_or_else(|| ServerName::IpAddress(addr.ip().into()));
                let connector = tokio_rustls::TlsConnector::from(Arc::clone(&config.client));
                let tcp = BufReader::with_capacity(READ_BUFFER, tcp);
                connector.connect(name, tcp).await.inspect_err(|e| {
                    handshake_failed("client");
                    tracing::warn!(peer = %addr, err = %e, "tls handshake with a peer failed");
                })
            };
            match tokio::time::timeout(timeout, connect).await {
                Ok(stream) => stream.map(TokioIo::new),
                Err(_) => Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!("connecting to {addr} timed out"),
                )),
            }
        })
    }
}

/// A caller's connection once its handshake completed.
pub struct TlsConn(tokio_rustls::server::TlsStream<BufReader<TcpStream>>);

impl Connected for TlsConn {
    type ConnectInfo = TcpConnectInfo;

    fn connect_info(&self) -> TcpConnectInfo {
        self.0.get_ref().0.get_ref().connect_info()
    }
}

impl AsyncRead for TlsConn {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

impl AsyncWrite for TlsConn {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.0).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.0).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.0.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_shutdown(cx)
    }
}

/// The connections of `listener` that completed a mutual-TLS handshake, for
/// `serve_with_incoming`. Callers without a certificate from the configured CA are refused at
/// the handshake (counted, logged at debug: a scanner must not flood the log).
pub fn tls_incoming(
    listener: TcpListener,
    tls: ClusterTls,
) -> impl tokio_stream::Stream<Item = io::Result<TlsConn>> {
    let (tx, rx) = mpsc::channel::<TlsConn>(64);
    let permits = Arc::new(Semaphore::new(MAX_CONCURRENT_HANDSHAKES));
    tokio::spawn(async move {
        loop {
            let accepted = tokio::select! {
                accepted = listener.accept() => accepted,
                // The server stopped: stop accepting.
                _ = tx.closed() => return,
            };
            let (tcp, peer) = match accepted {
                Ok(conn) => conn,
                Err(e) => {
                    tracing::debug!(err = %e, "cluster accept failed");
                    // Out of file descriptors, typically: give closing connections a moment.
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                }
            };
            let Ok(permit) = permits.clone().acquire_owned().await else {
                return;
            };
            let _ = tcp.set_nodelay(true);
            let acceptor = tokio_rustls::TlsAcceptor::from(Arc::clone(&tls.current().server));
            let tx = tx.clone();
            tokio::spawn(async move {
                let _permit = permit;
                let tcp = BufReader::with_capacity(READ_BUFFER, tcp);
                match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                    Ok(Ok(stream)) => {
                        let _ = tx.send(TlsConn(stream)).await;
                    }
                    Ok(Err(e)) => {
                        handshake_failed("server");
                        tracing::debug!(%peer, err = %e, "refused a cluster connection at the tls handshake");
                    }
                    Err(_) => {
                        handshake_failed("server");
                        tracing::debug!(%peer, "a cluster connection did not complete its tls handshake in time");
                    }
                }
            });
        }
    });
    tokio_stream::wrappers::ReceiverStream::new(rx).map(Ok)
}
