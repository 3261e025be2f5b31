//! Text format 0.0.4 parser (behaviour of prometheus/common expfmt's TextParser, v0.37).
//!
//! The parser is a byte-at-a-time state machine like expfmt's, so that every input upstream
//! refuses is refused here with the same message and line number, and every input it accepts
//! yields the same families. It works on the whole body in memory: names and values without
//! escapes are borrowed from the input, and only the final protobuf strings are allocated.
//!
//! With [`NameScheme::Utf8`] it also accepts the quoted-name syntax of newer expfmt:
//! `{"my.metric", "label.name"="v"} 1` and `# HELP "my.metric" text`. The metric name must come
//! first inside the braces.

use std::borrow::Cow;
use std::ops::Range;

use crate::FastMap;

use super::names::{
    is_label_name_start, is_metric_name_continuation, is_metric_name_start, name_run, NameScheme,
};
use super::proto::{Bucket, Counter, Gauge, Histogram, Quantile, Summary, Untyped};
use super::{LabelPair, Metric, MetricFamily, MetricType};

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("text format parsing error in line {line}: {msg}")]
pub struct TextParseError {
    pub line: usize,
    pub msg: String,
}

/// Parses a whole text-format body into its families, in order of first appearance. Families
/// that only had HELP or TYPE lines are dropped, like expfmt's `TextToMetricFamilies`.
pub fn parse_text(input: &[u8], scheme: NameScheme) -> Result<Vec<MetricFamily>, TextParseError> {
    Ok(parse_text_borrowed(input, scheme)?.to_families())
}

/// [`parse_text`] without building the protobuf model: names, label values and help texts
/// borrow from `input` unless they had escapes, and a body's metrics, labels and samples sit in
/// a few flat vectors instead of a tree of strings and vectors per metric. The push path
/// validates and encodes straight from it (`store::prepare_text`).
pub fn parse_text_borrowed(
    input: &[u8],
    scheme: NameScheme,
) -> Result<ParsedText<'_>, TextParseError> {
    let mut parser = Parser::new(input, scheme);
    parser.run()?;
    Ok(parser.finish())
}

/// A parsed text body; see [`parse_text_borrowed`].
#[derive(Debug, Default)]
pub struct ParsedText<'a> {
    /// In order of first appearance, including families that only had HELP or TYPE lines.
    families: Vec<ParsedFamily<'a>>,
    /// Grouped by family, in line order within each.
    metrics: Vec<ParsedMetric>,
    labels: Vec<(Cow<'a, str>, Cow<'a, str>)>,
    /// Grouped by metric, in line order within each.
    points: Vec<Point>,
}

/// One family of a [`ParsedText`].
#[derive(Debug)]
pub struct ParsedFamily<'a> {
    pub name: Cow<'a, str>,
    pub help: Option<Cow<'a, str>>,
    /// Set by a TYPE line, or untyped once a sample arrived without one.
    pub typ: Option<MetricType>,
    metrics: Range<usize>,
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
    family: usize,
    labels: Range<usize>,
    /// The value of a counter, gauge or untyped metric.
    pub value: f64,
    /// `_count` and `_sum` of a summary or histogram.
    pub count: Option<u64>,
    pub sum: Option<f64>,
    points: Range<usize>,
    pub timestamp_ms: Option<i64>,
}

/// A quantile (`bound` is the quantile) of a summary or a bucket (`bound` is the upper bound,
/// `value` the cumulative count as written) of a histogram.
#[derive(Debug, Clone, Copy)]
pub struct Point {
    metric: usize,
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

    /// The protobuf model of the body: what [`parse_text`] returns.
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

/// Why a state could not complete.
enum Fail {
    /// The input ended in the middle of a line.
    Eof,
    Msg(String),
}

type Step<T> = Result<T, Fail>;

#[derive(Debug, Clone, Copy)]
enum State {
    StartOfLine,
    StartComment,
    ReadingMetricName,
    ReadingLabels,
    StartLabelName,
    StartLabelValue,
    ReadingValue,
    StartTimestamp,
    ReadingHelp,
    ReadingType,
    Done,
}

/// How the label being read is treated: `quantile` of a summary and `le` of a histogram are not
/// labels but the position of the sample inside its metric.
#[derive(Debug, Clone, Copy, PartialEq)]
enum LabelRole {
    Regular,
    Quantile,
    Bucket,
}

/// The NaN Go's `math.NaN()` returns, so NaN samples are bit-identical to upstream's.
const GO_NAN: f64 = f64::from_bits(0x7FF8_0000_0000_0001);

struct Parser<'a> {
    input: &'a [u8],
    /// Index of the next byte to read; `cur` is `input[pos - 1]`.
    pos: usize,
    cur: u8,
    line: usize,
    scheme: NameScheme,
    families: Vec<ParsedFamily<'a>>,
    /// Every metric in the order its first line came; `ParsedMetric::family` says whose.
    metrics: Vec<ParsedMetric>,
    /// The labels of every metric, one metric's after the other.
    all_labels: Vec<(Cow<'a, str>, Cow<'a, str>)>,
    /// Quantiles and buckets in line order; `Point::metric` says whose.
    points: Vec<Point>,
    /// Family index by name; names without escapes are borrowed from the input.
    by_name: FastMap<Cow<'a, str>, usize>,
    /// Summary and histogram metrics by label signature (family name and labels without
    /// `quantile`/`le`), so their sample lines fold into one metric.
    series: FastMap<Vec<u8>, usize>,
    /// The current family, an index into `families`.
    fam: usize,
    /// The labels of the line being read, borrowed from the input where they had no escapes:
    /// a summary or histogram line that folds into an existing metric allocates nothing.
    labels: Vec<(Cow<'a, str>, Cow<'a, str>)>,
    /// Reused for sorting `labels` when building a fold key.
    order: Vec<usize>,
    /// The name `set_or_create_family` resolved last and its answer (family, is_count, is_sum):
    /// consecutive lines of a histogram or summary repeat their name.
    memo_name: Cow<'a, str>,
    memo: Option<(usize, bool, bool)>,
    /// Index of the current metric in `metrics`, once placed.
    metric_idx: usize,
    label_role: LabelRole,
    quantile: f64,
    bucket: f64,
    /// The line's name is `<summary or histogram>_count` / `_sum`.
    is_count: bool,
    is_sum: bool,
    inside_braces: bool,
    scratch: Vec<u8>,
    key: Vec<u8>,
    /// Whether the shortcuts for repeats (a name read again, a line folding into the metric of
    /// the line before) are taken; off only in the test that checks they change nothing.
    shortcuts: bool,
}

impl<'a> Parser<'a> {
    fn new(input: &'a [u8], scheme: NameScheme) -> Self {
        Parser {
            input,
            pos: 0,
            cur: 0,
            line: 0,
            scheme,
            // Typical pushes have a few to a few dozen families: start with room for them
            // instead of growing (and rehashing) four or five times per body.
            families: Vec::with_capacity(16),
            metrics: Vec::with_capacity(16),
            all_labels: Vec::with_capacity(32),
            points: Vec::new(),
            by_name: FastMap::with_capacity_and_hasher(16, Default::default()),
            series: FastMap::default(),
            fam: 0,
            labels: Vec::new(),
            order: Vec::new(),
            memo_name: Cow::Borrowed(""),
            memo: None,
            metric_idx: 0,
            label_role: LabelRole::Regular,
            quantile: f64::NAN,
            bucket: f64::NAN,
            is_count: false,
            is_sum: false,
            inside_braces: false,
            scratch: Vec::new(),
            key: Vec::new(),
            shortcuts: true,
        }
    }

    fn run(&mut self) -> Result<(), TextParseError> {
        let mut state = State::StartOfLine;
        loop {
            let next = match state {
                State::StartOfLine => self.start_of_line(),
                State::StartComment => self.start_comment(),
                State::ReadingMetricName => self.reading_metric_name(),
                State::ReadingLabels => Ok(self.reading_labels()),
                State::StartLabelName => self.start_label_name(),
                State::StartLabelValue => self.start_label_value(),
                State::ReadingValue => self.reading_value(),
                State::StartTimestamp => self.start_timestamp(),
                State::ReadingHelp => self.reading_help(),
                State::ReadingType => self.reading_type(),
                State::Done => return Ok(()),
            };
            state = match next {
                Ok(s) => s,
                Err(Fail::Eof) => return Err(self.error("unexpected end of input stream".into())),
                Err(Fail::Msg(msg)) => return Err(self.error(msg)),
            };
        }
    }

    fn error(&self, msg: String) -> TextParseError {
        TextParseError {
            line: self.line,
            msg,
        }
    }

    // --- states ---------------------------------------------------------------------------

