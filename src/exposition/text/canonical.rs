//! Reading back the sample lines the encoder writes (`SampleWriter`), and nothing else: the
//! check of a family a peer sends in the store's own form. A general parse would accept
//! every way of writing a line (spaces, comments, any label order, lines of a metric apart);
//! a stored family's lines come from the encoder, so they are checked against its one form
//! instead, in one pass without building a model: the metric name (quoted inside the braces
//! when it is not a legacy name), the labels as the first line of the metric writes them and
//! every later line copies, the `quantile` or `le` label last, the value, and a timestamp
//! only where one was written.

use std::borrow::Cow;

use super::float::parse_float;
use super::quote::{unescape, write_escaped};
use crate::exposition::names::{is_label_name_continuation, is_legacy_label_name, is_legacy_metric_name};
use crate::exposition::MetricType;

/// The lines one family's metrics must have (its name and type).
pub struct CanonicalLines<'n> {
    typ: MetricType,
    quoted: bool,
    /// What every line starts with before the suffix: the name (borrowed: no allocation per
    /// family checked), or `{"` and the escaped name.
    prefix: Cow<'n, [u8]>,
}

/// A metric's label pairs, unescaped, as written (the `quantile` or `le` label left out). Inline
/// up to 8 pairs: a check reads one family after another, and a heap buffer per family was an
/// allocation and a free per family received (the free returning a page at once, with the
/// allocator's purge delay of 0; docs/benchmarks.md).
pub type Labels<'t> = smallvec::SmallVec<[(Cow<'t, str>, Cow<'t, str>); 8]>;

/// What one metric's lines held, as [`CanonicalLines::read_metric`] read them.
pub struct MetricLines<'t> {
    /// The labels' bytes as every line of the metric carries them: equal for two metrics
    /// exactly when their label sets are.
    pub label_bytes: &'t [u8],
    pub timestamp: bool,
}

struct Cur<'t> {
    b: &'t [u8],
    i: usize,
}

impl<'t> Cur<'t> {
    fn peek(&self) -> Option<u8> {
        self.b.get(self.i).copied()
    }
    fn eat(&mut self, s: &[u8]) -> bool {
        let ok = self.b[self.i..].starts_with(s);
        if ok {
            self.i += s.len();
        }
        ok
    }
    fn expect(&mut self, s: &[u8], what: &str) -> Result<(), String> {
        if self.eat(s) {
            Ok(())
        } else {
            Err(format!("expected {what}"))
        }
    }
    /// Up to (not including) the first byte that `stop` accepts, or the end.
    fn token(&mut self, stop: impl Fn(u8) -> bool) -> &'t [u8] {
        let start = self.i;
        while self.i < self.b.len() && !stop(self.b[self.i]) {
            self.i += 1;
        }
        &self.b[start..self.i]
    }
    /// A quoted string's body up to its closing quote (consumed), unescaped.
    fn quoted(&mut self) -> Result<Cow<'t, str>, String> {
        let start = self.i;
        let mut owned: Option<Vec<u8>> = None;
        let mut run = start;
        loop {
            match self.peek() {
                None | Some(b'\n') => return Err("unterminated quoted string".into()),
                Some(b'"') => break,
                Some(b'\\') => {
                    let letter = self.b.get(self.i + 1).copied().unwrap_or(0);
                    let byte = unescape(letter, true).ok_or("invalid escape sequence")?;
                    let buf = owned.get_or_insert_with(Vec::new);
                    buf.extend_from_slice(&self.b[run..self.i]);
                    buf.push(byte);
                    self.i += 2;
                    run = self.i;
                }
                Some(_) => self.i += 1,
            }
        }
        let s = match owned {
            None => Cow::Borrowed(utf8(&self.b[start..self.i])?),
            Some(mut buf) => {
                buf.extend_from_slice(&self.b[run..self.i]);
                Cow::Owned(String::from_utf8(buf).map_err(|_| "non-UTF-8 label")?)
            }
        };
        self.i += 1;
        Ok(s)
    }
}

fn utf8(b: &[u8]) -> Result<&str, String> {
    std::str::from_utf8(b).map_err(|_| "non-UTF-8 label".to_string())
}

/// A float as the text format writes one (`write_float`'s forms are a subset of what the
/// parser reads).
fn float(c: &mut Cur<'_>, stop: impl Fn(u8) -> bool) -> Result<(), String> {
    let t = c.token(stop);
    parse_float(t).map(|_| ()).ok_or_else(|| "invalid float".into())
}

impl<'n> CanonicalLines<'n> {
    pub fn new(name: &'n str, typ: MetricType) -> Self {
        let quoted = !is_legacy_metric_name(name);
        let prefix = if quoted {
            let mut p = Vec::with_capacity(name.len() + 4);
            p.extend_from_slice(b"{\"");
            write_escaped(&mut p, name, true);
            Cow::Owned(p)
        } else {
            Cow::Borrowed(name.as_bytes())
        };
        CanonicalLines {
            typ,
            quoted,
            prefix,
        }
    }

