//! What pushgate renders, read by parsers that are not pushgate's: the Python client's
//! (`prometheus_client.parser`, in one long-lived subprocess, tests/python/parse_exposition.py)
//! and Prometheus' (`promtool check metrics`). Generated stores (groups with grouping keys that
//! need base64, every metric type, labels and HELP with escapes and UTF-8, NaN and infinities),
//! pushed to a real pushgate as text or protobuf, must come back from `/metrics` as exactly the
//! pushed families: names, types, HELP, every sample's labels (the grouping key added) and value.
//! The same generated families written by pushgate's text encoder must read back the same through
//! the Python parser (the encoder's round trip, not only against pushgate's own parser).
//!
//! The expected families come from the generator's model, written out by this file's own
//! writer, never from pushgate's output. Env: `PUSHGATE_BIN`, `PYTHON` (default `python3`).

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};

use base64::Engine;
use common::pb;
use common::*;
use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError, TestRunner};
use pushgate::testsupport::promtool_check;

/// Cases per property: each pushes a store over HTTP, scrapes it and runs promtool once.
const CASES: u32 = 192;

#[derive(Clone, Debug)]
enum Value {
    Single(f64),
    Summary {
        count: u64,
        sum: f64,
        quantiles: Vec<(f64, f64)>,
    },
    /// Finite upper bounds with their cumulative counts; the +Inf bucket holds `count`.
    Histogram {
        count: u64,
        sum: f64,
        buckets: Vec<(f64, u64)>,
    },
}

/// Label pairs, as generated (sorted by name) or as a grouping key (`job` first).
type Labels = Vec<(String, String)>;

/// One family's series in a group: labels -> value.
type Series = BTreeMap<Labels, Value>;

#[derive(Clone, Debug)]
struct Family {
    name: String,
    kind: Kind,
    help: Option<String>,
}

#[derive(Clone, Debug)]
struct Group {
    /// `job` first; maybe `instance`; maybe `gk`.
    key: Labels,
    /// (index into the catalogue, series: labels -> value).
    families: Vec<(usize, Series)>,
    protobuf: bool,
}

#[derive(Clone, Debug)]
struct Store {
    catalogue: Vec<Family>,
    groups: Vec<Group>,
}

fn arb_float() -> impl Strategy<Value = f64> {
    prop_oneof![
        Just(f64::NAN),
        Just(f64::INFINITY),
        Just(f64::NEG_INFINITY),
        Just(0.0),
        Just(-0.0),
        Just(f64::MAX),
        Just(f64::MIN_POSITIVE),
        Just(5e-324),
        (-1000i32..1000).prop_map(f64::from),
        any::<f64>().prop_filter("finite", |v| v.is_finite()),
    ]
}

/// Label and HELP text: printable UTF-8 and the characters the format escapes.
fn arb_text() -> impl Strategy<Value = String> {
    "(\\PC|[\"\\\\\n\t]){0,10}"
}

fn arb_labels() -> impl Strategy<Value = Labels> {
    proptest::collection::btree_map("[a-z][a-z0-9_]{0,5}", arb_text(), 0..3).prop_map(|m| {
        m.into_iter()
            .filter(|(k, _)| !["job", "instance", "gk", "le", "quantile"].contains(&k.as_str()))
            .collect()
    })
}

fn arb_value(kind: Kind) -> BoxedStrategy<Value> {
    match kind {
        Kind::Summary => (
            0u64..1_000_000,
            arb_float(),
            proptest::collection::btree_map(0u32..=1000, arb_float(), 0..4),
        )
            .prop_map(|(count, sum, q)| Value::Summary {
                count,
                sum,
                quantiles: q
                    .into_iter()
                    .map(|(q, v)| (f64::from(q) / 1000.0, v))
                    .collect(),
            })
            .boxed(),
        Kind::Histogram => (
            proptest::collection::btree_map(-1000i32..1000, 0u64..1000, 0..5),
            0u64..1000,
            arb_float(),
        )
            .prop_map(|(b, extra, sum)| {
                let mut total = 0;
                let buckets = b
                    .into_iter()
                    .map(|(ub, n)| {
                        total += n;
                        (f64::from(ub) / 8.0, total)
                    })
                    .collect();
                Value::Histogram {
                    count: total + extra,
                    sum,
                    buckets,
                }
            })
            .boxed(),
        _ => arb_float().prop_map(Value::Single).boxed(),
    }
}

