//! The Prometheus exposition formats as pure functions on bytes: the text format 0.0.4 parser,
//! the text and protobuf-delimited encoders, and protobuf-delimited decoding.
//!
//! The data model is the vendored `io.prometheus.client` protobuf (see `proto/`), the same model
//! the upstream Pushgateway stores, so both body formats decode into one representation.

pub mod delimited;
pub mod names;
pub mod text_format;
pub mod text_parse;

/// The generated `io.prometheus.client` types (proto2: optional fields are `Option`s with getters).
#[allow(clippy::all, missing_docs)]
pub mod proto {
    include!(concat!(env!("OUT_DIR"), "/io.prometheus.client.rs"));
}

pub use delimited::{decode_delimited, encode_delimited, DelimitedError};
pub use names::NameScheme;
pub use proto::{LabelPair, Metric, MetricFamily, MetricType};
pub use text_format::{
    families_to_text, write_family, write_float, write_help_and_type, write_metric,
};
pub use text_parse::{parse_text, TextParseError};
