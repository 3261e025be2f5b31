//! Request routing and the push, delete, scrape and lifecycle handlers.
//!
//! Routing is done by hand on the percent-decoded path, as upstream's router does, so that an
//! encoded `/` in a label value splits the path exactly like upstream (use `@base64` for such
//! values) and redirects, 404s and 405s come out the same.

use std::future::Future;
use std::sync::Arc;
use std::time::Instant;

use axum::body::Body;
use axum::extract::Request;
use axum::response::{IntoResponse, Response};
use futures_util::future::BoxFuture;
use http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use tokio::sync::Notify;

use super::grouping::{parse_grouping_path, GroupingLimits};
use super::web_config::{with_web_config, SharedWebConfig};
use crate::exposition::names::NameScheme;
use crate::gateway::Gateway;
use crate::ingest::body::{body_format, read_body};
use crate::ingest::PushRequest;
use crate::store::render::Format;
use crate::telemetry::{self, metrics as m, SelfRecorder};

/// Everything the handlers need to know about flags.
#[derive(Debug, Clone)]
pub struct HttpConfig {
    /// Route prefix without trailing slash ("" for none).
    pub route_prefix: String,
    pub telemetry_path: String,
    pub enable_lifecycle: bool,
    pub enable_admin_api: bool,
    pub consistency_check: bool,
    pub names: NameScheme,
    pub max_body_bytes: usize,
    pub grouping: GroupingLimits,
    /// Every flag with its value as a string, for `/api/v1/status`.
    pub flags: Vec<(String, String)>,
    pub external_url: String,
    pub start_time: f64,
}

/// Shared state of all handlers.
pub struct AppState<G> {
    pub gateway: Arc<G>,
    pub config: Arc<HttpConfig>,
    pub recorder: SelfRecorder,
    /// Notified by `/-/quit`.
    pub quit: Arc<Notify>,
    /// Whether `/-/ready` answers 200.
    pub ready: Arc<std::sync::atomic::AtomicBool>,
}

impl<G> Clone for AppState<G> {
    fn clone(&self) -> Self {
        AppState {
            gateway: self.gateway.clone(),
            config: self.config.clone(),
            recorder: self.recorder.clone(),
            quit: self.quit.clone(),
            ready: self.ready.clone(),
        }
    }
}

/// The whole HTTP service: the web config (rate limit, basic auth, extra headers) around the
/// routes. The routing is this module's own (`match_route`, as upstream routes), so the service
/// is a plain function of the request: no router or middleware stack between hyper and it.
pub fn router<G: Gateway>(state: AppState<G>, web: SharedWebConfig) -> App {
    App(Arc::new(Routes { state, web }))
}

/// The HTTP service [`router`] builds; clones share it.
#[derive(Clone)]
pub struct App(Arc<dyn Serve>);

impl App {
    /// Answers one request.
    pub fn call(&self, req: Request) -> impl Future<Output = Response> + Send + 'static {
        self.0.clone().serve(req)
    }
}

trait Serve: Send + Sync + 'static {
    fn serve(self: Arc<Self>, req: Request) -> BoxFuture<'static, Response>;
}

struct Routes<G: Gateway> {
    state: AppState<G>,
    web: SharedWebConfig,
}

impl<G: Gateway> Serve for Routes<G> {
    fn serve(self: Arc<Self>, req: Request) -> BoxFuture<'static, Response> {
        Box::pin(
            async move { with_web_config(&self.web, req, |req| dispatch(&self.state, req)).await },
        )
    }
}

pub(crate) fn plain(status: StatusCode, msg: impl Into<String>) -> Response {
    let mut body = msg.into();
    body.push('\n');
    let mut r = (status, body).into_response();
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    h.insert(
        "x-content-type-options",
        HeaderValue::from_static("nosniff"),
    );
    r
}

fn status(code: u16) -> StatusCode {
    StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
}

fn empty(code: StatusCode) -> Response {
    (code, Body::empty()).into_response()
}

