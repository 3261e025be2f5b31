//! The cluster lifecycle with real processes on loopback: growing and shrinking under pushes,
//! rolling restarts, kill -9 with a persistence file, deletes while an owner is down, and a hung
//! node (SIGSTOP/SIGCONT) standing in for a partition.
//!
//! A node's local holdings are checked through its self-metrics: `pushgate_groups` (groups it
//! holds) and `pushgate_hints_pending` (groups it holds without owning them). With every node's
//! hints at 0 and the groups summing to R × the number of groups, every group is held by exactly
//! its R owners: nothing lost, no stale copy left on a former owner.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use cluster_tests::{http, http_answer, http_timeout, metric_value, wait_for, Cluster, Node};

/// Anti-entropy every second in these tests (10 s by default).
const AE: &str = "--cluster.anti-entropy-interval=1s";
const CONVERGE: Duration = Duration::from_secs(60);
/// A short drain (10 s by default): the pushers' checker notices an unready node within 0.1 s.
const DRAIN: &str = "--cluster.drain-period=1s";

/// `lc_value{job=...}` sample values of a scrape, by job.
fn values(body: &str) -> BTreeMap<String, u64> {
    body.lines()
        .filter(|l| l.starts_with("lc_value{"))
        .filter_map(|l| {
            let job = l.split("job=\"").nth(1)?.split('"').next()?.to_owned();
            Some((job, l.rsplit(' ').next()?.parse().ok()?))
        })
        .collect()
}

fn merged(node: &Node) -> BTreeMap<String, u64> {
    let (status, body) = http("GET", &node.url(), "/metrics", b"").expect("scrape");
    assert_eq!(status, 200, "{body}");
    values(&body)
}

fn put(base: &str, job: &str, v: u64) -> bool {
    let body = format!("lc_value {v}\n");
    matches!(
        http("PUT", base, &format!("/metrics/job/{job}"), body.as_bytes()),
        Ok((200, _))
    )
}

/// After a hung node resumed: waits until the cluster holds 2 copies of each of `groups`, then
/// every node's merged view has exactly `groups` groups, each with value `v`.
fn converge_after_resume(c: &Cluster, groups: usize, v: u64) {
    wait_for("convergence after the node came back", CONVERGE, || {
        converged(c, 2, groups)
    });
    for node in c.live() {
        let got = merged(node);
        assert_eq!(got.len(), groups, "node {}: {got:?}", node.url());
        assert!(
            got.values().all(|&x| x == v),
            "node {}: {got:?}",
            node.url()
        );
    }
}

/// Every live node reports no hint and the live nodes hold `r` copies of each of `groups`.
fn converged(c: &Cluster, r: usize, groups: usize) -> bool {
    let live: Vec<&Node> = c.live().collect();
    let copies = r.min(live.len()) * groups;
    let mut total = 0.0;
    for n in &live {
        let Ok((200, body)) = http("GET", &n.url(), "/metrics", b"") else {
            return false;
        };
        if metric_value(&body, "pushgate_hints_pending") != Some(0.0) {
            return false;
        }
        let want = format!(
            "pushgate_cluster_members{{state=\"active\"}} {}\n",
            live.len()
        );
        if !body.contains(&want) {
            return false;
        }
        total += metric_value(&body, "pushgate_groups").unwrap_or(0.0);
    }
    total == copies as f64
}

/// Pushes `lc_value` to `groups` jobs in turn the way a client behind a load balancer does: a
/// checker asks every node's `/-/ready` every 100 ms (haproxy's `inter 100ms fall 1 rise 1`)
/// and each push goes to a node whose last check answered 200. Every push such a node does not
/// answer 200 (another status, or no answer at all) is recorded as a refusal: while R nodes are
/// up, none may be refused (a node turned unready keeps serving for its drain period, longer
/// than the checker takes to notice). Remembers the last acknowledged value of each job.
struct Pusher {
    nodes: Arc<Mutex<Vec<String>>>,
    stop: Arc<AtomicBool>,
    checker: JoinHandle<()>,
    handle: JoinHandle<(BTreeMap<String, u64>, Vec<String>)>,
}

