//! Quoting: the text format's escapes, which the encoder writes and the parser reads from one
//! table, and Go's `%q` quoting, which expfmt's error messages use.

/// The escape sequence that stands for `b` in the text format, if `b` needs one: backslash and
/// newline everywhere, the double quote only inside quotes (label values, quoted names; HELP
/// text keeps it as is). [`unescape`] is its inverse.
#[inline]
pub(super) fn escape(b: u8, quoted: bool) -> Option<&'static [u8]> {
    match b {
        b'\\' => Some(b"\\\\"),
        b'\n' => Some(b"\\n"),
        b'"' if quoted => Some(b"\\\""),
        _ => None,
    }
}

/// The byte that the escape sequence `\` + `letter` stands for; `None` for an invalid escape.
/// The inverse of [`escape`].
#[inline]
pub(super) fn unescape(letter: u8, quoted: bool) -> Option<u8> {
    match letter {
        b'\\' => Some(b'\\'),
        b'n' => Some(b'\n'),
        b'"' if quoted => Some(b'"'),
        _ => None,
    }
}

/// Writes `s` with [`escape`]'s sequences, `quote` inside quotes (label values, quoted names).
pub(super) fn write_escaped(out: &mut Vec<u8>, s: &str, quote: bool) {
    let bytes = s.as_bytes();
    // Most values need no escaping: one scan, one copy.
    if !bytes.iter().any(|&b| escape(b, quote).is_some()) {
        out.extend_from_slice(bytes);
        return;
    }
    let mut start = 0;
    for (i, &b) in bytes.iter().enumerate() {
        let Some(esc) = escape(b, quote) else {
            continue;
        };
        out.extend_from_slice(&bytes[start..i]);
        out.extend_from_slice(esc);
        start = i + 1;
    }
    out.extend_from_slice(&bytes[start..]);
}

/// Go's `strconv.Quote` (what `%q` does to a string), for error messages identical to expfmt's.
pub(super) fn go_quote(s: &[u8]) -> String {
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
pub(super) fn go_quote_byte(b: u8) -> String {
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

    #[test]
    fn unescape_reads_back_what_escape_writes() {
        for quoted in [false, true] {
            for b in 0..=255u8 {
                if let Some(seq) = escape(b, quoted) {
                    assert_eq!(seq.len(), 2, "{b}");
                    assert_eq!(seq[0], b'\\', "{b}");
                    assert_eq!(unescape(seq[1], quoted), Some(b), "{b}");
                }
                if let Some(u) = unescape(b, quoted) {
                    assert_eq!(escape(u, quoted), Some([b'\\', b].as_slice()), "{b}");
                }
            }
        }
        assert_eq!(escape(b'"', false), None);
        assert_eq!(unescape(b'"', false), None);
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
}
