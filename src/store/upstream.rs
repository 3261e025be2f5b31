//! The upstream Pushgateway's groups as pushgate groups, for a migration: from upstream's
//! persistence file (`exposition::gob`) or from its `/api/v1/metrics` (the import tool builds
//! the families and comes here). Upstream keeps a group's push and failure times as the values
//! of its `push_time_seconds` and `push_failure_time_seconds` gauges; pushgate keeps them as
//! the group's times and rebuilds those families, so they are taken out here. Every family is
//! then checked like a persistence file's (`codec::decode_group`).

use prost::Message;

use super::codec::{decode_group, snapshot_proto};
use super::group::GroupSnapshot;
use super::prepare::{PUSH_FAILURE_TIME_METRIC, PUSH_TIME_METRIC};
use crate::exposition::gob::{decode_upstream_file, UpstreamGroup};
use crate::exposition::{LabelPair, MetricFamily, NameScheme};

/// One upstream group: its grouping labels and its families, each with the time it was last
/// pushed (None: unknown, the group's push time is used).
pub struct UpstreamGroupParts {
    pub labels: Vec<(String, String)>,
    pub families: Vec<(MetricFamily, Option<f64>)>,
}

/// Decodes an upstream persistence file into pushgate groups (`i`-th group named in errors).
pub fn groups_from_upstream_file(
    bytes: &[u8],
    names: NameScheme,
) -> Result<Vec<GroupSnapshot>, String> {
    let groups = decode_upstream_file(bytes).map_err(|e| e.to_string())?;
    groups
        .into_iter()
        .enumerate()
        .map(|(i, g)| {
            let UpstreamGroup { labels, families } = g;
            let families = families
                .into_iter()
                .map(|f| {
                    let mf = MetricFamily::decode(f.proto.as_slice()).map_err(|e| {
                        format!("family {:?} of group #{i} is not a protobuf MetricFamily: {e}", f.name)
                    })?;
                    if mf.name() != f.name {
                        return Err(format!(
                            "family {:?} of group #{i} holds a family named {:?}",
                            f.name,
                            mf.name()
                        ));
                    }
                    Ok((mf, f.pushed_at))
                })
                .collect::<Result<Vec<_>, String>>()?;
            upstream_group(i, UpstreamGroupParts { labels, families }, names)
        })
        .collect()
}

/// Makes one upstream group a pushgate group, its times kept: the push and failure times from
/// upstream's two timing gauges, each family's own push time, and a version at the newer of
/// the two times (a hybrid-clock value, so that in a cluster a later write wins over it).
pub fn upstream_group(
    i: usize,
    parts: UpstreamGroupParts,
    names: NameScheme,
) -> Result<GroupSnapshot, String> {
    let gauge = |mf: &MetricFamily| -> Result<f64, String> {
        match mf.metric.as_slice() {
            [m] => m
                .gauge
                .as_ref()
                .map(|g| g.value())
                .filter(|v| v.is_finite())
                .ok_or_else(|| format!("{:?} of group #{i} is not a finite gauge", mf.name())),
            ms => Err(format!(
                "{:?} of group #{i} has {} metrics, not 1",
                mf.name(),
                ms.len()
            )),
        }
    };
    let mut push_time = None;
    let mut failure_time = 0.0;
    let mut families = Vec::with_capacity(parts.families.len());
    let mut family_push_times = Vec::with_capacity(parts.families.len());
    let mut newest_family: f64 = 0.0;
    for (mf, at) in parts.families {
        match mf.name() {
            PUSH_TIME_METRIC => push_time = Some(gauge(&mf)?),
            PUSH_FAILURE_TIME_METRIC => failure_time = gauge(&mf)?,
            _ => {
                newest_family = newest_family.max(at.unwrap_or(0.0));
                family_push_times.push(at);
                families.push(mf);
            }
        }
    }
    // Upstream always writes push_time_seconds; without it the newest family tells.
    let push_time = push_time.unwrap_or(newest_family);
    let family_push_times = family_push_times
        .into_iter()
        .map(|t| t.unwrap_or(push_time))
        .collect();
    let g = snapshot_proto::Group {
        key: parts
            .labels
            .into_iter()
            .map(|(n, v)| LabelPair {
                name: Some(n),
                value: Some(v),
            })
            .collect(),
        families,
        push_time,
        failure_time,
        last_push_successful: failure_time <= push_time,
        version: version_at(push_time.max(failure_time)),
        family_push_times,
        encoded_families: Vec::new(),
        // Upstream groups never expire.
        ttl: None,
        // Written whole at `version` (`Stamps::whole`).
        ..Default::default()
    };
    decode_group(i, g, names, None)
}

/// A hybrid-clock version (Unix milliseconds above 16 bits of counter) for a state as of
/// `unix_seconds`, never later than now: a later write anywhere in a cluster is newer.
pub fn version_at(unix_seconds: f64) -> u64 {
    let t = unix_seconds.min(crate::time::unix_seconds()).max(0.0);
    (((t * 1000.0) as u64) << 16).max(1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::exposition::proto::Gauge;
    use crate::exposition::Metric;

    fn gauge_family(name: &str, v: f64) -> MetricFamily {
        MetricFamily {
            name: Some(name.into()),
            r#type: Some(1),
            metric: vec![Metric {
                label: vec![LabelPair {
                    name: Some("job".into()),
                    value: Some("j".into()),
                }],
                gauge: Some(Gauge { value: Some(v) }),
                ..Default::default()
            }],
            ..Default::default()
        }
    }

    #[test]
    fn timing_gauges_become_the_groups_times_and_each_family_keeps_its_own() {
        let parts = UpstreamGroupParts {
            labels: vec![("job".into(), "j".into())],
            families: vec![
                (gauge_family("a", 1.0), Some(1500.0)),
                (gauge_family("b", 2.0), None),
                (gauge_family(PUSH_TIME_METRIC, 2000.5), Some(2000.5)),
                (gauge_family(PUSH_FAILURE_TIME_METRIC, 2100.0), Some(2100.0)),
            ],
        };
        let g = upstream_group(0, parts, NameScheme::Legacy).unwrap();
        assert_eq!(g.push_time, 2000.5);
        assert_eq!(g.failure_time, 2100.0);
        assert!(!g.last_push_successful);
        let times: Vec<(&str, f64)> = g.families.iter().map(|(f, t)| (&*f.name, *t)).collect();
        assert_eq!(times, [("a", 1500.0), ("b", 2000.5)]);
        assert_eq!(g.version, 2_100_000 << 16);
    }

    #[test]
    fn a_timing_gauge_of_another_shape_is_refused() {
        let mut bad = gauge_family(PUSH_TIME_METRIC, 1.0);
        bad.metric.push(bad.metric[0].clone());
        let parts = UpstreamGroupParts {
            labels: vec![("job".into(), "j".into())],
            families: vec![(bad, None)],
        };
        let err = upstream_group(3, parts, NameScheme::Legacy).unwrap_err();
        assert!(err.contains("group #3 has 2 metrics"), "{err}");
    }
}
