//! One push added into an aggregating group's state (with an undo log, so a push refused after
//! it was added leaves the state exactly as it was), and the state turned back into the
//! families the group exposes.
//!
//! Per series, the `clearmode` label (gravel-gateway's) says how a push combines: `aggregate`
//! adds it to this node's partial (the default for counters, histograms and summaries),
//! `replace` makes it the series' new value (the default for gauges and untyped values),
//! `family` replaces every series of the family with the pushed ones (info-like metrics). The
//! label is dropped from the exposition.

use super::state::{AggState, Family, Labels, Partial, PartialId, Series, Stamp, Value};
use crate::exposition::proto::{self, Bucket, Quantile};
use crate::exposition::{LabelPair, Metric, MetricFamily, MetricType, ParsedMetric, ParsedText};
use crate::store::error::PushError;
use crate::store::family::intern;
use crate::store::prepare::{check_family, check_value_field, describe_pairs, Validation};

/// The label that chooses how a series combines (gravel-gateway's name and values).
pub const CLEARMODE_LABEL: &str = "clearmode";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Aggregate,
    Replace,
    Family,
}

impl Mode {
    fn default_for(typ: MetricType) -> Mode {
        match typ {
            MetricType::Gauge | MetricType::Untyped => Mode::Replace,
            _ => Mode::Aggregate,
        }
    }

    fn parse(v: &str, name: &str) -> Result<Mode, PushError> {
        match v {
            "aggregate" | "sum" => Ok(Mode::Aggregate),
            "replace" => Ok(Mode::Replace),
            "family" | "info" => Ok(Mode::Family),
            other => Err(PushError::Malformed(format!(
                "metric {name:?} has {CLEARMODE_LABEL}={other:?}: use \"aggregate\", \"replace\" or \"family\""
            ))),
        }
    }
}

/// Who applies the push and when: the partial it adds to, the stamp of what it replaces.
#[derive(Debug, Clone, Copy)]
pub struct Ctx {
    pub stamp: Stamp,
    pub partial: PartialId,
}

/// What a push changed, to put back if it is refused after being added. Entries name families
/// and series by index: reverted newest first, each finds the state exactly as it left it.
/// When made `recording`, it also keeps what the push added to this node's partials (by name,
/// so that the increments can be taken back later, after other pushes: `retract`).
#[derive(Debug, Default)]
pub struct Undo(Vec<Change>, Option<Vec<Increment>>);

/// What one push added to one series' partial, in that partial's epoch.
#[derive(Debug, Clone, PartialEq)]
pub struct Increment {
    pub family: String,
    pub labels: Labels,
    pub epoch: Stamp,
    pub value: Value,
}

#[derive(Debug)]
enum Change {
    /// A family added at this index.
    NewFamily(usize),
    /// A family replaced whole (`clearmode="family"`): what it was.
    Family(usize, Family),
    Meta(usize, (Stamp, MetricType), (Stamp, std::sync::Arc<str>)),
    /// A series added at (family, series) index.
    NewSeries(usize, usize),
    /// A series changed: what it was.
    Series(usize, usize, Series),
}

impl Undo {
    /// An undo log that also records the push's increments (`increments`).
    pub fn recording() -> Self {
        Undo(Vec::new(), Some(Vec::new()))
    }

    /// The increments the push added to this node's partials (recorded only by `recording`).
    pub fn increments(&mut self) -> Vec<Increment> {
        self.1.take().unwrap_or_default()
    }

    /// Puts the state back as it was before the push, newest change first.
    pub fn revert(self, state: &mut AggState) {
        for change in self.0.into_iter().rev() {
            match change {
                Change::NewFamily(fi) => state.families.remove_at(fi),
                Change::Family(fi, old) => {
                    if let Some(f) = state.families.at_mut(fi) {
                        *f = old;
                    }
                }
                Change::Meta(fi, typ, help) => {
                    if let Some(f) = state.families.at_mut(fi) {
                        f.typ = typ;
                        f.help = help;
                    }
                }
                Change::NewSeries(fi, si) => {
                    if let Some(f) = state.families.at_mut(fi) {
                        f.series.remove_at(si);
                    }
                }
                Change::Series(fi, si, old) => {
                    if let Some(s) = state.families.at_mut(fi).and_then(|f| f.series.at_mut(si)) {
                        *s = old;
                    }
                }
            }
        }
    }
}

