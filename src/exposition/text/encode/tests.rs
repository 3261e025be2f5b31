//! The encoder against expfmt's output, and the property test that parsing what it writes gives
//! the families back.

use proptest::prelude::*;

use crate::exposition::names::NameScheme;
use crate::exposition::proto::{
    Bucket, Counter, Gauge, Histogram, LabelPair, Metric, MetricFamily, MetricType, Quantile,
    Summary, Untyped,
};
use crate::exposition::text::parse::parse_text;

use super::{families_to_text, write_family, write_help_and_type, write_metric};

fn lp(name: &str, value: &str) -> LabelPair {
    LabelPair {
        name: Some(name.into()),
        value: Some(value.into()),
    }
}

#[test]
fn writes_families_like_expfmt() {
    let mf = MetricFamily {
        name: Some("h".into()),
        help: Some("line\nback\\slash \"q\"".into()),
        r#type: Some(MetricType::Histogram as i32),
        metric: vec![Metric {
            label: vec![lp("b", "x\"y"), lp("a", "1\n2\\")],
            histogram: Some(
                Histogram {
                    sample_count: Some(7),
                    sample_sum: Some(0.25),
                    bucket: vec![Bucket {
                        upper_bound: Some(0.1),
                        cumulative_count: Some(2),
                        ..Default::default()
                    }],
                    ..Default::default()
                }
                .into(),
            ),
            timestamp_ms: Some(-5),
            ..Default::default()
        }],
    };
    let mut out = Vec::new();
    write_family(&mut out, &mf);
    assert_eq!(
        String::from_utf8(out).unwrap(),
        "# HELP h line\\nback\\\\slash \"q\"\n# TYPE h histogram\n\
         h_bucket{b=\"x\\\"y\",a=\"1\\n2\\\\\",le=\"0.1\"} 2 -5\n\
         h_bucket{b=\"x\\\"y\",a=\"1\\n2\\\\\",le=\"+Inf\"} 7 -5\n\
         h_sum{b=\"x\\\"y\",a=\"1\\n2\\\\\"} 0.25 -5\n\
         h_count{b=\"x\\\"y\",a=\"1\\n2\\\\\"} 7 -5\n"
    );
    let mut out = Vec::new();
    write_help_and_type(&mut out, "x", Some(""), MetricType::GaugeHistogram);
    write_help_and_type(&mut out, "y", None, MetricType::Untyped);
    assert_eq!(out, b"# HELP x \n# TYPE x histogram\n# TYPE y untyped\n");
    let mut out = Vec::new();
    write_family(&mut out, &MetricFamily::default());
    assert!(out.is_empty());
}

#[test]
fn every_line_of_a_metric_carries_its_labels_with_or_without_braces_of_its_own() {
    let hist = |name: &str, label: Vec<LabelPair>| MetricFamily {
        name: Some(name.into()),
        help: None,
        r#type: Some(MetricType::Histogram as i32),
        metric: vec![Metric {
            label,
            histogram: Some(
                Histogram {
                    sample_count: Some(2),
                    sample_sum: Some(3.0),
                    bucket: vec![Bucket {
                        upper_bound: Some(1.0),
                        cumulative_count: Some(2),
                        ..Default::default()
                    }],
                    ..Default::default()
                }
                .into(),
            ),
            ..Default::default()
        }],
    };
    let text = |mf: &MetricFamily| {
        let mut out = Vec::new();
        write_family(&mut out, mf);
        String::from_utf8(out).unwrap()
    };
    // A quoted (non-legacy) name opens the braces itself; its labels follow a comma.
    assert_eq!(
        text(&hist("my.h", vec![lp("a", "1"), lp("b.c", "x\"")])),
        "# TYPE \"my.h\" histogram\n\
         {\"my.h_bucket\",a=\"1\",\"b.c\"=\"x\\\"\",le=\"1\"} 2\n\
         {\"my.h_bucket\",a=\"1\",\"b.c\"=\"x\\\"\",le=\"+Inf\"} 2\n\
         {\"my.h_sum\",a=\"1\",\"b.c\"=\"x\\\"\"} 3\n\
         {\"my.h_count\",a=\"1\",\"b.c\"=\"x\\\"\"} 2\n"
    );
    // No labels: braces only around `le`, none on the sum and count lines.
    assert_eq!(
        text(&hist("h", vec![])),
        "# TYPE h histogram\nh_bucket{le=\"1\"} 2\nh_bucket{le=\"+Inf\"} 2\nh_sum 3\nh_count 2\n"
    );
}

