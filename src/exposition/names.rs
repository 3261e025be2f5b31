//! Metric and label name rules (legacy Prometheus charset, or any UTF-8 with `--push.enable-utf8-names`).

/// Which names are acceptable.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum NameScheme {
    /// `[a-zA-Z_:][a-zA-Z0-9_:]*` for metrics, `[a-zA-Z_][a-zA-Z0-9_]*` for labels.
    #[default]
    Legacy,
    /// Any non-empty UTF-8 string.
    Utf8,
}

/// Character classes of legacy names, one lookup per byte (names are checked on every line
/// parsed and every line encoded).
const LABEL_START: u8 = 1;
const LABEL_CONT: u8 = 2;
const METRIC_START: u8 = 4;
const METRIC_CONT: u8 = 8;

static CLASSES: [u8; 256] = {
    let mut t = [0u8; 256];
    let mut b = 0usize;
    while b < 256 {
        let c = b as u8;
        let alpha = c.is_ascii_alphabetic() || c == b'_';
        let digit = c.is_ascii_digit();
        let colon = c == b':';
        if alpha {
            t[b] |= LABEL_START | LABEL_CONT | METRIC_START | METRIC_CONT;
        }
        if digit {
            t[b] |= LABEL_CONT | METRIC_CONT;
        }
        if colon {
            t[b] |= METRIC_START | METRIC_CONT;
        }
        b += 1;
    }
    t
};

/// Whether `b` may start a legacy label name (`[a-zA-Z_]`).
#[inline]
pub(crate) fn is_label_name_start(b: u8) -> bool {
    CLASSES[usize::from(b)] & LABEL_START != 0
}

/// Whether `b` may continue a legacy label name (`[a-zA-Z0-9_]`).
#[inline]
pub(crate) fn is_label_name_continuation(b: u8) -> bool {
    CLASSES[usize::from(b)] & LABEL_CONT != 0
}

/// Whether `b` may start a legacy metric name (`[a-zA-Z_:]`).
#[inline]
pub(crate) fn is_metric_name_start(b: u8) -> bool {
    CLASSES[usize::from(b)] & METRIC_START != 0
}

/// Whether `b` may continue a legacy metric name (`[a-zA-Z0-9_:]`).
#[inline]
pub(crate) fn is_metric_name_continuation(b: u8) -> bool {
    CLASSES[usize::from(b)] & METRIC_CONT != 0
}

/// Bytes of `b` from its start that may continue a legacy metric name (`metric`) or label
/// name: the parser's and the validators' name scan. Eight bytes at a time (every name of a
/// push is scanned when parsed, validated and encoded), the rest one by one.
pub(crate) fn name_run(b: &[u8], metric: bool) -> usize {
    const ONES: u64 = u64::from_le_bytes([1; 8]);
    const HIGH: u64 = ONES * 0x80;
    let mut i = 0;
    while let Some(chunk) = b.get(i..).and_then(|rest| rest.first_chunk::<8>()) {
        let x = u64::from_le_bytes(*chunk);
        let letters = between(x | (ONES * 0x20), b'a' - 1, b'z' + 1);
        let digits = if metric {
            between(x, b'0' - 1, b':' + 1)
        } else {
            between(x, b'0' - 1, b'9' + 1)
        };
        let underscore = between(x, b'_' - 1, b'_' + 1);
        let other = !(letters | digits | underscore) & HIGH;
        if other != 0 {
            return i + (other.trailing_zeros() / 8) as usize;
        }
        i += 8;
    }
    let keep = if metric {
        is_metric_name_continuation
    } else {
        is_label_name_continuation
    };
    let tail = &b[i.min(b.len())..];
    i + tail.iter().position(|&c| !keep(c)).unwrap_or(tail.len())
}

/// The high bit of each byte of `x` set where `lo < byte < hi` (bytes of 0x80 and above never
/// are); each byte is computed on its own, without carries between them.
#[inline]
fn between(x: u64, lo: u8, hi: u8) -> u64 {
    const ONES: u64 = u64::from_le_bytes([1; 8]);
    const LOW7: u64 = ONES * 0x7F;
    let low = x & LOW7;
    let below_hi = (ONES * (127 + u64::from(hi))).wrapping_sub(low);
    let above_lo = low + ONES * (127 - u64::from(lo));
    below_hi & !x & above_lo & (ONES * 0x80)
}

