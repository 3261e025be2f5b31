//! The status page and the Cluster page, in a real browser and over plain HTTP.
//!
//! The browser tests start real pushgate processes, push real groups, and run
//! `tests/python/status_ui.py` (selenium driving Debian's headless Chromium through
//! chromedriver): the page loads, a group expands, the filter narrows the list, a group is
//! deleted after the confirm, Delete All through the admin API, and the Cluster page of a real
//! 3-node cluster lists every member. They need `apt-get install chromium chromium-driver` and
//! `pip install selenium` (scripts/install-test-deps.sh); without them they fail saying so,
//! unless `PUSHGATE_SKIP_BROWSER_TESTS=1` is set. Screenshots go to `$PUSHGATE_SCREENSHOTS`
//! (the docs' are made with `PUSHGATE_SCREENSHOTS=docs/images`), else to a temp dir.
//! Env: `PUSHGATE_BIN`, `PYTHON`, `CHROMIUM`, `CHROMEDRIVER`.

mod common;

use common::*;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

const XSS: &str = "<script>window.__pwned=true</script><img src=x onerror=\"window.__pwned=true\">";

fn python() -> String {
    std::env::var("PYTHON").unwrap_or_else(|_| "python3".to_string())
}

/// Whether the browser tests run: `false` only when explicitly opted out; panics naming what to
/// install when something is missing.
fn browser_available() -> bool {
    if std::env::var("PUSHGATE_SKIP_BROWSER_TESTS").is_ok_and(|v| v == "1") {
        eprintln!("PUSHGATE_SKIP_BROWSER_TESTS=1: browser test not run");
        return false;
    }
    let chromium = std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
    let driver = std::env::var("CHROMEDRIVER").unwrap_or_else(|_| "/usr/bin/chromedriver".into());
    for (path, pkg) in [(&chromium, "chromium"), (&driver, "chromium-driver")] {
        assert!(
            Path::new(path).exists(),
            "{path} is missing: apt-get install -y chromium chromium-driver (or run \
scripts/install-test-deps.sh; set PUSHGATE_SKIP_BROWSER_TESTS=1 to skip the browser tests); \
package {pkg}"
        );
    }
    let sel = Command::new(python())
        .args(["-c", "import selenium"])
        .output();
    assert!(
        matches!(&sel, Ok(o) if o.status.success()),
        "python3 with selenium is required: pip install selenium (or set PYTHON; \
PUSHGATE_SKIP_BROWSER_TESTS=1 skips the browser tests): {sel:?}"
    );
    true
}

fn shot_dir(tmp: &Path) -> PathBuf {
    match std::env::var("PUSHGATE_SCREENSHOTS") {
        Ok(d) if !d.is_empty() => {
            let p = Path::new(env!("CARGO_MANIFEST_DIR")).join(d);
            std::fs::create_dir_all(&p).expect("screenshot dir should be creatable");
            p
        }
        _ => tmp.to_path_buf(),
    }
}

/// Runs the selenium script; returns its output, or panics with it and the gateway's log.
fn run_browser(
    mode: &str,
    base: &str,
    shots: &Path,
    arg: &str,
    log: impl Fn() -> String,
) -> String {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/python/status_ui.py");
    let out = Command::new(python())
        .arg(script)
        .args([mode, base, &shots.display().to_string(), arg])
        .output()
        .expect("python3 should run");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success() && stdout.contains("DONE"),
        "status_ui.py {mode} failed\nstdout:\n{stdout}\nstderr:\n{}\ngateway log:\n{}",
        String::from_utf8_lossy(&out.stderr),
        log()
    );
    stdout
}

fn is_png(p: &Path) -> bool {
    std::fs::read(p).is_ok_and(|b| b.starts_with(b"\x89PNG\r\n\x1a\n") && b.len() > 1000)
}

