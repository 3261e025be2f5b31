//! Protobuf encoding of one `Metric` as a `MetricFamily.metric` field (tag 4), written by hand
//! for the shapes the text format carries: labels and a counter, gauge, untyped value, summary or
//! classic histogram. Every push encodes each of its metrics once, and the generic encoder walks
//! each message twice (length, then bytes) through `BufMut`; this writes the same bytes directly
//! into the buffer. A metric with any other field set (exemplars, native histogram buckets,
//! float counts, a timestamp) goes through `prost` unchanged, so the output is always exactly
//! what `prost` writes.

use super::proto::{Bucket, Histogram, LabelPair, Quantile, Summary};
use super::text::parse::{ParsedMetric, Point};
use super::{Metric, MetricType};

/// `MetricFamily.metric` is field 4, length-delimited.
const METRIC_FIELD_TAG: u8 = 4 << 3 | 2;

#[cfg(test)]
/// Appends `m` as field 4 of a `MetricFamily` message to `out`.
pub fn encode_metric_field(m: &Metric, out: &mut Vec<u8>) {
    let unset_label = m
        .label
        .iter()
        .any(|lp| lp.name.is_none() || lp.value.is_none());
    if !is_simple(m) || unset_label {
        prost::encoding::message::encode(4, m, out);
        return;
    }
    let labels: Vec<(&str, &str)> = m.label_pairs().collect();
    encode_simple(m, &labels, out);
}

/// [`encode_metric_field`] with the metric's label pairs given instead of its own `label` field
/// (the store passes them with the grouping labels merged in); every pair is written with both
/// its name and its value.
pub fn encode_metric_field_labelled(m: &Metric, labels: &[(&str, &str)], out: &mut Vec<u8>) {
    if is_simple(m) {
        encode_simple(m, labels, out);
    } else {
        let mut full = m.clone();
        full.label = labels
            .iter()
            .map(|&(n, v)| LabelPair {
                name: Some(n.to_owned()),
                value: Some(v.to_owned()),
            })
            .collect();
        prost::encoding::message::encode(4, &full, out);
    }
}

fn encode_simple(m: &Metric, labels: &[(&str, &str)], out: &mut Vec<u8>) {
    put_metric_head(out, metric_len(m, labels), labels);
    if let Some(g) = &m.gauge {
        put_scalar(out, 2, g.value);
    }
    if let Some(c) = &m.counter {
        put_scalar(out, 3, c.value);
    }
    if let Some(s) = &m.summary {
        put_head(out, 4, summary_len(s));
        put_count(out, s.sample_count);
        put_double(out, 2, s.sample_sum);
        for q in &s.quantile {
            put_head(out, 3, quantile_len(q));
            put_double(out, 1, q.quantile);
            put_double(out, 2, q.value);
        }
    }
    if let Some(u) = &m.untyped {
        put_scalar(out, 5, u.value);
    }
    if let Some(h) = &m.histogram {
        put_head(out, 7, histogram_len(h));
        put_count(out, h.sample_count);
        put_double(out, 2, h.sample_sum);
        for b in &h.bucket {
            put_head(out, 3, bucket_len(b));
            put_count(out, b.cumulative_count);
            put_double(out, 2, b.upper_bound);
        }
    }
}

/// [`encode_metric_field_labelled`] for a metric of a parsed text body (`typ` is its family's):
/// the bytes `prost` writes for the `Metric` that [`ParsedText::to_families`] would build.
///
/// [`ParsedText::to_families`]: super::text::parse::ParsedText::to_families
pub fn encode_parsed_labelled(
    typ: MetricType,
    m: &ParsedMetric,
    points: &[Point],
    labels: &[(&str, &str)],
    out: &mut Vec<u8>,
) {
    let scalar = field_len(double_len(Some(m.value)));
    let samples = match typ {
        MetricType::Summary => {
            count_len(m.count)
                + double_len(m.sum)
                + points.len() * field_len(2 * double_len(Some(0.0)))
        }
        MetricType::Histogram | MetricType::GaugeHistogram => {
            count_len(m.count)
                + double_len(m.sum)
                + points
                    .iter()
                    .map(|p| field_len(count_len(Some(p.count())) + double_len(Some(p.bound))))
                    .sum::<usize>()
        }
        _ => 0,
    };
    let len = labels_len(labels)
        + match typ {
            MetricType::Summary | MetricType::Histogram | MetricType::GaugeHistogram => {
                field_len(samples)
            }
            _ => scalar,
        };
    put_metric_head(out, len, labels);
    match typ {
        MetricType::Gauge => put_scalar(out, 2, Some(m.value)),
        MetricType::Counter => put_scalar(out, 3, Some(m.value)),
        MetricType::Untyped => put_scalar(out, 5, Some(m.value)),
        MetricType::Summary => {
            put_head(out, 4, samples);
            put_count(out, m.count);
            put_double(out, 2, m.sum);
            for p in points {
                put_head(out, 3, 2 * double_len(Some(0.0)));
                put_double(out, 1, Some(p.bound));
                put_double(out, 2, Some(p.value));
            }
        }
        MetricType::Histogram | MetricType::GaugeHistogram => {
            put_head(out, 7, samples);
            put_count(out, m.count);
            put_double(out, 2, m.sum);
            for p in points {
                put_head(
                    out,
                    3,
                    count_len(Some(p.count())) + double_len(Some(p.bound)),
                );
                put_count(out, Some(p.count()));
                put_double(out, 2, Some(p.bound));
            }
        }
    }
}

