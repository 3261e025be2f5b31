//! The small responses every handler and the web config share, with Go's bodies and headers:
//! plain-text errors as `http.Error` writes them, empty bodies, redirects, 404 and 405.

use axum::body::Body;
use axum::response::{IntoResponse, Response};
use http::{header, HeaderValue, Method, StatusCode};

pub(crate) const TEXT_PLAIN: &str = "text/plain; charset=utf-8";
pub(crate) const TEXT_HTML: &str = "text/html; charset=utf-8";

/// A response with this status, body and `Content-Type`.
pub(crate) fn typed(
    status: StatusCode,
    body: impl IntoResponse,
    content_type: &'static str,
) -> Response {
    let mut r = (status, body).into_response();
    r.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    r
}

/// What Go's `http.Error` writes: the message and a newline, as plain text, `nosniff`.
pub(crate) fn plain(status: StatusCode, msg: impl Into<String>) -> Response {
    let mut body = msg.into();
    body.push('\n');
    let mut r = typed(status, body, TEXT_PLAIN);
    r.headers_mut().insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    r
}

/// [`plain`] with the status of a typed error (`status()` of the store's and the body's errors)
/// and its message.
/// An error answer; a 503 (the node or the cluster cannot take the request now) says when to
/// retry, so clients and proxies that honour `Retry-After` come back instead of giving up.
pub(crate) fn error_text(code: u16, error: &impl ToString) -> Response {
    let status = StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut resp = plain(status, error.to_string());
    if status == StatusCode::SERVICE_UNAVAILABLE {
        resp.headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    }
    resp
}

pub(crate) fn empty(code: StatusCode) -> Response {
    (code, Body::empty()).into_response()
}

pub(crate) fn method_not_allowed(allow: &str) -> Response {
    let mut r = plain(StatusCode::METHOD_NOT_ALLOWED, "Method Not Allowed");
    if let Ok(v) = HeaderValue::from_str(allow) {
        r.headers_mut().insert(header::ALLOW, v);
    }
    r
}

pub(crate) fn not_found() -> Response {
    plain(StatusCode::NOT_FOUND, "404 page not found")
}

fn with_query(location: &str, query: Option<&str>) -> String {
    let mut loc = location.to_owned();
    if let Some(q) = query {
        loc.push('?');
        loc.push_str(q);
    }
    loc
}

/// Go's `http.Redirect` with 301, as its server answers a path that is not clean.
pub(crate) fn moved_permanently(location: &str, query: Option<&str>) -> Response {
    let loc = with_query(location, query);
    let body = format!(
        "<a href=\"{}\">Moved Permanently</a>.\n\n",
        html_escape(&loc)
    );
    let mut r = typed(StatusCode::MOVED_PERMANENTLY, body, TEXT_HTML);
    if let Ok(v) = HeaderValue::from_str(&loc) {
        r.headers_mut().insert(header::LOCATION, v);
    }
    r
}

fn html_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&#34;")
}

/// httprouter's redirect to the route a path almost matched: 301 for GET, 307 otherwise (so
/// that the client repeats the method and body), no body.
pub(crate) fn redirect(method: &Method, location: &str, query: Option<&str>) -> Response {
    let code = if method == Method::GET {
        StatusCode::MOVED_PERMANENTLY
    } else {
        StatusCode::TEMPORARY_REDIRECT
    };
    let mut r = empty(code);
    if let Ok(v) = HeaderValue::from_str(&with_query(location, query)) {
        r.headers_mut().insert(header::LOCATION, v);
    }
    r
}
