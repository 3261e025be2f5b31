//! Real 3-node clusters on loopback: placement, replication, merged reads and failures.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use cluster_tests::{http, scrape, wait_for, Cluster};
use pushgate::cluster::ring::score;
use pushgate::cluster::NodeId;
use pushgate::store::GroupKey;

/// `m{...}` sample lines of a scrape, by job.
fn values(body: &str, metric: &str) -> BTreeMap<String, String> {
    body.lines()
        .filter(|l| l.starts_with(&format!("{metric}{{")))
        .filter_map(|l| {
            let job = l.split("job=\"").nth(1)?.split('"').next()?.to_owned();
            Some((job, l.rsplit(' ').next()?.to_owned()))
        })
        .collect()
}

#[test]
fn three_nodes_every_node_serves_every_group() {
    let c = Cluster::start(3, &[]);
    let n = 2000;
    for i in 0..n {
        let node = &c.nodes[i % 3];
        let body = format!("# TYPE lb_value gauge\nlb_value {i}\n");
        let (st, msg) = http(
            "PUT",
            &node.url(),
            &format!("/metrics/job/j{i}"),
            body.as_bytes(),
        )
        .unwrap();
        assert_eq!(st, 200, "push {i}: {msg}");
    }
    // The real Python client, through every node.
    let script = r#"
import sys
from prometheus_client import CollectorRegistry, Gauge, push_to_gateway
urls = sys.argv[1:]
for i in range(200):
    r = CollectorRegistry()
    Gauge('lb_value', 'x', registry=r).set(100000 + i)
    push_to_gateway(urls[i % len(urls)].replace('http://', ''), job='py%d' % i, registry=r)
"#;
    let mut cmd = cluster_tests::python_with_client();
    cmd.arg("-c").arg(script);
    for node in &c.nodes {
        cmd.arg(node.url());
    }
    let status = cmd.status().expect("python3 should run");
    assert!(status.success(), "python client failed");
    let mut want: BTreeMap<String, String> =
        (0..n).map(|i| (format!("j{i}"), i.to_string())).collect();
    for i in 0..200 {
        want.insert(format!("py{i}"), (100000 + i).to_string());
    }
    for node in &c.nodes {
        let got = values(&scrape(&node.url()), "lb_value");
        assert_eq!(got.len(), want.len());
        assert_eq!(got, want, "node {}", node.url());
        let (st, api) = http("GET", &node.url(), "/api/v1/metrics", b"").unwrap();
        assert_eq!(st, 200);
        let v: serde_json::Value = serde_json::from_str(&api).expect("api json");
        assert_eq!(v["data"].as_array().map(|a| a.len()), Some(want.len()));
    }
}

/// Pushes arriving at every node at once, as behind a load balancer: each node forwards to the
/// others and replicates to them while they do the same to it, forwards and replicas for a peer
/// sharing calls. Every push is acknowledged (no 503 with every node up: a forward that waited
/// on its primary's replica calls, queued behind another forward, would let three nodes wait on
/// each other in a ring until the peer timeout) and every node serves every group afterwards.
#[test]
fn concurrent_pushes_through_every_node_are_all_acknowledged() {
    const PER_NODE: usize = 4;
    const PUSHES: usize = 150;
    let c = Cluster::start(3, &[]);
    // About 20 series per push, like a job's histogram, counters and gauges.
    let body = |i: usize| {
        let mut b = String::from("# TYPE cc_value gauge\n");
        b.push_str(&format!("cc_value {i}\n# TYPE cc_seconds histogram\n"));
        for le in ["0.1", "0.5", "1", "5", "10", "+Inf"] {
            b.push_str(&format!("cc_seconds_bucket{{le=\"{le}\"}} {i}\n"));
        }
        b.push_str(&format!("cc_seconds_sum {i}\ncc_seconds_count {i}\n"));
        for k in 0..10 {
            b.push_str(&format!("cc_total{{k=\"{k}\"}} {i}\n"));
        }
        b
    };
    let urls: Vec<String> = c.nodes.iter().map(|n| n.url()).collect();
    let failures: Vec<String> = std::thread::scope(|s| {
        let workers: Vec<_> = (0..3 * PER_NODE)
            .map(|w| {
                let url = urls[w % 3].clone();
                s.spawn(move || {
                    for p in 0..PUSHES {
                        let i = w * PUSHES + p;
                        match http(
                            "PUT",
                            &url,
                            &format!("/metrics/job/cc/instance/i{i}"),
                            body(i).as_bytes(),
                        ) {
                            Ok((200, _)) => {}
                            // The first failure ends this worker: one is enough to fail.
                            other => return Some(format!("push {i} via {url}: {other:?}")),
                        }
                    }
                    None
                })
            })
            .collect();
        workers
            .into_iter()
            .filter_map(|w| w.join().expect("worker"))
            .collect()
    });
    assert!(failures.is_empty(), "{failures:#?}");
    let n = 3 * PER_NODE * PUSHES;
    for url in &urls {
        let body = scrape(url);
        let got = body.lines().filter(|l| l.starts_with("cc_value{")).count();
        assert_eq!(got, n, "groups served by {url}");
    }
}

