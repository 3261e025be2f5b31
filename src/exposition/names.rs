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

pub fn is_valid_metric_name(name: &str, scheme: NameScheme) -> bool {
    todo!("{name} {scheme:?}")
}

pub fn is_valid_label_name(name: &str, scheme: NameScheme) -> bool {
    todo!("{name} {scheme:?}")
}
