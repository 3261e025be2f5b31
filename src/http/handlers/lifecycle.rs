//! The lifecycle routes:
//!
//! - `GET P/-/healthy`: 200 `OK`;
//! - `GET P/-/ready`: 200 `OK` once the node is ready, 503 before (a cluster node until it has
//!   joined and pulled its groups);
//! - `PUT`/`POST P/-/quit`: 200 and the process shuts down, 403 without
//!   `--web.enable-lifecycle`;
//! - 405 any other method (for quit with upstream's own message).

use std::sync::atomic::Ordering;

use axum::response::Response;
use http::{Method, StatusCode};

use crate::http::request_metrics::counted;
use crate::http::response::{method_not_allowed, plain, typed, TEXT_PLAIN};
use crate::http::state::AppState;

/// `OK`, without the newline and `nosniff` of an error.
fn ok_text() -> Response {
    typed(StatusCode::OK, "OK", TEXT_PLAIN)
}

pub(crate) fn healthy(method: &Method) -> Response {
    match *method {
        Method::GET => counted("healthy", method, ok_text()),
        _ => method_not_allowed("GET, OPTIONS"),
    }
}

pub(crate) fn ready<G>(st: &AppState<G>, method: &Method) -> Response {
    match *method {
        Method::GET => {
            let resp = if st.ready.load(Ordering::Acquire) {
                ok_text()
            } else {
                plain(StatusCode::SERVICE_UNAVAILABLE, "Service Unavailable")
            };
            counted("ready", method, resp)
        }
        _ => method_not_allowed("GET, OPTIONS"),
    }
}

pub(crate) fn quit<G>(st: &AppState<G>, method: &Method) -> Response {
    match *method {
        Method::PUT | Method::POST => {
            let resp = if st.config.enable_lifecycle {
                st.quit.notify_one();
                typed(
                    StatusCode::OK,
                    "Requesting termination... Goodbye!",
                    TEXT_PLAIN,
                )
            } else {
                // Upstream writes these two without the newline `http.Error` adds.
                typed(
                    StatusCode::FORBIDDEN,
                    "Lifecycle API is not enabled.",
                    TEXT_PLAIN,
                )
            };
            counted("quit", method, resp)
        }
        _ => typed(
            StatusCode::METHOD_NOT_ALLOWED,
            "Only POST or PUT requests allowed.",
            TEXT_PLAIN,
        ),
    }
}
