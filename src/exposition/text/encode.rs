//! Text format 0.0.4 encoder (behaviour of prometheus/common expfmt's MetricFamilyToText).
//!
//! Everything appends to a caller-owned `Vec<u8>` so a scrape can encode the whole store into one
//! buffer without intermediate strings. Names outside the legacy charset (only possible with
//! `--push.enable-utf8-names`) are written in the quoted UTF-8 syntax (`{"my.metric","a.b"="v"}`).

use crate::exposition::names::{is_legacy_label_name, is_legacy_metric_name};
use crate::exposition::proto::{Metric, MetricType};
#[cfg(any(test, feature = "testsuite"))]
use crate::exposition::proto::MetricFamily;

use super::float::{write_float, write_int};
use super::parse::{ParsedMetric, Point};
use super::quote::write_escaped;

/// Writes the `# HELP` line (only when `help` is `Some`, even if empty, like expfmt) and the
/// `# TYPE` line. Gauge histograms are written as `histogram`, as the text format has no such type.
pub fn write_help_and_type(out: &mut Vec<u8>, name: &str, help: Option<&str>, typ: MetricType) {
    if let Some(help) = help {
        out.extend_from_slice(b"# HELP ");
        write_comment_name(out, name);
        out.push(b' ');
        write_escaped(out, help, false);
        out.push(b'\n');
    }
    out.extend_from_slice(b"# TYPE ");
    write_comment_name(out, name);
    out.extend_from_slice(match typ {
        MetricType::Counter => b" counter\n".as_slice(),
        MetricType::Gauge => b" gauge\n",
        MetricType::Summary => b" summary\n",
        MetricType::Untyped => b" untyped\n",
        MetricType::Histogram | MetricType::GaugeHistogram => b" histogram\n",
    });
}

#[cfg(any(test, feature = "testsuite"))]
/// Writes every sample line of one metric of a family of type `typ`.
///
/// A metric lacking the value message of its type is written with value 0 (expfmt refuses to
/// encode such a family at all; the store never holds one).
pub fn write_metric(out: &mut Vec<u8>, name: &str, typ: MetricType, metric: &Metric) {
    let labels: Vec<(&str, &str)> = metric.label_pairs().collect();
    write_metric_labelled(out, name, typ, metric, &labels);
}

/// [`write_metric`] with the metric's label pairs given (in the order written), instead of its
/// own `label` field: the store passes them with the grouping labels merged in.
pub fn write_metric_labelled(
    out: &mut Vec<u8>,
    name: &str,
    typ: MetricType,
    metric: &Metric,
    labels: &[(&str, &str)],
) {
    let mut w = SampleWriter::new(name, labels, metric.timestamp_ms);
    match typ {
        MetricType::Counter => {
            let v = metric.counter.as_ref().map_or(0.0, |c| c.value());
            w.write(out, "", None, v);
        }
        MetricType::Gauge => {
            let v = metric.gauge.as_ref().map_or(0.0, |g| g.value());
            w.write(out, "", None, v);
        }
        MetricType::Untyped => {
            let v = metric.untyped.as_ref().map_or(0.0, |u| u.value());
            w.write(out, "", None, v);
        }
        MetricType::Summary => {
            let default = Default::default();
            let s = metric.summary.as_ref().unwrap_or(&default);
            let quantiles = s.quantile.iter().map(|q| (q.quantile(), q.value()));
            w.write_summary(out, quantiles, s.sample_sum(), s.sample_count() as f64);
        }
        MetricType::Histogram | MetricType::GaugeHistogram => {
            let default = Default::default();
            let h = metric.histogram.as_ref().unwrap_or(&default);
            // Like newer expfmt: the float counts (native histogram era) win when non-zero.
            let count = match h.sample_count_float() {
                v if v != 0.0 => v,
                _ => h.sample_count() as f64,
            };
            let buckets = h.bucket.iter().map(|b| {
                let v = match b.cumulative_count_float() {
                    v if v != 0.0 => v,
                    _ => b.cumulative_count() as f64,
                };
                (b.upper_bound(), v)
            });
            w.write_histogram(out, buckets, h.sample_sum(), count);
        }
    }
}

/// [`write_metric_labelled`] for a metric of a parsed text body (`typ` is its family's): the
/// lines written for the `Metric` that [`ParsedText::to_families`] would build.
///
/// [`ParsedText::to_families`]: super::parse::ParsedText::to_families
pub fn write_parsed_labelled(
    out: &mut Vec<u8>,
    name: &str,
    typ: MetricType,
    metric: &ParsedMetric,
    points: &[Point],
    labels: &[(&str, &str)],
) {
    let mut w = SampleWriter::new(name, labels, metric.timestamp_ms);
    match typ {
        MetricType::Counter | MetricType::Gauge | MetricType::Untyped => {
            w.write(out, "", None, metric.value);
        }
        MetricType::Summary => {
            let quantiles = points.iter().map(|p| (p.bound, p.value));
            let count = metric.count.unwrap_or(0) as f64;
            w.write_summary(out, quantiles, metric.sum.unwrap_or(0.0), count);
        }
        MetricType::Histogram | MetricType::GaugeHistogram => {
            let count = metric.count.unwrap_or(0) as f64;
            let buckets = points.iter().map(|p| (p.bound, p.count() as f64));
            w.write_histogram(out, buckets, metric.sum.unwrap_or(0.0), count);
        }
    }
}

