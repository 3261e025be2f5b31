//! What the parser yields: a body's families, metrics, labels and samples in flat vectors,
//! borrowing from the input, and their conversion to the protobuf model.

use std::borrow::Cow;
use std::ops::Range;

use crate::exposition::proto::{
    Bucket, Counter, Gauge, Histogram, LabelPair, Metric, MetricFamily, MetricType, Quantile,
    Summary, Untyped,
};

/// A parsed text body; see [`parse_text_bounded`](super::parse_text_bounded).
#[derive(Debug, Default)]
pub struct ParsedText<'a> {
    /// In order of first appearance, including families that only had HELP or TYPE lines.
    pub(super) families: Vec<ParsedFamily<'a>>,
    /// Grouped by family, in line order within each.
    pub(super) metrics: Vec<ParsedMetric>,
    pub(super) labels: Vec<(Cow<'a, str>, Cow<'a, str>)>,
    /// Grouped by metric, in line order within each.
    pub(super) points: Vec<Point>,
}

/// One family of a [`ParsedText`].
#[derive(Debug)]
pub struct ParsedFamily<'a> {
    pub name: Cow<'a, str>,
    pub help: Option<Cow<'a, str>>,
    /// Set by a TYPE line, or untyped once a sample arrived without one.
    pub typ: Option<MetricType>,
    pub(super) metrics: Range<usize>,
}

impl ParsedFamily<'_> {
    /// The type the family's metrics carry (untyped when no TYPE line and no sample set it).
    pub fn metric_type(&self) -> MetricType {
        self.typ.unwrap_or(MetricType::Untyped)
    }
}

/// One metric of a [`ParsedText`]: its line's labels (as written, unsorted) and its samples.
#[derive(Debug, Clone)]
pub struct ParsedMetric {
    pub(super) family: usize,
    pub(super) labels: Range<usize>,
    /// The value of a counter, gauge or untyped metric.
    pub value: f64,
    /// `_count` and `_sum` of a summary or histogram.
    pub count: Option<u64>,
    pub sum: Option<f64>,
    pub(super) points: Range<usize>,
    pub timestamp_ms: Option<i64>,
}

/// A quantile (`bound` is the quantile) of a summary or a bucket (`bound` is the upper bound,
/// `value` the cumulative count as written) of a histogram.
#[derive(Debug, Clone, Copy)]
pub struct Point {
    pub(super) metric: usize,
    pub bound: f64,
    pub value: f64,
}

impl Point {
    /// A bucket's cumulative count, converted like expfmt does (saturating, fraction dropped).
    pub fn count(&self) -> u64 {
        self.value as u64
    }
}

impl<'a> ParsedText<'a> {
    /// The families that have metrics, in order of first appearance.
    pub fn families(&self) -> impl Iterator<Item = &ParsedFamily<'a>> + '_ {
        self.families.iter().filter(|f| !f.metrics.is_empty())
    }

    pub fn metrics(&self, f: &ParsedFamily<'a>) -> &[ParsedMetric] {
        &self.metrics[f.metrics.clone()]
    }

    pub fn labels(&self, m: &ParsedMetric) -> &[(Cow<'a, str>, Cow<'a, str>)] {
        &self.labels[m.labels.clone()]
    }

    /// All label pairs of the body, metric after metric ([`Self::label_range`] says whose).
    pub fn all_labels(&self) -> &[(Cow<'a, str>, Cow<'a, str>)] {
        &self.labels
    }

    pub fn label_range(&self, m: &ParsedMetric) -> Range<usize> {
        m.labels.clone()
    }

    pub fn points(&self, m: &ParsedMetric) -> &[Point] {
        &self.points[m.points.clone()]
    }

    /// Whether any sample carried a timestamp.
    pub fn has_timestamps(&self) -> bool {
        self.metrics.iter().any(|m| m.timestamp_ms.is_some())
    }

    /// The protobuf model of the body: what [`parse_text`](super::parse_text) returns.
    pub fn to_families(&self) -> Vec<MetricFamily> {
        self.families()
            .map(|f| {
                let typ = f.metric_type();
                MetricFamily {
                    name: Some(f.name.to_string()),
                    help: f.help.as_ref().map(|h| h.to_string()),
                    r#type: f.typ.map(|t| t as i32),
                    metric: self
                        .metrics(f)
                        .iter()
                        .map(|m| self.to_metric(typ, m))
                        .collect(),
                }
            })
            .collect()
    }

    fn to_metric(&self, typ: MetricType, m: &ParsedMetric) -> Metric {
        let mut out = Metric {
            label: self
                .labels(m)
                .iter()
                .map(|(n, v)| LabelPair {
                    name: Some(n.to_string()),
                    value: Some(v.to_string()),
                })
                .collect(),
            timestamp_ms: m.timestamp_ms,
            ..Default::default()
        };
        let value = Some(m.value);
        match typ {
            MetricType::Counter => {
                out.counter = Some(Counter {
                    value,
                    exemplar: None,
                })
            }
            MetricType::Gauge => out.gauge = Some(Gauge { value }),
            MetricType::Untyped | MetricType::GaugeHistogram => {
                out.untyped = Some(Untyped { value })
            }
            MetricType::Summary => {
                out.summary = Some(Box::new(Summary {
                    sample_count: m.count,
                    sample_sum: m.sum,
                    quantile: self
                        .points(m)
                        .iter()
                        .map(|p| Quantile {
                            quantile: Some(p.bound),
                            value: Some(p.value),
                        })
                        .collect(),
                }))
            }
            MetricType::Histogram => {
                out.histogram = Some(Box::new(Histogram {
                    sample_count: m.count,
                    sample_sum: m.sum,
                    bucket: self
                        .points(m)
                        .iter()
                        .map(|p| Bucket {
                            upper_bound: Some(p.bound),
                            cumulative_count: Some(p.count()),
                            ..Default::default()
                        })
                        .collect(),
                    ..Default::default()
                }))
            }
        }
        out
    }
}