fn arb_kind() -> impl Strategy<Value = Kind> {
    prop_oneof![
        Just(Kind::Counter),
        Just(Kind::Gauge),
        Just(Kind::Untyped),
        Just(Kind::NoType),
        Just(Kind::Summary),
        Just(Kind::Histogram),
    ]
}

/// Family names of the test's own (`pt_`), none another's name plus a suffix the format gives
/// meaning to, so every family stands alone in every parser.
fn arb_catalogue() -> impl Strategy<Value = Vec<Family>> {
    proptest::collection::btree_map(
        "pt_[a-z0-9_:]{0,8}".prop_filter("no reserved suffix", |n| {
            !["_sum", "_count", "_bucket", "_total", "_created", "_info"]
                .iter()
                .any(|s| n.ends_with(s))
        }),
        (
            arb_kind(),
            // No leading or trailing blank: the text format does not keep them in HELP.
            proptest::option::of("[^\\s\\p{C}](\\PC|\\\\|\n){0,12}[^\\s\\p{C}]"),
        ),
        1..5,
    )
    .prop_map(|m| {
        m.into_iter()
            .map(|(name, (kind, help))| Family { name, kind, help })
            .collect()
    })
}

fn arb_series(kind: Kind) -> impl Strategy<Value = Series> {
    proptest::collection::btree_map(arb_labels(), arb_value(kind), 1..4)
}

fn arb_group(catalogue: Vec<Family>, i: usize) -> impl Strategy<Value = Group> {
    let picks = proptest::sample::subsequence(
        (0..catalogue.len()).collect::<Vec<_>>(),
        1..=catalogue.len(),
    );
    let instance = proptest::option::of(prop_oneof!["[a-z0-9.:]{1,8}", "\\PC{1,6}"]);
    let gk = proptest::option::of("(\\PC|/){1,6}");
    (picks, instance, gk, "[a-z]{0,3}|\\PC{1,4}", any::<bool>()).prop_flat_map(
        move |(picks, instance, gk, job, protobuf)| {
            let mut key = vec![("job".to_owned(), format!("j{i}{job}"))];
            key.extend(instance.map(|v| ("instance".to_owned(), v)));
            key.extend(gk.map(|v| ("gk".to_owned(), v)));
            let families: Vec<_> = picks
                .iter()
                .map(|&f| arb_series(catalogue[f].kind).prop_map(move |s| (f, s)))
                .collect();
            families.prop_map(move |families| Group {
                key: key.clone(),
                families,
                protobuf,
            })
        },
    )
}

fn arb_store() -> impl Strategy<Value = Store> {
    (arb_catalogue(), 1usize..4).prop_flat_map(|(catalogue, n)| {
        let groups: Vec<_> = (0..n).map(|i| arb_group(catalogue.clone(), i)).collect();
        (Just(catalogue), groups).prop_map(|(catalogue, groups)| Store { catalogue, groups })
    })
}

// ---- the test's own writer of what is pushed ----

fn float_text(v: f64) -> String {
    if v.is_nan() {
        "NaN".into()
    } else if v == f64::INFINITY {
        "+Inf".into()
    } else if v == f64::NEG_INFINITY {
        "-Inf".into()
    } else {
        format!("{v:e}")
    }
}

fn escape(s: &str, quotes: bool) -> String {
    let mut out = String::new();
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '"' if quotes => out.push_str("\\\""),
            c => out.push(c),
        }
    }
    out
}

fn sample_line(
    out: &mut String,
    name: &str,
    labels: &[(String, String)],
    extra: Option<(&str, f64)>,
    v: f64,
) {
    let mut parts: Vec<String> = labels
        .iter()
        .map(|(k, v)| format!("{k}=\"{}\"", escape(v, true)))
        .collect();
    if let Some((k, x)) = extra {
        parts.push(format!("{k}=\"{}\"", float_text(x)));
    }
    out.push_str(&format!(
        "{name}{{{}}} {}\n",
        parts.join(","),
        float_text(v)
    ));
}

