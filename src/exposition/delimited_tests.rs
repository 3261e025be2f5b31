//! Tests of `delimited.rs`.

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
        // Whatever decodes, encoded again, decodes to the same families: the decoder keeps
        // nothing the encoder cannot write (arbitrary bytes rarely decode to a non-empty family,
        // so most cases check the refusal path; `encode_decode_round_trip` covers valid input).
        if let Ok(families) = decode_delimited(&bytes) {
            let mut out = Vec::new();
            for mf in &families {
                encode_delimited(&mut out, mf);
            }
            let again = decode_delimited(&out).expect("what was decoded encodes validly");
            prop_assert_eq!(format!("{again:?}"), format!("{families:?}"));
        }
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