/// How often the pushers' checker asks every node's `/-/ready`.
const CHECK_INTERVAL: Duration = Duration::from_millis(100);

impl Pusher {
    fn start(nodes: Vec<String>, groups: usize) -> Pusher {
        let nodes = Arc::new(Mutex::new(nodes));
        let ready: Arc<Mutex<Vec<String>>> = Arc::default();
        let stop = Arc::new(AtomicBool::new(false));
        let checker = {
            let (nodes, ready, stop) = (nodes.clone(), ready.clone(), stop.clone());
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    let all = nodes.lock().expect("node list lock").clone();
                    let up: Vec<String> = all
                        .into_iter()
                        .filter(|url| {
                            matches!(
                                http_timeout("GET", url, "/-/ready", b"", Duration::from_secs(1)),
                                Ok((200, _))
                            )
                        })
                        .collect();
                    *ready.lock().expect("ready list lock") = up;
                    std::thread::sleep(CHECK_INTERVAL);
                }
            })
        };
        let s = stop.clone();
        let handle = std::thread::spawn(move || {
            let mut acked = BTreeMap::new();
            let mut refused = Vec::new();
            let mut v: u64 = 0;
            while !s.load(Ordering::Relaxed) {
                let url = {
                    let list = ready.lock().expect("ready list lock");
                    (!list.is_empty()).then(|| list[v as usize % list.len()].clone())
                };
                let Some(url) = url else {
                    std::thread::sleep(Duration::from_millis(10));
                    continue;
                };
                v += 1;
                let job = format!("g{}", v as usize % groups);
                let body = format!("lc_value {v}\n");
                let path = format!("/metrics/job/{job}");
                match http("PUT", &url, &path, body.as_bytes()) {
                    Ok((200, _)) => {
                        acked.insert(job, v);
                    }
                    other => refused.push(format!("{url} {job}={v}: {other:?}")),
                }
                // Pacing, not waiting: leaves CPU to the nodes on a small machine.
                std::thread::sleep(Duration::from_millis(3));
            }
            (acked, refused)
        });
        Pusher {
            nodes,
            stop,
            checker,
            handle,
        }
    }
    /// The nodes the checker asks (a node not listed gets no push, whatever it answers).
    fn set_urls(&self, urls: Vec<String>) {
        *self.nodes.lock().expect("node list lock") = urls;
    }
    /// Stops pushing; the last acknowledged value of each job, and every refusal.
    fn finish(self) -> (BTreeMap<String, u64>, Vec<String>) {
        self.stop.store(true, Ordering::Relaxed);
        let _ = self.checker.join();
        self.handle.join().expect("pusher thread")
    }
}

fn live_urls(c: &Cluster) -> Vec<String> {
    c.live().map(Node::url).collect()
}

/// Every acknowledged push is visible through every live node (the value or a later one).
fn assert_nothing_lost(c: &Cluster, acked: &BTreeMap<String, u64>) {
    for node in c.live() {
        let got = merged(node);
        for (job, v) in acked {
            let seen = got.get(job).copied();
            assert!(
                seen.is_some_and(|s| s >= *v),
                "node {}: job {job} acknowledged at {v}, scrape has {seen:?}",
                node.url()
            );
        }
    }
}

