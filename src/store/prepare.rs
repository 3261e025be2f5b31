//! Turns decoded families into what the store keeps: grouping labels applied, every rule that
//! depends only on the push itself checked (names, label sets, timestamps, duplicates, limits),
//! metrics sorted and pre-encoded. Runs outside any store lock.

use std::collections::HashSet;
use std::sync::Arc;

use super::error::PushError;
use super::family::{BlockBuilder, EncodeMetric, LabelRef, Merged, StoredFamily};
use super::key::GroupKey;
use crate::exposition::{is_valid_label_name, is_valid_metric_name, NameScheme};
use crate::exposition::{LabelPair, Metric, MetricFamily, MetricType};
use crate::exposition::{ParsedMetric, ParsedText, Point};

pub const PUSH_TIME_METRIC: &str = "push_time_seconds";
pub const PUSH_FAILURE_TIME_METRIC: &str = "push_failure_time_seconds";
pub const PUSH_TIME_HELP: &str =
    "Last Unix time when changing this group in the Pushgateway succeeded.";
pub const PUSH_FAILURE_TIME_HELP: &str =
    "Last Unix time when changing this group in the Pushgateway failed.";

/// Limits applied to every push; the defaults refuse only abuse (COMPAT.md, bug 8).
#[derive(Debug, Clone)]
pub struct Limits {
    pub max_series_per_push: usize,
    pub max_label_name_bytes: usize,
    pub max_label_value_bytes: usize,
    pub max_grouping_labels: usize,
    pub max_groups: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_series_per_push: 100_000,
            max_label_name_bytes: 1024,
            max_label_value_bytes: 1 << 20,
            max_grouping_labels: 256,
            max_groups: 1_000_000,
        }
    }
}

/// How to validate: name rules and limits.
#[derive(Debug, Clone, Default)]
pub struct Validation {
    pub names: NameScheme,
    pub limits: Limits,
}

/// A validated, encoded push ready to be applied to a group.
#[derive(Debug)]
pub struct PreparedPush {
    pub key: GroupKey,
    /// Sorted by name, names unique.
    pub families: Vec<StoredFamily>,
    /// PUT replaces every family of the group; POST only the families named here.
    pub replace_all: bool,
    /// Set when the push carried timestamps: upstream refuses it but records the failure.
    pub has_timestamps: bool,
    /// The families an aggregating group exposes (`/aggregate`); a plain push ends the
    /// aggregation.
    pub aggregating: bool,
    /// The aggregating group's state digest (`GroupSnapshot::agg_digest`; 0: none).
    pub agg_digest: u64,
    /// The group's TTL from this push on, in seconds (0: never expires): the request header's
    /// or `--push.group-ttl`, resolved where the push was received.
    pub ttl: f64,
}

impl PreparedPush {
    /// The push with the group TTL it sets.
    pub fn with_ttl(mut self, ttl: f64) -> Self {
        self.ttl = ttl;
        self
    }

    pub fn family(&self, name: &str) -> Option<&StoredFamily> {
        self.families
            .binary_search_by(|f| f.name.as_ref().cmp(name))
            .ok()
            .map(|i| &self.families[i])
    }
}

fn invalid(msg: String) -> PushError {
    PushError::Invalid(msg)
}

/// What a push that repeats a series is refused for, asked with the family's name and type
/// and the repeated series' labels: the family's conflict with the store (its type, or a
/// histogram or summary suffix collision) to report instead of the repeat, or `None`.
/// A caller holding the store passes [`super::Store::repeat_conflict`].
pub type RepeatConflict<'a> = &'a dyn Fn(&str, MetricType, &str) -> Option<String>;

/// Refuses a repeated series for the repeat (a caller without a store).
pub const NO_STORE: RepeatConflict<'static> = &|_, _, _| None;

/// Validates and encodes `families` for the group `key`.
pub fn prepare_push(
    key: GroupKey,
    families: Vec<MetricFamily>,
    replace_all: bool,
    v: &Validation,
) -> Result<PreparedPush, PushError> {
    prepare_push_against(key, families, replace_all, v, NO_STORE)
}

