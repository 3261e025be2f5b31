//! `PUT` and `POST P/metrics/job[@base64]/<job>{/<label>[@base64]/<value>}`: a push, which
//! replaces the whole group (PUT) or the pushed families (POST).
//!
//! `PUT` and `POST P/aggregate/metrics/job...` (pushgate's addition, docs/serverless.md): a push
//! added into an aggregating group (both methods add). An `Idempotency-Key` header (at most 256
//! visible ASCII characters, else 400) makes a retry within the window acknowledged without
//! being added twice.
//!
//! A `Pushgate-Group-TTL` header (pushgate's addition: a Go-style duration, `0` never) sets how
//! long after this push the group expires, overriding `--push.group-ttl`; a bad value is 400
//! and changes nothing.
//!
//! - 200 pushed (202 with the consistency check off, whatever the metrics: upstream answers
//!   before it looks at them; a push refused for its content is still recorded on the group);
//! - 400 bad grouping key in the URL, undecodable body, metrics the check refuses, or a
//!   configured limit other than a size exceeded;
//! - 413 over a size limit;
//! - 503 the cluster cannot take the write now (a starting node that knows no active member
//!   yet, fewer nodes up than the write needs), or the bytes of pushes in flight are at
//!   `--push.max-inflight-bytes`; always with `Retry-After`.
//!
//! Each push is counted in `pushgateway_http_requests_total` and in the push duration and size
//! summaries; a refused one also in the refused-pushes counter, by reason.

use std::sync::LazyLock;
use std::time::Instant;

use axum::extract::Request;
use axum::response::Response;
use http::{Method, StatusCode};

use crate::gateway::Gateway;
use crate::http::conn::{LogLimiter, LOG_INTERVAL};
use crate::http::grouping::parse_grouping_path;
use crate::http::request_metrics::{counted, push_summaries};
use crate::http::response::{empty, error_text, plain};
use crate::http::state::AppState;
use crate::ingest::body::{body_format, read_body};
use crate::ingest::PushRequest;
use crate::store::PushError;
use crate::telemetry::metrics as m;

/// Answers a PUT or a POST on the push path; `rest` is the path after `/metrics`.
pub(crate) async fn push<G: Gateway>(
    st: &AppState<G>,
    method: &Method,
    rest: &str,
    req: Request,
    aggregate: bool,
) -> Response {
    let replace_all = method == Method::PUT;
    let started = Instant::now();
    let (resp, size) = push_group(st, rest, replace_all, aggregate, req).await;
    let [duration, bytes] = push_summaries(replace_all);
    duration.record(started.elapsed().as_secs_f64());
    bytes.record(size as f64);
    counted("push", method, resp)
}

