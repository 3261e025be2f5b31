//! Per-node health on a real 3-node cluster (real processes on loopback): each node's
//! `/-/node-metrics` carries its own `pushgate_cluster_node_info{node}` and every peer's
//! counters labelled by node id, at zero before any write; a `kill -9` of a node is logged as a
//! warning naming it and counted, and its return is logged naming it.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use cluster_tests::{binary, free_port, http, wait_for};

/// One node started by this test, its log in a file (killed and reaped on drop).
struct LoggedNode {
    http: u16,
    cluster: u16,
    args: Vec<String>,
    log: PathBuf,
    child: Option<Child>,
}

impl LoggedNode {
    fn start(&mut self) {
        let log = File::options()
            .create(true)
            .append(true)
            .open(&self.log)
            .unwrap();
        self.child = Some(
            Command::new(binary())
                .args(&self.args)
                .stdin(Stdio::null())
                .stdout(log.try_clone().unwrap())
                .stderr(log)
                .spawn()
                .expect("pushgate should start"),
        );
    }
    fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
    fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.http)
    }
    fn id(&self) -> String {
        format!("127.0.0.1:{}", self.cluster)
    }
    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
    fn node_metrics(&self) -> String {
        match http("GET", &self.url(), "/-/node-metrics", b"") {
            Ok((200, body)) => body,
            _ => String::new(),
        }
    }
}

impl Drop for LoggedNode {
    fn drop(&mut self) {
        self.kill9();
    }
}

fn start_three(dir: &Path) -> Vec<LoggedNode> {
    let ports: Vec<(u16, u16)> = (0..3).map(|_| (free_port(), free_port())).collect();
    ports
        .iter()
        .enumerate()
        .map(|(i, (h, c))| {
            let mut args = vec![
                format!("--web.listen-address=127.0.0.1:{h}"),
                format!("--cluster.listen-address=127.0.0.1:{c}"),
                "--cluster.join-timeout=5s".to_owned(),
            ];
            args.extend(
                ports
                    .iter()
                    .map(|(_, p)| format!("--cluster.peer=127.0.0.1:{p}")),
            );
            let mut n = LoggedNode {
                http: *h,
                cluster: *c,
                args,
                log: dir.join(format!("node{i}.log")),
                child: None,
            };
            n.start();
            n
        })
        .collect()
}

#[test]
fn every_node_reports_its_own_health_labelled_by_node_id() {
    let dir = tempfile::tempdir().unwrap();
    let nodes = start_three(dir.path());
    let ids: Vec<String> = nodes.iter().map(LoggedNode::id).collect();
    for node in &nodes {
        wait_for(
            "every peer on the node's ring",
            Duration::from_secs(30),
            || {
                let text = node.node_metrics();
                ids.iter().filter(|id| **id != node.id()).all(|peer| {
                    text.contains(&format!(
                        "pushgate_forwarded_pushes_total{{peer=\"{peer}\",result=\"error\"}} 0"
                    ))
                })
            },
        );
        let text = node.node_metrics();
        let info = format!(
            "pushgate_cluster_node_info{{node=\"{}\",version=\"{}\"}} 1",
            node.id(),
            env!("CARGO_PKG_VERSION")
        );
        assert!(
            text.contains(&info),
            "{}: {info} missing:\n{text}",
            node.id()
        );
        // Only this node's own: no other node's info, no pushed group.
        for other in ids.iter().filter(|id| **id != node.id()) {
            assert!(
                !text.contains(&format!("pushgate_cluster_node_info{{node=\"{other}\"")),
                "{text}"
            );
        }
        for line in [
            "pushgate_cluster_ring_changes_total ",
            "pushgate_cluster_members_lost_total 0",
            "pushgate_refused_pushes_total{reason=\"unavailable\"} 0",
            "pushgate_replicated_writes_total{peer=\"local\",result=\"error\"} 0",
        ] {
            assert!(
                text.contains(line),
                "{}: {line} missing:\n{text}",
                node.id()
            );
        }
    }
    // Peers are on the ring (their series exist) while still joining; a write needs active
    // owners, which every node has once it answers ready.
    for node in &nodes {
        wait_for("every node ready", Duration::from_secs(30), || {
            matches!(http("GET", &node.url(), "/-/ready", b""), Ok((200, _)))
        });
    }
    // A push is counted on the node it went through, by the peer it reached.
    let (status, body) = http("PUT", &nodes[0].url(), "/metrics/job/health", b"x 1\n").unwrap();
    assert_eq!(status, 200, "{body}");
    let text = nodes[0].node_metrics();
    let counted = text.lines().any(|l| {
        (l.starts_with("pushgate_forwarded_pushes_total{peer=")
            || l.starts_with("pushgate_replicated_writes_total{peer="))
            && l.contains("result=\"success\"")
            && !l.ends_with(" 0")
    });
    assert!(counted, "the push is not counted by peer:\n{text}");
    assert!(!text.contains("x{"), "groups are not node metrics:\n{text}");
}

#[test]
fn a_killed_node_is_named_in_a_warning_and_its_return_in_a_line() {
    let dir = tempfile::tempdir().unwrap();
    let mut nodes = start_three(dir.path());
    let victim = nodes[2].id();
    for node in &nodes {
        wait_for("a full ring", Duration::from_secs(30), || {
            node.node_metrics()
                .contains("pushgate_cluster_members{state=\"active\"} 3")
        });
    }
    nodes[2].kill9();
    for node in &nodes[..2] {
        wait_for("the loss logged", Duration::from_secs(60), || {
            node.log().lines().any(|l| {
                l.contains("level=warn")
                    && l.contains("lost cluster members")
                    && l.contains(&victim)
            })
        });
        wait_for("the loss counted", Duration::from_secs(10), || {
            node.node_metrics()
                .contains("pushgate_cluster_members_lost_total 1")
        });
    }
    nodes[2].start();
    for node in &nodes[..2] {
        wait_for("the return logged", Duration::from_secs(60), || {
            node.log()
                .lines()
                .any(|l| l.contains("lost cluster members are back") && l.contains(&victim))
        });
        assert!(
            node.node_metrics()
                .contains("pushgate_cluster_members_returned_total 1"),
            "{}",
            node.node_metrics()
        );
    }
}
