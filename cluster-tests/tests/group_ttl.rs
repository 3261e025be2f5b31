//! Group expiry in a cluster of real processes on loopback: a group pushed with a short TTL
//! (`Pushgate-Group-TTL`) leaves every node's view at the same moment, since each works out the
//! moment from the replicated push time, and an owner stopped before the expiry
//! and restarted after it with its persistence file does not bring the group back.

use std::time::{Duration, Instant};

use cluster_tests::{http, http_answer_with, wait_for, Cluster};

/// Anti-entropy every second (10 s by default), so a stale copy would travel within the test.
const AE: &str = "--cluster.anti-entropy-interval=1s";
const READY: Duration = Duration::from_secs(60);

fn put(base: &str, job: &str, ttl: Option<&str>) {
    let headers: Vec<(&str, &str)> = ttl.map(|t| ("Pushgate-Group-TTL", t)).into_iter().collect();
    let path = format!("/metrics/job/{job}");
    let body = format!("ttl_{job} 1\n");
    let a = http_answer_with("PUT", base, &path, &headers, body.as_bytes(), READY)
        .expect("the push is answered");
    assert_eq!(a.status, 200, "{job}: {}", a.body);
}

/// Whether the node's merged scrape shows `job`'s metric.
/// The jobs of the groups in a node's persistence file (none while it is absent or being
/// replaced).
fn persisted_jobs(path: &std::path::Path) -> Vec<String> {
    use pushgate::exposition::NameScheme;
    use pushgate::store::persistence::read_file;
    let Ok(Some((decoded, _))) = read_file(path, NameScheme::Legacy) else {
        return Vec::new();
    };
    decoded
        .groups
        .iter()
        .filter_map(|g| g.key.labels().iter().find(|(n, _)| n == "job"))
        .map(|(_, v)| v.clone())
        .collect()
}

fn shows(base: &str, job: &str) -> bool {
    let (status, body) = http("GET", base, "/metrics", b"").expect("scrape");
    assert_eq!(status, 200, "{body}");
    body.contains(&format!("ttl_{job}{{"))
}

/// Reconciliation rounds `base` has run (all results): a count to wait on instead of a time.
fn rounds(base: &str) -> f64 {
    let (status, body) = http("GET", base, "/metrics", b"").expect("scrape");
    assert_eq!(status, 200, "{body}");
    body.lines()
        .filter_map(|l| l.strip_prefix("pushgate_antientropy_rounds_total{"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// Waits until every node has run `more` reconciliation rounds after this call, checking
/// `check` on every node all the while.
fn through_rounds(urls: &[String], more: f64, check: impl Fn(&str)) {
    let from: Vec<f64> = urls.iter().map(|u| rounds(u)).collect();
    wait_for(
        "every node to run more reconciliation rounds",
        READY,
        || {
            for u in urls {
                check(u);
            }
            urls.iter().zip(&from).all(|(u, f)| rounds(u) >= f + more)
        },
    );
}

/// Every node works out the expiry from the replicated push time, so once one node's view has
/// lost the group, every node's next view lacks it too (an order, not a time bound); none drops
/// it before the TTL.
#[test]
fn a_group_leaves_every_node_at_the_same_expiry() {
    let c = Cluster::start(3, &[AE]);
    let urls: Vec<String> = c.nodes.iter().map(|n| n.url()).collect();
    // Through the node that does not own it: the TTL travels with the forwarded write to the
    // primary, and with the replica to the other owner.
    let owners = c.owners("short", 2);
    let via = (0..3).find(|i| !owners.contains(i)).unwrap();
    let pushed = Instant::now();
    put(&urls[via], "short", Some("2s"));
    put(&urls[via], "kept", None);
    for u in &urls {
        assert!(shows(u, "short") && shows(u, "kept"), "{u}");
    }
    let mut first_gone = None;
    wait_for("some node to drop the group after its TTL", READY, || {
        first_gone = urls.iter().position(|u| !shows(u, "short"));
        first_gone.is_some()
    });
    let elapsed = pushed.elapsed();
    assert!(
        elapsed >= Duration::from_millis(1900),
        "node {first_gone:?} dropped the group {elapsed:?} after a 2 s TTL"
    );
    for (i, u) in urls.iter().enumerate() {
        assert!(
            !shows(u, "short"),
            "node {i} still showed the group after node {first_gone:?} had dropped it"
        );
    }
    // Each owner removed its copy and counted it; anti-entropy rounds do not bring it back.
    for i in owners {
        let node = &c.nodes[i];
        wait_for("the owner to count the expiry", READY, || {
            node.metric("pushgate_groups_expired_total") == Some(1.0)
        });
    }
    through_rounds(&urls, 2.0, |u| {
        assert!(!shows(u, "short") && shows(u, "kept"), "{u}");
    });
}

#[test]
fn an_owner_down_through_the_expiry_does_not_bring_the_group_back() {
    let dir = tempfile::tempdir().expect("temp dir");
    let file = format!("--persistence.file={}/node{{n}}.db", dir.path().display());
    let mut c = Cluster::start(3, &[AE, file.as_str(), "--persistence.interval=200ms"]);
    let down = c.owners("victim", 2)[0];
    let via = c.nodes[(down + 1) % 3].url();
    let pushed = Instant::now();
    put(&via, "victim", Some("3s"));
    put(&via, "kept", None);
    let path = dir.path().join(format!("node{down}.db"));
    wait_for("the owner to persist the group", READY, || {
        persisted_jobs(&path).iter().any(|j| j == "victim")
    });
    c.nodes[down].kill9();
    // The precondition, checked on the file the owner will restart from (not on how fast it
    // was written): it went down holding the group, so it comes back with a copy that has
    // expired everywhere else meanwhile.
    let held = persisted_jobs(&path);
    assert!(
        held.iter().any(|j| j == "victim"),
        "the owner's file lost the group before it went down: {held:?}"
    );
    let expiry = Duration::from_secs(3) + Duration::from_millis(300);
    std::thread::sleep(expiry.saturating_sub(pushed.elapsed()));
    for n in c.live() {
        assert!(!shows(&n.url(), "victim"), "{}", n.url());
    }
    c.nodes[down].restart();
    let node = &c.nodes[down];
    wait_for("the owner to be ready again", READY, || node.is_ready());
    // More than two anti-entropy rounds: the returning node's old copy spreads nowhere, and
    // nothing is pulled back to it.
    let urls: Vec<String> = c.live().map(|n| n.url()).collect();
    through_rounds(&urls, 2.0, |u| {
        assert!(!shows(u, "victim"), "{u} shows the expired group");
        assert!(shows(u, "kept"), "{u} lost a live group");
    });
    let (status, api) = http("GET", &c.nodes[down].url(), "/api/v1/metrics", b"").unwrap();
    assert_eq!(status, 200);
    assert!(!api.contains("victim") && api.contains("kept"), "{api}");
}
