//! The parser's error (line number and expfmt's message) and the failures its states return.

use crate::exposition::text::quote::go_quote;

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("text format parsing error in line {line}: {msg}")]
pub struct TextParseError {
    pub line: usize,
    pub msg: String,
}

/// Why a state could not complete.
pub(super) enum Fail {
    /// The input ended in the middle of a line.
    Eof,
    Msg(String),
    /// The series counted so far passed the caller's limit: parsing stops there.
    TooManySeries,
}

pub(super) type Step<T> = Result<T, Fail>;

pub(super) fn invalid_escape(b: u8) -> Fail {
    Fail::Msg(format!("invalid escape sequence '\\{}'", char::from(b)))
}

/// A newline inside a quoted string (`what`: a label value or a quoted name), after `so_far`.
pub(super) fn unescaped_newline(what: &str, so_far: &[u8]) -> Fail {
    Fail::Msg(format!(
        "{what} {} contains unescaped new-line",
        go_quote(so_far)
    ))
}

pub(super) fn invalid_label_value(b: &[u8]) -> Fail {
    Fail::Msg(format!("invalid label value {}", go_quote(b)))
}