/// [`prepare_push`], a repeated series refused as `conflict` says.
pub fn prepare_push_against(
    key: GroupKey,
    families: Vec<MetricFamily>,
    replace_all: bool,
    v: &Validation,
    conflict: RepeatConflict<'_>,
) -> Result<PreparedPush, PushError> {
    let mut series_total = 0usize;
    // A timestamp anywhere refuses the push before any other check of its metrics, as upstream
    // checks it first (so its error wins over a duplicate series or a bad label elsewhere in
    // the push); only the name and limit checks still run, and nothing is encoded.
    let has_timestamps = families
        .iter()
        .any(|f| f.metric.iter().any(|m| m.timestamp_ms.is_some()));
    // The grouping labels every metric lacking them gets: merged in when each metric is
    // checked and encoded, never copied into the metrics.
    let grouping = super::family::grouping_pairs(&key);
    let mut out: Vec<StoredFamily> = Vec::with_capacity(families.len());
    let mut block = BlockBuilder::default();
    for mut mf in families {
        let name = mf.name.take().unwrap_or_default();
        let Some(typ) = check_family(&name, mf.r#type, v)? else {
            continue;
        };
        let help: Arc<str> = super::family::intern(mf.help());
        let mut metrics = std::mem::take(&mut mf.metric);
        for m in metrics.iter_mut() {
            count_series(&mut series_total, series_count(m), v)?;
            if has_timestamps {
                continue;
            }
            check_value_field(&name, typ, m)?;
            rewrite_grouping_labels(&mut m.label, &key, LabelPair::name, |lp, value| {
                lp.value = Some(value.to_owned())
            });
            m.label.sort_by(|a, b| a.name().cmp(b.name()));
            let kinds = (m.summary.is_some(), m.histogram.is_some());
            check_labels(&name, kinds, Merged::new(&m.label, &grouping), v)?;
        }
        if has_timestamps {
            continue;
        }
        encode_family(
            &mut block,
            &mut out,
            replace_all,
            &name,
            help,
            typ,
            &metrics,
            &grouping,
            conflict,
        )?;
    }
    Ok(finish(key, block, out, replace_all, has_timestamps))
}

/// A metric of a parsed text body as the store encodes it: its label pairs (sorted, grouping
/// values applied) and its samples.
pub struct TextMetric<'x> {
    labels: &'x [(&'x str, &'x str)],
    metric: &'x ParsedMetric,
    points: &'x [Point],
}

impl<'x> EncodeMetric for TextMetric<'x> {
    type Label = (&'x str, &'x str);
    fn labels(&self) -> &[(&'x str, &'x str)] {
        self.labels
    }
    fn write_text(&self, out: &mut Vec<u8>, name: &str, typ: MetricType, pairs: &[(&str, &str)]) {
        crate::exposition::write_parsed_labelled(out, name, typ, self.metric, self.points, pairs);
    }
    fn write_proto(&self, typ: MetricType, pairs: &[(&str, &str)], out: &mut Vec<u8>) {
        crate::exposition::encode_parsed_labelled(typ, self.metric, self.points, pairs, out);
    }
}

/// [`prepare_push_against`] for a text body, straight from the parser's borrowed model: the
/// same checks, errors and encoding as `prepare_push_against(key, parsed.to_families(), ..)`,
/// without building the protobuf model's strings and vectors first.
pub fn prepare_text(
    key: GroupKey,
    parsed: &ParsedText<'_>,
    replace_all: bool,
    v: &Validation,
    conflict: RepeatConflict<'_>,
) -> Result<PreparedPush, PushError> {
    if parsed.has_timestamps() {
        // Refused anyway (the failure is recorded): the general path keeps the timestamps.
        return prepare_push_against(key, parsed.to_families(), replace_all, v, conflict);
    }
    let grouping = super::family::grouping_pairs(&key);
    // Every metric's label pairs, rewritten and sorted in place (nothing here can fail, so
    // doing it for all metrics first refuses a push with the same error as prepare_push).
    let mut pairs: Vec<(&str, &str)> = parsed
        .all_labels()
        .iter()
        .map(|(n, v)| (n.as_ref(), v.as_ref()))
        .collect();
    for f in parsed.families() {
        for m in parsed.metrics(f) {
            let labels = &mut pairs[parsed.label_range(m)];
            rewrite_grouping_labels(labels, &key, |p| p.0, |p, value| p.1 = value);
            labels.sort_by(|a, b| a.0.cmp(b.0));
        }
    }
    let mut series_total = 0usize;
    let mut out: Vec<StoredFamily> = Vec::with_capacity(16);
    let mut block = BlockBuilder::default();
    let mut views: Vec<TextMetric> = Vec::new();
    for f in parsed.families() {
        let Some(typ) = check_family(&f.name, f.typ.map(|t| t as i32), v)? else {
            continue;
        };
        let help: Arc<str> = super::family::intern(f.help.as_deref().unwrap_or_default());
        let kinds = (typ == MetricType::Summary, typ == MetricType::Histogram);
        views.clear();
        for m in parsed.metrics(f) {
            let points = parsed.points(m);
            let series = match typ {
                MetricType::Histogram => points.len() + 3,
                MetricType::Summary => points.len() + 2,
                _ => 1,
            };
            count_series(&mut series_total, series, v)?;
            let labels = &pairs[parsed.label_range(m)];
            check_labels(&f.name, kinds, Merged::new(labels, &grouping), v)?;
            views.push(TextMetric {
                labels,
                metric: m,
                points,
            });
        }
        encode_family(
            &mut block,
            &mut out,
            replace_all,
            &f.name,
            help,
            typ,
            &views,
            &grouping,
            conflict,
        )?;
    }
    Ok(finish(key, block, out, replace_all, false))
}