#[test]
fn put_post_delete_through_different_nodes() {
    let c = Cluster::start(3, &[]);
    let u = |i: usize| c.nodes[i].url();
    let path = "/metrics/job/seq/instance/i1";
    assert_eq!(http("PUT", &u(0), path, b"a 1\nb 1\n").unwrap().0, 200);
    assert_eq!(http("POST", &u(1), path, b"b 2\nc 3\n").unwrap().0, 200);
    let body = scrape(&u(2));
    assert!(
        body.contains("a{instance=\"i1\",job=\"seq\"} 1\n"),
        "{body}"
    );
    assert!(
        body.contains("b{instance=\"i1\",job=\"seq\"} 2\n"),
        "{body}"
    );
    assert!(
        body.contains("c{instance=\"i1\",job=\"seq\"} 3\n"),
        "{body}"
    );
    assert_eq!(http("PUT", &u(2), path, b"d 4\n").unwrap().0, 200);
    for i in 0..3 {
        let body = scrape(&u(i));
        assert!(
            body.contains("d{instance=\"i1\",job=\"seq\"} 4\n") && !body.contains("\na{"),
            "{body}"
        );
    }
    assert_eq!(http("DELETE", &u(1), path, b"").unwrap().0, 202);
    for i in 0..3 {
        let body = scrape(&u(i));
        assert!(!body.contains("job=\"seq\""), "{body}");
    }
    // pushed again after the delete: back
    assert_eq!(http("POST", &u(0), path, b"e 5\n").unwrap().0, 200);
    assert!(scrape(&u(1)).contains("e{instance=\"i1\",job=\"seq\"} 5\n"));
}

#[test]
fn kill_nine_loses_no_acknowledged_push() {
    let mut c = Cluster::start(3, &[]);
    let n = 300;
    for i in 0..n {
        let body = format!("kv {i}\n");
        let (st, msg) = http(
            "PUT",
            &c.nodes[i % 3].url(),
            &format!("/metrics/job/k{i}"),
            body.as_bytes(),
        )
        .unwrap();
        assert_eq!(st, 200, "{msg}");
    }
    c.nodes[2].kill9();
    // Before detection: pushes through survivors still succeed (dead owner skipped).
    for i in 0..100 {
        let body = format!("kv {}\n", i + 1000);
        let (st, msg) = http(
            "PUT",
            &c.nodes[i % 2].url(),
            &format!("/metrics/job/k{i}"),
            body.as_bytes(),
        )
        .unwrap();
        assert_eq!(st, 200, "push during failure: {msg}");
    }
    let want: BTreeMap<String, String> = (0..n)
        .map(|i| {
            (
                format!("k{i}"),
                if i < 100 { i + 1000 } else { i }.to_string(),
            )
        })
        .collect();
    for node in c.live() {
        assert_eq!(values(&scrape(&node.url()), "kv"), want);
    }
    // After detection: the ring shrinks, pushes keep succeeding.
    for node in c.live() {
        let url = node.url();
        wait_for(
            "the dead node to leave the ring",
            Duration::from_secs(20),
            || scrape(&url).contains("pushgate_cluster_members{state=\"active\"} 2\n"),
        );
    }
    for i in 0..50 {
        let (st, msg) = http(
            "PUT",
            &c.nodes[i % 2].url(),
            &format!("/metrics/job/after{i}"),
            b"kv 7\n",
        )
        .unwrap();
        assert_eq!(st, 200, "{msg}");
    }
    for node in c.live() {
        let got = values(&scrape(&node.url()), "kv");
        assert_eq!(got.len(), n + 50);
        assert_eq!(got["k5"], "1005");
    }
}

fn owners(c: &Cluster, key: &GroupKey, r: usize) -> Vec<String> {
    let h = key.stable_hash();
    let mut ids: Vec<String> = c.nodes.iter().map(|n| n.id()).collect();
    ids.sort_by(|a, b| {
        score(h, &NodeId::new(b.as_str()))
            .cmp(&score(h, &NodeId::new(a.as_str())))
            .then(a.cmp(b))
    });
    ids.truncate(r);
    ids
}

fn job(j: &str) -> GroupKey {
    GroupKey::new([("job".to_owned(), j.to_owned())])
}