    fn start_of_line(&mut self) -> Step<State> {
        self.line += 1;
        self.inside_braces = false;
        if self.skip_blank_tab().is_err() {
            // The only place where the end of the input is the legitimate end.
            return Ok(State::Done);
        }
        Ok(match self.cur {
            b'#' => State::StartComment,
            b'\n' => State::StartOfLine,
            b'{' if self.scheme == NameScheme::Utf8 => return self.start_braced_metric_name(),
            _ => State::ReadingMetricName,
        })
    }

    fn start_comment(&mut self) -> Step<State> {
        self.skip_blank_tab()?;
        if self.cur == b'\n' {
            return Ok(State::StartOfLine);
        }
        let (start, end) = self.read_token_until_whitespace()?;
        if self.cur == b'\n' {
            return Ok(State::StartOfLine);
        }
        let keyword = &self.input[start..end];
        let is_help = keyword == b"HELP";
        if !is_help && keyword != b"TYPE" {
            // A plain comment.
            self.skip_to_newline()?;
            return Ok(State::StartOfLine);
        }
        self.skip_blank_tab()?;
        let name = self.read_token_as_metric_name()?;
        if self.cur == b'\n' {
            return Ok(State::StartOfLine);
        }
        if !is_blank_or_tab(self.cur) || name.is_empty() {
            return Err(Fail::Msg("invalid metric name in comment".into()));
        }
        self.set_or_create_family(name);
        self.skip_blank_tab()?;
        if self.cur == b'\n' {
            return Ok(State::StartOfLine);
        }
        Ok(if is_help {
            State::ReadingHelp
        } else {
            State::ReadingType
        })
    }

    fn reading_metric_name(&mut self) -> Step<State> {
        let name = self.read_token_as_metric_name()?;
        if name.is_empty() {
            return Err(Fail::Msg("invalid metric name".into()));
        }
        self.start_metric(name);
        self.skip_blank_tab_if_current_blank_tab()?;
        Ok(State::ReadingLabels)
    }

    /// UTF-8 scheme: a line starting with `{` carries its metric name first inside the braces.
    fn start_braced_metric_name(&mut self) -> Step<State> {
        self.inside_braces = true;
        self.skip_blank_tab()?;
        let name = self.read_token_as_metric_name()?;
        if name.is_empty() {
            return Err(Fail::Msg("invalid metric name".into()));
        }
        self.skip_blank_tab_if_current_blank_tab()?;
        match self.cur {
            b',' => {
                self.start_metric(name);
                self.reading_labels();
                Ok(State::StartLabelName)
            }
            b'}' => {
                self.start_metric(name);
                self.reading_labels();
                self.skip_blank_tab()?;
                Ok(State::ReadingValue)
            }
            b'=' => Err(Fail::Msg("invalid metric name".into())),
            other => Err(Fail::Msg(format!(
                "unexpected end of metric name {}",
                go_quote_byte(other)
            ))),
        }
    }

    fn start_metric(&mut self, name: Cow<'a, str>) {
        self.set_or_create_family(name);
        let mf = &mut self.families[self.fam];
        if mf.typ.is_none() {
            mf.typ = Some(MetricType::Untyped);
        }
        self.labels.clear();
    }

    fn reading_labels(&mut self) -> State {
        self.quantile = f64::NAN;
        self.bucket = f64::NAN;
        if self.cur != b'{' || self.inside_braces {
            return State::ReadingValue;
        }
        State::StartLabelName
    }

