//! Text format 0.0.4 encoder (behaviour of prometheus/common expfmt's MetricFamilyToText).

use super::{Metric, MetricType};

pub fn write_help_and_type(out: &mut Vec<u8>, name: &str, help: Option<&str>, typ: MetricType) {
    todo!("{out:?} {name} {help:?} {typ:?}")
}

pub fn write_metric(out: &mut Vec<u8>, name: &str, typ: MetricType, metric: &Metric) {
    todo!("{out:?} {name} {typ:?} {metric:?}")
}

pub fn write_float(out: &mut Vec<u8>, v: f64) {
    todo!("{out:?} {v}")
}
