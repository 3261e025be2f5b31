//! Where a line's sample goes: the family its name belongs to (a summary's or histogram's
//! `_sum`, `_count` and `_bucket` lines belong to the base name's family), and the metric it
//! folds into (lines of one summary or histogram with the same labels make one metric).

use std::borrow::Cow;

use crate::exposition::proto::MetricType;

use super::model::{ParsedFamily, ParsedMetric};
use super::parser::Parser;

impl<'a> Parser<'a> {
    pub(super) fn family_name(&self) -> &str {
        self.families.get(self.fam).map_or("", |mf| &mf.name)
    }

    pub(super) fn family_type(&self) -> MetricType {
        self.families
            .get(self.fam)
            .map_or(MetricType::Untyped, ParsedFamily::metric_type)
    }

    /// Finds the family a name belongs to: the family of that exact name, else the summary or
    /// histogram it is the `_count`/`_sum`(/`_bucket`) of, else a new family.
    pub(super) fn set_or_create_family(&mut self, name: Cow<'a, str>) {
        self.is_count = false;
        self.is_sum = false;
        if self
            .families
            .get(self.fam)
            .is_some_and(|mf| mf.name == name)
        {
            return;
        }
        if let Some((fam, is_count, is_sum)) = self.memo {
            if self.memo_name == name {
                (self.fam, self.is_count, self.is_sum) = (fam, is_count, is_sum);
                return;
            }
        }
        // A clone of a borrowed name is a copy of the reference.
        self.resolve_family(name.clone());
        self.memo_name = name;
        self.memo = Some((self.fam, self.is_count, self.is_sum));
    }

    fn resolve_family(&mut self, name: Cow<'a, str>) {
        if let Some(&i) = self.by_name.get(name.as_ref()) {
            self.fam = i;
            return;
        }
        let is_count = name.len() > 6 && name.ends_with("_count");
        let is_sum = name.len() > 4 && name.ends_with("_sum");
        let is_bucket = name.len() > 7 && name.ends_with("_bucket");
        let base = if is_count {
            &name[..name.len() - 6]
        } else if is_sum {
            &name[..name.len() - 4]
        } else if is_bucket {
            &name[..name.len() - 7]
        } else {
            &name
        };
        if is_count || is_sum || is_bucket {
            if let Some(&i) = self.by_name.get(base) {
                let folds = match self.families[i].typ {
                    Some(MetricType::Summary) => !is_bucket,
                    Some(MetricType::Histogram) => true,
                    _ => false,
                };
                if folds {
                    self.fam = i;
                    self.is_count = is_count;
                    self.is_sum = is_sum;
                    return;
                }
            }
        }
        self.fam = self.families.len();
        self.families.push(ParsedFamily {
            name: name.clone(),
            help: None,
            typ: None,
            metrics: 0..0,
        });
        self.by_name.insert(name, self.fam);
    }

    /// Appends a metric with the line's labels to the current family.
    pub(super) fn push_metric(&mut self) -> usize {
        // Exactly the line's labels: the store merges the grouping labels in where it encodes,
        // it does not add them to the metric.
        let start = self.all_labels.len();
        self.all_labels.append(&mut self.labels);
        self.metrics.push(ParsedMetric {
            family: self.fam,
            labels: start..self.all_labels.len(),
            value: 0.0,
            count: None,
            sum: None,
            points: 0..0,
            timestamp_ms: None,
        });
        self.metrics.len() - 1
    }

    /// Places a summary or histogram sample line: into the metric with the same labels if one
    /// exists (the line's own labels are then dropped, as upstream does), else a new metric.
    pub(super) fn place_folded_metric(&mut self) -> usize {
        // The lines of one histogram or summary (buckets, sum, count) usually repeat the labels
        // of the line before in the same order: then they fold into the metric that line was
        // placed in (equal labels make equal keys), found without building the key.
        if let Some(m) = self.metrics.get(self.metric_idx).filter(|_| self.shortcuts) {
            if m.family == self.fam && self.all_labels[m.labels.clone()] == self.labels[..] {
                return self.metric_idx;
            }
        }
        let mut key = std::mem::take(&mut self.key);
        key.clear();
        key.extend_from_slice(self.family_name().as_bytes());
        key.push(0xff);
        let mut order = std::mem::take(&mut self.order);
        order.clear();
        order.extend(0..self.labels.len());
        order.sort_unstable_by(|&a, &b| self.labels[a].0.cmp(&self.labels[b].0));
        for &i in &order {
            let (name, value) = &self.labels[i];
            // 0xff never occurs in UTF-8, so the key is unambiguous.
            key.extend_from_slice(name.as_bytes());
            key.push(0xff);
            key.extend_from_slice(value.as_bytes());
            key.push(0xff);
        }
        self.order = order;
        let idx = match self.folded.get(key.as_slice()) {
            Some(&idx) => idx,
            None => {
                let idx = self.push_metric();
                self.folded.insert(key.clone(), idx);
                idx
            }
        };
        self.key = key;
        idx
    }

    /// The index of the current metric in `metrics`.
    pub(super) fn current_metric(&mut self) -> usize {
        if self.metric_idx >= self.metrics.len() {
            // Not reachable: reading_value always places the metric first.
            self.labels.clear();
            self.metric_idx = self.push_metric();
        }
        self.metric_idx
    }
}
