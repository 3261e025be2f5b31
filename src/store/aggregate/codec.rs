//! An aggregating group's state in its protobuf form (`pushgate.snapshot.AggregateState`), and
//! back. What comes in (a file) is untrusted: every shape, bound and name is checked, and a
//! refusal says why, before anything reaches the store.

use std::collections::BTreeMap;

use super::state::{AggState, Family, Labels, Partial, PartialId, Seen, Series, Stamp, Value};
use super::vec_map::VecMap;
use super::MAX_IDEMPOTENCY_KEYS;
use super::MAX_IDEMPOTENCY_KEY_BYTES;
use crate::exposition::{is_valid_metric_name, MetricType};
use crate::store::snapshot_proto as pb;
use crate::store::family::intern;
use crate::store::prepare::Validation;

/// Partials a series may carry: one per node and incarnation that ever added to it.
pub const MAX_PARTIALS_PER_SERIES: usize = 4096;

fn stamp_of(s: &Option<pb::Stamp>) -> Stamp {
    s.as_ref().map_or(Stamp::default(), |s| Stamp {
        version: s.version,
        origin: s.origin,
    })
}

/// A state from its protobuf form, checked: known types, values shaped for their family's
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

/// Whether a value has the numbers its family's type needs.
pub fn shaped_for(typ: MetricType, v: &Value) -> bool {
    match typ {
        MetricType::Histogram | MetricType::GaugeHistogram => v.sums.len() == v.bounds.len() + 2,
        MetricType::Summary => v.bounds.is_empty() && v.sums.len() == 2,
        _ => v.bounds.is_empty() && v.sums.len() == 1,
    }
}