#[test]
fn writes_summaries() {
    let m = Metric {
        summary: Some(
            Summary {
                sample_count: Some(3),
                sample_sum: Some(1.5),
                quantile: vec![Quantile {
                    quantile: Some(0.99),
                    value: Some(1e-7),
                }],
            }
            .into(),
        ),
        ..Default::default()
    };
    let mut out = Vec::new();
    write_metric(&mut out, "s", MetricType::Summary, &m);
    assert_eq!(
        String::from_utf8(out).unwrap(),
        "s{quantile=\"0.99\"} 1e-07\ns_sum 1.5\ns_count 3\n"
    );
}

fn nan_aware_eq(a: &[MetricFamily], b: &[MetricFamily]) -> bool {
    // Compare the encodings with NaN payloads normalised: NaN != NaN in PartialEq.
    format!("{a:?}") == format!("{b:?}")
}

fn arb_value() -> impl Strategy<Value = f64> {
    prop_oneof![
        any::<f64>(),
        Just(f64::NAN),
        Just(f64::INFINITY),
        Just(f64::NEG_INFINITY),
        -1e6..1e6f64,
        (0u32..1000).prop_map(f64::from),
    ]
}

fn arb_labels() -> impl Strategy<Value = Vec<LabelPair>> {
    proptest::collection::btree_map(
        "[a-zA-Z_][a-zA-Z0-9_]{0,6}",
        "\\PC{0,8}|[\"\\\\\n]{0,4}",
        0..4,
    )
    .prop_map(|m| {
        m.into_iter()
            .filter(|(k, _)| k != "__name__" && k != "le" && k != "quantile")
            .map(|(k, v)| lp(&k, &v))
            .collect()
    })
}

fn arb_metric(typ: MetricType) -> impl Strategy<Value = Metric> {
    (
        arb_labels(),
        arb_value(),
        proptest::option::of(any::<i64>()),
    )
        .prop_map(move |(label, v, ts)| {
            // expfmt writes -0 as 0.
            let v = if v == 0.0 { 0.0 } else { v };
            let mut m = Metric {
                label,
                timestamp_ms: ts,
                ..Default::default()
            };
            match typ {
                MetricType::Counter => {
                    m.counter = Some(Counter {
                        value: Some(v),
                        exemplar: None,
                    })
                }
                MetricType::Gauge => m.gauge = Some(Gauge { value: Some(v) }),
                _ => m.untyped = Some(Untyped { value: Some(v) }),
            }
            m
        })
}

fn arb_family(name: String) -> impl Strategy<Value = MetricFamily> {
    let typ = prop_oneof![
        Just(MetricType::Counter),
        Just(MetricType::Gauge),
        Just(MetricType::Untyped)
    ];
    (typ, proptest::option::of("\\PC{1,10}")).prop_flat_map(move |(typ, help)| {
        let name = name.clone();
        proptest::collection::vec(arb_metric(typ), 1..4).prop_map(move |metric| {
            MetricFamily {
                name: Some(name.clone()),
                // A HELP of only blanks reads back as no HELP at all.
                help: help.clone().filter(|h| !h.starts_with([' ', '\t'])),
                r#type: Some(typ as i32),
                metric,
            }
        })
    })
}

fn arb_families() -> impl Strategy<Value = Vec<MetricFamily>> {
    proptest::collection::btree_set("[a-zA-Z_:][a-zA-Z0-9_:]{0,8}", 1..4).prop_flat_map(|names| {
        // Names that would fold into each other (x and x_sum) are not independent families.
        let names: Vec<String> = names
            .into_iter()
            .filter(|n| !n.ends_with("_sum") && !n.ends_with("_count") && !n.ends_with("_bucket"))
            .collect();
        names.into_iter().map(arb_family).collect::<Vec<_>>()
    })
}

proptest! {
    #[test]
    fn text_round_trip(families in arb_families()) {
        let text = families_to_text(&families);
        let parsed = parse_text(&text, NameScheme::Legacy)
            .map_err(|e| TestCaseError::fail(format!("{e}: {}", String::from_utf8_lossy(&text))))?;
        prop_assert!(nan_aware_eq(&families, &parsed), "{:?}\n{}\n{:?}", families, String::from_utf8_lossy(&text), parsed);
    }
}
