//! Realistic text-format push bodies (one histogram, counters, gauges), rendered once before a run.
//!
//! A batch job typically pushes a duration histogram plus a handful of counters and gauges, with a
//! label or two that are not grouping labels. Every group gets the same metric families (so upstream's
//! consistency check passes) and only the values change between pushes, which is done by cycling
//! through a few pre-rendered variants instead of formatting per request.

use std::fmt::Write as _;

use bytes::Bytes;

/// Upper bounds of the histogram's finite buckets; with `+Inf` that is 8 buckets.
const BUCKET_BOUNDS: [&str; 7] = ["0.005", "0.01", "0.025", "0.05", "0.1", "0.25", "1"];

/// Series one histogram contributes: 8 buckets, `_sum` and `_count`.
pub const HISTOGRAM_SERIES: usize = BUCKET_BOUNDS.len() + 3;

/// How many value variants are rendered; pushes cycle through them.
pub const VARIANTS: usize = 16;

const COUNTERS: [(&str, &str); 5] = [
    (
        "app_records_processed_total",
        "Records processed by the batch job.",
    ),
    (
        "app_bytes_written_total",
        "Bytes written to the object store.",
    ),
    (
        "app_errors_total",
        "Errors encountered while processing records.",
    ),
    (
        "app_retries_total",
        "Operations retried after a transient failure.",
    ),
    (
        "app_records_skipped_total",
        "Records skipped as duplicates.",
    ),
];

const GAUGES: [(&str, &str); 5] = [
    (
        "app_queue_depth",
        "Items waiting in the work queue at the end of the run.",
    ),
    ("app_workers_busy", "Workers busy at the end of the run."),
    (
        "app_last_success_timestamp_seconds",
        "Unix time of the last successful run.",
    ),
    ("app_cache_size_bytes", "Bytes held in the in-memory cache."),
    (
        "app_last_batch_duration_seconds",
        "Wall time of the last batch.",
    ),
];

/// The bodies one run pushes: `VARIANTS` renderings of the same series with different values.
#[derive(Debug, Clone)]
pub struct PushBodies {
    variants: Vec<Bytes>,
    series: usize,
}

impl PushBodies {
    /// Renders bodies of `series` series each: the histogram when there is room for it, then counters
    /// and gauges in equal shares.
    pub fn new(series: usize) -> Self {
        let variants = (0..VARIANTS)
            .map(|variant| Bytes::from(render(series, variant as u64)))
            .collect();
        Self { variants, series }
    }

    /// The body for the `seq`-th push; cloning `Bytes` is a reference-count bump, not a copy.
    pub fn pick(&self, seq: u64) -> Bytes {
        self.variants[(seq % self.variants.len() as u64) as usize].clone()
    }

    /// Series in every body.
    pub fn series(&self) -> usize {
        self.series
    }

    /// Bytes in one body (all variants are within a few bytes of each other).
    pub fn typical_len(&self) -> usize {
        self.variants[0].len()
    }
}

/// Renders one body with `series` series; `variant` only changes the values.
pub fn render(series: usize, variant: u64) -> String {
    let mut out = String::with_capacity(series * 120);
    let v = variant + 1;
    let mut rest = series;
    if series >= HISTOGRAM_SERIES {
        rest -= HISTOGRAM_SERIES;
        render_histogram(&mut out, v);
    }
    let counters = rest.div_ceil(2);
    let gauges = rest - counters;
    for i in 0..counters {
        let value = 1000 * v + 37 * i as u64;
        match COUNTERS.get(i) {
            Some((name, help)) => family(&mut out, name, help, "counter", value),
            None => family(
                &mut out,
                &format!("app_extra_{i}_total"),
                "Extra counter to reach the requested series count.",
                "counter",
                value,
            ),
        }
    }
    for i in 0..gauges {
        let value = 10 * v + i as u64;
        match GAUGES.get(i) {
            Some((name, help)) => family(&mut out, name, help, "gauge", value),
            None => family(
                &mut out,
                &format!("app_extra_{i}_gauge"),
                "Extra gauge to reach the requested series count.",
                "gauge",
                value,
            ),
        }
    }
    out
}

fn render_histogram(out: &mut String, v: u64) {
    const NAME: &str = "app_request_duration_seconds";
    const LABELS: &str = r#"env="prod",handler="/api/v1/ingest""#;
    let _ = writeln!(out, "# HELP {NAME} Time spent handling one ingest request.");
    let _ = writeln!(out, "# TYPE {NAME} histogram");
    // Cumulative counts that grow with each bucket, scaled by the variant.
    let mut cumulative = 0;
    for (i, le) in BUCKET_BOUNDS.iter().enumerate() {
        cumulative += v * (i as u64 + 3);
        let _ = writeln!(out, r#"{NAME}_bucket{{{LABELS},le="{le}"}} {cumulative}"#);
    }
    let count = cumulative + v;
    let _ = writeln!(out, r#"{NAME}_bucket{{{LABELS},le="+Inf"}} {count}"#);
    let _ = writeln!(out, "{NAME}_sum{{{LABELS}}} {}", count as f64 * 0.0421);
    let _ = writeln!(out, "{NAME}_count{{{LABELS}}} {count}");
}

fn family(out: &mut String, name: &str, help: &str, kind: &str, value: u64) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
    let _ = writeln!(out, r#"{name}{{env="prod"}} {value}"#);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn series_lines(body: &str) -> usize {
        body.lines().filter(|line| !line.starts_with('#')).count()
    }

    #[test]
    fn bodies_have_the_requested_series() {
        for series in [1, 5, 10, 11, 20, 21, 40] {
            assert_eq!(series_lines(&render(series, 3)), series, "series={series}");
        }
    }

    #[test]
    fn default_body_has_a_histogram_counters_and_gauges() {
        let body = render(20, 0);
        assert!(body.contains("# TYPE app_request_duration_seconds histogram"));
        assert_eq!(body.matches(" counter\n").count(), 5);
        assert_eq!(body.matches(" gauge\n").count(), 5);
        assert!(body.contains(r#"le="+Inf""#));
    }

    #[test]
    fn variants_differ_only_in_values() {
        let names = |body: &str| -> Vec<String> {
            body.lines()
                .map(|line| {
                    line.rsplit_once(' ')
                        .map_or(line, |(head, _)| head)
                        .to_owned()
                })
                .collect()
        };
        assert_ne!(render(20, 0), render(20, 1));
        assert_eq!(names(&render(20, 0)), names(&render(20, 1)));
    }
}
