//! `pushgate import` from a running upstream Pushgateway (Debian's 1.5.1) into a 3-node cluster:
//! every group lands on its R owners like a push and every node serves every group with its
//! original push and failure times.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use base64::Engine;
use cluster_tests::{binary, free_port, http, metric_value, scrape, wait_for, Cluster};

const UPSTREAM: &str = "/usr/bin/prometheus-pushgateway";

/// The upstream gateway, killed on drop.
struct Upstream {
    child: Child,
    url: String,
    _dir: tempfile::TempDir,
}

impl Upstream {
    fn start() -> Upstream {
        let bin = std::env::var_os("UPSTREAM_BIN")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from(UPSTREAM));
        assert!(
            bin.exists(),
            "the upstream Pushgateway {} is missing: apt-get install prometheus-pushgateway",
            bin.display()
        );
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let child = Command::new(bin)
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .arg(format!(
                "--persistence.file={}",
                dir.path().join("up.data").display()
            ))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("upstream should start");
        let url = format!("http://127.0.0.1:{port}");
        wait_for("upstream ready", Duration::from_secs(15), || {
            matches!(http("GET", &url, "/-/ready", b""), Ok((200, _)))
        });
        Upstream {
            child,
            url,
            _dir: dir,
        }
    }
}

impl Drop for Upstream {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The sample lines of a scrape that are not a gateway's own metrics, sorted.
fn pushed_samples(body: &str) -> Vec<String> {
    const OWN: [&str; 4] = ["pushgateway_", "process_", "go_", "pushgate_"];
    let mut lines: Vec<String> = body
        .lines()
        .filter(|l| !l.starts_with('#') && !OWN.iter().any(|p| l.starts_with(p)))
        .map(str::to_owned)
        .collect();
    lines.sort();
    lines
}

#[test]
fn a_live_import_lands_every_group_on_its_owners_with_its_push_times() {
    let up = Upstream::start();
    let groups = 40;
    for i in 0..groups {
        let body = format!(
            "# TYPE batch_last_success gauge\nbatch_last_success{{step=\"\"}} {i}\n\
             # TYPE batch_runs_total counter\nbatch_runs_total {}\n\
             # TYPE batch_seconds histogram\nbatch_seconds_bucket{{le=\"1\"}} 1\nbatch_seconds_bucket{{le=\"+Inf\"}} 2\n\
             batch_seconds_sum 3.5\nbatch_seconds_count 2\n",
            i * 3
        );
        // Grouping keys with a `/` in a value (only expressible as @base64) for every third.
        let path = if i % 3 == 0 {
            let value = base64::engine::general_purpose::URL_SAFE.encode(format!("/dir/{i}"));
            format!("/metrics/job/mig/path@base64/{value}")
        } else {
            format!("/metrics/job/mig/instance/i{i}")
        };
        let (st, msg) = http("PUT", &up.url, &path, body.as_bytes()).unwrap();
        assert_eq!(st, 200, "{path}: {msg}");
        if i % 7 == 0 {
            // Later groups get later push times, so that each keeps its own.
            std::thread::sleep(Duration::from_millis(15));
        }
    }
    // A refused push: a group holding only its failure time.
    let (st, _) = http(
        "PUT",
        &up.url,
        "/metrics/job/mig/instance/failed",
        b"# TYPE batch_runs_total gauge\nbatch_runs_total 1\n",
    )
    .unwrap();
    assert_eq!(st, 400);
    let want = pushed_samples(&scrape(&up.url));
    let push_times = want
        .iter()
        .filter(|l| l.starts_with("push_time_seconds{"))
        .count();
    assert_eq!(push_times, groups + 1);

    let c = Cluster::start(3, &[]);
    let out = Command::new(binary())
        .arg("import")
        .arg(format!("--from={}", up.url))
        .arg(format!("--to={}", c.nodes[1].url()))
        .output()
        .expect("pushgate import should run");
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{said}");
    assert!(
        said.contains(&format!("imported {} groups", groups + 1)),
        "{said}"
    );

    // Every node serves every group, push and failure times as upstream had them.
    for node in &c.nodes {
        assert_eq!(
            pushed_samples(&scrape(&node.url())),
            want,
            "node {}",
            node.id()
        );
    }
    // R = 2 copies of each group, held by its owners (the handoff of a stand-in's copy would
    // leave the count the same).
    let held: f64 = c
        .nodes
        .iter()
        .map(|n| n.metric("pushgate_groups").expect("pushgate_groups"))
        .sum();
    assert_eq!(held, 2.0 * (groups + 1) as f64);

    // Run again through another node: nothing changes.
    let again = Command::new(binary())
        .arg("import")
        .arg(format!("--from={}", up.url))
        .arg(format!("--to={}", c.nodes[2].url()))
        .status()
        .expect("pushgate import should run");
    assert!(again.success());
    for node in &c.nodes {
        let body = scrape(&node.url());
        assert_eq!(pushed_samples(&body), want, "node {}", node.id());
        assert_eq!(
            metric_value(&body, "pushgate_groups").map(|g| g > 0.0),
            Some(true)
        );
    }
}