/// A pushed series, read and checked; its labels borrowed from the push.
struct Pushed<'m> {
    labels: Vec<(&'m str, &'m str)>,
    mode: Mode,
    value: Value,
    quantiles: Option<Vec<(f64, f64)>>,
}

impl Pushed<'_> {
    fn owned_labels(&self) -> Labels {
        self.labels
            .iter()
            .map(|(n, v)| ((*n).to_owned(), (*v).to_owned()))
            .collect()
    }

    fn describe(&self) -> String {
        describe_pairs(self.labels.iter().copied())
    }
}

/// Orders stored labels against a push's borrowed ones, as `Labels` order among themselves.
fn cmp_labels(stored: &Labels, pushed: &[(&str, &str)]) -> std::cmp::Ordering {
    stored
        .iter()
        .map(|(n, v)| (n.as_str(), v.as_str()))
        .cmp(pushed.iter().copied())
}

/// A decoded push: a text body as the parser's borrowed model (no copy of its strings), or the
/// protobuf model (protobuf bodies).
#[derive(Clone, Copy)]
pub enum Incoming<'a> {
    Text(&'a ParsedText<'a>),
    Model(&'a [MetricFamily]),
}

impl Incoming<'_> {
    /// Whether a metric carries a timestamp (an aggregating group refuses it, as a push does).
    pub fn has_timestamps(&self) -> bool {
        match self {
            Incoming::Text(t) => t.has_timestamps(),
            Incoming::Model(families) => families
                .iter()
                .any(|f| f.metric.iter().any(|m| m.timestamp_ms.is_some())),
        }
    }
}

/// A pushed family's head: name, type as pushed, help.
struct Head<'a> {
    name: &'a str,
    raw_type: Option<i32>,
    help: &'a str,
}

/// Adds `incoming` (a decoded push, timestamps already refused) into `state`. On an error the
/// state is as it was; on success `undo` can put it back.
pub fn apply(
    state: &mut AggState,
    incoming: Incoming<'_>,
    ctx: Ctx,
    v: &Validation,
    undo: &mut Undo,
) -> Result<(), PushError> {
    let mut local = Undo(Vec::new(), undo.1.as_ref().map(|_| Vec::new()));
    let result = match incoming {
        Incoming::Model(families) => families.iter().try_for_each(|mf| {
            let head = Head {
                name: mf.name(),
                raw_type: mf.r#type,
                help: mf.help(),
            };
            let read = |typ| mf.metric.iter().map(|m| read_series(head.name, typ, m)).collect();
            apply_family(state, &head, read, ctx, v, &mut local)
        }),
        Incoming::Text(parsed) => parsed.families().try_for_each(|f| {
            let head = Head {
                name: &f.name,
                raw_type: f.typ.map(|t| t as i32),
                help: f.help.as_deref().unwrap_or_default(),
            };
            let read = |typ| {
                parsed
                    .metrics(f)
                    .iter()
                    .map(|m| read_parsed(head.name, typ, parsed, m))
                    .collect()
            };
            apply_family(state, &head, read, ctx, v, &mut local)
        }),
    };
    match result {
        Ok(()) => {
            undo.0.append(&mut local.0);
            if let (Some(all), Some(mut these)) = (&mut undo.1, local.1) {
                all.append(&mut these);
            }
            Ok(())
        }
        Err(e) => {
            local.revert(state);
            Err(e)
        }
    }
}