/// The sample lines of one series as the text format has them: (name, `le` or `quantile`
/// with its value, value), for the writer and for what the parsers must read back alike.
fn samples_of(n: &str, value: &Value, mut f: impl FnMut(&str, Option<(&str, f64)>, f64)) {
    match value {
        Value::Single(v) => f(n, None, *v),
        Value::Summary {
            count,
            sum,
            quantiles,
        } => {
            for (q, v) in quantiles {
                f(n, Some(("quantile", *q)), *v);
            }
            f(&format!("{n}_sum"), None, *sum);
            f(&format!("{n}_count"), None, *count as f64);
        }
        Value::Histogram {
            count,
            sum,
            buckets,
        } => {
            let bucket = format!("{n}_bucket");
            for (ub, c) in buckets {
                f(&bucket, Some(("le", *ub)), *c as f64);
            }
            f(&bucket, Some(("le", f64::INFINITY)), *count as f64);
            f(&format!("{n}_sum"), None, *sum);
            f(&format!("{n}_count"), None, *count as f64);
        }
    }
}

fn text_body(catalogue: &[Family], group: &Group) -> String {
    let mut out = String::new();
    for (f, series) in &group.families {
        let fam = &catalogue[*f];
        if let Some(help) = &fam.help {
            out.push_str(&format!("# HELP {} {}\n", fam.name, escape(help, false)));
        }
        if let Some(t) = fam.kind.type_line() {
            out.push_str(&format!("# TYPE {} {t}\n", fam.name));
        }
        for (labels, value) in series {
            samples_of(&fam.name, value, |name, extra, v| {
                sample_line(&mut out, name, labels, extra, v)
            });
        }
    }
    out
}

fn proto_families(catalogue: &[Family], group: &Group) -> Vec<pb::MetricFamily> {
    group
        .families
        .iter()
        .map(|(f, series)| {
            let fam = &catalogue[*f];
            let ty = match fam.kind {
                Kind::Counter => pb::MetricType::Counter,
                Kind::Gauge => pb::MetricType::Gauge,
                Kind::Untyped | Kind::NoType => pb::MetricType::Untyped,
                Kind::Summary => pb::MetricType::Summary,
                Kind::Histogram => pb::MetricType::Histogram,
            };
            let metrics = series
                .iter()
                .map(|(labels, value)| {
                    let pairs: Vec<(&str, &str)> = labels
                        .iter()
                        .map(|(k, v)| (k.as_str(), v.as_str()))
                        .collect();
                    match (fam.kind, value) {
                        (Kind::Counter, Value::Single(v)) => pb::counter(&pairs, *v),
                        (Kind::Gauge, Value::Single(v)) => pb::gauge(&pairs, *v),
                        (_, Value::Single(v)) => pb::untyped(&pairs, *v),
                        (
                            _,
                            Value::Summary {
                                count,
                                sum,
                                quantiles,
                            },
                        ) => pb::summary(&pairs, *count, *sum, quantiles),
                        (
                            _,
                            Value::Histogram {
                                count,
                                sum,
                                buckets,
                            },
                        ) => pb::histogram(&pairs, *count, *sum, buckets),
                    }
                })
                .collect();
            pb::family(&fam.name, fam.help.as_deref(), ty, metrics)
        })
        .collect()
}

fn group_path(key: &[(String, String)]) -> String {
    let b64 = base64::engine::general_purpose::URL_SAFE;
    key.iter()
        .map(|(k, v)| format!("/{k}@base64/{}", b64.encode(v)))
        .collect::<String>()
}

// ---- what every parser must read back ----

/// A sample as the parsers are compared on: name, labels (`le` and `quantile` as the floats
/// they stand for) and the value (NaN equal to itself, -0 equal to 0).
type Sample = (String, BTreeMap<String, String>, String);

fn canonical_float(v: f64) -> String {
    if v.is_nan() {
        "NaN".into()
    } else if v == 0.0 {
        "0".into()
    } else {
        format!("{v:?}")
    }
}

fn canonical_label(name: &str, value: &str) -> String {
    match (name, value) {
        ("le" | "quantile", v) => match v {
            "+Inf" => canonical_float(f64::INFINITY),
            v => v
                .parse::<f64>()
                .map(canonical_float)
                .unwrap_or_else(|_| v.to_owned()),
        },
        _ => value.to_owned(),
    }
}

