//! Protobuf delimited streams of `MetricFamily` (varint length prefix, then the message).

use std::collections::HashMap;

use prost::Message;

use super::MetricFamily;

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum DelimitedError {
    #[error("{0}")]
    Invalid(String),
}

/// Decodes a whole delimited stream. A family name seen twice keeps the position of its first
/// occurrence and the content of its last, as upstream stores families in a map by name.
pub fn decode_delimited(input: &[u8]) -> Result<Vec<MetricFamily>, DelimitedError> {
    let mut families: Vec<MetricFamily> = Vec::new();
    let mut by_name: HashMap<String, usize, foldhash::fast::RandomState> = HashMap::default();
    let mut rest = input;
    let mut index = 0usize;
    while !rest.is_empty() {
        let offset = input.len() - rest.len();
        let len = prost::encoding::decode_varint(&mut rest).map_err(|_| {
            DelimitedError::Invalid(format!(
                "invalid length prefix of message {index} at byte {offset}"
            ))
        })?;
        let len = usize::try_from(len)
            .ok()
            .filter(|&len| len <= rest.len())
            .ok_or_else(|| {
                DelimitedError::Invalid(format!(
                    "message {index} at byte {offset} is {len} bytes long but only {} remain",
                    rest.len()
                ))
            })?;
        let (msg, tail) = rest.split_at(len);
        rest = tail;
        let mf = MetricFamily::decode(msg).map_err(|e| {
            DelimitedError::Invalid(format!(
                "invalid metric family in message {index} at byte {offset}: {e}"
            ))
        })?;
        match by_name.get(mf.name()) {
            Some(&i) => families[i] = mf,
            None => {
                by_name.insert(mf.name().to_owned(), families.len());
                families.push(mf);
            }
        }
        index += 1;
    }
    Ok(families)
}

#[cfg(any(test, feature = "testsuite"))]
/// Appends one length-delimited message.
pub fn encode_delimited(out: &mut Vec<u8>, mf: &MetricFamily) {
    let len = mf.encoded_len();
    out.reserve(len + prost::length_delimiter_len(len));
    prost::encoding::encode_varint(len as u64, out);
    // Encoding into a Vec cannot run out of space.
    if mf.encode(out).is_err() {
        debug_assert!(false, "encoding into a Vec should never fail");
    }
}

#[cfg(test)]
#[path = "delimited_tests.rs"]
mod tests;
