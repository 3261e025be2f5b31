//! An aggregating group's state read from its protobuf form (`pushgate.snapshot.AggregateState`,
//! written by `wire`), straight into the state: what comes in (a peer's copy, a file) is
//! untrusted, so every shape, bound and name is checked, and a refusal says why, before anything
//! reaches the store.
//!
//! It reads what prost reads for that message, with prost's rules (a test holds it to prost's
//! decoding and the checks on prost's message, for any state and for corrupted ones): unknown
//! fields are skipped, a scalar given twice keeps the last, a message given twice merges, repeated
//! doubles come packed or not, strings are UTF-8. Without the message's strings and vectors
//! built first, a copy costs a node taking it less.

use std::collections::BTreeMap;

use prost::encoding::{decode_key, decode_varint, skip_field, DecodeContext, WireType};

use super::state::{AggState, Family, Labels, Partial, PartialId, Seen, Series, Stamp, Value};
use super::vec_map::VecMap;
use super::MAX_IDEMPOTENCY_KEYS;
use super::MAX_IDEMPOTENCY_KEY_BYTES;
use crate::exposition::{is_valid_metric_name, MetricType};
use crate::store::family::intern;
use crate::store::prepare::Validation;

/// Partials a series may carry: one per node and incarnation that ever added to it.
pub const MAX_PARTIALS_PER_SERIES: usize = 4096;

type Read<T> = Result<T, String>;

/// A state from its encoded form, checked: known types, values shaped for their family's type,
/// no repeated family, series, label or key, and every count within its bound.
pub fn decode_state(bytes: &[u8], v: &Validation) -> Read<AggState> {
    let mut reset = Stamp::default();
    let mut families = VecMap::default();
    let mut series_total = 0usize;
    let mut seen = BTreeMap::new();
    let mut keys = 0usize;
    fields(bytes, |tag, wire, buf| {
        match tag {
            1 => merge_stamp(message(wire, buf)?, &mut reset)?,
            2 => {
                let (name, f) = family(message(wire, buf)?, v, &mut series_total)?;
                if families.insert(intern(name), f).is_some() {
                    return Err(format!("family {name:?} appears twice"));
                }
            }
            3 => {
                keys += 1;
                if keys > MAX_IDEMPOTENCY_KEYS {
                    return Err(format!("more than {MAX_IDEMPOTENCY_KEYS} idempotency keys"));
                }
                let (key, register) = idempotency_key(message(wire, buf)?)?;
                if key.len() > MAX_IDEMPOTENCY_KEY_BYTES {
                    return Err(format!(
                        "an idempotency key is longer than {MAX_IDEMPOTENCY_KEY_BYTES} bytes"
                    ));
                }
                if seen.insert(key.to_owned(), register).is_some() {
                    return Err("an idempotency key appears twice".to_owned());
                }
            }
            _ => return Ok(false),
        }
        Ok(true)
    })?;
    Ok(AggState {
        reset,
        families,
        seen,
    })
}

/// An `AggregateFamily`: its fields first (the series are read once its type is known), then
/// its series.
fn family<'a>(
    bytes: &'a [u8],
    v: &Validation,
    series_total: &mut usize,
) -> Read<(&'a str, Family)> {
    let (mut name, mut help, mut raw_type) = ("", "", 0i32);
    let (mut type_stamp, mut help_stamp, mut reset) = Default::default();
    let mut series: Vec<&[u8]> = Vec::new();
    fields(bytes, |tag, wire, buf| {
        match tag {
            1 => name = string(wire, buf)?,
            2 => raw_type = varint(wire, buf)? as i32,
            3 => merge_stamp(message(wire, buf)?, &mut type_stamp)?,
            4 => help = string(wire, buf)?,
            5 => merge_stamp(message(wire, buf)?, &mut help_stamp)?,
            6 => merge_stamp(message(wire, buf)?, &mut reset)?,
            7 => series.push(message(wire, buf)?),
            _ => return Ok(false),
        }
        Ok(true)
    })?;
    if !is_valid_metric_name(name, v.names) {
        return Err(format!("{name:?} is not a valid metric name"));
    }
    let typ = match MetricType::try_from(raw_type) {
        Ok(MetricType::GaugeHistogram) | Err(_) => {
            return Err(format!("family {name:?} has unknown type {raw_type}"))
        }
        Ok(t) => t,
    };
    let mut map = VecMap::with_capacity(series.len());
    for s in series {
        *series_total += 1;
        if *series_total > v.limits.max_series_per_push {
            return Err(format!(
                "more than {} series (--push.max-series-per-push)",
                v.limits.max_series_per_push
            ));
        }
        let (labels, s) = one_series(s, typ, name)?;
        if map.insert(labels, s).is_some() {
            return Err(format!("family {name:?} repeats a series"));
        }
    }
    let family = Family {
        typ: (type_stamp, typ),
        help: (help_stamp, intern(help)),
        reset,
        series: map,
    };
    Ok((name, family))
}

