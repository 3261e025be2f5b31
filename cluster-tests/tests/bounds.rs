//! Real nodes keep the cluster plane's resources bounded: a batched call over the item limit,
//! a merged scrape over its byte limit, deletes of groups that never existed, a burst of
//! stand-in copies.

use std::time::{Duration, Instant};

use cluster_tests::{http, wait_for, Cluster, Node};
use pushgate::cluster::ring::score;
use pushgate::cluster::rpc::{pb, wire};
use pushgate::cluster::NodeId;
use pushgate::store::GroupKey;
use pushgate::testsupport::peer::{Code, PeerCall};

fn key(job: &str) -> GroupKey {
    GroupKey::new(vec![("job".to_owned(), job.to_owned())])
}

/// A tombstone replica of `job` at a version just past now (versions are milliseconds << 16).
fn tombstone(job: &str) -> pb::ReplicateRequest {
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    pb::ReplicateRequest {
        version: (now_ms + 1) << 16,
        group: Default::default(),
        tombstone_key: wire::key_to_pb(&key(job)),
    }
}

/// Sends a `Writes` batch of replicas alone to `node`'s gRPC port, as any member could: the
/// items' answers, or the batch's refusal (code and message).
fn replicate_batch(
    node: &Node,
    replicas: Vec<pb::ReplicateRequest>,
) -> Result<pb::ForwardReply, (Code, String)> {
    let peer = PeerCall::new(format!("127.0.0.1:{}", node.cluster_port).parse().unwrap());
    peer.batch(pb::ForwardRequest {
        writes: Vec::new(),
        replicas,
    })
}

fn put(node: &Node, job: &str) {
    let body = format!("# TYPE bounded gauge\nbounded{{at=\"{job}\"}} 1\n");
    let (st, msg) = http(
        "PUT",
        &node.url(),
        &format!("/metrics/job/{job}"),
        body.as_bytes(),
    )
    .expect("push");
    assert_eq!(st, 200, "{msg}");
}

fn scrape(node: &Node) -> (u16, String) {
    http("GET", &node.url(), "/metrics", b"").expect("scrape")
}

/// A labelled self-metric's value in `body`.
fn labelled(body: &str, line_start: &str) -> Option<f64> {
    body.lines()
        .find_map(|l| l.strip_prefix(line_start)?.trim().parse().ok())
}

#[test]
fn a_batch_over_the_item_limit_is_refused_and_nothing_applied() {
    let c = Cluster::start(2, &["--cluster.max-batch-items=4"]);
    let jobs: Vec<String> = (0..5).map(|i| format!("batch{i}")).collect();
    for job in &jobs {
        put(&c.nodes[0], job);
    }
    let target = &c.nodes[1];
    wait_for("the pushes held", Duration::from_secs(10), || {
        let (st, body) = scrape(target);
        st == 200 && jobs.iter().all(|j| body.contains(&format!("at=\"{j}\"")))
    });
    // Five tombstones that would each hide a group: refused whole.
    let refused = replicate_batch(target, jobs.iter().map(|j| tombstone(j)).collect())
        .expect_err("a batch over the limit is refused");
    assert_eq!(refused.0, Code::ResourceExhausted, "{refused:?}");
    assert!(refused.1.contains("--cluster.max-batch-items"));
    let (st, body) = scrape(target);
    assert_eq!(st, 200);
    for j in &jobs {
        assert!(body.contains(&format!("at=\"{j}\"")), "{j} was deleted");
    }
    assert_eq!(
        labelled(
            &body,
            "pushgate_cluster_refused_total{reason=\"batch_items\"}"
        ),
        Some(1.0)
    );
    // At the limit the same kind of batch is applied (the refusal above was the limit's).
    let reply = replicate_batch(target, jobs[..4].iter().map(|j| tombstone(j)).collect())
        .expect("a batch at the limit is taken");
    assert!(reply.replica_results.iter().all(|r| r.applied), "{reply:?}");
    let (_, body) = scrape(target);
    assert!(!body.contains("at=\"batch0\""));
    assert!(body.contains("at=\"batch4\""));
}

#[test]
fn a_merged_scrape_over_its_byte_limit_answers_503() {
    let c = Cluster::start(3, &["--cluster.max-scrape-bytes=2000"]);
    for i in 0..60 {
        put(&c.nodes[i % 3], &format!("scrape{i}"));
    }
    // Every node lacks about a third of the groups, which its peers send: more than 2000 bytes.
    let (st, body) = scrape(&c.nodes[0]);
    assert_eq!(st, 503, "{body}");
    assert!(body.contains("--cluster.max-scrape-bytes"), "{body}");
    let (st, _) = http("GET", &c.nodes[0].url(), "/api/v1/metrics", b"").unwrap();
    assert_eq!(st, 503);
    // The node itself is fine.
    let (st, _) = http("GET", &c.nodes[0].url(), "/-/healthy", b"").unwrap();
    assert_eq!(st, 200);
}