/// The rule: a push is checked against every group held by the node it arrives at and by the
/// group's primary. With R=2 of 3 nodes, a conflict is refused when one of those two holds the
/// other group; otherwise it is accepted and the merged view resolves it deterministically.
#[test]
fn type_conflict_with_a_group_on_another_node_is_refused() {
    let c = Cluster::start(3, &[]);
    let first = job("conf_a");
    let (st, msg) = http(
        "PUT",
        &c.nodes[0].url(),
        "/metrics/job/conf_a",
        b"# TYPE cm counter\ncm 1\n",
    )
    .unwrap();
    assert_eq!(st, 200, "{msg}");
    let holders = owners(&c, &first, 2);
    // A second group whose primary holds the first one, pushed through a node that does not.
    let outsider = c
        .nodes
        .iter()
        .find(|n| !holders.contains(&n.id()))
        .expect("3 nodes, 2 owners");
    let second = (0..1000)
        .map(|i| format!("conf_b{i}"))
        .find(|j| {
            holders.contains(&owners(&c, &job(j), 1)[0])
                && owners(&c, &job(j), 1)[0] != outsider.id()
        })
        .expect("some key has its primary among the holders");
    let (st, msg) = http(
        "PUT",
        &outsider.url(),
        &format!("/metrics/job/{second}"),
        b"# TYPE cm gauge\ncm 2\n",
    )
    .unwrap();
    assert_eq!(st, 400, "{msg}");
    assert!(msg.contains("is not a COUNTER"), "{msg}");
    for node in &c.nodes {
        let body = scrape(&node.url());
        assert_eq!(body.matches("# TYPE cm ").count(), 1, "{body}");
        assert!(
            body.contains("cm{instance=\"\",job=\"conf_a\"} 1\n"),
            "{body}"
        );
    }
}

/// A node that receives the whole load (clients configured with node 0 only) becomes
/// entry-heavy and forwards the bodies of the pushes whose primary is another node undecoded:
/// the primaries decode them, and refuse bad ones with the status and message node 0 gives for
/// a push it decodes itself. Meanwhile every valid push is acknowledged.
#[test]
fn an_entry_node_under_load_leaves_the_decoding_to_the_primaries_and_refuses_alike() {
    let c = Cluster::start(3, &[]);
    let entry = c.nodes[0].url();
    let entry_id = c.nodes[0].id();
    let stop = AtomicBool::new(false);
    let body = |i: usize| {
        let mut b = format!("# TYPE el_value gauge\nel_value {i}\n");
        for k in 0..19 {
            b.push_str(&format!("el_total{{k=\"{k}\"}} {i}\n"));
        }
        b
    };
    // A job whose primary is node 0 (decoded there) and one whose primary is not.
    let primary_is = |here: bool| {
        (0..1000)
            .map(|i| format!("el_bad{i}"))
            .find(|j| (owners(&c, &job(j), 1)[0] == entry_id) == here)
            .expect("some job of each kind")
    };
    let (local, remote) = (primary_is(true), primary_is(false));
    let failures: Vec<String> = std::thread::scope(|s| {
        let load: Vec<_> = (0..6)
            .map(|w| {
                let (entry, stop) = (&entry, &stop);
                s.spawn(move || {
                    let until = Instant::now() + Duration::from_secs(40);
                    let mut i = w;
                    while !stop.load(Ordering::Relaxed) && Instant::now() < until {
                        let path = format!("/metrics/job/el/instance/i{}", i % 500);
                        match http("PUT", entry, &path, body(i).as_bytes()) {
                            Ok((200, _)) => {}
                            other => return Some(format!("push {i}: {other:?}")),
                        }
                        i += 6;
                    }
                    None
                })
            })
            .collect();
        wait_for("node 0 entry-heavy", Duration::from_secs(30), || {
            c.nodes[0].metric("pushgate_cluster_entry_heavy") == Some(1.0)
        });
        let push = |job: &str, body: &[u8]| {
            http("PUT", &entry, &format!("/metrics/job/{job}"), body).expect("push")
        };
        // A body that does not parse, and one with timestamps (refused, recorded on the group).
        for bad in [&b"el_x{"[..], b"el_t 1 1000\n"] {
            let (here, there) = (push(&local, bad), push(&remote, bad));
            assert_eq!(here.0, 400, "{here:?}");
            assert_eq!(there, here);
        }
        assert!(
            push(&remote, b"el_t 1 1000\n")
                .1
                .contains("must not have timestamps"),
            "timestamps"
        );
        // A conflict with a group the primary holds.
        let (st, msg) = push(&remote, b"# TYPE el_c counter\nel_c 1\n");
        assert_eq!(st, 200, "{msg}");
        let sibling = (0..1000)
            .map(|i| format!("el_sib{i}"))
            .find(|j| owners(&c, &job(j), 1) == owners(&c, &job(&remote), 1))
            .expect("a job with the same primary");
        let (st, msg) = push(&sibling, b"# TYPE el_c gauge\nel_c 2\n");
        assert_eq!(st, 400, "{msg}");
        assert!(msg.contains("is not a COUNTER"), "{msg}");
        stop.store(true, Ordering::Relaxed);
        load.into_iter()
            .filter_map(|w| w.join().expect("load worker"))
            .collect()
    });
    assert!(failures.is_empty(), "{failures:#?}");
    // Without writes the node is light again; the scrapes that read the gauge tell it so.
    wait_for("node 0 light again", Duration::from_secs(10), || {
        c.nodes[0].metric("pushgate_cluster_entry_heavy") == Some(0.0)
    });
    // The refused pushes stored nothing but the failure time on their groups.
    for node in &c.nodes {
        let body = scrape(&node.url());
        assert!(!body.contains("el_x"), "{body}");
        assert!(!body.contains("el_t{"), "{body}");
        assert!(!body.contains("el_c{instance=\"\",job=\"el_sib"), "{body}");
    }
}