fn sample(
    name: &str,
    labels: &BTreeMap<String, String>,
    extra: Option<(&str, f64)>,
    v: f64,
) -> Sample {
    let mut labels = labels.clone();
    if let Some((k, x)) = extra {
        labels.insert(k.to_owned(), canonical_float(x));
    }
    (name.to_owned(), labels, canonical_float(v))
}

/// Python's family type, HELP and samples for one pushed family: the grouping key joins the
/// labels (with `instance=""` when `with_key` and the key has none); the Python parser names a
/// counter's samples `<name>_total`.
fn expected_samples(
    fam: &Family,
    groups: &[(Labels, &Series)],
    with_key: bool,
) -> BTreeSet<Sample> {
    let mut out = BTreeSet::new();
    for (key, series) in groups {
        for (labels, value) in *series {
            let mut all: BTreeMap<String, String> = labels.iter().cloned().collect();
            if with_key {
                all.extend(key.iter().cloned());
                all.entry("instance".to_owned()).or_default();
            }
            samples_of(&fam.name, value, |name, extra, v| {
                // The Python parser names a counter's samples `<name>_total`.
                let name = match fam.kind {
                    Kind::Counter => format!("{name}_total"),
                    _ => name.to_owned(),
                };
                out.insert(sample(&name, &all, extra, v));
            });
        }
    }
    out
}

/// The type the Python parser reports: it calls untyped families `unknown` (OpenMetrics' name).
fn python_type(kind: Kind) -> &'static str {
    match kind.type_line() {
        None | Some("untyped") => "unknown",
        Some(t) => t,
    }
}

/// One parsed family: type, HELP, samples.
type Parsed = BTreeMap<String, (String, String, Vec<Sample>)>;

/// The Python client's parser in one process for the whole test.
struct PythonParser {
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
}

impl PythonParser {
    fn start() -> PythonParser {
        let python = std::env::var("PYTHON").unwrap_or_else(|_| "python3".to_string());
        let script = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/python/parse_exposition.py"
        );
        let mut child = Command::new(&python)
            .arg(script)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("{python} should start (it needs prometheus_client: pip install prometheus_client, or set PYTHON): {e}"));
        let stdin = child.stdin.take().expect("stdin was piped");
        let stdout = BufReader::new(child.stdout.take().expect("stdout was piped"));
        PythonParser {
            child,
            stdin,
            stdout,
        }
    }

    /// Families by name, or the parser's error.
    fn parse(&mut self, text: &str) -> Result<Parsed, String> {
        let request = serde_json::json!({ "text": text });
        writeln!(self.stdin, "{request}").expect("writing to the Python parser");
        self.stdin.flush().expect("flushing to the Python parser");
        let mut line = String::new();
        self.stdout
            .read_line(&mut line)
            .expect("reading the Python parser");
        assert!(
            !line.is_empty(),
            "the Python parser exited (is prometheus_client installed? pip install prometheus_client)"
        );
        let answer: serde_json::Value =
            serde_json::from_str(&line).expect("the parser answers JSON");
        if answer["ok"] != true {
            return Err(answer["error"].to_string());
        }
        let mut out = Parsed::new();
        for f in answer["families"].as_array().expect("families") {
            let samples = f["samples"]
                .as_array()
                .expect("samples")
                .iter()
                .map(|s| {
                    let labels: BTreeMap<String, String> = s["labels"]
                        .as_object()
                        .expect("labels")
                        .iter()
                        .map(|(k, v)| {
                            (
                                k.clone(),
                                canonical_label(k, v.as_str().expect("label value")),
                            )
                        })
                        .collect();
                    let v: f64 = s["value"]
                        .as_str()
                        .expect("value")
                        .parse()
                        .expect("a float repr");
                    (
                        s["name"].as_str().expect("name").to_owned(),
                        labels,
                        canonical_float(v),
                    )
                })
                .collect();
            let name = f["name"].as_str().expect("name").to_owned();
            let entry = (
                f["type"].as_str().expect("type").to_owned(),
                f["help"].as_str().expect("help").to_owned(),
                samples,
            );
            if out.insert(name.clone(), entry).is_some() {
                return Err(format!(
                    "family {name} parsed twice (split apart in the exposition)"
                ));
            }
        }
        Ok(out)
    }
}

