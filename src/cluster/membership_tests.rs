//! Membership over real UDP sockets on 127.0.0.1: convergence, failure detection, state
//! changes, cluster names, and peers sending bad state; and over chitchat's in-memory transport:
//! a partition and its healing.

use std::time::{Duration, Instant};

use chitchat::transport::ChannelTransport;

use super::*;

/// Generous for a loaded 2-core CI machine; the observed times are printed.
const DEADLINE: Duration = Duration::from_secs(15);

fn free_udp_port() -> u16 {
    std::net::UdpSocket::bind("127.0.0.1:0")
        .and_then(|s| s.local_addr())
        .map(|a| a.port())
        .expect("binding an ephemeral UDP port on loopback should work")
}

fn config(cluster: &str, peers: &[SocketAddr]) -> MembershipConfig {
    let gossip: SocketAddr = ([127, 0, 0, 1], free_udp_port()).into();
    let mut cfg = MembershipConfig::new(gossip, ([127, 0, 0, 1], gossip.port()).into());
    cfg.cluster_name = cluster.to_owned();
    cfg.peers = peers.iter().map(|p| p.to_string()).collect();
    cfg.initial_state = MemberState::Active;
    cfg
}

/// Starts a node, retrying on a fresh port if another process took the probed one.
async fn start(cluster: &str, peers: &[SocketAddr]) -> (Membership, SocketAddr) {
    let mut last_error = None;
    for _ in 0..5 {
        let cfg = config(cluster, peers);
        let addr = cfg.gossip_advertise;
        match Membership::start(cfg).await {
            Ok(m) => return (m, addr),
            Err(error) => last_error = Some(error),
        }
    }
    panic!("could not start a node: {last_error:?}");
}

/// Waits until `pred` holds for the node's ring; returns how long that took.
async fn wait_ring(m: &Membership, what: &str, pred: impl Fn(&Ring) -> bool) -> Duration {
    let started = Instant::now();
    let mut rx = m.subscribe();
    let result = tokio::time::timeout(DEADLINE, rx.wait_for(|ring| pred(ring))).await;
    match result {
        Ok(Ok(_)) => started.elapsed(),
        Ok(Err(_)) => panic!(
            "{}: ring publisher stopped while waiting for {what}",
            m.self_id()
        ),
        Err(_) => panic!(
            "{}: no ring with {what} within {DEADLINE:?}; last ring: {:?}",
            m.self_id(),
            m.ring()
        ),
    }
}

fn ids(ring: &Ring) -> Vec<NodeId> {
    ring.members.iter().map(|m| m.id.clone()).collect()
}

async fn three_nodes() -> [Membership; 3] {
    let (a, a_addr) = start("test", &[]).await;
    let (b, _) = start("test", &[a_addr]).await;
    let (c, _) = start("test", &[a_addr]).await;
    [a, b, c]
}

/// Three nodes gossiping over chitchat's in-memory transport (fast gossip, so a silent node is
/// declared dead within about a second).
async fn three_nodes_in_process(transport: &ChannelTransport) -> [(Membership, SocketAddr); 3] {
    let mut nodes = Vec::new();
    let mut seed = Vec::new();
    for port in [1, 2, 3] {
        let gossip: SocketAddr = ([127, 0, 0, 1], port).into();
        let mut cfg = MembershipConfig::new(gossip, ([127, 0, 0, 1], 100 + port).into());
        cfg.cluster_name = "in-process".to_owned();
        cfg.peers = seed.iter().map(|p: &SocketAddr| p.to_string()).collect();
        cfg.initial_state = MemberState::Active;
        cfg.gossip_interval = Duration::from_millis(50);
        cfg.failure_detector.initial_interval = Duration::from_millis(50);
        let m = Membership::start_on(cfg, transport)
            .await
            .expect("an in-process node should start");
        nodes.push((m, gossip));
        seed = vec![gossip];
    }
    nodes.try_into().ok().expect("three nodes")
}

