//! `GET P<telemetry path>` (default `/metrics`): the exposition of every group and of the
//! gateway's own metrics, streamed as it is rendered.
//!
//! - 200 with text (`version=0.0.4`), or delimited protobuf when `Accept` asks for it, gzipped
//!   when `Accept-Encoding` allows it;
//! - 503 when a cluster node's merged scrape would hold more than `--cluster.max-scrape-bytes`;
//! - 405 any other method.
//!
//! Scrapes are not counted in `pushgateway_http_requests_total`, as upstream.

use std::time::{Duration, Instant};

use axum::body::Body;
use axum::response::Response;
use http::{header, HeaderMap, HeaderValue, Method, StatusCode};

use crate::gateway::Gateway;
use crate::http::response::{method_not_allowed, plain, typed};
use crate::http::state::AppState;
use crate::scrape::merged::render_groups;
use crate::scrape::stream_rendered;
use crate::store::render::Format;
use crate::telemetry;

const TEXT_CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";
const PROTO_CONTENT_TYPE: &str =
    "application/vnd.google.protobuf; proto=io.prometheus.client.MetricFamily; encoding=delimited";

/// Answers a request on the telemetry path.
pub(crate) async fn scrape<G: Gateway>(
    st: &AppState<G>,
    method: &Method,
    headers: &HeaderMap,
) -> Response {
    serve(st, method, headers, true).await
}

/// `GET P/-/node-metrics`: this node's own metrics only (`pushgateway_*`, `pushgate_*`,
/// `process_*`), never the groups: a per-pod scrape target (a PodMonitor) for each node's
/// health, while the groups are scraped once through the load balancer. Answered from this
/// node alone, so a node that cannot reach its peers still reports (docs/architecture.md,
/// "Per-node health").
pub(crate) async fn node_metrics<G: Gateway>(
    st: &AppState<G>,
    method: &Method,
    headers: &HeaderMap,
) -> Response {
    serve(st, method, headers, false).await
}

/// This node's own metrics, with every group (`groups`) or alone.
async fn serve<G: Gateway>(
    st: &AppState<G>,
    method: &Method,
    headers: &HeaderMap,
    groups: bool,
) -> Response {
    if method != Method::GET {
        return method_not_allowed("GET, OPTIONS");
    }
    let format = negotiate(headers);
    let own = telemetry::own_families(&st.recorder, st.gateway.local_stats());
    let gzip = accepts_gzip(headers);
    let chunks = if groups {
        let timeout = scrape_timeout(headers);
        match st.gateway.render_stream(format, own, gzip, timeout).await {
            Ok(chunks) => chunks,
            Err(refused) => return plain(StatusCode::SERVICE_UNAVAILABLE, refused.0),
        }
    } else {
        stream_rendered(gzip, Instant::now(), move |emit| {
            let mut body = Vec::with_capacity(16 * 1024);
            let reserved = telemetry::reserved_names();
            let stats = render_groups(&[], reserved, &own, format, None, &mut body);
            emit(body);
            Ok(stats)
        })
    };
    let body = Body::from_stream(tokio_stream::wrappers::ReceiverStream::new(chunks));
    let mut resp = typed(StatusCode::OK, body, content_type(format));
    if gzip {
        resp.headers_mut()
            .insert(header::CONTENT_ENCODING, HeaderValue::from_static("gzip"));
    }
    resp
}

fn content_type(format: Format) -> &'static str {
    match format {
        Format::Text => TEXT_CONTENT_TYPE,
        Format::Protobuf => PROTO_CONTENT_TYPE,
    }
}

/// Protobuf when `Accept` asks for delimited `MetricFamily` messages, text otherwise.
fn negotiate(headers: &HeaderMap) -> Format {
    let accept = headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .collect::<Vec<_>>()
        .join(",");
    for item in accept.split(',') {
        let mut parts = item.split(';').map(str::trim);
        if parts.next() != Some("application/vnd.google.protobuf") {
            continue;
        }
        let (mut proto, mut delimited) = (false, false);
        for p in parts {
            match p.split_once('=') {
                Some(("proto", v)) => proto = v == "io.prometheus.client.MetricFamily",
                Some(("encoding", v)) => delimited = v == "delimited",
                _ => {}
            }
        }
        if proto && delimited {
            return Format::Protobuf;
        }
    }
    Format::Text
}

fn accepts_gzip(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::ACCEPT_ENCODING)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|enc| {
            let mut parts = enc.split(';').map(str::trim);
            let name = parts.next().unwrap_or("");
            let zero_q =
                parts.any(|p| p.replace(' ', "") == "q=0" || p.replace(' ', "") == "q=0.0");
            name.eq_ignore_ascii_case("gzip") && !zero_q
        })
}

/// How long the scraping Prometheus waits (`X-Prometheus-Scrape-Timeout-Seconds`, seconds as a
/// decimal number); None when the header is missing or not a positive number.
fn scrape_timeout(headers: &HeaderMap) -> Option<Duration> {
    let secs: f64 = headers
        .get("x-prometheus-scrape-timeout-seconds")?
        .to_str()
        .ok()?
        .trim()
        .parse()
        .ok()?;
    (secs > 0.0)
        .then(|| Duration::try_from_secs_f64(secs).ok())
        .flatten()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scrape_timeout_header() {
        let with = |v: &str| {
            let mut h = HeaderMap::new();
            h.insert(
                "X-Prometheus-Scrape-Timeout-Seconds",
                HeaderValue::from_str(v).unwrap(),
            );
            scrape_timeout(&h)
        };
        assert_eq!(scrape_timeout(&HeaderMap::new()), None);
        assert_eq!(with("10"), Some(std::time::Duration::from_secs(10)));
        assert_eq!(with(" 9.5 "), Some(std::time::Duration::from_millis(9500)));
        // Not a usable wait: ignored, never a panic.
        for bad in ["0", "-1", "NaN", "inf", "1e300", "ten", ""] {
            assert_eq!(with(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn negotiation() {
        let mut h = HeaderMap::new();
        assert_eq!(negotiate(&h), Format::Text);
        h.insert(
            header::ACCEPT,
            HeaderValue::from_static(
                "application/vnd.google.protobuf;proto=io.prometheus.client.MetricFamily;encoding=delimited;q=0.7,text/plain;version=0.0.4;q=0.3",
            ),
        );
        assert_eq!(negotiate(&h), Format::Protobuf);
        h.insert(
            header::ACCEPT_ENCODING,
            HeaderValue::from_static("deflate, gzip;q=1.0"),
        );
        assert!(accepts_gzip(&h));
    }
}
