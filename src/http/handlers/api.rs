//! The API routes, upstream's JSON with CORS headers:
//!
//! - `GET P/api/v1/status`: 200, build information, flags and start time;
//! - `GET P/api/v1/metrics`: 200, every group with its families;
//! - `PUT P/api/v1/admin/wipe`: 202 every group deleted (503 when the cluster cannot take the
//!   write), 404 without `--web.enable-admin-api`;
//! - `OPTIONS P/api/v1/*`: 200 (the CORS preflight);
//! - 405 another method on the three routes above, 404 another method on any other
//!   `P/api/v1/*` path.
//!
//! Every reply carries the CORS headers except the answer to the wipe itself.

use axum::response::Response;
use http::{header, HeaderValue, Method, StatusCode};
use serde_json::{json, Map, Value};

use crate::exposition::{write_float, Metric, MetricType};
use crate::gateway::Gateway;
use crate::http::request_metrics::counted;
use crate::http::response::{empty, error_text, method_not_allowed, not_found, plain, typed};
use crate::http::state::{AppState, HttpConfig};
use crate::store::GroupSnapshot;

pub(crate) async fn status<G: Gateway>(st: &AppState<G>, method: &Method) -> Response {
    api_reply(method, "api/v1/status", async { status_json(&st.config) }).await
}

pub(crate) async fn metrics<G: Gateway>(st: &AppState<G>, method: &Method) -> Response {
    api_reply(method, "api/v1/metrics", async {
        match st.gateway.groups().await {
            Ok(groups) => metrics_json(&groups),
            Err(refused) => plain(StatusCode::SERVICE_UNAVAILABLE, refused.0),
        }
    })
    .await
}

pub(crate) async fn wipe<G: Gateway>(st: &AppState<G>, method: &Method) -> Response {
    if !st.config.enable_admin_api {
        return with_cors(not_found());
    }
    match *method {
        Method::PUT => {
            let resp = match st.gateway.wipe().await {
                Ok(()) => empty(StatusCode::ACCEPTED),
                Err(e) => error_text(e.status(), &e),
            };
            counted("wipe", method, resp)
        }
        Method::OPTIONS => with_cors(empty(StatusCode::OK)),
        _ => with_cors(method_not_allowed("OPTIONS, PUT")),
    }
}

/// Any other `P/api/v1/*` path: only the CORS preflight is answered.
pub(crate) fn options(method: &Method) -> Response {
    match *method {
        Method::OPTIONS => with_cors(empty(StatusCode::OK)),
        _ => with_cors(not_found()),
    }
}

/// A read-only API route: `body` for GET, the preflight for OPTIONS, counted, with CORS.
async fn api_reply(
    method: &Method,
    handler: &'static str,
    body: impl std::future::Future<Output = Response>,
) -> Response {
    let resp = match *method {
        Method::GET => body.await,
        Method::OPTIONS => empty(StatusCode::OK),
        _ => method_not_allowed("GET, OPTIONS"),
    };
    with_cors(counted(handler, method, resp))
}

fn with_cors(mut r: Response) -> Response {
    let h = r.headers_mut();
    h.insert("access-control-allow-origin", HeaderValue::from_static("*"));
    h.insert(
        "access-control-allow-methods",
        HeaderValue::from_static("GET, POST, DELETE, OPTIONS"),
    );
    h.insert(
        "access-control-allow-headers",
        HeaderValue::from_static("Accept, Authorization, Content-Type, Origin"),
    );
    h.insert(
        "access-control-expose-headers",
        HeaderValue::from_static("Date"),
    );
    h.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("no-cache, no-store, must-revalidate"),
    );
    r
}

fn json_response(v: &Value) -> Response {
    typed(StatusCode::OK, v.to_string(), "application/json")
}

/// Go's `fmt.Sprint(float64)`: the exposition float format, except that negative zero keeps
/// its sign (the text exposition writes every zero as `0`).
pub(crate) fn go_float(v: f64) -> String {
    if v == 0.0 && v.is_sign_negative() {
        return "-0".to_owned();
    }
    let mut b = Vec::with_capacity(24);
    write_float(&mut b, v);
    String::from_utf8(b).unwrap_or_default()
}

/// RFC 3339 with nanoseconds and trailing zeros trimmed, in UTC (Go's RFC3339Nano).
pub(crate) fn rfc3339_nano(unix_seconds: f64) -> String {
    let nanos = (unix_seconds * 1e9).round() as i128;
    let Ok(t) = time::OffsetDateTime::from_unix_timestamp_nanos(nanos) else {
        return "0001-01-01T00:00:00Z".into();
    };
    let mut s = format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second()
    );
    let frac = t.nanosecond();
    if frac != 0 {
        let f = format!("{frac:09}");
        s.push('.');
        s.push_str(f.trim_end_matches('0'));
    }
    s.push('Z');
    s
}

/// Upstream's build information keys, for `/api/v1/status` and the status page.
pub(crate) fn build_information() -> [(&'static str, &'static str); 6] {
    [
        ("branch", ""),
        ("buildDate", ""),
        ("buildUser", ""),
        ("goVersion", "rust"),
        ("revision", option_env!("PUSHGATE_REVISION").unwrap_or("")),
        ("version", env!("CARGO_PKG_VERSION")),
    ]
}

