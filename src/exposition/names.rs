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

/// Whether `b` may start a legacy label name (`[a-zA-Z_]`).
#[inline]
pub(crate) fn is_label_name_start(b: u8) -> bool {
    b.is_ascii_alphabetic() || b == b'_'
}

/// Whether `b` may continue a legacy label name (`[a-zA-Z0-9_]`).
#[inline]
pub(crate) fn is_label_name_continuation(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_'
}

/// Whether `b` may start a legacy metric name (`[a-zA-Z_:]`).
#[inline]
pub(crate) fn is_metric_name_start(b: u8) -> bool {
    is_label_name_start(b) || b == b':'
}

/// Whether `b` may continue a legacy metric name (`[a-zA-Z0-9_:]`).
#[inline]
pub(crate) fn is_metric_name_continuation(b: u8) -> bool {
    is_label_name_continuation(b) || b == b':'
}

/// Whether `name` matches the legacy metric name charset, whatever the scheme.
pub fn is_legacy_metric_name(name: &str) -> bool {
    match name.as_bytes().split_first() {
        Some((&first, rest)) => {
            is_metric_name_start(first) && rest.iter().all(|&b| is_metric_name_continuation(b))
        }
        None => false,
    }
}

/// Whether `name` matches the legacy label name charset, whatever the scheme.
pub fn is_legacy_label_name(name: &str) -> bool {
    match name.as_bytes().split_first() {
        Some((&first, rest)) => {
            is_label_name_start(first) && rest.iter().all(|&b| is_label_name_continuation(b))
        }
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