fn method_not_allowed(allow: &str) -> Response {
    let mut r = plain(StatusCode::METHOD_NOT_ALLOWED, "Method Not Allowed");
    if let Ok(v) = HeaderValue::from_str(allow) {
        r.headers_mut().insert(header::ALLOW, v);
    }
    r
}

fn not_found() -> Response {
    plain(StatusCode::NOT_FOUND, "404 page not found")
}

/// Percent-decodes a URL path; `None` for invalid escapes or non-UTF-8 results.
fn percent_decode(path: &str) -> Option<String> {
    let b = path.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = |c: u8| (c as char).to_digit(16);
            let hi = b.get(i + 1).copied().and_then(hex)?;
            let lo = b.get(i + 2).copied().and_then(hex)?;
            out.push((hi * 16 + lo) as u8);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// Whether `clean_path(p) == p`, without building the cleaned path: rooted, no empty element
/// (`//`) except a trailing slash, no `.` or `..` element. Every request's path is checked.
fn is_clean(p: &str) -> bool {
    let b = p.as_bytes();
    if b.first() != Some(&b'/') {
        return false;
    }
    let mut start = 1;
    for i in 1..=b.len() {
        if i == b.len() || b[i] == b'/' {
            let segment = &b[start..i];
            let last = i == b.len();
            if (segment.is_empty() && !last) || segment == b"." || segment == b".." {
                return false;
            }
            start = i + 1;
        }
    }
    true
}

/// Go's path.Clean as httprouter uses it: one slash between elements, `.`/`..` resolved, a
/// trailing slash kept.
fn clean_path(p: &str) -> String {
    let mut parts: Vec<&str> = Vec::new();
    for seg in p.split('/') {
        match seg {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            s => parts.push(s),
        }
    }
    let mut out = String::with_capacity(p.len());
    out.push('/');
    out.push_str(&parts.join("/"));
    if p.ends_with('/') && out.len() > 1 {
        out.push('/');
    }
    out
}

fn ok_text() -> Response {
    let mut r = (StatusCode::OK, "OK").into_response();
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}

fn moved_permanently(location: &str, query: Option<&str>) -> Response {
    let mut loc = location.to_owned();
    if let Some(q) = query {
        loc.push('?');
        loc.push_str(q);
    }
    let body = format!(
        "<a href=\"{}\">Moved Permanently</a>.\n\n",
        html_escape(&loc)
    );
    let mut r = (StatusCode::MOVED_PERMANENTLY, body).into_response();
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    if let Ok(v) = HeaderValue::from_str(&loc) {
        h.insert(header::LOCATION, v);
    }
    r
}

fn html_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&#34;")
}

fn redirect(method: &Method, location: &str, query: Option<&str>) -> Response {
    let code = if method == Method::GET {
        StatusCode::MOVED_PERMANENTLY
    } else {
        StatusCode::TEMPORARY_REDIRECT
    };
    let mut loc = location.to_owned();
    if let Some(q) = query {
        loc.push('?');
        loc.push_str(q);
    }
    let mut r = empty(code);
    if let Ok(v) = HeaderValue::from_str(&loc) {
        r.headers_mut().insert(header::LOCATION, v);
    }
    r
}

enum Route<'a> {
    Push { rest: &'a str },
    Scrape,
    Healthy,
    Ready,
    Quit,
    Status,
    ApiStatus,
    ApiMetrics,
    ApiWipe,
    ApiOptions,
}

