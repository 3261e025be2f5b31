//! The parser's state machine: its data, the loop that runs the states, the state that starts
//! each line, and the grouping of the result once the input is read.

use std::borrow::Cow;
use std::ops::Range;

use crate::exposition::names::NameScheme;
use crate::FastMap;

use super::error::{Fail, Step, TextParseError};
use super::model::{ParsedFamily, ParsedMetric, ParsedText, Point};

/// Where the parser is in a line; each state is a method that reads on and names the next.
#[derive(Debug, Clone, Copy)]
pub(super) enum State {
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
pub(super) enum LabelRole {
    Regular,
    Quantile,
    Bucket,
}

/// The parser's state between states: where it is in the input, what it has built so far, and
/// what the line being read has said.
pub(super) struct Parser<'a> {
    pub(super) input: &'a [u8],
    /// Index of the next byte to read; `cur` is `input[pos - 1]`.
    pub(super) pos: usize,
    pub(super) cur: u8,
    pub(super) line: usize,
    pub(super) scheme: NameScheme,
    pub(super) families: Vec<ParsedFamily<'a>>,
    /// Every metric in the order its first line came; `ParsedMetric::family` says whose.
    pub(super) metrics: Vec<ParsedMetric>,
    /// The labels of every metric, one metric's after the other.
    pub(super) all_labels: Vec<(Cow<'a, str>, Cow<'a, str>)>,
    /// Quantiles and buckets in line order; `Point::metric` says whose.
    pub(super) points: Vec<Point>,
    /// Family index by name; names without escapes are borrowed from the input.
    pub(super) by_name: FastMap<Cow<'a, str>, usize>,
    /// Summary and histogram metrics by label signature (family name and labels without
    /// `quantile`/`le`), so their sample lines fold into one metric.
    pub(super) folded: FastMap<Vec<u8>, usize>,
    /// The current family, an index into `families`.
    pub(super) fam: usize,
    /// The labels of the line being read, borrowed from the input where they had no escapes:
    /// a summary or histogram line that folds into an existing metric allocates nothing.
    pub(super) labels: Vec<(Cow<'a, str>, Cow<'a, str>)>,
    /// Reused for sorting `labels` when building a fold key.
    pub(super) order: Vec<usize>,
    /// The name `set_or_create_family` resolved last and its answer (family, is_count, is_sum):
    /// consecutive lines of a histogram or summary repeat their name.
    pub(super) memo_name: Cow<'a, str>,
    pub(super) memo: Option<(usize, bool, bool)>,
    /// Index of the current metric in `metrics`, once placed.
    pub(super) metric_idx: usize,
    pub(super) label_role: LabelRole,
    pub(super) quantile: f64,
    pub(super) bucket: f64,
    /// The line's name is `<summary or histogram>_count` / `_sum`.
    pub(super) is_count: bool,
    pub(super) is_sum: bool,
    pub(super) inside_braces: bool,
    pub(super) scratch: Vec<u8>,
    pub(super) key: Vec<u8>,
    /// Whether the shortcuts for repeats (a name read again, a line folding into the metric of
    /// the line before) are taken; off only in the test that checks they change nothing.
    pub(super) shortcuts: bool,
    /// Series counted as the store counts them (a metric of a summary: its quantiles and 2, of
    /// a histogram: its buckets and 3, any other: 1), and the most the caller accepts.
    pub(super) series: usize,
    pub(super) max_series: usize,
    pub(super) over_limit: bool,
}

impl<'a> Parser<'a> {
    pub(super) fn new(input: &'a [u8], scheme: NameScheme) -> Self {
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
            folded: FastMap::default(),
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
            series: 0,
            max_series: usize::MAX,
            over_limit: false,
        }
    }

    pub(super) fn run(&mut self) -> Result<(), TextParseError> {
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
                Err(Fail::TooManySeries) => {
                    self.over_limit = true;
                    return Err(self.error(format!("more than {} series", self.max_series)));
                }
            };
        }
    }

    /// Counts `n` more series; stops the parse once they pass the limit.
    pub(super) fn add_series(&mut self, n: usize) -> Step<()> {
        self.series += n;
        if self.series > self.max_series {
            return Err(Fail::TooManySeries);
        }
        Ok(())
    }

    fn error(&self, msg: String) -> TextParseError {
        TextParseError {
            line: self.line,
            msg,
        }
    }

    /// The first state of every line: a comment, a blank line or a sample.
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

    /// Groups the metrics by family and the points by metric (both stable: line order stays),
    /// and records each one's range.
    pub(super) fn finish(mut self) -> ParsedText<'a> {
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
