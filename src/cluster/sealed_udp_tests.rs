//! The sealed transport over real UDP sockets on loopback (chitchat's in-memory transport
//! carries envelopes, not bytes, so it cannot show sealing): the codec, sockets that open each
//! other's datagrams and drop everything else, and memberships gossiping through it.

use std::time::Duration;

use base64::Engine;
use chitchat::transport::UdpTransport;

use super::*;
use crate::cluster::gossip_key::{GossipKeys, CHITCHAT_MAGIC, KEY_BYTES};
use crate::cluster::{MemberState, Membership, MembershipConfig, Ring};

const DEADLINE: Duration = Duration::from_secs(15);

fn keys(b: u8) -> Arc<ArcSwap<GossipKeys>> {
    let line = base64::engine::general_purpose::STANDARD.encode([b; KEY_BYTES]);
    Arc::new(ArcSwap::from_pointee(
        GossipKeys::parse(&line).expect("valid key"),
    ))
}

fn loopback() -> SocketAddr {
    SocketAddr::from((Ipv4Addr::LOCALHOST, 0))
}

fn syn(cluster: &str) -> ChitchatEnvelope {
    ChitchatEnvelope {
        version: ProtocolVersion::V1,
        message: ChitchatMessage::Syn {
            cluster_id: cluster.to_owned(),
            digest: Default::default(),
        },
    }
}

async fn recv(socket: &mut Box<dyn Socket>) -> RecvOutcome {
    tokio::time::timeout(DEADLINE, socket.recv())
        .await
        .expect("a datagram within the deadline")
        .expect("the socket works")
}

#[tokio::test]
async fn the_codec_encodes_and_decodes_as_chitchat_does() {
    let mut codec = Codec::open().await.expect("codec");
    let bytes = codec.encode(syn("prod")).await.expect("encodes").to_vec();
    // What the sealed transport calls unsealed: chitchat's magic number first.
    assert!(bytes.starts_with(&CHITCHAT_MAGIC), "{bytes:?}");
    assert_eq!(
        codec.decode(&bytes).await.expect("decodes"),
        Some(syn("prod"))
    );
    // Bytes chitchat refuses come back as None, and the codec stays in step.
    assert_eq!(codec.decode(b"junk").await.expect("decodes"), None);
    assert_eq!(codec.decode(b"").await.expect("decodes"), None);
    assert_eq!(
        codec
            .decode(&bytes[..bytes.len() - 1])
            .await
            .expect("decodes"),
        None
    );
    // A message that looks like an earlier round's marker is just a message.
    let marker_like = codec
        .encode(syn(&format!("{CODEC_MARK}1")))
        .await
        .expect("encodes")
        .to_vec();
    assert_eq!(
        codec.decode(&marker_like).await.expect("decodes"),
        Some(syn(&format!("{CODEC_MARK}1")))
    );
    assert_eq!(
        codec.decode(&bytes).await.expect("decodes"),
        Some(syn("prod"))
    );
}

#[tokio::test]
async fn sealed_sockets_open_each_others_datagrams_and_drop_the_rest() {
    let key = keys(1);
    let mut a = SealedUdpTransport::new(key.clone(), "prod")
        .open(loopback())
        .await
        .expect("a");
    let mut b = SealedUdpTransport::new(key.clone(), "prod")
        .open(loopback())
        .await
        .expect("b");
    let mut wrong_key = SealedUdpTransport::new(keys(2), "prod")
        .open(loopback())
        .await
        .expect("wrong key");
    let mut wrong_cluster = SealedUdpTransport::new(key.clone(), "other")
        .open(loopback())
        .await
        .expect("wrong cluster");
    let mut plain = UdpTransport.open(loopback()).await.expect("plain");
    let raw = tokio::net::UdpSocket::bind(loopback()).await.expect("raw");
    let b_addr = b.local_addr().expect("addr");

    // Everything that must be dropped goes first; the first datagram b hands to chitchat is
    // then a's, sent last.
    for other in [&mut wrong_key, &mut wrong_cluster, &mut plain] {
        other.send(b_addr, syn("prod")).await.expect("sent");
    }
    raw.send_to(b"\x01garbage that is not sealed", b_addr)
        .await
        .expect("sent");
    let sent = a.send(b_addr, syn("prod")).await.expect("sent");
    let got = recv(&mut b).await;
    assert_eq!(got.from_addr, a.local_addr().expect("addr"));
    assert_eq!(got.envelope, syn("prod"));
    assert_eq!(got.num_bytes_received, sent.num_bytes_sent);

    // A chitchat socket without the key cannot read a sealed datagram: the plain datagram
    // sent after it is the first it decodes.
    let plain_addr = plain.local_addr().expect("addr");
    b.send(plain_addr, syn("sealed")).await.expect("sent");
    let mut codec = Codec::open().await.expect("codec");
    let clear = codec.encode(syn("clear")).await.expect("encodes").to_vec();
    raw.send_to(&clear, plain_addr).await.expect("sent");
    let got = recv(&mut plain).await;
    assert_eq!(got.envelope, syn("clear"));
    assert_eq!(got.from_addr, raw.local_addr().expect("addr"));
}