/// Matches a prefix-relative path; `None` when no route has this path.
fn match_route<'a>(rel: &'a str, cfg: &HttpConfig) -> Option<Route<'a>> {
    if rel == cfg.telemetry_path {
        return Some(Route::Scrape);
    }
    if let Some(rest) = rel.strip_prefix("/metrics") {
        // `/job/<non-empty job>` optionally followed by `/<labels...>`
        let job_part = rest
            .strip_prefix("/job/")
            .or_else(|| rest.strip_prefix("/job@base64/"));
        if let Some(after) = job_part {
            let job = after.split('/').next().unwrap_or("");
            if !job.is_empty() {
                return Some(Route::Push { rest });
            }
        }
    }
    Some(match rel {
        "/-/healthy" => Route::Healthy,
        "/-/ready" => Route::Ready,
        "/-/quit" => Route::Quit,
        "/" | "/status" => Route::Status,
        "/api/v1/status" => Route::ApiStatus,
        "/api/v1/metrics" => Route::ApiMetrics,
        "/api/v1/admin/wipe" => Route::ApiWipe,
        r if r.starts_with("/api/v1/") => Route::ApiOptions,
        _ => return None,
    })
}

async fn dispatch<G: Gateway>(st: &AppState<G>, req: Request) -> Response {
    let method = req.method().clone();
    let raw_path = req.uri().path().to_owned();
    let query = req.uri().query().map(str::to_owned);
    let Some(path) = percent_decode(&raw_path) else {
        return plain(
            StatusCode::BAD_REQUEST,
            "invalid URL escape or non-UTF-8 path",
        );
    };
    // Go's HTTP server answers any path that is not clean (`//`, `.`, `..`) with a 301 to the
    // cleaned path, whatever the method, before routing.
    if !is_clean(&path) {
        let cleaned = clean_path(&path);
        if cleaned != path {
            return moved_permanently(&cleaned, query.as_deref());
        }
    }
    let prefix = st.config.route_prefix.as_str();
    let rel: &str = if prefix.is_empty() {
        &path
    } else if path == prefix {
        return redirect(&method, &format!("{prefix}/"), query.as_deref());
    } else {
        match path.strip_prefix(prefix) {
            Some(r) if r.starts_with('/') => r,
            _ => return not_found(),
        }
    };
    let Some(route) = match_route(rel, &st.config) else {
        // Upstream's router drops a trailing slash when that leads to a route (or to the push
        // path's stem, which then 404s).
        if rel.len() > 1 && rel.ends_with('/') {
            let stem = rel.trim_end_matches('/');
            if match_route(stem, &st.config).is_some()
                || stem == "/metrics/job"
                || stem == "/metrics/job@base64"
            {
                let target = format!("{prefix}{stem}");
                return redirect(&method, &target, query.as_deref());
            }
        }
        return not_found();
    };
    match route {
        Route::Push { rest } => {
            let replace_all = match method {
                Method::PUT => true,
                Method::POST => false,
                Method::DELETE => {
                    let rest = rest.to_owned();
                    return counted(st, "delete", &method, delete(st, &rest).await);
                }
                _ => return method_not_allowed("DELETE, OPTIONS, POST, PUT"),
            };
            let rest = rest.to_owned();
            let started = Instant::now();
            let (resp, size) = push(st, &rest, replace_all, req).await;
            let [duration, bytes] = push_summaries(replace_all);
            duration.record(started.elapsed().as_secs_f64());
            bytes.record(size as f64);
            counted(st, "push", &method, resp)
        }
        Route::Scrape => match method {
            Method::GET => scrape(st, req.headers()).await,
            _ => method_not_allowed("GET, OPTIONS"),
        },
        Route::Healthy => match method {
            Method::GET => counted(st, "healthy", &method, ok_text()),
            _ => method_not_allowed("GET, OPTIONS"),
        },
        Route::Ready => match method {
            Method::GET => {
                let resp = if st.ready.load(std::sync::atomic::Ordering::Acquire) {
                    ok_text()
                } else {
                    plain(StatusCode::SERVICE_UNAVAILABLE, "Service Unavailable")
                };
                counted(st, "ready", &method, resp)
            }
            _ => method_not_allowed("GET, OPTIONS"),
        },
        Route::Quit => match method {
            Method::PUT | Method::POST => {
                let resp = if st.config.enable_lifecycle {
                    st.quit.notify_one();
                    let mut r =
                        (StatusCode::OK, "Requesting termination... Goodbye!").into_response();
                    r.headers_mut().insert(
                        header::CONTENT_TYPE,
                        HeaderValue::from_static("text/plain; charset=utf-8"),
                    );
                    r
                } else {
                    plain(StatusCode::FORBIDDEN, "Lifecycle API is not enabled.")
                };
                counted(st, "quit", &method, resp)
            }
            _ => plain(
                StatusCode::METHOD_NOT_ALLOWED,
                "Only POST or PUT requests allowed.",
            ),
        },
        Route::Status => match method {
            Method::GET => {
                let groups = st.gateway.groups().await;
                counted(
                    st,
                    "status",
                    &method,
                    super::status_page::render(&st.config, &groups),
                )
            }
            _ => method_not_allowed("GET, OPTIONS"),
        },
        Route::ApiStatus => {
            api_reply(st, &method, "api/v1/status", async {
                super::api::status(&st.config)
            })
            .await
        }
        Route::ApiMetrics => {
            let st2 = st.clone();
            api_reply(st, &method, "api/v1/metrics", async move {
                let groups = st2.gateway.groups().await;
                super::api::metrics(&groups)
            })
            .await
        }
        Route::ApiWipe => {
            if !st.config.enable_admin_api {
                return super::api::with_cors(not_found());
            }
            match method {
                Method::PUT => {
                    let resp = match st.gateway.wipe().await {
                        Ok(()) => empty(StatusCode::ACCEPTED),
                        Err(e) => plain(status(e.status()), e.to_string()),
                    };
                    counted(st, "wipe", &method, resp)
                }
                Method::OPTIONS => super::api::with_cors(empty(StatusCode::OK)),
                _ => super::api::with_cors(method_not_allowed("OPTIONS, PUT")),
            }
        }
        Route::ApiOptions => match method {
            Method::OPTIONS => super::api::with_cors(empty(StatusCode::OK)),
            _ => super::api::with_cors(not_found()),
        },
    }
}