/// The checks of a family's name and type: its type, or `None` for a family the gateway owns
/// (dropped from the push).
pub(super) fn check_family(
    name: &str,
    raw_type: Option<i32>,
    v: &Validation,
) -> Result<Option<MetricType>, PushError> {
    if name.is_empty() {
        return Err(PushError::Malformed(
            "metric family has an empty name".into(),
        ));
    }
    if !is_valid_metric_name(name, v.names) {
        return Err(PushError::Malformed(format!(
            "{name:?} is not a valid metric name"
        )));
    }
    let typ = match raw_type {
        None => MetricType::Untyped,
        Some(raw) => match MetricType::try_from(raw) {
            Ok(MetricType::GaugeHistogram) => {
                return Err(PushError::Malformed(format!(
                    "metric family {name:?} has type GAUGE_HISTOGRAM, which the text exposition cannot carry"
                )))
            }
            Ok(t) => t,
            Err(_) => {
                return Err(PushError::Malformed(format!(
                    "metric family {name:?} has unknown type {raw}"
                )))
            }
        },
    };
    if name == PUSH_TIME_METRIC || name == PUSH_FAILURE_TIME_METRIC {
        // The gateway owns these per group; upstream silently replaces pushed ones.
        return Ok(None);
    }
    Ok(Some(typ))
}

fn count_series(total: &mut usize, series: usize, v: &Validation) -> Result<(), PushError> {
    *total += series;
    if *total > v.limits.max_series_per_push {
        return Err(too_many_series(v.limits.max_series_per_push));
    }
    Ok(())
}

/// The refusal of a push with more than `limit` series, whether the decoder stopped at the
/// limit or the checks found it.
pub fn too_many_series(limit: usize) -> PushError {
    PushError::LimitExceeded(format!(
        "push has more than {limit} series (--push.max-series-per-push)"
    ))
}

/// Encodes one checked family into `block` (and, for a POST, closes the block into `out`);
/// refuses a family that repeats a series (for the repeat, or for the family's conflict with
/// the store that `conflict` finds).
#[allow(clippy::too_many_arguments)]
fn encode_family<M: EncodeMetric>(
    block: &mut BlockBuilder,
    out: &mut Vec<StoredFamily>,
    replace_all: bool,
    name: &str,
    help: Arc<str>,
    typ: MetricType,
    metrics: &[M],
    grouping: &[(&str, &str)],
    conflict: RepeatConflict<'_>,
) -> Result<(), PushError> {
    let name = super::family::intern(name);
    let repeated =
        StoredFamily::encode_grouped_into(block, name.clone(), help, typ, metrics, grouping);
    if !replace_all {
        // A PUT's families share one block (the PUT that replaces them frees it whole); a
        // POST replaces some of a group's families, so each gets a block of its own and a
        // family replaced later never keeps its neighbours' bytes alive.
        std::mem::take(block).finish_into(out);
    }
    if let Some(series) = repeated {
        let labels = metrics
            .iter()
            .map(|m| Merged::new(m.labels(), grouping).collect::<Vec<_>>())
            .find(|pairs| super::family::series_hash_of(&name, pairs) == series)
            .map(|pairs| describe_pairs(pairs.into_iter()))
            .unwrap_or_default();
        if let Some(e) = conflict(&name, typ, &labels) {
            return Err(invalid(e));
        }
        return Err(invalid(format!(
            "collected metric {name:?} {{ {labels} }} was collected before with the same name and label values"
        )));
    }
    Ok(())
}

