//! Aggregating groups (`/aggregate`) with the real binary: concurrent invocations of the seed's
//! function through the unmodified Python client add up exactly, protobuf and text bodies, the
//! grouping-key syntax, refusals that change nothing, `Idempotency-Key`, DELETE, the status
//! page and JSON API, and the state through a restart with the persistence file.
//! Env: `PUSHGATE_BIN`, `PYTHON` (default `python3`).

mod common;

use common::*;
use std::process::{Command, Stdio};
use std::time::Duration;

fn python() -> String {
    std::env::var("PYTHON").unwrap_or_else(|_| "python3".to_string())
}

fn value(text: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    sample_value(text, name, labels)
        .unwrap_or_else(|| panic!("missing {name}{labels:?} in:\n{text}"))
        .parse()
        .expect("sample values are numbers")
}

const JOB: (&str, &str) = ("job", "bank_auto_debit");

/// 50 processes each run the function 6 times at once; what the scrape shows equals what the
/// gateway acknowledged, exactly (retries with the same Idempotency-Key counted once).
#[test]
fn concurrent_python_invocations_add_up_exactly() {
    let check = Command::new(python())
        .args(["-c", "import prometheus_client"])
        .output();
    assert!(
        matches!(&check, Ok(o) if o.status.success()),
        "python3 with prometheus_client is required (scripts/install-test-deps.sh): {check:?}"
    );
    let pg = Gateway::start("pushgate", &pushgate_bin(), &[], "");
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/python/bank_auto_debit.py"
    );
    let (workers, invocations) = (50, 6);
    let children: Vec<_> = (0..workers)
        .map(|w| {
            Command::new(python())
                .arg(script)
                .arg(pg.addr())
                .arg(w.to_string())
                .arg(invocations.to_string())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .expect("python3 should start")
        })
        .collect();
    let mut acked: Vec<f64> = Vec::new();
    for child in children {
        let out = child.wait_with_output().expect("python3 should finish");
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "bank_auto_debit.py failed\n{stdout}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        for line in stdout.lines() {
            match line.split_once(' ') {
                Some(("ACK", v)) => acked.push(v.parse().expect("the script prints numbers")),
                _ => panic!("unacknowledged push: {line}\ngateway log:\n{}", pg.log()),
            }
        }
    }
    assert_eq!(acked.len(), workers * invocations);
    let text = pg.get("/metrics").text();
    let n = acked.len() as f64;
    let job = [JOB, ("instance", "")];
    assert_eq!(value(&text, "bank_auto_debit_successful_total", &job), n);
    assert_eq!(
        value(&text, "bank_auto_debit_duration_seconds_count", &job),
        n
    );
    assert_eq!(
        value(&text, "bank_auto_debit_duration_seconds_sum", &job),
        acked.iter().sum::<f64>()
    );
    for (le, bound) in [("0.25", 0.25), ("0.5", 0.5), ("1", 1.0), ("+Inf", f64::MAX)] {
        let want = acked.iter().filter(|v| **v <= bound).count() as f64;
        let got = value(
            &text,
            "bank_auto_debit_duration_seconds_bucket",
            &[JOB, ("le", le)],
        );
        assert_eq!(got, want, "bucket le={le}");
    }
    assert!(
        text.contains("# TYPE bank_auto_debit_successful_total counter"),
        "{text}"
    );
    // The status page and the JSON API say the group aggregates.
    assert!(pg.get("/").text().contains("aggregating"));
    let (status, api) = pg.api_metrics_normalised();
    assert_eq!(status, 200);
    let group = &api["data"][0];
    assert_eq!(group["aggregating"], serde_json::Value::Bool(true), "{api}");
}

fn histogram_body(bounds: &[(f64, u64)], count: u64, sum: f64) -> Vec<u8> {
    pb::delimited(&[
        pb::family(
            "fn_calls_total",
            Some("calls"),
            pb::MetricType::Counter,
            vec![pb::counter(&[("clearmode", "aggregate")], 1.0)],
        ),
        pb::family(
            "fn_seconds",
            None,
            pb::MetricType::Histogram,
            vec![pb::histogram(&[], count, sum, bounds)],
        ),
    ])
}

fn put_protobuf(gw: &Gateway, path: &str, body: Vec<u8>) -> Resp {
    gw.request(
        &Req::new("PUT", path)
            .header("Content-Type", pb::CONTENT_TYPE)
            .body(body),
    )
}