fn apply_family<'m>(
    state: &mut AggState,
    head: &Head<'_>,
    read: impl FnOnce(MetricType) -> Result<Vec<Pushed<'m>>, PushError>,
    ctx: Ctx,
    v: &Validation,
    undo: &mut Undo,
) -> Result<(), PushError> {
    let name = head.name;
    let help = head.help;
    let Some(typ) = check_family(name, head.raw_type, v)? else {
        return Ok(());
    };
    let mut pushed = read(typ)?;
    pushed.sort_by(|a, b| a.labels.cmp(&b.labels));
    if let Some(w) = pushed.windows(2).find(|w| w[0].labels == w[1].labels) {
        return Err(PushError::Invalid(format!(
            "collected metric {name:?} {{ {} }} was collected before with the same name and label values",
            w[0].describe()
        )));
    }
    let resets_family = pushed.iter().any(|p| p.mode == Mode::Family);
    let group_reset = state.reset;
    let fi = match state.families.search_by(|k| (**k).cmp(name)) {
        Err(fi) => {
            undo.0.push(Change::NewFamily(fi));
            let family = Family::new(ctx.stamp, typ, intern(help));
            state.families.insert_at(fi, intern(name), family);
            fi
        }
        Ok(fi) => {
            let f = state.families.at_mut(fi).expect("the index was just found");
            if resets_family {
                undo.0.push(Change::Family(fi, f.clone()));
                f.reset = ctx.stamp;
                f.typ = (ctx.stamp, typ);
                f.help = (ctx.stamp, intern(help));
            } else {
                let live = f.is_live(group_reset);
                if live && f.typ.1 != typ {
                    return Err(PushError::Invalid(format!(
                        "metric {name:?} is aggregated as {} in this group, this push has it as {}: delete the group, or push the family with {CLEARMODE_LABEL}=\"family\", to change its type",
                        f.typ.1.as_str_name(),
                        typ.as_str_name()
                    )));
                }
                if !live || *f.help.1 != *help {
                    undo.0.push(Change::Meta(fi, f.typ, f.help.clone()));
                    if !live {
                        f.typ = (ctx.stamp, typ);
                    }
                    f.help = (ctx.stamp, intern(help));
                }
            }
            fi
        }
    };
    let family = state.families.at_mut(fi).expect("the family was just ensured");
    let floor = family.floor(group_reset);
    // Every series checked before any is changed, so a refusal needs no undo of this family.
    if !resets_family {
        for p in pushed.iter().filter(|p| p.mode == Mode::Aggregate) {
            let held = family
                .series
                .search_by(|k| cmp_labels(k, &p.labels))
                .ok()
                .and_then(|si| family.series.at(si));
            check_addable(name, typ, p, held, floor)?;
        }
    }
    for mut p in pushed {
        let si = match family.series.search_by(|k| cmp_labels(k, &p.labels)) {
            Ok(si) => {
                if !resets_family {
                    let old = family.series.at(si).cloned().unwrap_or_default();
                    undo.0.push(Change::Series(fi, si, old));
                }
                si
            }
            Err(si) => {
                if !resets_family {
                    undo.0.push(Change::NewSeries(fi, si));
                }
                family.series.insert_at(si, p.owned_labels(), Series::default());
                si
            }
        };
        let series = family.series.at_mut(si).expect("the series was just ensured");
        if let Some(q) = p.quantiles.take() {
            series.quantiles = Some(Box::new((ctx.stamp, q)));
        }
        match p.mode {
            Mode::Aggregate if !resets_family => {
                let epoch = add_to_partial(series, floor, ctx, &p.value);
                if let Some(record) = &mut undo.1 {
                    record.push(Increment {
                        family: name.to_owned(),
                        labels: p.owned_labels(),
                        epoch,
                        value: p.value,
                    });
                }
            }
            _ => series.base = Some((ctx.stamp, p.value)),
        }
    }
    Ok(())
}