    fn start_label_name(&mut self) -> Step<State> {
        self.skip_blank_tab()?;
        if self.cur == b'}' {
            self.skip_blank_tab()?;
            return Ok(State::ReadingValue);
        }
        let name = self.read_token_as_label_name()?;
        if name.is_empty() {
            return Err(Fail::Msg(format!(
                "invalid label name for metric {}",
                go_quote(self.family_name().as_bytes())
            )));
        }
        if self.inside_braces {
            self.skip_blank_tab_if_current_blank_tab()?;
            if self.cur != b'=' {
                return Err(Fail::Msg(format!(
                    "multiple metric names for metric {}",
                    go_quote(self.family_name().as_bytes())
                )));
            }
        }
        if name == "__name__" {
            return Err(Fail::Msg(r#"label name "__name__" is reserved"#.into()));
        }
        self.label_role = match (self.family_type(), &*name) {
            (MetricType::Summary, "quantile") => LabelRole::Quantile,
            (MetricType::Histogram, "le") => LabelRole::Bucket,
            _ => LabelRole::Regular,
        };
        self.skip_blank_tab_if_current_blank_tab()?;
        if self.cur != b'=' {
            return Err(Fail::Msg(format!(
                "expected '=' after label name, found {}",
                go_quote_byte(self.cur)
            )));
        }
        if self.label_role == LabelRole::Regular {
            if self.labels.iter().any(|(n, _)| *n == name) {
                return Err(Fail::Msg(format!(
                    "duplicate label names for metric {}",
                    go_quote(self.family_name().as_bytes())
                )));
            }
            self.labels.push((name, Cow::Borrowed("")));
        }
        Ok(State::StartLabelValue)
    }

    fn start_label_value(&mut self) -> Step<State> {
        self.skip_blank_tab()?;
        if self.cur != b'"' {
            return Err(Fail::Msg(format!(
                "expected '\"' at start of label value, found {}",
                go_quote_byte(self.cur)
            )));
        }
        let value = self.read_label_value()?;
        match self.label_role {
            LabelRole::Quantile => {
                self.quantile = parse_float(value.as_bytes()).ok_or_else(|| {
                    Fail::Msg(format!(
                        "expected float as value for 'quantile' label, got {}",
                        go_quote(value.as_bytes())
                    ))
                })?;
            }
            LabelRole::Bucket => {
                self.bucket = parse_float(value.as_bytes()).ok_or_else(|| {
                    Fail::Msg(format!(
                        "expected float as value for 'le' label, got {}",
                        go_quote(value.as_bytes())
                    ))
                })?;
            }
            LabelRole::Regular => {
                if let Some(lp) = self.labels.last_mut() {
                    lp.1 = value.clone();
                }
            }
        }
        self.skip_blank_tab()?;
        match self.cur {
            b',' => return Ok(State::StartLabelName),
            b'}' => {}
            _ => {
                return Err(Fail::Msg(format!(
                    "unexpected end of label value {}",
                    go_quote(value.as_bytes())
                )))
            }
        }
        self.skip_blank_tab()?;
        Ok(State::ReadingValue)
    }

    fn reading_value(&mut self) -> Step<State> {
        let typ = self.family_type();
        self.metric_idx = match typ {
            MetricType::Summary | MetricType::Histogram => self.place_folded_metric(),
            _ => self.push_metric(),
        };
        let (start, end) = self.read_token_until_whitespace()?;
        let token = &self.input[start..end];
        let Some(value) = parse_float(token) else {
            return Err(Fail::Msg(format!(
                "expected float as value, got {}",
                go_quote(token)
            )));
        };
        let (is_count, is_sum) = (self.is_count, self.is_sum);
        let bound = match typ {
            MetricType::Summary => self.quantile,
            _ => self.bucket,
        };
        let metric = self.current_metric();
        let m = &mut self.metrics[metric];
        match typ {
            MetricType::Summary | MetricType::Histogram => {
                if is_count {
                    m.count = Some(value as u64);
                } else if is_sum {
                    m.sum = Some(value);
                } else if !bound.is_nan() {
                    self.points.push(Point {
                        metric,
                        bound,
                        value,
                    });
                }
            }
            _ => m.value = value,
        }
        Ok(if self.cur == b'\n' {
            State::StartOfLine
        } else {
            State::StartTimestamp
        })
    }

    fn start_timestamp(&mut self) -> Step<State> {
        self.skip_blank_tab()?;
        let (start, end) = self.read_token_until_whitespace()?;
        let token = &self.input[start..end];
        let Some(ts) = std::str::from_utf8(token)
            .ok()
            .and_then(|s| s.parse::<i64>().ok())
        else {
            return Err(Fail::Msg(format!(
                "expected integer as timestamp, got {}",
                go_quote(token)
            )));
        };
        let metric = self.current_metric();
        self.metrics[metric].timestamp_ms = Some(ts);
        let (start, end) = self.read_token_until_newline_raw()?;
        if end > start {
            return Err(Fail::Msg(format!(
                "spurious string after timestamp: {}",
                go_quote(&self.input[start..end])
            )));
        }
        Ok(State::StartOfLine)
    }

    fn reading_help(&mut self) -> Step<State> {
        if self.families[self.fam].help.is_some() {
            return Err(Fail::Msg(format!(
                "second HELP line for metric name {}",
                go_quote(self.family_name().as_bytes())
            )));
        }
        // Upstream keeps invalid UTF-8 in HELP as is; a protobuf string cannot hold it.
        let help = match self.read_token_until_newline_escaped()? {
            Cow::Borrowed(text) => match super::utf8(text) {
                Some(text) => Cow::Borrowed(text),
                None => String::from_utf8_lossy(text),
            },
            Cow::Owned(text) => Cow::Owned(String::from_utf8_lossy(&text).into_owned()),
        };
        self.families[self.fam].help = Some(help);
        Ok(State::StartOfLine)
    }

    fn reading_type(&mut self) -> Step<State> {
        if self.families[self.fam].typ.is_some() {
            return Err(Fail::Msg(format!(
                "second TYPE line for metric name {}, or TYPE reported after samples",
                go_quote(self.family_name().as_bytes())
            )));
        }
        let (start, end) = self.read_token_until_newline_raw()?;
        let token = &self.input[start..end];
        let Some(typ) = parse_metric_type(token) else {
            return Err(Fail::Msg(format!(
                "unknown metric type {}",
                go_quote(token)
            )));
        };
        self.families[self.fam].typ = Some(typ);
        // A type decides which names fold into this family: forget the last resolution.
        self.memo = None;
        Ok(State::StartOfLine)
    }

    // --- families and metrics -------------------------------------------------------------

    fn family_name(&self) -> &str {
        self.families.get(self.fam).map_or("", |mf| &mf.name)
    }

    fn family_type(&self) -> MetricType {
        self.families
            .get(self.fam)
            .map_or(MetricType::Untyped, ParsedFamily::metric_type)
    }

    /// Finds the family a name belongs to: the family of that exact name, else the summary or
    /// histogram it is the `_count`/`_sum`(/`_bucket`) of, else a new family.
    fn set_or_create_family(&mut self, name: Cow<'a, str>) {
        self.is_count = false;
        self.is_sum = false;
        if self
            .families
            .get(self.fam)
            .is_some_and(|mf| mf.name == name)
        {
            return;
        }
        if let Some((fam, is_count, is_sum)) = self.memo {
            if self.memo_name == name {
                (self.fam, self.is_count, self.is_sum) = (fam, is_count, is_sum);
                return;
            }
        }
        // A clone of a borrowed name is a copy of the reference.
        self.resolve_family(name.clone());
        self.memo_name = name;
        self.memo = Some((self.fam, self.is_count, self.is_sum));
    }

    fn resolve_family(&mut self, name: Cow<'a, str>) {
        if let Some(&i) = self.by_name.get(name.as_ref()) {
            self.fam = i;
            return;
        }
        let is_count = name.len() > 6 && name.ends_with("_count");
        let is_sum = name.len() > 4 && name.ends_with("_sum");
        let is_bucket = name.len() > 7 && name.ends_with("_bucket");
        let base = if is_count {
            &name[..name.len() - 6]
        } else if is_sum {
            &name[..name.len() - 4]
        } else if is_bucket {
            &name[..name.len() - 7]
        } else {
            &name
        };
        if is_count || is_sum || is_bucket {
            if let Some(&i) = self.by_name.get(base) {
                let folds = match self.families[i].typ {
                    Some(MetricType::Summary) => !is_bucket,
                    Some(MetricType::Histogram) => true,
                    _ => false,
                };
                if folds {
                    self.fam = i;
                    self.is_count = is_count;
                    self.is_sum = is_sum;
                    return;
                }
            }
        }
        self.fam = self.families.len();
        self.families.push(ParsedFamily {
            name: name.clone(),
            help: None,
            typ: None,
            metrics: 0..0,
        });
        self.by_name.insert(name, self.fam);
    }

    /// Appends a metric with the line's labels to the current family.
    fn push_metric(&mut self) -> usize {
        // Exactly the line's labels: the store merges the grouping labels in where it encodes,
        // it does not add them to the metric.
        let start = self.all_labels.len();
        self.all_labels.append(&mut self.labels);
        self.metrics.push(ParsedMetric {
            family: self.fam,
            labels: start..self.all_labels.len(),
            value: 0.0,
            count: None,
            sum: None,
            points: 0..0,
            timestamp_ms: None,
        });
        self.metrics.len() - 1
    }

    /// Places a summary or histogram sample line: into the metric with the same labels if one
    /// exists (the line's own labels are then dropped, as upstream does), else a new metric.
    fn place_folded_metric(&mut self) -> usize {
        // The lines of one histogram or summary (buckets, sum, count) usually repeat the labels
        // of the line before in the same order: then they fold into the metric that line was
        // placed in (equal labels make equal keys), found without building the key.
        if let Some(m) = self.metrics.get(self.metric_idx).filter(|_| self.shortcuts) {
            if m.family == self.fam && self.all_labels[m.labels.clone()] == self.labels[..] {
                return self.metric_idx;
            }
        }
        let mut key = std::mem::take(&mut self.key);
        key.clear();
        key.extend_from_slice(self.family_name().as_bytes());
        key.push(0xff);
        let mut order = std::mem::take(&mut self.order);
        order.clear();
        order.extend(0..self.labels.len());
        order.sort_unstable_by(|&a, &b| self.labels[a].0.cmp(&self.labels[b].0));
        for &i in &order {
            let (name, value) = &self.labels[i];
            // 0xff never occurs in UTF-8, so the key is unambiguous.
            key.extend_from_slice(name.as_bytes());
            key.push(0xff);
            key.extend_from_slice(value.as_bytes());
            key.push(0xff);
        }
        self.order = order;
        let idx = match self.series.get(key.as_slice()) {
            Some(&idx) => idx,
            None => {
                let idx = self.push_metric();
                self.series.insert(key.clone(), idx);
                idx
            }
        };
        self.key = key;
        idx
    }

    /// The index of the current metric in `metrics`.
    fn current_metric(&mut self) -> usize {
        if self.metric_idx >= self.metrics.len() {
            // Not reachable: reading_value always places the metric first.
            self.labels.clear();
            self.metric_idx = self.push_metric();
        }
        self.metric_idx
    }

    /// Groups the metrics by family and the points by metric (both stable: line order stays),
    /// and records each one's range.
    fn finish(mut self) -> ParsedText<'a> {
        let metrics = &mut self.metrics;
        group_by_owner(&mut self.points, |p| p.metric, |m, r| metrics[m].points = r);
        let families = &mut self.families;
        group_by_owner(
            &mut self.metrics,
            |m| m.family,
            |f, r| families[f].metrics = r,
        );
        ParsedText {
            families: self.families,
            metrics: self.metrics,
            labels: self.all_labels,
            points: self.points,
        }
    }

    // --- byte level -----------------------------------------------------------------------

    #[inline]
    fn read(&mut self) -> Step<u8> {
        match self.input.get(self.pos) {
            Some(&b) => {
                self.pos += 1;
                self.cur = b;
                Ok(b)
            }
            None => {
                self.cur = 0;
                Err(Fail::Eof)
            }
        }
    }

    /// Reads bytes while `keep` holds for them, like calling [`Self::read`] in a loop: the first
    /// byte for which it does not is left in `cur` (consumed), or end of input is an error.
    #[inline]
    fn read_while(&mut self, keep: impl Fn(u8) -> bool) -> Step<()> {
        let rest = &self.input[self.pos.min(self.input.len())..];
        let run = rest.iter().position(|&b| !keep(b)).unwrap_or(rest.len());
        self.read_past(run)
    }

    /// Consumes the `run` bytes from `pos` that the caller found to belong to the token and the
    /// byte after them (left in `cur`); end of input is an error.
    #[inline]
    fn read_past(&mut self, run: usize) -> Step<()> {
        match self.input.get(self.pos + run) {
            Some(&b) => {
                self.pos += run + 1;
                self.cur = b;
                Ok(())
            }
            None => {
                self.pos = self.input.len();
                self.cur = 0;
                Err(Fail::Eof)
            }
        }
    }

    /// Like `read_while` for a token that ends at the first byte `find` locates in the rest
    /// of the input (a `memchr` search, many bytes per step): the byte found is left in `cur`;
    /// none found is the end of the input, an error.
    #[inline]
    fn read_until(&mut self, find: impl Fn(&[u8]) -> Option<usize>) -> Step<()> {
        let rest = self.input.get(self.pos..).unwrap_or_default();
        self.read_past(find(rest).unwrap_or(rest.len()))
    }

    /// Like `read_while` with the legacy name charset, scanned by [`name_run`].
    #[inline]
    fn read_name_run(&mut self, metric: bool) -> Step<()> {
        let rest = self.input.get(self.pos..).unwrap_or_default();
        self.read_past(name_run(rest, metric))
    }

    /// Reads bytes until one that is neither blank nor tab; that one is left in `cur`. Most
    /// calls find no blank at all (`a="b",c="d"`): the next byte is taken without a scan.
    #[inline]
    fn skip_blank_tab(&mut self) -> Step<()> {
        match self.input.get(self.pos) {
            Some(&b) if !is_blank_or_tab(b) => {
                self.pos += 1;
                self.cur = b;
                Ok(())
            }
            _ => self.read_while(is_blank_or_tab),
        }
    }

    #[inline]
    fn skip_blank_tab_if_current_blank_tab(&mut self) -> Step<()> {
        if is_blank_or_tab(self.cur) {
            self.skip_blank_tab()?;
        }
        Ok(())
    }

    /// The token from `cur` up to the next blank, tab or newline (left in `cur`).
    fn read_token_until_whitespace(&mut self) -> Step<(usize, usize)> {
        let start = self.pos.saturating_sub(1);
        if !is_blank_or_tab(self.cur) && self.cur != b'\n' {
            self.read_while(|b| !is_blank_or_tab(b) && b != b'\n')?;
        }
        Ok((start, self.pos.saturating_sub(1)))
    }

    /// The token from `cur` up to the newline (left in `cur`), without escapes.
    fn read_token_until_newline_raw(&mut self) -> Step<(usize, usize)> {
        let start = self.pos.saturating_sub(1);
        self.skip_to_newline()?;
        Ok((start, self.pos.saturating_sub(1)))
    }

    /// Reads bytes until the newline (left in `cur`); nothing when `cur` is the newline.
    #[inline]
    fn skip_to_newline(&mut self) -> Step<()> {
        if self.cur != b'\n' {
            self.read_until(|rest| memchr::memchr(b'\n', rest))?;
        }
        Ok(())
    }

    /// HELP text from `cur` up to the newline (left in `cur`), with the escapes `\\` and `\n`:
    /// borrowed from the input unless it had escapes. Runs of plain bytes are copied in one scan.
    fn read_token_until_newline_escaped(&mut self) -> Step<Cow<'a, [u8]>> {
        let input = self.input;
        // `cur` is `input[pos - 1]`: the text starts there.
        let first = self.pos.saturating_sub(1);
        let mut escaped = false;
        loop {
            match self.cur {
                b'\n' if escaped => return Ok(Cow::Owned(self.scratch.clone())),
                b'\n' => return Ok(Cow::Borrowed(&input[first..self.pos - 1])),
                b'\\' => {
                    if !escaped {
                        escaped = true;
                        self.scratch.clear();
                        self.scratch.extend_from_slice(&input[first..self.pos - 1]);
                    }
                    match self.read()? {
                        b'\\' => self.scratch.push(b'\\'),
                        b'n' => self.scratch.push(b'\n'),
                        b => return Err(invalid_escape(b)),
                    }
                    self.read()?;
                }
                _ => {
                    let start = self.pos.saturating_sub(1);
                    self.read_until(|rest| memchr::memchr2(b'\\', b'\n', rest))?;
                    if escaped {
                        self.scratch.extend_from_slice(&input[start..self.pos - 1]);
                    }
                }
            }
        }
    }