/// The response and the body's size in bytes (0 when it was not read).
async fn push_group<G: Gateway>(
    st: &AppState<G>,
    rest: &str,
    replace_all: bool,
    aggregate: bool,
    req: Request,
) -> (Response, usize) {
    let cfg = &st.config;
    let key = match parse_grouping_path(rest, cfg.names, cfg.grouping) {
        Ok(k) => k,
        Err(e) => return (plain(StatusCode::BAD_REQUEST, e.0), 0),
    };
    let (parts, body) = req.into_parts();
    let idempotency_key = match idempotency_key(&parts.headers) {
        Ok(k) => k,
        Err(msg) => return (plain(StatusCode::BAD_REQUEST, msg), 0),
    };
    let ttl = match group_ttl(&parts.headers, cfg.group_ttl) {
        Ok(t) => t,
        Err(msg) => {
            refused("invalid");
            return (plain(StatusCode::BAD_REQUEST, msg), 0);
        }
    };
    // The reservation holds the body's bytes in --push.max-inflight-bytes until the push is
    // applied or refused.
    let (bytes, _held) =
        match read_body(&parts.headers, body, cfg.max_body_bytes, &cfg.inflight).await {
            Ok(b) => b,
            Err(e) => {
                refused(match e.status() {
                    413 => "limit",
                    503 => "busy",
                    _ => "invalid",
                });
                return (error_text(e.status(), &e), 0);
            }
        };
    let size = bytes.len();
    let format = body_format(&parts.headers);
    let req = PushRequest {
        key,
        body: bytes,
        format,
        replace_all,
        ttl,
    };
    let outcome = if aggregate {
        st.gateway.aggregate(req, idempotency_key).await.map(|_| ())
    } else {
        st.gateway.push(req).await
    };
    match outcome {
        Ok(()) if cfg.consistency_check => (empty(StatusCode::OK), size),
        Ok(()) => (empty(StatusCode::ACCEPTED), size),
        // With the check disabled upstream answers 202 before looking at the metrics; a push
        // refused for its content is recorded on the group (push_failure_time_seconds) and
        // counted, but the client still gets 202.
        Err(PushError::Invalid(msg)) if !cfg.consistency_check => {
            refused("invalid");
            tracing::debug!(err = %msg, "push refused (consistency check disabled, answering 202)");
            (empty(StatusCode::ACCEPTED), size)
        }
        Err(e) => {
            let reason = match e.status() {
                503 => "unavailable",
                413 => "limit",
                _ if matches!(e, PushError::LimitExceeded(_)) => "limit",
                _ => "invalid",
            };
            refused(reason);
            // Info, at most one line per interval: an operator sees why clients fail (a
            // cluster without quorum answers every push 503) without a line per push.
            if let Some(suppressed) = REFUSED_LOG.due() {
                tracing::info!(
                    reason,
                    status = e.status(),
                    err = %e,
                    refused_since_last_line = suppressed,
                    "push refused (see pushgate_refused_pushes_total)"
                );
            }
            (error_text(e.status(), &e), size)
        }
    }
}

/// The `Idempotency-Key` header: none, or a key of visible ASCII within the bound.
fn idempotency_key(headers: &http::HeaderMap) -> Result<Option<String>, String> {
    let Some(value) = headers.get("idempotency-key") else {
        return Ok(None);
    };
    let max = crate::store::aggregate::MAX_IDEMPOTENCY_KEY_BYTES;
    match value.to_str() {
        Ok(k) if crate::store::aggregate::valid_idempotency_key(k) => Ok(Some(k.to_owned())),
        _ => Err(format!(
            "the Idempotency-Key header must be 1 to {max} visible ASCII characters"
        )),
    }
}

/// The push's group TTL in seconds: the `Pushgate-Group-TTL` header (a Go-style duration such
/// as `90s` or `1h30m`; `0`: never expires) or else `--push.group-ttl`.
fn group_ttl(headers: &http::HeaderMap, default: f64) -> Result<f64, String> {
    let Some(value) = headers.get(GROUP_TTL_HEADER) else {
        return Ok(default);
    };
    let max = crate::store::codec::MAX_TTL_SECONDS;
    value
        .to_str()
        .map_err(|_| "not visible ASCII".to_owned())
        .and_then(crate::time::parse_go_duration)
        .map(|d| d.as_secs_f64())
        .and_then(|t| {
            if t <= max {
                Ok(t)
            } else {
                Err("longer than 100 years".to_owned())
            }
        })
        .map_err(|e| {
            format!("the {GROUP_TTL_HEADER} header must be a duration such as 90s or 1h (0: never expires): {e}")
        })
}

/// The request header that sets a push's group TTL.
pub(crate) const GROUP_TTL_HEADER: &str = "Pushgate-Group-TTL";

static REFUSED_LOG: LazyLock<LogLimiter> = LazyLock::new(|| LogLimiter::new(LOG_INTERVAL));

fn refused(reason: &'static str) {
    metrics::counter!(m::REFUSED_PUSHES_TOTAL, "reason" => reason).increment(1);
}