/// Grows 1 -> 3 -> 5 and shrinks 5 -> 3 (SIGTERM) under pushes sent the way a balancer
/// routes them (see [`Pusher`]): from the moment 3 nodes are up (R = 2), no push is refused.
#[test]
fn grow_one_three_five_then_shrink_to_three_while_pushing() {
    let groups = 150;
    let mut c = Cluster::start(1, &[AE, DRAIN]);
    // One node is fewer than R: its pushes may be refused, so they are not counted.
    let below_r = Pusher::start(live_urls(&c), groups);
    wait_for("the first pushes", Duration::from_secs(30), || {
        merged(&c.nodes[0]).len() >= groups
    });
    for _ in 0..2 {
        c.add_node(&[AE, DRAIN]);
        below_r.set_urls(live_urls(&c));
    }
    let (mut acked, _) = below_r.finish();
    wait_for("3 nodes to converge", CONVERGE, || converged(&c, 2, groups));
    let pusher = Pusher::start(live_urls(&c), groups);
    for _ in 0..2 {
        // The checker finds the new node ready and sends it pushes from then on.
        let i = c.spawn_node(&[AE, DRAIN]);
        pusher.set_urls(c.nodes.iter().map(Node::url).collect());
        let node = &c.nodes[i];
        wait_for("the new node to be ready", CONVERGE, || node.is_ready());
    }
    wait_for("5 nodes to converge", CONVERGE, || converged(&c, 2, groups));
    for i in [4, 3] {
        assert!(
            c.nodes[i].terminate(Duration::from_secs(40)),
            "graceful exit"
        );
    }
    let (later, refused) = pusher.finish();
    assert!(
        refused.is_empty(),
        "{} refused: {refused:#?}",
        refused.len()
    );
    acked.extend(later);
    assert_eq!(acked.len(), groups);
    wait_for("3 nodes to converge after shrinking", CONVERGE, || {
        converged(&c, 2, groups)
    });
    assert_nothing_lost(&c, &acked);
}

