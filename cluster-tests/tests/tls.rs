//! Clusters with `--cluster.tls-config` on loopback: mutual TLS between the nodes, callers
//! without a certificate of the cluster's CA refused at the handshake, and certificates (and
//! the CA) rotated under continuous pushes.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use cluster_tests::pki::{self, Ca};
use cluster_tests::{http, wait_for, Cluster, Node};
use hyper_util::rt::TokioIo;
use pushgate::cluster::rpc::pb;
use pushgate::cluster::rpc::ClusterClient;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::{ClientConfig, RootCertStore};
use tonic::transport::{Channel, Endpoint};

fn scrape(node: &Node) -> String {
    let (status, body) = http("GET", &node.url(), "/metrics", b"").expect("scrape");
    assert_eq!(status, 200, "{body}");
    body
}

/// Whether every node's merged scrape has `line`.
fn everywhere(c: &Cluster, line: &str) -> bool {
    c.live().all(|n| scrape(n).contains(line))
}

#[test]
fn a_secured_cluster_takes_pushes_through_every_node_and_every_node_serves_every_group() {
    let dir = tempfile::tempdir().expect("temp dir");
    let ca = Ca::new();
    let flag = pki::write_cluster(dir.path(), &ca, &[&ca], 3);
    let c = Cluster::start(3, &[&flag]);
    for round in 0..4 {
        for (i, node) in c.nodes.iter().enumerate() {
            let path = format!("/metrics/job/tls_{i}_{round}");
            let (status, body) =
                http("PUT", &node.url(), &path, format!("v {round}\n").as_bytes()).expect("push");
            assert_eq!(status, 200, "push through node {i}: {body}");
        }
    }
    for i in 0..3 {
        for round in 0..4 {
            let line = format!("v{{instance=\"\",job=\"tls_{i}_{round}\"}} {round}\n");
            wait_for(&line, Duration::from_secs(10), || everywhere(&c, &line));
        }
    }
    // The groups went between the nodes over TLS: no handshake failed on either side.
    for node in &c.nodes {
        let body = scrape(node);
        // The counter is there from start; every series of it must still be zero.
        let failures: Vec<&str> = body
            .lines()
            .filter(|l| l.starts_with("pushgate_cluster_tls_handshake_failures_total{"))
            .filter(|l| !l.ends_with(" 0"))
            .collect();
        assert!(failures.is_empty(), "{failures:?}");
    }
}

/// A raw gRPC client of `node`'s cluster port: plain h2c with `tls` unset, else TLS with it.
fn raw_client(node: &Node, tls: Option<ClientConfig>) -> ClusterClient<Channel> {
    let addr: SocketAddr = ([127, 0, 0, 1], node.cluster_port).into();
    let endpoint = Endpoint::from_shared(format!("http://{addr}"))
        .expect("uri")
        .connect_timeout(Duration::from_secs(5));
    let channel = match tls {
        None => endpoint.connect_lazy(),
        Some(config) => {
            let config = Arc::new(config);
            endpoint.connect_with_connector_lazy(tower::service_fn(move |_: http::Uri| {
                let config = config.clone();
                async move {
                    let tcp = tokio::net::TcpStream::connect(addr).await?;
                    let name = ServerName::IpAddress(addr.ip().into());
                    let tls = tokio_rustls::TlsConnector::from(config)
                        .connect(name, tcp)
                        .await?;
                    Ok::<_, std::io::Error>(TokioIo::new(tls))
                }
            }))
        }
    };
    ClusterClient::new(channel)
}

/// A client config trusting `trusted`, presenting `identity` (certificate, key PEM) if given.
fn client_config(trusted: &Ca, identity: Option<(String, String)>) -> ClientConfig {
    let mut roots = RootCertStore::empty();
    roots
        .add(CertificateDer::from_pem_slice(trusted.pem().as_bytes()).expect("ca pem"))
        .expect("ca");
    let builder =
        ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .expect("versions")
            .with_root_certificates(roots);
    let mut config = match identity {
        None => builder.with_no_client_auth(),
        Some((cert, key)) => builder
            .with_client_auth_cert(
                vec![CertificateDer::from_pem_slice(cert.as_bytes()).expect("cert pem")],
                PrivateKeyDer::from_pem_slice(key.as_bytes()).expect("key pem"),
            )
            .expect("client cert"),
    };
    config.alpn_protocols = vec![b"h2".to_vec()];
    config
}

