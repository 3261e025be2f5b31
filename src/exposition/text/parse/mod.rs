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
//!
//! The files: `parser` holds the state machine's data and its loop, one file per kind of line
//! drives it (`samples`, `labels`, `comments` for HELP and TYPE), `families` places each line's
//! sample in its family and folds the lines of a summary or histogram into one metric, `reader`
//! reads bytes and tokens, `model` is the borrowed result and its conversion to protobuf
//! families, `error` the error type and messages.

mod comments;
mod error;
mod families;
mod labels;
mod model;
mod parser;
mod reader;
mod samples;
#[cfg(test)]
mod tests;

use crate::exposition::names::NameScheme;
#[cfg(any(test, feature = "testsuite"))]
use crate::exposition::proto::MetricFamily;

pub use error::TextParseError;
pub use model::{ParsedMetric, ParsedText, Point};
use parser::Parser;

#[cfg(any(test, feature = "testsuite"))]
/// Parses a whole text-format body into its families, in order of first appearance. Families
/// that only had HELP or TYPE lines are dropped, like expfmt's `TextToMetricFamilies`.
pub fn parse_text(input: &[u8], scheme: NameScheme) -> Result<Vec<MetricFamily>, TextParseError> {
    Ok(parse_text_borrowed(input, scheme)?.to_families())
}

/// [`parse_text`] without building the protobuf model: names, label values and help texts
/// borrow from `input` unless they had escapes, and a body's metrics, labels and samples sit in
/// a few flat vectors instead of a tree of strings and vectors per metric. The push path
/// validates and encodes straight from it (`store::prepare_text`), through
/// [`parse_text_bounded`]; tests and benches parse whole bodies with this.
#[cfg(any(test, feature = "testsuite"))]
pub fn parse_text_borrowed(
    input: &[u8],
    scheme: NameScheme,
) -> Result<ParsedText<'_>, TextParseError> {
    let mut parser = Parser::new(input, scheme);
    parser.run()?;
    Ok(parser.finish())
}

/// Why [`parse_text_bounded`] refused a body.
#[derive(Debug, Clone, PartialEq)]
pub enum BoundedParseError {
    Syntax(TextParseError),
    /// The body has more than this many series; parsing stopped there.
    TooManySeries(usize),
}

/// A borrowed parse (`parse_text_borrowed`) that stops as soon as the body has more than
/// `max_series` series, counted as the store counts them: a huge body costs the memory of
/// `max_series` series, not of all it holds.
pub fn parse_text_bounded(
    input: &[u8],
    scheme: NameScheme,
    max_series: usize,
) -> Result<ParsedText<'_>, BoundedParseError> {
    let mut parser = Parser::new(input, scheme);
    parser.max_series = max_series;
    match parser.run() {
        Ok(()) => Ok(parser.finish()),
        Err(_) if parser.over_limit => Err(BoundedParseError::TooManySeries(max_series)),
        Err(e) => Err(BoundedParseError::Syntax(e)),
    }
}
