//! The seed pipeline end to end, on the container test bed:
//!
//!     docs/examples/bank_autodebit.py --PUT--> haproxy --> 3 pushgate containers
//!     Prometheus --scrape (honor_labels: true)--> haproxy;  Prometheus --remote_write--> store
//!
//! The sample function runs many times (several workers, several runs each) through the balancer;
//! a real Prometheus scrapes the balancer and remote-writes to a second Prometheus with
//! `--web.enable-remote-write-receiver` (the long-term store). The test queries the store's API
//! and finds every pushed series with the pushed labels and the last run's values, also for runs
//! made while one gateway node is down. Fails without a Docker engine unless PUSHGATE_SKIP_CONTAINER_TESTS=1.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use cluster_tests::balancer::Balancer;
use cluster_tests::prometheus::Prometheus;
use cluster_tests::testbed::Bed;
use cluster_tests::{require_docker, wait_for};

fn function() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../docs/examples/bank_autodebit.py")
}

/// What the store must hold: (instance, account_id) -> balance, and instance -> (ok, failed).
#[derive(Default)]
struct Expected {
    balances: BTreeMap<(String, String), f64>,
    debits: BTreeMap<String, (f64, f64)>,
    /// Invocations that failed and were run again (as a function platform retries).
    retries: usize,
}

/// One invocation of the function through the balancer, retried up to 5 times on failure.
fn invoke(lb: &Balancer, worker: &str, run: u32, want: &mut Expected) {
    for attempt in 0..5 {
        let out = cluster_tests::python_with_client()
            .arg(function())
            .args(["--gateway", &lb.address(), "--worker", worker])
            .args(["--run", &run.to_string()])
            .output()
            .expect("python3 should run");
        let line = String::from_utf8_lossy(&out.stdout);
        if out.status.success() {
            let v: serde_json::Value = serde_json::from_str(line.trim())
                .unwrap_or_else(|e| panic!("function output {line:?}: {e}"));
            for (account, balance) in v["balances"].as_object().expect("balances") {
                let b = balance.as_f64().expect("balance is a number");
                want.balances
                    .insert((worker.to_owned(), account.clone()), b);
            }
            let n = |k: &str| v[k].as_f64().expect("count is a number");
            want.debits
                .insert(worker.to_owned(), (n("ok"), n("failed")));
            return;
        }
        eprintln!(
            "function {worker} run {run} attempt {attempt} failed: {line} {}",
            String::from_utf8_lossy(&out.stderr)
        );
        want.retries += 1;
        // A retry backoff like a function platform's, not a wait for a condition.
        std::thread::sleep(Duration::from_millis(500));
    }
    panic!("function {worker} run {run} failed 5 times");
}