#[cfg(any(test, feature = "testsuite"))]
/// Writes a whole family: HELP (when set), TYPE and all its metrics in stored order. A family
/// without metrics writes nothing (expfmt refuses to encode it).
pub fn write_family(out: &mut Vec<u8>, mf: &MetricFamily) {
    if mf.metric.is_empty() {
        return;
    }
    let typ = mf.r#type();
    write_help_and_type(out, mf.name(), mf.help.as_deref(), typ);
    for m in &mf.metric {
        write_metric(out, mf.name(), typ, m);
    }
}

#[cfg(any(test, feature = "testsuite"))]
/// Encodes families one after the other (convenience for tests and small callers).
pub fn families_to_text(families: &[MetricFamily]) -> Vec<u8> {
    let mut out = Vec::with_capacity(families.len() * 128);
    for mf in families {
        write_family(&mut out, mf);
    }
    out
}

/// Writes the sample lines of one metric. Every line of a metric carries the same labels: they are
/// validated and escaped for the first line, and copied from it for the others.
struct SampleWriter<'a> {
    name: &'a str,
    /// The name is not a legacy name and goes inside the braces, quoted.
    quoted: bool,
    labels: &'a [(&'a str, &'a str)],
    /// Where the first line's labels (with their separators) are in `out`.
    written: Option<std::ops::Range<usize>>,
    ts: Option<i64>,
}

impl<'a> SampleWriter<'a> {
    fn new(name: &'a str, labels: &'a [(&'a str, &'a str)], ts: Option<i64>) -> Self {
        SampleWriter {
            name,
            quoted: !is_legacy_metric_name(name),
            labels,
            written: None,
            ts,
        }
    }

    fn write(&mut self, out: &mut Vec<u8>, suffix: &str, extra: Option<(&str, f64)>, value: f64) {
        if self.quoted {
            out.extend_from_slice(b"{\"");
            write_escaped(out, self.name, true);
            write_escaped(out, suffix, true);
            out.push(b'"');
        } else {
            out.extend_from_slice(self.name.as_bytes());
            out.extend_from_slice(suffix.as_bytes());
        }
        let start = out.len();
        match &self.written {
            Some(range) => out.extend_from_within(range.clone()),
            None => {
                let mut sep = if self.quoted { b',' } else { b'{' };
                for &(lname, lvalue) in self.labels {
                    out.push(sep);
                    sep = b',';
                    write_name(out, lname, is_legacy_label_name(lname));
                    out.extend_from_slice(b"=\"");
                    write_escaped(out, lvalue, true);
                    out.push(b'"');
                }
                self.written = Some(start..out.len());
            }
        }
        // A brace is open once a quoted name or a label was written.
        let mut open = self.quoted || out.len() > start;
        if let Some((lname, lvalue)) = extra {
            out.push(if open { b',' } else { b'{' });
            open = true;
            out.extend_from_slice(lname.as_bytes());
            out.extend_from_slice(b"=\"");
            write_float(out, lvalue);
            out.push(b'"');
        }
        if open {
            out.push(b'}');
        }
        out.push(b' ');
        write_float(out, value);
        if let Some(ts) = self.ts {
            out.push(b' ');
            write_int(out, ts);
        }
        out.push(b'\n');
    }

    /// A summary's lines: one per (quantile, value), then `_sum` and `_count`.
    fn write_summary(
        &mut self,
        out: &mut Vec<u8>,
        quantiles: impl Iterator<Item = (f64, f64)>,
        sum: f64,
        count: f64,
    ) {
        for (quantile, value) in quantiles {
            self.write(out, "", Some(("quantile", quantile)), value);
        }
        self.write(out, "_sum", None, sum);
        self.write(out, "_count", None, count);
    }

    /// A histogram's lines: one `_bucket` per (upper bound, cumulative count), a `+Inf` bucket
    /// holding `count` when none was given (expfmt adds it too), then `_sum` and `_count`.
    fn write_histogram(
        &mut self,
        out: &mut Vec<u8>,
        buckets: impl Iterator<Item = (f64, f64)>,
        sum: f64,
        count: f64,
    ) {
        let mut inf_seen = false;
        for (le, value) in buckets {
            self.write(out, "_bucket", Some(("le", le)), value);
            inf_seen |= le == f64::INFINITY;
        }
        if !inf_seen {
            self.write(out, "_bucket", Some(("le", f64::INFINITY)), count);
        }
        self.write(out, "_sum", None, sum);
        self.write(out, "_count", None, count);
    }
}

fn write_comment_name(out: &mut Vec<u8>, name: &str) {
    write_name(out, name, is_legacy_metric_name(name));
}

/// Writes a name as is when it is `legacy` (fits the legacy charset), else quoted.
fn write_name(out: &mut Vec<u8>, name: &str, legacy: bool) {
    if legacy {
        out.extend_from_slice(name.as_bytes());
    } else {
        out.push(b'"');
        write_escaped(out, name, true);
        out.push(b'"');
    }
}

#[cfg(test)]
mod tests;