async fn api_reply<G: Gateway>(
    st: &AppState<G>,
    method: &Method,
    handler: &'static str,
    body: impl std::future::Future<Output = Response>,
) -> Response {
    let resp = match *method {
        Method::GET => body.await,
        Method::OPTIONS => empty(StatusCode::OK),
        _ => method_not_allowed("GET, OPTIONS"),
    };
    super::api::with_cors(counted(st, handler, method, resp))
}

/// Counts a request in `pushgateway_http_requests_total` (scrapes are not counted, as upstream).
fn counted<G>(
    _st: &AppState<G>,
    handler: &'static str,
    method: &Method,
    resp: Response,
) -> Response {
    let method_label = match *method {
        Method::GET => "get",
        Method::PUT => "put",
        Method::POST => "post",
        Method::DELETE => "delete",
        Method::HEAD => "head",
        Method::OPTIONS => "options",
        _ => "other",
    };
    let code = resp.status().as_u16();
    let code_label: &'static str = match code {
        200 => "200",
        202 => "202",
        400 => "400",
        401 => "401",
        403 => "403",
        404 => "404",
        405 => "405",
        413 => "413",
        500 => "500",
        503 => "503",
        _ => "other",
    };
    request_counter(handler, method_label, code_label).increment(1);
    resp
}

// Registering a metric hashes its key and looks it up in the recorder (a few thousand
// instructions per request with the labels above): each thread registers a label set once and
// keeps the handle. The recorder is installed before the server starts, so the handles are its.
thread_local! {
    static REQUEST_COUNTERS: std::cell::RefCell<Vec<(RequestLabels, metrics::Counter)>> =
        const { std::cell::RefCell::new(Vec::new()) };
    static PUSH_SUMMARIES: std::cell::OnceCell<[[metrics::Histogram; 2]; 2]> =
        const { std::cell::OnceCell::new() };
}