/// A node cut apart from the others (its links dropped, as a network partition drops packets)
/// leaves their rings, and comes back once the links are restored.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partitioned_node_leaves_the_ring_and_comes_back_when_it_heals() {
    let transport = ChannelTransport::default();
    let [(a, a_addr), (b, b_addr), (c, c_addr)] = three_nodes_in_process(&transport).await;
    for m in [&a, &b, &c] {
        wait_ring(m, "all three members", |r| r.members.len() == 3).await;
    }
    transport.remove_link(c_addr, a_addr).await;
    transport.remove_link(c_addr, b_addr).await;
    let c_id = c.self_id().clone();
    let gone = |r: &Ring| r.get(&c_id).is_none() && r.members.len() == 2;
    let left = wait_ring(&a, "c gone after the partition", gone).await;
    wait_ring(&b, "c gone after the partition", gone).await;
    wait_ring(&c, "a and b gone on c's side", |r| r.members.len() == 1).await;
    transport.add_link(c_addr, a_addr).await;
    transport.add_link(c_addr, b_addr).await;
    let back = |r: &Ring| r.get(&c_id).is_some() && r.members.len() == 3;
    let healed = wait_ring(&a, "c back after healing", back).await;
    wait_ring(&b, "c back after healing", back).await;
    wait_ring(&c, "a and b back on c's side", |r| r.members.len() == 3).await;
    eprintln!("partition: c left a's ring after {left:?}, came back {healed:?} after healing");
    for m in [a, b, c] {
        m.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_converge_then_drop_a_stopped_one() {
    let [a, b, c] = three_nodes().await;
    let mut expected = vec![
        a.self_id().clone(),
        b.self_id().clone(),
        c.self_id().clone(),
    ];
    expected.sort();

    let mut converged = Duration::ZERO;
    for m in [&a, &b, &c] {
        let took = wait_ring(m, "all three members", |r| ids(r) == expected).await;
        converged = converged.max(took);
    }
    eprintln!("3-node ring converged within {converged:?}");
    // Same members, same placement everywhere.
    let (ra, rb, rc) = (a.ring(), b.ring(), c.ring());
    assert_eq!(ra.members, rb.members);
    assert_eq!(rb.members, rc.members);
    assert_eq!(ra.self_id, *a.self_id());
    assert_eq!(
        ra.self_member().map(|m| m.grpc_addr.to_string()),
        Some(a.self_id().to_string()),
        "the test config gives each node the same address for gossip and gRPC"
    );
    for key in 0..100u64 {
        let owners = |r: &Ring| {
            r.owners(key, 2)
                .into_iter()
                .map(|m| m.id.clone())
                .collect::<Vec<_>>()
        };
        assert_eq!(owners(&ra), owners(&rb));
        assert_eq!(owners(&rb), owners(&rc));
        assert_eq!(owners(&ra).len(), 2);
    }

    let gone = c.self_id().clone();
    let stopped = Instant::now();
    c.shutdown().await;
    for m in [&a, &b] {
        wait_ring(m, "the stopped node gone", |r| {
            r.get(&gone).is_none() && r.members.len() == 2
        })
        .await;
    }
    eprintln!(
        "stopped node dropped from both rings after {:?}",
        stopped.elapsed()
    );
    assert!(a.ring().version > ra.version);

    a.shutdown().await;
    b.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leaving_state_propagates_and_leaves_placement() {
    let [a, b, c] = three_nodes().await;
    for m in [&a, &b, &c] {
        wait_ring(m, "three active members", |r| r.active().count() == 3).await;
    }
    let leaving = b.self_id().clone();
    let set = Instant::now();
    b.set_state(MemberState::Leaving).await;
    for m in [&a, &b, &c] {
        wait_ring(m, "the leaving member", |r| {
            r.get(&leaving).map(|m| m.state) == Some(MemberState::Leaving)
        })
        .await;
    }
    eprintln!("leaving state seen by all nodes after {:?}", set.elapsed());
    let ring = a.ring();
    assert_eq!(ring.members.len(), 3, "a leaving member is still a member");
    assert_eq!(ring.active().count(), 2);
    for key in 0..200u64 {
        assert!(ring.owners(key, 2).iter().all(|m| m.id != leaving));
        assert!(ring.rendezvous_order(key).iter().all(|m| m.id != leaving));
    }
    for m in [a, b, c] {
        m.shutdown().await;
    }
}

/// A node of another cluster that gossips at a member never enters any ring. Checked by order,
/// not by watching for a while: the stranger gossips at node a from before a starts, and a
/// third node joining through a (which takes gossip rounds of a with both others) is seen by
/// every member before the rings are checked; every ring a published meanwhile is checked too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn other_cluster_name_is_ignored() {
    // The stranger starts first and keeps gossiping at node a, its seed.
    let a_cfg = config("test", &[]);
    let a_addr = a_cfg.gossip_advertise;
    let (stranger, _) = start("other", &[a_addr]).await;
    let stranger_id = stranger.self_id().clone();
    let a = Membership::start(a_cfg).await.expect("node a should start");
    let mut rings = a.subscribe();
    let seen_by_a = tokio::spawn(async move {
        let mut sneaked = false;
        let mut rings_seen = 0usize;
        while rings.changed().await.is_ok() {
            let ring = rings.borrow_and_update();
            rings_seen += 1;
            sneaked |= ring.get(&stranger_id).is_some();
        }
        (sneaked, rings_seen)
    });
    let (b, _) = start("test", &[a_addr]).await;
    for m in [&a, &b] {
        wait_ring(m, "both test members", |r| r.members.len() == 2).await;
    }
    let (c, _) = start("test", &[a_addr]).await;
    for m in [&a, &b, &c] {
        wait_ring(m, "all three test members", |r| r.members.len() == 3).await;
    }
    for m in [&a, &b, &c] {
        assert!(
            m.ring().get(stranger.self_id()).is_none(),
            "a node of another cluster joined {}'s ring",
            m.self_id()
        );
    }
    assert_eq!(ids(&stranger.ring()), vec![stranger.self_id().clone()]);
    b.shutdown().await;
    c.shutdown().await;
    a.shutdown().await;
    let (sneaked, rings_seen) = seen_by_a.await.expect("the ring watcher");
    assert!(!sneaked, "a published a ring holding the stranger");
    assert!(rings_seen >= 2, "a published {rings_seen} rings: b and c joined");
    stranger.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn peer_given_by_dns_name_is_found() {
    let (a, a_addr) = start("test", &[]).await;
    let mut cfg = config("test", &[]);
    cfg.peers = vec![format!("localhost:{}", a_addr.port())];
    cfg.peer_refresh_interval = Duration::from_millis(300);
    let b = Membership::start(cfg).await.expect("node b should start");
    for m in [&a, &b] {
        wait_ring(m, "both members", |r| r.members.len() == 2).await;
    }
    a.shutdown().await;
    b.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn peer_with_bad_state_is_skipped() {
    let (a, a_addr) = start("test", &[]).await;
    // A raw chitchat node in the same cluster whose key-values are garbage.
    let bad_addr: SocketAddr = ([127, 0, 0, 1], free_udp_port()).into();
    let bad_id = ChitchatId::new("bad-node", 1, bad_addr);
    let bad = spawn_chitchat(
        ChitchatConfig {
            chitchat_id: bad_id.clone(),
            cluster_id: "test".to_owned(),
            gossip_interval: DEFAULT_GOSSIP_INTERVAL,
            listen_addr: bad_addr,
            seed_nodes: vec![a_addr.to_string()],
            failure_detector_config: FailureDetectorConfig::default(),
            marked_for_deletion_grace_period: Duration::from_secs(3600),
            catchup_callback: None,
            extra_liveness_predicate: None,
            protocol_version: ProtocolVersion::V1,
        },
        vec![
            (GRPC_ADDR_KEY.to_owned(), "not an address".to_owned()),
            (STATE_KEY.to_owned(), "dancing".to_owned()),
            (PROTOCOL_KEY.to_owned(), PROTOCOL_VERSION.to_string()),
        ],
        &UdpTransport,
    )
    .await
    .expect("raw chitchat node should start");
    let (b, _) = start("test", &[a_addr]).await;
    wait_ring(&a, "the good peer", |r| r.members.len() == 2).await;

    // Wait until a's chitchat holds the bad node as live, then check the ring skipped it.
    let deadline = Instant::now() + DEADLINE;
    loop {
        let live = a
            .chitchat
            .chitchat()
            .lock()
            .await
            .live_nodes()
            .any(|id| *id == bad_id);
        if live {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the bad node never became live at a"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // One more ring publication after it became live.
    b.set_state(MemberState::Leaving).await;
    wait_ring(&a, "b leaving", |r| {
        r.get(b.self_id()).map(|m| m.state) == Some(MemberState::Leaving)
    })
    .await;
    assert!(a.ring().get(&NodeId::from("bad-node")).is_none());
    assert_eq!(a.ring().members.len(), 2);

    let _ = bad.shutdown().await;
    a.shutdown().await;
    b.shutdown().await;
}

#[test]
fn member_from_kv_rejects_incomplete_or_bad_state() {
    let id = ChitchatId::new("n1", 7, ([127, 0, 0, 1], 9094).into());
    let kv = |grpc: Option<&'static str>, state: Option<&'static str>| {
        move |key: &str| match key {
            GRPC_ADDR_KEY => grpc,
            STATE_KEY => state,
            PROTOCOL_KEY => Some("1"),
            _ => None,
        }
    };
    let ok = member_from_kv(&id, 1, kv(Some("127.0.0.1:9095"), Some("active"))).expect("valid");
    assert_eq!(ok.id, NodeId::from("n1"));
    assert_eq!(ok.generation, 7);
    assert_eq!(ok.state, MemberState::Active);
    assert_eq!(
        member_from_kv(&id, 1, kv(None, Some("active"))),
        Err(MemberParseError::Missing(GRPC_ADDR_KEY))
    );
    assert_eq!(
        member_from_kv(&id, 1, kv(Some("127.0.0.1:9095"), None)),
        Err(MemberParseError::Missing(STATE_KEY))
    );
    assert!(matches!(
        member_from_kv(&id, 1, kv(Some("nope"), Some("active"))),
        Err(MemberParseError::GrpcAddr(_))
    ));
    assert!(matches!(
        member_from_kv(&id, 1, kv(Some("127.0.0.1:1"), Some("ACTIVE"))),
        Err(MemberParseError::State(_))
    ));
    let empty = ChitchatId::new("", 1, ([127, 0, 0, 1], 9094).into());
    assert_eq!(
        member_from_kv(&empty, 1, kv(Some("127.0.0.1:1"), Some("active"))),
        Err(MemberParseError::EmptyId)
    );
}

/// Release N places on its ring the peers of releases N-1, N and N+1, and no other (nor a peer
/// that gossips no version).
#[test]
fn only_peers_one_protocol_version_apart_at_most_are_members() {
    let id = ChitchatId::new("n1", 7, ([127, 0, 0, 1], 9094).into());
    let speaking = |protocol: Option<&'static str>| {
        move |key: &str| match key {
            GRPC_ADDR_KEY => Some("127.0.0.1:9095"),
            STATE_KEY => Some("active"),
            PROTOCOL_KEY => protocol,
            _ => None,
        }
    };
    let member = |own: u32, peer| member_from_kv(&id, own, speaking(peer)).is_ok();
    assert_eq!(PROTOCOL_VERSION, 1, "the first version is 1");
    for (own, peer, ok) in [
        (1, Some("1"), true),
        (1, Some("2"), true),
        (1, Some("0"), true),
        (1, Some("3"), false),
        (5, Some("4"), true),
        (5, Some("6"), true),
        (5, Some("3"), false),
        (5, Some("7"), false),
        (1, None, false),
        (1, Some(""), false),
        (1, Some("one"), false),
        (1, Some("-1"), false),
    ] {
        assert_eq!(member(own, peer), ok, "own {own}, peer {peer:?}");
    }
    assert_eq!(
        member_from_kv(&id, 1, speaking(Some("3"))),
        Err(MemberParseError::Protocol {
            found: Some("3".to_owned()),
            own: 1
        })
    );
}

#[test]
fn state_round_trips() {
    for s in [
        MemberState::Joining,
        MemberState::Active,
        MemberState::Leaving,
    ] {
        assert_eq!(s.as_str().parse::<MemberState>(), Ok(s));
    }
    assert!("".parse::<MemberState>().is_err());
}

#[test]
fn config_validation() {
    let base = MembershipConfig::new(([127, 0, 0, 1], 9094).into(), ([127, 0, 0, 1], 9095).into());
    assert_eq!(base.node_id.as_str(), "127.0.0.1:9094");
    assert!(base.validate().is_ok());
    let with_peers = |peers: &[&str]| {
        let mut cfg = base.clone();
        cfg.peers = peers.iter().map(|p| p.to_string()).collect();
        cfg.validate()
    };
    assert!(with_peers(&[
        "pushgate-headless.ns.svc:9094",
        "10.0.0.1:9094",
        "[::1]:9094"
    ])
    .is_ok());
    assert!(with_peers(&["no-port"]).is_err());
    assert!(with_peers(&["host:0"]).is_err());
    assert!(with_peers(&[":9094"]).is_err());
    assert!(with_peers(&["host:http"]).is_err());
    let mut unspecified = base.clone();
    unspecified.gossip_advertise = ([0, 0, 0, 0], 9094).into();
    assert!(unspecified.validate().is_err());
    let mut no_name = base.clone();
    no_name.cluster_name.clear();
    assert!(no_name.validate().is_err());
}
