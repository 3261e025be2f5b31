//! The protobuf part of a peer's family checked without decoding it into the data model: each
//! metric is walked field by field against the client model's schema
//! (proto/io/prometheus/client/metrics.proto), as prost would decode it, and refused where
//! prost would fail (a cut varint or length, a known field with another wire type, a string
//! that is not UTF-8) and where prost would not but no encoder here writes (groups, a field
//! other than `metric` beside the metrics). Decoding would build every label of every metric
//! as strings only to drop them; the walk allocates nothing.

use prost::encoding::decode_varint;

/// How a known field is encoded (what prost's generated code accepts for it).
#[derive(Clone, Copy)]
enum Field {
    /// Any varint (int64, uint64, sint32, uint32, int32, bool: prost truncates, never fails).
    Varint,
    /// A double (fixed 64 bits).
    Double,
    /// A string: UTF-8.
    Str,
    /// A message of this schema.
    Msg(&'static [(u32, Field)]),
    /// A repeated varint: one varint, or packed.
    RepVarint,
    /// A repeated double: eight bytes, or packed.
    RepDouble,
}

use Field::{Double, Msg, RepDouble, RepVarint, Str, Varint};

const LABEL_PAIR: &[(u32, Field)] = &[(1, Str), (2, Str)];
const TIMESTAMP: &[(u32, Field)] = &[(1, Varint), (2, Varint)];
const EXEMPLAR: &[(u32, Field)] = &[(1, Msg(LABEL_PAIR)), (2, Double), (3, Msg(TIMESTAMP))];
const VALUE: &[(u32, Field)] = &[(1, Double)];
const COUNTER: &[(u32, Field)] = &[(1, Double), (2, Msg(EXEMPLAR))];
const QUANTILE: &[(u32, Field)] = &[(1, Double), (2, Double)];
const SUMMARY: &[(u32, Field)] = &[(1, Varint), (2, Double), (3, Msg(QUANTILE))];
const BUCKET: &[(u32, Field)] = &[
    (1, Varint),
    (2, Double),
    (3, Msg(EXEMPLAR)),
    (4, Double),
];
const SPAN: &[(u32, Field)] = &[(1, Varint), (2, Varint)];
const SPARSE: &[(u32, Field)] = &[(1, Msg(SPAN)), (2, RepVarint), (3, RepDouble)];
const HISTOGRAM: &[(u32, Field)] = &[
    (1, Varint),
    (2, Double),
    (3, Msg(BUCKET)),
    (4, Varint),
    (5, Double),
    (6, Varint),
    (7, Msg(SPARSE)),
    (8, Msg(SPARSE)),
    (9, Double),
    (10, Double),
];
/// `Metric`: labels, gauge, counter, summary, untyped, timestamp_ms, histogram.
const METRIC: &[(u32, Field)] = &[
    (1, Msg(LABEL_PAIR)),
    (2, Msg(VALUE)),
    (3, Msg(COUNTER)),
    (4, Msg(SUMMARY)),
    (5, Msg(VALUE)),
    (6, Varint),
    (7, Msg(HISTOGRAM)),
];

/// The field number of `Metric.timestamp_ms`.
pub(super) const TIMESTAMP_FIELD: u32 = 6;

const VARINT: u64 = 0;
const FIXED64: u64 = 1;
const LENGTH: u64 = 2;
const FIXED32: u64 = 5;

fn varint(b: &mut &[u8]) -> Result<u64, &'static str> {
    decode_varint(b).map_err(|_| "a varint is cut or too long")
}

fn take<'a>(b: &mut &'a [u8], n: usize) -> Result<&'a [u8], &'static str> {
    if b.len() < n {
        return Err("a field is cut");
    }
    let (a, rest) = b.split_at(n);
    *b = rest;
    Ok(a)
}

fn length_delimited<'a>(b: &mut &'a [u8]) -> Result<&'a [u8], &'static str> {
    let n = varint(b)?;
    take(b, usize::try_from(n).map_err(|_| "a field is cut")?)
}

/// Walks `b` as a message of `schema`, calling `top(tag)` for each of its fields.
fn walk(
    mut b: &[u8],
    schema: &[(u32, Field)],
    top: &mut dyn FnMut(u32),
) -> Result<(), &'static str> {
    while !b.is_empty() {
        let key = varint(&mut b)?;
        let (tag, wire) = (key >> 3, key & 7);
        let tag = u32::try_from(tag)
            .ok()
            .filter(|&t| t > 0)
            .ok_or("invalid field number")?;
        top(tag);
        let known = schema.iter().find(|(t, _)| *t == tag).map(|(_, f)| *f);
        match (known, wire) {
            (Some(Varint | RepVarint) | None, VARINT) => {
                varint(&mut b)?;
            }
            (Some(Double | RepDouble) | None, FIXED64) => {
                take(&mut b, 8)?;
            }
            (None, FIXED32) => {
                take(&mut b, 4)?;
            }
            (None, LENGTH) => {
                length_delimited(&mut b)?;
            }
            (Some(Str), LENGTH) => {
                std::str::from_utf8(length_delimited(&mut b)?).map_err(|_| "a string is not UTF-8")?;
            }
            (Some(Msg(inner)), LENGTH) => walk(length_delimited(&mut b)?, inner, &mut |_| {})?,
            (Some(RepVarint), LENGTH) => {
                let mut packed = length_delimited(&mut b)?;
                while !packed.is_empty() {
                    varint(&mut packed)?;
                }
            }
            (Some(RepDouble), LENGTH) => {
                if length_delimited(&mut b)?.len() % 8 != 0 {
                    return Err("a packed field is cut");
                }
            }
            _ => return Err("a field has the wrong wire type"),
        }
    }
    Ok(())
}

