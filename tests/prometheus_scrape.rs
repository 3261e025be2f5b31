//! Scrapes pushgate with the real Prometheus server (`honor_labels: true`, 1 s interval) and checks the
//! pushed series arrive with their job/instance/grouping labels and values.
//! Env: `PUSHGATE_BIN`, `PROMETHEUS_BIN` (default `/usr/bin/prometheus`).

mod common;

use common::*;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

struct Prometheus {
    child: Child,
    port: u16,
    _dir: tempfile::TempDir,
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_prometheus(target: &str) -> Prometheus {
    let bin = std::env::var_os("PROMETHEUS_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| "/usr/bin/prometheus".into());
    assert!(
        bin.exists(),
        "Prometheus {} is missing: apt-get install -y prometheus, or set PROMETHEUS_BIN",
        bin.display()
    );
    let dir = tempfile::tempdir().expect("temp dir should be creatable");
    let cfg = dir.path().join("prometheus.yml");
    std::fs::write(
        &cfg,
        format!(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nscrape_configs:\n  - job_name: pushgate\n    honor_labels: true\n    scrape_interval: 1s\n    static_configs:\n      - targets: ['{target}']\n"
        ),
    )
    .expect("config should be writable");
    let port = free_port();
    let log = std::fs::File::create(dir.path().join("log.txt")).expect("log should be creatable");
    let child = Command::new(&bin)
        .arg(format!("--config.file={}", cfg.display()))
        .arg(format!(
            "--storage.tsdb.path={}",
            dir.path().join("data").display()
        ))
        .arg(format!("--web.listen-address=127.0.0.1:{port}"))
        .current_dir(dir.path())
        .stdin(Stdio::null())
        .stdout(log.try_clone().expect("log handle should clone"))
        .stderr(log)
        .spawn()
        .unwrap_or_else(|e| panic!("cannot spawn {}: {e}", bin.display()));
    let p = Prometheus {
        child,
        port,
        _dir: dir,
    };
    let ready = poll_until(Duration::from_secs(30), || {
        http(
            &format!("127.0.0.1:{port}"),
            &Req::get("/-/ready"),
            Duration::from_secs(2),
        )
        .ok()
        .filter(|r| r.status == 200)
    });
    assert!(ready.is_some(), "prometheus did not become ready");
    p
}

fn query(p: &Prometheus, q: &str) -> serde_json::Value {
    let enc: String = q
        .bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b == b'_' {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect();
    let r = http(
        &format!("127.0.0.1:{}", p.port),
        &Req::get(&format!("/api/v1/query?query={enc}")),
        Duration::from_secs(5),
    )
    .expect("query should answer");
    serde_json::from_slice(&r.body).unwrap_or(serde_json::Value::Null)
}

#[test]
fn prometheus_scrapes_pushed_series() {
    let pg = Gateway::start("pushgate", &pushgate_bin(), &[], "");
    let prom = start_prometheus(&pg.addr());
    assert_eq!(
        pg.put_text(
            "/metrics/job/bank_autodebit/instance/worker-1",
            "# TYPE bank_account_balance gauge\nbank_account_balance{account_id=\"acc-1\"} 1500.25\nbank_account_balance{account_id=\"acc-2\"} -20.5\n# TYPE bank_debits_successful_total counter\nbank_debits_successful_total 7\n",
        )
        .status,
        200
    );
    assert_eq!(
        pg.put_text(
            "/metrics/job/nightly",
            "bank_debits_failed_total{job=\"ignored\"} 3\n"
        )
        .status,
        200
    );

    let result = poll_until(Duration::from_secs(60), || {
        let v = query(&prom, "bank_account_balance");
        let r = v["data"]["result"].as_array().cloned().unwrap_or_default();
        (r.len() == 2).then_some(r)
    })
    .expect("bank_account_balance did not show up in Prometheus within 60 s");
    for s in &result {
        let m = &s["metric"];
        assert_eq!(
            m["job"], "bank_autodebit",
            "honor_labels keeps the pushed job: {s}"
        );
        assert_eq!(m["instance"], "worker-1", "{s}");
        let want = match m["account_id"].as_str() {
            Some("acc-1") => "1500.25",
            Some("acc-2") => "-20.5",
            other => panic!("unexpected account_id {other:?}"),
        };
        assert_eq!(s["value"][1], want, "{s}");
    }
    let one = |q: &str| {
        poll_until(Duration::from_secs(60), || {
            let v = query(&prom, q);
            v["data"]["result"]
                .as_array()
                .and_then(|a| a.first().cloned())
        })
        .unwrap_or_else(|| panic!("{q} not in Prometheus within 60 s"))
    };
    let c = one("bank_debits_successful_total");
    assert_eq!(c["value"][1], "7");
    assert_eq!(c["metric"]["instance"], "worker-1");
    let f = one("bank_debits_failed_total");
    assert_eq!(
        f["metric"]["job"], "nightly",
        "grouping job overrides the body's job: {f}"
    );
    assert_eq!(f["value"][1], "3");
    // instance="" from the gateway means "no instance label" to Prometheus: honor_labels keeps it empty.
    assert!(
        f["metric"].get("instance").is_none(),
        "empty instance is dropped: {f}"
    );
    let pt = one("push_time_seconds{job=\"bank_autodebit\"}");
    assert!(
        pt["value"][1]
            .as_str()
            .and_then(|s| s.parse::<f64>().ok())
            .is_some_and(|t| t > 1.0e9),
        "{pt}"
    );
    // The scrape itself is healthy.
    let up = one("up");
    assert_eq!(up["value"][1], "1", "{up}");
}