/// Adds `add` to this node's partial of `series`; returns the partial's epoch.
fn add_to_partial(series: &mut Series, floor: Stamp, ctx: Ctx, add: &Value) -> Stamp {
    let epoch = series.epoch(floor);
    let zero = || Value {
        bounds: add.bounds.clone(),
        sums: vec![0.0; add.sums.len()],
    };
    let pi = match series.partials.search_by(|id| id.cmp(&ctx.partial)) {
        Ok(pi) => pi,
        Err(pi) => {
            let fresh = Partial {
                epoch,
                seq: 0,
                value: zero(),
            };
            series.partials.insert_at(pi, ctx.partial, fresh);
            pi
        }
    };
    let partial = series.partials.at_mut(pi).expect("the partial was just ensured");
    if partial.epoch != epoch || !partial.value.same_shape(add) {
        // Increments of an older epoch no longer count (a reset came after them).
        *partial = Partial {
            epoch,
            seq: 0,
            value: zero(),
        };
    }
    partial.value.add(add);
    partial.seq += 1;
    epoch
}

/// Takes back increments this node added (`Undo::recording`) to its partial `partial`, as a new
/// update of it (a higher `seq`, so every copy that took the increments takes this too): each
/// is subtracted from the partial when the partial still counts from the increment's epoch and
/// has its shape. One that a reset made irrelevant since (the partial started over) no longer
/// counts anyway, and is left alone. Replaced values, help texts and quantiles are registers a
/// retry writes again the same: they stay.
pub fn retract(state: &mut AggState, partial: PartialId, increments: &[Increment]) {
    for inc in increments {
        let Some(family) = state.families.get_mut(inc.family.as_str()) else {
            continue;
        };
        let Some(series) = family.series.get_mut(&inc.labels) else {
            continue;
        };
        let Some(p) = series.partials.get_mut(&partial) else {
            continue;
        };
        if p.epoch != inc.epoch || !p.value.same_shape(&inc.value) {
            continue;
        }
        for (a, b) in p.value.sums.iter_mut().zip(&inc.value.sums) {
            *a -= b;
        }
        p.seq += 1;
    }
}

/// Refuses an increment that cannot be added: one that is not a finite number (it would stay
/// in the sum for good), a negative count, or a histogram with other buckets than the
/// group's.
fn check_addable(
    name: &str,
    typ: MetricType,
    p: &Pushed,
    held: Option<&Series>,
    floor: Stamp,
) -> Result<(), PushError> {
    let labels = || p.describe();
    if p.value.sums.iter().any(|x| !x.is_finite()) {
        return Err(PushError::Invalid(format!(
            "metric {name:?} {{ {} }} is added up in this aggregating group, so its values must be finite numbers",
            labels()
        )));
    }
    // Counts (and a counter) only grow; a gauge summed on purpose may go down.
    let counts = match typ {
        MetricType::Counter => 1,
        MetricType::Summary => 1,
        MetricType::Histogram => p.value.sums.len(),
        _ => 0,
    };
    let negative = p
        .value
        .sums
        .iter()
        .enumerate()
        .any(|(i, x)| *x < 0.0 && i < counts && !(typ == MetricType::Histogram && i == 1));
    if negative {
        return Err(PushError::Invalid(format!(
            "metric {name:?} {{ {} }}: a {} adds up counts, which cannot be negative",
            labels(),
            typ.as_str_name()
        )));
    }
    if let Some(current) = held.and_then(|s| s.shape(floor)) {
        if !current.same_shape(&p.value) {
            return Err(PushError::Invalid(format!(
                "histogram {name:?} {{ {} }} has bucket bounds {}, but this aggregating group holds {}: every push must use the same buckets (delete the group to change them)",
                labels(),
                show_bounds(&p.value.bounds),
                show_bounds(&current.bounds)
            )));
        }
    }
    Ok(())
}

fn show_bounds(bounds: &[f64]) -> String {
    let shown: Vec<String> = bounds
        .iter()
        .map(|b| {
            let mut s = Vec::new();
            crate::exposition::write_float(&mut s, *b);
            String::from_utf8_lossy(&s).into_owned()
        })
        .collect();
    format!("[{}]", shown.join(", "))
}

