//! The Prometheus exposition formats as pure functions on bytes: the text format 0.0.4 parser,
//! the text and protobuf-delimited encoders, and protobuf-delimited decoding.
//!
//! `text/` is the text format (`parse/`, `encode`, and the Go-compatible `float` and `quote`
//! rules both use), `delimited` the protobuf-delimited stream, `metric_proto` the hand-written
//! protobuf encoding of one metric for the push path, `names` the metric and label name rules.
//!
//! The data model is the vendored `io.prometheus.client` protobuf (see `proto/`), the same model
//! the upstream Pushgateway stores, so both body formats decode into one representation.

pub mod delimited;
pub mod gob;
pub mod metric_proto;
pub mod names;
mod text;

/// The generated `io.prometheus.client` types (proto2: optional fields are `Option`s with getters).
#[allow(clippy::all, missing_docs)]
pub mod proto {
    include!(concat!(env!("OUT_DIR"), "/io.prometheus.client.rs"));
}

pub use delimited::{decode_delimited_bounded, DelimitedError};
#[cfg(any(test, feature = "testsuite"))]
pub use delimited::{decode_delimited, encode_delimited};
pub use metric_proto::{encode_metric_field_labelled, encode_parsed_labelled};
pub use names::{is_valid_label_name, is_valid_metric_name, NameScheme};
pub use proto::{LabelPair, Metric, MetricFamily, MetricType};
pub use text::canonical::{CanonicalLines, Labels};
#[cfg(any(test, feature = "testsuite"))]
pub use text::encode::families_to_text;
pub use text::encode::{write_help_and_type, write_metric_labelled, write_parsed_labelled};
pub use text::float::write_float;
#[cfg(any(test, feature = "testsuite"))]
pub use text::parse::{parse_text, parse_text_borrowed};
pub use text::parse::{
    parse_text_bounded, BoundedParseError, ParsedMetric,
    ParsedText, Point,
};

impl Metric {
    /// The metric's label pairs as (name, value), in stored order (an unset name or value is
    /// the empty string, as the getters give it).
    pub fn label_pairs(&self) -> impl Iterator<Item = (&str, &str)> + Clone {
        self.label.iter().map(|lp| (lp.name(), lp.value()))
    }
}

/// `std::str::from_utf8` with a fast path for ASCII, which names and most label values and help
/// texts are: the general validation has a fixed cost per call that outweighs the check itself
/// on a short name, and the parser converts several per line.
#[allow(unsafe_code)]
pub(crate) fn utf8(b: &[u8]) -> Option<&str> {
    if b.is_ascii() {
        // SAFETY: `b` is ASCII, and every ASCII byte sequence is valid UTF-8.
        Some(unsafe { std::str::from_utf8_unchecked(b) })
    } else {
        std::str::from_utf8(b).ok()
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn utf8_agrees_with_the_standard_validation() {
        let cases: &[&[u8]] = &[
            b"",
            b"http_requests_total",
            "gr\u{fc}n \u{1f600}".as_bytes(),
            b"\xff",
            b"abc\xc3",
            b"\xc3\xa9",
            b"\x00\x7f",
        ];
        for &b in cases {
            assert_eq!(super::utf8(b), std::str::from_utf8(b).ok(), "{b:?}");
        }
    }
}
