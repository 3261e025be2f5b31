//! Differential suite: every scenario is a sequence of HTTP requests sent to the upstream Pushgateway
//! (the oracle, Debian's 1.5.1) and to pushgate, each started fresh on its own loopback port. Every step's
//! status must match (plus error texts, redirect targets and chosen headers), and afterwards the
//! normalised `/metrics` and `/api/v1/metrics` must match.
//!
//! The deliberate differences (COMPAT.md "Upstream bugs pushgate fixes") are separate tests named
//! `fixed_bugN_*`; they assert upstream's buggy behaviour AND pushgate's fixed one, so they fail when
//! `PUSHGATE_BIN` points at upstream. Tests that only make sense for pushgate (limits, hostile bodies)
//! are named `pushgate_only_*`.
//!
//! Env: `PUSHGATE_BIN` (binary under test), `UPSTREAM_BIN` (oracle); see `tests/common/mod.rs`.

mod common;
#[path = "compat/generated.rs"]
mod generated;

use common::pb::{self, MetricType};
use common::*;
use std::time::{Duration, Instant};

/// Flag names of the pushgate-only limits (COMPAT.md bug 8). Not final upstream names: adjust here.
const FLAG_MAX_BODY_BYTES: &str = "--push.max-body-bytes";
const FLAG_MAX_SERIES_PER_PUSH: &str = "--push.max-series-per-push";
const FLAG_MAX_GROUPING_LABELS: &str = "--push.max-grouping-labels";
const FLAG_MAX_LABEL_VALUE_BYTES: &str = "--push.max-label-value-length";
/// Status for a body over the size limit, and for a push over a count/length limit.
const STATUS_BODY_TOO_LARGE: u16 = 413;
const STATUS_OVER_LIMIT: u16 = 400;

// ---------------------------------------------------------------------------------------------------
// Scenario DSL
// ---------------------------------------------------------------------------------------------------

#[derive(Clone, Copy, Debug, PartialEq)]
enum BodyCheck {
    /// Decide from the reply: errors by first line (consistency errors by prefix), scrapes normalised,
    /// JSON normalised, HTML by status only, anything else exactly.
    Auto,
    StatusOnly,
    /// The body is a text exposition: compare normalised.
    Scrape,
}

#[derive(Clone, Debug)]
struct Step {
    req: Req,
    check: BodyCheck,
    headers: Vec<&'static str>,
}

