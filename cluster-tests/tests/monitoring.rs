//! The monitoring examples work as shipped: the alert rules (docs/examples/prometheus/
//! pushgate-alerts.yml) pass `promtool check rules` and their unit tests (`promtool test rules`,
//! a firing and a silent case for every alert), the scrape jobs (pushgate-scrape.yml) are a valid
//! Prometheus configuration as they are, and every query of the Grafana dashboard
//! (docs/examples/grafana/pushgate.json) returns data from a real Prometheus scraping a real
//! 3-node cluster with those jobs, after some pushes. Needs `promtool` and `prometheus` (Debian's
//! `prometheus` package): without them the tests fail saying so.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use cluster_tests::prometheus::Prometheus;
use cluster_tests::{http, Cluster};

fn examples() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../docs/examples")
}

fn read(rel: &str) -> String {
    let path = examples().join(rel);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Runs `promtool <args>` in `dir`; returns (success, stdout + stderr). Fails the test when
/// promtool is not installed.
fn promtool(dir: &Path, args: &[&str]) -> (bool, String) {
    let out = Command::new("promtool")
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap_or_else(|e| {
            panic!(
                "promtool cannot run ({e}): install Debian's prometheus package \
                 (apt-get install prometheus; scripts/install-test-deps.sh does)"
            )
        });
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

/// The alert names of the rules file (`- alert: Name` lines).
fn alert_names(rules: &str) -> Vec<String> {
    rules
        .lines()
        .filter_map(|l| l.trim().strip_prefix("- alert:"))
        .map(|n| n.trim().to_owned())
        .collect()
}

#[test]
fn alert_rules_pass_promtool_check() {
    let (ok, out) = promtool(
        &examples().join("prometheus"),
        &["check", "rules", "pushgate-alerts.yml"],
    );
    assert!(ok, "promtool check rules: {out}");
    let n = alert_names(&read("prometheus/pushgate-alerts.yml")).len();
    assert!(
        out.contains(&format!("SUCCESS: {n} rules found")),
        "promtool should find the {n} alerts: {out}"
    );
}

#[test]
fn every_alert_fires_on_its_condition_and_stays_silent_otherwise_in_promtool_unit_tests() {
    // Each alert needs a case expecting it to fire and one expecting silence: an alert whose
    // expression never matches would pass a silent case alone, one that always matches a firing
    // case alone.
    let tests = read("prometheus/pushgate-alerts.test.yml");
    let mut cases: BTreeMap<String, (usize, usize)> = BTreeMap::new();
    let lines: Vec<&str> = tests.lines().collect();
    for (i, l) in lines.iter().enumerate() {
        if let Some(name) = l.trim().strip_prefix("alertname:") {
            let silent = lines
                .get(i + 1)
                .is_some_and(|next| next.trim() == "exp_alerts: []");
            let e = cases.entry(name.trim().to_owned()).or_default();
            if silent {
                e.1 += 1;
            } else {
                e.0 += 1;
            }
        }
    }
    let alerts = alert_names(&read("prometheus/pushgate-alerts.yml"));
    assert!(
        alerts.len() >= 10,
        "the rules file should hold the alerts: {alerts:?}"
    );
    for a in &alerts {
        let (fires, silent) = cases.get(a).copied().unwrap_or_default();
        assert!(
            fires > 0 && silent > 0,
            "{a}: {fires} firing and {silent} silent cases in pushgate-alerts.test.yml; \
             it needs at least one of each"
        );
    }
    let (ok, out) = promtool(
        &examples().join("prometheus"),
        &["test", "rules", "pushgate-alerts.test.yml"],
    );
    assert!(ok, "promtool test rules: {out}");
}

#[test]
fn the_scrape_jobs_file_is_a_valid_prometheus_config_as_it_is() {
    let (ok, out) = promtool(
        &examples().join("prometheus"),
        &["check", "config", "pushgate-scrape.yml"],
    );
    assert!(ok, "promtool check config pushgate-scrape.yml: {out}");
}

/// The value the dashboard gives each of its variables (its default), and Grafana's built-ins.
fn dashboard_variables(dash: &serde_json::Value) -> BTreeMap<String, String> {
    let mut vars = BTreeMap::new();
    vars.insert("__rate_interval".to_owned(), "1m".to_owned());
    vars.insert("__interval".to_owned(), "15s".to_owned());
    for v in dash["templating"]["list"]
        .as_array()
        .expect("templating list")
    {
        let name = v["name"].as_str().expect("variable name").to_owned();
        let value = match v["type"].as_str() {
            Some("custom") => v["query"].as_str().expect("custom variable's value"),
            // Every node: the value Grafana sends for "All".
            Some("query") => v["allValue"].as_str().expect("query variable's allValue"),
            _ => continue,
        };
        vars.insert(name, value.to_owned());
    }
    vars
}

/// `expr` with every `$name` replaced by its value; an unknown variable fails the test.
fn substitute(expr: &str, vars: &BTreeMap<String, String>) -> String {
    let mut out = String::new();
    let mut rest = expr;
    while let Some(at) = rest.find('$') {
        out.push_str(&rest[..at]);
        let after = &rest[at + 1..];
        let len = after
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(after.len());
        let name = &after[..len];
        let value = vars
            .get(name)
            .unwrap_or_else(|| panic!("dashboard query {expr:?} uses ${name}, not a variable"));
        out.push_str(value);
        rest = &after[len..];
    }
    out.push_str(rest);
    out
}

/// (panel title, query) of every target of every panel, variables replaced.
fn dashboard_queries() -> Vec<(String, String)> {
    let dash: serde_json::Value =
        serde_json::from_str(&read("grafana/pushgate.json")).expect("the dashboard is JSON");
    let vars = dashboard_variables(&dash);
    let mut queries = Vec::new();
    for p in dash["panels"].as_array().expect("panels") {
        for t in p["targets"].as_array().into_iter().flatten() {
            let expr = t["expr"].as_str().expect("every target has an expr");
            let title = p["title"].as_str().unwrap_or_default().to_owned();
            queries.push((title, substitute(expr, &vars)));
        }
    }
    queries
}

#[test]
fn the_dashboard_layout_is_consistent() {
    // What Grafana does not refuse at import but shows wrong: panels sharing an id (one of them
    // is lost on save), panels past the 24-column grid or overlapping, a target without the
    // dashboard's data source variable, two targets of a panel with one refId.
    let dash: serde_json::Value =
        serde_json::from_str(&read("grafana/pushgate.json")).expect("the dashboard is JSON");
    let panels = dash["panels"].as_array().expect("panels");
    let mut ids = std::collections::BTreeSet::new();
    let mut cells: BTreeMap<(u64, u64), String> = BTreeMap::new();
    for p in panels {
        let title = p["title"].as_str().expect("every panel has a title");
        assert!(
            ids.insert(p["id"].as_u64().expect("panel id")),
            "{title}: id reused"
        );
        let g = &p["gridPos"];
        let [x, y, w, h] = ["x", "y", "w", "h"].map(|k| g[k].as_u64().expect("gridPos"));
        assert!(x + w <= 24, "{title}: past the 24 grid columns");
        for cx in x..x + w {
            for cy in y..y + h {
                if let Some(other) = cells.insert((cx, cy), title.to_owned()) {
                    panic!("{title} overlaps {other} at ({cx}, {cy})");
                }
            }
        }
        if p["type"] == "row" {
            continue;
        }
        let mut refs = std::collections::BTreeSet::new();
        for t in p["targets"].as_array().expect("a panel's targets") {
            assert_eq!(t["datasource"]["uid"], "${datasource}", "{title}: {t}");
            assert!(refs.insert(t["refId"].to_string()), "{title}: refId reused");
        }
        assert!(!refs.is_empty(), "{title}: no query");
    }
}

/// One request through `base`: its status.
fn push(base: &str, method: &str, path: &str, body: &str) -> u16 {
    http(method, base, path, body.as_bytes())
        .map(|(s, _)| s)
        .unwrap_or_else(|e| panic!("{method} {path} via {base}: {e}"))
}

#[test]
fn every_dashboard_query_returns_data_from_a_live_cluster() {
    let dir = tempfile::tempdir().expect("temp dir");
    let persistence = format!(
        "--persistence.file={}/node{{n}}.snapshot",
        dir.path().display()
    );
    let cluster = Cluster::start(3, &[&persistence, "--persistence.interval=1s"]);

    // The example's two jobs as they are, pointed at this cluster: node 1 stands for the load
    // balancer (any node serves the merged view).
    let nodes: Vec<String> = cluster
        .nodes
        .iter()
        .map(|n| format!("'127.0.0.1:{}'", n.http_port))
        .collect();
    let scrape = read("prometheus/pushgate-scrape.yml");
    let example_nodes = "'pushgate-1:9091', 'pushgate-2:9091', 'pushgate-3:9091'";
    assert!(
        scrape.contains("['lb:9091']") && scrape.contains(example_nodes),
        "pushgate-scrape.yml's targets changed: update this test"
    );
    let scrape = scrape
        .replace("['lb:9091']", &format!("[{}]", nodes[0]))
        .replace(example_nodes, &nodes.join(", "));
    let config = format!(
        "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n  evaluation_interval: 1s\n\
         rule_files: [pushgate-alerts.yml]\n{scrape}"
    );
    let rules = read("prometheus/pushgate-alerts.yml");
    let prom = Prometheus::start(
        &config,
        &[("pushgate-alerts.yml", &rules)],
        &["--enable-feature=extra-scrape-metrics"],
    );

    // Pushes through every node: PUT, POST and DELETE, and one invalid push (a refusal).
    for (i, node) in cluster.nodes.iter().enumerate() {
        let base = node.url();
        for g in 0..4 {
            let body = format!("dash_value{{slot=\"{g}\"}} {}\n", i * 10 + g);
            assert_eq!(
                push(&base, "PUT", &format!("/metrics/job/dash{i}/g/{g}"), &body),
                200
            );
        }
        let body = "dash_post_total 1\n";
        assert_eq!(
            push(&base, "POST", &format!("/metrics/job/dash{i}/g/0"), body),
            200
        );
        assert_eq!(
            push(&base, "DELETE", &format!("/metrics/job/dash{i}/g/3"), ""),
            202
        );
        assert_eq!(
            push(&base, "PUT", "/metrics/job/dash_bad", "not exposition {\n"),
            400
        );
    }

    let queries = dashboard_queries();
    assert!(queries.len() >= 20, "the dashboard's queries: {queries:?}");
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let empty: Vec<String> = queries
            .iter()
            .filter(|(_, q)| !matches!(prom.query(q), Ok(r) if !r.is_empty()))
            .map(|(title, q)| format!("{title}: {q} -> {:?}", prom.query(q)))
            .collect();
        if empty.is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{} of {} dashboard queries returned no data within 90 s:\n{}\nprometheus log:\n{}",
            empty.len(),
            queries.len(),
            empty.join("\n"),
            prom.log()
        );
        std::thread::sleep(Duration::from_secs(1));
    }

    // The node job holds every node's own series, labelled by instance; the client job only the
    // pushed groups (the answering node's self-metrics dropped).
    let per_node = prom
        .query("count by (instance) (pushgate_groups{job=\"pushgate-nodes\"})")
        .expect("query");
    assert_eq!(
        per_node.len(),
        3,
        "one pushgate_groups per node: {per_node:?}"
    );
    // Each scraped instance names its node id and version (the dashboard's Nodes table).
    let info = prom
        .query("count by (instance, node, version) (pushgate_cluster_node_info{job=\"pushgate-nodes\"})")
        .expect("query");
    assert_eq!(info.len(), 3, "one node_info per node: {info:?}");
    // ... from /-/node-metrics: no node scrape carries the pushed groups (nor builds them).
    let groups_per_node = prom
        .query("{job=\"pushgate-nodes\", __name__=~\"dash_.+|push_time_seconds\"}")
        .expect("query");
    assert!(
        groups_per_node.is_empty(),
        "the node job scrapes the groups: {} series, e.g. {:?}",
        groups_per_node.len(),
        groups_per_node.first()
    );
    let leaked = prom
        .query("{job=\"pushgate\", __name__=~\"pushgate_.+|process_.+|pushgateway_http_.+\"}")
        .expect("query");
    assert!(
        leaked.is_empty(),
        "the client job keeps self-metrics: {leaked:?}"
    );
    let pushed = prom
        .query("count(dash_value{job=~\"dash[0-9]\"})")
        .expect("query");
    assert_eq!(
        pushed.first().map(|s| s.1),
        Some(9.0),
        "the pushed groups: {pushed:?}"
    );

    // The alert rules load and evaluate without error against these series.
    let (status, body) = http("GET", &prom.url(), "/api/v1/rules", b"").expect("rules API");
    assert_eq!(status, 200, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).expect("rules JSON");
    let loaded: Vec<&serde_json::Value> = v["data"]["groups"]
        .as_array()
        .expect("rule groups")
        .iter()
        .flat_map(|g| g["rules"].as_array().expect("rules").iter())
        .collect();
    assert_eq!(loaded.len(), alert_names(&rules).len(), "{body}");
    for r in loaded {
        assert_eq!(
            r["health"], "ok",
            "rule {} failed to evaluate: {r}",
            r["name"]
        );
    }
}
