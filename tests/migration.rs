//! Taking over from a running upstream Pushgateway (Debian's 1.5.1, the real binary) without
//! losing a group: its persistence file given to `--persistence.file` or to `pushgate import
//! --from-file`, and `pushgate import --from` its HTTP API. Each time pushgate must then serve
//! exactly what upstream served (the differential suite's normalisation, plus the push times
//! themselves, which that normalisation hides).

mod common;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::*;

/// Upstream started with a persistence file written every second.
fn upstream(file: &Path) -> Gateway {
    Gateway::start(
        "upstream",
        &upstream_bin(),
        &[
            format!("--persistence.file={}", file.display()),
            "--persistence.interval=1s".to_owned(),
        ],
        "",
    )
}

/// Fills a gateway with every metric type, `@base64` grouping keys, empty label values, a
/// protobuf push, a POST that leaves families of two push times, a deleted group and a refused
/// push (which leaves a group holding only its failure time).
fn fill(gw: &Gateway) {
    let ok = |r: Resp| assert!(r.status == 200, "{} {}", r.status, r.text());
    ok(gw.put_text(
        "/metrics/job/batch/inst@base64/=",
        "# HELP done_total Runs done.\n# TYPE done_total counter\ndone_total{a=\"x\"} 3\ndone_total{a=\"\"} 4\n\
         # TYPE last_success gauge\nlast_success -1.5e-07\n",
    ));
    ok(gw.put_text(
        "/metrics/job@base64/am9iL3dpdGgvc2xhc2g/path@base64/L2EvYg==",
        "# TYPE latency summary\nlatency{quantile=\"0.5\"} 1\nlatency{quantile=\"0.9\"} NaN\n\
         latency_sum 10\nlatency_count 3\n\
         # TYPE size histogram\nsize_bucket{le=\"0.1\"} 1\nsize_bucket{le=\"1\"} 2\nsize_bucket{le=\"+Inf\"} 3\n\
         size_sum 1.5\nsize_count 3\nraw +Inf\n",
    ));
    let proto = pb::family(
        "proto_gauge",
        Some("From a protobuf push."),
        pb::MetricType::Gauge,
        vec![
            pb::gauge(&[("k", "v")], 42.0),
            pb::gauge(&[("k", "")], 1e300),
        ],
    );
    ok(gw.request(
        &Req::new("PUT", "/metrics/job/proto/instance/i1")
            .header("Content-Type", pb::CONTENT_TYPE)
            .body(pb::delimited(&[proto])),
    ));
    ok(gw.put_text("/metrics/job/gone", "gone 1\n"));
    assert_eq!(gw.delete("/metrics/job/gone").status, 202);
    // A later POST: the group's families now carry two push times.
    std::thread::sleep(Duration::from_millis(20));
    ok(gw.request(
        &Req::new("POST", "/metrics/job/batch/inst@base64/=")
            .body(b"# TYPE later untyped\nlater 1\n".to_vec()),
    ));
    let refused = gw.put_text(
        "/metrics/job/batch/x/y",
        "# TYPE last_success counter\nlast_success 2\n",
    );
    assert_eq!(refused.status, 400, "{}", refused.text());
}

/// The scrape's samples without self-metrics, exactly (push times included), sorted.
fn samples(gw: &Gateway) -> Vec<Sample> {
    let r = gw.get("/metrics");
    assert_eq!(r.status, 200);
    let mut s: Vec<Sample> = parse_samples(&r.text())
        .into_iter()
        .filter(|(n, _, _)| !SELF_METRIC_PREFIXES.iter().any(|p| n.starts_with(p)))
        .collect();
    s.sort();
    s
}

/// Each pushed family's `time_stamp` in `/api/v1/metrics`, as Unix seconds, by group and
/// family. The two timing families are left out: their values are the times (compared in
/// `samples`), and pushgate stamps them with the group's push time where upstream keeps the
/// time each was created or last set (a difference of the API, not of the migration).
fn family_times(gw: &Gateway) -> Vec<(String, String, f64)> {
    use time::format_description::well_known::Rfc3339;
    let v: serde_json::Value = serde_json::from_slice(&gw.get("/api/v1/metrics").body).unwrap();
    let mut out = Vec::new();
    for g in v["data"].as_array().unwrap() {
        for (name, f) in g.as_object().unwrap() {
            if name == "push_time_seconds" || name == "push_failure_time_seconds" {
                continue;
            }
            if let Some(ts) = f.get("time_stamp").and_then(|t| t.as_str()) {
                let t = time::OffsetDateTime::parse(ts, &Rfc3339).unwrap();
                out.push((
                    g["labels"].to_string(),
                    name.clone(),
                    t.unix_timestamp_nanos() as f64 / 1e9,
                ));
            }
        }
    }
    out.sort_by(|a, b| (&a.0, &a.1).cmp(&(&b.0, &b.1)));
    out
}

