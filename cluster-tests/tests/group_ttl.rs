//! Group expiry in a cluster of real processes on loopback: a group pushed with a short TTL
//! (`Pushgate-Group-TTL`) leaves every node's view within a second of the others, since each
//! works out the moment from the replicated push time, and an owner stopped before the expiry
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
fn shows(base: &str, job: &str) -> bool {
    let (status, body) = http("GET", base, "/metrics", b"").expect("scrape");
    assert_eq!(status, 200, "{body}");
    body.contains(&format!("ttl_{job}{{"))
}

#[test]
fn a_group_leaves_every_node_within_a_second_of_the_others() {
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
    let mut gone: Vec<Option<Duration>> = vec![None; urls.len()];
    while gone.iter().any(Option::is_none) && pushed.elapsed() < Duration::from_secs(10) {
        for (i, u) in urls.iter().enumerate() {
            let shown = shows(u, "short");
            match gone[i] {
                None if !shown => gone[i] = Some(pushed.elapsed()),
                Some(at) => assert!(!shown, "node {i} showed the group again after {at:?}"),
                None => {}
            }
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let gone: Vec<Duration> = gone
        .into_iter()
        .map(|g| g.expect("every node drops the group within 10 s"))
        .collect();
    let (first, last) = (gone.iter().min().unwrap(), gone.iter().max().unwrap());
    assert!(
        *first >= Duration::from_millis(1900),
        "left before its TTL: {gone:?}"
    );
    assert!(*last - *first < Duration::from_secs(1), "{gone:?}");
    // Each owner removed its copy and counted it; anti-entropy rounds do not bring it back.
    for i in owners {
        let node = &c.nodes[i];
        wait_for("the owner to count the expiry", READY, || {
            node.metric("pushgate_groups_expired_total") == Some(1.0)
        });
    }
    let watch = Instant::now();
    while watch.elapsed() < Duration::from_millis(2500) {
        for u in &urls {
            assert!(!shows(u, "short") && shows(u, "kept"), "{u}");
        }
        std::thread::sleep(Duration::from_millis(250));
    }
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
        std::fs::read(&path).is_ok_and(|b| b.windows(6).any(|w| w == b"victim"))
    });
    assert!(
        pushed.elapsed() < Duration::from_secs(3),
        "persisted too late to test"
    );
    c.nodes[down].kill9();
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
    let watch = Instant::now();
    while watch.elapsed() < Duration::from_millis(2500) {
        for n in c.live() {
            let u = n.url();
            assert!(!shows(&u, "victim"), "{u} shows the expired group");
            assert!(shows(&u, "kept"), "{u} lost a live group");
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    let (status, api) = http("GET", &c.nodes[down].url(), "/api/v1/metrics", b"").unwrap();
    assert_eq!(status, 200);
    assert!(!api.contains("victim") && api.contains("kept"), "{api}");
}