#[test]
fn deletes_of_groups_that_never_existed_keep_tombstones_and_memory_bounded() {
    let c = Cluster::start(2, &["--cluster.max-tombstone-bytes=4194304"]);
    let rss = |n: &Node| n.metric("process_resident_memory_bytes").unwrap();
    let before: Vec<f64> = c.nodes.iter().map(rss).collect();
    let long = "x".repeat(60_000);
    let started = Instant::now();
    for i in 0..2_000 {
        let node = &c.nodes[i % 2];
        let path = format!("/metrics/job/{long}{i}");
        // A debug build under this load may miss a replica's deadline (503): a client retries.
        let mut answer = (0, String::new());
        for _ in 0..3 {
            answer = http("DELETE", &node.url(), &path, b"").expect("delete");
            if answer.0 != 503 {
                break;
            }
        }
        assert_eq!(answer.0, 202, "{}", answer.1);
    }
    eprintln!("2000 deletes took {:?}", started.elapsed());
    for (n, before) in c.nodes.iter().zip(before) {
        let count = n.metric("pushgate_tombstones").unwrap();
        let bytes = n.metric("pushgate_tombstone_bytes").unwrap();
        let after = rss(n);
        eprintln!(
            "node {}: tombstones {count}, tombstone bytes {bytes}, rss {:.0} MB -> {:.0} MB",
            n.id(),
            before / 1e6,
            after / 1e6
        );
        // The budget holds a few dozen such keys; without it all of them stayed.
        assert!(bytes <= (4 << 20) as f64, "{bytes}");
        assert!(count < 100.0, "{count}");
        let (_, body) = scrape(n);
        assert!(labelled(
            &body,
            "pushgate_cluster_refused_total{reason=\"tombstones\"}"
        )
        .is_some_and(|v| v > 0.0));
        // Unbounded, every key stayed on both nodes (twice this bound); within the budget only
        // the budget's keys do (figures in docs/benchmarks.md).
        assert!(
            after - before < 60e6,
            "rss grew by {:.0} MB",
            (after - before) / 1e6
        );
    }
}

#[test]
fn a_burst_of_stand_in_copies_stops_at_the_hint_limit() {
    let c = Cluster::start(
        2,
        &["--cluster.replication-factor=1", "--cluster.max-hints=5"],
    );
    let (here, other) = (&c.nodes[0], &c.nodes[1]);
    let (here_id, other_id) = (NodeId::new(here.id()), NodeId::new(other.id()));
    // Groups the other node owns: every copy of them here is a hint.
    let foreign: Vec<String> = (0..)
        .map(|i| format!("hint{i}"))
        .filter(|j| {
            let h = key(j).stable_hash();
            score(h, &other_id) > score(h, &here_id)
        })
        .take(20)
        .collect();
    let reply = replicate_batch(here, foreign.iter().map(|j| tombstone(j)).collect())
        .expect("the batch is answered item by item");
    let taken = reply.replica_results.iter().filter(|r| r.applied).count();
    let refused = reply
        .replica_results
        .iter()
        .filter(|r| r.error_code == Code::ResourceExhausted as u32)
        .count();
    assert_eq!((taken, refused), (5, 15), "{reply:?}");
    let (_, body) = scrape(here);
    assert_eq!(
        labelled(&body, "pushgate_cluster_refused_total{reason=\"hints\"}"),
        Some(15.0)
    );
}

#[test]
fn a_message_over_the_grpc_limit_is_refused_counted_and_not_applied() {
    let c = Cluster::start(
        2,
        &[
            "--push.max-body-bytes=65536",
            "--cluster.grpc-max-message-bytes=1200000",
        ],
    );
    let target = &c.nodes[1];
    put(&c.nodes[0], "kept");
    wait_for("the push held", Duration::from_secs(10), || {
        let (st, body) = scrape(target);
        st == 200 && body.contains("at=\"kept\"")
    });
    // One tombstone whose key alone is over the limit: tonic refuses it at the length prefix.
    let huge = "x".repeat(1_500_000);
    let mut item = tombstone("kept");
    item.tombstone_key = wire::key_to_pb(&GroupKey::new(vec![
        ("job".to_owned(), "kept".to_owned()),
        ("pad".to_owned(), huge),
    ]));
    let refused = replicate_batch(target, vec![item]).expect_err("over the limit");
    assert_eq!(refused.0, Code::OutOfRange, "{refused:?}");
    let (st, body) = scrape(target);
    assert_eq!(st, 200);
    assert!(body.contains("at=\"kept\""));
    assert_eq!(
        labelled(
            &body,
            "pushgate_cluster_refused_total{reason=\"message_bytes\"}"
        ),
        Some(1.0)
    );
}