impl Step {
    fn h(mut self, k: &str, v: &str) -> Step {
        self.req = self.req.header(k, v);
        self
    }
    fn status_only(mut self) -> Step {
        self.check = BodyCheck::StatusOnly;
        self
    }
    fn scrape(mut self) -> Step {
        self.check = BodyCheck::Scrape;
        self
    }
    /// Also compare these response headers (absent on both is fine).
    fn cmp_headers(mut self, hs: &[&'static str]) -> Step {
        self.headers.extend_from_slice(hs);
        self
    }
}

fn step(method: &str, path: &str, body: impl Into<Vec<u8>>) -> Step {
    Step {
        req: Req::new(method, path).body(body),
        check: BodyCheck::Auto,
        headers: vec![],
    }
}
fn put(path: &str, body: &str) -> Step {
    step("PUT", path, body.as_bytes())
}
fn post(path: &str, body: &str) -> Step {
    step("POST", path, body.as_bytes())
}
fn del(path: &str) -> Step {
    step("DELETE", path, Vec::new())
}
fn get(path: &str) -> Step {
    step("GET", path, Vec::new())
}
fn put_pb(path: &str, fams: &[pb::MetricFamily]) -> Step {
    step("PUT", path, pb::delimited(fams)).h("Content-Type", pb::CONTENT_TYPE)
}
fn post_pb(path: &str, fams: &[pb::MetricFamily]) -> Step {
    step("POST", path, pb::delimited(fams)).h("Content-Type", pb::CONTENT_TYPE)
}
fn put_gz(path: &str, body: &str) -> Step {
    step("PUT", path, gzip(body.as_bytes())).h("Content-Encoding", "gzip")
}
fn wipe() -> Step {
    step("PUT", "/api/v1/admin/wipe", Vec::new())
}

const CORS: &[&str] = &[
    "Access-Control-Allow-Origin",
    "Access-Control-Allow-Methods",
    "Access-Control-Allow-Headers",
    "Access-Control-Expose-Headers",
    "Cache-Control",
];

struct Scenario {
    name: &'static str,
    flags: Vec<String>,
    prefix: &'static str,
    steps: Vec<Step>,
    final_compare: bool,
}

fn sc(name: &'static str, steps: Vec<Step>) -> Scenario {
    Scenario {
        name,
        flags: vec![],
        prefix: "",
        steps,
        final_compare: true,
    }
}

impl Scenario {
    fn flags(mut self, f: &[&str]) -> Scenario {
        self.flags = f.iter().map(|s| s.to_string()).collect();
        self
    }
    fn prefix(mut self, p: &'static str) -> Scenario {
        self.prefix = p;
        self
    }
    fn no_final(mut self) -> Scenario {
        self.final_compare = false;
        self
    }
}

fn start_pair(flags: &[String], prefix: &str) -> (Gateway, Gateway) {
    let up = Gateway::start("upstream", &upstream_bin(), flags, prefix);
    let pg = match cluster_nodes() {
        n if n > 1 => Gateway::start_cluster("pushgate", &pushgate_bin(), flags, prefix, n),
        _ => Gateway::start("pushgate", &pushgate_bin(), flags, prefix),
    };
    (up, pg)
}

/// Compares one step's replies; `Err` explains the first difference.
fn compare(step: &Step, a: &Resp, b: &Resp) -> Result<(), String> {
    let what = format!("{} {}", step.req.method, step.req.path);
    if a.status != b.status {
        return Err(format!(
            "{what}: status upstream {} vs pushgate {}\n upstream body: {}\n pushgate body: {}",
            a.status,
            b.status,
            a.first_line(),
            b.first_line()
        ));
    }
    for h in &step.headers {
        if a.header(h) != b.header(h) {
            return Err(format!(
                "{what}: header {h}: upstream {:?} vs pushgate {:?}",
                a.header(h),
                b.header(h)
            ));
        }
    }
    if (300..400).contains(&a.status) && a.header("Location") != b.header("Location") {
        return Err(format!(
            "{what}: Location {:?} vs {:?}",
            a.header("Location"),
            b.header("Location")
        ));
    }
    if a.status == 405 && a.header("Allow") != b.header("Allow") {
        return Err(format!(
            "{what}: Allow {:?} vs {:?}",
            a.header("Allow"),
            b.header("Allow")
        ));
    }
    if step.check == BodyCheck::StatusOnly {
        return Ok(());
    }
    if a.status >= 400 {
        let (at, bt) = (a.text(), b.text());
        if a.status == 500 {
            // A 500 scrape lists Go's gather errors in random order: its first line only.
            if a.first_line() != b.first_line() {
                return Err(format!(
                    "{what}: error body upstream {at:?} vs pushgate {bt:?}"
                ));
            }
        } else if !error_texts_match(&at, &bt) {
            return Err(format!(
                "{what}: error text upstream {at:?} vs pushgate {bt:?}"
            ));
        }
        return Ok(());
    }
    if (300..400).contains(&a.status) {
        return Ok(());
    }
    let path = step.req.path.split('?').next().unwrap_or("");
    let ct = a.header("Content-Type").unwrap_or("");
    if step.check == BodyCheck::Scrape
        || (step.req.method == "GET" && path.ends_with("/metrics") && !path.contains("/api/"))
    {
        return compare_scrapes(a, b).map_err(|e| format!("{what}: {e}"));
    }
    if path.ends_with("/api/v1/metrics") && step.req.method == "GET" {
        let ja = normalise_api_metrics(
            serde_json::from_slice(&a.body).map_err(|e| format!("{what}: upstream json: {e}"))?,
        );
        let jb = normalise_api_metrics(
            serde_json::from_slice(&b.body)
                .map_err(|e| format!("{what}: pushgate json {e}: {}", b.text()))?,
        );
        if ja != jb {
            return Err(format!(
                "{what}: api metrics differ\n--- upstream\n{ja:#}\n--- pushgate\n{jb:#}"
            ));
        }
        return Ok(());
    }
    if path.ends_with("/api/v1/status") && step.req.method == "GET" {
        return compare_status_json(a, b).map_err(|e| format!("{what}: {e}"));
    }
    if ct.starts_with("text/html") {
        return Ok(());
    }
    if a.body != b.body {
        return Err(format!(
            "{what}: body upstream {:?} vs pushgate {:?}",
            a.text(),
            b.text()
        ));
    }
    Ok(())
}

/// Two `/metrics` replies: same `Content-Type` and `Content-Encoding`, then the bodies decoded
/// (gzip, protobuf-delimited or text) and normalised alike.
fn compare_scrapes(a: &Resp, b: &Resp) -> Result<(), String> {
    for h in ["Content-Type", "Content-Encoding"] {
        if a.header(h) != b.header(h) {
            return Err(format!(
                "scrape header {h}: upstream {:?} vs pushgate {:?}",
                a.header(h),
                b.header(h)
            ));
        }
    }
    let decode = |r: &Resp, side: &str| -> Result<String, String> {
        let body = match r.header("Content-Encoding") {
            Some("gzip") => gunzip(&r.body).map_err(|e| format!("{side}: {e}"))?,
            _ => r.body.clone(),
        };
        let ct = r.header("Content-Type").unwrap_or("");
        if ct.starts_with("application/vnd.google.protobuf") {
            normalise_proto_scrape(&body).map_err(|e| format!("{side}: {e}"))
        } else {
            Ok(normalise_metrics(&String::from_utf8_lossy(&body)))
        }
    };
    let (na, nb) = (decode(a, "upstream")?, decode(b, "pushgate")?);
    if na != nb {
        return Err(format!(
            "scrape differs ({})\n--- upstream\n{na}--- pushgate\n{nb}",
            a.header("Content-Type").unwrap_or("")
        ));
    }
    Ok(())
}

/// Upstream's flags pushgate does not have (docs/compatibility.md, `/api/v1/status`): Debian's
/// directory of the web UI's static files.
const STATUS_FLAGS_NOT_IN_PUSHGATE: &[&str] = &["web.local-assets"];

/// `/api/v1/status`: same top-level and `data` keys; every upstream flag listed by pushgate with
/// the same value (but the instance's own address and file, and the upstream flag pushgate does
/// not have).
fn compare_status_json(a: &Resp, b: &Resp) -> Result<(), String> {
    let ja: serde_json::Value = serde_json::from_slice(&a.body).map_err(|e| e.to_string())?;
    let jb: serde_json::Value =
        serde_json::from_slice(&b.body).map_err(|e| format!("{e}: {}", b.text()))?;
    let keys = |v: &serde_json::Value| -> Vec<String> {
        v.as_object()
            .map(|o| o.keys().cloned().collect())
            .unwrap_or_default()
    };
    if keys(&ja) != keys(&jb) || keys(&ja["data"]) != keys(&jb["data"]) {
        return Err(format!("status keys differ: {ja} vs {jb}"));
    }
    let (fa, fb) = (&ja["data"]["flags"], &jb["data"]["flags"]);
    let Some(upstream_flags) = fa.as_object() else {
        return Err(format!("upstream: no flags in {ja}"));
    };
    for (flag, want) in upstream_flags {
        if STATUS_FLAGS_NOT_IN_PUSHGATE.contains(&flag.as_str()) {
            if !fb[flag].is_null() {
                return Err(format!("pushgate lists {flag}, documented as absent"));
            }
            continue;
        }
        if !fb[flag].is_string() {
            return Err(format!(
                "pushgate: flag {flag} missing or not a string in {jb}"
            ));
        }
        // The listen address and the persistence file are each instance's own.
        if !["web.listen-address", "persistence.file"].contains(&flag.as_str()) && fb[flag] != *want
        {
            return Err(format!(
                "flag {flag}: upstream {want} vs pushgate {}",
                fb[flag]
            ));
        }
    }
    Ok(())
}

/// Whether a reply to `req` shows the effect of an upstream DELETE or wipe: upstream answers
/// those 202 and applies them afterwards (its write queue), so a read right after one may
/// not see it yet.
fn is_async_upstream_write(req: &Req, status: u16) -> bool {
    status == 202 && (req.method == "DELETE" || req.path.ends_with("/api/v1/admin/wipe"))
}

/// Upstream reads right after an asynchronous write (a DELETE or wipe answered 202) are
/// repeated until they match for at most this long; no other upstream read is repeated.
const UPSTREAM_ASYNC_WRITE_WAIT: Duration = Duration::from_secs(5);

/// How many times a read of upstream that differs is repeated at once (no write in between):
/// upstream's replies have random parts (the order of series whose label values tie, which
/// group's metric a merged family lists first, follow Go's map order), and pushgate's reply
/// must be one upstream gives. With two orders, 20 reads miss one with probability 2^-20.
const UPSTREAM_REREADS: usize = 20;

/// Sends a read to both and compares, repeating it on a side only where that side may lag:
/// pushgate within [`pushgate_read_bound`] (zero on a single node), upstream after one of its
/// asynchronous writes (`after_async`); then upstream's read alone up to [`UPSTREAM_REREADS`]
/// times at once, for its random order. Writes are sent once.
fn read_both(
    up: &Gateway,
    pg: &Gateway,
    after_async: bool,
    mut read: impl FnMut(&Gateway) -> Result<(), String>,
    mut compare: impl FnMut() -> Result<(), String>,
) -> Result<(), String> {
    let start = Instant::now();
    let up_until = start
        + if after_async {
            UPSTREAM_ASYNC_WRITE_WAIT
        } else {
            Duration::ZERO
        };
    let pg_until = start + pushgate_read_bound();
    let mut rereads = UPSTREAM_REREADS;
    read(up)?;
    read(pg)?;
    loop {
        let e = match compare() {
            Ok(()) => return Ok(()),
            Err(e) => e,
        };
        let now = Instant::now();
        let (again_up, again_pg) = (now < up_until, now < pg_until);
        if !again_up && !again_pg {
            // Upstream's own randomness, not lag: read it again at once, a few times.
            if rereads == 0 {
                return Err(e);
            }
            rereads -= 1;
            read(up)?;
            continue;
        }
        std::thread::sleep(Duration::from_millis(20));
        if again_up {
            read(up)?;
        }
        if again_pg {
            read(pg)?;
        }
    }
}

/// Sends the step to both and compares the replies; GET steps are reads (see [`read_both`]).
fn run_step(
    up: &Gateway,
    pg: &Gateway,
    s: &Step,
    after_async: bool,
) -> Result<(Resp, Resp), String> {
    if s.req.method != "GET" {
        let a = up.request(&s.req);
        let b = pg.request(&s.req);
        compare(s, &a, &b)?;
        return Ok((a, b));
    }
    let replies = std::cell::RefCell::new((None::<Resp>, None::<Resp>));
    read_both(
        up,
        pg,
        after_async,
        |gw| {
            let r = gw.request(&s.req);
            let mut rs = replies.borrow_mut();
            if std::ptr::eq(gw, up) {
                rs.0 = Some(r);
            } else {
                rs.1 = Some(r);
            }
            Ok(())
        },
        || {
            let rs = replies.borrow();
            match (&rs.0, &rs.1) {
                (Some(a), Some(b)) => compare(s, a, b),
                _ => Err("a side was not read".into()),
            }
        },
    )?;
    let (a, b) = replies.into_inner();
    Ok((a.expect("read"), b.expect("read")))
}

/// The final `/metrics` (text, protobuf, gzip) and `/api/v1/metrics` of both, compared.
fn final_compare(up: &Gateway, pg: &Gateway, after_async: bool) -> Result<(), String> {
    for st in final_reads(up.prefix.as_str()) {
        run_step(up, pg, &st, after_async)?;
    }
    Ok(())
}

/// The reads that compare two stores: `/metrics` as text, protobuf and gzip, and `/api/v1/metrics`.
fn final_reads(prefix: &str) -> Vec<Step> {
    let m = format!("{prefix}/metrics");
    vec![
        get(&m),
        get(&m).h("Accept", PB_ACCEPT),
        get(&m).h("Accept-Encoding", "gzip"),
        get(&format!("{prefix}/api/v1/metrics")),
    ]
}

const PB_ACCEPT: &str =
    "application/vnd.google.protobuf;proto=io.prometheus.client.MetricFamily;encoding=delimited";

fn run_scenario(s: &Scenario) -> Result<(), String> {
    let (up, pg) = start_pair(&s.flags, s.prefix);
    let mut after_async = false;
    for (i, st) in s.steps.iter().enumerate() {
        let (a, _) = run_step(&up, &pg, st, after_async)
            .map_err(|e| format!("[{}] step {i}: {e}", s.name))?;
        if st.req.method != "GET" {
            after_async = is_async_upstream_write(&st.req, a.status);
        }
    }
    if s.final_compare {
        final_compare(&up, &pg, after_async).map_err(|e| format!("[{}] {e}", s.name))?;
    }
    Ok(())
}

/// Runs scenarios on a few threads (each has its own processes) and reports every failure at once.
fn run_all(scenarios: Vec<Scenario>) {
    let n = scenarios.len();
    let names: Vec<&str> = scenarios.iter().map(|s| s.name).collect();
    let mut uniq = names.clone();
    uniq.sort();
    uniq.dedup();
    assert_eq!(uniq.len(), n, "scenario names must be unique");
    let queue = std::sync::Mutex::new(scenarios);
    let failures = std::sync::Mutex::new(Vec::new());
    std::thread::scope(|sc| {
        for _ in 0..3 {
            sc.spawn(|| loop {
                let Some(s) = queue
                    .lock()
                    .expect("queue lock should not be poisoned")
                    .pop()
                else {
                    break;
                };
                if let Err(e) = run_scenario(&s) {
                    failures
                        .lock()
                        .expect("failures lock should not be poisoned")
                        .push(e);
                }
            });
        }
    });
    let f = failures
        .into_inner()
        .expect("failures lock should not be poisoned");
    assert!(
        f.is_empty(),
        "{} of {n} scenarios failed:\n\n{}",
        f.len(),
        f.join("\n\n")
    );
}

// ---------------------------------------------------------------------------------------------------
// Differential scenarios
// ---------------------------------------------------------------------------------------------------

fn routes_scenarios() -> Vec<Scenario> {
    vec![
        sc("health_and_ready", vec![get("/-/healthy"), get("/-/ready")]),
        sc("head_is_405", vec![step("HEAD", "/metrics", vec![]), step("HEAD", "/-/healthy", vec![])]),
        sc("get_on_push_route_405", vec![get("/metrics/job/x"), get("/metrics/job/x/a/b")]),
        sc("write_on_metrics_405", vec![put("/metrics", "a 1\n"), post("/metrics", "a 1\n"), del("/metrics")]),
        sc("api_metrics_post_405", vec![post("/api/v1/metrics", ""), del("/api/v1/status")]),
        sc(
            "not_found",
            vec![get("/nonexistent"), get("/api/v1/foo"), put("/metrics/job", "a 1\n"), get("/-/nothing")],
        ),
        sc("redirect_307_trailing_job_slash", vec![put("/metrics/job/", "a 1\n"), del("/metrics/job/")]),
        sc(
            "redirect_301_double_slash",
            vec![put("/metrics/job/x//y/z", "a 1\n"), get("//metrics"), get("/api/v1//metrics").status_only()],
        ),
        sc(
            "options_and_cors",
            vec![
                step("OPTIONS", "/api/v1/metrics", vec![]).cmp_headers(CORS),
                step("OPTIONS", "/api/v1/status", vec![]).cmp_headers(CORS),
                step("OPTIONS", "/api/v1/anything", vec![]).cmp_headers(CORS),
                get("/api/v1/metrics").cmp_headers(CORS),
                get("/api/v1/status").cmp_headers(CORS),
            ],
        ),
        sc("api_status_keys", vec![get("/api/v1/status")]),
        sc("api_status_keys_with_flags", vec![get("/api/v1/status")])
            .flags(&["--web.enable-admin-api", "--web.enable-lifecycle", "--push.disable-consistency-check"]),
        sc("empty_store", vec![get("/api/v1/metrics"), get("/metrics")]),
        sc("status_pages", vec![put("/metrics/job/a", "a 1\n"), get("/"), get("/status")]),
        sc("quit_without_lifecycle_403", vec![put("/-/quit", ""), post("/-/quit", ""), get("/-/quit")]),
        sc("wipe_without_admin_404", vec![put("/metrics/job/a", "a 1\n"), wipe()]),
        sc(
            "wipe_with_admin",
            vec![
                put("/metrics/job/a", "a 1\n"),
                put("/metrics/job/b/instance/i", "b 1\n"),
                put("/metrics/job/c", "c 1\n"),
                wipe(),
                get("/api/v1/metrics"),
                put("/metrics/job/d", "d 1\n"),
            ],
        )
        .flags(&["--web.enable-admin-api"]),
        sc("wipe_wrong_method_405", vec![post("/api/v1/admin/wipe", ""), get("/api/v1/admin/wipe")])
            .flags(&["--web.enable-admin-api"]),
        sc(
            "route_prefix",
            vec![
                put("/foo/metrics/job/x", "a 1\n"),
                get("/foo/metrics"),
                get("/foo/api/v1/metrics"),
                get("/foo/-/healthy"),
                get("/metrics"),
                put("/metrics/job/y", "a 1\n"),
                get("/foo"),
                get("/"),
                get("/foo/api/v1/status"),
                step("OPTIONS", "/foo/api/v1/metrics", vec![]).cmp_headers(CORS),
                del("/foo/metrics/job/nope"),
            ],
        )
        .flags(&["--web.route-prefix=/foo"])
        .prefix("/foo"),
        sc("route_prefix_trailing_slash", vec![put("/foo/metrics/job/x", "a 1\n"), get("/foo/-/ready")])
            .flags(&["--web.route-prefix=/foo/"])
            .prefix("/foo"),
        sc("external_url_sets_prefix", vec![put("/bar/metrics/job/x", "a 1\n"), get("/-/ready"), get("/bar/-/ready")])
            .flags(&["--web.external-url=http://example.com/bar/"])
            .prefix("/bar"),
        sc(
            "external_url_with_route_prefix_root",
            vec![put("/metrics/job/x", "a 1\n"), get("/bar/-/ready")],
        )
        .flags(&["--web.external-url=http://example.com/bar/", "--web.route-prefix=/"]),
        sc(
            "telemetry_path",
            vec![put("/metrics/job/x", "a 1\n"), get("/m").scrape(), get("/metrics").status_only()],
        )
        .flags(&["--web.telemetry-path=/m"])
        .no_final(),
        sc(
            "scrape_gzip_and_content_type",
            vec![
                put("/metrics/job/x", "a 1\n"),
                get("/metrics").h("Accept-Encoding", "gzip").cmp_headers(&["Content-Encoding", "Content-Type"]),
                get("/metrics").cmp_headers(&["Content-Encoding", "Content-Type"]),
                get("/metrics")
                    .h("Accept", "application/vnd.google.protobuf;proto=io.prometheus.client.MetricFamily;encoding=delimited")
                    .cmp_headers(&["Content-Type"]),
            ],
        ),
    ]
}

fn push_scenarios() -> Vec<Scenario> {
    let typed = "# HELP c a counter\n# TYPE c counter\nc{x=\"1\"} 1\nc{x=\"2\"} 2.5\n\
                 # HELP g a gauge\n# TYPE g gauge\ng -3\n\
                 # TYPE s summary\ns{quantile=\"0.5\"} 1\ns{quantile=\"0.9\"} NaN\ns_sum 2\ns_count 3\n\
                 # HELP h a histogram\n# TYPE h histogram\nh_bucket{le=\"1\"} 1\nh_bucket{le=\"+Inf\"} 2\nh_sum 2.5\nh_count 2\n\
                 u 1e20\n";
    vec![
        sc("put_untyped", vec![put("/metrics/job/a", "a 1\n"), get("/metrics")]),
        sc("put_all_types", vec![put("/metrics/job/a", typed), get("/metrics"), get("/api/v1/metrics")]),
        sc("put_replaces_group", vec![put("/metrics/job/a", "a 1\nb 2\n"), put("/metrics/job/a", "c 3\n")]),
        sc(
            "post_replaces_families_by_name",
            vec![put("/metrics/job/e", "x{a=\"1\"} 1\nx{a=\"2\"} 1\ny 1\n"), post("/metrics/job/e", "x{a=\"3\"} 3\n")],
        ),
        sc("post_creates_group", vec![post("/metrics/job/new/instance/i", "z 1\n")]),
        sc(
            "delete_group",
            vec![put("/metrics/job/a", "a 1\n"), put("/metrics/job/b", "a 2\n"), del("/metrics/job/a"), get("/metrics")],
        ),
        sc("delete_nonexistent_202", vec![del("/metrics/job/none"), del("/metrics/job/none/instance/x")]),
        sc("delete_ignores_body", vec![put("/metrics/job/a", "a 1\n"), step("DELETE", "/metrics/job/a", b"garbage".to_vec())]),
        sc("delete_only_exact_group", vec![put("/metrics/job/a/instance/i", "a 1\n"), del("/metrics/job/a")]),
        sc("put_empty_body", vec![put("/metrics/job/e", "x 1\n"), put("/metrics/job/e", ""), get("/metrics")]),
        sc("post_empty_body", vec![put("/metrics/job/e", "x 1\n"), post("/metrics/job/e", "")]),
        sc("empty_body_new_group", vec![put("/metrics/job/n1", ""), post("/metrics/job/n2", "")]),
        sc(
            "sort_order_across_groups",
            vec![
                put("/metrics/job/b", "# TYPE m gauge\nm{a=\"2\"} 1\nm{a=\"10\"} 2\nm 3\nm{a=\"1\",b=\"x\"} 4\n"),
                put("/metrics/job/a", "# TYPE m gauge\nm{a=\"0\"} 5\nm{instance=\"i9\"} 6\n"),
                put("/metrics/job/c/instance/zz", "# TYPE m gauge\nm{z=\"0\"} 7\n"),
                get("/metrics"),
            ],
        ),
        sc("family_sort_order", vec![put("/metrics/job/e", "zz 1\nAa 2\n_x 3\naa 4\nm_a 5\nm 6\n")]),
        sc(
            "escapes_and_special_values",
            vec![put("/metrics/job/ok", "x{a=\"b\\\"c\\\\d\\ne\"} Inf\ny NaN\nz -Inf\nw 1.5e3\nv +Inf\nt -0\nr 0.1\nq 123456789012345678\n")],
        ),
        sc("no_help_no_help_line", vec![put("/metrics/job/a", "# TYPE x gauge\nx 1\n"), put("/metrics/job/b", "# TYPE x gauge\nx 2\n")]),
        sc(
            "same_help_across_groups",
            vec![
                put("/metrics/job/a", "# HELP x the help\n# TYPE x gauge\nx 1\n"),
                put("/metrics/job/b", "# HELP x the help\n# TYPE x gauge\nx 2\n"),
            ],
        ),
        sc("help_escapes", vec![put("/metrics/job/a", "# HELP x a \\\\ b \\n c\nx 1\n")]),
        sc(
            "grouping_labels_override_body",
            vec![put("/metrics/job/a/k/v", "x{job=\"other\",k=\"w\",extra=\"e\"} 1\n")],
        ),
        sc("body_instance_kept", vec![put("/metrics/job/a", "x{instance=\"body\"} 1\ny 2\n")]),
        sc("grouping_instance", vec![put("/metrics/job/a/instance/i1", "x 1\n"), put("/metrics/job/a/instance/i2", "x 2\n")]),
        sc("label_dimensions_may_differ", vec![put("/metrics/job/a", "x{p=\"1\"} 1\n"), put("/metrics/job/b", "x{q=\"1\",r=\"2\"} 2\n")]),
        sc(
            "samples_of_family_not_contiguous",
            vec![put("/metrics/job/a", "# TYPE x gauge\nx{a=\"1\"} 1\ny 2\nx{a=\"2\"} 3\n")],
        ),
        sc("openmetrics_body", vec![put("/metrics/job/a", "# TYPE x counter\nx_total 1\n# EOF\n").h("Content-Type", "application/openmetrics-text; version=1.0.0")]),
        sc("comments_and_blank_lines", vec![put("/metrics/job/a", "# just a comment\n\nx 1\n\n")]),
        sc(
            "requests_apply_in_order",
            vec![put("/metrics/job/a", "x 1\n"), del("/metrics/job/a"), put("/metrics/job/a", "y 2\n"), post("/metrics/job/a", "x 3\n")],
        ),
    ]
}

fn grouping_key_scenarios() -> Vec<Scenario> {
    let body = "a 1\n";
    vec![
        sc(
            "base64_job",
            vec![
                put("/metrics/job@base64/Zm9v", body),
                put("/metrics/job@base64/Zm9vL2Jhcg", body),
            ],
        ),
        sc(
            "base64_padding_variants",
            [
                "YWJj",
                "YWJjZA",
                "YWJjZA=",
                "YWJjZA==",
                "YWJjZA===",
                "YQ%3D%3D",
                "YQ==%3D",
                "Y%51",
                "w6k",
            ]
            .iter()
            .map(|v| put(&format!("/metrics/job/b64/v@base64/{v}"), body))
            .collect(),
        ),
        sc(
            "base64_empty_value",
            vec![
                put("/metrics/job/b/l@base64/=", body),
                put("/metrics/job/b/m@base64/==", body),
            ],
        ),
        sc(
            "base64_invalid_values",
            ["YWJjZ", "=a", "Y=Q", "+-8", "!!"]
                .iter()
                .map(|v| put(&format!("/metrics/job/b/v@base64/{v}"), body))
                .collect(),
        ),
        sc(
            "base64_empty_job_400",
            vec![
                put("/metrics/job@base64/=", body),
                del("/metrics/job@base64/="),
            ],
        ),
        sc(
            "base64_value_with_slash",
            vec![
                put("/metrics/job/b/path@base64/L3Zhci90bXA", body),
                del("/metrics/job/b/path@base64/L3Zhci90bXA"),
            ],
        ),
        sc(
            "odd_components",
            vec![
                put("/metrics/job/j/a/b/c", body),
                post("/metrics/job/j/a", body),
                del("/metrics/job/j/a/b/c"),
            ],
        ),
        sc(
            "invalid_label_names",
            vec![
                put("/metrics/job/j/1a/b", body),
                put("/metrics/job/j/a-b/c", body),
                put("/metrics/job/j/__a/b", body),
                put("/metrics/job/j/__name__/b", body),
            ],
        ),
        sc(
            "repeated_label_last_wins",
            vec![put("/metrics/job/t/a/1/a/2", body)],
        ),
        sc(
            "later_job_pair_ignored",
            vec![put("/metrics/job/t/job/zzz", body)],
        ),
        sc(
            "trailing_empty_value",
            vec![put("/metrics/job/t/name/", body)],
        ),
        sc(
            "percent_encoded_values",
            vec![
                put("/metrics/job/a%20b/k/v%2Fw", body),
                put("/metrics/job/%C3%A9", body),
            ],
        ),
        sc(
            "many_grouping_labels",
            vec![put(
                "/metrics/job/j/a/1/b/2/c/3/d/4/e/5/f/6/instance/x",
                body,
            )],
        ),
        // Upstream has no limit: job plus 60 labels is an ordinary push there, and here within
        // the default --push.max-grouping-labels (it was refused at the earlier default of 50).
        sc(
            "job_and_sixty_grouping_labels",
            vec![put(&sixty_labels(), body)],
        ),
    ]
}

/// A push path with job and 60 more grouping labels.
fn sixty_labels() -> String {
    let labels: String = (0..60).map(|i| format!("/l{i}/v{i}")).collect();
    format!("/metrics/job/many{labels}")
}

fn parse_error_scenarios() -> Vec<Scenario> {
    let cases: &[(&'static str, &str)] = &[
        ("parse_no_final_newline", "a 1"),
        ("parse_crlf", "x 1\r\n"),
        ("parse_trailing_blank", "x 1 \n"),
        ("parse_hex_value", "x 0x1\n"),
        ("parse_overflow_value", "x 1e999\n"),
        ("parse_duplicate_label", "x{a=\"1\",a=\"2\"} 1\n"),
        ("parse_name_label_reserved", "x{__name__=\"y\"} 1\n"),
        ("parse_unknown_type", "# TYPE x foo\nx 1\n"),
        ("parse_type_after_samples", "x 1\n# TYPE x gauge\n"),
        ("parse_second_help", "# HELP x a\n# HELP x b\nx 1\n"),
        ("parse_invalid_escape", "x{a=\"\\q\"} 1\n"),
        ("parse_bad_metric_name", "1x 1\n"),
        ("parse_missing_value", "x\n"),
        ("parse_unterminated_labels", "x{a=\"1\" 1\n"),
        (
            "parse_histogram_missing_le",
            "# TYPE h histogram\nh_bucket 1\n",
        ),
        (
            "parse_summary_bad_quantile",
            "# TYPE s summary\ns{quantile=\"x\"} 1\n",
        ),
    ];
    let mut v: Vec<Scenario> = cases
        .iter()
        .map(|(name, body)| {
            sc(
                name,
                vec![
                    put("/metrics/job/ok", "ok 1\n"),
                    put("/metrics/job/bad", body),
                    post("/metrics/job/ok", body),
                ],
            )
        })
        .collect();
    v.push(sc(
        "parse_invalid_utf8_label",
        vec![step(
            "PUT",
            "/metrics/job/bad",
            b"x{a=\"\xff\"} 1\n".to_vec(),
        )],
    ));
    v
}

fn consistency_scenarios() -> Vec<Scenario> {
    vec![
        sc(
            "timestamp_rejected_text",
            vec![
                put("/metrics/job/ok", "a 1\n"),
                put("/metrics/job/ok", "a 2 1000\n"),
                put("/metrics/job/new", "a 1 1000\n"),
            ],
        ),
        sc(
            "timestamp_rejected_protobuf",
            vec![put_pb(
                "/metrics/job/ts",
                &[{
                    let mut m = pb::gauge(&[], 1.0);
                    m.timestamp_ms = Some(1000);
                    pb::family("g", None, MetricType::Gauge, vec![m])
                }],
            )],
        ),
        sc(
            "type_conflict_between_groups",
            vec![
                put("/metrics/job/a", "# TYPE m counter\nm 1\n"),
                put("/metrics/job/b", "# TYPE m gauge\nm{x=\"1\"} 1\n"),
                put("/metrics/job/c", "m{x=\"2\"} 1\n"),
            ],
        ),
        sc(
            "type_conflict_same_group_put_ok",
            vec![
                put("/metrics/job/a", "# TYPE m counter\nm 1\n"),
                put("/metrics/job/a", "# TYPE m gauge\nm 1\n"),
            ],
        ),
        sc(
            "duplicate_series_in_push",
            vec![put("/metrics/job/bad", "x 1\nx 2\n")],
        ),
        sc(
            "duplicate_after_job_rewrite",
            vec![put("/metrics/job/bad", "x{job=\"zz\"} 1\nx 2\n")],
        ),
        sc(
            "duplicate_series_across_groups",
            vec![
                put("/metrics/job/a", "m{instance=\"i\"} 1\n"),
                put("/metrics/job/a/instance/i", "m 2\n"),
            ],
        ),
        sc(
            "histogram_suffix_collision",
            vec![
                put(
                    "/metrics/job/h",
                    "# TYPE h histogram\nh_bucket{le=\"1\"} 1\nh_sum 2\nh_count 2\n",
                ),
                put("/metrics/job/h2", "# TYPE h_count gauge\nh_count 1\n"),
                put("/metrics/job/h3", "h_sum 1\n"),
                put("/metrics/job/h4", "h_bucket{le=\"1\"} 1\n"),
            ],
        ),
        sc(
            "summary_suffix_collision",
            vec![
                put(
                    "/metrics/job/s",
                    "# TYPE s summary\ns{quantile=\"0.5\"} 1\ns_sum 2\ns_count 3\n",
                ),
                put("/metrics/job/s2", "s_count 1\n"),
            ],
        ),
        sc(
            "summary_with_quantile_label_protobuf",
            vec![put_pb(
                "/metrics/job/q",
                &[pb::family(
                    "q",
                    None,
                    MetricType::Summary,
                    vec![pb::summary(&[("quantile", "0.5")], 1, 1.0, &[(0.5, 1.0)])],
                )],
            )],
        ),
        sc(
            "summary_quantile_text_folds",
            vec![put(
                "/metrics/job/q",
                "# TYPE q summary\nq{quantile=\"0.5\",x=\"1\"} 1\n",
            )],
        ),
        sc(
            "self_metric_type_conflict",
            vec![put(
                "/metrics/job/p",
                "# TYPE pushgateway_build_info counter\npushgateway_build_info 1\n",
            )],
        ),
        sc(
            "push_time_seconds_overridden",
            vec![
                put("/metrics/job/p", "push_time_seconds{x=\"1\"} 1\n"),
                put(
                    "/metrics/job/p2",
                    "# TYPE push_failure_time_seconds counter\npush_failure_time_seconds 5\n",
                ),
            ],
        ),
        sc(
            "reserved_label_in_body",
            vec![put("/metrics/job/bad", "x{__a=\"y\"} 1\n")],
        ),
        sc(
            "failed_push_marks_existing_group",
            vec![
                put("/metrics/job/a", "x 1\n"),
                put("/metrics/job/b", "# TYPE x counter\nx 1\n"),
                get("/api/v1/metrics"),
            ],
        ),
        sc(
            "disable_consistency_check_202",
            vec![
                put("/metrics/job/a", "# TYPE m counter\nm 1\n"),
                put("/metrics/job/b", "# TYPE m gauge\nm{x=\"1\"} 1\n"),
                post("/metrics/job/b", "z 1\n"),
                put("/metrics/job/c", "a 1"),
                put("/metrics/job/c/1a/b", "a 1\n"),
                del("/metrics/job/a"),
            ],
        )
        .flags(&["--push.disable-consistency-check"]),
    ]
}

fn body_format_scenarios() -> Vec<Scenario> {
    let all = vec![
        pb::family(
            "c",
            Some("a counter"),
            MetricType::Counter,
            vec![
                pb::counter(&[("x", "1")], 1.0),
                pb::counter(&[("x", "2")], 2.5),
            ],
        ),
        pb::family("g", None, MetricType::Gauge, vec![pb::gauge(&[], -3.0)]),
        pb::family(
            "u",
            None,
            MetricType::Untyped,
            vec![pb::untyped(&[("job", "body"), ("instance", "i")], 7.0)],
        ),
        pb::family(
            "s",
            Some("sum"),
            MetricType::Summary,
            vec![pb::summary(&[], 3, 2.0, &[(0.5, 1.0), (0.9, f64::NAN)])],
        ),
        pb::family(
            "h",
            None,
            MetricType::Histogram,
            vec![pb::histogram(&[], 2, 2.5, &[(1.0, 1), (f64::INFINITY, 2)])],
        ),
    ];
    let gauge = |n: &str, v: f64| pb::family(n, None, MetricType::Gauge, vec![pb::gauge(&[], v)]);
    vec![
        sc("protobuf_all_types", vec![put_pb("/metrics/job/p", &all), get("/metrics"), get("/api/v1/metrics")]),
        sc("protobuf_post", vec![put_pb("/metrics/job/p", &all), post_pb("/metrics/job/p", &[gauge("g", 9.0)])]),
        sc(
            "protobuf_content_type_variants",
            [
                "application/vnd.google.protobuf;proto=io.prometheus.client.MetricFamily;encoding=delimited",
                "application/vnd.google.protobuf; encoding=delimited; proto=io.prometheus.client.MetricFamily",
                "application/vnd.google.protobuf;  proto=io.prometheus.client.MetricFamily ;encoding=delimited",
            ]
            .iter()
            .enumerate()
            .map(|(i, ct)| step("PUT", &format!("/metrics/job/ct{i}"), pb::delimited(&[gauge("g", i as f64)])).h("Content-Type", ct))
            .collect(),
        ),
        sc(
            "protobuf_without_delimited_is_text",
            vec![
                step("PUT", "/metrics/job/x", pb::delimited(&[gauge("g", 1.0)])).h("Content-Type", "application/vnd.google.protobuf; proto=io.prometheus.client.MetricFamily"),
                step("PUT", "/metrics/job/y", "a 1\n").h("Content-Type", "application/vnd.google.protobuf; encoding=delimited"),
            ],
        ),
        sc("protobuf_duplicate_family_last_wins", vec![put_pb("/metrics/job/d", &[gauge("g", 1.0), gauge("g", 2.0)])]),
        sc("protobuf_empty_body", vec![put("/metrics/job/e", "x 1\n"), put_pb("/metrics/job/e", &[])]),
        // Upstream answers Go's bare "unexpected EOF" for a truncated stream and a corrupt gzip
        // body; pushgate says what is wrong (documented in docs/compatibility.md): status only.
        sc(
            "protobuf_garbage_400",
            vec![step("PUT", "/metrics/job/g", vec![0x05, 0xff, 0xff]).h("Content-Type", pb::CONTENT_TYPE).status_only()],
        ),
        sc(
            "protobuf_type_conflict_with_text",
            vec![put("/metrics/job/a", "# TYPE g counter\ng 1\n"), put_pb("/metrics/job/b", &[gauge("g", 1.0)])],
        ),
        sc("gzip_text_body", vec![put_gz("/metrics/job/z", "a 1\n# TYPE b gauge\nb{x=\"y\"} 2\n")]),
        sc("gzip_corrupt_body", vec![put("/metrics/job/z", "a 1\n").h("Content-Encoding", "gzip").status_only()]),
        sc(
            "gzip_protobuf_body",
            vec![step("PUT", "/metrics/job/z", gzip(&pb::delimited(&[gauge("g", 4.0)])))
                .h("Content-Type", pb::CONTENT_TYPE)
                .h("Content-Encoding", "gzip")],
        ),
        sc("unknown_content_encoding_ignored", vec![put("/metrics/job/z", "a 1\n").h("Content-Encoding", "identity")]),
    ]
}

#[test]
fn differential_routes() {
    run_all(routes_scenarios());
}

#[test]
fn differential_push() {
    run_all(push_scenarios());
}

#[test]
fn differential_grouping_key() {
    run_all(grouping_key_scenarios());
}

#[test]
fn differential_parse_errors() {
    run_all(parse_error_scenarios());
}

#[test]
fn differential_consistency() {
    run_all(consistency_scenarios());
}

#[test]
fn differential_body_formats() {
    run_all(body_format_scenarios());
}

#[test]
fn scenario_count_is_at_least_60() {
    let n = routes_scenarios().len()
        + push_scenarios().len()
        + grouping_key_scenarios().len()
        + parse_error_scenarios().len()
        + consistency_scenarios().len()
        + body_format_scenarios().len();
    eprintln!("{n} differential scenarios");
    assert!(n >= 60, "only {n} differential scenarios");
}

/// The harness itself must see differences: upstream vs upstream-without-consistency-check differ.
#[test]
fn harness_detects_differences() {
    let flags_b = vec!["--push.disable-consistency-check".to_string()];
    let up = Gateway::start("upstream", &upstream_bin(), &[], "");
    let other = Gateway::start("other", &upstream_bin(), &flags_b, "");
    let s = put("/metrics/job/a", "a 1\n");
    let (a, b) = (up.request(&s.req), other.request(&s.req));
    assert!(
        compare(&s, &a, &b).is_err(),
        "200 vs 202 must be a difference"
    );
    let s2 = put("/metrics/job/a", "b 1\n");
    let (a, b) = (up.request(&s2.req), up.request(&s2.req));
    compare(&s2, &a, &b).expect("same replies compare equal");
    other.put_text("/metrics/job/b", "zz 1\n");
    poll_until(Duration::from_secs(5), || {
        other.scrape_normalised().1.contains("zz{").then_some(())
    })
    .expect("async push lands");
    assert!(
        final_compare(&up, &other, false).is_err(),
        "different stores must differ"
    );
    // A user's family named like a gateway's own families is compared, in every scrape format.
    let third = Gateway::start("third", &upstream_bin(), &[], "");
    for gw in [&up, &third] {
        gw.put_text("/metrics/job/p", "process_custom_total 1\n");
    }
    third.put_text("/metrics/job/p", "process_custom_total 2\n");
    for read in final_reads("") {
        let (a, b) = (up.request(&read.req), third.request(&read.req));
        assert!(
            compare(&read, &a, &b).is_err(),
            "{:?} must see process_custom_total differ",
            read.req
        );
    }
}

/// `--web.enable-lifecycle`: PUT /-/quit is 200 on both and both processes exit by themselves.
#[test]
fn lifecycle_quit_exits() {
    let flags = vec!["--web.enable-lifecycle".to_string()];
    let (mut up, mut pg) = start_pair(&flags, "");
    up.put_text("/metrics/job/a", "a 1\n");
    pg.put_text("/metrics/job/a", "a 1\n");
    let s = step("PUT", "/-/quit", Vec::new());
    let a = up.request(&s.req);
    let b = pg.request(&s.req);
    compare(&s, &a, &b).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(a.status, 200);
    assert!(
        up.wait_exit(Duration::from_secs(15)),
        "upstream did not exit after /-/quit"
    );
    assert!(
        pg.wait_exit(Duration::from_secs(15)),
        "pushgate did not exit after /-/quit"
    );
}

// ---------------------------------------------------------------------------------------------------
// Deliberate differences (COMPAT.md "Upstream bugs pushgate fixes")
// ---------------------------------------------------------------------------------------------------

fn scrape_text(gw: &Gateway) -> (u16, String) {
    let r = gw.get("/metrics");
    (r.status, r.text())
}

fn push_pb(gw: &Gateway, path: &str, fams: &[pb::MetricFamily]) -> Resp {
    gw.request(&put_pb(path, fams).req)
}

/// Bug 1: a protobuf family with an empty name. Upstream accepts it and then serves empty scrapes;
/// pushgate refuses it with 400 and keeps serving the rest.
#[test]
fn fixed_bug1_empty_protobuf_family_name_rejected() {
    let (up, pg) = start_pair(&[], "");
    let fams = [pb::family(
        "",
        None,
        MetricType::Gauge,
        vec![pb::gauge(&[], 1.0)],
    )];
    for gw in [&up, &pg] {
        assert_eq!(gw.put_text("/metrics/job/keep", "keep 1\n").status, 200);
    }
    let a = push_pb(&up, "/metrics/job/e", &fams);
    assert!(
        a.status == 200 || a.status == 202,
        "upstream accepted an empty name: {}",
        a.status
    );
    let b = push_pb(&pg, "/metrics/job/e", &fams);
    assert_eq!(
        b.status,
        400,
        "pushgate must refuse an empty family name: {}",
        b.text()
    );
    let (s, t) = scrape_text(&pg);
    assert_eq!(s, 200);
    assert!(
        sample_value(&t, "keep", &[("job", "keep")]).is_some(),
        "pushgate scrape lost data:\n{t}"
    );
    assert!(
        !t.contains("job=\"e\""),
        "the rejected push left a group:\n{t}"
    );
}

/// Bug 2: protobuf metric names are validated like text names.
#[test]
fn fixed_bug2_invalid_protobuf_metric_name_rejected() {
    let (up, pg) = start_pair(&[], "");
    let fams = [pb::family(
        "bad.name",
        None,
        MetricType::Gauge,
        vec![pb::gauge(&[], 1.0)],
    )];
    let a = push_pb(&up, "/metrics/job/n", &fams);
    assert_eq!(a.status, 200, "upstream accepts the name");
    assert!(
        scrape_text(&up).1.contains("bad.name{"),
        "upstream exposes bad.name"
    );
    let b = push_pb(&pg, "/metrics/job/n", &fams);
    assert_eq!(b.status, 400, "pushgate must refuse bad.name: {}", b.text());
    let (s, t) = scrape_text(&pg);
    assert_eq!(s, 200);
    assert!(
        !t.contains("bad.name"),
        "pushgate exposes an invalid name:\n{t}"
    );
}

/// Bug 3: `{job="u"}` then `{job="u",instance=""}`: the second push is rejected on both, but upstream
/// keeps the group (every scrape 500, every push 400); pushgate's store is unchanged.
#[test]
fn fixed_bug3_rejected_push_leaves_store_consistent() {
    let (up, pg) = start_pair(&[], "");
    for gw in [&up, &pg] {
        assert_eq!(
            gw.put_text("/metrics/job/u", "x 1\n").status,
            200,
            "{}",
            gw.name
        );
        let r = gw.put_text("/metrics/job/u/instance/", "x 1\n");
        assert_eq!(
            r.status,
            400,
            "{}: duplicate series must be refused: {}",
            gw.name,
            r.text()
        );
    }
    assert_eq!(
        scrape_text(&up).0,
        500,
        "upstream scrape is 500 after the sequence"
    );
    assert_eq!(
        up.put_text("/metrics/job/other", "y 1\n").status,
        400,
        "upstream refuses every push"
    );

    let before_api = pg.api_metrics_normalised();
    let (s, t) = scrape_text(&pg);
    assert_eq!(s, 200, "pushgate scrape must stay 200:\n{t}");
    assert_eq!(
        sample_value(&t, "x", &[("job", "u"), ("instance", "")]).as_deref(),
        Some("1")
    );
    let groups = before_api.1["data"]
        .as_array()
        .map(|a| a.len())
        .unwrap_or(0);
    assert_eq!(
        groups, 1,
        "the rejected group must not be stored: {:#}",
        before_api.1
    );
    assert_eq!(
        pg.put_text("/metrics/job/other", "y 1\n").status,
        200,
        "pushgate keeps accepting pushes"
    );
}

/// Bug 4: the exposed HELP of a family pushed with different HELP texts is deterministic: the first
/// group in key order that has help.
#[test]
fn fixed_bug4_help_is_deterministic() {
    let (up, pg) = start_pair(&[], "");
    for gw in [&up, &pg] {
        assert_eq!(
            gw.put_text("/metrics/job/a", "# TYPE m gauge\nm 1\n")
                .status,
            200
        );
        assert_eq!(
            gw.put_text("/metrics/job/b", "# HELP m help B\n# TYPE m gauge\nm 2\n")
                .status,
            200
        );
        assert_eq!(
            gw.put_text("/metrics/job/c", "# HELP m help C\n# TYPE m gauge\nm 3\n")
                .status,
            200
        );
    }
    let help_of = |gw: &Gateway| {
        scrape_text(gw)
            .1
            .lines()
            .find(|l| l.starts_with("# HELP m "))
            .map(str::to_string)
            .unwrap_or_default()
    };
    let mut upstream_seen = std::collections::BTreeSet::new();
    for _ in 0..60 {
        upstream_seen.insert(help_of(&up));
    }
    assert!(
        upstream_seen.len() > 1,
        "upstream HELP was expected to vary: {upstream_seen:?}"
    );
    for _ in 0..30 {
        assert_eq!(
            help_of(&pg),
            "# HELP m help B",
            "pushgate must expose the first group's (by key) help"
        );
    }
}

/// Bug 6: a wipe is done when it is answered (upstream answers before its deletes ran).
#[test]
fn fixed_bug6_a_read_right_after_the_wipe_answer_sees_an_empty_store() {
    let pg = Gateway::start(
        "pushgate",
        &pushgate_bin(),
        &["--web.enable-admin-api".to_string()],
        "",
    );
    for i in 0..2000 {
        let r = pg.put_text(&format!("/metrics/job/j/instance/i{i}"), "x 1\n");
        assert_eq!(r.status, 200);
    }
    // Upstream enqueues one delete per group and answers before they ran, so a read right after
    // the 202 still sees groups. pushgate swaps the store out before answering: the very next
    // read is empty (no timing involved, so this cannot be flaky).
    assert_eq!(pg.request(&wipe().req).status, 202);
    assert_eq!(
        pg.get("/api/v1/metrics").text(),
        r#"{"status":"success","data":[]}"#,
        "store not empty right after the wipe was acknowledged"
    );
}

/// Bug 8: default limits refuse only abuse; tighter limits by flag with 413/400 and a message.
#[test]
fn pushgate_only_bug8_default_limits_accept_large_ordinary_pushes() {
    let pg = Gateway::start("pushgate", &pushgate_bin(), &[], "");
    // 100,000 series in one push.
    let mut body = String::with_capacity(4 << 20);
    for i in 0..100_000 {
        body.push_str(&format!("s{{i=\"{i}\"}} {i}\n"));
    }
    let r = pg.put_text("/metrics/job/many", &body);
    assert_eq!(
        r.status,
        200,
        "100k series must be accepted: {}",
        r.first_line()
    );
    // A body just under 32 MiB (31 label values of ~1 MiB each, a 1 MiB value is allowed).
    let big = "v".repeat(1 << 20);
    let mut body = String::with_capacity(32 << 20);
    for i in 0..31 {
        body.push_str(&format!("b{{i=\"{i}\",v=\"{big}\"}} 1\n"));
    }
    assert!(body.len() < 32 << 20);
    let r = pg.put_text("/metrics/job/big", &body);
    assert_eq!(
        r.status,
        200,
        "a ~31 MiB body with 1 MiB label values must be accepted: {}",
        r.first_line()
    );
    // 50 grouping labels.
    let mut path = "/metrics/job/g".to_string();
    for i in 0..49 {
        path.push_str(&format!("/l{i}/v"));
    }
    let r = pg.put_text(&path, "x 1\n");
    assert_eq!(
        r.status,
        200,
        "50 grouping labels must be accepted: {}",
        r.first_line()
    );
    // The same 31 MiB gzip-compressed: the limit applies after decompression and it is under it.
    let r = pg.request(
        &Req::new("PUT", "/metrics/job/bigz")
            .header("Content-Encoding", "gzip")
            .body(gzip(body.as_bytes())),
    );
    assert_eq!(
        r.status,
        200,
        "gzip of a ~31 MiB body must be accepted: {}",
        r.first_line()
    );
}

#[test]
fn pushgate_only_bug8_limits_by_flag() {
    let flags: Vec<String> = vec![
        format!("{FLAG_MAX_BODY_BYTES}=1024"),
        format!("{FLAG_MAX_SERIES_PER_PUSH}=10"),
        format!("{FLAG_MAX_GROUPING_LABELS}=3"),
        format!("{FLAG_MAX_LABEL_VALUE_BYTES}=16"),
    ];
    let pg = Gateway::start("pushgate", &pushgate_bin(), &flags, "");
    let ok = pg.put_text("/metrics/job/ok/a/b", "x 1\n");
    assert_eq!(ok.status, 200, "{}", ok.text());

    let body = format!("x{{a=\"{}\"}} 1\n", "v".repeat(15))
        .repeat(1)
        .to_string()
        + &"# pad\n".repeat(200);
    let r = pg.put_text("/metrics/job/body", &body);
    assert_eq!(
        r.status,
        STATUS_BODY_TOO_LARGE,
        "body over limit: {}",
        r.text()
    );
    assert!(!r.text().trim().is_empty(), "limit errors need a message");
    let r = pg.request(
        &Req::new("PUT", "/metrics/job/bodyz")
            .header("Content-Encoding", "gzip")
            .body(gzip(body.as_bytes())),
    );
    assert_eq!(
        r.status,
        STATUS_BODY_TOO_LARGE,
        "limit applies after decompression: {}",
        r.text()
    );

    let series: String = (0..11).map(|i| format!("s{{i=\"{i}\"}} 1\n")).collect();
    let r = pg.put_text("/metrics/job/series", &series);
    assert_eq!(
        r.status,
        STATUS_OVER_LIMIT,
        "series over limit: {}",
        r.text()
    );
    assert!(!r.text().trim().is_empty());

    let r = pg.put_text("/metrics/job/g/a/1/b/2/c/3", "x 1\n");
    assert_eq!(
        r.status,
        STATUS_OVER_LIMIT,
        "grouping labels over limit: {}",
        r.text()
    );

    let r = pg.put_text(
        "/metrics/job/lv",
        &format!("x{{a=\"{}\"}} 1\n", "v".repeat(17)),
    );
    assert_eq!(
        r.status,
        STATUS_OVER_LIMIT,
        "label value over limit: {}",
        r.text()
    );
    let r = pg.put_text(&format!("/metrics/job/lv/k/{}", "v".repeat(17)), "x 1\n");
    assert_eq!(
        r.status,
        STATUS_OVER_LIMIT,
        "grouping label value over limit: {}",
        r.text()
    );

    let (s, t) = scrape_text(&pg);
    assert_eq!(s, 200);
    for job in ["body", "bodyz", "series", "g", "lv"] {
        assert!(
            !t.contains(&format!("job=\"{job}\"")),
            "a refused push left group {job}:\n{t}"
        );
    }
}

/// Bug 9: an invalid base64 job is a 400 and the route keeps working (upstream hangs it).
#[test]
fn fixed_bug9_invalid_base64_job_does_not_hang_route() {
    let pg = Gateway::start("pushgate", &pushgate_bin(), &[], "");
    let t = Duration::from_secs(5);
    let r = pg
        .try_request(
            &Req::new("PUT", "/metrics/job@base64/!!").body(&b"a 1\n"[..]),
            t,
        )
        .expect("first request must answer");
    assert_eq!(r.status, 400);
    for _ in 0..3 {
        let r = pg
            .try_request(
                &Req::new("PUT", "/metrics/job@base64/Zm9v").body(&b"a 1\n"[..]),
                t,
            )
            .expect("the job@base64 route must still answer within 5 s");
        assert_eq!(r.status, 200);
    }
    assert!(sample_value(&scrape_text(&pg).1, "a", &[("job", "foo")]).is_some());
}

/// Bug 10: a grouping-label value that is not UTF-8 is refused at the URL, before anything is stored.
#[test]
fn fixed_bug10_non_utf8_grouping_value_refused_cleanly() {
    let (up, pg) = start_pair(&[], "");
    for gw in [&up, &pg] {
        assert_eq!(
            gw.put_text("/metrics/job/x/l@base64/__4A", "a 1\n").status,
            400,
            "{}",
            gw.name
        );
    }
    assert_eq!(scrape_text(&up).0, 500, "upstream is poisoned");
    let (s, t) = scrape_text(&pg);
    assert_eq!(s, 200, "pushgate scrape:\n{t}");
    assert!(!t.contains("job=\"x\""), "pushgate stored a group:\n{t}");
    assert_eq!(pg.put_text("/metrics/job/other", "y 1\n").status, 200);
    assert_eq!(
        pg.put_text("/metrics/job/x/l@base64/%FF", "a 1\n").status,
        400
    );
}

fn vm_hwm_kib(pid: u32) -> u64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    s.lines()
        .find(|l| l.starts_with("VmHWM:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// Bug 11: a gzip bomb and a huge plain body are refused without buffering them.
#[test]
fn fixed_bug11_hostile_bodies_are_bounded() {
    assert!(
        !testing_upstream(),
        "not run against upstream: it buffers the bodies and would eat GiBs (expected failure in validation mode)"
    );
    let pg = Gateway::start("pushgate", &pushgate_bin(), &[], "");
    // 1 GiB of '#' comment-ish bytes compresses to ~1 MiB; made by the system gzip (fast in debug builds).
    let bomb = std::process::Command::new("sh")
        .arg("-c")
        .arg("head -c 1073741824 /dev/zero | tr '\\0' 'a' | gzip -1")
        .output()
        .expect("sh/head/tr/gzip should be available");
    assert!(bomb.status.success() && bomb.stdout.len() > 1000);
    let r = pg
        .try_request(
            &Req::new("PUT", "/metrics/job/bomb")
                .header("Content-Encoding", "gzip")
                .body(bomb.stdout),
            Duration::from_secs(60),
        )
        .expect("the gzip bomb must get an answer");
    assert!(
        r.status == STATUS_BODY_TOO_LARGE || r.status == 400,
        "gzip bomb: {} {}",
        r.status,
        r.first_line()
    );
    // 300 MiB plain body.
    let r = pg.try_request(
        &Req::new("PUT", "/metrics/job/huge").body(vec![b'a'; 300 << 20]),
        Duration::from_secs(60),
    );
    if let Ok(r) = r {
        assert!(
            r.status == STATUS_BODY_TOO_LARGE || r.status == 400,
            "huge body: {}",
            r.status
        );
    }
    let hwm = vm_hwm_kib(pg.pid());
    assert!(
        hwm > 0 && hwm < 200 * 1024,
        "peak RSS {hwm} KiB: hostile bodies were buffered"
    );
    assert_eq!(pg.get("/-/ready").status, 200);
}

/// COMPAT.md wants `Content-Encoding` matched case-insensitively (1.5.1 only knows `gzip`).
#[test]
fn pushgate_only_content_encoding_case_insensitive() {
    let pg = Gateway::start("pushgate", &pushgate_bin(), &[], "");
    let r = pg.request(
        &Req::new("PUT", "/metrics/job/z")
            .header("Content-Encoding", "GZIP")
            .body(gzip(b"a 1\n")),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(sample_value(&scrape_text(&pg).1, "a", &[("job", "z")]).is_some());
}
