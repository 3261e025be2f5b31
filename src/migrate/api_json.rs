//! The upstream Pushgateway's `GET /api/v1/metrics` as pushgate groups. Upstream writes every
//! number with Go's `fmt.Sprint` (the shortest form that reads back to the same float, `+Inf`,
//! `NaN`) and each family's push time as RFC 3339 with nanoseconds, so nothing a scrape shows
//! is lost on the way; exemplars are not in that reply (the file import keeps them).

use serde_json::{Map, Value};
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

use crate::exposition::proto::{Bucket, Counter, Gauge, Histogram, Quantile, Summary, Untyped};
use crate::exposition::{LabelPair, Metric, MetricFamily, MetricType, NameScheme};
use crate::store::upstream::{upstream_group, UpstreamGroupParts};
use crate::store::GroupSnapshot;

/// Decodes a whole `/api/v1/metrics` reply into groups.
pub fn groups_from_api(body: &[u8], names: NameScheme) -> Result<Vec<GroupSnapshot>, String> {
    let root: Value =
        serde_json::from_slice(body).map_err(|e| format!("the reply is not JSON: {e}"))?;
    if root.get("status").and_then(Value::as_str) != Some("success") {
        return Err(format!(
            "the reply's status is {}, not \"success\"",
            root.get("status").unwrap_or(&Value::Null)
        ));
    }
    let data = root
        .get("data")
        .and_then(Value::as_array)
        .ok_or("the reply has no data array")?;
    data.iter()
        .enumerate()
        .map(|(i, g)| {
            let g = g.as_object().ok_or(format!("group #{i} is not an object"))?;
            upstream_group(i, group_parts(g).map_err(|e| format!("group #{i}: {e}"))?, names)
        })
        .collect()
}

fn group_parts(g: &Map<String, Value>) -> Result<UpstreamGroupParts, String> {
    let labels = string_map(g.get("labels"), "labels")?;
    let mut families = Vec::new();
    for (name, f) in g {
        if name == "labels" || name == "last_push_successful" {
            continue;
        }
        let f = f
            .as_object()
            .ok_or(format!("family {name:?} is not an object"))?;
        families.push(family(name, f).map_err(|e| format!("family {name:?}: {e}"))?);
    }
    Ok(UpstreamGroupParts { labels, families })
}

fn family(name: &str, f: &Map<String, Value>) -> Result<(MetricFamily, Option<f64>), String> {
    let text = |key: &str| f.get(key).and_then(Value::as_str);
    let typ = match text("type") {
        Some("COUNTER") => MetricType::Counter,
        Some("GAUGE") => MetricType::Gauge,
        Some("SUMMARY") => MetricType::Summary,
        Some("UNTYPED") => MetricType::Untyped,
        Some("HISTOGRAM") => MetricType::Histogram,
        other => return Err(format!("unsupported type {other:?}")),
    };
    let pushed_at = match text("time_stamp") {
        Some(t) => Some(
            OffsetDateTime::parse(t, &Rfc3339)
                .map_err(|e| format!("time_stamp {t:?}: {e}"))
                .map(|t| t.unix_timestamp_nanos() as f64 / 1e9)?,
        ),
        None => None,
    };
    let metrics = f
        .get("metrics")
        .and_then(Value::as_array)
        .ok_or("no metrics array")?
        .iter()
        .map(|m| metric(typ, m))
        .collect::<Result<Vec<_>, String>>()?;
    let mf = MetricFamily {
        name: Some(name.to_owned()),
        help: text("help").map(str::to_owned),
        r#type: Some(typ as i32),
        metric: metrics,
    };
    Ok((mf, pushed_at))
}

fn metric(typ: MetricType, m: &Value) -> Result<Metric, String> {
    let m = m.as_object().ok_or("a metric is not an object")?;
    let field = |key: &str| {
        m.get(key)
            .and_then(Value::as_str)
            .ok_or(format!("a metric has no {key}"))
    };
    let num = |key: &str| go_float(field(key)?);
    let count = |key: &str| go_count(field(key)?);
    let label = string_map(m.get("labels"), "a metric's labels")?
        .into_iter()
        .map(|(n, v)| LabelPair {
            name: Some(n),
            value: Some(v),
        })
        .collect();
    let mut out = Metric {
        label,
        ..Default::default()
    };
    match typ {
        MetricType::Counter => {
            out.counter = Some(Counter {
                value: Some(num("value")?),
                ..Default::default()
            })
        }
        MetricType::Gauge => {
            out.gauge = Some(Gauge {
                value: Some(num("value")?),
            })
        }
        MetricType::Untyped => {
            out.untyped = Some(Untyped {
                value: Some(num("value")?),
            })
        }
        MetricType::Summary => {
            let mut quantile = pairs(m.get("quantiles"), "quantiles", |q, v| {
                Ok(Quantile {
                    quantile: Some(go_float(q)?),
                    value: Some(go_float(v)?),
                })
            })?;
            quantile.sort_by(|a, b| a.quantile().total_cmp(&b.quantile()));
            out.summary = Some(Box::new(Summary {
                sample_count: Some(count("count")?),
                sample_sum: Some(num("sum")?),
                quantile,
            }));
        }
        _ => {
            let mut bucket = pairs(m.get("buckets"), "buckets", |le, c| {
                Ok(Bucket {
                    upper_bound: Some(go_float(le)?),
                    cumulative_count: Some(go_count(c)?),
                    ..Default::default()
                })
            })?;
            bucket.sort_by(|a, b| a.upper_bound().total_cmp(&b.upper_bound()));
            out.histogram = Some(Box::new(Histogram {
                sample_count: Some(count("count")?),
                sample_sum: Some(num("sum")?),
                bucket,
                ..Default::default()
            }));
        }
    }
    Ok(out)
}