    /// Reads `text` as exactly the lines the encoder writes for one metric of this family
    /// (see the module doc), its label pairs into `labels` (emptied first); an error names
    /// what is not.
    pub fn read_metric<'t>(
        &self,
        text: &'t [u8],
        labels: &mut Labels<'t>,
    ) -> Result<MetricLines<'t>, String> {
        labels.clear();
        let mut c = Cur { b: text, i: 0 };
        let mut first: Option<MetricLines<'t>> = None;
        match self.typ {
            MetricType::Counter | MetricType::Gauge | MetricType::Untyped => {
                self.line(&mut c, b"", None, &mut first, labels)?;
            }
            MetricType::Summary => {
                while !self.next_is_suffixed(&c) {
                    self.line(&mut c, b"", Some(b"quantile"), &mut first, labels)?;
                }
                self.line(&mut c, b"_sum", None, &mut first, labels)?;
                self.line(&mut c, b"_count", None, &mut first, labels)?;
            }
            MetricType::Histogram | MetricType::GaugeHistogram => {
                self.line(&mut c, b"_bucket", Some(b"le"), &mut first, labels)?;
                while self.next_is(&c, b"_bucket") {
                    self.line(&mut c, b"_bucket", Some(b"le"), &mut first, labels)?;
                }
                self.line(&mut c, b"_sum", None, &mut first, labels)?;
                self.line(&mut c, b"_count", None, &mut first, labels)?;
            }
        }
        if c.i != text.len() {
            return Err("more lines than one metric of the family has".into());
        }
        first.ok_or_else(|| "no sample line".into())
    }

    /// Whether the next line starts with the name and a suffix (`_sum` and the like).
    fn next_is_suffixed(&self, c: &Cur<'_>) -> bool {
        let rest = &c.b[c.i..];
        rest.starts_with(&self.prefix) && rest.get(self.prefix.len()) == Some(&b'_')
    }

    fn next_is(&self, c: &Cur<'_>, suffix: &[u8]) -> bool {
        let rest = &c.b[c.i..];
        rest.starts_with(&self.prefix) && rest[self.prefix.len()..].starts_with(suffix)
    }

    /// One line with `suffix` after the name and, last in the braces, the label `extra` with a
    /// float value. The first line of a metric (`first` empty) reads the labels; every later
    /// one must carry the same bytes.
    fn line<'t>(
        &self,
        c: &mut Cur<'t>,
        suffix: &[u8],
        extra: Option<&[u8]>,
        first: &mut Option<MetricLines<'t>>,
        labels: &mut Labels<'t>,
    ) -> Result<(), String> {
        if !(c.eat(&self.prefix) && c.eat(suffix)) {
            return Err("a line is not a sample line of this family".into());
        }
        if self.quoted {
            c.expect(b"\"", "the closing quote of the name")?;
        } else if !matches!(c.peek(), Some(b'{' | b' ')) {
            return Err("a line is not a sample line of this family".into());
        }
        let at = c.i;
        let label_bytes = match first {
            Some(m) => {
                if !c.eat(m.label_bytes) {
                    return Err("the lines of a metric carry different labels".into());
                }
                m.label_bytes
            }
            None => {
                let end = self.labels(c, extra.is_some(), labels)?;
                *first = Some(MetricLines {
                    label_bytes: &c.b[at..end],
                    timestamp: false,
                });
                c.i = end;
                &c.b[at..end]
            }
        };
        // A brace is open once a quoted name or a label was written.
        let open = self.quoted || !label_bytes.is_empty();
        if let Some(extra) = extra {
            c.expect(if open { b"," } else { b"{" }, "the bound label")?;
            c.expect(extra, "the bound label")?;
            c.expect(b"=\"", "the bound label's value")?;
            float(c, |b| b == b'"')?;
            c.expect(b"\"}", "the end of the labels")?;
        } else if open {
            c.expect(b"}", "the end of the labels")?;
        }
        c.expect(b" ", "a space before the value")?;
        float(c, |b| b == b' ' || b == b'\n')?;
        let timestamp = c.eat(b" ");
        if timestamp {
            let t = c.token(|b| b == b'\n');
            let digits = t.strip_prefix(b"-").unwrap_or(t);
            if digits.is_empty()
                || !digits.iter().all(u8::is_ascii_digit)
                || utf8(t).ok().and_then(|s| s.parse::<i64>().ok()).is_none()
            {
                return Err("invalid timestamp".into());
            }
        }
        c.expect(b"\n", "the end of the line")?;
        if let Some(m) = first {
            m.timestamp |= timestamp;
        }
        Ok(())
    }

    /// The label pairs after the name, up to (not including) the bound label when `bound` (the
    /// last pair then) or the closing brace, into `labels`; returns where their bytes end.
    /// A name is quoted exactly when it is not a legacy name, as the encoder writes it.
    fn labels<'t>(
        &self,
        c: &mut Cur<'t>,
        bound: bool,
        labels: &mut Labels<'t>,
    ) -> Result<usize, String> {
        let start = c.i;
        let mut ends = start; // where the last regular pair ends
        let mut open = self.quoted;
        loop {
            let sep_at = c.i;
            match c.peek() {
                Some(b'{') if !open => open = true,
                Some(b',') if open => {}
                _ => break,
            }
            // The bound label comes last: a pair that is the bound, followed by the closing
            // brace, ends the regular labels (left for the caller to read).
            let rest = &c.b[c.i + 1..];
            if bound && self.is_bound_pair(rest) {
                c.i = sep_at;
                return Ok(ends);
            }
            c.i += 1;
            let name = if c.peek() == Some(b'"') {
                c.i += 1;
                let n = c.quoted()?;
                if is_legacy_label_name(&n) {
                    return Err("a legacy label name is quoted".into());
                }
                n
            } else {
                let t = c.token(|b| !is_label_name_continuation(b));
                Cow::Borrowed(utf8(t)?)
            };
            c.expect(b"=\"", "a label value")?;
            let value = c.quoted()?;
            labels.push((name, value));
            ends = c.i;
        }
        c.i = ends;
        Ok(ends)
    }

    fn is_bound_pair(&self, rest: &[u8]) -> bool {
        let bound: &[u8] = match self.typ {
            MetricType::Summary => b"quantile=\"",
            _ => b"le=\"",
        };
        rest.starts_with(bound)
            && rest[bound.len()..]
                .iter()
                .position(|&b| b == b'"')
                .is_some_and(|q| rest.get(bound.len() + q + 1) == Some(&b'}'))
    }
}
