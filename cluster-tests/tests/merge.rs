//! Ordinary groups merge (issue 28, item 3), with real processes on loopback: POSTs that add
//! a new family to many groups, through several nodes, while the cluster grows from 3 to 5
//! nodes and shrinks back. A POST that reaches a group's new owner before the group does, or
//! two POSTs to one group applied by two nodes that each lack the other's, used to leave two
//! copies of which the newer won whole: families acknowledged earlier were lost from every
//! node. Each family now merges on its own, so every acknowledged family is on every node.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use cluster_tests::{http, metric_value, wait_for, Cluster, Node};

const AE: &str = "--cluster.anti-entropy-interval=1s";
const DRAIN: &str = "--cluster.drain-period=1s";
const CONVERGE: Duration = Duration::from_secs(90);
const GROUPS: usize = 20;
const PUSHERS: usize = 2;

/// (job, family) pairs.
type Ledger = BTreeSet<(String, String)>;

/// The (job, family) pairs of the `mf_*` families in a scrape.
fn families(body: &str) -> Ledger {
    body.lines()
        .filter(|l| l.starts_with("mf_"))
        .filter_map(|l| {
            let (name, rest) = l.split_once('{')?;
            let job = rest.split("job=\"").nth(1)?.split('"').next()?;
            Some((job.to_owned(), name.to_owned()))
        })
        .collect()
}

/// Every live node: no hint left, the ring at the live count, and `r` copies of each group.
fn settled(c: &Cluster, r: usize) -> bool {
    let live: Vec<&Node> = c.live().collect();
    let mut total = 0.0;
    for n in &live {
        let Ok((200, body)) = http("GET", &n.url(), "/metrics", b"") else {
            return false;
        };
        let active = format!(
            "pushgate_cluster_members{{state=\"active\"}} {}\n",
            live.len()
        );
        if metric_value(&body, "pushgate_hints_pending") != Some(0.0) || !body.contains(&active) {
            return false;
        }
        total += metric_value(&body, "pushgate_groups").unwrap_or(0.0);
    }
    total == (r.min(live.len()) * GROUPS) as f64
}

/// What an acknowledged family is missing from on each live node (empty: none).
fn missing(c: &Cluster, acked: &Ledger) -> Vec<String> {
    let mut out = Vec::new();
    for node in c.live() {
        let Ok((200, body)) = http("GET", &node.url(), "/metrics", b"") else {
            out.push(format!("{}: no scrape", node.url()));
            continue;
        };
        let seen = families(&body);
        let lost: Vec<&(String, String)> = acked.difference(&seen).collect();
        if !lost.is_empty() {
            out.push(format!("{}: {} missing: {lost:?}", node.url(), lost.len()));
        }
    }
    out
}

/// POSTs a new family to every group, round after round, through the nodes in `urls` in
/// turn; returns what was acknowledged (200) and how many pushes were not.
fn pusher(
    id: usize,
    urls: Arc<Mutex<Vec<String>>>,
    stop: Arc<AtomicBool>,
) -> std::thread::JoinHandle<(Ledger, usize)> {
    std::thread::spawn(move || {
        let mut acked = Ledger::new();
        let mut refused = 0;
        let mut round = 0;
        let mut turn = id;
        while !stop.load(Ordering::Relaxed) {
            for g in 0..GROUPS {
                let url = {
                    let list = urls.lock().expect("url list");
                    turn += 1;
                    list[turn % list.len()].clone()
                };
                let (job, family) = (format!("merge{g}"), format!("mf_r{round}_p{id}"));
                let body = format!("{family} 1\n");
                match http(
                    "POST",
                    &url,
                    &format!("/metrics/job/{job}"),
                    body.as_bytes(),
                ) {
                    Ok((200, _)) => {
                        acked.insert((job, family));
                    }
                    _ => refused += 1,
                }
            }
            round += 1;
            std::thread::sleep(Duration::from_millis(20));
        }
        (acked, refused)
    })
}

#[test]
fn posts_of_new_families_while_the_cluster_grows_and_shrinks_lose_nothing() {
    let mut c = Cluster::start(3, &[AE, DRAIN]);
    // The first two nodes take the pushes throughout (they stay).
    let urls = Arc::new(Mutex::new(vec![c.nodes[0].url(), c.nodes[1].url()]));
    let stop = Arc::new(AtomicBool::new(false));
    let pushers: Vec<_> = (0..PUSHERS)
        .map(|id| pusher(id, urls.clone(), stop.clone()))
        .collect();
    // Growing: each new node takes pushes too as soon as it is ready.
    for _ in 0..2 {
        let i = c.add_node(&[AE, DRAIN]);
        urls.lock().expect("url list").push(c.nodes[i].url());
    }
    wait_for("5 nodes to settle", CONVERGE, || settled(&c, 2));
    // Shrinking: a node leaves the pushers' list before it stops (a balancer's health check).
    for i in [4, 3] {
        let url = c.nodes[i].url();
        urls.lock().expect("url list").retain(|u| *u != url);
        assert!(
            c.nodes[i].terminate(Duration::from_secs(40)),
            "graceful exit"
        );
    }
    stop.store(true, Ordering::Relaxed);
    let mut acked = Ledger::new();
    let mut refused = 0;
    for p in pushers {
        let (a, r) = p.join().expect("pusher");
        acked.extend(a);
        refused += r;
    }
    // Every group got families through every node, in several rounds.
    let per_group = acked.len() / GROUPS;
    assert!(per_group >= 4, "only {} families acknowledged", acked.len());
    wait_for("3 nodes to settle", CONVERGE, || settled(&c, 2));
    // A bounded wait for anti-entropy, then what is still missing, node by node.
    let deadline = Instant::now() + CONVERGE;
    let mut lost = missing(&c, &acked);
    while !lost.is_empty() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(200));
        lost = missing(&c, &acked);
    }
    assert!(
        lost.is_empty(),
        "of {} acknowledged families ({refused} pushes refused): {lost:#?}",
        acked.len()
    );
}