impl Drop for PythonParser {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Every pushed family comes back from `parsed` with its type, HELP and exactly its samples.
fn check_families(
    parsed: &Parsed,
    catalogue: &[Family],
    groups: &[(Labels, &[(usize, Series)])],
    with_key: bool,
) -> Result<(), String> {
    for (i, fam) in catalogue.iter().enumerate() {
        let present: Vec<_> = groups
            .iter()
            .flat_map(|(key, fams)| {
                fams.iter()
                    .filter(|(f, _)| *f == i)
                    .map(move |(_, s)| (key.clone(), s))
            })
            .collect();
        let got = parsed.get(&fam.name);
        if present.is_empty() {
            if got.is_some() {
                return Err(format!("{} was never pushed but parsed: {got:?}", fam.name));
            }
            continue;
        }
        let Some((ty, help, samples)) = got else {
            return Err(format!("{} missing", fam.name));
        };
        if ty != python_type(fam.kind) {
            return Err(format!(
                "{}: type {ty}, want {}",
                fam.name,
                python_type(fam.kind)
            ));
        }
        let want_help = fam.help.clone().unwrap_or_default();
        if *help != want_help {
            return Err(format!("{}: HELP {help:?}, want {want_help:?}", fam.name));
        }
        let got: BTreeSet<Sample> = samples.iter().cloned().collect();
        if got.len() != samples.len() {
            return Err(format!("{}: a sample is repeated: {samples:?}", fam.name));
        }
        let want = expected_samples(fam, &present, with_key);
        if got != want {
            let missing: Vec<_> = want.difference(&got).collect();
            let extra: Vec<_> = got.difference(&want).collect();
            return Err(format!(
                "{}: missing {missing:?}, unexpected {extra:?}",
                fam.name
            ));
        }
    }
    Ok(())
}

fn runner() -> TestRunner {
    TestRunner::new(Config {
        cases: CASES,
        failure_persistence: None,
        ..Config::default()
    })
}

/// A store pushed group by group (text or protobuf) to a real pushgate: its `/metrics` parses
/// with promtool and with the Python client's parser, which read back every pushed family as
/// it was pushed, plus each group's push_time_seconds and push_failure_time_seconds.
#[test]
fn what_pushgate_serves_reads_back_as_pushed_in_prometheus_and_python_parsers() {
    let gw = Gateway::start(
        "pushgate",
        &pushgate_bin(),
        &["--web.enable-admin-api".to_owned()],
        "",
    );
    let python = std::cell::RefCell::new(PythonParser::start());
    let result = runner().run(&arb_store(), |store| {
        let wiped = gw.request(&Req::new("PUT", "/api/v1/admin/wipe"));
        prop_assert_eq!(wiped.status, 202);
        for g in &store.groups {
            let path = format!("/metrics{}", group_path(&g.key));
            let req = if g.protobuf {
                Req::new("PUT", &path)
                    .header("Content-Type", pb::CONTENT_TYPE)
                    .body(pb::delimited(&proto_families(&store.catalogue, g)))
            } else {
                Req::new("PUT", &path).body(text_body(&store.catalogue, g))
            };
            let r = gw.request(&req);
            prop_assert_eq!(r.status, 200, "push to {} refused: {}", path, r.text());
        }
        let scrape = gw.get("/metrics");
        prop_assert_eq!(scrape.status, 200);
        let text = scrape.text();
        promtool_check(&text).map_err(|e| TestCaseError::fail(format!("{e}\n{text}")))?;
        let parsed = python
            .borrow_mut()
            .parse(&text)
            .map_err(|e| TestCaseError::fail(format!("Python parser: {e}\n{text}")))?;
        let groups: Vec<_> = store
            .groups
            .iter()
            .map(|g| (g.key.clone(), &g.families[..]))
            .collect();
        check_families(&parsed, &store.catalogue, &groups, true)
            .map_err(|e| TestCaseError::fail(format!("{e}\n{text}")))?;
        for meta in ["push_time_seconds", "push_failure_time_seconds"] {
            let (ty, _, samples) = parsed
                .get(meta)
                .ok_or_else(|| TestCaseError::fail(format!("{meta} missing\n{text}")))?;
            prop_assert_eq!(ty, "gauge");
            let mut keys: Vec<BTreeMap<String, String>> = store
                .groups
                .iter()
                .map(|g| {
                    let mut k: BTreeMap<String, String> = g.key.iter().cloned().collect();
                    k.entry("instance".to_owned()).or_default();
                    k
                })
                .collect();
            keys.sort();
            let mut got: Vec<_> = samples.iter().map(|s| s.1.clone()).collect();
            got.sort();
            prop_assert_eq!(got, keys, "{} labels", meta);
            for s in samples {
                let v: f64 = s.2.parse().expect("a number");
                prop_assert!(
                    if meta == "push_time_seconds" {
                        v > 1e9
                    } else {
                        v == 0.0
                    },
                    "{:?}",
                    s
                );
            }
        }
        Ok(())
    });
    if let Err(e) = result {
        panic!("{e}\ngateway log:\n{}", gw.log());
    }
}

/// pushgate's text encoder (`families_to_text`), read by the Python client's parser: every
/// family as it was given. The encoder's own round trip (src/exposition/text/encode/tests.rs)
/// reads it back with pushgate's parser; this one does not depend on that parser.
#[test]
fn the_text_encoder_reads_back_in_the_python_parser() {
    let python = std::cell::RefCell::new(PythonParser::start());
    let result = runner().run(&arb_store(), |store| {
        let g = &store.groups[0];
        let text = String::from_utf8(pushgate::exposition::families_to_text(&proto_families(
            &store.catalogue,
            g,
        )))
        .expect("the encoder writes UTF-8");
        let parsed = python
            .borrow_mut()
            .parse(&text)
            .map_err(|e| TestCaseError::fail(format!("Python parser: {e}\n{text}")))?;
        check_families(
            &parsed,
            &store.catalogue,
            &[(g.key.clone(), &g.families[..])],
            false,
        )
        .map_err(|e| TestCaseError::fail(format!("{e}\n{text}")))?;
        prop_assert_eq!(parsed.len(), g.families.len(), "{}", text);
        Ok(())
    });
    if let Err(e) = result {
        panic!("{e}");
    }
}

/// The parsers this file trusts as oracles refuse what is not an exposition (so agreement with
/// them means something), and the test's writer is what they read.
#[test]
fn the_oracles_refuse_broken_expositions() {
    let mut python = PythonParser::start();
    for broken in ["pt_a{x=\"1\" 1\n", "pt_a{x=1} 1\n", "pt_a one\n"] {
        assert!(python.parse(broken).is_err(), "Python accepted {broken:?}");
        assert!(
            promtool_check(broken).is_err(),
            "promtool accepted {broken:?}"
        );
    }
    let fam = Family {
        name: "pt_h".into(),
        kind: Kind::Histogram,
        help: Some("a\\b\nc".into()),
    };
    let labels = vec![("a".to_owned(), "q\"\\\n\u{e9}".to_owned())];
    let value = Value::Histogram {
        count: 3,
        sum: f64::NAN,
        buckets: vec![(0.5, 1)],
    };
    let group = Group {
        key: vec![("job".into(), "j".into())],
        families: vec![(0, BTreeMap::from([(labels, value)]))],
        protobuf: false,
    };
    let text = text_body(std::slice::from_ref(&fam), &group);
    assert_eq!(
        text,
        "# HELP pt_h a\\\\b\\nc\n# TYPE pt_h histogram\n\
         pt_h_bucket{a=\"q\\\"\\\\\\n\u{e9}\",le=\"5e-1\"} 1e0\n\
         pt_h_bucket{a=\"q\\\"\\\\\\n\u{e9}\",le=\"+Inf\"} 3e0\n\
         pt_h_sum{a=\"q\\\"\\\\\\n\u{e9}\"} NaN\npt_h_count{a=\"q\\\"\\\\\\n\u{e9}\"} 3e0\n"
    );
    let parsed = python.parse(&text).expect("the writer's text parses");
    check_families(
        &parsed,
        std::slice::from_ref(&fam),
        &[(group.key.clone(), &group.families[..])],
        false,
    )
    .expect("read back");
    promtool_check(&text).expect("promtool reads the writer's text");
    // And the comparison notices a changed value.
    let changed = text.replace(
        "pt_h_sum{a=\"q\\\"\\\\\\n\u{e9}\"} NaN",
        "pt_h_sum{a=\"q\\\"\\\\\\n\u{e9}\"} 1",
    );
    let parsed = python.parse(&changed).expect("parses");
    assert!(check_families(
        &parsed,
        &[fam],
        &[(group.key.clone(), &group.families[..])],
        false
    )
    .is_err());
}
