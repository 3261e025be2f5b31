//! `DELETE P/metrics/job[@base64]/<job>{/<label>[@base64]/<value>}`: deletes the group.
//!
//! - 202 deleted (also when there was no such group, as upstream);
//! - 400 bad grouping key in the URL;
//! - 503 the cluster cannot take the write now (with `Retry-After`).

use axum::response::Response;
use http::{Method, StatusCode};

use crate::gateway::Gateway;
use crate::http::grouping::parse_grouping_path;
use crate::http::request_metrics::counted;
use crate::http::response::{empty, error_text, plain};
use crate::http::state::AppState;

/// Answers a DELETE on the push path; `rest` is the path after `/metrics`.
pub(crate) async fn delete<G: Gateway>(st: &AppState<G>, method: &Method, rest: &str) -> Response {
    counted("delete", method, delete_group(st, rest).await)
}

async fn delete_group<G: Gateway>(st: &AppState<G>, rest: &str) -> Response {
    let cfg = &st.config;
    let key = match parse_grouping_path(rest, cfg.names, cfg.grouping) {
        Ok(k) => k,
        Err(e) => return plain(StatusCode::BAD_REQUEST, e.0),
    };
    match st.gateway.delete(key).await {
        Ok(()) => empty(StatusCode::ACCEPTED),
        Err(e) => error_text(e.status(), &e),
    }
}