#[test]
fn protobuf_and_text_pushes_add_up_and_refusals_change_nothing() {
    let gw = Gateway::start("pushgate", &pushgate_bin(), &[], "");
    // `@base64` in the grouping key: region = "eu/west".
    let path = "/aggregate/metrics/job/fn/region@base64/ZXUvd2VzdA";
    let labels = [("job", "fn"), ("region", "eu/west")];
    let buckets = [(0.5, 1), (f64::INFINITY, 2)];
    for _ in 0..2 {
        let r = put_protobuf(&gw, path, histogram_body(&buckets, 2, 1.5));
        assert_eq!(r.status, 200, "{}", r.text());
    }
    let r = gw.post_text(path, "# TYPE fn_calls_total counter\nfn_calls_total 3\n");
    assert_eq!(r.status, 200, "{}", r.text());
    let text = gw.get("/metrics").text();
    assert_eq!(value(&text, "fn_calls_total", &labels), 5.0);
    assert_eq!(value(&text, "fn_seconds_count", &labels), 4.0);
    assert_eq!(value(&text, "fn_seconds_sum", &labels), 3.0);
    assert!(!text.contains("clearmode"), "{text}");

    // Other buckets: 400 with a clear message, nothing changes.
    let r = put_protobuf(
        &gw,
        path,
        histogram_body(&[(1.0, 1), (f64::INFINITY, 2)], 2, 1.0),
    );
    assert_eq!(r.status, 400);
    assert!(r.text().contains("bucket bounds [1, +Inf]"), "{}", r.text());
    let after = gw.get("/metrics").text();
    assert_eq!(value(&after, "fn_calls_total", &labels), 5.0);
    assert_eq!(value(&after, "fn_seconds_count", &labels), 4.0);

    // A retried push with the same Idempotency-Key is acknowledged and counted once.
    let keyed = || {
        gw.request(
            &Req::new("POST", path)
                .header("Idempotency-Key", "invocation-7")
                .body("# TYPE fn_calls_total counter\nfn_calls_total 1\n"),
        )
    };
    assert_eq!(keyed().status, 200);
    assert_eq!(keyed().status, 200);
    let text = gw.get("/metrics").text();
    assert_eq!(value(&text, "fn_calls_total", &labels), 6.0);
    let bad = gw.request(
        &Req::new("POST", path)
            .header("Idempotency-Key", &"x".repeat(300))
            .body("# TYPE fn_calls_total counter\nfn_calls_total 1\n"),
    );
    assert_eq!(bad.status, 400);
    assert!(bad.text().contains("Idempotency-Key"), "{}", bad.text());

    // DELETE on the same path resets the group.
    assert_eq!(gw.delete(path).status, 202);
    let r = gw.put_text(path, "# TYPE fn_calls_total counter\nfn_calls_total 1\n");
    assert_eq!(r.status, 200);
    let text = gw.get("/metrics").text();
    assert_eq!(value(&text, "fn_calls_total", &labels), 1.0);
    assert!(!text.contains("fn_seconds"), "{text}");

    // A group name without a job is not a push route, as upstream's.
    assert_eq!(gw.put_text("/aggregate/metrics/job/", "x 1\n").status, 404);
}

fn signal_term(pid: u32) {
    let ok = Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .expect("kill should run")
        .success();
    assert!(ok, "kill -TERM {pid} failed");
}

#[test]
fn the_sums_survive_a_restart_with_the_persistence_file() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("snap");
    let flags = vec![format!("--persistence.file={}", file.display())];
    let body = "# TYPE c counter\nc 1\n";
    let mut gw = Gateway::start("pushgate", &pushgate_bin(), &flags, "");
    for _ in 0..3 {
        assert_eq!(gw.put_text("/aggregate/metrics/job/p", body).status, 200);
    }
    signal_term(gw.pid());
    assert!(gw.wait_exit(Duration::from_secs(20)), "no exit on SIGTERM");
    let gw = Gateway::start("pushgate", &pushgate_bin(), &flags, "");
    let labels = [("job", "p")];
    assert_eq!(value(&gw.get("/metrics").text(), "c", &labels), 3.0);
    assert_eq!(gw.put_text("/aggregate/metrics/job/p", body).status, 200);
    assert_eq!(value(&gw.get("/metrics").text(), "c", &labels), 4.0);
}

/// On a cluster every node takes aggregating pushes (a round-robin proxy sends each request to
/// the next node): they add up once each, a retry with the same Idempotency-Key through the
/// other node counts once, DELETE resets the group for every node, and ordinary pushes work as
/// before. (The failure cases are cluster-tests/tests/aggregate.rs.)
#[test]
fn a_cluster_adds_aggregating_pushes_through_every_node() {
    let cluster = Gateway::start_cluster("pushgate", &pushgate_bin(), &[], "", 2);
    let body = "# TYPE c counter\nc 1\n";
    for _ in 0..6 {
        assert_eq!(
            cluster.put_text("/aggregate/metrics/job/fn", body).status,
            200
        );
    }
    let keyed = Req::new("PUT", "/aggregate/metrics/job/fn")
        .header("Idempotency-Key", "retry-1")
        .body(body);
    for _ in 0..2 {
        assert_eq!(cluster.request(&keyed).status, 200);
    }
    for _ in 0..2 {
        let text = cluster.get("/metrics").text();
        assert_eq!(value(&text, "c", &[("job", "fn")]), 7.0, "{text}");
    }
    assert_eq!(cluster.delete("/aggregate/metrics/job/fn").status, 202);
    assert_eq!(
        cluster.put_text("/aggregate/metrics/job/fn", body).status,
        200
    );
    for _ in 0..2 {
        let text = cluster.get("/metrics").text();
        assert_eq!(value(&text, "c", &[("job", "fn")]), 1.0, "{text}");
    }
    assert_eq!(
        cluster
            .put_text("/metrics/job/plain", "# TYPE d counter\nd 1\n")
            .status,
        200
    );
    let text = cluster.get("/metrics").text();
    assert_eq!(value(&text, "d", &[("job", "plain")]), 1.0);
}