/// A JSON object of strings, as (name, value) pairs.
fn string_map(v: Option<&Value>, what: &str) -> Result<Vec<(String, String)>, String> {
    pairs(v, what, |k, v| Ok((k.to_owned(), v.to_owned())))
}

fn pairs<T>(
    v: Option<&Value>,
    what: &str,
    mut each: impl FnMut(&str, &str) -> Result<T, String>,
) -> Result<Vec<T>, String> {
    let obj = v
        .and_then(Value::as_object)
        .ok_or(format!("{what} is not an object"))?;
    obj.iter()
        .map(|(k, v)| {
            let v = v
                .as_str()
                .ok_or(format!("{what}: {k:?} is not a string"))?;
            each(k, v)
        })
        .collect()
}

/// A float as Go's `fmt.Sprint` writes it.
fn go_float(s: &str) -> Result<f64, String> {
    match s {
        "+Inf" => Ok(f64::INFINITY),
        "-Inf" => Ok(f64::NEG_INFINITY),
        "NaN" => Ok(f64::NAN),
        _ => s
            .parse::<f64>()
            .ok()
            .filter(|v| v.is_finite())
            .ok_or(format!("{s:?} is not a number")),
    }
}

/// A count as Go's `fmt.Sprint` writes a `uint64`.
fn go_count(s: &str) -> Result<u64, String> {
    s.parse::<u64>().map_err(|_| format!("{s:?} is not a count"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_metric_type_and_the_times_come_back() {
        let body = br#"{"status":"success","data":[{"labels":{"job":"j","x":""},"last_push_successful":false,
          "c":{"time_stamp":"2026-12-07T01:55:41.123456789Z","type":"COUNTER","help":"h","metrics":[{"labels":{"job":"j","x":"","instance":""},"value":"1.5e-07"}]},
          "s":{"time_stamp":"2026-12-07T01:55:41Z","type":"SUMMARY","metrics":[{"labels":{"job":"j","x":"","instance":""},"quantiles":{"0.9":"NaN","0.5":"1"},"count":"3","sum":"10"}]},
          "h":{"time_stamp":"2026-12-07T01:55:41Z","type":"HISTOGRAM","metrics":[{"labels":{"job":"j","x":"","instance":""},"buckets":{"+Inf":"3","0.1":"1"},"count":"3","sum":"+Inf"}]},
          "push_time_seconds":{"time_stamp":"2026-12-07T01:55:41Z","type":"GAUGE","metrics":[{"labels":{"job":"j","x":"","instance":""},"value":"1.7966085411234567e+09"}]},
          "push_failure_time_seconds":{"time_stamp":"2026-12-07T01:55:42Z","type":"GAUGE","metrics":[{"labels":{"job":"j","x":"","instance":""},"value":"1.796608542e+09"}]}}]}"#;
        let groups = groups_from_api(body, NameScheme::Legacy).unwrap();
        let [g] = groups.as_slice() else { panic!("{groups:?}") };
        assert_eq!(g.push_time, 1.7966085411234567e9);
        assert_eq!(g.failure_time, 1.796608542e9);
        assert!(!g.last_push_successful);
        let fams: Vec<(&str, f64)> = g.families.iter().map(|(f, t)| (&*f.name, *t)).collect();
        assert_eq!(
            fams,
            [("c", 1796608541.1234567), ("h", 1796608541.0), ("s", 1796608541.0)]
        );
        let text = String::from_utf8(g.families[1].0.text().to_vec()).unwrap();
        assert!(text.contains("h_bucket{instance=\"\",job=\"j\",x=\"\",le=\"0.1\"} 1\n"), "{text}");
        assert!(text.contains("h_sum{instance=\"\",job=\"j\",x=\"\"} +Inf\n"), "{text}");
    }

    #[test]
    fn malformed_replies_are_refused_with_the_reason() {
        for (body, expect) in [
            (&b"<html>"[..], "not JSON"),
            (br#"{"status":"error","data":[]}"#, "status"),
            (br#"{"status":"success","data":[{"labels":{"job":"j"},"c":{"type":"WEIRD","metrics":[]}}]}"#, "unsupported type"),
            (br#"{"status":"success","data":[{"labels":{"job":"j"},"c":{"type":"GAUGE","metrics":[{"labels":{},"value":"0x1"}]}}]}"#, "not a number"),
            (br#"{"status":"success","data":[{"labels":{"job":"j"},"c":{"type":"GAUGE","time_stamp":"yesterday","metrics":[]}}]}"#, "time_stamp"),
        ] {
            let err = groups_from_api(body, NameScheme::Legacy).unwrap_err();
            assert!(err.contains(expect), "{err}");
        }
    }
}