/// Whether `name` matches the legacy metric name charset, whatever the scheme.
pub fn is_legacy_metric_name(name: &str) -> bool {
    match name.as_bytes().split_first() {
        Some((&first, rest)) => is_metric_name_start(first) && name_run(rest, true) == rest.len(),
        None => false,
    }
}

/// Whether `name` matches the legacy label name charset, whatever the scheme.
pub fn is_legacy_label_name(name: &str) -> bool {
    match name.as_bytes().split_first() {
        Some((&first, rest)) => is_label_name_start(first) && name_run(rest, false) == rest.len(),
        None => false,
    }
}

pub fn is_valid_metric_name(name: &str, scheme: NameScheme) -> bool {
    match scheme {
        NameScheme::Legacy => is_legacy_metric_name(name),
        NameScheme::Utf8 => !name.is_empty(),
    }
}

pub fn is_valid_label_name(name: &str, scheme: NameScheme) -> bool {
    match scheme {
        NameScheme::Legacy => is_legacy_label_name(name),
        NameScheme::Utf8 => !name.is_empty(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn byte_classes_match_the_charsets() {
        for b in 0..=255u8 {
            let alpha = b.is_ascii_alphabetic() || b == b'_';
            let alnum = alpha || b.is_ascii_digit();
            assert_eq!(is_label_name_start(b), alpha, "{b}");
            assert_eq!(is_label_name_continuation(b), alnum, "{b}");
            assert_eq!(is_metric_name_start(b), alpha || b == b':', "{b}");
            assert_eq!(is_metric_name_continuation(b), alnum || b == b':', "{b}");
        }
    }

    proptest::proptest! {
        #[test]
        fn name_runs_agree_with_the_byte_classes(
            b in proptest::collection::vec(
                proptest::prop_oneof![
                    proptest::sample::select(b"aZ_:09/@[`{^.- \"\\\n\x7f\x80\xdf\xff".to_vec()),
                    proptest::prelude::any::<u8>(),
                ],
                0..40,
            )
        ) {
            let metric = b.iter().position(|&c| !is_metric_name_continuation(c)).unwrap_or(b.len());
            let label = b.iter().position(|&c| !is_label_name_continuation(c)).unwrap_or(b.len());
            proptest::prop_assert_eq!(name_run(&b, true), metric);
            proptest::prop_assert_eq!(name_run(&b, false), label);
        }
    }

    #[test]
    fn name_runs_of_every_byte_at_every_position() {
        for b in 0..=255u8 {
            for at in 0..20 {
                let mut s = vec![b'a'; 20];
                s[at] = b;
                let want = |cont: fn(u8) -> bool| if cont(b) { 20 } else { at };
                assert_eq!(
                    name_run(&s, true),
                    want(is_metric_name_continuation),
                    "{b} at {at}"
                );
                assert_eq!(
                    name_run(&s, false),
                    want(is_label_name_continuation),
                    "{b} at {at}"
                );
            }
        }
    }

    #[test]
    fn legacy_metric_names() {
        for ok in ["a", "_", ":", "a:b_c9", "ABC", "__name__", ":0"] {
            assert!(is_valid_metric_name(ok, NameScheme::Legacy), "{ok}");
        }
        for bad in ["", "0a", "a-b", "a.b", "é", "a b", "a\n"] {
            assert!(!is_valid_metric_name(bad, NameScheme::Legacy), "{bad}");
        }
    }

    #[test]
    fn legacy_label_names() {
        for ok in ["a", "_", "a_b9", "ABC", "__name__"] {
            assert!(is_valid_label_name(ok, NameScheme::Legacy), "{ok}");
        }
        for bad in ["", "0a", "a:b", ":", "a.b", "é"] {
            assert!(!is_valid_label_name(bad, NameScheme::Legacy), "{bad}");
        }
    }

    #[test]
    fn utf8_names_only_need_to_be_non_empty() {
        for ok in ["a.b", "é", "0", " ", "a\nb"] {
            assert!(is_valid_metric_name(ok, NameScheme::Utf8), "{ok}");
            assert!(is_valid_label_name(ok, NameScheme::Utf8), "{ok}");
        }
        assert!(!is_valid_metric_name("", NameScheme::Utf8));
        assert!(!is_valid_label_name("", NameScheme::Utf8));
    }
}
