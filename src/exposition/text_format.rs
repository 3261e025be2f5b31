//! Text format 0.0.4 encoder (behaviour of prometheus/common expfmt's MetricFamilyToText).
//!
//! Everything appends to a caller-owned `Vec<u8>` so a scrape can encode the whole store into one
//! buffer without intermediate strings. Names outside the legacy charset (only possible with
//! `--push.enable-utf8-names`) are written in the quoted UTF-8 syntax (`{"my.metric","a.b"="v"}`).

use super::names::{is_legacy_label_name, is_legacy_metric_name};
use super::text_parse::{ParsedMetric, Point};
use super::{Metric, MetricFamily, MetricType};

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
            for q in &s.quantile {
                w.write(out, "", Some(("quantile", q.quantile())), q.value());
            }
            w.write(out, "_sum", None, s.sample_sum());
            w.write(out, "_count", None, s.sample_count() as f64);
        }
        MetricType::Histogram | MetricType::GaugeHistogram => {
            let default = Default::default();
            let h = metric.histogram.as_ref().unwrap_or(&default);
            // Like newer expfmt: the float counts (native histogram era) win when non-zero.
            let count = match h.sample_count_float() {
                v if v != 0.0 => v,
                _ => h.sample_count() as f64,
            };
            let mut inf_seen = false;
            for b in &h.bucket {
                let v = match b.cumulative_count_float() {
                    v if v != 0.0 => v,
                    _ => b.cumulative_count() as f64,
                };
                let le = b.upper_bound();
                w.write(out, "_bucket", Some(("le", le)), v);
                inf_seen |= le == f64::INFINITY;
            }
            if !inf_seen {
                w.write(out, "_bucket", Some(("le", f64::INFINITY)), count);
            }
            w.write(out, "_sum", None, h.sample_sum());
            w.write(out, "_count", None, count);
        }
    }
}

/// [`write_metric_labelled`] for a metric of a parsed text body (`typ` is its family's): the
/// lines written for the `Metric` that [`ParsedText::to_families`] would build.
///
/// [`ParsedText::to_families`]: super::text_parse::ParsedText::to_families
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
            for p in points {
                w.write(out, "", Some(("quantile", p.bound)), p.value);
            }
            w.write(out, "_sum", None, metric.sum.unwrap_or(0.0));
            w.write(out, "_count", None, metric.count.unwrap_or(0) as f64);
        }
        MetricType::Histogram | MetricType::GaugeHistogram => {
            let count = metric.count.unwrap_or(0) as f64;
            let mut inf_seen = false;
            for p in points {
                w.write(out, "_bucket", Some(("le", p.bound)), p.count() as f64);
                inf_seen |= p.bound == f64::INFINITY;
            }
            if !inf_seen {
                w.write(out, "_bucket", Some(("le", f64::INFINITY)), count);
            }
            w.write(out, "_sum", None, metric.sum.unwrap_or(0.0));
            w.write(out, "_count", None, count);
        }
    }
}

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
                    if is_legacy_label_name(lname) {
                        out.extend_from_slice(lname.as_bytes());
                    } else {
                        out.push(b'"');
                        write_escaped(out, lname, true);
                        out.push(b'"');
                    }
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
}

fn write_comment_name(out: &mut Vec<u8>, name: &str) {
    if is_legacy_metric_name(name) {
        out.extend_from_slice(name.as_bytes());
    } else {
        out.push(b'"');
        write_escaped(out, name, true);
        out.push(b'"');
    }
}

/// Escapes `\` and newline, and `"` too when `quote` (label values, quoted names).
fn write_escaped(out: &mut Vec<u8>, s: &str, quote: bool) {
    let bytes = s.as_bytes();
    // Most values need no escaping: one scan, one copy.
    if !bytes
        .iter()
        .any(|&b| b == b'\\' || b == b'\n' || (quote && b == b'"'))
    {
        out.extend_from_slice(bytes);
        return;
    }
    let mut start = 0;
    for (i, &b) in bytes.iter().enumerate() {
        let esc: &[u8] = match b {
            b'\\' => b"\\\\",
            b'\n' => b"\\n",
            b'"' if quote => b"\\\"",
            _ => continue,
        };
        out.extend_from_slice(&bytes[start..i]);
        out.extend_from_slice(esc);
        start = i + 1;
    }
    out.extend_from_slice(&bytes[start..]);
}