fn request<T>(msg: T) -> tonic::Request<T> {
    let mut req = tonic::Request::new(msg);
    req.set_timeout(Duration::from_secs(5));
    req
}

/// Collect, a `Writes` batch and Wipe through `client`: the error of each, `None` for a success.
async fn call_every_kind(client: &ClusterClient<Channel>) -> Vec<(&'static str, Option<String>)> {
    let collect = client
        .clone()
        .collect(request(pb::CollectRequest::default()))
        .await
        .err();
    let forward = pushgate::cluster::rpc::writes::one_batch(
        &mut client.clone(),
        pb::ForwardRequest::default(),
        Duration::from_secs(5),
    )
    .await
    .err();
    let wipe = client
        .clone()
        .wipe(request(pb::WipeRequest::default()))
        .await
        .err();
    [("collect", collect), ("forward", forward), ("wipe", wipe)]
        .into_iter()
        .map(|(rpc, e)| (rpc, e.map(|s| format!("{s:?}"))))
        .collect()
}

#[test]
fn callers_without_a_certificate_of_the_cluster_ca_cannot_call_any_rpc() {
    let dir = tempfile::tempdir().expect("temp dir");
    let ca = Ca::new();
    let flag = pki::write_cluster(dir.path(), &ca, &[&ca], 2);
    let c = Cluster::start(2, &[&flag]);
    let (status, _) =
        http("PUT", &c.nodes[0].url(), "/metrics/job/kept", b"kept 1\n").expect("push");
    assert_eq!(status, 200);

    let other = Ca::new();
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    // tonic's channels spawn their connection tasks on the runtime they are made in.
    let _entered = runtime.enter();
    let node = &c.nodes[1];
    let refused = [
        ("plain h2c", None),
        (
            "tls without a client certificate",
            Some(client_config(&ca, None)),
        ),
        (
            "a client certificate of another ca",
            Some(client_config(&ca, Some(other.issue(&["127.0.0.1"])))),
        ),
    ];
    for (what, tls) in refused {
        let client = raw_client(node, tls);
        for (rpc, error) in runtime.block_on(call_every_kind(&client)) {
            let error = error.unwrap_or_else(|| panic!("{what}: {rpc} succeeded"));
            // Refused below gRPC: the connection failed, no status from the service.
            assert!(
                error.contains("Unavailable")
                    || error.contains("Unknown")
                    || error.contains("transport"),
                "{what}: {rpc}: {error}"
            );
        }
    }
    // The handshakes were refused and counted by the server.
    let failures = scrape(node)
        .lines()
        .find_map(|l| {
            l.strip_prefix("pushgate_cluster_tls_handshake_failures_total{side=\"server\"} ")
                .and_then(|v| v.parse::<f64>().ok())
        })
        .unwrap_or(0.0);
    assert!(
        failures >= 2.0,
        "server handshake failures counted: {failures}"
    );

    // A certificate of the cluster's CA does get through (so the refusals above were the
    // certificates'): Collect answers.
    let client = raw_client(
        node,
        Some(client_config(&ca, Some(ca.issue(&["127.0.0.1"])))),
    );
    runtime
        .block_on(
            client
                .clone()
                .collect(request(pb::CollectRequest::default())),
        )
        .expect("a node certificate of the cluster's ca may call");
    // Nothing was wiped.
    wait_for("the group still served", Duration::from_secs(5), || {
        everywhere(&c, "kept{instance=\"\",job=\"kept\"} 1\n")
    });
}

