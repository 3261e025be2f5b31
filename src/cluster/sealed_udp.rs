//! The sealed gossip transport: chitchat over UDP with every datagram sealed by the gossip key
//! ([`gossip_key`](super::gossip_key)); what does not open is dropped and counted before chitchat
//! sees it, so a process without the key can neither join nor learn who the members are.
//!
//! # Why a loopback codec
//!
//! Chitchat 0.13 keeps its wire format to itself: `ChitchatEnvelope`'s encoder and decoder are
//! crate-private, only its own `UdpSocket` turns an envelope into bytes and back. So each sealed
//! socket holds two [`Codec`]s, a chitchat `UdpSocket` and a plain socket on 127.0.0.1 talking to
//! each other: to send, chitchat's socket encodes the envelope to the plain one, which hands the
//! bytes over for sealing; to receive, the opened bytes go the other way and chitchat's socket
//! decodes them. That is a loopback round trip per datagram, a few per gossip round: nothing
//! next to a round's interval. Nothing unauthenticated reaches chitchat's decoder.
//!
//! # Oversize datagrams
//!
//! Chitchat fills a datagram up to the largest UDP payload and cannot be asked for less (the
//! limit is a crate-private constant), so sealing cannot reserve its
//! [`SEAL_OVERHEAD`](super::gossip_key::SEAL_OVERHEAD) bytes. A
//! datagram that would exceed the limit once sealed is not sent: it is counted
//! (`reason="oversize"`) and logged, and chitchat's next round tries again. Chitchat compresses
//! its deltas, and a pushgate node gossips three short keys, so a datagram that close to 64 KiB
//! takes the state of far more nodes than a push gateway cluster runs.

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context};
use arc_swap::ArcSwap;
use async_trait::async_trait;
use chitchat::transport::{RecvOutcome, SendOutcome, Socket, Transport};
use chitchat::{ChitchatEnvelope, ChitchatMessage, ProtocolVersion};
use ring::rand::SystemRandom;
use tokio::net::UdpSocket;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use super::events::ClusterEvent;
use super::gossip_key::{ClusterAad, DropReason, GossipKeys, SealError, MAX_DATAGRAM};

/// Longest wait for a datagram to cross the loopback codec (it is there at once; this only
/// bounds a broken one, which is then replaced).
const CODEC_TIMEOUT: Duration = Duration::from_secs(1);
/// Received envelopes waiting for chitchat; beyond it the receiving task waits and the kernel's
/// socket buffer absorbs (then drops) the rest, as with chitchat's own socket.
const RECEIVED_QUEUE: usize = 64;
/// At most one log line per reason this often (every drop is counted).
const DROP_LOG_EVERY: Duration = Duration::from_secs(10);
/// The cluster id of the marker that follows each decoded datagram through the codec (a NUL
/// byte first: no cluster name a flag accepts looks like it).
const CODEC_MARK: &str = "\0pushgate-codec-";

/// A chitchat transport that seals every datagram with the first key of `keys` and opens
/// received ones with any of them; `keys` is swapped when the key file changes.
pub struct SealedUdpTransport {
    keys: Arc<ArcSwap<GossipKeys>>,
    aad: ClusterAad,
}

impl SealedUdpTransport {
    pub fn new(keys: Arc<ArcSwap<GossipKeys>>, cluster_name: &str) -> SealedUdpTransport {
        SealedUdpTransport {
            keys,
            aad: ClusterAad::new(cluster_name),
        }
    }
}

#[async_trait]
impl Transport for SealedUdpTransport {
    async fn open(&self, listen_addr: SocketAddr) -> anyhow::Result<Box<dyn Socket>> {
        let socket = UdpSocket::bind(listen_addr)
            .await
            .with_context(|| format!("failed to bind to {listen_addr}/UDP for gossip"))?;
        let socket = Arc::new(socket);
        let local_addr = socket.local_addr().context("gossip socket address")?;
        let encoder = Codec::open().await?;
        let decoder = Codec::open().await?;
        let (tx, received) = mpsc::channel(RECEIVED_QUEUE);
        // Chitchat cancels `recv` at every gossip tick; receiving in a task of its own keeps a
        // datagram in the middle of its codec round trip from being lost (or misattributed).
        let receiver = tokio::spawn(receive(
            socket.clone(),
            decoder,
            self.keys.clone(),
            self.aad.clone(),
            tx,
        ));
        Ok(Box::new(SealedSocket {
            socket,
            local_addr,
            encoder,
            keys: self.keys.clone(),
            aad: self.aad.clone(),
            rng: SystemRandom::new(),
            sealed: Vec::with_capacity(MAX_DATAGRAM),
            received,
            receiver,
            oversize: DropLog::default(),
        }))
    }
}