    /// A metric name starting at `cur`: legacy charset, or (UTF-8 scheme) a quoted string. The
    /// first byte after it is left in `cur`. Empty when `cur` cannot start a name.
    fn read_token_as_metric_name(&mut self) -> Step<Cow<'a, str>> {
        if self.cur == b'"' && self.scheme == NameScheme::Utf8 {
            return self.read_quoted_name("metric name").map(Cow::Owned);
        }
        let input = self.input;
        let start = self.pos.saturating_sub(1);
        if !is_metric_name_start(self.cur) {
            return Ok(Cow::Borrowed(""));
        }
        if let Some(len) = self.repeated_name_at(start).filter(|_| self.shortcuts) {
            self.read_past(len - 1)?;
        } else {
            self.read_name_run(true)?;
        }
        Ok(Cow::Borrowed(ascii_str(&input[start..self.pos - 1])))
    }

    /// The length of the name at `start` when it repeats the current family's name or the
    /// last one resolved (a family's TYPE line after its HELP, its first sample, a histogram's
    /// next bucket): one comparison instead of a scan. Only names read from the input as
    /// legacy names (borrowed) qualify: a quoted one may hold bytes that end a legacy name.
    fn repeated_name_at(&self, start: usize) -> Option<usize> {
        let rest = &self.input[start..];
        let repeats = |name: &Cow<'a, str>| match name {
            // The byte after first: it rules out most other names (`h` before `h_bucket`)
            // without a comparison.
            Cow::Borrowed(n) if !n.is_empty() => (rest
                .get(n.len())
                .is_some_and(|&b| !is_metric_name_continuation(b))
                && rest.starts_with(n.as_bytes()))
            .then_some(n.len()),
            _ => None,
        };
        self.families
            .get(self.fam)
            .and_then(|f| repeats(&f.name))
            .or_else(|| repeats(&self.memo_name))
    }

    /// Like [`Self::read_token_as_metric_name`] for label names.
    fn read_token_as_label_name(&mut self) -> Step<Cow<'a, str>> {
        if self.cur == b'"' && self.scheme == NameScheme::Utf8 {
            return self.read_quoted_name("label name").map(Cow::Owned);
        }
        let input = self.input;
        let start = self.pos.saturating_sub(1);
        if !is_label_name_start(self.cur) {
            return Ok(Cow::Borrowed(""));
        }
        self.read_name_run(false)?;
        Ok(Cow::Borrowed(ascii_str(&input[start..self.pos - 1])))
    }

    /// A quoted name whose opening quote is `cur`; escapes `\\`, `\"`, `\n`. Leaves the byte
    /// after the closing quote in `cur`.
    fn read_quoted_name(&mut self, what: &str) -> Step<String> {
        let mut buf = Vec::new();
        let mut escaped = false;
        loop {
            let b = self.read()?;
            if escaped {
                match b {
                    b'\\' | b'"' => buf.push(b),
                    b'n' => buf.push(b'\n'),
                    _ => return Err(invalid_escape(b)),
                }
                escaped = false;
                continue;
            }
            match b {
                b'"' => break,
                b'\n' => {
                    return Err(Fail::Msg(format!(
                        "{what} {} contains unescaped new-line",
                        go_quote(&buf)
                    )))
                }
                b'\\' => escaped = true,
                _ => buf.push(b),
            }
        }
        self.read()?;
        String::from_utf8(buf)
            .map_err(|e| Fail::Msg(format!("invalid {what} {}", go_quote(e.as_bytes()))))
    }

    /// A label value after its opening quote (`cur`); escapes `\\`, `\"`, `\n`. Leaves the
    /// closing quote in `cur`. Borrowed from the input unless it had escapes.
    fn read_label_value(&mut self) -> Step<Cow<'a, str>> {
        let input = self.input;
        let start = self.pos;
        // Plain bytes in one scan, up to the closing quote, a backslash or a newline.
        self.read_until(|rest| memchr::memchr3(b'"', b'\\', b'\n', rest))?;
        let bytes: Cow<'a, [u8]> = match self.cur {
            b'\\' => {
                self.scratch.clear();
                self.scratch.extend_from_slice(&input[start..self.pos - 1]);
                self.read_label_value_escaped()?;
                Cow::Owned(self.scratch.clone())
            }
            b'\n' => return Err(unescaped_newline(&input[start..self.pos - 1])),
            _ => Cow::Borrowed(&input[start..self.pos - 1]),
        };
        match bytes {
            Cow::Borrowed(b) => match super::utf8(b) {
                Some(s) => Ok(Cow::Borrowed(s)),
                None => Err(invalid_label_value(b)),
            },
            Cow::Owned(b) => match String::from_utf8(b) {
                Ok(s) => Ok(Cow::Owned(s)),
                Err(e) => Err(invalid_label_value(e.as_bytes())),
            },
        }
    }

    /// The rest of a label value after a backslash (`cur`), appended to `scratch`.
    fn read_label_value_escaped(&mut self) -> Step<()> {
        let mut escaped = true;
        loop {
            let b = self.read()?;
            if escaped {
                match b {
                    b'\\' | b'"' => self.scratch.push(b),
                    b'n' => self.scratch.push(b'\n'),
                    _ => return Err(invalid_escape(b)),
                }
                escaped = false;
                continue;
            }
            match b {
                b'"' => return Ok(()),
                b'\n' => return Err(unescaped_newline(&self.scratch)),
                b'\\' => escaped = true,
                _ => self.scratch.push(b),
            }
        }
    }
}

/// Sorts `items` by their owner's index, stably (a body's lines are usually in order already),
/// and calls `record` with each owner and the range of its items.
fn group_by_owner<T>(
    items: &mut [T],
    owner: impl Fn(&T) -> usize,
    mut record: impl FnMut(usize, Range<usize>),
) {
    if !items.is_sorted_by_key(&owner) {
        items.sort_by_key(&owner);
    }
    let mut at = 0;
    while at < items.len() {
        let o = owner(&items[at]);
        let end = at + items[at..].partition_point(|item| owner(item) == o);
        record(o, at..end);
        at = end;
    }
}

