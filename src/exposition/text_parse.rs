//! Text format 0.0.4 parser (behaviour of prometheus/common expfmt's TextParser).

use super::names::NameScheme;
use super::MetricFamily;

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("text format parsing error in line {line}: {msg}")]
pub struct TextParseError {
    pub line: usize,
    pub msg: String,
}

pub fn parse_text(input: &[u8], scheme: NameScheme) -> Result<Vec<MetricFamily>, TextParseError> {
    todo!("{input:?} {scheme:?}")
}