fn temp_dir(name: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    let dir = std::env::temp_dir().join(format!("pushgate-{name}-{}-{nanos}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir.display().to_string()
}

/// Restarts every node in turn (SIGTERM, start, wait ready) under pushes sent the way a
/// balancer routes them (see [`Pusher`]): no push is refused and none acknowledged is lost.
#[test]
fn rolling_restart_under_pushes_loses_nothing() {
    let groups = 120;
    let dir = temp_dir("rolling");
    let file = format!("--persistence.file={dir}/node{{n}}.db");
    let extra = [AE, DRAIN, file.as_str(), "--persistence.interval=1s"];
    let mut c = Cluster::start(3, &extra);
    let pusher = Pusher::start(live_urls(&c), groups);
    wait_for("the first pushes", Duration::from_secs(30), || {
        merged(&c.nodes[0]).len() >= groups
    });
    for i in 0..3 {
        assert!(
            c.nodes[i].terminate(Duration::from_secs(40)),
            "graceful exit"
        );
        c.nodes[i].restart();
        let node = &c.nodes[i];
        wait_for("the restarted node to be ready", CONVERGE, || {
            node.is_ready()
        });
    }
    let (acked, refused) = pusher.finish();
    assert!(
        refused.is_empty(),
        "{} refused: {refused:#?}",
        refused.len()
    );
    assert_eq!(acked.len(), groups);
    wait_for("convergence after the rolling restart", CONVERGE, || {
        converged(&c, 2, groups)
    });
    assert_nothing_lost(&c, &acked);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn kill_nine_and_restart_with_persistence_converges() {
    let groups = 200;
    let dir = temp_dir("kill9");
    let file = format!("--persistence.file={dir}/node{{n}}.db");
    let extra = [AE, file.as_str(), "--persistence.interval=200ms"];
    let mut c = Cluster::start(3, &extra);
    for i in 0..groups {
        assert!(put(&c.nodes[i % 3].url(), &format!("g{i}"), 1));
    }
    wait_for(
        "the first round of pushes to be persisted",
        CONVERGE,
        || {
            converged(&c, 2, groups)
                && c.nodes[0]
                    .metric("pushgate_persistence_writes_total{result=\"success\"}")
                    .is_some_and(|n| n >= 1.0)
        },
    );
    c.nodes[0].kill9();
    // Node 0 misses every one of these writes.
    for i in 0..groups {
        assert!(put(&c.nodes[1 + i % 2].url(), &format!("g{i}"), 2));
    }
    c.nodes[0].restart();
    let node = &c.nodes[0];
    wait_for("the restarted node to be ready", CONVERGE, || {
        node.is_ready()
    });
    // Documented bound (docs/operations.md): the join pull plus one anti-entropy interval
    // (1 s + jitter here); the deadline leaves room for a slow, shared machine.
    wait_for(
        "convergence after the restart",
        Duration::from_secs(20),
        || converged(&c, 2, groups),
    );
    // Without node 1, every group is still held (R = 2) and in its newest version: node 0 holds
    // the writes it missed.
    c.nodes[1].kill9();
    for i in [0, 2] {
        let got = merged(&c.nodes[i]);
        assert_eq!(got.len(), groups, "node {i}");
        assert!(got.values().all(|&v| v == 2), "node {i}: {got:?}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn delete_while_an_owner_is_down_stays_deleted() {
    let groups = 50;
    let dir = temp_dir("delete");
    let file = format!("--persistence.file={dir}/node{{n}}.db");
    let extra = [AE, file.as_str(), "--persistence.interval=200ms"];
    let mut c = Cluster::start(3, &extra);
    for i in 0..groups {
        assert!(put(&c.nodes[i % 3].url(), &format!("g{i}"), 1));
    }
    assert!(put(&c.nodes[0].url(), "victim", 1));
    let down = c.owners("victim", 2)[0];
    let file = format!("{dir}/node{down}.db");
    wait_for("an owner to persist the group", CONVERGE, || {
        std::fs::read(&file).is_ok_and(|b| b.windows(6).any(|w| w == b"victim"))
    });
    c.nodes[down].kill9();
    let via = (down + 1) % 3;
    let (status, body) = http("DELETE", &c.nodes[via].url(), "/metrics/job/victim", b"").unwrap();
    assert_eq!(status, 202, "{body}");
    c.nodes[down].restart();
    let node = &c.nodes[down];
    wait_for("the owner to be ready again", CONVERGE, || node.is_ready());
    wait_for("convergence after the owner returned", CONVERGE, || {
        converged(&c, 2, groups)
    });
    for node in c.live() {
        let got = merged(node);
        assert!(!got.contains_key("victim"), "node {}: {got:?}", node.url());
        assert_eq!(got.len(), groups);
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// Loopback processes cannot be cut apart without root, so a hung node (SIGSTOP, then
/// SIGCONT) stands in for a partition: the other side keeps taking writes and deletes, the
/// hung node comes back with stale copies and everything converges to the newest version.
#[test]
fn hung_node_comes_back_and_converges() {
    let groups = 100;
    let c = Cluster::start(3, &[AE]);
    for i in 0..groups {
        assert!(put(&c.nodes[i % 3].url(), &format!("g{i}"), 1));
    }
    wait_for("initial convergence", CONVERGE, || converged(&c, 2, groups));
    c.nodes[0].signal("STOP");
    for i in [1, 2] {
        let url = c.nodes[i].url();
        wait_for(
            "the hung node to leave the ring",
            CONVERGE,
            || matches!(http("GET", &url, "/metrics", b""), Ok((200, b)) if b.contains("pushgate_cluster_members{state=\"active\"} 2\n")),
        );
    }
    for i in 0..groups {
        let url = c.nodes[1 + i % 2].url();
        if i % 10 == 0 {
            let (st, body) = http("DELETE", &url, &format!("/metrics/job/g{i}"), b"").unwrap();
            assert_eq!(st, 202, "{body}");
        } else {
            assert!(put(&url, &format!("g{i}"), 2));
        }
    }
    c.nodes[0].signal("CONT");
    let live = groups - groups / 10;
    converge_after_resume(&c, live, 2);
    // The resumed node's own copies were repaired (newer versions, deletes): without node 1 it
    // is the only holder of the groups it co-owned with node 1.
    let mut c = c;
    c.nodes[1].kill9();
    for i in [0, 2] {
        let got = merged(&c.nodes[i]);
        assert_eq!(got.len(), live, "node {i}: {got:?}");
        assert!(got.values().all(|&v| v == 2), "node {i}: {got:?}");
    }
}

/// Pushes through the other nodes in the seconds after a node hangs, before failure detection
/// drops it from the ring: a forward to it goes to the next node after the peer timeout, and a
/// replica it does not take within half the timeout goes to the next node too, so every push is
/// acknowledged (none 503). Once the node is back, every node serves every group.
#[test]
fn pushes_while_a_node_hangs_undetected_are_acknowledged() {
    const THREADS: usize = 8;
    const PER_THREAD: usize = 5;
    let c = Cluster::start(3, &[AE]);
    c.nodes[0].signal("STOP");
    let urls = [c.nodes[1].url(), c.nodes[2].url()];
    let failures: Vec<String> = std::thread::scope(|s| {
        let workers: Vec<_> = (0..THREADS)
            .map(|t| {
                let url = &urls[t % 2];
                s.spawn(move || {
                    let mut failed = Vec::new();
                    for p in 0..PER_THREAD {
                        let job = format!("h{}", t * PER_THREAD + p);
                        let body = b"lc_value 7\n";
                        match http("PUT", url, &format!("/metrics/job/{job}"), body) {
                            Ok((200, _)) => {}
                            other => failed.push(format!("{job} via {url}: {other:?}")),
                        }
                    }
                    failed
                })
            })
            .collect();
        workers
            .into_iter()
            .flat_map(|w| w.join().expect("worker"))
            .collect()
    });
    c.nodes[0].signal("CONT");
    assert!(failures.is_empty(), "{failures:#?}");
    converge_after_resume(&c, THREADS * PER_THREAD, 7);
}

/// Three nodes started at once (a fresh deployment, or a whole cluster restarted): each node's
/// first push, sent the moment that node turns ready, is acknowledged. At a cold start every node
/// sees the others joining for a gossip round; a node turns ready only once R members are active
/// in its ring, and a primary that still sees too few active members uses joining ones as
/// stand-ins.
#[test]
fn pushes_right_after_a_cold_start_are_acknowledged() {
    for round in 0..3 {
        let c = Cluster::spawn(3, &[]);
        let mut pushed = [false; 3];
        let mut failures = Vec::new();
        wait_for("every node ready", Duration::from_secs(30), || {
            for (i, node) in c.nodes.iter().enumerate() {
                if !pushed[i] && node.is_ready() {
                    pushed[i] = true;
                    for g in 0..10 {
                        let path = format!("/metrics/job/cold/instance/n{i}g{g}");
                        match http("PUT", &node.url(), &path, b"lc_value 1\n") {
                            Ok((200, _)) => {}
                            other => failures.push(format!("round {round} {path}: {other:?}")),
                        }
                    }
                }
            }
            pushed.iter().all(|&p| p)
        });
        assert!(failures.is_empty(), "{failures:#?}");
    }
}

/// `/-/ready` is a latch: 503 until the node has joined and pulled its groups; `/-/healthy` is
/// liveness. Checked by order, not against the join timeout: the node seeds from a port where
/// nothing listens yet and would wait ten minutes, so it is live and unready for as long as the
/// test likes; it turns ready once the seed starts there. (Turning ready alone after the join
/// timeout: gossip_key.rs, whose outsiders find no peer that accepts them.)
#[test]
fn ready_only_after_joining_healthy_at_once() {
    let seed_port = cluster_tests::free_port();
    let seed = format!("--cluster.peer=127.0.0.1:{seed_port}");
    let mut c = Cluster::spawn(
        1,
        &[
            &seed,
            "--cluster.join-timeout=10m",
            "--cluster.replication-factor=1",
        ],
    );
    let node = &c.nodes[0];
    wait_for("the node to be live", Duration::from_secs(30), || {
        matches!(http("GET", &node.url(), "/-/healthy", b""), Ok((200, _)))
    });
    assert!(!node.is_ready(), "ready before its seed started");
    c.spawn_node_on(seed_port, &["--cluster.replication-factor=1"]);
    let node = &c.nodes[0];
    wait_for("the node to join its seed and turn ready", CONVERGE, || {
        node.is_ready()
    });
    assert!(put(&node.url(), "joined", 1));
}

/// A push answered by `node`: 200, or 503 with `Retry-After` (the only refusal a node that
/// cannot take writes yet may give); anything else fails the test.
fn push_or_retry_after(node: &Node, job: &str) -> bool {
    let path = format!("/metrics/job/{job}");
    let a = http_answer(
        "PUT",
        &node.url(),
        &path,
        b"lc_value 1\n",
        Duration::from_secs(20),
    )
    .expect("the node answers");
    match a.status {
        200 => true,
        503 if a.header("retry-after") == Some("1") => false,
        _ => panic!("push {job} to {}: {a:?}", node.url()),
    }
}

/// SIGTERM: the node is unready at once, and keeps taking pushes (forwarding them) and
/// serving scrapes for its drain period before its listeners close.
#[test]
fn a_stopping_node_drains_unready_but_serving() {
    // By order, not by time: the first readiness probe after SIGTERM may still see the node
    // ready (the signal is handled asynchronously), but once it is unready it keeps taking
    // pushes and serving scrapes; the drain period is long enough for a loaded machine to send
    // those, and the node exits only after it.
    let drain = Duration::from_secs(8);
    let mut c = Cluster::start(3, &[AE, "--cluster.drain-period=8s"]);
    let node = &c.nodes[0];
    node.signal("TERM");
    let started = std::time::Instant::now();
    let mut served = 0;
    let mut served_unready = 0;
    while served_unready < 5 {
        let unready = !node.is_ready();
        assert!(
            put(&node.url(), &format!("drain{served}"), 1),
            "refused while draining ({served_unready} pushes taken since it turned unready)"
        );
        let (status, _) = http("GET", &node.url(), "/metrics", b"").expect("scrape");
        assert_eq!(status, 200, "scrape while draining");
        served += 1;
        served_unready += usize::from(unready);
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(
        c.nodes[0].terminate(Duration::from_secs(40)),
        "graceful exit"
    );
    assert!(
        started.elapsed() >= drain,
        "exited before its drain period ended"
    );
    for i in 0..served {
        let got = merged(&c.nodes[1]);
        assert!(
            got.contains_key(&format!("drain{i}")),
            "drain{i} lost: {got:?}"
        );
    }
}

/// Readiness means writable: a restarted node answers each push 200 or 503 with
/// `Retry-After` (while it does not know an active member), takes pushes before it is ready
/// once it knows the ring (forwarding them), and refuses none from its first ready answer on.
/// A node that knows no member at all answers 503 with `Retry-After`.
#[test]
fn from_its_first_ready_answer_a_node_takes_every_push() {
    let mut c = Cluster::start(3, &[AE, DRAIN]);
    assert!(
        c.nodes[2].terminate(Duration::from_secs(40)),
        "graceful exit"
    );
    c.nodes[2].restart();
    let node = &c.nodes[2];
    let mut before_ready = 0;
    let mut taken_before_ready = 0;
    let mut n = 0;
    wait_for("the restarted node to be ready", CONVERGE, || {
        let ready = node.is_ready();
        n += 1;
        let listening = http("GET", &node.url(), "/-/healthy", b"").is_ok();
        if listening && !ready {
            before_ready += 1;
            if push_or_retry_after(node, &format!("r{n}")) {
                taken_before_ready += 1;
            }
        }
        ready
    });
    for i in 0..100 {
        assert!(
            put(&node.url(), &format!("ready{i}"), 1),
            "push {i} after the first ready answer refused"
        );
    }
    eprintln!("{before_ready} pushes before ready, {taken_before_ready} taken");
    // Alone, with a peer that never answers: no member known, so no push can be placed.
    let alone = Cluster::spawn(
        1,
        &["--cluster.peer=127.0.0.1:9", "--cluster.join-timeout=30s"],
    );
    let node = &alone.nodes[0];
    wait_for("the lone node to be live", Duration::from_secs(30), || {
        http("GET", &node.url(), "/-/healthy", b"").is_ok()
    });
    assert!(
        !push_or_retry_after(node, "alone"),
        "taken with no member known"
    );
}

/// Fewer than R nodes up. By default the survivor refuses pushes (503 with `Retry-After`) and
/// says so: `pushgate_cluster_writable` 0. With `--cluster.write-quorum=1` (degraded mode) it
/// takes them, and they are copied to the returning node.
#[test]
fn with_fewer_than_r_nodes_up_writes_need_the_degraded_mode() {
    let mut strict = Cluster::start(2, &[AE]);
    assert_eq!(
        strict.nodes[0].metric("pushgate_cluster_writable"),
        Some(1.0)
    );
    strict.nodes[1].kill9();
    let survivor = &strict.nodes[0];
    wait_for(
        "the survivor to say it cannot take writes",
        CONVERGE,
        || survivor.metric("pushgate_cluster_writable") == Some(0.0),
    );
    assert!(
        !push_or_retry_after(survivor, "strict"),
        "taken by one node of R = 2"
    );
    drop(strict);

    let groups = 30;
    let mut c = Cluster::start(2, &[AE, "--cluster.write-quorum=1"]);
    c.nodes[1].kill9();
    let survivor = &c.nodes[0];
    for i in 0..groups {
        assert!(
            put(&survivor.url(), &format!("g{i}"), 1),
            "push {i} refused"
        );
    }
    wait_for("the survivor to drop the lost node", CONVERGE, || {
        survivor.metric("pushgate_cluster_members{state=\"active\"}") == Some(1.0)
    });
    assert_eq!(survivor.metric("pushgate_cluster_writable"), Some(1.0));
    c.nodes[1].restart();
    let back = &c.nodes[1];
    wait_for("the lost node to be ready again", CONVERGE, || {
        back.is_ready()
    });
    wait_for("both copies again", CONVERGE, || converged(&c, 2, groups));
    // Without the survivor, the returned node serves every group on its own.
    c.nodes[0].kill9();
    assert_eq!(merged(&c.nodes[1]).len(), groups);
}

/// Wipes stay wiped: a node killed before a wipe, restarted from its persistence file written
/// before it, and a node hung (cut off) during another wipe, bring none of the wiped groups
/// back; what was pushed after each wipe stays.
#[test]
fn a_node_that_missed_a_wipe_does_not_bring_wiped_groups_back() {
    let dir = temp_dir("wipe");
    let file = format!("--persistence.file={dir}/node{{n}}.db");
    let extra = [AE, file.as_str(), "--persistence.interval=200ms"];
    let mut c = Cluster::start(3, &extra);
    let groups = 30;
    for i in 0..groups {
        assert!(put(&c.nodes[i % 3].url(), &format!("old{i}"), 1));
    }
    wait_for("every copy persisted", CONVERGE, || {
        converged(&c, 2, groups)
            && c.nodes[0]
                .metric("pushgate_persistence_writes_total{result=\"success\"}")
                .is_some_and(|n| n >= 1.0)
    });
    let wipe_after_losing = |c: &Cluster, via: usize, live: usize| {
        let url = c.nodes[via].url();
        let want = format!("pushgate_cluster_members{{state=\"active\"}} {live}\n");
        wait_for(
            "the others to drop the missing node",
            CONVERGE,
            || matches!(http("GET", &url, "/metrics", b""), Ok((200, b)) if b.contains(&want)),
        );
        let (status, body) = http("PUT", &url, "/api/v1/admin/wipe", b"").unwrap();
        assert!((200..300).contains(&status), "wipe: {status} {body}");
    };
    c.nodes[0].kill9();
    wipe_after_losing(&c, 1, 2);
    for i in 0..5 {
        assert!(put(&c.nodes[1 + i % 2].url(), &format!("new{i}"), 2));
    }
    c.nodes[0].restart();
    let node = &c.nodes[0];
    wait_for("the node to be ready again", CONVERGE, || node.is_ready());
    wait_for("convergence after the restart", CONVERGE, || {
        converged(&c, 2, 5)
    });
    for node in c.live() {
        let got = merged(node);
        assert_eq!(got.len(), 5, "node {}: {got:?}", node.url());
        assert!(got.keys().all(|k| k.starts_with("new")), "{got:?}");
    }
    // A node cut off (hung) during a wipe: it learns it when it is back.
    c.nodes[2].signal("STOP");
    wipe_after_losing(&c, 1, 2);
    assert!(put(&c.nodes[0].url(), "newest", 3));
    c.nodes[2].signal("CONT");
    wait_for("convergence after the hung node is back", CONVERGE, || {
        converged(&c, 2, 1)
    });
    for node in c.live() {
        let got = merged(node);
        assert_eq!(
            got.keys().collect::<Vec<_>>(),
            ["newest"],
            "node {}",
            node.url()
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}
