//! Test support for the state's codecs: arbitrary states, and prost's own messages as the
//! oracle the direct writer (`wire`) and reader (`codec`) are held to.

use std::collections::BTreeMap;
use std::sync::Arc;

use proptest::prelude::*;

use super::codec::{shaped_for, MAX_PARTIALS_PER_SERIES};
use super::state::{AggState, Family, Labels, Partial, PartialId, Seen, Series, Stamp, Value};
use super::vec_map::VecMap;
use super::{MAX_IDEMPOTENCY_KEYS, MAX_IDEMPOTENCY_KEY_BYTES};
use crate::exposition::proto::Quantile;
use crate::exposition::{is_valid_metric_name, LabelPair, MetricType};
use crate::store::family::intern;
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

/// The protobuf form of a state through prost's own message, the oracle `put_state_field`
    /// is held to.
pub fn state_to_pb(state: &AggState) -> pb::AggregateState {
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

pub fn stamp() -> impl Strategy<Value = Stamp> {
    let n = prop_oneof![Just(0u64), 1u64..300, any::<u64>()];
    (n.clone(), n).prop_map(|(version, origin)| Stamp { version, origin })
}

pub fn value() -> impl Strategy<Value = Value> {
    (
        proptest::collection::vec(any::<f64>(), 0..3),
        proptest::collection::vec(any::<f64>(), 0..4),
    )
        .prop_map(|(bounds, sums)| Value { bounds, sums })
}

pub fn text() -> impl Strategy<Value = String> {
    prop_oneof![Just(String::new()), "[a-z_]{1,6}", ".{0,200}"]
}

pub fn series() -> impl Strategy<Value = (Labels, Series)> {
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

pub fn family() -> impl Strategy<Value = (String, Family)> {
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

pub fn state() -> impl Strategy<Value = AggState> {
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

fn stamp_of(s: &Option<pb::Stamp>) -> Stamp {
    s.as_ref().map_or(Stamp::default(), |s| Stamp {
        version: s.version,
        origin: s.origin,
    })
}

/// A state from prost's message, checked (the oracle `decode_state` is held to): known types, values shaped for their family's
/// type, no repeated family, series, label or key, and every count within its bound.
pub fn state_from_pb(p: pb::AggregateState, v: &Validation) -> Result<AggState, String> {
    let mut families = VecMap::with_capacity(p.families.len());
    let mut series_total = 0usize;
    for f in p.families {
        if !is_valid_metric_name(&f.name, v.names) {
            return Err(format!("{:?} is not a valid metric name", f.name));
        }
        let typ = match MetricType::try_from(f.r#type) {
            Ok(MetricType::GaugeHistogram) | Err(_) => {
                return Err(format!("family {:?} has unknown type {}", f.name, f.r#type))
            }
            Ok(t) => t,
        };
        let mut series = VecMap::with_capacity(f.series.len());
        for s in f.series {
            series_total += 1;
            if series_total > v.limits.max_series_per_push {
                return Err(format!(
                    "more than {} series (--push.max-series-per-push)",
                    v.limits.max_series_per_push
                ));
            }
            let (labels, s) = series_from_pb(s, typ, &f.name)?;
            if series.insert(labels, s).is_some() {
                return Err(format!("family {:?} repeats a series", f.name));
            }
        }
        let family = Family {
            typ: (stamp_of(&f.type_stamp), typ),
            help: (stamp_of(&f.help_stamp), intern(&f.help)),
            reset: stamp_of(&f.reset),
            series,
        };
        if families.insert(intern(&f.name), family).is_some() {
            return Err(format!("family {:?} appears twice", f.name));
        }
    }
    if p.seen.len() > MAX_IDEMPOTENCY_KEYS {
        return Err(format!(
            "more than {MAX_IDEMPOTENCY_KEYS} idempotency keys"
        ));
    }
    let mut seen = BTreeMap::new();
    for k in p.seen {
        if k.key.len() > MAX_IDEMPOTENCY_KEY_BYTES {
            return Err(format!(
                "an idempotency key is longer than {MAX_IDEMPOTENCY_KEY_BYTES} bytes"
            ));
        }
        let register = Seen {
            at: k.at,
            until: k.until_ms,
            live: !k.withdrawn,
        };
        if seen.insert(k.key, register).is_some() {
            return Err("an idempotency key appears twice".to_owned());
        }
    }
    Ok(AggState {
        reset: stamp_of(&p.reset),
        families,
        seen,
    })
}

fn series_from_pb(
    s: pb::AggregateSeries,
    typ: MetricType,
    family: &str,
) -> Result<(Labels, Series), String> {
    let mut labels: Labels = s
        .labels
        .into_iter()
        .map(|lp| (lp.name.unwrap_or_default(), lp.value.unwrap_or_default()))
        .collect();
    labels.sort();
    if labels.windows(2).any(|w| w[0].0 == w[1].0) {
        return Err(format!("a series of {family:?} repeats a label name"));
    }
    let value = |v: Option<pb::AggregateValue>| -> Result<Value, String> {
        let v = v.ok_or_else(|| format!("a value of {family:?} is missing"))?;
        let v = Value {
            bounds: v.bounds,
            sums: v.sums,
        };
        if !shaped_for(typ, &v) {
            return Err(format!(
                "a value of {family:?} does not fit its type {}",
                typ.as_str_name()
            ));
        }
        Ok(v)
    };
    let base = match s.base_stamp {
        Some(st) => Some((stamp_of(&Some(st)), value(s.base)?)),
        None => None,
    };
    if s.partials.len() > MAX_PARTIALS_PER_SERIES {
        return Err(format!(
            "a series of {family:?} has more than {MAX_PARTIALS_PER_SERIES} partials"
        ));
    }
    let mut partials = VecMap::with_capacity(s.partials.len());
    for p in s.partials {
        let id = PartialId {
            node: p.node,
            incarnation: p.incarnation,
        };
        let partial = Partial {
            epoch: stamp_of(&p.epoch),
            seq: p.seq,
            value: value(p.value)?,
        };
        if partials.insert(id, partial).is_some() {
            return Err(format!("a series of {family:?} repeats a partial"));
        }
    }
    let quantiles = s.quantiles_stamp.map(|st| {
        let q = s
            .quantiles
            .iter()
            .map(|q| (q.quantile(), q.value()))
            .collect();
        Box::new((stamp_of(&Some(st)), q))
    });
    Ok((
        labels,
        Series {
            base,
            partials,
            quantiles,
        },
    ))
}