/// Walks the protobuf part of a family (field 4 `metric` messages only), calling `metric` with
/// each metric's top-level field numbers seen (as a bit set, bit n for field n below 64).
pub(super) fn walk_metrics(
    proto: &[u8],
    mut metric: impl FnMut(u64) -> Result<(), &'static str>,
) -> Result<(), String> {
    const METRIC_TAG: u8 = 0x22; // field 4 (`metric`), length-delimited
    let mut rest = proto;
    while !rest.is_empty() {
        if rest[0] != METRIC_TAG {
            return Err("its protobuf part holds more than metrics".into());
        }
        rest = &rest[1..];
        let body = length_delimited(&mut rest).map_err(|e| format!("undecodable protobuf part: {e}"))?;
        let mut fields = 0u64;
        walk(body, METRIC, &mut |tag| {
            if tag < 64 {
                fields |= 1 << tag;
            }
        })
        .map_err(|e| format!("undecodable protobuf part: {e}"))?;
        metric(fields)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use prost::Message;

    use super::walk_metrics;
    use crate::exposition::proto::{
        Bucket, Counter, Exemplar, Histogram, LabelPair, Quantile, SparseBuckets, Summary,
    };
    use crate::exposition::{Metric, MetricFamily, MetricType};
    use crate::store::family::encode_family_header;

    fn lp(n: &str, v: &str) -> LabelPair {
        LabelPair {
            name: Some(n.into()),
            value: Some(v.into()),
        }
    }

    /// Metrics using every field of the client model, encoded by prost.
    fn metrics() -> Vec<u8> {
        let exemplar = Exemplar {
            label: vec![lp("trace", "t\u{e9}")],
            value: Some(1.5),
            timestamp: Some(prost_types::Timestamp {
                seconds: -3,
                nanos: 7,
            }),
        };
        let all = vec![
            Metric {
                label: vec![lp("job", "j")],
                counter: Some(Counter {
                    value: Some(1.0),
                    exemplar: Some(Box::new(exemplar.clone())),
                }),
                timestamp_ms: Some(-17),
                ..Default::default()
            },
            Metric {
                summary: Some(Box::new(Summary {
                    sample_count: Some(3),
                    sample_sum: Some(2.0),
                    quantile: vec![Quantile {
                        quantile: Some(0.5),
                        value: Some(1.0),
                    }],
                })),
                ..Default::default()
            },
            Metric {
                histogram: Some(Box::new(Histogram {
                    sample_count: Some(u64::MAX),
                    sample_count_float: Some(2.0),
                    sample_sum: Some(1.0),
                    bucket: vec![Bucket {
                        cumulative_count: Some(1),
                        cumulative_count_float: Some(1.0),
                        upper_bound: Some(f64::INFINITY),
                        exemplar: Some(exemplar),
                    }],
                    sb_schema: Some(-4),
                    sb_zero_threshold: Some(0.1),
                    sb_zero_count: Some(1),
                    sb_zero_count_float: Some(1.0),
                    sb_negative: Some(SparseBuckets {
                        span: vec![Default::default()],
                        delta: vec![-1, 2],
                        count: vec![1.0, 2.0],
                    }),
                    sb_positive: Some(SparseBuckets::default()),
                })),
                ..Default::default()
            },
        ];
        MetricFamily {
            metric: all,
            ..Default::default()
        }
        .encode_to_vec()
    }

    fn decodes(proto: &[u8]) -> bool {
        let mut buf = Vec::new();
        encode_family_header(&mut buf, "x", "", MetricType::Untyped);
        buf.extend_from_slice(proto);
        MetricFamily::decode(buf.as_slice()).is_ok()
    }

    #[test]
    fn every_field_of_the_client_model_is_walked() {
        let mut seen = Vec::new();
        walk_metrics(&metrics(), |fields| {
            seen.push(fields);
            Ok(())
        })
        .unwrap();
        assert_eq!(seen, [1 << 1 | 1 << 3 | 1 << 6, 1 << 4, 1 << 7]);
    }

    #[test]
    fn what_prost_refuses_is_refused() {
        for bad in [
            &b"\x22\x02\x08"[..],         // a length beyond the metric
            b"\x22\x02\x12\x05",          // the gauge's length beyond the metric
            b"\x22\x03\x0a\x01\xff",      // a label that is not a message of its own
            b"\x22\x05\x0a\x03\x0a\x01\xff", // a label name that is not UTF-8
            b"\x22\x02\x30\x80",          // a cut timestamp varint
            b"\x22\x02\x11\x00",          // the gauge with the wrong wire type
            b"\x22\x01\x00",              // field number 0
            b"\x22\x02\x0b\x0c",          // a group
        ] {
            assert!(walk_metrics(bad, |_| Ok(())).is_err(), "{bad:?}");
        }
    }

    proptest::proptest! {
        /// Whatever the walk accepts, prost decodes (the walk is at most stricter).
        #[test]
        fn what_the_walk_accepts_prost_decodes(
            edits in proptest::collection::vec((0usize..512, proptest::prelude::any::<u8>(), 0u8..4), 1..4),
        ) {
            let mutated = crate::testsupport::mutate(&metrics(), &edits);
            if walk_metrics(&mutated, |_| Ok(())).is_ok() {
                proptest::prop_assert!(decodes(&mutated));
            }
        }
    }
}
