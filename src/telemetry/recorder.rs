//! A `metrics` recorder that keeps the gateway's own metrics in memory and renders them as
//! exposition families, so they merge into the same sorted scrape as the pushed metrics.
//!
//! Histograms are exposed as summaries over a sliding window, like upstream's push duration
//! and size summaries (quantiles 0.1, 0.5, 0.9 over the last ten minutes).

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use metrics::{
    Counter, Gauge, Histogram, HistogramFn, Key, KeyName, Metadata, Recorder, SharedString, Unit,
};
use parking_lot::{Mutex, RwLock};

use super::metrics::{lookup, SUMMARY_QUANTILES};
use crate::exposition::{proto, Metric, MetricType};
use crate::store::StoredFamily;

const WINDOW: Duration = Duration::from_secs(600);
const WINDOW_SAMPLES: usize = 2048;

/// A summary: count and sum for ever, plus a bounded window of recent observations.
#[derive(Default)]
pub struct SummaryCell {
    state: Mutex<SummaryState>,
}

#[derive(Default)]
struct SummaryState {
    count: u64,
    sum: f64,
    window: VecDeque<(Instant, f64)>,
}

impl HistogramFn for SummaryCell {
    fn record(&self, value: f64) {
        let now = Instant::now();
        let mut s = self.state.lock();
        s.count += 1;
        s.sum += value;
        if s.window.len() == WINDOW_SAMPLES {
            s.window.pop_front();
        }
        s.window.push_back((now, value));
    }
}

impl SummaryCell {
    fn snapshot(&self) -> proto::Summary {
        let now = Instant::now();
        let mut s = self.state.lock();
        while s
            .window
            .front()
            .is_some_and(|(t, _)| now.duration_since(*t) > WINDOW)
        {
            s.window.pop_front();
        }
        let mut values: Vec<f64> = s.window.iter().map(|(_, v)| *v).collect();
        let (count, sum) = (s.count, s.sum);
        drop(s);
        values.sort_by(|a, b| a.total_cmp(b));
        let quantile = SUMMARY_QUANTILES
            .iter()
            .map(|q| proto::Quantile {
                quantile: Some(*q),
                value: Some(if values.is_empty() {
                    f64::NAN
                } else {
                    let idx = ((values.len() as f64) * q).ceil() as usize;
                    values[idx.clamp(1, values.len()) - 1]
                }),
            })
            .collect();
        proto::Summary {
            sample_count: Some(count),
            sample_sum: Some(sum),
            quantile,
        }
    }
}

#[derive(Default)]
struct Registry {
    counters: RwLock<HashMap<Key, Arc<AtomicU64>>>,
    gauges: RwLock<HashMap<Key, Arc<AtomicU64>>>,
    summaries: RwLock<HashMap<Key, Arc<SummaryCell>>>,
}

/// The recorder; clone it freely, all clones share one registry.
#[derive(Clone, Default)]
pub struct SelfRecorder {
    reg: Arc<Registry>,
}

fn get_or_insert<T: Default>(map: &RwLock<HashMap<Key, Arc<T>>>, key: &Key) -> Arc<T> {
    if let Some(v) = map.read().get(key) {
        return v.clone();
    }
    map.write().entry(key.clone()).or_default().clone()
}