/// Groups of every kind the page marks: a histogram and a summary, a failed last push, an
/// expiring group, a long label line, a label value with markup in it, and one to delete.
fn push_groups(pg: &Gateway) {
    let ok = |path: &str, body: &str| {
        let r = pg.put_text(path, body);
        assert_eq!(r.status, 200, "{path}: {}", r.text());
    };
    ok(
        "/metrics/job/batch_hist/instance/worker-1",
        "# HELP job_duration_seconds How long the job ran.\n# TYPE job_duration_seconds histogram\n\
job_duration_seconds_bucket{le=\"1\"} 2\njob_duration_seconds_bucket{le=\"10\"} 5\n\
job_duration_seconds_bucket{le=\"+Inf\"} 6\njob_duration_seconds_sum 31.5\njob_duration_seconds_count 6\n\
# HELP job_last_success_unixtime Last success.\n# TYPE job_last_success_unixtime gauge\njob_last_success_unixtime 1.7e9\n",
    );
    ok(
        "/metrics/job/batch_summary/instance/worker-2/team/payments",
        "# TYPE rpc_latency summary\nrpc_latency{quantile=\"0.5\"} 0.2\nrpc_latency{quantile=\"0.99\"} 1.5\n\
rpc_latency_sum 40\nrpc_latency_count 100\n",
    );
    ok("/metrics/job/to_delete", "to_delete_metric 1\n");
    ok(
        "/metrics/job/nightly/instance/db-1/region/eu-west-1/datacenter/frankfurt-2/rack/r17/\
owner/a-very-long-team-name-that-keeps-going-and-going-to-test-wrapping-of-label-lines",
        "backup_bytes 1.2e10\n",
    );
    let r = pg.request(
        &Req::new("PUT", "/metrics/job/expiring")
            .header("Pushgate-Group-TTL", "10m")
            .body("cache_entries 42\n"),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    ok(
        &format!(
            "/metrics/job/xss/weird@base64/{}",
            base64_url(XSS.as_bytes())
        ),
        "xss_metric 1\n",
    );
    // A failed push: its last push fails (a type conflict) after a good one.
    ok("/metrics/job/flaky/instance/a", "flaky_metric 1\n");
    let r = pg.put_text(
        "/metrics/job/flaky/instance/b",
        "# TYPE flaky_metric counter\nflaky_metric 1\n",
    );
    assert_eq!(
        r.status,
        400,
        "the conflicting push should fail: {}",
        r.text()
    );
}

fn base64_url(b: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b)
}

#[test]
fn status_page_in_a_browser() {
    if !browser_available() {
        return;
    }
    let pg = Gateway::start(
        "pushgate",
        &pushgate_bin(),
        &["--web.enable-admin-api".to_string()],
        "",
    );
    push_groups(&pg);
    let page = pg.get("/").text();
    assert!(page.contains("Last push failed!"), "{page}");
    // The markup in the label value arrives escaped (the browser then shows it as text).
    assert!(!page.contains("<script>window"), "{page}");
    assert!(
        page.contains("&lt;script&gt;window.__pwned=true&lt;/script&gt;"),
        "{page}"
    );
    let tmp = tempfile::tempdir().expect("temp dir");
    let shots = shot_dir(tmp.path());
    let out = run_browser(
        "status",
        &format!("http://{}", pg.addr()),
        &shots,
        XSS,
        || pg.log(),
    );
    for step in [
        "OK label value rendered inert",
        "OK group expands",
        "OK open state kept",
        "OK filter narrows",
        "OK group deleted after the confirm",
        "OK delete all",
    ] {
        assert!(out.contains(step), "missing step {step:?}:\n{out}");
    }
    for name in ["status-page.png", "status-tab.png", "status-filter.png"] {
        assert!(is_png(&shots.join(name)), "{name} is not a PNG screenshot");
    }
    // The browser's deletes went through the API: nothing is left.
    let (_, api) = pg.api_metrics_normalised();
    assert_eq!(api["data"], serde_json::json!([]), "{api}");
}