fn write_int(out: &mut Vec<u8>, v: i64) {
    if v < 0 {
        out.push(b'-');
    }
    let mut n = v.unsigned_abs();
    let mut buf = [0u8; 20];
    let mut i = buf.len();
    loop {
        i -= 1;
        buf[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&buf[i..]);
}

/// Formats like expfmt's writeFloat: `1`, `0` (also for -0), `-1`, `NaN`, `+Inf`, `-Inf`, else Go's
/// `strconv.FormatFloat(v, 'g', -1, 64)`: shortest round-trip digits, exponent form when the
/// decimal exponent is < -4 or >= 6 (`1e+06`, `123456`, `0.0001`, `1e-05`,
/// `1.7956715203070993e+09`).
pub fn write_float(out: &mut Vec<u8>, v: f64) {
    // Integers below 1e6 (0 and -0 included) print as plain digits in Go's shortest 'g' format
    // (1e6 and up switch to an exponent): the common case of counts, without the general
    // shortest-digits conversion.
    if v.fract() == 0.0 && v.abs() < 1e6 {
        write_int(out, v as i64);
        return;
    }
    write_float_memo(out, v);
}

/// The longest output of [`write_float_general`]: `-1.7976931348623157e+308`.
const FLOAT_TEXT_MAX: usize = 24;

/// [`write_float_general`] through a small per-thread cache keyed by the value's bits: the
/// bucket bounds and quantiles of a histogram or summary (and often its sums) come back with
/// every push, and the shortest-digits conversion costs several hundred instructions.
fn write_float_memo(out: &mut Vec<u8>, v: f64) {
    const SLOTS: usize = 64;
    type Slot = (u64, u8, [u8; FLOAT_TEXT_MAX]);
    thread_local! {
        // Bits 0 never reach this path (0.0 is an integer), so they mark an empty slot.
        static MEMO: std::cell::RefCell<[Slot; SLOTS]> =
            const { std::cell::RefCell::new([(0, 0, [0; FLOAT_TEXT_MAX]); SLOTS]) };
    }
    let bits = v.to_bits();
    let slot = (bits ^ (bits >> 29) ^ (bits >> 52)) as usize % SLOTS;
    MEMO.with(|cell| {
        let mut memo = cell.borrow_mut();
        let (key, len, text) = &mut memo[slot];
        if *key != bits || bits == 0 {
            let start = out.len();
            write_float_general(out, v);
            let written = &out[start..];
            if written.len() <= FLOAT_TEXT_MAX {
                *key = bits;
                *len = written.len() as u8;
                text[..written.len()].copy_from_slice(written);
            }
            return;
        }
        out.extend_from_slice(&text[..usize::from(*len)]);
    })
}

/// [`write_float`] without the integer fast path.
fn write_float_general(out: &mut Vec<u8>, v: f64) {
    if v == 0.0 {
        out.push(b'0');
        return;
    }
    if v.is_nan() {
        out.extend_from_slice(b"NaN");
        return;
    }
    if v.is_infinite() {
        out.extend_from_slice(if v > 0.0 { b"+Inf" } else { b"-Inf" });
        return;
    }
    let mut buf = ryu::Buffer::new();
    let s = buf.format_finite(v).as_bytes();
    let (neg, s) = match s.split_first() {
        Some((b'-', rest)) => (true, rest),
        _ => (false, s),
    };
    let (mantissa, exp) = match s.iter().position(|&b| b == b'e' || b == b'E') {
        Some(i) => (&s[..i], parse_small_int(&s[i + 1..])),
        None => (s, 0),
    };
    // Collect the significant digits and the decimal point position: value = 0.d1d2... * 10^dp.
    let mut digits = [0u8; 32];
    let mut nd = 0usize;
    let mut int_len = 0i32;
    let mut seen_point = false;
    let mut leading = true;
    for &b in mantissa {
        if b == b'.' {
            seen_point = true;
            continue;
        }
        if !seen_point {
            int_len += 1;
        }
        if leading && b == b'0' {
            // A leading zero shifts the point left by one place.
            int_len -= 1;
            continue;
        }
        leading = false;
        if nd < digits.len() {
            digits[nd] = b;
            nd += 1;
        }
    }
    while nd > 1 && digits[nd - 1] == b'0' {
        nd -= 1;
    }
    let digits = &digits[..nd];
    let dp = int_len + exp;
    if neg {
        out.push(b'-');
    }
    let exp10 = dp - 1;
    if !(-4..6).contains(&exp10) {
        out.push(digits[0]);
        if nd > 1 {
            out.push(b'.');
            out.extend_from_slice(&digits[1..]);
        }
        out.push(b'e');
        let (sign, mut e) = if exp10 < 0 {
            (b'-', -exp10)
        } else {
            (b'+', exp10)
        };
        out.push(sign);
        if e >= 100 {
            out.push(b'0' + (e / 100) as u8);
            e %= 100;
            out.push(b'0' + (e / 10) as u8);
        } else {
            out.push(b'0' + (e / 10) as u8);
        }
        out.push(b'0' + (e % 10) as u8);
    } else if dp <= 0 {
        out.extend_from_slice(b"0.");
        out.extend(std::iter::repeat_n(b'0', (-dp) as usize));
        out.extend_from_slice(digits);
    } else {
        let dp = dp as usize;
        if dp >= nd {
            out.extend_from_slice(digits);
            out.extend(std::iter::repeat_n(b'0', dp - nd));
        } else {
            out.extend_from_slice(&digits[..dp]);
            out.push(b'.');
            out.extend_from_slice(&digits[dp..]);
        }
    }
}

/// Parses ryu's exponent (`-7`, `16`); ryu never writes anything else there.
fn parse_small_int(s: &[u8]) -> i32 {
    let (neg, s) = match s.split_first() {
        Some((b'-', rest)) => (true, rest),
        _ => (false, s),
    };
    let n = s
        .iter()
        .fold(0i32, |n, &b| n * 10 + i32::from(b.wrapping_sub(b'0')));
    if neg {
        -n
    } else {
        n
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::exposition::names::NameScheme;
    use crate::exposition::proto::{Bucket, Counter, Gauge, Histogram, Quantile, Summary, Untyped};
    use crate::exposition::text_parse::parse_text;
    use crate::exposition::LabelPair;
    use proptest::prelude::*;

    fn float(v: f64) -> String {
        let mut out = Vec::new();
        write_float(&mut out, v);
        String::from_utf8(out).expect("ascii")
    }

    #[test]
    fn float_formatting_matches_go() {
        let cases: &[(f64, &str)] = &[
            (0.0, "0"),
            (-0.0, "0"),
            (1.0, "1"),
            (-1.0, "-1"),
            (f64::NAN, "NaN"),
            (f64::INFINITY, "+Inf"),
            (f64::NEG_INFINITY, "-Inf"),
            (1795671520.3070993, "1.7956715203070993e+09"),
            (1e6, "1e+06"),
            (1234567.0, "1.234567e+06"),
            (123456.0, "123456"),
            (100000.0, "100000"),
            (999999.0, "999999"),
            (0.0001, "0.0001"),
            (0.00012345, "0.00012345"),
            (1e-5, "1e-05"),
            (1.5e-7, "1.5e-07"),
            (0.1, "0.1"),
            (0.5, "0.5"),
            (-2.5, "-2.5"),
            (2.5e-3, "0.0025"),
            (123.456, "123.456"),
            (1e21, "1e+21"),
            (1e100, "1e+100"),
            (1.5e300, "1.5e+300"),
            (f64::MAX, "1.7976931348623157e+308"),
            (f64::MIN_POSITIVE, "2.2250738585072014e-308"),
            (5e-324, "5e-324"),
            (-1e-300, "-1e-300"),
            (42.0, "42"),
            (1e15, "1e+15"),
            (123456789012.0, "1.23456789012e+11"),
            (0.30000000000000004, "0.30000000000000004"),
        ];
        for &(v, want) in cases {
            assert_eq!(float(v), want, "{v:e}");
        }
    }

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
        proptest::collection::btree_set("[a-zA-Z_:][a-zA-Z0-9_:]{0,8}", 1..4).prop_flat_map(
            |names| {
                // Names that would fold into each other (x and x_sum) are not independent families.
                let names: Vec<String> = names
                    .into_iter()
                    .filter(|n| {
                        !n.ends_with("_sum") && !n.ends_with("_count") && !n.ends_with("_bucket")
                    })
                    .collect();
                names.into_iter().map(arb_family).collect::<Vec<_>>()
            },
        )
    }

    proptest! {
        #[test]
        fn text_round_trip(families in arb_families()) {
            let text = families_to_text(&families);
            let parsed = parse_text(&text, NameScheme::Legacy)
                .map_err(|e| TestCaseError::fail(format!("{e}: {}", String::from_utf8_lossy(&text))))?;
            prop_assert!(nan_aware_eq(&families, &parsed), "{:?}\n{}\n{:?}", families, String::from_utf8_lossy(&text), parsed);
        }

        #[test]
        fn integer_fast_paths_agree_with_the_general_conversions(i in -2_000_000i64..2_000_000) {
            let v = i as f64;
            let mut general = Vec::new();
            write_float_general(&mut general, v);
            prop_assert_eq!(float(v), String::from_utf8(general).unwrap_or_default());
            let abs = i.unsigned_abs();
            for text in [i.to_string(), format!("+{abs}"), format!("-00{abs}")] {
                let want: f64 = text.parse().unwrap_or(f64::NAN);
                prop_assert_eq!(
                    crate::exposition::text_parse::parse_float(text.as_bytes()),
                    Some(want),
                    "{}", text
                );
            }
        }

        #[test]
        fn memoized_floats_agree_with_the_general_conversion(
            values in proptest::collection::vec(
                prop_oneof![any::<f64>(), (0u32..200).prop_map(|i| f64::from(i) / 64.0)],
                1..200,
            )
        ) {
            // Twice over, so that the second round reads what the first one cached, and with
            // enough values that slots are overwritten by colliding ones.
            for _ in 0..2 {
                for &v in &values {
                    let mut memo = vec![b'x'];
                    write_float_memo(&mut memo, v);
                    let mut general = vec![b'x'];
                    write_float_general(&mut general, v);
                    prop_assert_eq!(&memo, &general, "{}", v);
                }
            }
        }

        #[test]
        fn float_round_trips(v in any::<f64>()) {
            let s = float(v);
            let back = crate::exposition::text_parse::parse_float(s.as_bytes());
            prop_assert!(back.is_some(), "{s}");
            let back = back.unwrap_or_default();
            prop_assert!(back == v || (back.is_nan() && v.is_nan()), "{v} {s} {back}");
        }
    }
}