/// A pushed metric as the state keeps it: labels sorted without `clearmode`, its mode, its
/// numbers.
fn read_series<'m>(name: &str, typ: MetricType, m: &'m Metric) -> Result<Pushed<'m>, PushError> {
    check_value_field(name, typ, m)?;
    let mut mode = None;
    let mut labels: Vec<(&str, &str)> = Vec::with_capacity(m.label.len());
    for lp in &m.label {
        if lp.name() == CLEARMODE_LABEL {
            mode = Some(Mode::parse(lp.value(), name)?);
        } else {
            labels.push((lp.name(), lp.value()));
        }
    }
    labels.sort_unstable();
    let mode = mode.unwrap_or(Mode::default_for(typ));
    let scalar = |x: Option<f64>| Value {
        bounds: Vec::new(),
        sums: vec![x.unwrap_or(0.0)],
    };
    let (value, quantiles) = match typ {
        MetricType::Counter => (scalar(m.counter.as_ref().and_then(|c| c.value)), None),
        MetricType::Gauge => (scalar(m.gauge.as_ref().and_then(|g| g.value)), None),
        MetricType::Untyped => (scalar(m.untyped.as_ref().and_then(|u| u.value)), None),
        MetricType::Summary => {
            let s = m.summary.as_deref().cloned().unwrap_or_default();
            let value = Value {
                bounds: Vec::new(),
                sums: vec![s.sample_count() as f64, s.sample_sum()],
            };
            let q = s.quantile.iter().map(|q| (q.quantile(), q.value())).collect();
            (value, Some(q))
        }
        MetricType::Histogram | MetricType::GaugeHistogram => {
            let h = m.histogram.as_deref().cloned().unwrap_or_default();
            if h.sb_schema.is_some() || h.sb_positive.is_some() || h.sb_negative.is_some() {
                return Err(PushError::Malformed(format!(
                    "metric {name:?} is a native histogram, which an aggregating group cannot add up"
                )));
            }
            let count = h.sample_count_float.unwrap_or(h.sample_count() as f64);
            let mut sums = Vec::with_capacity(h.bucket.len() + 2);
            sums.extend([count, h.sample_sum()]);
            let mut bounds = Vec::with_capacity(h.bucket.len());
            for b in &h.bucket {
                bounds.push(b.upper_bound());
                sums.push(
                    b.cumulative_count_float
                        .unwrap_or(b.cumulative_count() as f64),
                );
            }
            (Value { bounds, sums }, None)
        }
    };
    Ok(Pushed {
        labels,
        mode,
        value,
        quantiles,
    })
}

/// A metric of a text body as the state keeps it, like [`read_series`] reads the protobuf
/// model of the same line (`ParsedText::to_families`): bucket counts as `Point::count` gives them.
fn read_parsed<'m>(
    name: &str,
    typ: MetricType,
    parsed: &'m ParsedText<'_>,
    m: &ParsedMetric,
) -> Result<Pushed<'m>, PushError> {
    let mut mode = None;
    let mut labels: Vec<(&str, &str)> = Vec::with_capacity(parsed.labels(m).len());
    for (n, v) in parsed.labels(m) {
        if n == CLEARMODE_LABEL {
            mode = Some(Mode::parse(v, name)?);
        } else {
            labels.push((n, v));
        }
    }
    labels.sort_unstable();
    let mode = mode.unwrap_or(Mode::default_for(typ));
    let points = parsed.points(m);
    let count = m.count.unwrap_or(0) as f64;
    let sum = m.sum.unwrap_or(0.0);
    let (value, quantiles) = match typ {
        MetricType::Summary => (
            Value {
                bounds: Vec::new(),
                sums: vec![count, sum],
            },
            Some(points.iter().map(|p| (p.bound, p.value)).collect()),
        ),
        MetricType::Histogram => {
            let mut sums = Vec::with_capacity(points.len() + 2);
            sums.extend([count, sum]);
            sums.extend(points.iter().map(|p| p.count() as f64));
            let bounds = points.iter().map(|p| p.bound).collect();
            (Value { bounds, sums }, None)
        }
        _ => (
            Value {
                bounds: Vec::new(),
                sums: vec![m.value],
            },
            None,
        ),
    };
    Ok(Pushed {
        labels,
        mode,
        value,
        quantiles,
    })
}

