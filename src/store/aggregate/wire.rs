//! An aggregating group's state written straight into its protobuf form
//! (`pushgate.snapshot.AggregateState`), for the copies a node sends its peers with every
//! aggregating push and for the file: the bytes prost writes for that message (a property test
//! holds them equal to prost's for any state), without building the message's strings and
//! vectors first. Decoding stays with prost and [`super::codec::state_from_pb`], which check
//! what a peer or a file holds.
//!
//! Fields follow prost's rules for the message: a proto3 scalar or string only when it is not
//! its default, a message field whenever the state has it (a stamp is always sent, even zero),
//! a proto2 `optional` field of `LabelPair` or `Quantile` always, repeated doubles packed.

use prost::encoding::{encode_key, encode_varint, encoded_len_varint, key_len, WireType};

use super::state::{AggState, Family, Labels, Partial, PartialId, Seen, Series, Stamp, Value};

/// Writes `state` as field `tag` of the message being written into `buf`.
pub fn put_state_field(tag: u32, state: &AggState, buf: &mut Vec<u8>) {
    // Each family's and series' length is needed twice (in its parent's length, then before its
    // own fields): worked out once here.
    let mut series_lens = Vec::with_capacity(state.families.iter().map(|(_, f)| f.series.len()).sum());
    let mut family_lens = Vec::with_capacity(state.families.len());
    for (name, f) in &state.families {
        let first = series_lens.len();
        series_lens.extend(f.series.iter().map(|(labels, s)| series_len(labels, s)));
        family_lens.push(family_len(name, f, &series_lens[first..]));
    }
    let len = msg_len(1, stamp_len(state.reset))
        + family_lens.iter().map(|&l| msg_len(2, l)).sum::<usize>()
        + state.seen.iter().map(|(k, s)| msg_len(3, seen_len(k, s))).sum::<usize>();
    buf.reserve(key_len(tag) + encoded_len_varint(len as u64) + len);
    put_header(tag, len, buf);
    put_stamp(1, state.reset, buf);
    let mut lens = series_lens.iter();
    for ((name, f), &flen) in state.families.iter().zip(&family_lens) {
        put_header(2, flen, buf);
        put_str(1, name, buf);
        let typ = f.typ.1 as i32;
        if typ != 0 {
            encode_key(2, WireType::Varint, buf);
            encode_varint(i64::from(typ) as u64, buf);
        }
        put_stamp(3, f.typ.0, buf);
        put_str(4, &f.help.1, buf);
        put_stamp(5, f.help.0, buf);
        put_stamp(6, f.reset, buf);
        for ((labels, s), &slen) in f.series.iter().zip(lens.by_ref()) {
            put_header(7, slen, buf);
            put_series(labels, s, buf);
        }
    }
    for (k, s) in &state.seen {
        put_header(3, seen_len(k, s), buf);
        put_str(1, k, buf);
        put_uint(2, s.until, buf);
        put_uint(3, s.at, buf);
        if !s.live {
            encode_key(4, WireType::Varint, buf);
            buf.push(1);
        }
    }
}

fn family_len(name: &str, f: &Family, series_lens: &[usize]) -> usize {
    let typ = f.typ.1 as i32;
    str_len(1, name)
        + if typ != 0 {
            key_len(2) + encoded_len_varint(i64::from(typ) as u64)
        } else {
            0
        }
        + msg_len(3, stamp_len(f.typ.0))
        + str_len(4, &f.help.1)
        + msg_len(5, stamp_len(f.help.0))
        + msg_len(6, stamp_len(f.reset))
        + series_lens.iter().map(|&l| msg_len(7, l)).sum::<usize>()
}

fn series_len(labels: &Labels, s: &Series) -> usize {
    let mut len: usize = labels.iter().map(|(n, v)| msg_len(1, pair_len(n, v))).sum();
    if let Some((st, v)) = &s.base {
        len += msg_len(2, stamp_len(*st)) + msg_len(3, value_len(v));
    }
    len += s
        .partials
        .iter()
        .map(|(id, p)| msg_len(4, partial_len(id, p)))
        .sum::<usize>();
    if let Some((st, q)) = s.quantiles.as_deref() {
        len += msg_len(5, stamp_len(*st)) + q.len() * msg_len(6, QUANTILE_LEN);
    }
    len
}

/// Writes a `LabelPair` (both of its fields set) as field `tag`.
pub fn put_label_pair(tag: u32, name: &str, value: &str, buf: &mut Vec<u8>) {
    put_header(tag, pair_len(name, value), buf);
    put_opt_str(1, name, buf);
    put_opt_str(2, value, buf);
}

fn put_series(labels: &Labels, s: &Series, buf: &mut Vec<u8>) {
    for (n, v) in labels {
        put_label_pair(1, n, v, buf);
    }
    if let Some((st, v)) = &s.base {
        put_stamp(2, *st, buf);
        put_value(3, v, buf);
    }
    for (id, p) in &s.partials {
        put_header(4, partial_len(id, p), buf);
        put_uint(1, id.node, buf);
        put_uint(2, id.incarnation, buf);
        put_stamp(3, p.epoch, buf);
        put_uint(4, p.seq, buf);
        put_value(5, &p.value, buf);
    }
    if let Some((st, q)) = s.quantiles.as_deref() {
        put_stamp(5, *st, buf);
        for &(q, v) in q {
            put_header(6, QUANTILE_LEN, buf);
            put_double(1, q, buf);
            put_double(2, v, buf);
        }
    }
}

/// A `Quantile`: both of its proto2 doubles, each a one-byte key and eight bytes.
const QUANTILE_LEN: usize = 18;

