//! Reading the input: bytes, blanks, tokens and names, with the scans that take a run of
//! bytes at once (`memchr`, the name charset eight bytes at a time) and the shortcut for a
//! name that repeats the one before.

use std::borrow::Cow;

use crate::exposition::names::{
    is_label_name_start, is_metric_name_continuation, is_metric_name_start, name_run, NameScheme,
};
use crate::exposition::text::quote::{go_quote, unescape};
use crate::exposition::utf8;

use super::error::{invalid_escape, unescaped_newline, Fail, Step};
use super::parser::Parser;

impl<'a> Parser<'a> {
    #[inline]
    pub(super) fn read(&mut self) -> Step<u8> {
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
    pub(super) fn read_until(&mut self, find: impl Fn(&[u8]) -> Option<usize>) -> Step<()> {
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
    pub(super) fn skip_blank_tab(&mut self) -> Step<()> {
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
    pub(super) fn skip_blank_tab_if_current_blank_tab(&mut self) -> Step<()> {
        if is_blank_or_tab(self.cur) {
            self.skip_blank_tab()?;
        }
        Ok(())
    }

    /// The token from `cur` up to the next blank, tab or newline (left in `cur`).
    pub(super) fn read_token_until_whitespace(&mut self) -> Step<(usize, usize)> {
        let start = self.pos.saturating_sub(1);
        if !is_blank_or_tab(self.cur) && self.cur != b'\n' {
            self.read_while(|b| !is_blank_or_tab(b) && b != b'\n')?;
        }
        Ok((start, self.pos.saturating_sub(1)))
    }

    /// The token from `cur` up to the newline (left in `cur`), without escapes.
    pub(super) fn read_token_until_newline_raw(&mut self) -> Step<(usize, usize)> {
        let start = self.pos.saturating_sub(1);
        self.skip_to_newline()?;
        Ok((start, self.pos.saturating_sub(1)))
    }

    /// Reads bytes until the newline (left in `cur`); nothing when `cur` is the newline.
    #[inline]
    pub(super) fn skip_to_newline(&mut self) -> Step<()> {
        if self.cur != b'\n' {
            self.read_until(|rest| memchr::memchr(b'\n', rest))?;
        }
        Ok(())
    }

    /// A metric name starting at `cur`: legacy charset, or (UTF-8 scheme) a quoted string. The
    /// first byte after it is left in `cur`. Empty when `cur` cannot start a name.
    pub(super) fn read_token_as_metric_name(&mut self) -> Step<Cow<'a, str>> {
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
    pub(super) fn read_token_as_label_name(&mut self) -> Step<Cow<'a, str>> {
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
    pub(super) fn read_quoted_name(&mut self, what: &str) -> Step<String> {
        self.scratch.clear();
        self.read_quoted_rest(false, what)?;
        self.read()?;
        String::from_utf8(self.scratch.clone())
            .map_err(|e| Fail::Msg(format!("invalid {what} {}", go_quote(e.as_bytes()))))
    }

    /// The rest of a quoted string (`what`: a label value or a quoted name) up to its closing
    /// quote (left in `cur`), unescaped and appended to `scratch`; `escaped` when `cur` is a
    /// backslash that starts an escape.
    pub(super) fn read_quoted_rest(&mut self, mut escaped: bool, what: &str) -> Step<()> {
        loop {
            let b = self.read()?;
            if escaped {
                match unescape(b, true) {
                    Some(u) => self.scratch.push(u),
                    None => return Err(invalid_escape(b)),
                }
                escaped = false;
                continue;
            }
            match b {
                b'"' => return Ok(()),
                b'\n' => return Err(unescaped_newline(what, &self.scratch)),
                b'\\' => escaped = true,
                _ => self.scratch.push(b),
            }
        }
    }
}

#[inline]
pub(super) fn is_blank_or_tab(b: u8) -> bool {
    b == b' ' || b == b'\t'
}

/// A name the byte-class scans accepted (ASCII only).
fn ascii_str(b: &[u8]) -> &str {
    utf8(b).unwrap_or_default()
}
