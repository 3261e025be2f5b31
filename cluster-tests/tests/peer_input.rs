//! Peer input is checked like client input (issue 27, item 4): a client speaking the cluster
//! gRPC to a real node, as a hostile or broken member would, sends families with smuggled
//! lines, families without the group's labels, undecodable families and groups, versions,
//! tombstones and wipes from the far future. Each is refused and counted
//! (`pushgate_cluster_peer_refused_total{reason}`), and what every node renders at `/metrics`
//! and `/api/v1/metrics` is unchanged; afterwards the cluster still takes pushes.

use std::time::Duration;

use cluster_tests::{http, metric_value, wait_for, Cluster, Node};
use pushgate::exposition::MetricType;
use pushgate::testsupport::peer::{
    family_by_hand, gauge_metric, group_of, job, version_in, PeerCall,
};

/// The pushed groups' part of a scrape: every line but the nodes' own metrics.
fn pushed_part(node: &Node) -> String {
    let (status, body) = http("GET", &node.url(), "/metrics", b"").expect("scrape");
    assert_eq!(status, 200);
    body.lines()
        .filter(|l| {
            let name = l
                .trim_start_matches("# HELP ")
                .trim_start_matches("# TYPE ");
            !["pushgate", "process_", "go_"]
                .iter()
                .any(|p| name.starts_with(p))
        })
        .map(|l| format!("{l}\n"))
        .collect()
}

fn api(node: &Node) -> String {
    let (status, body) = http("GET", &node.url(), "/api/v1/metrics", b"").expect("api");
    assert_eq!(status, 200);
    body
}

fn refused(node: &Node, reason: &str) -> f64 {
    let (_, body) = http("GET", &node.url(), "/metrics", b"").expect("scrape");
    metric_value(
        &body,
        &format!("pushgate_cluster_peer_refused_total{{reason=\"{reason}\"}}"),
    )
    .unwrap_or(0.0)
}

#[test]
fn hostile_peer_messages_are_refused_counted_and_change_nothing() {
    let cluster = Cluster::start(2, &[]);
    let (a, b) = (&cluster.nodes[0], &cluster.nodes[1]);
    for (i, n) in [a, b].into_iter().enumerate() {
        let body = format!("up{{kind=\"real\"}} {i}\n");
        let (status, _) = http(
            "PUT",
            &n.url(),
            &format!("/metrics/job/victim{i}"),
            body.as_bytes(),
        )
        .expect("push");
        assert_eq!(status, 200);
    }
    wait_for("both groups on both nodes", Duration::from_secs(10), || {
        [a, b].iter().all(|n| {
            let s = pushed_part(n);
            s.contains("job=\"victim0\"") && s.contains("job=\"victim1\"")
        })
    });
    let before: Vec<(String, String)> = [a, b].iter().map(|n| (pushed_part(n), api(n))).collect();

    let peer = PeerCall::new(format!("127.0.0.1:{}", a.cluster_port).parse().unwrap());
    let victim = job("victim0");
    let future = version_in(Duration::from_secs(70 * 365 * 24 * 3600));
    let invalid = |r: Result<_, (tonic_code::Code, String)>, what: &str| match r {
        Err((code, msg)) => {
            assert_eq!(code, tonic_code::Code::InvalidArgument, "{what}: {msg}");
            msg
        }
        Ok(v) => panic!("{what} was accepted: {v:?}"),
    };

    // Families that would put other lines into /metrics.
    let smuggled = family_by_hand(
        "up",
        MetricType::Gauge,
        &[(
            "up{job=\"victim0\"} 1\n# TYPE up counter\nup{job=\"prometheus\"} 0\ngarbage line\n",
            &gauge_metric(&[("job", "victim0")]),
        )],
    );
    let msg = invalid(
        peer.forward(&victim, vec![smuggled]).map(|_| ()),
        "smuggled lines",
    );
    assert!(msg.contains("not valid exposition"), "{msg}");
    let foreign = family_by_hand(
        "up",
        MetricType::Gauge,
        &[(
            "up{job=\"prometheus\"} 0\n",
            &gauge_metric(&[("job", "prometheus")]),
        )],
    );
    invalid(
        peer.forward(&victim, vec![foreign]).map(|_| ()),
        "foreign job",
    );
    // Undecodable bytes: as a family, and as a replicated group.
    invalid(
        peer.forward(&victim, vec![vec![0xff; 64]]).map(|_| ()),
        "garbage family",
    );
    invalid(peer.garbage_replicate(4096).map(|_| ()), "garbage group");

    // Versions from the future: a replica, a tombstone hiding an acknowledged push, the same
    // in a batch, a wipe that would refuse every later replica, a sync entry.
    let state = group_of(&victim, "up 42\n", future);
    invalid(
        peer.replicate(PeerCall::group(state.clone(), future))
            .map(|_| ()),
        "future group",
    );
    invalid(
        peer.replicate(PeerCall::tombstone(&victim, future))
            .map(|_| ()),
        "future tombstone",
    );
    let batch = peer
        .replicate_batch(vec![
            PeerCall::tombstone(&victim, u64::MAX),
            PeerCall::group(group_of(&victim, "up 42\n", u64::MAX), u64::MAX),
        ])
        .expect("a batch is answered item by item");
    assert_eq!(batch.len(), 2);
    for item in batch {
        invalid(item.map(|_| ()), "future batch item");
    }
    invalid(peer.wipe(u64::MAX), "wipe at u64::MAX");
    invalid(peer.sync(&victim, future), "future sync entry");
    // Anti-entropy summaries: one too large to sum, one that also lists entries.
    invalid(
        peer.sync_summary(1 << 17, &victim, 0).map(|_| ()),
        "summary of 131,072 buckets",
    );
    invalid(
        peer.sync_summary(4, &victim, 1).map(|_| ()),
        "summary with entries",
    );

    assert_eq!(refused(a, "invalid_family"), 2.0);
    assert_eq!(refused(a, "malformed"), 4.0);
    assert_eq!(refused(a, "future_version"), 6.0);
    let after: Vec<(String, String)> = [a, b].iter().map(|n| (pushed_part(n), api(n))).collect();
    assert_eq!(
        before, after,
        "a refused message changed what a node renders"
    );
    for (text, _) in &after {
        assert!(
            !text.contains("prometheus") && !text.contains("garbage"),
            "{text}"
        );
    }

    // The node still takes writes and replicas (the wipe did not lock it).
    for (i, n) in [a, b].into_iter().enumerate() {
        let (status, _) = http(
            "PUT",
            &n.url(),
            &format!("/metrics/job/after{i}"),
            b"up 7\n",
        )
        .expect("push");
        assert_eq!(status, 200);
    }
    wait_for(
        "later pushes on both nodes",
        Duration::from_secs(10),
        || {
            [a, b].iter().all(|n| {
                let s = pushed_part(n);
                s.contains("job=\"after0\"") && s.contains("job=\"after1\"")
            })
        },
    );
}

/// `tonic::Code` through the crate's facade (the test crate has no tonic dependency).
mod tonic_code {
    pub use pushgate::testsupport::peer::Code;
}