fn partial_len(id: &PartialId, p: &Partial) -> usize {
    uint_len(1, id.node)
        + uint_len(2, id.incarnation)
        + msg_len(3, stamp_len(p.epoch))
        + uint_len(4, p.seq)
        + msg_len(5, value_len(&p.value))
}

fn seen_len(k: &str, s: &Seen) -> usize {
    str_len(1, k) + uint_len(2, s.until) + uint_len(3, s.at) + if s.live { 0 } else { 2 }
}

fn pair_len(n: &str, v: &str) -> usize {
    opt_str_len(1, n) + opt_str_len(2, v)
}

fn value_len(v: &Value) -> usize {
    packed_len(1, &v.bounds) + packed_len(2, &v.sums)
}

fn put_value(tag: u32, v: &Value, buf: &mut Vec<u8>) {
    put_header(tag, value_len(v), buf);
    put_packed(1, &v.bounds, buf);
    put_packed(2, &v.sums, buf);
}

fn stamp_len(s: Stamp) -> usize {
    uint_len(1, s.version) + uint_len(2, s.origin)
}

fn put_stamp(tag: u32, s: Stamp, buf: &mut Vec<u8>) {
    put_header(tag, stamp_len(s), buf);
    put_uint(1, s.version, buf);
    put_uint(2, s.origin, buf);
}

fn msg_len(tag: u32, len: usize) -> usize {
    key_len(tag) + encoded_len_varint(len as u64) + len
}

fn put_header(tag: u32, len: usize, buf: &mut Vec<u8>) {
    encode_key(tag, WireType::LengthDelimited, buf);
    encode_varint(len as u64, buf);
}

fn uint_len(tag: u32, v: u64) -> usize {
    if v == 0 {
        0
    } else {
        key_len(tag) + encoded_len_varint(v)
    }
}

fn put_uint(tag: u32, v: u64, buf: &mut Vec<u8>) {
    if v != 0 {
        encode_key(tag, WireType::Varint, buf);
        encode_varint(v, buf);
    }
}

fn put_double(tag: u32, v: f64, buf: &mut Vec<u8>) {
    encode_key(tag, WireType::SixtyFourBit, buf);
    buf.extend_from_slice(&v.to_le_bytes());
}

fn packed_len(tag: u32, v: &[f64]) -> usize {
    if v.is_empty() {
        0
    } else {
        msg_len(tag, v.len() * 8)
    }
}

fn put_packed(tag: u32, v: &[f64], buf: &mut Vec<u8>) {
    if !v.is_empty() {
        put_header(tag, v.len() * 8, buf);
        for x in v {
            buf.extend_from_slice(&x.to_le_bytes());
        }
    }
}

/// A proto3 string: left out when empty.
fn str_len(tag: u32, s: &str) -> usize {
    if s.is_empty() {
        0
    } else {
        opt_str_len(tag, s)
    }
}

fn put_str(tag: u32, s: &str, buf: &mut Vec<u8>) {
    if !s.is_empty() {
        put_opt_str(tag, s, buf);
    }
}

/// A proto2 `optional` string that is set: written even when empty.
fn opt_str_len(tag: u32, s: &str) -> usize {
    msg_len(tag, s.len())
}

fn put_opt_str(tag: u32, s: &str, buf: &mut Vec<u8>) {
    put_header(tag, s.len(), buf);
    buf.extend_from_slice(s.as_bytes());
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;
    use prost::Message;

    use super::super::pb_oracle::{state, state_from_pb, state_to_pb};
    use super::*;
    use crate::store::prepare::Validation;

    proptest! {
        /// The same bytes as prost writes for the state's protobuf message, as field 16 of a
        /// group (how a copy carries it), for any state, valid or not.
        #[test]
        fn the_same_bytes_as_prost(s in state()) {
            let mut want = Vec::new();
            prost::encoding::message::encode(16, &state_to_pb(&s), &mut want);
            let mut got = Vec::new();
            put_state_field(16, &s, &mut got);
            prop_assert_eq!(got, want);
        }
    }

    /// A state a push made comes back whole from what this writes.
    #[test]
    fn a_pushed_state_comes_back_whole() {
        use super::super::apply::{apply, Ctx, Incoming, Undo};
        let body = "# TYPE c counter\nc{a=\"x\"} 3\n# TYPE h histogram\nh_bucket{le=\"1\"} 1\n\
                    h_bucket{le=\"+Inf\"} 2\nh_sum 1.5\nh_count 2\n# TYPE s summary\n\
                    s{quantile=\"0.5\"} 1\ns_sum 2\ns_count 3\n";
        let fams = crate::exposition::parse_text(body.as_bytes(), crate::exposition::NameScheme::Legacy)
            .unwrap();
        let mut s = AggState::default();
        let ctx = Ctx {
            stamp: Stamp { version: 7, origin: 2 },
            partial: PartialId { node: 2, incarnation: 9 },
        };
        apply(&mut s, Incoming::Model(&fams), ctx, &Validation::default(), &mut Undo::default())
            .unwrap();
        s.seen.insert("k".into(), Seen { at: 7, until: 99, live: false });
        let mut buf = Vec::new();
        put_state_field(1, &s, &mut buf);
        let mut rest = buf.as_slice();
        let (tag, wire) = prost::encoding::decode_key(&mut rest).unwrap();
        assert_eq!((tag, wire), (1, WireType::LengthDelimited));
        let len = prost::encoding::decode_varint(&mut rest).unwrap();
        assert_eq!(len as usize, rest.len());
        let pb = crate::store::snapshot_proto::AggregateState::decode(rest).unwrap();
        assert_eq!(state_from_pb(pb, &Validation::default()).unwrap(), s);
    }
}