/// (handler, method, code) of `pushgateway_http_requests_total`.
type RequestLabels = (&'static str, &'static str, &'static str);

/// The `pushgateway_http_requests_total` counter of these labels.
fn request_counter(
    handler: &'static str,
    method: &'static str,
    code: &'static str,
) -> metrics::Counter {
    let labels = (handler, method, code);
    REQUEST_COUNTERS.with(|cell| {
        let mut known = cell.borrow_mut();
        // A handful of label sets are in use: a scan of short strings beats hashing them.
        if let Some((_, c)) = known.iter().find(|(l, _)| *l == labels) {
            return c.clone();
        }
        let c = metrics::counter!(m::HTTP_REQUESTS_TOTAL, "code" => code, "handler" => handler, "method" => method);
        known.push((labels, c.clone()));
        c
    })
}

/// The push duration and size summaries of a PUT (`replace_all`) or a POST.
fn push_summaries(replace_all: bool) -> [metrics::Histogram; 2] {
    PUSH_SUMMARIES.with(|cell| {
        let all = cell.get_or_init(|| {
            ["put", "post"].map(|method| {
                [
                    metrics::histogram!(m::HTTP_PUSH_DURATION_SECONDS, "method" => method),
                    metrics::histogram!(m::HTTP_PUSH_SIZE_BYTES, "method" => method),
                ]
            })
        });
        all[usize::from(!replace_all)].clone()
    })
}

async fn push<G: Gateway>(
    st: &AppState<G>,
    rest: &str,
    replace_all: bool,
    req: Request,
) -> (Response, usize) {
    let cfg = &st.config;
    let key = match parse_grouping_path(rest, cfg.names, cfg.grouping) {
        Ok(k) => k,
        Err(e) => return (plain(StatusCode::BAD_REQUEST, e.0), 0),
    };
    let (parts, body) = req.into_parts();
    let bytes = match read_body(&parts.headers, body, cfg.max_body_bytes).await {
        Ok(b) => b,
        Err(e) => {
            refused(if e.status() == 413 {
                "limit"
            } else {
                "invalid"
            });
            return (plain(status(e.status()), e.to_string()), 0);
        }
    };
    let size = bytes.len();
    let format = body_format(&parts.headers);
    match st
        .gateway
        .push(PushRequest {
            key,
            body: bytes,
            format,
            replace_all,
        })
        .await
    {
        Ok(()) if cfg.consistency_check => (empty(StatusCode::OK), size),
        Ok(()) => (empty(StatusCode::ACCEPTED), size),
        // With the check disabled upstream answers 202 before looking at the metrics; a push
        // refused for its content is recorded on the group (push_failure_time_seconds) and
        // counted, but the client still gets 202.
        Err(crate::store::PushError::Invalid(msg)) if !cfg.consistency_check => {
            refused("invalid");
            tracing::debug!(err = %msg, "push refused (consistency check disabled, answering 202)");
            (empty(StatusCode::ACCEPTED), size)
        }
        Err(e) => {
            refused(match e.status() {
                503 => "unavailable",
                413 => "limit",
                _ if matches!(e, crate::store::PushError::LimitExceeded(_)) => "limit",
                _ => "invalid",
            });
            (plain(status(e.status()), e.to_string()), size)
        }
    }
}

fn refused(reason: &'static str) {
    metrics::counter!(m::REFUSED_PUSHES_TOTAL, "reason" => reason).increment(1);
}

async fn delete<G: Gateway>(st: &AppState<G>, rest: &str) -> Response {
    let cfg = &st.config;
    let key = match parse_grouping_path(rest, cfg.names, cfg.grouping) {
        Ok(k) => k,
        Err(e) => return plain(StatusCode::BAD_REQUEST, e.0),
    };
    match st.gateway.delete(key).await {
        Ok(()) => empty(StatusCode::ACCEPTED),
        Err(e) => plain(status(e.status()), e.to_string()),
    }
}

const TEXT_CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";
const PROTO_CONTENT_TYPE: &str =
    "application/vnd.google.protobuf; proto=io.prometheus.client.MetricFamily; encoding=delimited";

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
fn scrape_timeout(headers: &HeaderMap) -> Option<std::time::Duration> {
    let secs: f64 = headers
        .get("x-prometheus-scrape-timeout-seconds")?
        .to_str()
        .ok()?
        .trim()
        .parse()
        .ok()?;
    (secs > 0.0)
        .then(|| std::time::Duration::try_from_secs_f64(secs).ok())
        .flatten()
}

async fn scrape<G: Gateway>(st: &AppState<G>, headers: &HeaderMap) -> Response {
    let format = negotiate(headers);
    let own = telemetry::own_families(&st.recorder, st.gateway.local_stats());
    let gzip = accepts_gzip(headers);
    let timeout = scrape_timeout(headers);
    let chunks = st.gateway.render_stream(format, own, gzip, timeout).await;
    let content_type = match format {
        Format::Text => TEXT_CONTENT_TYPE,
        Format::Protobuf => PROTO_CONTENT_TYPE,
    };
    let body = Body::from_stream(tokio_stream::wrappers::ReceiverStream::new(chunks));
    let mut resp = (StatusCode::OK, body).into_response();
    let h = resp.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    if gzip {
        h.insert(header::CONTENT_ENCODING, HeaderValue::from_static("gzip"));
    }
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kept_request_metrics_count_each_label_set_apart() {
        let r = SelfRecorder::default();
        metrics::with_local_recorder(&r, || {
            for _ in 0..3 {
                request_counter("push", "put", "200").increment(1);
            }
            request_counter("push", "put", "400").increment(1);
            request_counter("push", "post", "200").increment(1);
            let [put_duration, put_bytes] = push_summaries(true);
            put_duration.record(0.5);
            put_bytes.record(100.0);
            push_summaries(true)[1].record(50.0);
            push_summaries(false)[1].record(7.0);
        });
        let text: String = r
            .families(vec![])
            .iter()
            .map(|f| String::from_utf8(f.text().to_vec()).expect("utf-8"))
            .collect();
        for line in [
            "pushgateway_http_requests_total{code=\"200\",handler=\"push\",method=\"put\"} 3\n",
            "pushgateway_http_requests_total{code=\"400\",handler=\"push\",method=\"put\"} 1\n",
            "pushgateway_http_requests_total{code=\"200\",handler=\"push\",method=\"post\"} 1\n",
            "pushgateway_http_push_duration_seconds_count{method=\"put\"} 1\n",
            "pushgateway_http_push_size_bytes_sum{method=\"put\"} 150\n",
            "pushgateway_http_push_size_bytes_count{method=\"put\"} 2\n",
            "pushgateway_http_push_size_bytes_sum{method=\"post\"} 7\n",
        ] {
            assert!(text.contains(line), "{line} not in\n{text}");
        }
    }

    #[test]
    fn clean_paths_are_recognised_without_cleaning() {
        // Every string over a small alphabet up to length 7, so `//`, `.`, `..`, trailing
        // slashes and relative paths all occur in every position.
        let alphabet = ['/', '.', 'a'];
        let mut paths = vec![String::new()];
        for _ in 0..7 {
            let longer: Vec<String> = paths
                .iter()
                .filter(|p| p.len() == paths.last().map_or(0, String::len))
                .flat_map(|p| alphabet.iter().map(move |c| format!("{p}{c}")))
                .collect();
            paths.extend(longer);
        }
        assert!(paths.len() > 3000);
        for p in &paths {
            assert_eq!(is_clean(p), clean_path(p) == *p, "{p:?}");
        }
    }

    #[test]
    fn clean_path_like_go() {
        assert_eq!(clean_path("//metrics"), "/metrics");
        assert_eq!(clean_path("/a/./b/../c/"), "/a/c/");
        assert_eq!(clean_path("/"), "/");
    }

    #[test]
    fn percent_decoding() {
        assert_eq!(percent_decode("/a%2Fb").as_deref(), Some("/a/b"));
        assert_eq!(percent_decode("/a%zz"), None);
        assert_eq!(percent_decode("/a%ff"), None);
    }

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
