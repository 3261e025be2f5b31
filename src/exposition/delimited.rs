//! Protobuf delimited streams of `MetricFamily` (varint length prefix, then the message).

use super::MetricFamily;

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum DelimitedError {
    #[error("{0}")]
    Invalid(String),
}

pub fn decode_delimited(input: &[u8]) -> Result<Vec<MetricFamily>, DelimitedError> {
    todo!("{input:?}")
}

pub fn encode_delimited(out: &mut Vec<u8>, mf: &MetricFamily) {
    todo!("{out:?} {mf:?}")
}
