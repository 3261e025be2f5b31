//! Sample lines `name{labels} value [timestamp]`: the metric name (or, with UTF-8 names, the
//! quoted name first inside the braces), the value and the optional timestamp.

use std::borrow::Cow;

use crate::exposition::proto::MetricType;
use crate::exposition::text::float::parse_float;
use crate::exposition::text::quote::{go_quote, go_quote_byte};

use super::error::{Fail, Step};
use super::model::Point;
use super::parser::{Parser, State};

impl<'a> Parser<'a> {
    pub(super) fn reading_metric_name(&mut self) -> Step<State> {
        let name = self.read_token_as_metric_name()?;
        if name.is_empty() {
            return Err(Fail::Msg("invalid metric name".into()));
        }
        self.start_metric(name);
        self.skip_blank_tab_if_current_blank_tab()?;
        Ok(State::ReadingLabels)
    }

    /// UTF-8 scheme: a line starting with `{` carries its metric name first inside the braces.
    pub(super) fn start_braced_metric_name(&mut self) -> Step<State> {
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

    pub(super) fn reading_labels(&mut self) -> State {
        self.quantile = f64::NAN;
        self.bucket = f64::NAN;
        if self.cur != b'{' || self.inside_braces {
            return State::ReadingValue;
        }
        State::StartLabelName
    }

    pub(super) fn reading_value(&mut self) -> Step<State> {
        let typ = self.family_type();
        let before = self.metrics.len();
        self.metric_idx = match typ {
            MetricType::Summary | MetricType::Histogram => self.place_folded_metric(),
            _ => self.push_metric(),
        };
        if self.metrics.len() > before {
            self.add_series(match typ {
                MetricType::Summary => 2,
                MetricType::Histogram => 3,
                _ => 1,
            })?;
        }
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
                    self.add_series(1)?;
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

    pub(super) fn start_timestamp(&mut self) -> Step<State> {
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
}
