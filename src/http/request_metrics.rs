//! `pushgateway_http_requests_total` and the push duration and size summaries, with their
//! handles kept per thread so that a request does not register its metrics again.

use axum::response::Response;
use http::Method;

use crate::telemetry::metrics as m;

/// Counts a request in `pushgateway_http_requests_total` (scrapes are not counted, as upstream).
pub(crate) fn counted(handler: &'static str, method: &Method, resp: Response) -> Response {
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

// Registering a metric hashes its key and looks it up in the recorder, which costs more than
// the rest of counting a request: each thread registers a label set once and keeps the handle.
// The recorder is installed before the server starts, so the handles are its.
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
pub(crate) fn push_summaries(replace_all: bool) -> [metrics::Histogram; 2] {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::telemetry::SelfRecorder;

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
        let text = r.text();
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
}