/// `pushgate_cluster_tls_reloads_total{result="success"}` of a node.
fn reloads(node: &Node) -> f64 {
    scrape(node)
        .lines()
        .find_map(|l| {
            l.strip_prefix("pushgate_cluster_tls_reloads_total{result=\"success\"} ")
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0.0)
}

/// Waits until every node reloaded its files once more than `before`.
fn wait_reloaded(c: &Cluster, before: &[f64]) -> Vec<f64> {
    for (node, b) in c.nodes.iter().zip(before) {
        wait_for("every node reloaded", Duration::from_secs(20), || {
            reloads(node) > *b
        });
    }
    c.nodes.iter().map(reloads).collect()
}

#[test]
fn certificate_and_ca_rotation_under_continuous_pushes_lose_no_push_and_no_member() {
    let dir = tempfile::tempdir().expect("temp dir");
    let old = Ca::new();
    let flag = pki::write_cluster(dir.path(), &old, &[&old], 3);
    let c = Cluster::start(3, &[&flag]);
    let urls: Vec<String> = c.nodes.iter().map(Node::url).collect();

    let stop = Arc::new(AtomicBool::new(false));
    let acknowledged = Arc::new(AtomicUsize::new(0));
    let pusher = {
        let (stop, acknowledged, urls) = (stop.clone(), acknowledged.clone(), urls.clone());
        std::thread::spawn(move || {
            let mut i = 0usize;
            while !stop.load(Ordering::Relaxed) {
                let url = &urls[i % urls.len()];
                let path = format!("/metrics/job/rot_{}", i % 30);
                let (status, body) =
                    http("PUT", url, &path, format!("seq {i}\n").as_bytes()).expect("push");
                assert_eq!(status, 200, "push {i} through {url}: {body}");
                acknowledged.store(i + 1, Ordering::Relaxed);
                i += 1;
            }
        })
    };
    let members = |c: &Cluster| {
        for node in &c.nodes {
            let body = scrape(node);
            assert!(
                body.contains("pushgate_cluster_members{state=\"active\"} 3\n"),
                "node {} lost a member during the rotation",
                node.id()
            );
        }
    };
    let mut seen: Vec<f64> = c.nodes.iter().map(reloads).collect();

    // New certificates from the same CA.
    for n in 0..3 {
        pki::write_node_cert(dir.path(), n, &old);
    }
    seen = wait_reloaded(&c, &seen);
    members(&c);
    // CA rotation: trust both, move to certificates of the new CA, then trust only it.
    let new = Ca::new();
    pki::write_ca_bundle(dir.path(), &[&old, &new]);
    seen = wait_reloaded(&c, &seen);
    members(&c);
    for n in 0..3 {
        pki::write_node_cert(dir.path(), n, &new);
    }
    seen = wait_reloaded(&c, &seen);
    members(&c);
    pki::write_ca_bundle(dir.path(), &[&new]);
    wait_reloaded(&c, &seen);
    members(&c);

    let before = acknowledged.load(Ordering::Relaxed);
    wait_for(
        "more pushes after the rotation",
        Duration::from_secs(10),
        || acknowledged.load(Ordering::Relaxed) > before + 30,
    );
    stop.store(true, Ordering::Relaxed);
    pusher.join().expect("every push was acknowledged");
    let total = acknowledged.load(Ordering::Relaxed);
    // The last acknowledged value of every group is served by every node.
    for g in 0..30.min(total) {
        let last = (0..total).rev().find(|i| i % 30 == g).expect("pushed");
        let line = format!("seq{{instance=\"\",job=\"rot_{g}\"}} {last}\n");
        wait_for(&line, Duration::from_secs(10), || everywhere(&c, &line));
    }

    // The servers now take only the new CA's certificates, and present the new ones.
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let _entered = runtime.enter();
    for node in &c.nodes {
        let stale = raw_client(
            node,
            Some(client_config(&new, Some(old.issue(&["127.0.0.1"])))),
        );
        let refused = runtime.block_on(
            stale
                .clone()
                .collect(request(pb::CollectRequest::default())),
        );
        assert!(
            refused.is_err(),
            "a certificate of the removed ca was taken"
        );
        let fresh = raw_client(
            node,
            Some(client_config(&new, Some(new.issue(&["127.0.0.1"])))),
        );
        runtime
            .block_on(
                fresh
                    .clone()
                    .collect(request(pb::CollectRequest::default())),
            )
            .expect("the new ca's certificate is taken and the server's is the new ca's");
    }
}