#[test]
fn cluster_page_in_a_browser_lists_every_member_of_a_3_node_cluster() {
    if !browser_available() {
        return;
    }
    let pg = Gateway::start_cluster(
        "pushgate",
        &pushgate_bin(),
        &["--cluster.anti-entropy-interval=1s".to_string()],
        "",
        3,
    );
    assert_eq!(
        pg.put_text("/metrics/job/nightly/instance/db-1", "x 1\n")
            .status,
        200
    );
    // Every node's counts and version reach the page through gossip: wait for them (through
    // the round-robin proxy, every node answers in turn).
    let page = poll_until(Duration::from_secs(20), || {
        let pages: Vec<String> = (0..3).map(|_| pg.get("/cluster").text()).collect();
        pages
            .iter()
            .all(|p| {
                // Three rows with every detail; the one group held by all three (R=3) and
                // owned as primary by exactly one (groups, primary, hints).
                p.matches("class=\"member\"").count() == 3
                    && !p.contains("<td>?</td>")
                    && p.matches("<td>1</td><td>1</td><td>0</td>").count() == 1
                    && p.matches("<td>1</td><td>0</td><td>0</td>").count() == 2
            })
            .then(|| pages[0].clone())
    })
    .unwrap_or_else(|| {
        panic!(
            "the Cluster pages did not list 3 members with their details:\n{}",
            pg.get("/cluster").text()
        )
    });
    let ids: Vec<String> = page
        .split("<tr class=\"member\"><td>")
        .skip(1)
        .map(|r| r.split(['<', ' ']).next().unwrap_or("").to_owned())
        .collect();
    assert_eq!(ids.len(), 3, "{page}");
    // The node counted as primary is the one the owners form names first.
    let primary_row = page
        .split("<tr class=\"member\"><td>")
        .find(|r| r.contains("<td>1</td><td>1</td><td>0</td>"))
        .expect("a primary row");
    let primary = primary_row.split(['<', ' ']).next().unwrap_or("");
    let owners = pg
        .get("/cluster?key=%2Fjob%2Fnightly%2Finstance%2Fdb-1")
        .text();
    assert!(
        owners.contains(&format!(
            "<li class=\"owner\"><b>{primary}</b> (primary)</li>"
        )),
        "{primary} should be the primary owner:\n{owners}"
    );
    // A key that is not a grouping key path is a 400 that says why.
    let bad = pg.get("/cluster?key=%2Fnojob%2Fx");
    assert_eq!(bad.status, 400);
    assert!(
        bad.text().contains("path does not start with /job/"),
        "{}",
        bad.text()
    );
    let tmp = tempfile::tempdir().expect("temp dir");
    let shots = shot_dir(tmp.path());
    let out = run_browser(
        "cluster",
        &format!("http://{}", pg.addr()),
        &shots,
        &ids.join(","),
        || pg.log(),
    );
    assert!(out.contains("OK cluster lists 3 members"), "{out}");
    assert!(is_png(&shots.join("cluster-page.png")));
}

/// Paging, sorting and the filter over HTTP; a bad parameter is a 400 that says which.
#[test]
fn status_page_pages_sorts_filters_and_refuses_bad_parameters() {
    let pg = Gateway::start("pushgate", &pushgate_bin(), &[], "");
    for i in 0..25 {
        let r = pg.put_text(
            &format!("/metrics/job/j{i:02}/instance/i"),
            &format!("m_{i} 1\n"),
        );
        assert_eq!(r.status, 200);
    }
    let rows = |q: &str| {
        let r = pg.get(&format!("/{q}"));
        assert_eq!(r.status, 200, "{q}: {}", r.text());
        r.text()
            .split("<summary><span class=\"lbl job\">job=\"")
            .skip(1)
            .map(|s| s.split('"').next().unwrap_or("").to_owned())
            .collect::<Vec<_>>()
    };
    assert_eq!(rows("?per_page=10").len(), 10);
    assert_eq!(
        rows("?per_page=10&page=3"),
        ["j20", "j21", "j22", "j23", "j24"]
    );
    assert!(rows("?per_page=10&page=9").is_empty());
    // Newest push first: the last pushed group leads.
    assert_eq!(rows("?sort=push_new&per_page=1"), ["j24"]);
    assert_eq!(rows("?sort=push_old&per_page=1"), ["j00"]);
    // A metric name, a label filter, and both at once.
    assert_eq!(rows("?q=m_7"), ["j07"]);
    assert_eq!(
        rows("?q=job%3Dj1"),
        (10..20).map(|i| format!("j{i}")).collect::<Vec<_>>()
    );
    assert_eq!(rows("?q=job%3Dj1+m_13"), ["j13"]);
    assert_eq!(
        pg.get("/status?q=instance%3Di&per_page=5")
            .text()
            .matches("<details class=\"grp")
            .count(),
        5
    );
    for (q, word) in [
        ("?page=0", "page"),
        ("?per_page=100000", "per_page"),
        ("?sort=random", "sort"),
        ("?stale=forever", "stale"),
    ] {
        let r = pg.get(&format!("/{q}"));
        assert_eq!(r.status, 400, "{q}");
        assert!(r.text().starts_with(word), "{q}: {}", r.text());
    }
    // A single node's Cluster page says so.
    let c = pg.get("/cluster");
    assert_eq!(c.status, 200);
    assert!(c.text().contains("This is a single node"), "{}", c.text());
}
