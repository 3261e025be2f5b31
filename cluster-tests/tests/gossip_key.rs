//! The gossip key (`--cluster.gossip-key-file`) with real processes on loopback: a node without
//! the key, or with another one, never becomes a member of the keyed nodes and receives no
//! group; the key is rotated in three steps (rewriting every node's file) under continuous
//! pushes without a member leaving or a push failing.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use cluster_tests::{http, metric_value, wait_for, Cluster, Node};

const DEADLINE: Duration = Duration::from_secs(60);

/// A new key, made the way docs/operations.md says.
fn new_key() -> String {
    let out = Command::new("sh")
        .args(["-c", "head -c 32 /dev/urandom | base64"])
        .output()
        .expect("sh runs");
    assert!(out.status.success());
    String::from_utf8(out.stdout).expect("base64 is text")
}

/// Writes a key file atomically (a new file renamed over the old), as the docs ask.
fn write_keys(path: &Path, keys: &[&str]) {
    let tmp = path.with_extension("new");
    let text: String = keys.iter().map(|k| format!("{}\n", k.trim())).collect();
    std::fs::write(&tmp, text).expect("write key file");
    std::fs::rename(&tmp, path).expect("rename key file");
}

struct TempDir(PathBuf);

impl TempDir {
    fn new(what: &str) -> TempDir {
        let dir = std::env::temp_dir().join(format!(
            "pushgate-{what}-{}-{}",
            std::process::id(),
            cluster_tests::free_port()
        ));
        std::fs::create_dir_all(&dir).expect("temp dir");
        TempDir(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn scrape(node: &Node) -> Option<String> {
    match http("GET", &node.url(), "/metrics", b"") {
        Ok((200, body)) => Some(body),
        _ => None,
    }
}

/// A self-metric with labels (`name{labels}`), 0 when absent.
fn counter(body: &str, series: &str) -> f64 {
    metric_value(body, series).unwrap_or(0.0)
}

fn active(body: &str) -> Option<f64> {
    metric_value(body, "pushgate_cluster_members{state=\"active\"}")
}

fn put(node: &Node, job: &str, v: u64) -> bool {
    let body = format!("gk_value {v}\n");
    matches!(
        http(
            "PUT",
            &node.url(),
            &format!("/metrics/job/{job}"),
            body.as_bytes()
        ),
        Ok((200, _))
    )
}

#[test]
fn a_node_without_the_key_or_with_another_never_becomes_a_member() {
    let dir = TempDir::new("gossip-outsiders");
    let key = dir.0.join("cluster.keys");
    let other = dir.0.join("other.keys");
    write_keys(&key, &[&new_key()]);
    write_keys(&other, &[&new_key()]);
    let key_flag = format!("--cluster.gossip-key-file={}", key.display());
    let mut c = Cluster::start(3, &[&key_flag]);
    // The outsiders seed from the keyed nodes; with a short join timeout they turn ready alone.
    let no_key = c.spawn_node(&["--cluster.join-timeout=2s"]);
    let other_flag = format!("--cluster.gossip-key-file={}", other.display());
    let wrong_key = c.spawn_node(&["--cluster.join-timeout=2s", &other_flag]);
    for i in [no_key, wrong_key] {
        let node = &c.nodes[i];
        wait_for("an outsider to be ready", DEADLINE, || node.is_ready());
    }
    let keyed = &c.nodes[..3];
    // Positive evidence that the outsiders did gossip at the keyed nodes, for many rounds: their
    // datagrams arrived and were dropped, by reason.
    wait_for(
        "the keyed nodes to drop many of the outsiders' datagrams",
        DEADLINE,
        || {
            let (mut unsealed, mut unopened) = (0.0, 0.0);
            for n in keyed {
                let Some(body) = scrape(n) else { return false };
                unsealed += counter(
                    &body,
                    "pushgate_cluster_gossip_dropped_total{reason=\"unsealed\"}",
                );
                unopened += counter(
                    &body,
                    "pushgate_cluster_gossip_dropped_total{reason=\"unopened\"}",
                );
            }
            unsealed >= 20.0 && unopened >= 20.0
        },
    );
    for n in keyed {
        let body = scrape(n).expect("keyed node scrape");
        assert_eq!(active(&body), Some(3.0), "keyed node {}: {body}", n.url());
        assert_eq!(
            counter(
                &body,
                "pushgate_cluster_gossip_dropped_total{reason=\"garbage\"}"
            ),
            0.0
        );
    }
    for i in [no_key, wrong_key] {
        let body = scrape(&c.nodes[i]).expect("outsider scrape");
        assert_eq!(
            active(&body),
            Some(1.0),
            "outsider {}: {body}",
            c.nodes[i].url()
        );
    }

    // Pushes to the keyed cluster land on the keyed nodes only (R=2 copies of each group).
    let groups = 40;
    for g in 0..groups {
        assert!(put(&keyed[g % 3], &format!("g{g}"), 7), "push g{g}");
    }
    wait_for(
        "R copies of every group on the keyed nodes",
        DEADLINE,
        || {
            let held: f64 = keyed
                .iter()
                .filter_map(|n| metric_value(&scrape(n).unwrap_or_default(), "pushgate_groups"))
                .sum();
            held == (2 * groups) as f64
        },
    );
    for i in [no_key, wrong_key] {
        let body = scrape(&c.nodes[i]).expect("outsider scrape");
        assert_eq!(
            metric_value(&body, "pushgate_groups"),
            Some(0.0),
            "outsider holds groups"
        );
        assert!(
            !body.contains("gk_value"),
            "outsider serves the cluster's groups: {body}"
        );
    }
    // Nor did the outsiders get in later, while the pushes were being placed.
    for n in keyed {
        let body = scrape(n).expect("keyed node scrape");
        assert_eq!(active(&body), Some(3.0), "keyed node {}", n.url());
    }
}

#[test]
fn rotating_the_gossip_key_under_pushes_loses_no_member_and_no_push() {
    let dir = TempDir::new("gossip-rotation");
    let file = |n: usize| dir.0.join(format!("node{n}.keys"));
    let (old, new) = (new_key(), new_key());
    for n in 0..3 {
        write_keys(&file(n), &[&old]);
    }
    let flag = format!(
        "--cluster.gossip-key-file={}/node{{n}}.keys",
        dir.0.display()
    );
    let c = Arc::new(Cluster::start(3, &[&flag]));

    // Pushes, round robin over the nodes, each group's value the push's sequence number.
    let stop = Arc::new(AtomicBool::new(false));
    let failures = Arc::new(Mutex::new(Vec::new()));
    let acked: Arc<Mutex<BTreeMap<String, u64>>> = Arc::default();
    let pushed = Arc::new(AtomicU64::new(0));
    let pusher = {
        let (c, stop, failures, acked, pushed) = (
            c.clone(),
            stop.clone(),
            failures.clone(),
            acked.clone(),
            pushed.clone(),
        );
        std::thread::spawn(move || {
            let mut seq = 0u64;
            while !stop.load(Ordering::Relaxed) {
                seq += 1;
                let job = format!("rot{}", seq % 30);
                let node = &c.nodes[(seq % 3) as usize];
                if put(node, &job, seq) {
                    acked.lock().unwrap().insert(job, seq);
                    pushed.fetch_add(1, Ordering::Relaxed);
                } else {
                    failures.lock().unwrap().push((seq, node.url()));
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        })
    };
    // Every node counts 3 active members at every look.
    let looks = Arc::new(AtomicU64::new(0));
    let lost = Arc::new(Mutex::new(Vec::new()));
    let watcher = {
        let (c, stop, looks, lost) = (c.clone(), stop.clone(), looks.clone(), lost.clone());
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                for n in &c.nodes {
                    let seen = scrape(n).and_then(|b| active(&b));
                    if seen != Some(3.0) {
                        lost.lock().unwrap().push((n.url(), seen));
                    }
                }
                looks.fetch_add(1, Ordering::Relaxed);
                std::thread::sleep(Duration::from_millis(50));
            }
        })
    };
    // Waits until the watcher has looked `count` more times: failure detection drops a silent
    // member within about 3 s, so a step that broke gossip shows in that many looks.
    let observe = |count: u64| {
        let from = looks.load(Ordering::Relaxed);
        wait_for("the watcher's looks", DEADLINE, || {
            looks.load(Ordering::Relaxed) >= from + count
        });
    };
    observe(20);

    let steps: [&[&str]; 3] = [&[&old, &new], &[&new, &old], &[&new]];
    for (i, keys) in steps.iter().enumerate() {
        // One node at a time, as a rollout does.
        for n in 0..3 {
            write_keys(&file(n), keys);
        }
        let want = (i + 1) as f64;
        for n in &c.nodes {
            wait_for("every node to reload its key file", DEADLINE, || {
                scrape(n).is_some_and(|b| {
                    counter(
                        &b,
                        "pushgate_cluster_gossip_key_reloads_total{result=\"success\"}",
                    ) >= want
                })
            });
        }
        observe(60);
    }
    let before = pushed.load(Ordering::Relaxed);
    wait_for("pushes after the rotation", DEADLINE, || {
        pushed.load(Ordering::Relaxed) >= before + 20
    });
    stop.store(true, Ordering::Relaxed);
    pusher.join().expect("pusher");
    watcher.join().expect("watcher");

    assert_eq!(
        *failures.lock().unwrap(),
        Vec::<(u64, String)>::new(),
        "failed pushes"
    );
    assert_eq!(
        *lost.lock().unwrap(),
        Vec::<(String, Option<f64>)>::new(),
        "members lost"
    );
    for n in &c.nodes {
        let body = scrape(n).expect("scrape");
        for reason in ["unsealed", "unopened", "garbage", "oversize"] {
            let series = format!("pushgate_cluster_gossip_dropped_total{{reason=\"{reason}\"}}");
            assert_eq!(counter(&body, &series), 0.0, "{} dropped {reason}", n.url());
        }
        assert_eq!(
            counter(
                &body,
                "pushgate_cluster_gossip_key_reloads_total{result=\"error\"}"
            ),
            0.0
        );
    }
    // Every acknowledged push is served with its latest value, by every node.
    let acked = acked.lock().unwrap().clone();
    assert!(
        pushed.load(Ordering::Relaxed) > 100,
        "too few pushes to mean anything"
    );
    for n in &c.nodes {
        wait_for(
            "every acknowledged push in the merged view",
            DEADLINE,
            || {
                let Some(body) = scrape(n) else { return false };
                acked.iter().all(|(job, v)| {
                    body.lines().any(|l| {
                        l.starts_with("gk_value{")
                            && l.contains(&format!("job=\"{job}\""))
                            && l.ends_with(&format!(" {v}"))
                    })
                })
            },
        );
    }
}