/// An `AggregateSeries` of a family of type `typ`.
fn one_series(bytes: &[u8], typ: MetricType, family: &str) -> Read<(Labels, Series)> {
    let mut labels: Labels = Vec::new();
    let (mut base_stamp, mut base, mut quantiles_stamp) = (None, None, None);
    let mut partials: Vec<(PartialId, Partial)> = Vec::new();
    let mut quantiles = Vec::new();
    fields(bytes, |tag, wire, buf| {
        match tag {
            1 => labels.push(label_pair(message(wire, buf)?)?),
            2 => merge_stamp(message(wire, buf)?, base_stamp.get_or_insert_default())?,
            3 => merge_value(message(wire, buf)?, base.get_or_insert_with(empty_value))?,
            4 => {
                if partials.len() == MAX_PARTIALS_PER_SERIES {
                    return Err(format!(
                        "a series of {family:?} has more than {MAX_PARTIALS_PER_SERIES} partials"
                    ));
                }
                partials.push(partial(message(wire, buf)?, typ, family)?);
            }
            5 => merge_stamp(message(wire, buf)?, quantiles_stamp.get_or_insert_default())?,
            6 => quantiles.push(quantile(message(wire, buf)?)?),
            _ => return Ok(false),
        }
        Ok(true)
    })?;
    labels.sort();
    if labels.windows(2).any(|w| w[0].0 == w[1].0) {
        return Err(format!("a series of {family:?} repeats a label name"));
    }
    let base = match base_stamp {
        Some(st) => Some((st, checked_value(base, typ, family)?)),
        None => None,
    };
    let mut map = VecMap::with_capacity(partials.len());
    for (id, p) in partials {
        if map.insert(id, p).is_some() {
            return Err(format!("a series of {family:?} repeats a partial"));
        }
    }
    let series = Series {
        base,
        partials: map,
        quantiles: quantiles_stamp.map(|st| Box::new((st, quantiles))),
    };
    Ok((labels, series))
}

fn partial(bytes: &[u8], typ: MetricType, family: &str) -> Read<(PartialId, Partial)> {
    let mut id = PartialId {
        node: 0,
        incarnation: 0,
    };
    let (mut epoch, mut seq, mut value) = (Stamp::default(), 0, None);
    fields(bytes, |tag, wire, buf| {
        match tag {
            1 => id.node = varint(wire, buf)?,
            2 => id.incarnation = varint(wire, buf)?,
            3 => merge_stamp(message(wire, buf)?, &mut epoch)?,
            4 => seq = varint(wire, buf)?,
            5 => merge_value(message(wire, buf)?, value.get_or_insert_with(empty_value))?,
            _ => return Ok(false),
        }
        Ok(true)
    })?;
    let value = checked_value(value, typ, family)?;
    Ok((id, Partial { epoch, seq, value }))
}

/// A value that must be there, with the numbers its family's type needs.
fn checked_value(v: Option<Value>, typ: MetricType, family: &str) -> Read<Value> {
    let v = v.ok_or_else(|| format!("a value of {family:?} is missing"))?;
    if !shaped_for(typ, &v) {
        return Err(format!(
            "a value of {family:?} does not fit its type {}",
            typ.as_str_name()
        ));
    }
    Ok(v)
}

fn empty_value() -> Value {
    Value {
        bounds: Vec::new(),
        sums: Vec::new(),
    }
}

/// An `IdempotencyKey`: the key and its register.
fn idempotency_key(bytes: &[u8]) -> Read<(&str, Seen)> {
    let mut key = "";
    let mut seen = Seen {
        at: 0,
        until: 0,
        live: true,
    };
    fields(bytes, |tag, wire, buf| {
        match tag {
            1 => key = string(wire, buf)?,
            2 => seen.until = varint(wire, buf)?,
            3 => seen.at = varint(wire, buf)?,
            4 => seen.live = varint(wire, buf)? == 0,
            _ => return Ok(false),
        }
        Ok(true)
    })?;
    Ok((key, seen))
}

/// A `LabelPair` (proto2: a field left out reads as empty).
fn label_pair(bytes: &[u8]) -> Read<(String, String)> {
    let (mut name, mut value) = ("", "");
    fields(bytes, |tag, wire, buf| {
        match tag {
            1 => name = string(wire, buf)?,
            2 => value = string(wire, buf)?,
            _ => return Ok(false),
        }
        Ok(true)
    })?;
    Ok((name.to_owned(), value.to_owned()))
}

