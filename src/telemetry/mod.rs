//! Self-observability: the gateway's own metrics (a `metrics` recorder rendered into the
//! scrape), the process collector, and logging setup.

pub mod logging;
pub mod metrics;
pub mod process;
pub mod recorder;

use crate::exposition::MetricType;
use crate::store::{ReservedNames, Store, StoredFamily};
pub use recorder::SelfRecorder;

/// Sizes of what a node holds locally, for its self-metrics (`own_families`).
#[derive(Debug, Clone, Copy, Default)]
pub struct LocalStats {
    pub groups: usize,
    pub series: usize,
    pub encoded_bytes: usize,
}

impl LocalStats {
    /// What `store` holds now.
    pub fn of(store: &Store) -> LocalStats {
        LocalStats {
            groups: store.group_count(),
            series: store.series_count(),
            encoded_bytes: store.encoded_bytes(),
        }
    }
}

/// Names the gateway exposes itself, for the store's consistency check.
pub fn reserved_names() -> ReservedNames {
    ReservedNames::new(
        metrics::SELF_FAMILIES
            .iter()
            .map(|(n, t, h)| ((*n).to_owned(), *t, (*h).to_owned())),
    )
}

/// A counter, by `label` (one series per value, or one without labels when `values` is
/// empty), registered at zero: present from start, so `rate()` and alerts see it before its
/// first event (Prometheus reads a series that appears at 1 as no increase).
pub fn preregister(name: &'static str, label: &'static str, values: &[&'static str]) {
    if values.is_empty() {
        ::metrics::counter!(name).increment(0);
    }
    for v in values {
        ::metrics::counter!(name, label => *v).increment(0);
    }
}

/// Every counter a node has (single node or cluster), at zero.
pub fn preregister_node() {
    use self::metrics as m;
    let counters: &[(&'static str, &'static str, &[&'static str])] = &[
        (m::REFUSED_PUSHES_TOTAL, "reason", &["invalid", "limit", "unavailable", "busy"]),
        (m::PERSISTENCE_WRITES_TOTAL, "result", &["success", "error"]),
        (m::GROUPS_EXPIRED_TOTAL, "", &[]),
        (m::INCONSISTENT_DROPPED_TOTAL, "", &[]),
        (m::HTTP_CONNECTIONS_REFUSED_TOTAL, "reason", &["limit", "accept_error"]),
        (m::HTTP_CONNECTIONS_CLOSED_TOTAL, "reason", &["no_request", "idle"]),
        (m::AUTH_CHECKS_REFUSED_TOTAL, "reason", &["queue_full", "client_limit"]),
        (m::AUTH_BCRYPT_CHECKS_TOTAL, "", &[]),
    ];
    for (name, label, values) in counters {
        preregister(name, label, values);
    }
}

/// The self-metric families for one scrape: recorded metrics, build info, process stats.
pub fn own_families(recorder: &SelfRecorder, local: LocalStats) -> Vec<StoredFamily> {
    use recorder::{counter_metric, gauge_metric};
    let mut extra = vec![
        (
            metrics::BUILD_INFO.to_owned(),
            MetricType::Gauge,
            gauge_metric(
                &[
                    ("branch", ""),
                    ("goversion", "rust"),
                    ("revision", option_env!("PUSHGATE_REVISION").unwrap_or("")),
                    ("version", env!("CARGO_PKG_VERSION")),
                ],
                1.0,
            ),
        ),
        (
            metrics::GROUPS.to_owned(),
            MetricType::Gauge,
            gauge_metric(&[], local.groups as f64),
        ),
        (
            metrics::SERIES.to_owned(),
            MetricType::Gauge,
            gauge_metric(&[], local.series as f64),
        ),
        (
            metrics::STORE_ENCODED_BYTES.to_owned(),
            MetricType::Gauge,
            gauge_metric(&[], local.encoded_bytes as f64),
        ),
    ];
    let p = process::read();
    let gauges = [
        ("process_max_fds", p.max_fds),
        ("process_open_fds", p.open_fds),
        ("process_resident_memory_bytes", p.resident_bytes),
        ("process_start_time_seconds", p.start_time),
        ("process_virtual_memory_bytes", p.virtual_bytes),
        ("process_virtual_memory_max_bytes", p.virtual_max_bytes),
    ];
    for (name, v) in gauges {
        if let Some(v) = v {
            extra.push((name.to_owned(), MetricType::Gauge, gauge_metric(&[], v)));
        }
    }
    if let Some(cpu) = p.cpu_seconds {
        extra.push((
            "process_cpu_seconds_total".to_owned(),
            MetricType::Counter,
            counter_metric(cpu),
        ));
    }
    recorder.families(extra)
}