fn finish(
    key: GroupKey,
    block: BlockBuilder,
    mut out: Vec<StoredFamily>,
    replace_all: bool,
    has_timestamps: bool,
) -> PreparedPush {
    block.finish_into(&mut out);
    out.sort_by(|a, b| a.name.cmp(&b.name));
    // Text bodies have unique names already; protobuf streams are deduplicated (last wins) on
    // decode. Guard anyway so the store's sorted-unique invariant holds for every caller.
    out.dedup_by(|later, earlier| later.name == earlier.name);
    PreparedPush {
        key,
        families: out,
        replace_all,
        has_timestamps,
        aggregating: false,
        agg_digest: 0,
        ttl: 0.0,
    }
}

/// Re-checks a family read back from a snapshot (labels already applied): the same per-metric
/// rules as a push, so a tampered file cannot put an invalid exposition into the store.
pub fn validate_stored(
    name: &str,
    typ: MetricType,
    metrics: &mut [Metric],
    v: &Validation,
) -> Result<(), PushError> {
    let mut seen = HashSet::with_capacity(metrics.len());
    for m in metrics.iter_mut() {
        if m.timestamp_ms.is_some() {
            return Err(invalid("pushed metrics must not have timestamps".into()));
        }
        check_value_field(name, typ, m)?;
        m.label.sort_by(|a, b| a.name().cmp(b.name()));
        let kinds = (m.summary.is_some(), m.histogram.is_some());
        check_labels(name, kinds, Merged::new(&m.label, &[]), v)?;
        if !seen.insert(super::family::series_hash(name, m)) {
            return Err(invalid(format!("duplicate series in family {name:?}")));
        }
    }
    Ok(())
}

fn series_count(m: &Metric) -> usize {
    if let Some(h) = &m.histogram {
        h.bucket.len() + 3
    } else if let Some(s) = &m.summary {
        s.quantile.len() + 2
    } else {
        1
    }
}

pub(super) fn check_value_field(name: &str, typ: MetricType, m: &Metric) -> Result<(), PushError> {
    let ok = match typ {
        MetricType::Counter => m.counter.is_some(),
        MetricType::Gauge => m.gauge.is_some(),
        MetricType::Summary => m.summary.is_some(),
        MetricType::Untyped => m.untyped.is_some(),
        MetricType::Histogram | MetricType::GaugeHistogram => m.histogram.is_some(),
    };
    if ok {
        Ok(())
    } else {
        Err(invalid(format!(
            "collected metric {name:?} {{ {} }} is not a {}",
            describe_labels(m),
            typ.as_str_name()
        )))
    }
}

/// Grouping labels overwrite same-named body labels (the first of a repeated name; the repeat
/// is left for `check_labels` to refuse); the caller then sorts the body's pairs by name
/// (upstream's sanitizeLabels). The grouping labels the body lacks, and `instance=""` when there
/// is no instance label at all, are merged in by name where the metric is checked and encoded
/// ([`super::family::grouping_pairs`]).
fn rewrite_grouping_labels<'k, L>(
    labels: &mut [L],
    key: &'k GroupKey,
    name: impl Fn(&L) -> &str,
    mut set: impl FnMut(&mut L, &'k str),
) {
    // Grouping keys are small (a flag caps them); a fixed array avoids an allocation per metric.
    let mut done_small = [false; 64];
    let mut done_big;
    let done: &mut [bool] = if key.labels().len() <= done_small.len() {
        &mut done_small[..key.labels().len()]
    } else {
        done_big = vec![false; key.labels().len()];
        &mut done_big
    };
    for lp in labels.iter_mut() {
        let n = name(lp);
        if let Ok(i) = key.labels().binary_search_by(|(kn, _)| kn.as_str().cmp(n)) {
            if !done[i] {
                set(lp, &key.labels()[i].1);
                done[i] = true;
            }
        }
    }
}

