//! Runs the real Python client (`prometheus_client`) against pushgate: push_to_gateway,
//! pushadd_to_gateway, delete_from_gateway, grouping keys with instance and with a value that needs
//! base64, then checks what `/metrics` serves. Env: `PUSHGATE_BIN`, `PYTHON` (default `python3`).

mod common;

use common::*;
use std::process::Command;
use std::time::Duration;

fn python() -> String {
    std::env::var("PYTHON").unwrap_or_else(|_| "python3".to_string())
}

#[test]
fn python_client_bank_job() {
    let check = Command::new(python())
        .args(["-c", "import prometheus_client"])
        .output();
    match check {
        Ok(o) if o.status.success() => {}
        other => panic!(
            "python3 with prometheus_client is required (pip install prometheus_client, or set PYTHON): {other:?}"
        ),
    }
    let pg = Gateway::start("pushgate", &pushgate_bin(), &[], "");
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/python/bank_job.py");
    let out = Command::new(python())
        .arg(script)
        .arg(pg.addr())
        .output()
        .expect("python3 should run");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "bank_job.py failed\nstdout:\n{stdout}\nstderr:\n{}\ngateway log:\n{}",
        String::from_utf8_lossy(&out.stderr),
        pg.log()
    );
    assert!(stdout.contains("PHASE delete"), "{stdout}");

    // DELETE is applied asynchronously upstream: poll until the deleted group is gone.
    let text = poll_until(Duration::from_secs(5), || {
        let r = pg.get("/metrics");
        (r.status == 200 && !r.text().contains("bank_tmp")).then(|| r.text())
    })
    .expect("scrape should be 200 and the deleted group gone within 5 s");

    let v = |name: &str, labels: &[(&str, &str)]| {
        sample_value(&text, name, labels)
            .unwrap_or_else(|| panic!("missing {name}{labels:?} in:\n{text}"))
    };
    let job = ("job", "bank_autodebit");
    // Group {job}: instance="" added.
    assert_eq!(
        v(
            "bank_account_balance",
            &[job, ("instance", ""), ("account_id", "acc-1")]
        ),
        "1500.25"
    );
    assert_eq!(
        v(
            "bank_account_balance",
            &[job, ("instance", ""), ("account_id", "acc-2")]
        ),
        "-20.5"
    );
    assert_eq!(
        v("bank_debits_successful_total", &[job, ("instance", "")]),
        "7"
    );
    assert_eq!(v("bank_debits_failed_total", &[job, ("instance", "")]), "1");
    // Group {job, instance=worker-1}: POST kept the counters and added the new gauge.
    assert_eq!(
        v(
            "bank_account_balance",
            &[job, ("instance", "worker-1"), ("account_id", "acc-3")]
        ),
        "42"
    );
    assert_eq!(
        v(
            "bank_debits_successful_total",
            &[job, ("instance", "worker-1")]
        ),
        "3"
    );
    assert_eq!(
        v(
            "bank_batch_last_success_unixtime",
            &[job, ("instance", "worker-1")]
        ),
        "1.23456789e+09"
    );
    // Group {job, branch="eu/west/1"} (sent as branch@base64).
    assert_eq!(
        v(
            "bank_account_balance",
            &[job, ("branch", "eu/west/1"), ("account_id", "acc-4")]
        ),
        "10"
    );
    assert_eq!(
        v("bank_debits_failed_total", &[job, ("branch", "eu/west/1")]),
        "2"
    );
    // Types and help survive.
    assert!(
        text.contains("# TYPE bank_debits_successful_total counter"),
        "{text}"
    );
    assert!(text.contains("# TYPE bank_account_balance gauge"), "{text}");
    assert!(
        text.contains("# HELP bank_account_balance Account balance after the auto-debit run"),
        "{text}"
    );
    // Every group has push times; the deleted one is gone.
    for key in [
        vec![job, ("instance", "")],
        vec![job, ("instance", "worker-1")],
        vec![job, ("branch", "eu/west/1")],
    ] {
        let t: f64 = v("push_time_seconds", &key)
            .parse()
            .expect("push_time_seconds is a float");
        assert!(t > 1.0e9, "push_time_seconds{key:?} = {t}");
        assert_eq!(v("push_failure_time_seconds", &key), "0");
    }
    assert!(!text.contains("acc-9"));
}