struct SealedSocket {
    socket: Arc<UdpSocket>,
    local_addr: SocketAddr,
    encoder: Codec,
    keys: Arc<ArcSwap<GossipKeys>>,
    aad: ClusterAad,
    rng: SystemRandom,
    sealed: Vec<u8>,
    received: mpsc::Receiver<anyhow::Result<RecvOutcome>>,
    receiver: JoinHandle<()>,
    oversize: DropLog,
}

impl Drop for SealedSocket {
    fn drop(&mut self) {
        self.receiver.abort();
    }
}

#[async_trait]
impl Socket for SealedSocket {
    fn local_addr(&self) -> anyhow::Result<SocketAddr> {
        Ok(self.local_addr)
    }

    async fn send(
        &mut self,
        to: SocketAddr,
        envelope: ChitchatEnvelope,
    ) -> anyhow::Result<SendOutcome> {
        let plaintext = match self.encoder.encode(envelope).await {
            Ok(bytes) => bytes,
            Err(error) => {
                // A codec that failed may hold a stray datagram: replace it. Only failing to
                // make a new one (no loopback) breaks the transport.
                tracing::warn!(err = %error, "gossip codec failed; replacing it");
                self.encoder = Codec::open().await?;
                return Ok(SendOutcome { num_bytes_sent: 0 });
            }
        };
        match self
            .keys
            .load()
            .seal(&self.aad, plaintext, &self.rng, &mut self.sealed)
        {
            Ok(()) => {}
            Err(SealError::Oversize) => {
                ClusterEvent::GossipDropped {
                    reason: DropReason::Oversize,
                    peer: Some(to),
                    report: self.oversize.note(),
                }
                .emit();
                return Ok(SendOutcome { num_bytes_sent: 0 });
            }
            Err(SealError::NoRandom) => {
                bail!("the system random source failed: cannot seal gossip")
            }
        }
        let num_bytes_sent = self
            .socket
            .send_to(&self.sealed, to)
            .await
            .context("failed to send chitchat message to peer")?;
        Ok(SendOutcome { num_bytes_sent })
    }

    async fn recv(&mut self) -> anyhow::Result<RecvOutcome> {
        self.received
            .recv()
            .await
            .unwrap_or_else(|| Err(anyhow!("the gossip receiving task stopped")))
    }
}

/// Receives, opens and decodes datagrams until chitchat drops the socket (or the socket breaks:
/// the error is passed on, and chitchat stops gossiping, as with its own socket).
async fn receive(
    socket: Arc<UdpSocket>,
    mut decoder: Codec,
    keys: Arc<ArcSwap<GossipKeys>>,
    aad: ClusterAad,
    tx: mpsc::Sender<anyhow::Result<RecvOutcome>>,
) {
    // One byte more than the largest datagram, so a longer one is not silently truncated.
    let mut buf = vec![0u8; MAX_DATAGRAM + 1];
    let mut opened = Vec::with_capacity(MAX_DATAGRAM);
    let mut drops = [
        DropReason::Unsealed,
        DropReason::Unopened,
        DropReason::Garbage,
    ]
    .map(|reason| (reason, DropLog::default()));
    let mut dropped = |reason: DropReason, peer: SocketAddr| {
        if let Some((_, log)) = drops.iter_mut().find(|(r, _)| *r == reason) {
            ClusterEvent::GossipDropped {
                reason,
                peer: Some(peer),
                report: log.note(),
            }
            .emit();
        }
    };
    loop {
        let (n, from) = match socket.recv_from(&mut buf).await {
            Ok(received) => received,
            Err(error) if is_transient(&error) => continue,
            Err(error) => {
                let _ = tx
                    .send(Err(anyhow!(error).context("fatal UDP recv error")))
                    .await;
                return;
            }
        };
        if let Err(reason) = keys.load().open(&aad, &buf[..n], &mut opened) {
            dropped(reason, from);
            continue;
        }
        let envelope = match decoder.decode(&opened).await {
            Ok(Some(envelope)) => envelope,
            Ok(None) => {
                dropped(DropReason::Garbage, from);
                continue;
            }
            Err(error) => {
                tracing::warn!(err = %error, "gossip codec failed; replacing it");
                match Codec::open().await {
                    Ok(codec) => decoder = codec,
                    Err(error) => {
                        let _ = tx.send(Err(error)).await;
                        return;
                    }
                }
                continue;
            }
        };
        let outcome = RecvOutcome {
            from_addr: from,
            envelope,
            num_bytes_received: n,
        };
        if tx.send(Ok(outcome)).await.is_err() {
            return;
        }
    }
}