/// Polls the store until it holds exactly the expected balances and debit counters.
fn wait_store(store: &Prometheus, want: &Expected, what: &str) -> Duration {
    let started = Instant::now();
    let mut last = String::new();
    let deadline = started + Duration::from_secs(90);
    while Instant::now() < deadline {
        match store_matches(store, want) {
            Ok(()) => return started.elapsed(),
            Err(e) => last = e,
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    panic!("{what}: the store did not hold every pushed series within 90 s: {last}");
}

fn store_matches(store: &Prometheus, want: &Expected) -> Result<(), String> {
    let label = |m: &serde_json::Value, k: &str| m[k].as_str().unwrap_or("").to_owned();
    let got: BTreeMap<(String, String), f64> = store
        .query("bank_account_balance")?
        .into_iter()
        .map(|(m, v)| {
            if label(&m, "job") != "bank_autodebit" {
                return Err(format!("job label not kept (honor_labels): {m}"));
            }
            Ok(((label(&m, "instance"), label(&m, "account_id")), v))
        })
        .collect::<Result<_, _>>()?;
    for (k, v) in &want.balances {
        match got.get(k) {
            Some(g) if (g - v).abs() < 1e-9 => {}
            other => return Err(format!("balance {k:?}: want {v}, store has {other:?}")),
        }
    }
    if got.len() != want.balances.len() {
        return Err(format!(
            "store has {} balance series, pushed {}",
            got.len(),
            want.balances.len()
        ));
    }
    for (metric, pick) in [
        ("bank_debits_successful_total", 0),
        ("bank_debits_failed_total", 1),
    ] {
        let got: BTreeMap<String, f64> = store
            .query(&format!("{metric}{{job=\"bank_autodebit\"}}"))?
            .into_iter()
            .map(|(m, v)| (label(&m, "instance"), v))
            .collect();
        for (worker, counts) in &want.debits {
            let v = if pick == 0 { counts.0 } else { counts.1 };
            match got.get(worker) {
                Some(g) if (g - v).abs() < 1e-9 => {}
                other => return Err(format!("{metric} {worker}: want {v}, store has {other:?}")),
            }
        }
    }
    Ok(())
}

/// Workers that run only before the fault: their series must be in every scrape during it.
const UNTOUCHED: [&str; 4] = ["worker-0", "worker-1", "worker-2", "worker-3"];

fn unix_now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("the clock is after 1970")
        .as_secs_f64()
}

/// The scraper's view through the fault [from, to], at every second: a scrape within the last
/// 3 s; after each successful scrape (`up` 1) every one of the `series` balance series of the
/// untouched workers (a scrape that lacked one would have ended it with a stale marker). The
/// scrapes the balancer sent to the node as it died fail (`up` 0): they must be one run, after
/// which every scrape succeeds, so the failures are the kill's moment and not a view that
/// comes and goes. Waits (bounded) for the scraper to have scraped past `to` first.
fn complete_view_throughout(scraper: &Prometheus, from: f64, to: f64, series: usize) {
    wait_for(
        "the scraper to scrape past the fault",
        Duration::from_secs(30),
        || {
            matches!(scraper.query("timestamp(up{job=\"pushgate\"})").as_deref(),
            Ok([(_, t)]) if *t > to + 1.0)
        },
    );
    let steps = ((to - from).floor() as usize) + 1;
    let workers = UNTOUCHED.join("|");
    let at_each_step = |promql: &str| -> BTreeMap<u64, f64> {
        let result = scraper
            .query_range(promql, from, to, 1.0)
            .unwrap_or_else(|e| panic!("{e}"));
        match &result[..] {
            [] => BTreeMap::new(),
            [(_, points)] => points.iter().map(|(t, v)| (t.round() as u64, *v)).collect(),
            other => panic!("{promql}: one series expected over the fault, got {other:?}"),
        }
    };
    let up = at_each_step("up{job=\"pushgate\"}");
    let scraped = at_each_step("count_over_time(up{job=\"pushgate\"}[3s])");
    let complete = at_each_step(&format!(
        "count(bank_account_balance{{job=\"bank_autodebit\",instance=~\"{workers}\"}})"
    ));
    assert_eq!(up.len(), steps, "a step without a scrape result: {up:?}");
    assert_eq!(scraped.len(), steps, "a gap in the scrapes: {scraped:?}");
    for (t, ok) in &up {
        if *ok == 1.0 {
            assert_eq!(
                complete.get(t),
                Some(&(series as f64)),
                "the scrape before {t} lacked series of the untouched workers: {complete:?}"
            );
        }
    }
    let outcomes: Vec<bool> = up.values().map(|v| *v == 1.0).collect();
    let runs_of_failures =
        outcomes.windows(2).filter(|w| w[0] && !w[1]).count() + usize::from(!outcomes[0]);
    assert!(
        runs_of_failures <= 1 && outcomes[outcomes.len() - 1],
        "failed scrapes come and go during the fault: {up:?}"
    );
    eprintln!(
        "{} of {steps} steps after a failed scrape (the kill), every other one complete",
        outcomes.iter().filter(|ok| !**ok).count()
    );
}

#[test]
fn bank_function_through_balancer_prometheus_and_remote_write() {
    require_docker!();
    let bed = Bed::start(3, &[]);
    let lb = Balancer::start(&bed.slots);
    let store = Prometheus::store();
    let scraper = Prometheus::scraper(&lb.address(), &store);
    let mut want = Expected::default();

    // 8 workers, 3 runs each: the store must hold each worker's last run.
    let started = Instant::now();
    for run in 1..=3 {
        for w in 0..8 {
            invoke(&lb, &format!("worker-{w}"), run, &mut want);
        }
    }
    eprintln!(
        "24 function runs through the balancer in {:.1}s",
        started.elapsed().as_secs_f64()
    );
    let t = wait_store(&store, &want, "all nodes up");
    println!(
        "PIPELINE all nodes up: every series in the store {:.1}s after the last push",
        t.as_secs_f64()
    );

    // One gateway node down: new workers and new runs of old ones still reach the store.
    let untouched = want
        .balances
        .keys()
        .filter(|(w, _)| UNTOUCHED.contains(&w.as_str()))
        .count();
    let fault_from = unix_now();
    let victim = bed.slot(2);
    bed.kill(&victim);
    let down = Instant::now();
    for w in 4..12 {
        invoke(&lb, &format!("worker-{w}"), 4, &mut want);
    }
    let t = wait_store(&store, &want, "one node down");
    println!(
        "PIPELINE one node down: every series in the store {:.1}s after the last push ({} retried invocations, {:.1}s after the kill)",
        t.as_secs_f64(),
        want.retries,
        down.elapsed().as_secs_f64()
    );
    // Prometheus kept scraping a complete view through the fault: every scrape that succeeded
    // held every series of the workers that did not run meanwhile, and the scrapes that failed
    // were those at the kill.
    let fault_to = unix_now();
    complete_view_throughout(&scraper, fault_from, fault_to, untouched);
    bed.start_again(&victim);
    bed.wait_members(3, Duration::from_secs(60));
}