/// What upstream served, to compare pushgate with.
struct Served {
    scrape: String,
    api: serde_json::Value,
    samples: Vec<Sample>,
    times: Vec<(String, String, f64)>,
}

impl Served {
    fn of(gw: &Gateway) -> Served {
        Served {
            scrape: gw.scrape_normalised().1,
            api: gw.api_metrics_normalised().1,
            samples: samples(gw),
            times: family_times(gw),
        }
    }

    /// `pg` serves the same groups, metrics, push times and family push times.
    fn assert_served_by(&self, pg: &Gateway) {
        assert_eq!(pg.scrape_normalised().1, self.scrape);
        assert_eq!(pg.api_metrics_normalised().1, self.api);
        assert_eq!(samples(pg), self.samples);
        let times = family_times(pg);
        assert_eq!(times.len(), self.times.len(), "{times:?}");
        for (got, want) in times.iter().zip(&self.times) {
            assert_eq!((&got.0, &got.1), (&want.0, &want.1));
            assert!((got.2 - want.2).abs() < 1e-6, "{got:?} != {want:?}");
        }
    }
}

/// Fills an upstream gateway, records what it serves, and stops it with SIGTERM (its final
/// write of the file).
fn filled_upstream_file(file: &Path) -> Served {
    let mut up = upstream(file);
    fill(&up);
    let served = Served::of(&up);
    signal(up.pid(), "TERM");
    assert!(
        up.wait_exit(Duration::from_secs(20)),
        "upstream did not stop"
    );
    assert!(file.exists(), "upstream wrote no file; log:\n{}", up.log());
    served
}

#[test]
fn an_upstream_file_given_to_persistence_file_serves_what_upstream_served() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("pushgateway.data");
    let served = filled_upstream_file(&file);
    let original = std::fs::read(&file).unwrap();
    let flags = [
        format!("--persistence.file={}", file.display()),
        "--persistence.interval=200ms".to_owned(),
    ];
    let mut pg = Gateway::start("pushgate", &pushgate_bin(), &flags, "");
    served.assert_served_by(&pg);

    // Pushgate's snapshot replaces the file at the next round, unasked; the upstream file is
    // kept beside it byte for byte.
    let replaced = poll_until(Duration::from_secs(10), || {
        std::fs::read(&file)
            .ok()
            .filter(|b| b.starts_with(b"PGSNAP01"))
            .map(|_| ())
    });
    assert!(
        replaced.is_some(),
        "no snapshot written; log:\n{}",
        pg.log()
    );
    let kept: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| {
            e.file_name()
                .to_string_lossy()
                .starts_with("pushgateway.data.upstream-")
        })
        .map(|e| e.path())
        .collect();
    assert_eq!(kept.len(), 1, "{kept:?}");
    assert_eq!(std::fs::read(&kept[0]).unwrap(), original);

    // Restarted on its own snapshot: the same again, and the kept file is not taken twice.
    signal(pg.pid(), "TERM");
    assert!(pg.wait_exit(Duration::from_secs(20)));
    let pg = Gateway::start("pushgate", &pushgate_bin(), &flags, "");
    served.assert_served_by(&pg);
    let files = std::fs::read_dir(dir.path()).unwrap().count();
    assert_eq!(files, 2, "the snapshot and the kept upstream file");
}