/// The `/api/v1/status` document: build information, flags and start time.
fn status_json(cfg: &HttpConfig) -> Response {
    let flags = sorted_object(
        cfg.flags
            .iter()
            .map(|(k, v)| (k.clone(), Value::String(v.clone())))
            .collect(),
    );
    let v = json!({
        "status": "success",
        "data": {
            "build_information": sorted_object(
                build_information()
                    .into_iter()
                    .map(|(k, v)| (k.to_owned(), Value::String(v.to_owned())))
                    .collect()
            ),
            "flags": flags,
            "start_time": rfc3339_nano(cfg.start_time),
        }
    });
    json_response(&v)
}

fn labels_json(m: &Metric) -> Value {
    sorted_object(
        m.label
            .iter()
            .map(|l| (l.name().to_owned(), Value::String(l.value().to_owned())))
            .collect(),
    )
}

/// The value of a counter, gauge or untyped metric (0 when the metric lacks it).
pub(crate) fn simple_value(m: &Metric, typ: MetricType) -> f64 {
    match typ {
        MetricType::Counter => m.counter.as_ref().map(|c| c.value()),
        MetricType::Gauge => m.gauge.as_ref().map(|g| g.value()),
        _ => m.untyped.as_ref().map(|u| u.value()),
    }
    .unwrap_or(0.0)
}

fn metric_json(m: &Metric, typ: MetricType) -> Value {
    let mut o: Vec<(String, Value)> = Vec::new();
    o.push(("labels".into(), labels_json(m)));
    match typ {
        MetricType::Summary => {
            let s = m.summary.clone().unwrap_or_default();
            let q = sorted_object(
                s.quantile
                    .iter()
                    .map(|q| (go_float(q.quantile()), Value::String(go_float(q.value()))))
                    .collect(),
            );
            o.push(("quantiles".into(), q));
            o.push(("count".into(), Value::String(s.sample_count().to_string())));
            o.push(("sum".into(), Value::String(go_float(s.sample_sum()))));
        }
        MetricType::Histogram | MetricType::GaugeHistogram => {
            let h = m.histogram.clone().unwrap_or_default();
            let b = sorted_object(
                h.bucket
                    .iter()
                    .map(|b| {
                        (
                            go_float(b.upper_bound()),
                            Value::String(b.cumulative_count().to_string()),
                        )
                    })
                    .collect(),
            );
            o.push(("buckets".into(), b));
            o.push(("count".into(), Value::String(h.sample_count().to_string())));
            o.push(("sum".into(), Value::String(go_float(h.sample_sum()))));
        }
        _ => o.push(("value".into(), Value::String(go_float(simple_value(m, typ))))),
    }
    sorted_object(o)
}

/// Upstream's field order: time_stamp, type, help, metrics (a Go struct, not a map).
fn family_json(f: &crate::store::StoredFamily, pushed_at: f64) -> Value {
    let mf = f.to_metric_family();
    let mut o = Map::new();
    o.insert("time_stamp".into(), Value::String(rfc3339_nano(pushed_at)));
    o.insert("type".into(), Value::String(f.typ.as_str_name().to_owned()));
    if !f.help.is_empty() {
        o.insert("help".into(), Value::String(f.help.to_string()));
    }
    o.insert(
        "metrics".into(),
        Value::Array(mf.metric.iter().map(|m| metric_json(m, f.typ)).collect()),
    );
    Value::Object(o)
}

/// A JSON object with its keys sorted, as Go encodes maps.
fn sorted_object(entries: Vec<(String, Value)>) -> Value {
    let sorted: std::collections::BTreeMap<String, Value> = entries.into_iter().collect();
    Value::Object(sorted.into_iter().collect())
}

/// The JSON object of one group, upstream's layout (keys sorted, as Go encodes a map).
fn group_json(g: &GroupSnapshot) -> Value {
    let mut o: Vec<(String, Value)> = Vec::with_capacity(g.families.len() + 4);
    o.push((
        "labels".into(),
        sorted_object(
            g.key
                .labels()
                .iter()
                .map(|(n, v)| (n.clone(), Value::String(v.clone())))
                .collect(),
        ),
    ));
    o.push((
        "last_push_successful".into(),
        Value::Bool(g.last_push_successful),
    ));
    if g.aggregating {
        // pushgate's addition, only on aggregating groups: an ordinary group's object stays
        // exactly upstream's.
        o.push(("aggregating".into(), Value::Bool(true)));
    }
    if let Some(at) = g.expires_at() {
        // pushgate's addition, only on groups with a TTL (`--push.group-ttl`,
        // `Pushgate-Group-TTL`): when the group leaves every node's view.
        o.push(("expires_at".into(), Value::String(rfc3339_nano(at))));
    }
    for (f, t) in &g.families {
        o.push((f.name.to_string(), family_json(f, *t)));
    }
    let timing = crate::store::timing_families_of(g);
    o.push((
        timing[0].name.to_string(),
        family_json(&timing[0], g.push_time),
    ));
    let failure_stamp = if g.failure_time > 0.0 {
        g.failure_time
    } else {
        g.push_time
    };
    o.push((
        timing[1].name.to_string(),
        family_json(&timing[1], failure_stamp),
    ));
    sorted_object(o)
}

/// The `/api/v1/metrics` document: every group.
fn metrics_json(groups: &[GroupSnapshot]) -> Response {
    let data: Vec<Value> = groups.iter().map(group_json).collect();
    json_response(&json!({"status": "success", "data": data}))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339() {
        assert_eq!(rfc3339_nano(0.0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339_nano(1.5), "1970-01-01T00:00:01.5Z");
    }
}
