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
    use std::collections::BTreeMap;
    use std::sync::Arc;

    use proptest::prelude::*;
    use prost::Message;

    use super::super::codec::state_from_pb;
    use super::super::vec_map::VecMap;
    use super::*;
    use crate::exposition::MetricType;
    use crate::exposition::proto::Quantile;
    use crate::exposition::LabelPair;
    use crate::store::prepare::Validation;
    use crate::store::snapshot_proto as pb;

    fn stamp_pb(s: Stamp) -> Option<pb::Stamp> {
        Some(pb::Stamp {
            version: s.version,
            origin: s.origin,
        })
    }

    fn value_pb(v: &Value) -> Option<pb::AggregateValue> {
        Some(pb::AggregateValue {
            bounds: v.bounds.clone(),
            sums: v.sums.clone(),
        })
    }

    fn pairs_pb(labels: &Labels) -> Vec<LabelPair> {
        labels
            .iter()
            .map(|(n, v)| LabelPair {
                name: Some(n.clone()),
                value: Some(v.clone()),
            })
            .collect()
    }

    /// The protobuf form of a state through prost's own message: the oracle `put_state_field`
    /// is held to.
    fn state_to_pb(state: &AggState) -> pb::AggregateState {
        pb::AggregateState {
            reset: stamp_pb(state.reset),
            families: state
                .families
                .iter()
                .map(|(name, f)| pb::AggregateFamily {
                    name: name.to_string(),
                    r#type: f.typ.1 as i32,
                    type_stamp: stamp_pb(f.typ.0),
                    help: f.help.1.to_string(),
                    help_stamp: stamp_pb(f.help.0),
                    reset: stamp_pb(f.reset),
                    series: f
                        .series
                        .iter()
                        .map(|(labels, s)| series_pb(labels, s))
                        .collect(),
                })
                .collect(),
            seen: state
                .seen
                .iter()
                .map(|(k, seen)| pb::IdempotencyKey {
                    key: k.clone(),
                    until_ms: seen.until,
                    at: seen.at,
                    withdrawn: !seen.live,
                })
                .collect(),
        }
    }

    fn series_pb(labels: &Labels, s: &Series) -> pb::AggregateSeries {
        pb::AggregateSeries {
            labels: pairs_pb(labels),
            base_stamp: s.base.as_ref().and_then(|(st, _)| stamp_pb(*st)),
            base: s.base.as_ref().and_then(|(_, v)| value_pb(v)),
            partials: s
                .partials
                .iter()
                .map(|(id, p)| pb::AggregatePartial {
                    node: id.node,
                    incarnation: id.incarnation,
                    epoch: stamp_pb(p.epoch),
                    seq: p.seq,
                    value: value_pb(&p.value),
                })
                .collect(),
            quantiles_stamp: s.quantiles.as_deref().and_then(|(st, _)| stamp_pb(*st)),
            quantiles: s
                .quantiles
                .as_deref()
                .map(|(_, q)| {
                    q.iter()
                        .map(|(q, v)| Quantile {
                            quantile: Some(*q),
                            value: Some(*v),
                        })
                        .collect()
                })
                .unwrap_or_default(),
        }
    }

    fn stamp() -> impl Strategy<Value = Stamp> {
        let n = prop_oneof![Just(0u64), 1u64..300, any::<u64>()];
        (n.clone(), n).prop_map(|(version, origin)| Stamp { version, origin })
    }

    fn value() -> impl Strategy<Value = Value> {
        (
            proptest::collection::vec(any::<f64>(), 0..3),
            proptest::collection::vec(any::<f64>(), 0..4),
        )
            .prop_map(|(bounds, sums)| Value { bounds, sums })
    }

    fn text() -> impl Strategy<Value = String> {
        prop_oneof![Just(String::new()), "[a-z_]{1,6}", ".{0,200}"]
    }

    fn series() -> impl Strategy<Value = (Labels, Series)> {
        (
            proptest::collection::vec((text(), text()), 0..3),
            proptest::option::of((stamp(), value())),
            proptest::collection::vec(
                ((any::<u64>(), 0u64..3), (stamp(), prop_oneof![Just(0u64), any::<u64>()], value())),
                0..3,
            ),
            proptest::option::of((stamp(), proptest::collection::vec(any::<(f64, f64)>(), 0..3))),
        )
            .prop_map(|(labels, base, partials, quantiles)| {
                let mut map = VecMap::default();
                for ((node, incarnation), (epoch, seq, value)) in partials {
                    map.insert(PartialId { node, incarnation }, Partial { epoch, seq, value });
                }
                let s = Series {
                    base,
                    partials: map,
                    quantiles: quantiles.map(Box::new),
                };
                (labels, s)
            })
    }

    fn family() -> impl Strategy<Value = (String, Family)> {
        (
            "[a-z_]{1,8}",
            (stamp(), 0usize..5),
            (stamp(), text()),
            stamp(),
            proptest::collection::vec(series(), 0..4),
        )
            .prop_map(|(name, (ts, typ), (hs, help), reset, series)| {
                let typ = [
                    MetricType::Counter,
                    MetricType::Gauge,
                    MetricType::Summary,
                    MetricType::Untyped,
                    MetricType::Histogram,
                ][typ];
                let mut map = VecMap::default();
                for (labels, s) in series {
                    map.insert(labels, s);
                }
                let f = Family {
                    typ: (ts, typ),
                    help: (hs, Arc::from(help.as_str())),
                    reset,
                    series: map,
                };
                (name, f)
            })
    }

    fn state() -> impl Strategy<Value = AggState> {
        (
            stamp(),
            proptest::collection::vec(family(), 0..4),
            proptest::collection::btree_map(
                text(),
                (any::<u64>(), any::<u64>(), any::<bool>())
                    .prop_map(|(at, until, live)| Seen { at, until, live }),
                0..3,
            ),
        )
            .prop_map(|(reset, families, seen)| {
                let mut map = VecMap::default();
                for (name, f) in families {
                    map.insert(Arc::from(name.as_str()), f);
                }
                AggState {
                    reset,
                    families: map,
                    seen: seen.into_iter().collect::<BTreeMap<_, _>>(),
                }
            })
    }

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