#[test]
fn import_from_a_running_upstream_and_from_its_file_serves_what_upstream_served() {
    let dir = tempfile::tempdir().unwrap();
    let up = upstream(&dir.path().join("up.data"));
    fill(&up);
    let served = Served::of(&up);
    let admin = ["--web.enable-admin-api".to_owned()];
    let pg = Gateway::start("pushgate", &pushgate_bin(), &admin, "");
    let import = |args: &[String]| {
        let out = Command::new(pushgate_bin())
            .arg("import")
            .args(args)
            .output()
            .expect("pushgate import should run");
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        (out.status.success(), text)
    };
    let live = [
        format!("--from=http://{}", up.addr()),
        format!("--to=http://{}", pg.addr()),
    ];
    let (ok, out) = import(&live);
    assert!(ok, "{out}");
    assert!(out.contains("imported 4 groups"), "{out}");
    served.assert_served_by(&pg);
    // Again: nothing changes (each group is held as written no earlier than the import).
    let (ok, out) = import(&live);
    assert!(ok, "{out}");
    served.assert_served_by(&pg);

    // A push after the import is not undone by importing the older copy once more.
    assert_eq!(
        pg.put_text("/metrics/job/proto/instance/i1", "proto_gauge{k=\"v\"} 7\n")
            .status,
        200
    );
    let (ok, out) = import(&live);
    assert!(ok, "{out}");
    let v = sample_value(&pg.get("/metrics").text(), "proto_gauge", &[("k", "v")]);
    assert_eq!(v.as_deref(), Some("7"));

    // The file import, once upstream has written its file, into a fresh node.
    let mut up = up;
    signal(up.pid(), "TERM");
    assert!(up.wait_exit(Duration::from_secs(20)));
    let pg2 = Gateway::start("pushgate", &pushgate_bin(), &admin, "");
    let (ok, out) = import(&[
        format!("--from-file={}", dir.path().join("up.data").display()),
        format!("--to=http://{}", pg2.addr()),
    ]);
    assert!(ok, "{out}");
    served.assert_served_by(&pg2);

    // Without the admin API the target refuses, and the tool says why.
    let closed = Gateway::start("pushgate", &pushgate_bin(), &[], "");
    let (ok, out) = import(&[
        format!("--from-file={}", dir.path().join("up.data").display()),
        format!("--to=http://{}", closed.addr()),
    ]);
    assert!(!ok);
    assert!(out.contains("--web.enable-admin-api"), "{out}");
    assert!(out.contains("imported 0 of 4 groups"), "{out}");
}

#[test]
fn the_import_endpoint_refuses_what_is_not_a_valid_group_and_changes_nothing() {
    let pg = Gateway::start(
        "pushgate",
        &pushgate_bin(),
        &["--web.enable-admin-api".to_owned()],
        "",
    );
    let put = |body: Vec<u8>| pg.request(&Req::new("PUT", "/api/v1/admin/import").body(body));
    let r = put(b"not a snapshot".to_vec());
    assert_eq!(r.status, 400);
    assert!(
        r.text().contains("import body is not a pushgate snapshot"),
        "{}",
        r.text()
    );

    // A group pushed at a time in the future would outrank every later push: refused.
    let future = snapshot_of_one_group(4_000_000_000.0);
    let r = put(future);
    assert_eq!(r.status, 400);
    assert!(
        r.text().contains("is not a Unix time up to now"),
        "{}",
        r.text()
    );
    assert_eq!(pg.api_metrics_normalised().1["data"], serde_json::json!([]));

    // The same group at a past time is taken, with that push time.
    let r = put(snapshot_of_one_group(1_700_000_000.5));
    assert_eq!(r.status, 200, "{}", r.text());
    let v = sample_value(
        &pg.get("/metrics").text(),
        "push_time_seconds",
        &[("job", "j")],
    );
    assert_eq!(v.as_deref(), Some("1.7000000005e+09"));
    assert_eq!(pg.request(&Req::get("/api/v1/admin/import")).status, 405);
}

/// A pushgate snapshot holding the group `{job="j"}` with one gauge, pushed at `at`.
fn snapshot_of_one_group(at: f64) -> Vec<u8> {
    use pushgate::exposition::NameScheme;
    use pushgate::store::codec::{decode_group, snapshot_proto::Group};
    use pushgate::store::persistence::encode_snapshot;
    let group = Group {
        key: pb::labels(&[("job", "j")]),
        families: vec![pb::family(
            "g",
            None,
            pb::MetricType::Gauge,
            vec![pb::gauge(&[("instance", ""), ("job", "j")], 1.0)],
        )],
        push_time: at,
        last_push_successful: true,
        ..Default::default()
    };
    let group = decode_group(0, group, NameScheme::Legacy, None).unwrap();
    encode_snapshot(&[group], &[], at, 0)
}
