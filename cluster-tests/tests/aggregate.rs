//! Aggregating groups on a cluster (issue 28, item 2), with real processes: the seed's function
//! (tests/python/bank_auto_debit.py, the unmodified Python client pushing to `/aggregate`) run by
//! 50 concurrent processes through every node, while nodes are killed, partitioned and stood in
//! for. What every node serves at the end equals what the functions were acknowledged, exactly:
//! the counter and the histogram's count are the acknowledged invocations, its sum their
//! observations. A push too few nodes take is answered 503 and does not count; its retry with the
//! same Idempotency-Key counts once. A real Prometheus scraping through the balancer sees the
//! counter only grow, by exactly what was pushed.

use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use cluster_tests::balancer::Balancer;
use cluster_tests::prometheus::Prometheus;
use cluster_tests::testbed::{Bed, Slot};
use cluster_tests::{
    http, http_answer_with, metric_value, python_with_client, require_docker, wait_for, Cluster,
};

const SCRIPT: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../tests/python/bank_auto_debit.py"
);
const JOB: &str = "bank_auto_debit";
const AE: &str = "--cluster.anti-entropy-interval=1s";
const WORKERS: usize = 50;
const CONVERGE: Duration = Duration::from_secs(90);

/// What the function invocations were acknowledged: how many, and the sum of what they observed.
#[derive(Debug, Default, Clone, Copy, PartialEq)]
struct Acked {
    count: usize,
    sum: f64,
}

impl std::ops::AddAssign for Acked {
    fn add_assign(&mut self, o: Acked) {
        self.count += o.count;
        self.sum += o.sum;
    }
}

/// Starts `WORKERS` processes, each running the function `invocations` times, worker `w`
/// pushing through `gateways[w % len]`: every push carries its own Idempotency-Key and a failed
/// one is retried with it through the next gateway, until acknowledged (a function meant to
/// survive gateway failures).
fn start_functions(gateways: &[String], first_worker: usize, invocations: usize) -> Vec<Child> {
    start_functions_as(gateways, first_worker, invocations, "keyed")
}

/// `start_functions` with the script's `mode`: "keyed", or "plain" (the seed's function as it is:
/// one push without a key per invocation, worker `w` through `gateways[w % len]`; every fifth
/// invocation sends its push twice with one Idempotency-Key, as a client retrying would).
fn start_functions_as(
    gateways: &[String],
    first_worker: usize,
    invocations: usize,
    mode: &str,
) -> Vec<Child> {
    let list = gateways.join(",");
    (0..WORKERS)
        .map(|w| {
            python_with_client()
                .arg(SCRIPT)
                .arg(&list)
                .arg((first_worker + w).to_string())
                .arg(invocations.to_string())
                .arg(mode)
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .expect("python3 should start")
        })
        .collect()
}

/// Waits for the processes; what they were acknowledged. Every invocation must have been
/// acknowledged (each retries for up to 30 s with the same key, longer than any fault here).
fn acknowledged(children: Vec<Child>) -> Acked {
    let mut acked = Acked::default();
    for child in children {
        let out = child.wait_with_output().expect("python3 should finish");
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "a function process failed: {stdout}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        for line in stdout.lines() {
            match line.split_once(' ') {
                Some(("ACK", seconds)) => {
                    acked.count += 1;
                    acked.sum += seconds.parse::<f64>().expect("ACK <seconds>");
                }
                _ => panic!("an invocation was not acknowledged within 30 s: {line}"),
            }
        }
    }
    acked
}

/// The value of `name{...job="bank_auto_debit"...}` (no other label but `le` given) in a scrape.
fn sample(body: &str, name: &str, le: Option<&str>) -> Option<f64> {
    body.lines().find_map(|l| {
        let (series, value) = l.rsplit_once(' ')?;
        let (n, labels) = series.split_once('{')?;
        let le_ok = match le {
            Some(le) => labels.contains(&format!("le=\"{le}\"")),
            None => !labels.contains("le="),
        };
        (n == name && labels.contains(&format!("job=\"{JOB}\"")) && le_ok)
            .then(|| value.parse().ok())
            .flatten()
    })
}