/// The families the group exposes: every series that still counts, its partials added up.
pub fn materialize(state: &AggState) -> Vec<MetricFamily> {
    let mut out = Vec::with_capacity(state.families.len());
    for (name, f) in &state.families {
        let floor = f.floor(state.reset);
        let typ = f.typ.1;
        let metric: Vec<Metric> = f
            .series
            .iter()
            .filter_map(|(labels, s)| {
                let value = s.value(floor)?;
                metric_of(labels, typ, &value, s.live_quantiles(floor))
            })
            .collect();
        if metric.is_empty() {
            continue;
        }
        out.push(MetricFamily {
            name: Some(name.to_string()),
            help: Some(f.help.1.to_string()),
            r#type: Some(typ as i32),
            metric,
        });
    }
    out
}

/// A count as the protobuf model carries it: an integer when it is one.
fn count(x: f64) -> (Option<u64>, Option<f64>) {
    if x.fract() == 0.0 && (0.0..9.007_199_254_740_992e15).contains(&x) {
        (Some(x as u64), None)
    } else {
        (None, Some(x))
    }
}

/// One exposed metric; `None` when the value's shape does not fit the family's type (only two
/// nodes accepting different types at once can cause that; the family's newest type wins).
fn metric_of(
    labels: &Labels,
    typ: MetricType,
    value: &Value,
    quantiles: Option<&[(f64, f64)]>,
) -> Option<Metric> {
    let mut m = Metric {
        label: labels
            .iter()
            .map(|(n, v)| LabelPair {
                name: Some(n.clone()),
                value: Some(v.clone()),
            })
            .collect(),
        ..Default::default()
    };
    let sums = &value.sums;
    match typ {
        MetricType::Counter | MetricType::Gauge | MetricType::Untyped => {
            let [x] = sums.as_slice() else { return None };
            let x = Some(*x);
            match typ {
                MetricType::Counter => {
                    m.counter = Some(proto::Counter {
                        value: x,
                        exemplar: None,
                    })
                }
                MetricType::Gauge => m.gauge = Some(proto::Gauge { value: x }),
                _ => m.untyped = Some(proto::Untyped { value: x }),
            }
        }
        MetricType::Summary => {
            let [n, sum] = sums.as_slice() else { return None };
            m.summary = Some(Box::new(proto::Summary {
                sample_count: Some(n.max(0.0).round() as u64),
                sample_sum: Some(*sum),
                quantile: quantiles
                    .unwrap_or_default()
                    .iter()
                    .map(|(q, v)| Quantile {
                        quantile: Some(*q),
                        value: Some(*v),
                    })
                    .collect(),
            }));
        }
        MetricType::Histogram | MetricType::GaugeHistogram => {
            let (head, buckets) = sums.split_at_checked(2)?;
            let [n, sum] = head else { return None };
            if buckets.len() != value.bounds.len() {
                return None;
            }
            let (sample_count, sample_count_float) = count(*n);
            m.histogram = Some(Box::new(proto::Histogram {
                sample_count,
                sample_count_float,
                sample_sum: Some(*sum),
                bucket: value
                    .bounds
                    .iter()
                    .zip(buckets)
                    .map(|(b, c)| {
                        let (cumulative_count, cumulative_count_float) = count(*c);
                        Bucket {
                            cumulative_count,
                            cumulative_count_float,
                            upper_bound: Some(*b),
                            exemplar: None,
                        }
                    })
                    .collect(),
                ..Default::default()
            }));
        }
    }
    Some(m)
}
