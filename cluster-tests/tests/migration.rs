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
    dir: tempfile::TempDir,
}

impl Upstream {
    fn start() -> Upstream {
        let up = Upstream::spawn(tempfile::tempdir().unwrap(), "http", &[]);
        wait_for("upstream ready", Duration::from_secs(15), || {
            matches!(http("GET", &up.url, "/-/ready", b""), Ok((200, _)))
        });
        up
    }

    fn spawn(dir: tempfile::TempDir, scheme: &str, extra: &[String]) -> Upstream {
        let bin = std::env::var_os("UPSTREAM_BIN")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from(UPSTREAM));
        assert!(
            bin.exists(),
            "the upstream Pushgateway {} is missing: apt-get install prometheus-pushgateway",
            bin.display()
        );
        let port = free_port();
        let child = Command::new(bin)
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .arg(format!(
                "--persistence.file={}",
                dir.path().join("up.data").display()
            ))
            .args(extra)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("upstream should start");
        Upstream {
            child,
            url: format!("{scheme}://127.0.0.1:{port}"),
            dir,
        }
    }

    /// Stops upstream (SIGTERM: it writes its file) and starts it again on the same file with
    /// `--web.config.file` (TLS): ready once it accepts connections.
    fn restart_with_tls(mut self, web_config: &std::path::Path) -> Upstream {
        let ok = Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status()
            .is_ok_and(|s| s.success());
        assert!(ok, "kill -TERM upstream");
        let _ = self.child.wait();
        // The directory with upstream's file goes to the new process.
        let dir = std::mem::replace(&mut self.dir, tempfile::tempdir().unwrap());
        let flag = format!("--web.config.file={}", web_config.display());
        let up = Upstream::spawn(dir, "https", &[flag]);
        let addr = up.url.trim_start_matches("https://").to_owned();
        wait_for("upstream accepting", Duration::from_secs(15), || {
            std::net::TcpStream::connect(&addr).is_ok()
        });
        up
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

/// Fills upstream with `groups` groups (every third keyed by an @base64 value with a `/`),
/// plus a group a refused push left; returns upstream's pushed samples.
/// Every node of `c` serves exactly the pushed samples `want`.
fn every_node_serves(c: &Cluster, want: &[String]) {
    for node in &c.nodes {
        assert_eq!(
            pushed_samples(&scrape(&node.url())),
            want,
            "node {}",
            node.id()
        );
    }
}

fn fill(up: &Upstream, groups: usize) -> Vec<String> {
    for i in 0..groups {
        let body = format!(
            "# TYPE batch_last_success gauge\nbatch_last_success{{step=\"\"}} {i}\n\
             # TYPE batch_runs_total counter\nbatch_runs_total {}\n\
             # TYPE batch_seconds histogram\nbatch_seconds_bucket{{le=\"1\"}} 1\nbatch_seconds_bucket{{le=\"+Inf\"}} 2\n\
             batch_seconds_sum 3.5\nbatch_seconds_count 2\n",
            i * 3
        );
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
    want
}

/// Runs `pushgate import` with `args`: whether it succeeded, and what it said.
fn import(args: &[String]) -> (bool, String) {
    let out = Command::new(binary())
        .arg("import")
        .args(args)
        .output()
        .expect("pushgate import should run");
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), said)
}

#[test]
fn a_live_import_lands_every_group_on_its_owners_with_its_push_times() {
    let up = Upstream::start();
    let groups = 40;
    let want = fill(&up, groups);

    let c = Cluster::start(3, &[]);
    let (ok, said) = import(&[
        format!("--from={}", up.url),
        format!("--to={}", c.nodes[1].url()),
    ]);
    assert!(ok, "{said}");
    assert!(
        said.contains(&format!("imported {} groups", groups + 1)),
        "{said}"
    );

    // Every node serves every group, push and failure times as upstream had them.
    every_node_serves(&c, &want);
    // R = 2 copies of each group, held by its owners (the handoff of a stand-in's copy would
    // leave the count the same).
    let held: f64 = c
        .nodes
        .iter()
        .map(|n| n.metric("pushgate_groups").expect("pushgate_groups"))
        .sum();
    assert_eq!(held, 2.0 * (groups + 1) as f64);

    // Run again through another node: nothing changes.
    let (ok, said) = import(&[
        format!("--from={}", up.url),
        format!("--to={}", c.nodes[2].url()),
    ]);
    assert!(ok, "{said}");
    for node in &c.nodes {
        let body = scrape(&node.url());
        assert_eq!(pushed_samples(&body), want, "node {}", node.id());
        assert_eq!(
            metric_value(&body, "pushgate_groups").map(|g| g > 0.0),
            Some(true)
        );
    }
}

/// exporter-toolkit's test pair: user `dave`, password `dave123`.
const DAVE_HASH: &str = "$2y$10$2UXri9cIDdgeKjBo4Rlpx.U3ZLDV8X1IxKmsfOvhcM5oXQt/mLmXq";

#[test]
fn a_live_import_reads_an_upstream_behind_tls_client_certificates_and_basic_auth() {
    let up = Upstream::start();
    let want = fill(&up, 6);
    // Upstream again on its file, now serving only TLS clients with a certificate of this CA
    // and basic auth.
    let ca = cluster_tests::pki::Ca::new();
    let dir = tempfile::tempdir().unwrap();
    let file = |name: &str, text: &str| {
        let p = dir.path().join(name);
        std::fs::write(&p, text).unwrap();
        p.display().to_string()
    };
    let (server_cert, server_key) = ca.issue(&["127.0.0.1"]);
    let (client_cert, client_key) = ca.issue(&["importer"]);
    let ca_file = file("ca.pem", &ca.pem());
    let web = format!(
        "tls_server_config:\n  cert_file: {}\n  key_file: {}\n  client_auth_type: RequireAndVerifyClientCert\n  client_ca_file: {ca_file}\nbasic_auth_users:\n  dave: {DAVE_HASH}\n",
        file("server.pem", &server_cert),
        file("server.key", &server_key),
    );
    let up = up.restart_with_tls(std::path::Path::new(&file("web.yml", &web)));

    let c = Cluster::start(3, &[]);
    let mut args = vec![
        format!("--from={}", up.url),
        format!("--to={}", c.nodes[0].url()),
        "--from.username=dave".to_owned(),
        format!("--from.password-file={}", file("password", "dave123\n")),
        format!("--from.tls.cert-file={}", file("client.pem", &client_cert)),
        format!("--from.tls.key-file={}", file("client.key", &client_key)),
    ];
    // The server certificate is not from the system's roots: refused, nothing imported.
    let (ok, said) = import(&args);
    assert!(!ok, "{said}");
    assert!(said.contains("TLS handshake"), "{said}");
    assert!(pushed_samples(&scrape(&c.nodes[0].url())).is_empty());

    args.push(format!("--from.tls.ca-file={ca_file}"));
    let (ok, said) = import(&args);
    assert!(ok, "{said}");
    every_node_serves(&c, &want);
}