/// A `Quantile` as (quantile, value), a field left out reading as 0.
fn quantile(bytes: &[u8]) -> Read<(f64, f64)> {
    let mut q = (0.0, 0.0);
    fields(bytes, |tag, wire, buf| {
        match tag {
            1 => q.0 = double(wire, buf)?,
            2 => q.1 = double(wire, buf)?,
            _ => return Ok(false),
        }
        Ok(true)
    })?;
    Ok(q)
}

fn merge_stamp(bytes: &[u8], s: &mut Stamp) -> Read<()> {
    fields(bytes, |tag, wire, buf| {
        match tag {
            1 => s.version = varint(wire, buf)?,
            2 => s.origin = varint(wire, buf)?,
            _ => return Ok(false),
        }
        Ok(true)
    })
}

fn merge_value(bytes: &[u8], v: &mut Value) -> Read<()> {
    fields(bytes, |tag, wire, buf| {
        match tag {
            1 => doubles(wire, buf, &mut v.bounds)?,
            2 => doubles(wire, buf, &mut v.sums)?,
            _ => return Ok(false),
        }
        Ok(true)
    })
}

/// Calls `field` with each field's tag and wire type, the buffer at its value; `field` reads
/// the value and says so, or says `false` and the field is skipped (one this node does not
/// know: a newer peer's).
fn fields<'a>(
    mut buf: &'a [u8],
    mut field: impl FnMut(u32, WireType, &mut &'a [u8]) -> Read<bool>,
) -> Read<()> {
    while !buf.is_empty() {
        let (tag, wire) = decode_key(&mut buf).map_err(undecodable)?;
        if !field(tag, wire, &mut buf)? {
            skip_field(wire, tag, &mut buf, DecodeContext::default()).map_err(undecodable)?;
        }
    }
    Ok(())
}

fn undecodable(e: prost::DecodeError) -> String {
    format!("undecodable state: {e}")
}

fn expect(wire: WireType, want: WireType) -> Read<()> {
    if wire == want {
        Ok(())
    } else {
        Err(format!(
            "undecodable state: a field of wire type {wire:?} where {want:?} belongs"
        ))
    }
}

fn varint(wire: WireType, buf: &mut &[u8]) -> Read<u64> {
    expect(wire, WireType::Varint)?;
    decode_varint(buf).map_err(undecodable)
}

fn double(wire: WireType, buf: &mut &[u8]) -> Read<f64> {
    expect(wire, WireType::SixtyFourBit)?;
    let Some((b, rest)) = buf.split_first_chunk::<8>() else {
        return Err("undecodable state: a double runs past its message".to_owned());
    };
    *buf = rest;
    Ok(f64::from_le_bytes(*b))
}

/// A repeated double's values, packed (a length and the values) or one at a time.
fn doubles(wire: WireType, buf: &mut &[u8], out: &mut Vec<f64>) -> Read<()> {
    if wire == WireType::SixtyFourBit {
        out.push(double(wire, buf)?);
        return Ok(());
    }
    let packed = message(wire, buf)?;
    if packed.len() % 8 != 0 {
        return Err("undecodable state: packed doubles of a length not a multiple of 8".into());
    }
    out.extend(
        packed
            .chunks_exact(8)
            .map(|c| f64::from_le_bytes(c.try_into().expect("chunks of 8"))),
    );
    Ok(())
}

/// A length-delimited field's bytes.
fn message<'a>(wire: WireType, buf: &mut &'a [u8]) -> Read<&'a [u8]> {
    expect(wire, WireType::LengthDelimited)?;
    let len = decode_varint(buf).map_err(undecodable)?;
    if len > buf.len() as u64 {
        return Err("undecodable state: a field runs past its message".to_owned());
    }
    let (field, rest) = buf.split_at(len as usize);
    *buf = rest;
    Ok(field)
}

fn string<'a>(wire: WireType, buf: &mut &'a [u8]) -> Read<&'a str> {
    std::str::from_utf8(message(wire, buf)?)
        .map_err(|_| "undecodable state: a string is not UTF-8".to_owned())
}

