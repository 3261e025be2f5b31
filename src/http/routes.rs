//! The route table: which handler answers a request, from its method and its path.
//!
//! Routing is done by hand on the percent-decoded path, as upstream's router does, so that an
//! encoded `/` in a label value splits the path exactly like upstream (use `@base64` for such
//! values) and redirects, 404s and 405s come out the same. Before routing, a path that is not
//! clean gets Go's 301 to the cleaned path, and the route prefix is stripped (the bare prefix
//! redirects to `P/`). A path that misses every route only by a trailing slash redirects to the
//! path without it (301 for GET, 307 otherwise).

use axum::extract::Request;
use axum::response::Response;
use http::{Method, StatusCode};

use super::handlers::{
    api, cluster_page, delete, import, lifecycle, push, scrape, status_page,
};
use super::path::{clean_path, is_clean, percent_decode};
use super::response::{method_not_allowed, moved_permanently, not_found, plain, redirect};
use super::state::{AppState, HttpConfig};
use crate::gateway::Gateway;

enum Route<'a> {
    Push { rest: &'a str },
    /// `/aggregate/metrics/job/...`: an aggregating group (pushgate's addition).
    Aggregate { rest: &'a str },
    Scrape,
    /// `/-/node-metrics`: this node's own metrics, for a per-pod scrape (pushgate's addition).
    NodeMetrics,
    Healthy,
    Ready,
    Quit,
    Status,
    /// `/cluster`: the Cluster page (pushgate's addition).
    Cluster,
    ApiStatus,
    ApiMetrics,
    ApiWipe,
    ApiImport,
    ApiOptions,
    /// `/debug/pprof` and below: upstream's Go profiler, which pushgate has not.
    Pprof,
}

/// Matches a prefix-relative path; `None` when no route has this path.
fn match_route<'a>(rel: &'a str, cfg: &HttpConfig) -> Option<Route<'a>> {
    if rel == cfg.telemetry_path {
        return Some(Route::Scrape);
    }
    if let Some(rest) = rel.strip_prefix("/metrics").filter(|r| is_group_path(r)) {
        return Some(Route::Push { rest });
    }
    if let Some(rest) = rel
        .strip_prefix("/aggregate/metrics")
        .filter(|r| is_group_path(r))
    {
        return Some(Route::Aggregate { rest });
    }
    Some(match rel {
        "/-/healthy" => Route::Healthy,
        "/-/node-metrics" => Route::NodeMetrics,
        "/-/ready" => Route::Ready,
        "/-/quit" => Route::Quit,
        "/" | "/status" => Route::Status,
        "/cluster" => Route::Cluster,
        "/api/v1/status" => Route::ApiStatus,
        "/api/v1/metrics" => Route::ApiMetrics,
        "/api/v1/admin/wipe" => Route::ApiWipe,
        "/api/v1/admin/import" => Route::ApiImport,
        r if r.starts_with("/api/v1/") => Route::ApiOptions,
        r if r == "/debug/pprof" || r.starts_with("/debug/pprof/") => Route::Pprof,
        _ => return None,
    })
}

/// Whether the path after `/metrics` names a group: `/job/<non-empty job>` optionally followed
/// by `/<labels...>`.
fn is_group_path(rest: &str) -> bool {
    rest.strip_prefix("/job/")
        .or_else(|| rest.strip_prefix("/job@base64/"))
        .is_some_and(|after| !after.split('/').next().unwrap_or("").is_empty())
}

/// Answers a request that the web config let through.
pub(crate) async fn dispatch<G: Gateway>(st: &AppState<G>, req: Request) -> Response {
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
        // The one path two handler files share, split by method here.
        Route::Push { rest } => match method {
            Method::PUT | Method::POST => push::push(st, &method, rest, req, false).await,
            Method::DELETE => delete::delete(st, &method, rest).await,
            _ => method_not_allowed("DELETE, OPTIONS, POST, PUT"),
        },
        // A DELETE resets the group whichever path names it.
        Route::Aggregate { rest } => match method {
            Method::PUT | Method::POST => push::push(st, &method, rest, req, true).await,
            Method::DELETE => delete::delete(st, &method, rest).await,
            _ => method_not_allowed("DELETE, OPTIONS, POST, PUT"),
        },
        Route::Scrape => scrape::scrape(st, &method, req.headers()).await,
        Route::NodeMetrics => scrape::node_metrics(st, &method, req.headers()).await,
        Route::Healthy => lifecycle::healthy(&method),
        Route::Ready => lifecycle::ready(st, &method),
        Route::Quit => lifecycle::quit(st, &method),
        Route::Status => status_page::status_page(st, &method, query.as_deref()).await,
        Route::Cluster => cluster_page::cluster_page(st, &method, query.as_deref()),
        Route::ApiStatus => api::status(st, &method).await,
        Route::ApiMetrics => api::metrics(st, &method).await,
        Route::ApiWipe => api::wipe(st, &method).await,
        Route::ApiImport => import::import(st, &method, req).await,
        Route::ApiOptions => api::options(&method),
        Route::Pprof => no_pprof(),
    }
}

/// Upstream serves Go's profiler under `/debug/pprof/`; pushgate is not a Go program. A 404,
/// as for any path upstream has not (a profile scraper then fails as on a missing endpoint),
/// with a text that says why rather than "404 page not found".
fn no_pprof() -> Response {
    plain(
        StatusCode::NOT_FOUND,
        "404 pushgate has no /debug/pprof: it is not a Go program, so Go's profiler is not there; profile it with perf or a sampling profiler (see docs/compatibility.md)",
    )
}