/// What a node serves of the function's group, against what was acknowledged: None when it
/// matches exactly, else what differs.
fn differs(body: &str, want: Acked) -> Option<String> {
    let count = sample(body, "bank_auto_debit_successful_total", None);
    let hist = sample(body, "bank_auto_debit_duration_seconds_count", None);
    let inf = sample(
        body,
        "bank_auto_debit_duration_seconds_bucket",
        Some("+Inf"),
    );
    let sum = sample(body, "bank_auto_debit_duration_seconds_sum", None);
    let n = Some(want.count as f64);
    // Observations are multiples of 1/8 s, so their sum is exact in binary floating point.
    (count != n || hist != n || inf != n || sum != Some(want.sum)).then(|| {
        format!(
            "counter {count:?}, histogram count {hist:?}, +Inf bucket {inf:?}, sum {sum:?}; acknowledged {} invocations observing {} s",
            want.count, want.sum
        )
    })
}

/// Waits until every URL serves exactly `want` (bounded), naming what differs where otherwise.
fn every_node_serves(urls: &[String], want: Acked) {
    let deadline = Instant::now() + CONVERGE;
    loop {
        let mut wrong = Vec::new();
        for url in urls {
            match http("GET", url, "/metrics", b"") {
                Ok((200, body)) => {
                    if let Some(d) = differs(&body, want) {
                        wrong.push(format!("{url}: {d}"));
                    }
                }
                other => wrong.push(format!("{url}: {other:?}")),
            }
        }
        if wrong.is_empty() {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "not every node serves what was acknowledged after {CONVERGE:?}:\n{}",
            wrong.join("\n")
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn push_keyed(url: &str, key: &str) -> u16 {
    let body =
        b"# TYPE bank_auto_debit_successful_total counter\nbank_auto_debit_successful_total 1\n";
    http_answer_with(
        "PUT",
        url,
        &format!("/aggregate/metrics/job/{JOB}"),
        &[("Idempotency-Key", key)],
        body,
        Duration::from_secs(20),
    )
    .map_or(0, |a| a.status)
}

fn counter(url: &str) -> Option<f64> {
    let (status, body) = http("GET", url, "/metrics", b"").ok()?;
    (status == 200)
        .then(|| sample(&body, "bank_auto_debit_successful_total", None))
        .flatten()
}

/// A push that fewer than R nodes can take is answered 503 and taken back: it does not count,
/// on the node that added it or on any node once the others are back; its retry with the same
/// Idempotency-Key, through another node, counts once, and a second retry not again.
#[test]
fn a_push_too_few_nodes_take_is_taken_back_and_its_retry_counts_once() {
    let mut c = Cluster::start(3, &[AE]);
    let urls: Vec<String> = c.nodes.iter().map(|n| n.url()).collect();
    for i in 0..9 {
        assert_eq!(push_keyed(&urls[i % 3], &format!("warm-{i}")), 200);
    }
    // Two of the three nodes down, the group's primary left: it holds the group, and R = 2
    // cannot be met.
    let survivor = c.owners(JOB, 1)[0];
    for i in 0..3 {
        if i != survivor {
            c.nodes[i].kill9();
        }
    }
    let s = urls[survivor].clone();
    wait_for(
        "the survivor to see one active member",
        Duration::from_secs(60),
        || {
            matches!(http("GET", &s, "/metrics", b""),
                Ok((200, b)) if b.contains("pushgate_cluster_members{state=\"active\"} 1\n"))
        },
    );
    for i in 0..4 {
        assert_eq!(push_keyed(&s, &format!("lost-{i}")), 503, "push {i}");
    }
    assert_eq!(counter(&s), Some(9.0), "the refused pushes do not count");
    assert_eq!(
        c.nodes[survivor].metric("pushgate_cluster_aggregate_retracted_total"),
        Some(4.0)
    );
    for i in 0..3 {
        if i != survivor {
            c.nodes[i].restart();
        }
    }
    for n in &c.nodes {
        wait_for("the nodes to be back", Duration::from_secs(60), || {
            n.is_ready()
        });
    }
    // The retries, through the other nodes: each counts once, and again not at all.
    let other = (survivor + 1) % 3;
    for round in 0..2 {
        for i in 0..4 {
            assert_eq!(
                push_keyed(&urls[other], &format!("lost-{i}")),
                200,
                "round {round}"
            );
        }
    }
    let want = Acked {
        count: 13,
        sum: 0.0,
    };
    let deadline = Instant::now() + CONVERGE;
    while urls.iter().any(|u| counter(u) != Some(want.count as f64)) {
        assert!(
            Instant::now() < deadline,
            "counters now: {:?}",
            urls.iter().map(|u| counter(u)).collect::<Vec<_>>()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// An aggregating group with a TTL (`Pushgate-Group-TTL`) leaves every node once its last
/// push is older than the TTL, and anti-entropy does not bring it back; the next push starts
/// the sums again, on every node.
#[test]
fn an_aggregating_group_with_a_ttl_expires_on_every_node_and_starts_again() {
    let c = Cluster::start(3, &[AE]);
    let urls: Vec<String> = c.nodes.iter().map(|n| n.url()).collect();
    let push = |url: &str| {
        let body = b"# TYPE bank_auto_debit_successful_total counter\nbank_auto_debit_successful_total 1\n";
        http_answer_with(
            "PUT",
            url,
            &format!("/aggregate/metrics/job/{JOB}"),
            &[("Pushgate-Group-TTL", "3s")],
            body,
            Duration::from_secs(20),
        )
        .map_or(0, |a| a.status)
    };
    for i in 0..6 {
        assert_eq!(push(&urls[i % 3]), 200);
    }
    wait_for("every node to serve 6", CONVERGE, || {
        urls.iter().all(|u| counter(u) == Some(6.0))
    });
    // Gone: the node answers, without the group.
    let gone = |u: &String| {
        matches!(http("GET", u, "/metrics", b""),
            Ok((200, body)) if sample(&body, "bank_auto_debit_successful_total", None).is_none())
    };
    wait_for("the group to expire on every node", CONVERGE, || {
        urls.iter().all(gone)
    });
    // Several anti-entropy rounds later it is still gone.
    std::thread::sleep(Duration::from_secs(3));
    for u in &urls {
        assert!(gone(u), "{u} brought the expired group back");
    }
    assert_eq!(push(&urls[1]), 200);
    wait_for("every node to serve the new sum", CONVERGE, || {
        urls.iter().all(|u| counter(u) == Some(1.0))
    });
}

/// 50 function processes through all three nodes, while one of the group's owners is killed and
/// then started again without its state (an empty node): every node ends with exactly what was
/// acknowledged; a DELETE through any node then resets the group on every node.
#[test]
fn functions_add_up_exactly_through_every_node_while_an_owner_is_killed() {
    let mut c = Cluster::start(3, &[AE]);
    let urls: Vec<String> = c.nodes.iter().map(|n| n.url()).collect();
    let gateways: Vec<String> = urls
        .iter()
        .map(|u| u.trim_start_matches("http://").to_owned())
        .collect();
    let mut acked = acknowledged(start_functions(&gateways, 0, 4));
    every_node_serves(&urls, acked);

    let victim = c.owners(JOB, 1)[0];
    let rest: Vec<String> = (0..3)
        .filter(|&i| i != victim)
        .map(|i| gateways[i].clone())
        .collect();
    let running = start_functions(&gateways, WORKERS, 6);
    // Mid-run: the group's primary goes, in the middle of its writes.
    wait_for("pushes to be under way", Duration::from_secs(60), || {
        counter(&urls[(victim + 1) % 3]).is_some_and(|v| v > acked.count as f64 + 20.0)
    });
    c.nodes[victim].kill9();
    acked += acknowledged(running);
    // A run through the two survivors while it is away, then it comes back empty.
    acked += acknowledged(start_functions(&rest, 2 * WORKERS, 2));
    c.nodes[victim].restart();
    wait_for("the owner to be back", Duration::from_secs(60), || {
        c.nodes[victim].is_ready()
    });
    every_node_serves(&urls, acked);

    let (status, _) = http(
        "DELETE",
        &urls[(victim + 2) % 3],
        &format!("/aggregate/metrics/job/{JOB}"),
        b"",
    )
    .expect("delete");
    assert_eq!(status, 202);
    let after = acknowledged(start_functions(&gateways, 3 * WORKERS, 1));
    every_node_serves(&urls, after);
}

/// The seed's function as it is (no Idempotency-Key on most pushes) through all three nodes at
/// once: a keyless push that reaches either owner is added there, into that owner's partial, so
/// both owners add concurrently, and every node still ends with exactly what was acknowledged.
/// The second owner forwards only the keyed pushes (to the primary, which checks keys in one
/// place).
#[test]
fn keyless_functions_are_added_by_both_owners_and_add_up_exactly() {
    // A keyless push is not retried (a 503 may mean counted, then a retry would count twice), so
    // a peer timeout well above what a busy CI host takes (50 interpreters starting at once
    // beside the other suites) keeps every push acknowledged.
    let c = Cluster::start(3, &[AE, "--cluster.peer-timeout=15s"]);
    let urls: Vec<String> = c.nodes.iter().map(|n| n.url()).collect();
    let gateways: Vec<String> = urls
        .iter()
        .map(|u| u.trim_start_matches("http://").to_owned())
        .collect();
    const INVOCATIONS: usize = 6;
    let acked = acknowledged(start_functions_as(&gateways, 0, INVOCATIONS, "plain"));
    assert_eq!(acked.count, WORKERS * INVOCATIONS);
    every_node_serves(&urls, acked);
    let second = c.owners(JOB, 2)[1];
    // Each of its workers sent every fifth invocation twice with a key: those go to the primary.
    let workers = (0..WORKERS).filter(|w| w % 3 == second).count();
    let keyed_sends = workers * 2 * (0..INVOCATIONS).filter(|i| i % 5 == 0).count();
    let (_, body) = http("GET", &urls[second], "/metrics", b"").expect("metrics");
    let forwarded: f64 = body
        .lines()
        .filter(|l| l.starts_with("pushgate_forwarded_pushes_total{"))
        .filter(|l| l.contains("result=\"success\""))
        .filter_map(|l| l.rsplit_once(' ')?.1.parse::<f64>().ok())
        .sum();
    assert_eq!(
        forwarded, keyed_sends as f64,
        "the second owner forwarded {forwarded} pushes; only its {keyed_sends} keyed ones go to the primary"
    );
}

/// Whether every URL answers /-/ready.
fn all_ready(urls: &[String]) -> bool {
    urls.iter()
        .all(|u| matches!(http("GET", u, "/-/ready", b""), Ok((200, _))))
}

/// The container test bed: 3 nodes behind haproxy, a real Prometheus scraping the balancer. The
/// functions push through the balancer while one owner of the group is cut off by the network,
/// then while the other owner is killed (the third node stands in, holding the group as a hint
/// until the owner is back). Each time every node ends with exactly what was acknowledged, and
/// Prometheus saw the counter only grow: no reset, and an increase of exactly what was pushed.
#[test]
fn functions_through_the_balancer_through_a_partition_and_a_stand_in() {
    require_docker!();
    let bed = Bed::start(3, &[AE]);
    let slots: Vec<Slot> = (1..=3).map(|i| bed.slot(i)).collect();
    let lb = Balancer::start(&slots);
    let urls: Vec<String> = slots.iter().map(Slot::url).collect();
    let mut all = urls.clone();
    all.push(lb.url());
    let prom = Prometheus::start(
        &format!(
            "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n\
             scrape_configs:\n  - job_name: pushgate\n    honor_labels: true\n\
             \x20   static_configs:\n      - targets: ['{}']\n",
            lb.address()
        ),
        &[],
        &[],
    );
    let gw = [lb.address()];
    // A first invocation, scraped twice by Prometheus before the measured runs, so that its
    // increase() covers every push after it.
    let mut acked = acknowledged(start_functions(&gw, 0, 1));
    every_node_serves(&all, acked);
    let first = acked;
    let series = "bank_auto_debit_successful_total{job=\"bank_auto_debit\"}";
    // Scraped at its settled value for 3 s: the window below starts after this, so its first
    // sample is that value (Prometheus may have scraped the first run half done before).
    let settled_first = format!("min_over_time({series}[3s])");
    wait_for(
        "Prometheus to scrape the group",
        Duration::from_secs(60),
        || {
            prom.query(&settled_first)
                .is_ok_and(|r| r.first().is_some_and(|(_, v)| *v == first.count as f64))
        },
    );
    let started = Instant::now();

    // The group's owners, by the nodes' ids in the ring.
    let ids: Vec<(usize, String)> = slots.iter().map(|s| (s.index, s.id())).collect();
    let owners = owners_of(&ids, 2);
    let stand_in = slots
        .iter()
        .find(|s| !owners.contains(&s.index))
        .expect("a third node")
        .clone();
    let (cut, killed) = (bed.slot(owners[0]), bed.slot(owners[1]));

    // A partition of one owner, mid-run.
    let running = start_functions(&gw, WORKERS, 6);
    std::thread::sleep(Duration::from_secs(2));
    bed.disconnect(&cut);
    acked += acknowledged(running);
    bed.reconnect(&cut);
    wait_for(
        "the cut-off node to be back",
        Duration::from_secs(60),
        || all_ready(&urls),
    );
    bed.wait_members(3, Duration::from_secs(60));
    every_node_serves(&all, acked);

    // The other owner killed mid-run: the third node, which holds no copy of the group while
    // both owners are up, stands in for it, and hands the group back once it returns.
    let holds = |slot: &Slot| metric_of(&slot.url(), "pushgate_groups");
    wait_for("the third node to hold no copy", CONVERGE, || {
        holds(&stand_in) == Some(0.0)
    });
    let running = start_functions(&gw, 2 * WORKERS, 6);
    std::thread::sleep(Duration::from_secs(2));
    bed.kill(&killed);
    acked += acknowledged(running);
    every_node_serves(
        &[urls[cut.index - 1].clone(), stand_in.url(), lb.url()],
        acked,
    );
    assert_eq!(
        holds(&stand_in),
        Some(1.0),
        "the third node holds the group for the killed owner"
    );
    bed.start_again(&killed);
    wait_for(
        "the killed node to be back",
        Duration::from_secs(60),
        || all_ready(&urls),
    );
    bed.wait_members(3, Duration::from_secs(60));
    every_node_serves(&all, acked);
    wait_for("the third node to hand the group back", CONVERGE, || {
        holds(&stand_in) == Some(0.0)
    });

    // Prometheus, through the balancer, the whole time: the counter never went down, and it
    // rose by exactly what was acknowledged after the first invocation.
    let settled = format!("max_over_time({series}[5s])");
    wait_for(
        "Prometheus to scrape the last value",
        Duration::from_secs(30),
        || {
            prom.query(&settled)
                .is_ok_and(|r| r.first().is_some_and(|(_, v)| *v == acked.count as f64))
        },
    );
    // The window must begin before the first measured push, and not before the 3 s in which
    // the first invocation's value was seen settled. Taken again for each query (a window taken
    // once, before a wait, starts after `started` and misses the first pushes): whole seconds
    // since `started`, plus 2, start it between 1 and 2 s before `started`.
    let window = || started.elapsed().as_secs() + 2;
    let resets = prom
        .query(&format!("resets({series}[{}s])", window()))
        .expect("query");
    assert_eq!(
        resets.first().map(|(_, v)| *v),
        Some(0.0),
        "the counter went down in a scrape through the balancer"
    );
    let w = window();
    let grew = prom
        .query(&format!(
            "max_over_time({series}[{w}s]) - min_over_time({series}[{w}s])"
        ))
        .expect("query");
    assert_eq!(
        grew.first().map(|(_, v)| *v),
        Some((acked.count - first.count) as f64),
        "Prometheus saw the counter rise by what was pushed"
    );
    let w = window();
    let rate = prom
        .query(&format!("rate({series}[{w}s]) * {w}"))
        .expect("query");
    let pushed = (acked.count - first.count) as f64;
    let seen = rate.first().map_or(0.0, |(_, v)| *v);
    // rate() extrapolates to the window's edges, so it is near the pushes, not equal to them.
    assert!(
        seen >= pushed * 0.9 && seen <= pushed * 1.25,
        "rate() x window = {seen}, pushed {pushed}"
    );
}

/// The `r` owners (1-based slot indexes) of the function's group, in rendezvous order.
fn owners_of(ids: &[(usize, String)], r: usize) -> Vec<usize> {
    use pushgate::cluster::ring::score;
    use pushgate::cluster::NodeId;
    let h = pushgate::store::GroupKey::new([("job".to_owned(), JOB.to_owned())]).stable_hash();
    let mut ranked = ids.to_vec();
    ranked.sort_by(|(_, a), (_, b)| {
        score(h, &NodeId::new(b.as_str()))
            .cmp(&score(h, &NodeId::new(a.as_str())))
            .then(a.cmp(b))
    });
    ranked.into_iter().take(r).map(|(i, _)| i).collect()
}

fn metric_of(url: &str, name: &str) -> Option<f64> {
    let (status, body) = http("GET", url, "/metrics", b"").ok()?;
    (status == 200).then(|| metric_value(&body, name)).flatten()
}