/// `kinds`: whether the metric has a summary, a histogram (their `quantile`/`le` are reserved).
fn check_labels<L: LabelRef>(
    name: &str,
    kinds: (bool, bool),
    labels: Merged<L>,
    v: &Validation,
) -> Result<(), PushError> {
    let describe = || describe_pairs(labels.clone());
    let mut prev: Option<&str> = None;
    for (ln, lv) in labels.clone() {
        if prev == Some(ln) {
            return Err(invalid(format!(
                "collected metric {name:?} {{ {} }} has two or more labels with the same name: {ln}",
                describe()
            )));
        }
        if !is_valid_label_name(ln, v.names) || ln.starts_with("__") {
            return Err(invalid(format!(
                "collected metric {name:?} {{ {} }} has a label with an invalid name: {ln}",
                describe()
            )));
        }
        if kinds.0 && ln == "quantile" {
            return Err(invalid(format!(
                "collected metric {name:?} {{ {} }} must not have an explicit \"quantile\" label",
                describe()
            )));
        }
        if kinds.1 && ln == "le" {
            return Err(invalid(format!(
                "collected metric {name:?} {{ {} }} must not have an explicit \"le\" label",
                describe()
            )));
        }
        if ln.len() > v.limits.max_label_name_bytes {
            return Err(PushError::LimitExceeded(format!(
                "label name of {} bytes exceeds the limit of {} (--push.max-label-name-length)",
                ln.len(),
                v.limits.max_label_name_bytes
            )));
        }
        if lv.len() > v.limits.max_label_value_bytes {
            return Err(PushError::LimitExceeded(format!(
                "value of label {ln:?} has {} bytes, more than the limit of {} (--push.max-label-value-length)",
                lv.len(),
                v.limits.max_label_value_bytes
            )));
        }
        prev = Some(ln);
    }
    Ok(())
}

/// `name="value"` pairs for error messages, values truncated so errors stay readable.
pub fn describe_labels(m: &Metric) -> String {
    describe_pairs(m.label_pairs())
}