impl Recorder for SelfRecorder {
    fn describe_counter(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_gauge(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_histogram(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}

    fn register_counter(&self, key: &Key, _: &Metadata<'_>) -> Counter {
        Counter::from_arc(get_or_insert(&self.reg.counters, key))
    }
    fn register_gauge(&self, key: &Key, _: &Metadata<'_>) -> Gauge {
        Gauge::from_arc(get_or_insert(&self.reg.gauges, key))
    }
    fn register_histogram(&self, key: &Key, _: &Metadata<'_>) -> Histogram {
        Histogram::from_arc(get_or_insert(&self.reg.summaries, key))
    }
}

fn labels_of(key: &Key) -> Vec<proto::LabelPair> {
    let mut labels: Vec<proto::LabelPair> = key
        .labels()
        .map(|l| proto::LabelPair {
            name: Some(l.key().to_owned()),
            value: Some(l.value().to_owned()),
        })
        .collect();
    labels.sort_by(|a, b| a.name().cmp(b.name()));
    labels
}

impl SelfRecorder {
    /// Every recorded metric as exposition text (for tests that look for a line).
    #[cfg(test)]
    pub fn text(&self) -> String {
        self.families(vec![])
            .iter()
            .map(|f| String::from_utf8_lossy(f.text()).into_owned())
            .collect()
    }

    /// Every recorded metric plus `extra` metrics, grouped into families sorted by name.
    pub fn families(&self, extra: Vec<(String, MetricType, Metric)>) -> Vec<StoredFamily> {
        let mut by_name: BTreeMap<String, (MetricType, Vec<Metric>)> = BTreeMap::new();
        let mut add = |name: &str, typ: MetricType, m: Metric| {
            by_name
                .entry(name.to_owned())
                .or_insert_with(|| (typ, Vec::new()))
                .1
                .push(m);
        };
        for (k, v) in self.reg.counters.read().iter() {
            let m = Metric {
                label: labels_of(k),
                counter: Some(proto::Counter {
                    value: Some(v.load(Ordering::Relaxed) as f64),
                    exemplar: None,
                }),
                ..Default::default()
            };
            add(k.name(), MetricType::Counter, m);
        }
        for (k, v) in self.reg.gauges.read().iter() {
            let m = Metric {
                label: labels_of(k),
                gauge: Some(proto::Gauge {
                    value: Some(f64::from_bits(v.load(Ordering::Relaxed))),
                }),
                ..Default::default()
            };
            add(k.name(), MetricType::Gauge, m);
        }
        let summaries: Vec<(Key, Arc<SummaryCell>)> = self
            .reg
            .summaries
            .read()
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        for (k, v) in summaries {
            let m = Metric {
                label: labels_of(&k),
                summary: Some(Box::new(v.snapshot())),
                ..Default::default()
            };
            add(k.name(), MetricType::Summary, m);
        }
        for (name, typ, m) in extra {
            add(&name, typ, m);
        }
        by_name
            .into_iter()
            .map(|(name, (typ, metrics))| {
                let help = lookup(&name).map(|(_, h)| h).unwrap_or("");
                StoredFamily::encode(name.into(), help.into(), typ, metrics)
            })
            .collect()
    }
}

/// A gauge metric without labels (or with the given ones), for `extra`.
pub fn gauge_metric(labels: &[(&str, &str)], value: f64) -> Metric {
    Metric {
        label: labels
            .iter()
            .map(|(n, v)| proto::LabelPair {
                name: Some((*n).to_owned()),
                value: Some((*v).to_owned()),
            })
            .collect(),
        gauge: Some(proto::Gauge { value: Some(value) }),
        ..Default::default()
    }
}

pub fn counter_metric(value: f64) -> Metric {
    Metric {
        counter: Some(proto::Counter {
            value: Some(value),
            exemplar: None,
        }),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_and_renders_sorted_families() {
        let r = SelfRecorder::default();
        metrics::with_local_recorder(&r, || {
            metrics::counter!("b_total", "code" => "200").increment(3);
            metrics::gauge!("a_gauge").set(1.5);
            for i in 1..=10 {
                metrics::histogram!("c_seconds", "method" => "put").record(i as f64);
            }
        });
        let fams = r.families(vec![]);
        let names: Vec<&str> = fams.iter().map(|f| &*f.name).collect();
        assert_eq!(names, ["a_gauge", "b_total", "c_seconds"]);
        let text = String::from_utf8(fams[2].text().to_vec()).unwrap();
        assert!(
            text.contains("c_seconds{method=\"put\",quantile=\"0.5\"} 5\n"),
            "{text}"
        );
        assert!(
            text.contains("c_seconds_count{method=\"put\"} 10\n"),
            "{text}"
        );
    }
}
