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
mod tests {
    use super::*;
    use crate::exposition::proto::Gauge;
    use crate::exposition::{Metric, MetricType};
    use proptest::prelude::*;

    fn family(name: &str, v: f64) -> MetricFamily {
        MetricFamily {
            name: Some(name.into()),
            help: Some("h".into()),
            r#type: Some(MetricType::Gauge as i32),
            metric: vec![Metric {
                gauge: Some(Gauge { value: Some(v) }),
                ..Default::default()
            }],
        }
    }

    #[test]
    fn empty_input_is_no_families() {
        assert_eq!(decode_delimited(b"").unwrap(), vec![]);
    }

    #[test]
    fn round_trip_and_last_duplicate_wins() {
        let mut out = Vec::new();
        for mf in [family("a", 1.0), family("b", 2.0), family("a", 3.0)] {
            encode_delimited(&mut out, &mf);
        }
        let got = decode_delimited(&out).unwrap();
        assert_eq!(got, vec![family("a", 3.0), family("b", 2.0)]);
    }

    #[test]
    fn errors() {
        let e = decode_delimited(&[0x80]).unwrap_err();
        assert_eq!(
            e.to_string(),
            "invalid length prefix of message 0 at byte 0"
        );
        let mut out = Vec::new();
        encode_delimited(&mut out, &family("a", 1.0));
        let full = out.len();
        out.extend_from_slice(&[5, 1, 2]);
        let e = decode_delimited(&out).unwrap_err();
        assert_eq!(
            e.to_string(),
            format!("message 1 at byte {full} is 5 bytes long but only 2 remain")
        );
        // Field 1 (name) as a length-delimited string with invalid UTF-8.
        let e = decode_delimited(&[3, 0x0a, 1, 0xff]).unwrap_err();
        assert!(
            e.to_string()
                .starts_with("invalid metric family in message 0 at byte 0: "),
            "{e}"
        );
        // An empty message is a family with no fields, which is the caller's to reject.
        assert_eq!(
            decode_delimited(&[0]).unwrap(),
            vec![MetricFamily::default()]
        );
    }

    proptest! {
        #[test]
        fn decode_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
            let _ = decode_delimited(&bytes);
        }

        #[test]
        fn encode_decode_round_trip(names in proptest::collection::btree_set("[a-z_]{1,8}", 0..5), v in -1e9..1e9f64) {
            let families: Vec<_> = names.iter().map(|n| family(n, v)).collect();
            let mut out = Vec::new();
            for mf in &families {
                encode_delimited(&mut out, mf);
            }
            prop_assert_eq!(decode_delimited(&out).unwrap(), families);
        }
    }
}