pub(super) fn describe_pairs<'a>(pairs: impl Iterator<Item = (&'a str, &'a str)>) -> String {
    let mut s = String::new();
    for (i, (name, v)) in pairs.enumerate() {
        if i > 0 {
            s.push(',');
        }
        let shown: String = v.chars().take(64).collect();
        s.push_str(name);
        s.push('=');
        s.push_str(&format!("{shown:?}"));
        if shown.len() < v.len() {
            s.push_str("...");
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::exposition::proto::{Counter, LabelPair};
    use proptest::prelude::*;

    /// The grouping rule as a reference, applied to a copy of the metric the straightforward
    /// way: overwrite, append what is missing (and `instance=""`), sort.
    fn reference_labels(m: &Metric, key: &GroupKey) -> Vec<LabelPair> {
        let mut labels = m.label.clone();
        let mut done = vec![false; key.labels().len()];
        let mut has_instance = false;
        for lp in labels.iter_mut() {
            if lp.name() == "instance" {
                has_instance = true;
            }
            if let Some(i) = key.labels().iter().position(|(n, _)| n == lp.name()) {
                if !done[i] {
                    lp.value = Some(key.labels()[i].1.clone());
                    done[i] = true;
                }
            }
        }
        for (i, (n, v)) in key.labels().iter().enumerate() {
            if !done[i] {
                has_instance |= n == "instance";
                labels.push(LabelPair {
                    name: Some(n.clone()),
                    value: Some(v.clone()),
                });
            }
        }
        if !has_instance {
            labels.push(LabelPair {
                name: Some("instance".into()),
                value: Some(String::new()),
            });
        }
        labels.sort_by(|a, b| a.name().cmp(b.name()));
        labels
    }

    fn names() -> impl Strategy<Value = String> {
        prop::sample::select(vec!["a", "env", "instance", "job", "le", "zone"])
            .prop_map(str::to_owned)
    }

    proptest! {
        #[test]
        fn merged_grouping_labels_encode_like_copied_ones(
            body in prop::collection::vec((names(), "[a-c]{0,3}"), 0..5),
            key in prop::collection::btree_map(names(), "[x-z]{0,3}", 1..4),
            value in 0u32..1000,
        ) {
            let metric = Metric {
                label: body
                    .iter()
                    .map(|(n, v)| LabelPair { name: Some(n.clone()), value: Some(v.clone()) })
                    .collect(),
                counter: Some(Counter { value: Some(f64::from(value)), exemplar: None }),
                ..Default::default()
            };
            let key = GroupKey::new(key);
            let mf = MetricFamily {
                name: Some("m".into()),
                help: Some("h".into()),
                r#type: Some(MetricType::Counter as i32),
                metric: vec![metric.clone()],
            };
            let got = prepare_push(key.clone(), vec![mf], true, &Validation::default());
            let want_labels = reference_labels(&metric, &key);
            let mut copied = metric.clone();
            copied.label = want_labels.clone();
            // The reference refuses what the store refuses: a repeated label name.
            let repeated = want_labels.windows(2).any(|w| w[0].name() == w[1].name());
            match got {
                Ok(p) => {
                    prop_assert!(!repeated, "{:?}", want_labels);
                    let want = StoredFamily::encode(
                        "m".into(), "h".into(), MetricType::Counter, vec![copied.clone()],
                    );
                    let fam = &p.families[0];
                    prop_assert_eq!(fam.text(), want.text());
                    prop_assert_eq!(fam.proto_metrics(), want.proto_metrics());
                    prop_assert_eq!(fam.series().collect::<Vec<_>>(), want.series().collect::<Vec<_>>());
                    prop_assert_eq!(&fam.to_metric_family().metric[0].label, &want_labels);
                }
                Err(e) => {
                    prop_assert!(repeated, "{e}");
                    let described = describe_labels(&copied);
                    prop_assert!(e.to_string().contains(&described), "{e} / {described}");
                }
            }
        }
    }

    /// One family's lines: maybe HELP, maybe TYPE, then samples (some of them with the
    /// suffixes and labels a summary or histogram folds, some invalid for the push).
    fn family_lines() -> impl Strategy<Value = Vec<String>> {
        let name = prop::sample::select(vec!["a", "b", "c_total", "push_time_seconds"]);
        let typ = prop::sample::select(vec![
            "counter",
            "gauge",
            "summary",
            "summary",
            "histogram",
            "histogram",
            "untyped",
        ]);
        let help = prop::sample::select(vec!["h", "a\\\\b", "x\\ny", "gr\u{fc}n", ""]);
        let suffix = prop::sample::select(vec!["", "", "_sum", "_count", "_bucket", "_bucket"]);
        let label = prop::sample::select(vec![
            "job=\"x\"",
            "job=\"j\"",
            "instance=\"i\"",
            "le=\"0.5\"",
            "le=\"1\"",
            "le=\"+Inf\"",
            "quantile=\"0.9\"",
            "quantile=\"0.5\"",
            "env=\"p\"",
            "env=\"q\"",
            "a=\"v\\\"q\"",
            "__x=\"1\"",
        ]);
        let value =
            prop::sample::select(vec!["1", "2.5", "NaN", "-3", "1e3", "18446744073709551616"]);
        let sample = (
            suffix,
            prop::collection::vec(label, 0..3),
            value,
            prop::bool::weighted(0.03),
        )
            .prop_map(|(sfx, labels, v, ts)| {
                // Labels in a fixed order, each name once: what clients write.
                let mut labels = labels;
                labels.sort_unstable();
                labels.dedup_by(|a, b| a.split('=').next() == b.split('=').next());
                let labels = if labels.is_empty() {
                    String::new()
                } else {
                    format!("{{{}}}", labels.join(","))
                };
                let ts = if ts { " 1234" } else { "" };
                (sfx, format!("{labels} {v}{ts}"))
            });
        (
            name,
            prop::option::weighted(0.5, help),
            prop::option::weighted(0.8, typ),
            prop::collection::vec(sample, 0..6),
        )
            .prop_map(|(n, help, typ, samples)| {
                let mut lines = Vec::new();
                if let Some(h) = help {
                    lines.push(format!("# HELP {n} {h}"));
                }
                if let Some(t) = typ {
                    lines.push(format!("# TYPE {n} {t}"));
                }
                lines.extend(
                    samples
                        .into_iter()
                        .map(|(sfx, rest)| format!("{n}{sfx}{rest}")),
                );
                lines
            })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]
        /// The text push path (borrowed model) prepares exactly what the protobuf model does:
        /// the same families byte for byte, or the same error.
        #[test]
        fn prepare_text_equals_prepare_push_of_the_protobuf_model(
            families in prop::collection::vec(family_lines(), 1..4),
            instance in prop::option::of("[a-c]{0,2}"),
            put in any::<bool>(),
        ) {
            let body = families.concat().join("\n") + "\n";
            let mut labels = vec![("job".to_string(), "j".to_string())];
            if let Some(i) = instance {
                labels.push(("instance".to_string(), i));
            }
            let key = GroupKey::new(labels);
            let v = Validation { limits: Limits { max_series_per_push: 12, ..Limits::default() }, ..Validation::default() };
            let Ok(parsed) = crate::exposition::parse_text_borrowed(body.as_bytes(), NameScheme::Legacy) else {
                prop_assert!(crate::exposition::parse_text(body.as_bytes(), NameScheme::Legacy).is_err());
                return Ok(());
            };
            let want = prepare_push(key.clone(), parsed.to_families(), put, &v);
            let got = prepare_text(key, &parsed, put, &v, NO_STORE);
            match (got, want) {
                (Ok(g), Ok(w)) => {
                    prop_assert_eq!(g.has_timestamps, w.has_timestamps);
                    prop_assert_eq!(g.families.len(), w.families.len());
                    for (a, b) in g.families.iter().zip(&w.families) {
                        prop_assert_eq!(&a.name, &b.name);
                        prop_assert_eq!(&a.help, &b.help);
                        prop_assert_eq!(a.typ, b.typ);
                        prop_assert_eq!(a.text(), b.text());
                        prop_assert_eq!(a.proto_metrics(), b.proto_metrics());
                        prop_assert!(a.same_series(b));
                        prop_assert_eq!(a.series().collect::<Vec<_>>(), b.series().collect::<Vec<_>>());
                    }
                }
                (Err(g), Err(w)) => prop_assert_eq!(g.to_string(), w.to_string()),
                (g, w) => prop_assert!(false, "{body}\ntext path: {g:?}\nmodel path: {w:?}"),
            }
        }
    }

    fn parsed(body: &str) -> Vec<MetricFamily> {
        crate::exposition::parse_text(body.as_bytes(), NameScheme::Legacy)
            .expect("test body parses")
    }

    #[test]
    fn families_of_a_put_share_one_block_and_of_a_post_have_one_each() {
        let body = "# TYPE a counter\na 1\n# TYPE b gauge\nb{x=\"1\"} 2\nb{x=\"2\"} 3\nc 4\n";
        let key = GroupKey::new([("job".to_string(), "j".to_string())]);
        let put = prepare_push(key.clone(), parsed(body), true, &Validation::default()).unwrap();
        let post = prepare_push(key, parsed(body), false, &Validation::default()).unwrap();
        let names = |p: &PreparedPush| {
            p.families
                .iter()
                .map(|f| f.name.to_string())
                .collect::<Vec<_>>()
        };
        assert_eq!(names(&put), ["a", "b", "c"]);
        assert_eq!(names(&post), names(&put));
        for (i, f) in put.families.iter().enumerate() {
            assert!(StoredFamily::same_block(f, &put.families[0]));
            // Same bytes either way: sharing a block changes where they are, not what they are.
            let g = &post.families[i];
            assert_eq!(f.text(), g.text());
            assert_eq!(f.proto_metrics(), g.proto_metrics());
            assert_eq!(
                f.series().collect::<Vec<_>>(),
                g.series().collect::<Vec<_>>()
            );
            assert!(f.same_series(g));
            for (j, h) in post.families.iter().enumerate() {
                assert_eq!(StoredFamily::same_block(g, h), i == j);
            }
        }
        // A family outlives the push (and the other handles) that shared its block.
        let kept = put.families[1].clone();
        drop(put);
        assert_eq!(kept.text(), post.families[1].text());
    }

    #[test]
    fn a_repeated_series_is_refused_with_its_labels_in_a_put_and_a_post() {
        let key = GroupKey::new([("job".to_string(), "j".to_string())]);
        for put in [true, false] {
            let body = "# TYPE a counter\na 1\nm{x=\"1\"} 1\nm{y=\"2\"} 2\nm{x=\"1\"} 3\n";
            let err =
                prepare_push(key.clone(), parsed(body), put, &Validation::default()).unwrap_err();
            let want = "collected metric \"m\" { instance=\"\",job=\"j\",x=\"1\" } was collected before with the same name and label values";
            assert!(err.to_string().ends_with(want), "put={put}: {err}");
        }
    }
}