/// Whether a value has the numbers its family's type needs.
pub fn shaped_for(typ: MetricType, v: &Value) -> bool {
    match typ {
        MetricType::Histogram | MetricType::GaugeHistogram => v.sums.len() == v.bounds.len() + 2,
        MetricType::Summary => v.bounds.is_empty() && v.sums.len() == 2,
        _ => v.bounds.is_empty() && v.sums.len() == 1,
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;
    use prost::Message;

    use super::super::pb_oracle::{state, state_from_pb};
    use super::super::vec_map::VecMap;
    use super::super::wire::put_state_field;
    use super::*;
    use crate::store::snapshot_proto as pb;

    /// What prost and the checks on its message make of `bytes`: the state written out again
    /// (so that NaNs compare), or a refusal.
    fn oracle(bytes: &[u8], v: &Validation) -> Option<Vec<u8>> {
        let p = pb::AggregateState::decode(bytes).ok()?;
        state_from_pb(p, v).ok().map(|s| written(&s))
    }

    fn direct(bytes: &[u8], v: &Validation) -> Option<Vec<u8>> {
        decode_state(bytes, v).ok().map(|s| written(&s))
    }

    fn written(s: &AggState) -> Vec<u8> {
        let mut out = Vec::new();
        put_state_field(1, s, &mut out);
        out
    }

    fn encoded(s: &AggState) -> Vec<u8> {
        let mut out = Vec::new();
        put_state_field(1, s, &mut out);
        let mut rest = out.as_slice();
        prost::encoding::decode_key(&mut rest).unwrap();
        prost::encoding::decode_varint(&mut rest).unwrap();
        rest.to_vec()
    }

    /// `s` made valid: every value shaped for its family's type, no label name twice in a
    /// series, no idempotency key too long (most arbitrary states are refused, which would leave the reading of a valid one
    /// barely tried).
    fn repaired(mut s: AggState) -> AggState {
        for f in s.families.values_mut() {
            let typ = f.typ.1;
            let fix = |v: &mut Value| match typ {
                MetricType::Histogram => v.sums.resize(v.bounds.len() + 2, 1.0),
                MetricType::Summary => {
                    v.bounds.clear();
                    v.sums.resize(2, 1.0);
                }
                _ => {
                    v.bounds.clear();
                    v.sums.resize(1, 1.0);
                }
            };
            let mut series = VecMap::default();
            for (labels, one) in f.series.iter() {
                let (mut labels, mut one) = (labels.clone(), one.clone());
                labels.sort();
                labels.dedup_by(|a, b| a.0 == b.0);
                if let Some((_, v)) = one.base.as_mut() {
                    fix(v);
                }
                for p in one.partials.values_mut() {
                    fix(&mut p.value);
                }
                series.insert(labels, one);
            }
            f.series = series;
        }
        s.seen.retain(|k, _| k.len() <= MAX_IDEMPOTENCY_KEY_BYTES);
        s
    }

    /// `bytes` with one byte changed, cut off there, one byte inserted, or repeated whole.
    fn corrupted(bytes: &[u8], at: usize, byte: u8, how: u8) -> Vec<u8> {
        let mut bad = bytes.to_vec();
        if !bad.is_empty() {
            let i = at % bad.len();
            match how {
                0 => bad[i] = byte,
                1 => bad.truncate(i),
                2 => bad.insert(i, byte),
                _ => bad.extend_from_slice(bytes),
            }
        }
        bad
    }

    proptest! {
        /// The same state as prost's decoding and the checks on its message, or a refusal where
        /// they refuse: for any state, the same made valid, and each with one byte changed,
        /// cut off, inserted or the whole repeated.
        #[test]
        fn reads_what_prost_reads(
            s in state(), at in any::<usize>(), byte in any::<u8>(), how in 0u8..4,
        ) {
            let v = Validation::default();
            let valid = encoded(&repaired(s.clone()));
            let p = pb::AggregateState::decode(valid.as_slice()).expect("written by prost's rules");
            prop_assert_eq!(state_from_pb(p, &v).err(), None);
            for bytes in [encoded(&s), valid] {
                prop_assert_eq!(direct(&bytes, &v), oracle(&bytes, &v));
                let bad = corrupted(&bytes, at, byte, how);
                prop_assert_eq!(direct(&bad, &v), oracle(&bad, &v));
            }
        }
    }

    /// A state a push made comes back whole, and the refusals of the oracle's checks are this
    /// reader's too.
    #[test]
    fn valid_states_come_back_and_invalid_ones_are_refused_alike() {
        use super::super::apply::{apply, Ctx, Incoming, Undo};
        let v = Validation::default();
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
        apply(&mut s, Incoming::Model(&fams), ctx, &v, &mut Undo::default()).unwrap();
        s.seen.insert("k".into(), Seen { at: 7, until: 99, live: false });
        let bytes = encoded(&s);
        assert!(oracle(&bytes, &v).is_some());
        assert_eq!(decode_state(&bytes, &v).unwrap(), s);
        // A histogram value without its buckets, a family named twice, a bad name: refused.
        let mut wrong = s.clone();
        let h = wrong.families.get_mut("h").unwrap();
        for series in h.series.values_mut() {
            for p in series.partials.values_mut() {
                p.value.bounds.clear();
            }
        }
        let bytes = encoded(&wrong);
        let err = decode_state(&bytes, &v).unwrap_err();
        assert!(err.contains("does not fit its type HISTOGRAM"), "{err}");
        assert!(oracle(&bytes, &v).is_none());
        let mut twice = encoded(&s);
        twice.extend_from_slice(&encoded(&s));
        assert_eq!(decode_state(&twice, &v).unwrap_err(), "family \"c\" appears twice");
    }

    /// Hand-written encodings where prost's rules decide: fields a newer node adds are skipped
    /// at every level, doubles one at a time are read like packed ones, a stamp given twice
    /// merges, and a packed length that is not whole doubles or a known field of the wrong wire
    /// type is refused; the same as prost in each case.
    #[test]
    fn prost_s_rules_hold_field_by_field() {
        use prost::encoding::{encode_key, encode_varint, WireType};
        let v = Validation::default();
        let varint = |tag: u32, x: u64| {
            let mut b = Vec::new();
            encode_key(tag, WireType::Varint, &mut b);
            encode_varint(x, &mut b);
            b
        };
        let bytes = |tag: u32, x: &[u8]| {
            let mut b = Vec::new();
            encode_key(tag, WireType::LengthDelimited, &mut b);
            encode_varint(x.len() as u64, &mut b);
            b.extend_from_slice(x);
            b
        };
        let double = |tag: u32, x: f64| {
            let mut b = Vec::new();
            encode_key(tag, WireType::SixtyFourBit, &mut b);
            b.extend_from_slice(&x.to_le_bytes());
            b
        };
        // Written with a field this node does not know (tag 99) at the end when `unknown`.
        let state = |unknown: bool, sums: Vec<u8>, stamp_twice: bool| {
            let unk = |mut m: Vec<u8>| {
                if unknown {
                    m.extend(varint(99, 5));
                    m.extend(bytes(98, b"later"));
                }
                m
            };
            let mut stamp = unk([varint(1, 7), varint(2, 2)].concat());
            if stamp_twice {
                stamp = unk(varint(1, 3));
            }
            let value = unk(sums);
            let partial =
                unk([varint(1, 2), varint(2, 9), bytes(3, &stamp), varint(4, 1), bytes(5, &value)].concat());
            let pair = unk([bytes(1, b"a"), bytes(2, b"x")].concat());
            let series = unk([bytes(1, &pair), bytes(4, &partial)].concat());
            let mut family = [bytes(1, b"c"), bytes(3, &stamp), bytes(4, b"help"), bytes(7, &series)].concat();
            if stamp_twice {
                // The family's type stamp again: merged into the first (version 3, origin 2).
                family.extend(bytes(3, &unk(varint(2, 2))));
            }
            let seen = unk([bytes(1, b"k"), varint(2, 99), varint(3, 7), varint(4, 1)].concat());
            unk([bytes(1, &stamp), bytes(2, &unk(family)), bytes(3, &seen)].concat())
        };
        let packed = bytes(2, &3.5f64.to_le_bytes());
        let plain = state(false, packed.clone(), false);
        let read = direct(&plain, &v).expect("a valid state");
        assert_eq!(Some(read.clone()), oracle(&plain, &v));
        for (what, b) in [
            ("unknown fields", state(true, packed.clone(), false)),
            ("an unpacked double", state(false, double(2, 3.5), false)),
            ("both", state(true, double(2, 3.5), false)),
        ] {
            assert_eq!(direct(&b, &v), Some(read.clone()), "{what}");
            assert_eq!(oracle(&b, &v), Some(read.clone()), "{what}");
        }
        let merged = state(false, packed, true);
        assert_eq!(direct(&merged, &v), oracle(&merged, &v));
        let s = decode_state(&merged, &v).unwrap();
        assert_eq!(s.families.get("c").unwrap().typ.0, Stamp { version: 3, origin: 2 });
        for (what, b) in [
            ("twelve bytes of packed doubles", state(false, bytes(2, &[0; 12]), false)),
            ("a double as a varint", state(false, varint(2, 3), false)),
        ] {
            assert!(decode_state(&b, &v).is_err(), "{what}");
            assert_eq!(oracle(&b, &v), None, "{what}");
        }
    }
}