#[tokio::test]
async fn a_key_swapped_in_is_used_at_once() {
    let old = keys(1);
    let a_keys = keys(1);
    let mut a = SealedUdpTransport::new(a_keys.clone(), "prod")
        .open(loopback())
        .await
        .expect("a");
    let mut b = SealedUdpTransport::new(old.clone(), "prod")
        .open(loopback())
        .await
        .expect("b");
    let mut c = SealedUdpTransport::new(keys(1), "prod")
        .open(loopback())
        .await
        .expect("c");
    let b_addr = b.local_addr().expect("addr");
    // a moves to key 2 (b does not have it yet): b drops what a seals; c's datagram, sent
    // after a's, is the first b opens.
    a_keys.store(keys(2).load_full());
    a.send(b_addr, syn("lost")).await.expect("sent");
    c.send(b_addr, syn("from c")).await.expect("sent");
    assert_eq!(recv(&mut b).await.envelope, syn("from c"));
    // b takes both keys, the old one first: it now opens a's datagrams.
    let both = base64::engine::general_purpose::STANDARD;
    let text = format!(
        "{}\n{}",
        both.encode([1u8; KEY_BYTES]),
        both.encode([2u8; KEY_BYTES])
    );
    old.store(Arc::new(GossipKeys::parse(&text).expect("keys")));
    a.send(b_addr, syn("kept")).await.expect("sent");
    assert_eq!(recv(&mut b).await.envelope, syn("kept"));
}

async fn start_node(
    cluster: &str,
    peers: &[SocketAddr],
    transport: Option<&SealedUdpTransport>,
) -> Membership {
    let mut last_error = None;
    for _ in 0..5 {
        let port = std::net::UdpSocket::bind("127.0.0.1:0")
            .and_then(|s| s.local_addr())
            .map(|a| a.port())
            .expect("a free port");
        let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
        let mut cfg = MembershipConfig::new(addr, addr);
        cfg.cluster_name = cluster.to_owned();
        cfg.peers = peers.iter().map(|p| p.to_string()).collect();
        cfg.initial_state = MemberState::Active;
        let started = match transport {
            Some(t) => Membership::start_on(cfg, t).await,
            None => Membership::start(cfg).await,
        };
        match started {
            Ok(m) => return m,
            Err(error) => last_error = Some(error),
        }
    }
    panic!("could not start a node: {last_error:?}");
}

fn size(ring: &Ring) -> usize {
    ring.members.len()
}

#[tokio::test]
async fn only_nodes_holding_the_key_become_members() {
    let sealed = SealedUdpTransport::new(keys(1), "prod");
    let wrong = SealedUdpTransport::new(keys(2), "prod");
    let a = start_node("prod", &[], Some(&sealed)).await;
    let a_addr: SocketAddr = a.self_id().as_str().parse().expect("id is the address");
    let b = start_node("prod", &[a_addr], Some(&sealed)).await;
    let outsider = start_node("prod", &[a_addr], None).await;
    let wrong_key = start_node("prod", &[a_addr], Some(&wrong)).await;
    for m in [&a, &b] {
        let mut rings = m.subscribe();
        tokio::time::timeout(DEADLINE, rings.wait_for(|r| size(r) == 2))
            .await
            .expect("the keyed nodes see each other")
            .expect("ring publisher alive");
    }
    // Ten gossip rounds more: neither outsider gets in, nor learns of the members.
    let watch = async {
        let mut rings = [
            a.subscribe(),
            b.subscribe(),
            outsider.subscribe(),
            wrong_key.subscribe(),
        ];
        loop {
            let sizes: Vec<usize> = rings
                .iter_mut()
                .map(|r| size(&r.borrow_and_update()))
                .collect();
            assert_eq!(
                sizes,
                [2, 2, 1, 1],
                "rings of a, b, the outsider, the wrong key"
            );
            let [r0, r1, r2, r3] = &mut rings;
            tokio::select! {
                _ = r0.changed() => {}
                _ = r1.changed() => {}
                _ = r2.changed() => {}
                _ = r3.changed() => {}
            }
        }
    };
    let _ = tokio::time::timeout(Duration::from_secs(2), watch).await;
    for m in [a, b, outsider, wrong_key] {
        m.shutdown().await;
    }
}