#[inline]
fn is_blank_or_tab(b: u8) -> bool {
    b == b' ' || b == b'\t'
}

/// A slice the name scanners checked to be ASCII.
/// A name the byte-class loops above accepted (ASCII only).
fn ascii_str(b: &[u8]) -> &str {
    super::utf8(b).unwrap_or_default()
}

fn invalid_escape(b: u8) -> Fail {
    Fail::Msg(format!("invalid escape sequence '\\{}'", char::from(b)))
}

fn unescaped_newline(so_far: &[u8]) -> Fail {
    Fail::Msg(format!(
        "label value {} contains unescaped new-line",
        go_quote(so_far)
    ))
}

fn invalid_label_value(b: &[u8]) -> Fail {
    Fail::Msg(format!("invalid label value {}", go_quote(b)))
}

/// The TYPE keywords of client_model v0.2.0 (what pushgateway 1.5.1 links), matched like Go's
/// `strings.ToUpper`. `gauge_histogram`, `info`, `stateset`, ... are unknown.
fn parse_metric_type(token: &[u8]) -> Option<MetricType> {
    const TYPES: [(&str, MetricType); 5] = [
        ("COUNTER", MetricType::Counter),
        ("GAUGE", MetricType::Gauge),
        ("SUMMARY", MetricType::Summary),
        ("UNTYPED", MetricType::Untyped),
        ("HISTOGRAM", MetricType::Histogram),
    ];
    if token.is_ascii() {
        return TYPES
            .iter()
            .find(|(name, _)| token.eq_ignore_ascii_case(name.as_bytes()))
            .map(|&(_, t)| t);
    }
    // Go upper-cases rune by rune with the simple mapping (so `ſ` becomes `S`, `ı` becomes `I`,
    // but a ligature like `ﬆ` stays itself).
    let upper: String = String::from_utf8_lossy(token)
        .chars()
        .map(|c| {
            let mut up = c.to_uppercase();
            match (up.next(), up.next()) {
                (Some(u), None) => u,
                _ => c,
            }
        })
        .collect();
    TYPES
        .iter()
        .find(|(name, _)| upper == *name)
        .map(|&(_, t)| t)
}

/// Go's `strconv.ParseFloat(s, 64)` as expfmt calls it: decimal notation or `Inf`/`Infinity`
/// (any case, optional sign) or `NaN` (any case, no sign); no hex, no underscores, and values
/// beyond the f64 range are errors (underflow to zero is not).
/// 10^0 ..= 10^15, each exactly representable in an f64.
const EXACT_POWERS_OF_TEN: [f64; 16] = [
    1e0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10, 1e11, 1e12, 1e13, 1e14, 1e15,
];

pub(crate) fn parse_float(s: &[u8]) -> Option<f64> {
    let (neg, signed, rest) = match s.split_first() {
        Some((b'+', rest)) => (false, true, rest),
        Some((b'-', rest)) => (true, true, rest),
        _ => (false, false, s),
    };
    if rest.eq_ignore_ascii_case(b"inf") || rest.eq_ignore_ascii_case(b"infinity") {
        return Some(if neg {
            f64::NEG_INFINITY
        } else {
            f64::INFINITY
        });
    }
    if !signed && rest.eq_ignore_ascii_case(b"nan") {
        return Some(GO_NAN);
    }
    let mut i = 0;
    let mut mantissa_digits = 0;
    while i < rest.len() && rest[i].is_ascii_digit() {
        i += 1;
        mantissa_digits += 1;
    }
    if i < rest.len() && rest[i] == b'.' {
        i += 1;
        while i < rest.len() && rest[i].is_ascii_digit() {
            i += 1;
            mantissa_digits += 1;
        }
    }
    if mantissa_digits == 0 {
        return None;
    }
    if i < rest.len() && (rest[i] == b'e' || rest[i] == b'E') {
        i += 1;
        if i < rest.len() && (rest[i] == b'+' || rest[i] == b'-') {
            i += 1;
        }
        let exp_start = i;
        while i < rest.len() && rest[i].is_ascii_digit() {
            i += 1;
        }
        if i == exp_start {
            return None;
        }
    }
    if i != rest.len() {
        return None;
    }
    // Plain integers below 2^53 (counts, bucket counts, most counters) are exact in an f64:
    // no need for the general decimal conversion.
    if i == mantissa_digits && i <= 15 {
        let n = rest.iter().fold(0u64, |n, &d| n * 10 + u64::from(d - b'0'));
        let v = n as f64;
        return Some(if neg { -v } else { v });
    }
    // Short decimals without an exponent (bucket bounds, quantiles, sums): with at most 15
    // digits the digits are an exact integer and 10^k an exact power, so one correctly
    // rounded division gives the correctly rounded value (Clinger's fast path).
    if i == mantissa_digits + 1 && mantissa_digits <= 15 {
        let (n, k) = rest
            .iter()
            .fold((0u64, None::<usize>), |(n, k), &d| match d {
                b'.' => (n, Some(0)),
                d => (n * 10 + u64::from(d - b'0'), k.map(|k| k + 1)),
            });
        let v = n as f64 / EXACT_POWERS_OF_TEN[k.unwrap_or(0)];
        return Some(if neg { -v } else { v });
    }
    // Checked above to be ASCII decimal syntax that Rust parses with correct rounding too.
    let v: f64 = super::utf8(s)?.parse().ok()?;
    if v.is_infinite() {
        return None;
    }
    Some(v)
}

/// Go's `strconv.Quote` (what `%q` does to a string), for error messages identical to expfmt's.
fn go_quote(s: &[u8]) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for chunk in s.utf8_chunks() {
        for c in chunk.valid().chars() {
            push_escaped_rune(&mut out, c, '"');
        }
        for b in chunk.invalid() {
            out.push_str(&format!("\\x{b:02x}"));
        }
    }
    out.push('"');
    out
}

/// What `%q` does to a Go `byte`: the rune of that value, single-quoted.
fn go_quote_byte(b: u8) -> String {
    let mut out = String::with_capacity(4);
    out.push('\'');
    push_escaped_rune(&mut out, char::from(b), '\'');
    out.push('\'');
    out
}

fn push_escaped_rune(out: &mut String, c: char, quote: char) {
    if c == quote || c == '\\' {
        out.push('\\');
        out.push(c);
        return;
    }
    if go_is_print(c) {
        out.push(c);
        return;
    }
    let esc = match c {
        '\x07' => "\\a",
        '\x08' => "\\b",
        '\x0c' => "\\f",
        '\n' => "\\n",
        '\r' => "\\r",
        '\t' => "\\t",
        '\x0b' => "\\v",
        _ => {
            let u = u32::from(c);
            let s = if u < 0x20 || u == 0x7f {
                format!("\\x{u:02x}")
            } else if u < 0x10000 {
                format!("\\u{u:04x}")
            } else {
                format!("\\U{u:08x}")
            };
            out.push_str(&s);
            return;
        }
    };
    out.push_str(esc);
}

