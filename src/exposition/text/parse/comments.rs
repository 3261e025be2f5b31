//! Comment lines: `# HELP name text` and `# TYPE name type` set their family's help and type,
//! any other comment is skipped.

use std::borrow::Cow;

use crate::exposition::proto::MetricType;
use crate::exposition::text::quote::{go_quote, unescape};
use crate::exposition::utf8;

use super::error::{invalid_escape, Fail, Step};
use super::parser::{Parser, State};
use super::reader::is_blank_or_tab;

impl<'a> Parser<'a> {
    pub(super) fn start_comment(&mut self) -> Step<State> {
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

    pub(super) fn reading_help(&mut self) -> Step<State> {
        if self.families[self.fam].help.is_some() {
            return Err(Fail::Msg(format!(
                "second HELP line for metric name {}",
                go_quote(self.family_name().as_bytes())
            )));
        }
        // Upstream keeps invalid UTF-8 in HELP as is; a protobuf string cannot hold it.
        let help = match self.read_token_until_newline_escaped()? {
            Cow::Borrowed(text) => match utf8(text) {
                Some(text) => Cow::Borrowed(text),
                None => String::from_utf8_lossy(text),
            },
            Cow::Owned(text) => Cow::Owned(String::from_utf8_lossy(&text).into_owned()),
        };
        self.families[self.fam].help = Some(help);
        Ok(State::StartOfLine)
    }

    pub(super) fn reading_type(&mut self) -> Step<State> {
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
                    let b = self.read()?;
                    match unescape(b, false) {
                        Some(u) => self.scratch.push(u),
                        None => return Err(invalid_escape(b)),
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