/// Whether `m` has only fields this encoder writes.
fn is_simple(m: &Metric) -> bool {
    m.timestamp_ms.is_none()
        && m.counter.as_ref().is_none_or(|c| c.exemplar.is_none())
        && m.histogram.as_ref().is_none_or(|h| {
            h.sample_count_float.is_none()
                && h.sb_schema.is_none()
                && h.sb_zero_threshold.is_none()
                && h.sb_zero_count.is_none()
                && h.sb_zero_count_float.is_none()
                && h.sb_negative.is_none()
                && h.sb_positive.is_none()
                && h.bucket
                    .iter()
                    .all(|b| b.cumulative_count_float.is_none() && b.exemplar.is_none())
        })
}

fn varint_len(v: u64) -> usize {
    // Bits needed (at least 1), seven per byte.
    (64 - (v | 1).leading_zeros() as usize).div_ceil(7)
}

fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push(v as u8 | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// The tag and length of an embedded message `field` of `len` bytes.
fn put_head(out: &mut Vec<u8>, field: u8, len: usize) {
    out.push(field << 3 | 2);
    put_varint(out, len as u64);
}

/// A count (field 1, varint) when set.
fn put_count(out: &mut Vec<u8>, count: Option<u64>) {
    if let Some(n) = count {
        out.push(1 << 3);
        put_varint(out, n);
    }
}

/// A length-delimited field `field` holding `b`.
fn put_bytes(out: &mut Vec<u8>, field: u8, b: &[u8]) {
    put_head(out, field, b.len());
    out.extend_from_slice(b);
}

fn put_double(out: &mut Vec<u8>, field: u8, v: Option<f64>) {
    if let Some(v) = v {
        out.push(field << 3 | 1);
        out.extend_from_slice(&v.to_le_bytes());
    }
}

/// A `Gauge`, `Counter` or `Untyped` message as field `field`: its one optional double.
fn put_scalar(out: &mut Vec<u8>, field: u8, v: Option<f64>) {
    put_head(out, field, double_len(v));
    put_double(out, 1, v);
}

fn field_len(body: usize) -> usize {
    1 + varint_len(body as u64) + body
}

fn double_len(v: Option<f64>) -> usize {
    if v.is_some() {
        9
    } else {
        0
    }
}

fn count_len(v: Option<u64>) -> usize {
    v.map_or(0, |n| 1 + varint_len(n))
}

fn label_len(name: &str, value: &str) -> usize {
    field_len(name.len()) + field_len(value.len())
}

fn quantile_len(q: &Quantile) -> usize {
    double_len(q.quantile) + double_len(q.value)
}

fn summary_len(s: &Summary) -> usize {
    count_len(s.sample_count)
        + double_len(s.sample_sum)
        + s.quantile
            .iter()
            .map(|q| field_len(quantile_len(q)))
            .sum::<usize>()
}

fn bucket_len(b: &Bucket) -> usize {
    count_len(b.cumulative_count) + double_len(b.upper_bound)
}

fn histogram_len(h: &Histogram) -> usize {
    count_len(h.sample_count)
        + double_len(h.sample_sum)
        + h.bucket
            .iter()
            .map(|b| field_len(bucket_len(b)))
            .sum::<usize>()
}

/// The field tag and length of a metric message of `len` bytes, then its label pairs.
fn put_metric_head(out: &mut Vec<u8>, len: usize, labels: &[(&str, &str)]) {
    out.reserve(len + 11);
    out.push(METRIC_FIELD_TAG);
    put_varint(out, len as u64);
    for &(n, v) in labels {
        put_head(out, 1, label_len(n, v));
        put_bytes(out, 1, n.as_bytes());
        put_bytes(out, 2, v.as_bytes());
    }
}

fn labels_len(labels: &[(&str, &str)]) -> usize {
    labels
        .iter()
        .map(|&(n, v)| field_len(label_len(n, v)))
        .sum()
}

fn metric_len(m: &Metric, labels: &[(&str, &str)]) -> usize {
    labels_len(labels)
        + m.gauge
            .as_ref()
            .map_or(0, |g| field_len(double_len(g.value)))
        + m.counter
            .as_ref()
            .map_or(0, |c| field_len(double_len(c.value)))
        + m.summary.as_ref().map_or(0, |s| field_len(summary_len(s)))
        + m.untyped
            .as_ref()
            .map_or(0, |u| field_len(double_len(u.value)))
        + m.histogram
            .as_ref()
            .map_or(0, |h| field_len(histogram_len(h)))
}

#[cfg(test)]
mod tests {
    use super::super::proto::{Counter, Exemplar, Gauge, Untyped};
    use super::*;
    use proptest::prelude::*;

    fn prost_bytes(m: &Metric) -> Vec<u8> {
        let mut out = Vec::new();
        prost::encoding::message::encode(4, m, &mut out);
        out
    }

    fn ours(m: &Metric) -> Vec<u8> {
        let mut out = vec![0xAB];
        encode_metric_field(m, &mut out);
        assert_eq!(out[0], 0xAB, "appends, keeps what was there");
        out.split_off(1)
    }

    fn labels(pairs: &[(Option<String>, Option<String>)]) -> Vec<LabelPair> {
        pairs
            .iter()
            .map(|(n, v)| LabelPair {
                name: n.clone(),
                value: v.clone(),
            })
            .collect()
    }

    fn opt_f64() -> impl Strategy<Value = Option<f64>> {
        prop_oneof![
            Just(None),
            any::<f64>().prop_map(Some),
            Just(Some(f64::NAN)),
            Just(Some(f64::INFINITY)),
        ]
    }

    fn opt_u64() -> impl Strategy<Value = Option<u64>> {
        prop_oneof![
            Just(None),
            Just(Some(0)),
            Just(Some(127)),
            Just(Some(128)),
            any::<u64>().prop_map(Some)
        ]
    }

    fn simple_metric() -> impl Strategy<Value = Metric> {
        let label = (
            proptest::option::of(".{0,140}"),
            proptest::option::of(".{0,200}"),
        );
        let quantiles = proptest::collection::vec((opt_f64(), opt_f64()), 0..5);
        let buckets = proptest::collection::vec((opt_u64(), opt_f64()), 0..12);
        (
            proptest::collection::vec(label, 0..6),
            0u8..6,
            opt_f64(),
            opt_u64(),
            quantiles,
            buckets,
        )
            .prop_map(|(pairs, kind, value, count, quantiles, buckets)| {
                let mut m = Metric {
                    label: labels(&pairs),
                    ..Default::default()
                };
                match kind {
                    0 => {
                        m.counter = Some(Counter {
                            value,
                            exemplar: None,
                        })
                    }
                    1 => m.gauge = Some(Gauge { value }),
                    2 => m.untyped = Some(Untyped { value }),
                    3 => {
                        m.summary = Some(
                            Summary {
                                sample_count: count,
                                sample_sum: value,
                                quantile: quantiles
                                    .into_iter()
                                    .map(|(quantile, value)| Quantile { quantile, value })
                                    .collect(),
                            }
                            .into(),
                        )
                    }
                    4 => {
                        m.histogram = Some(
                            Histogram {
                                sample_count: count,
                                sample_sum: value,
                                bucket: buckets
                                    .into_iter()
                                    .map(|(cumulative_count, upper_bound)| Bucket {
                                        cumulative_count,
                                        upper_bound,
                                        ..Default::default()
                                    })
                                    .collect(),
                                ..Default::default()
                            }
                            .into(),
                        )
                    }
                    // No value at all (refused later by the store, but encodable).
                    _ => {}
                }
                m
            })
    }

    proptest! {
        #[test]
        fn same_bytes_as_prost(m in simple_metric()) {
            prop_assert!(is_simple(&m));
            prop_assert_eq!(ours(&m), prost_bytes(&m));
        }
    }

    #[test]
    fn fields_the_text_format_cannot_carry_go_through_prost() {
        let exemplar = Exemplar {
            label: labels(&[(Some("trace_id".into()), Some("abc".into()))]),
            value: Some(1.5),
            timestamp: None,
        };
        let with_exemplar = Metric {
            counter: Some(Counter {
                value: Some(3.0),
                exemplar: Some(Box::new(exemplar.clone())),
            }),
            ..Default::default()
        };
        let native = Metric {
            histogram: Some(
                Histogram {
                    sample_count: Some(4),
                    sb_schema: Some(3),
                    sb_zero_threshold: Some(1e-128),
                    ..Default::default()
                }
                .into(),
            ),
            ..Default::default()
        };
        let float_bucket = Metric {
            histogram: Some(
                Histogram {
                    bucket: vec![Bucket {
                        cumulative_count_float: Some(2.5),
                        upper_bound: Some(1.0),
                        ..Default::default()
                    }],
                    ..Default::default()
                }
                .into(),
            ),
            ..Default::default()
        };
        let stamped = Metric {
            gauge: Some(Gauge { value: Some(1.0) }),
            timestamp_ms: Some(1_700_000_000_000),
            ..Default::default()
        };
        for m in [with_exemplar, native, float_bucket, stamped] {
            assert!(!is_simple(&m), "{m:?}");
            assert_eq!(ours(&m), prost_bytes(&m));
        }
    }

    #[test]
    fn varint_lengths_at_the_boundaries() {
        for (v, len) in [
            (0u64, 1),
            (127, 1),
            (128, 2),
            (16_383, 2),
            (16_384, 3),
            (u64::MAX, 10),
        ] {
            assert_eq!(varint_len(v), len, "{v}");
            let mut out = Vec::new();
            put_varint(&mut out, v);
            assert_eq!(out.len(), len, "{v}");
            assert_eq!(prost::encoding::encoded_len_varint(v), len, "{v}");
        }
    }
}
