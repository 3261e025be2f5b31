//! Label pairs `{name="value",...}`: names, values with their escapes, and the `quantile` and
//! `le` labels that place a summary's or histogram's sample instead of labelling it.

use std::borrow::Cow;

use crate::exposition::proto::MetricType;
use crate::exposition::text::float::parse_float;
use crate::exposition::text::quote::{go_quote, go_quote_byte};
use crate::exposition::utf8;

use super::error::{invalid_label_value, unescaped_newline, Fail, Step};
use super::parser::{LabelRole, Parser, State};

impl<'a> Parser<'a> {
    pub(super) fn start_label_name(&mut self) -> Step<State> {
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

    pub(super) fn start_label_value(&mut self) -> Step<State> {
        self.skip_blank_tab()?;
        if self.cur != b'"' {
            return Err(Fail::Msg(format!(
                "expected '\"' at start of label value, found {}",
                go_quote_byte(self.cur)
            )));
        }
        let value = self.read_label_value()?;
        let bound = |label: &str| {
            parse_float(value.as_bytes()).ok_or_else(|| {
                Fail::Msg(format!(
                    "expected float as value for '{label}' label, got {}",
                    go_quote(value.as_bytes())
                ))
            })
        };
        match self.label_role {
            LabelRole::Quantile => self.quantile = bound("quantile")?,
            LabelRole::Bucket => self.bucket = bound("le")?,
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
                self.read_quoted_rest(true, "label value")?;
                Cow::Owned(self.scratch.clone())
            }
            b'\n' => {
                return Err(unescaped_newline(
                    "label value",
                    &input[start..self.pos - 1],
                ))
            }
            _ => Cow::Borrowed(&input[start..self.pos - 1]),
        };
        match bytes {
            Cow::Borrowed(b) => match utf8(b) {
                Some(s) => Ok(Cow::Borrowed(s)),
                None => Err(invalid_label_value(b)),
            },
            Cow::Owned(b) => match String::from_utf8(b) {
                Ok(s) => Ok(Cow::Owned(s)),
                Err(e) => Err(invalid_label_value(e.as_bytes())),
            },
        }
    }
}
