//! The users' docker-compose example (docs/examples/docker-compose.yml) runs as documented, offline:
//! images for pushgate, haproxy and Prometheus built from binaries on this host with
//! scripts/build-image.sh, the sample function pushed through the example's load balancer, its
//! series found in the example's long-term store with the values the function pushed. Fails without a Docker engine unless PUSHGATE_SKIP_CONTAINER_TESTS=1.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use cluster_tests::prometheus::query;
use cluster_tests::{free_port, http, require_docker, wait_for};

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn run(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `docker-compose down -v` on drop, also when the test fails.
struct Project {
    name: String,
    dir: PathBuf,
    env: Vec<(String, String)>,
}

impl Project {
    fn compose(&self) -> Command {
        let mut c = Command::new("docker-compose");
        c.current_dir(&self.dir)
            .args(["-p", &self.name])
            .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())));
        c
    }
}

impl Drop for Project {
    fn drop(&mut self) {
        if std::thread::panicking() {
            if let Ok(o) = self.compose().args(["logs", "--tail", "20"]).output() {
                eprintln!("{}", String::from_utf8_lossy(&o.stdout));
            }
        }
        let _ = self.compose().args(["down", "-v", "-t", "5"]).output();
    }
}

#[test]
fn compose_example_runs_the_bank_function_end_to_end() {
    require_docker!();
    assert!(
        Command::new("docker-compose")
            .arg("version")
            .output()
            .map(|o| o.status.success())
            .unwrap_or(false),
        "docker-compose is needed (scripts/install-testbed-deps.sh installs it)"
    );
    let build = repo().join("scripts/build-image.sh");
    let suffix = format!("{}", std::process::id());
    let images = [
        (cluster_tests::binary(), format!("pgbed-pushgate:{suffix}")),
        (
            PathBuf::from("/usr/sbin/haproxy"),
            format!("pgbed-haproxy:{suffix}"),
        ),
        (
            PathBuf::from("/usr/bin/prometheus"),
            format!("pgbed-prometheus:{suffix}"),
        ),
    ];
    // Declared before the project: dropped after it (images outlive their containers).
    let _images = Images(images.iter().map(|(_, t)| t.clone()).collect());
    for (bin, tag) in &images {
        assert!(Path::new(bin).exists(), "{} is needed", bin.display());
        run(Command::new(&build).arg(bin).arg(tag));
    }
    // The gossip key, made as the example's README says.
    let key_file = std::env::temp_dir().join(format!("pgbed-gossip-{suffix}.keys"));
    run(Command::new("sh").arg("-c").arg(format!(
        "head -c 32 /dev/urandom | base64 > '{}'",
        key_file.display()
    )));
    let _key_file = RemoveOnDrop(key_file.clone());
    let (lb, prom, store) = (free_port(), free_port(), free_port());
    let project = Project {
        name: format!("pgbed{suffix}"),
        dir: repo().join("docs/examples"),
        env: vec![
            ("PUSHGATE_IMAGE".into(), images[0].1.clone()),
            ("HAPROXY_IMAGE".into(), images[1].1.clone()),
            ("PROMETHEUS_IMAGE".into(), images[2].1.clone()),
            ("LB_PORT".into(), lb.to_string()),
            ("PROMETHEUS_PORT".into(), prom.to_string()),
            ("STORE_PORT".into(), store.to_string()),
            ("GOSSIP_KEY_FILE".into(), key_file.display().to_string()),
        ],
    };
    // The example's nodes use mutual TLS: make the certificates as the README says.
    run(Command::new(repo().join("docs/examples/make-certs.sh"))
        .current_dir(repo().join("docs/examples"))
        .args(["tls", "pushgate-1", "pushgate-2", "pushgate-3"]));
    run(project.compose().args(["up", "-d"]));
    let lb_url = format!("http://127.0.0.1:{lb}");
    wait_for(
        "the example's load balancer to route to 3 active nodes",
        Duration::from_secs(60),
        || {
            matches!(http("GET", &lb_url, "/metrics", b""),
                Ok((200, b)) if b.contains("pushgate_cluster_members{state=\"active\"} 3\n"))
        },
    );
    let function = repo().join("docs/examples/bank_autodebit.py");
    // What each run reported pushing: (instance, account_id) -> balance, and instance ->
    // (successful, failed) debits.
    let mut balances = BTreeMap::new();
    let mut debits = BTreeMap::new();
    for w in 0..3 {
        let worker = format!("worker-{w}");
        let out = run(cluster_tests::python_with_client()
            .arg(&function)
            .args(["--gateway", &format!("127.0.0.1:{lb}")])
            .args(["--worker", &worker, "--run", "2"]));
        let v: serde_json::Value = serde_json::from_str(out.trim())
            .unwrap_or_else(|e| panic!("function output {out:?}: {e}"));
        for (account, b) in v["balances"].as_object().expect("balances") {
            balances.insert(
                (worker.clone(), account.clone()),
                b.as_f64().expect("a balance"),
            );
        }
        let n = |k: &str| v[k].as_f64().expect("a count");
        debits.insert(worker, (n("ok"), n("failed")));
    }
    assert_eq!(balances.len(), 15, "{balances:?}");
    // The example scrapes every 15 s: allow a few rounds. The store must hold every pushed
    // series with the value pushed, and nothing else.
    let store_url = format!("http://127.0.0.1:{store}");
    let deadline = Instant::now() + Duration::from_secs(90);
    while let Err(e) = store_holds(&store_url, &balances, &debits) {
        assert!(
            Instant::now() < deadline,
            "the example's store did not hold the pushed values within 90 s: {e}"
        );
        std::thread::sleep(Duration::from_secs(1));
    }
    drop(project);
}

/// Whether the store holds exactly the pushed balances and debit counters, with their values.
fn store_holds(
    store: &str,
    balances: &BTreeMap<(String, String), f64>,
    debits: &BTreeMap<String, (f64, f64)>,
) -> Result<(), String> {
    let label = |m: &serde_json::Value, k: &str| m[k].as_str().unwrap_or("").to_owned();
    let got: BTreeMap<(String, String), f64> =
        query(store, "bank_account_balance{job=\"bank_autodebit\"}")?
            .into_iter()
            .map(|(m, v)| ((label(&m, "instance"), label(&m, "account_id")), v))
            .collect();
    if got != *balances {
        return Err(format!("balances: store {got:?}, pushed {balances:?}"));
    }
    for (metric, pick) in [
        ("bank_debits_successful_total", 0),
        ("bank_debits_failed_total", 1),
    ] {
        let got: BTreeMap<String, f64> =
            query(store, &format!("{metric}{{job=\"bank_autodebit\"}}"))?
                .into_iter()
                .map(|(m, v)| (label(&m, "instance"), v))
                .collect();
        let want: BTreeMap<String, f64> = debits
            .iter()
            .map(|(w, c)| (w.clone(), if pick == 0 { c.0 } else { c.1 }))
            .collect();
        if got != want {
            return Err(format!("{metric}: store {got:?}, pushed {want:?}"));
        }
    }
    Ok(())
}

/// Removes the images built for this run on drop.
struct Images(Vec<String>);

impl Drop for Images {
    fn drop(&mut self) {
        for tag in &self.0 {
            let _ = Command::new("docker").args(["rmi", "-f", tag]).output();
        }
    }
}

/// Removes a file on drop.
struct RemoveOnDrop(PathBuf);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}