/// Errors after which a UDP socket still works (chitchat's own socket skips the same).
fn is_transient(error: &std::io::Error) -> bool {
    matches!(
        error.kind(),
        std::io::ErrorKind::OutOfMemory
            | std::io::ErrorKind::ConnectionReset
            | std::io::ErrorKind::ConnectionRefused
    )
}

/// When the last line about one kind of drop was logged, and how many were dropped since.
#[derive(Default)]
struct DropLog {
    last: Option<Instant>,
    since: u64,
}

impl DropLog {
    /// Notes one drop; `Some(count)` when a line is due (the count includes this drop).
    fn note(&mut self) -> Option<u64> {
        self.since += 1;
        let due = self.last.is_none_or(|t| t.elapsed() >= DROP_LOG_EVERY);
        due.then(|| {
            self.last = Some(Instant::now());
            std::mem::take(&mut self.since)
        })
    }
}

/// Chitchat's encoder and decoder, reached through its own `UdpSocket` over loopback (see the
/// module's doc): `chitchat` encodes to and decodes from `plain`, which is connected to it so
/// that nothing else on the host can feed the encoding side.
pub(crate) struct Codec {
    chitchat: chitchat::transport::UdpSocket,
    plain: UdpSocket,
    plain_addr: SocketAddr,
    buf: Vec<u8>,
    /// Numbers the markers of [`Codec::decode`].
    round: u64,
}

impl Codec {
    pub(crate) async fn open() -> anyhow::Result<Codec> {
        let loopback = SocketAddr::from((Ipv4Addr::LOCALHOST, 0));
        let chitchat = chitchat::transport::UdpSocket::open(loopback)
            .await
            .context("gossip codec socket")?;
        let chitchat_addr = chitchat.local_addr()?;
        let plain = UdpSocket::bind(loopback)
            .await
            .context("gossip codec socket")?;
        plain
            .connect(chitchat_addr)
            .await
            .context("gossip codec socket")?;
        let plain_addr = plain.local_addr().context("gossip codec socket")?;
        Ok(Codec {
            chitchat,
            plain,
            plain_addr,
            buf: vec![0u8; MAX_DATAGRAM + 1],
            round: 0,
        })
    }

    /// The bytes chitchat sends for `envelope`.
    pub(crate) async fn encode(&mut self, envelope: ChitchatEnvelope) -> anyhow::Result<&[u8]> {
        self.chitchat.send(self.plain_addr, envelope).await?;
        let n = tokio::time::timeout(CODEC_TIMEOUT, self.plain.recv(&mut self.buf))
            .await
            .context("timed out encoding a gossip datagram")?
            .context("encoding a gossip datagram")?;
        Ok(&self.buf[..n])
    }

    /// The envelope chitchat decodes from `bytes`; `None` when it refuses them. Chitchat's
    /// socket skips what it cannot decode and waits for the next datagram, so a marker (a
    /// `Syn` of a cluster named after this round) follows `bytes`: meeting it first means
    /// `bytes` were refused, meeting it after means the envelope before it was `bytes`'.
    pub(crate) async fn decode(
        &mut self,
        bytes: &[u8],
    ) -> anyhow::Result<Option<ChitchatEnvelope>> {
        self.round += 1;
        let mark = format!("{CODEC_MARK}{}", self.round);
        let marker = self
            .encode(ChitchatEnvelope {
                version: ProtocolVersion::V0,
                message: ChitchatMessage::Syn {
                    cluster_id: mark.clone(),
                    digest: Default::default(),
                },
            })
            .await?
            .to_vec();
        self.plain
            .send(bytes)
            .await
            .context("decoding a gossip datagram")?;
        self.plain
            .send(&marker)
            .await
            .context("decoding a gossip datagram")?;
        let mut found = None;
        loop {
            let outcome = tokio::time::timeout(CODEC_TIMEOUT, self.chitchat.recv())
                .await
                .context("timed out decoding a gossip datagram")??;
            // Anything another local process sent to this port is not ours.
            if outcome.from_addr != self.plain_addr {
                continue;
            }
            let is_mark = matches!(
                &outcome.envelope.message,
                ChitchatMessage::Syn { cluster_id, .. } if *cluster_id == mark
            );
            if is_mark {
                return Ok(found);
            }
            if found.is_some() {
                bail!("gossip codec out of step");
            }
            found = Some(outcome.envelope);
        }
    }
}

#[cfg(test)]
#[path = "sealed_udp_tests.rs"]
mod tests;