/// An approximation of Go's `unicode.IsPrint` without the Unicode tables: controls, separators
/// other than the ASCII space, the common format characters and private use are not printable.
/// (Unassigned code points are treated as printable, unlike Go.)
fn go_is_print(c: char) -> bool {
    let u = u32::from(c);
    if u < 0x7f {
        return u >= 0x20;
    }
    !matches!(
        u,
        0x7f..=0xa0
            | 0xad
            | 0x0600..=0x0605
            | 0x061c
            | 0x06dd
            | 0x070f
            | 0x180e
            | 0x1680
            | 0x2000..=0x200f
            | 0x2028..=0x202f
            | 0x205f..=0x2064
            | 0x2066..=0x206f
            | 0x3000
            | 0xe000..=0xf8ff
            | 0xfeff
            | 0xfff9..=0xfffb
            | 0xfffe..=0xffff
            | 0x110bd
            | 0xe0001
            | 0xe0020..=0xe007f
            | 0xf0000..
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::exposition::text_format::families_to_text;

    fn parse(s: &str) -> Result<Vec<MetricFamily>, TextParseError> {
        parse_text(s.as_bytes(), NameScheme::Legacy)
    }

    fn err(s: &str) -> (usize, String) {
        err_bytes(s.as_bytes())
    }

    fn err_bytes(s: &[u8]) -> (usize, String) {
        match parse_text(s, NameScheme::Legacy) {
            Ok(f) => panic!("{s:?} parsed: {f:?}"),
            Err(e) => (e.line, e.msg),
        }
    }

    fn assert_err(s: &str, line: usize, msg: &str) {
        assert_eq!(err(s), (line, msg.to_owned()), "input {s:?}");
    }

    fn text(s: &str) -> String {
        String::from_utf8(families_to_text(&parse(s).expect("should parse"))).expect("utf-8")
    }

    #[test]
    fn error_display() {
        let e = parse("a abc\n").unwrap_err();
        assert_eq!(
            e.to_string(),
            r#"text format parsing error in line 1: expected float as value, got "abc""#
        );
    }

    #[test]
    fn empty_and_blank_inputs() {
        for s in [
            "",
            "\n",
            "   ",
            "\n\n  \t\n",
            "# just a comment\n",
            "# HELP a x\n# TYPE a gauge\n",
        ] {
            assert_eq!(parse(s).unwrap(), vec![], "{s:?}");
        }
    }

    #[test]
    fn value_errors() {
        assert_err(
            "a 1\nb 2\nc abc\n",
            3,
            r#"expected float as value, got "abc""#,
        );
        assert_err("a 1\r\n", 1, r#"expected float as value, got "1\r""#);
        assert_err("a\n", 1, r#"expected float as value, got """#);
        assert_err("a{}\n", 1, r#"expected float as value, got """#);
        assert_err("a 0x1p3\n", 1, r#"expected float as value, got "0x1p3""#);
        assert_err("a 0x10\n", 1, r#"expected float as value, got "0x10""#);
        assert_err("a 1_000\n", 1, r#"expected float as value, got "1_000""#);
        assert_err("a 1e400\n", 1, r#"expected float as value, got "1e400""#);
        assert_err("a -1e400\n", 1, r#"expected float as value, got "-1e400""#);
        assert_err("a +nan\n", 1, r#"expected float as value, got "+nan""#);
        assert_err("a infin\n", 1, r#"expected float as value, got "infin""#);
        assert_err("a 1e\n", 1, r#"expected float as value, got "1e""#);
        assert_err("a .\n", 1, r#"expected float as value, got ".""#);
        assert_err("a-b 1\n", 1, r#"expected float as value, got "-b""#);
        assert_err("a \u{e9}\n", 1, r#"expected float as value, got "é""#);
        assert_err("a \x01\n", 1, r#"expected float as value, got "\x01""#);
    }

    #[test]
    fn accepted_values() {
        let cases: &[(&str, f64)] = &[
            ("1", 1.0),
            ("-1.5", -1.5),
            ("+2", 2.0),
            ("1e3", 1000.0),
            ("1E-3", 0.001),
            (".5", 0.5),
            ("5.", 5.0),
            ("007", 7.0),
            ("1e-400", 0.0),
            ("Inf", f64::INFINITY),
            ("+Inf", f64::INFINITY),
            ("-Inf", f64::NEG_INFINITY),
            ("inf", f64::INFINITY),
            ("+inf", f64::INFINITY),
            ("INF", f64::INFINITY),
            ("Infinity", f64::INFINITY),
            ("-infinity", f64::NEG_INFINITY),
            ("1.7976931348623157e308", f64::MAX),
        ];
        for &(s, want) in cases {
            let got = parse(&format!("a {s}\n")).unwrap()[0].metric[0]
                .untyped
                .unwrap()
                .value();
            assert_eq!(got, want, "{s}");
        }
        for s in ["NaN", "nan", "NAN", "nAn"] {
            let got = parse(&format!("a {s}\n")).unwrap()[0].metric[0]
                .untyped
                .unwrap()
                .value();
            assert!(got.is_nan(), "{s}");
        }
    }

    #[test]
    fn end_of_input_errors() {
        assert_err("a 1", 1, "unexpected end of input stream");
        assert_err("a 1\nb 2", 2, "unexpected end of input stream");
        assert_err("a", 1, "unexpected end of input stream");
        assert_err("a{b=\"c\"", 1, "unexpected end of input stream");
        assert_err("a{b=\"c", 1, "unexpected end of input stream");
        assert_err("a 1 2", 1, "unexpected end of input stream");
        assert_err("#", 1, "unexpected end of input stream");
        assert_err("# comment", 1, "unexpected end of input stream");
        assert_err("# HELP a text", 1, "unexpected end of input stream");
        assert_err("# TYPE a gauge", 1, "unexpected end of input stream");
    }

    #[test]
    fn trailing_garbage_and_timestamps() {
        assert_err("a 1 \n", 1, r#"expected integer as timestamp, got """#);
        assert_err("a 1 x\n", 1, r#"expected integer as timestamp, got "x""#);
        assert_err(
            "a 1 1.5\n",
            1,
            r#"expected integer as timestamp, got "1.5""#,
        );
        assert_err(
            "a 1 9223372036854775808\n",
            1,
            r#"expected integer as timestamp, got "9223372036854775808""#,
        );
        assert_err("a 1 2 \n", 1, r#"spurious string after timestamp: " ""#);
        assert_err("a 1 2 3\n", 1, r#"spurious string after timestamp: " 3""#);
        assert_err(
            "a 1 2\r\n",
            1,
            r#"expected integer as timestamp, got "2\r""#,
        );
        let f = parse("a 1 -1234\nb 2 +5\n").unwrap();
        assert_eq!(f[0].metric[0].timestamp_ms, Some(-1234));
        assert_eq!(f[1].metric[0].timestamp_ms, Some(5));
    }

    #[test]
    fn help_and_type_errors() {
        assert_err(
            "# HELP x a\n# HELP x b\n",
            2,
            r#"second HELP line for metric name "x""#,
        );
        assert_err(
            "# TYPE x gauge\n# TYPE x gauge\n",
            2,
            r#"second TYPE line for metric name "x", or TYPE reported after samples"#,
        );
        assert_err(
            "x 1\n# TYPE x gauge\n",
            2,
            r#"second TYPE line for metric name "x", or TYPE reported after samples"#,
        );
        assert_err(
            "# TYPE s summary\n# TYPE s_count counter\n",
            2,
            r#"second TYPE line for metric name "s", or TYPE reported after samples"#,
        );
        assert_err("# TYPE x foo\n", 1, r#"unknown metric type "foo""#);
        assert_err("# TYPE x info\n", 1, r#"unknown metric type "info""#);
        assert_err(
            "# TYPE x stateset\n",
            1,
            r#"unknown metric type "stateset""#,
        );
        assert_err(
            "# TYPE x gaugehistogram\n",
            1,
            r#"unknown metric type "gaugehistogram""#,
        );
        assert_err(
            "# TYPE x gauge_histogram\n",
            1,
            r#"unknown metric type "gauge_histogram""#,
        );
        assert_err("# TYPE x gauge \n", 1, r#"unknown metric type "gauge ""#);
        assert_err("# TYPE x gauge\r\n", 1, r#"unknown metric type "gauge\r""#);
        assert_err("# HELP 1x y\n", 1, "invalid metric name in comment");
        assert_err("# HELP x.y z\n", 1, "invalid metric name in comment");
        assert_err("# HELP x a\\tb\n", 1, r"invalid escape sequence '\t'");
        assert_err("# HELP x a\\\"b\n", 1, r#"invalid escape sequence '\"'"#);
    }

    #[test]
    fn help_and_type_lenience() {
        // Type names in any case; leading blanks stripped, trailing kept in HELP.
        let f = parse("# TYPE a COUNTER\n# HELP a  some  text \na 1\n").unwrap();
        assert_eq!(f[0].r#type(), MetricType::Counter);
        assert_eq!(f[0].help(), "some  text ");
        let f = parse("#HELP a x\\ny\\\\z\na 1\n").unwrap();
        assert_eq!(f[0].help(), "x\ny\\z");
        // Borrowed from the body unless it had escapes; invalid UTF-8 made valid either way.
        let body = "# HELP a plain\n# HELP b \\\\x\\ny\na 1\nb 2\n";
        let parsed = parse_text_borrowed(body.as_bytes(), NameScheme::Legacy).unwrap();
        let helps: Vec<_> = parsed.families().map(|f| f.help.clone().unwrap()).collect();
        assert!(matches!(helps[0], Cow::Borrowed("plain")), "{helps:?}");
        assert!(
            matches!(&helps[1], Cow::Owned(h) if h == "\\x\ny"),
            "{helps:?}"
        );
        for (body, want) in [
            (&b"# HELP a x\xffy\na 1\n"[..], "x\u{fffd}y"),
            (b"# HELP a \\\\\xff\na 1\n", "\\\u{fffd}"),
        ] {
            assert_eq!(
                parse_text(body, NameScheme::Legacy).unwrap()[0].help(),
                want
            );
        }
        // Go's ToUpper turns the long s into S.
        let f = parse("# TYPE a \u{17f}ummary\na_count 1\n").unwrap();
        assert_eq!(f[0].r#type(), MetricType::Summary);
        // Lines with a name but nothing after it are fine.
        let f =
            parse("# HELP a\n# TYPE a\n# TYPE a  \n# HELP a \n# foo\n#\n  # x y z\na 1\n").unwrap();
        assert_eq!(f[0].help, None);
        assert_eq!(f[0].r#type(), MetricType::Untyped);
    }

    #[test]
    fn label_errors() {
        assert_err(
            "a{b=\"1\",b=\"2\"} 1\n",
            1,
            r#"duplicate label names for metric "a""#,
        );
        assert_err(
            "a{__name__=\"x\"} 1\n",
            1,
            r#"label name "__name__" is reserved"#,
        );
        assert_err("a{__name__} 1\n", 1, r#"label name "__name__" is reserved"#);
        assert_err("a{1=\"x\"} 1\n", 1, r#"invalid label name for metric "a""#);
        assert_err(
            "a{b.c=\"x\"} 1\n",
            1,
            r#"expected '=' after label name, found '.'"#,
        );
        assert_err(
            "a{b \"x\"} 1\n",
            1,
            r#"expected '=' after label name, found '"'"#,
        );
        assert_err("a{b\n", 1, r"expected '=' after label name, found '\n'");
        assert_err(
            "a{b=x} 1\n",
            1,
            r#"expected '"' at start of label value, found 'x'"#,
        );
        assert_err("a{b=\"\\t\"} 1\n", 1, r"invalid escape sequence '\t'");
        assert_err(
            "a{b=\"x\ny\"} 1\n",
            1,
            r#"label value "x" contains unescaped new-line"#,
        );
        assert_err(
            "a{b=\"\\\\x\ny\"} 1\n",
            1,
            r#"label value "\\x" contains unescaped new-line"#,
        );
        assert_err(
            "a{b=\"x\" c=\"y\"} 1\n",
            1,
            r#"unexpected end of label value "x""#,
        );
        assert_eq!(
            err_bytes(b"a 1\na{b=\"\xff\"} 1\n"),
            (2, r#"invalid label value "\xff""#.to_owned())
        );
        assert_eq!(
            err_bytes(b"a{b=\"\\\"\xc3\"} 1\n"),
            (1, r#"invalid label value "\"\xc3""#.to_owned())
        );
        assert_err("{a=\"b\"} 1\n", 1, "invalid metric name");
        assert_err("\"a\" 1\n", 1, "invalid metric name");
        assert_err(
            "# TYPE s summary\ns{quantile=\"x\"} 1\n",
            2,
            r#"expected float as value for 'quantile' label, got "x""#,
        );
        assert_err(
            "# TYPE h histogram\nh_bucket{le=\"0x1\"} 1\n",
            2,
            r#"expected float as value for 'le' label, got "0x1""#,
        );
    }

    #[test]
    fn labels_and_escapes() {
        let f =
            parse("a{x=\"q\\\"uo\\\\te\\nnl\",y=\"\"} 1\n  a { z = \"é\" , } 2\na{}3\na{\t}\t4\n")
                .unwrap();
        assert_eq!(f.len(), 1);
        let m = &f[0].metric;
        assert_eq!(m.len(), 4);
        assert_eq!(m[0].label[0].value(), "q\"uo\\te\nnl");
        assert_eq!(m[0].label[1].value(), "");
        assert_eq!(m[1].label[0].name(), "z");
        assert_eq!(m[1].label[0].value(), "é");
        assert!(m[2].label.is_empty());
        assert_eq!(m[3].untyped.unwrap().value(), 4.0);
        // `le` is an ordinary label outside histograms, and `quantile` outside summaries.
        let f = parse("g{le=\"1\",quantile=\"x\"} 1\n").unwrap();
        assert_eq!(f[0].metric[0].label.len(), 2);
    }

    #[test]
    fn families_typed_and_interleaved() {
        let f = parse("# TYPE c counter\nc 1\ng 2\nc{a=\"b\"} 3\n# TYPE g2 gauge\ng2 4\n").unwrap();
        let names: Vec<_> = f.iter().map(|f| f.name()).collect();
        assert_eq!(names, ["c", "g", "g2"]);
        assert_eq!(f[0].metric.len(), 2);
        assert_eq!(f[0].metric[1].counter.as_ref().unwrap().value(), 3.0);
        assert_eq!(f[1].r#type, Some(MetricType::Untyped as i32));
        assert_eq!(f[2].metric[0].gauge.unwrap().value(), 4.0);
    }

    #[test]
    fn summary_folding() {
        let input = "# TYPE s summary\n\
            s{a=\"1\",quantile=\"0.5\"} 10\n\
            s{a=\"2\",quantile=\"0.5\"} 20\n\
            s_sum{a=\"1\"} 100\n\
            other 1\n\
            s{quantile=\"0.9\",a=\"1\"} 11\n\
            s_count{a=\"1\"} 7.9\n\
            s_count{a=\"2\"} 3\n";
        let f = parse(input).unwrap();
        assert_eq!(f.len(), 2);
        let s = &f[0];
        assert_eq!(s.metric.len(), 2);
        let m = s.metric[0].summary.as_ref().unwrap();
        assert_eq!(s.metric[0].label.len(), 1);
        assert_eq!(m.quantile.len(), 2);
        assert_eq!(m.quantile[1].quantile(), 0.9);
        assert_eq!(m.quantile[1].value(), 11.0);
        assert_eq!(m.sample_sum(), 100.0);
        assert_eq!(m.sample_count(), 7);
        assert_eq!(s.metric[1].summary.as_ref().unwrap().sample_count(), 3);
        // _bucket does not fold into a summary.
        let f = parse("# TYPE s summary\ns_bucket 1\n").unwrap();
        assert_eq!(f[0].name(), "s_bucket");
        // Without a TYPE line nothing folds.
        let f = parse("s 1\ns_sum 2\n").unwrap();
        assert_eq!(f.len(), 2);
    }

    #[test]
    fn histogram_folding() {
        let input = "# HELP h help\n# TYPE h histogram\n\
            h_bucket{le=\"0.5\"} 1\n\
            h_bucket{le=\"+Inf\"} 3\n\
            h_sum 4.5\n\
            h_count 3\n";
        let f = parse(input).unwrap();
        assert_eq!(f.len(), 1);
        let h = f[0].metric[0].histogram.as_ref().unwrap();
        assert_eq!(h.bucket.len(), 2);
        assert_eq!(h.bucket[1].upper_bound(), f64::INFINITY);
        assert_eq!(h.bucket[1].cumulative_count(), 3);
        assert_eq!(h.sample_sum(), 4.5);
        assert_eq!(h.sample_count(), 3);
        assert_eq!(text(input), input);
        // HELP through a suffixed name lands on the histogram.
        assert_err(
            "# TYPE h histogram\n# HELP h a\n# HELP h_count b\n",
            3,
            r#"second HELP line for metric name "h""#,
        );
        // The exact family name wins over folding.
        let f = parse("h_count 1\n# TYPE h histogram\nh_count 2\n").unwrap();
        assert_eq!(f[0].name(), "h_count");
        assert_eq!(f[0].metric.len(), 2);
    }

    #[test]
    fn only_help_or_type_families_are_dropped() {
        let f = parse("# HELP a x\n# TYPE b gauge\nc 1\n").unwrap();
        assert_eq!(f.len(), 1);
        assert_eq!(f[0].name(), "c");
    }

    #[test]
    fn openmetrics_bodies_parse_as_text() {
        let f = parse("# TYPE a gauge\n# UNIT a seconds\na 1\n# EOF\n").unwrap();
        assert_eq!(f.len(), 1);
        assert_err(
            "# TYPE a info\na_info 1\n# EOF\n",
            1,
            r#"unknown metric type "info""#,
        );
    }

    #[test]
    fn utf8_names() {
        let p = |s: &str| parse_text(s.as_bytes(), NameScheme::Utf8);
        let f = p("# HELP \"my.metric\" h\n{\"my.metric\", \"a.b\"=\"v\", c=\"d\"} 1\n{\"my.metric\"} 2\n{plain} 3\n")
            .unwrap();
        assert_eq!(f[0].name(), "my.metric");
        assert_eq!(f[0].help(), "h");
        assert_eq!(f[0].metric.len(), 2);
        assert_eq!(f[0].metric[0].label[0].name(), "a.b");
        assert_eq!(f[0].metric[0].label[1].name(), "c");
        assert_eq!(f[1].name(), "plain");
        let e = p("{\"a\", \"b\"} 1\n").unwrap_err();
        assert_eq!(e.msg, r#"multiple metric names for metric "a""#);
        let e = p("{\"a\" x} 1\n").unwrap_err();
        assert_eq!(e.msg, "unexpected end of metric name 'x'");
        let e = p("{\"a\nb\"} 1\n").unwrap_err();
        assert_eq!(e.msg, r#"metric name "a" contains unescaped new-line"#);
        let e = p("{\"\"} 1\n").unwrap_err();
        assert_eq!(e.msg, "invalid metric name");
        // Legacy scheme refuses all of it.
        assert_err("{\"a\"} 1\n", 1, "invalid metric name");
        assert_err(
            "a{\"b\"=\"c\"} 1\n",
            1,
            r#"invalid label name for metric "a""#,
        );
        // Round trip through the encoder's quoted form.
        let input = "# HELP \"a.b\" x\n# TYPE \"a.b\" gauge\n{\"a.b\",\"c d\"=\"e\",f=\"g\"} 1\n";
        let f = p(input).unwrap();
        assert_eq!(String::from_utf8(families_to_text(&f)).unwrap(), input);
    }

    #[test]
    fn go_quoting() {
        assert_eq!(
            go_quote(b"a\"b\\c\n\r\t\x07\x7f"),
            r#""a\"b\\c\n\r\t\a\x7f""#
        );
        assert_eq!(
            go_quote("é\u{a0}\u{200b}😀".as_bytes()),
            "\"é\\u00a0\\u200b😀\""
        );
        assert_eq!(go_quote(b"\xff\xc3"), r#""\xff\xc3""#);
        assert_eq!(go_quote_byte(b'\''), r"'\''");
        assert_eq!(go_quote_byte(b'"'), r#"'"'"#);
        assert_eq!(go_quote_byte(0xc3), "'Ã'");
        assert_eq!(go_quote_byte(0x85), r"'\u0085'");
        assert_eq!(go_quote_byte(0), r"'\x00'");
    }

    #[test]
    fn round_trip_through_encoder() {
        let input = "# HELP a Help with \\\\ and \\n.\n# TYPE a counter\n\
            a{l=\"x\\\"y\\\\z\\n\"} 1.5e+10\n\
            a 0.0001\n\
            # TYPE s summary\n\
            s{quantile=\"0.5\"} NaN\n\
            s{quantile=\"0.99\"} -Inf\n\
            s_sum 1e-05\n\
            s_count 123456\n\
            # TYPE u untyped\n\
            u 1 42\n";
        assert_eq!(text(input), input);
    }

    #[test]
    fn histogram_without_inf_bucket_gets_one() {
        let input = "# TYPE h histogram\nh_bucket{le=\"1\"} 1\nh_count 5\n";
        assert_eq!(
            text(input),
            "# TYPE h histogram\nh_bucket{le=\"1\"} 1\nh_bucket{le=\"+Inf\"} 5\nh_sum 0\nh_count 5\n"
        );
    }
}

#[cfg(test)]
mod properties {
    use super::*;
    use proptest::prelude::*;

    const SAMPLE: &str = "# HELP h Help \\\\ \\n.\n# TYPE h histogram\n\
        h_bucket{a=\"x\\\"\",le=\"0.5\"} 1\nh_bucket{a=\"x\\\"\",le=\"+Inf\"} 2 123\nh_sum{a=\"x\\\"\"} 1.5\n\
        h_count{a=\"x\\\"\"} 2\n# TYPE s summary\ns{quantile=\"0.9\"} NaN\ns_sum 1e-3\ns_count 3\n\
        {\"u.tf8\",\"l.b\"=\"v\"} -Inf\nplain{x=\"\"} 7\n";

    proptest! {
        #[test]
        fn short_decimals_parse_like_the_general_conversion(
            int in "[0-9]{0,8}",
            frac in "[0-9]{0,8}",
            sign in proptest::sample::select(vec!["", "-", "+"]),
        ) {
            let text = format!("{sign}{int}.{frac}");
            let want = if int.is_empty() && frac.is_empty() {
                None
            } else {
                text.parse::<f64>().ok()
            };
            let got = parse_float(text.as_bytes());
            prop_assert_eq!(got.map(f64::to_bits), want.map(f64::to_bits), "{}", text);
        }

        #[test]
        fn parse_never_panics_on_arbitrary_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = parse_text(&bytes, NameScheme::Legacy);
            let _ = parse_text(&bytes, NameScheme::Utf8);
        }

        #[test]
        fn parse_never_panics_on_mutated_bodies(
            edits in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>(), 0u8..3), 1..8),
        ) {
            let mut body = SAMPLE.as_bytes().to_vec();
            for (at, byte, op) in edits {
                if body.is_empty() {
                    break;
                }
                let i = at.index(body.len());
                match op {
                    0 => body[i] = byte,
                    1 => body.insert(i, byte),
                    _ => {
                        body.remove(i);
                    }
                }
            }
            let _ = parse_text(&body, NameScheme::Legacy);
            let _ = parse_text(&body, NameScheme::Utf8);
        }

        #[test]
        fn parse_never_panics_on_token_soup(
            parts in proptest::collection::vec(
                prop::sample::select(vec![
                    "a", "h", "h_bucket", "s_sum", "_count", "{", "}", "\"", "=", ",", " ", "\t", "\n",
                    "\\", "le", "quantile", "1", "NaN", "+Inf", "# ", "HELP ", "TYPE ", "summary",
                    "histogram", "\"x.y\"", "\u{e9}", "\r",
                ]),
                0..40,
            ),
        ) {
            let body = parts.concat();
            let _ = parse_text(body.as_bytes(), NameScheme::Legacy);
            let _ = parse_text(body.as_bytes(), NameScheme::Utf8);
        }
    }

    /// [`parse_text`] without the parser's shortcuts for repeats.
    fn parse_text_without_shortcuts(
        input: &[u8],
        scheme: NameScheme,
    ) -> Result<Vec<MetricFamily>, TextParseError> {
        let mut parser = Parser::new(input, scheme);
        parser.shortcuts = false;
        parser.run()?;
        Ok(parser.finish().to_families())
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        /// The shortcuts (a repeated name compared instead of scanned, a line folded into the
        /// metric of the line before without its key) give the same families or the same error,
        /// on bodies of repeated and prefixed names, reordered and repeated labels.
        #[test]
        fn shortcuts_change_nothing(
            lines in proptest::collection::vec(
                (
                    prop::sample::select(vec![
                        "h", "h_bucket", "h_sum", "h_count", "h_bucket_x", "h:x", "s", "s_sum",
                        "s_count", "s_bucket", "c", "c_total", "\"h\"", "\"h.x\"", "# HELP h",
                        "# TYPE h histogram", "# TYPE s summary", "# TYPE c counter", "# HELP c",
                        "# TYPE h_bucket gauge", "{\"h\"", "{\"s.x\"", "{\"h.x\"", "h.x",
                        "{\"h x\"", "h",
                    ]),
                    proptest::collection::vec(
                        prop::sample::select(vec![
                            "a=\"1\"", "a=\"2\"", "b=\"1\"", "le=\"0.5\"", "le=\"+Inf\"",
                            "quantile=\"0.9\"", "a=\"x\\\"y\"", " b=\"1\" ",
                        ]),
                        0..4,
                    ),
                    prop::sample::select(vec![" 1", " 2.5", "\t3", " NaN", " 1 100", "", " x"]),
                ),
                0..14,
            ),
            typed in any::<bool>(),
        ) {
            let mut body = String::new();
            if typed {
                body.push_str("# TYPE h histogram\n# TYPE s summary\n");
            }
            for (head, labels, value) in &lines {
                body.push_str(head);
                if head.starts_with('#') {
                    body.push_str(" text\n");
                    continue;
                }
                let open = head.starts_with('{');
                if !labels.is_empty() || open {
                    if !open {
                        body.push('{');
                    }
                    for l in labels {
                        body.push(',');
                        body.push_str(l);
                    }
                    if !open {
                        // `{,a="1"}` is an error; drop the first comma.
                        let at = body.rfind('{').unwrap_or(0);
                        if body[at + 1..].starts_with(',') {
                            body.remove(at + 1);
                        }
                    }
                    body.push('}');
                }
                body.push_str(value);
                body.push('\n');
            }
            // Compared as protobuf bytes: exact to the bit, and NaN equals itself.
            let bytes = |r: Result<Vec<MetricFamily>, TextParseError>| {
                r.map(|fs| fs.iter().map(prost::Message::encode_to_vec).collect::<Vec<_>>())
            };
            for scheme in [NameScheme::Legacy, NameScheme::Utf8] {
                prop_assert_eq!(
                    bytes(parse_text(body.as_bytes(), scheme)),
                    bytes(parse_text_without_shortcuts(body.as_bytes(), scheme)),
                    "{:?}", body
                );
            }
        }
    }

    #[test]
    fn sample_body_parses() {
        let f = parse_text(SAMPLE.as_bytes(), NameScheme::Utf8).unwrap();
        let names: Vec<_> = f.iter().map(|f| f.name()).collect();
        assert_eq!(names, ["h", "s", "u.tf8", "plain"]);
    }
}
