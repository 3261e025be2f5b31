//! `GET P/` and `GET P/status` (the same page, as upstream): the server-rendered status page.
//!
//! - 200 HTML: the groups that match the filter, sorted and paged on the server, each a
//!   collapsed row (see `status_groups`), and a Status tab (runtime, build, startup flags);
//! - 503 when the groups cannot be read now (a cluster node whose peers' answers are too big);
//! - 405 any other method.
//!
//! Query parameters (all optional; the form on the page sets them):
//! - `q`: words that must all match; `name=value` matches a grouping label whose value contains
//!   `value`, any other word a grouping label value or a metric name containing it (both
//!   case-insensitive);
//! - `sort`: `labels` (job, instance, then the other labels; the default), `push_old` (least
//!   recently pushed first), `push_new`, `failure` (most recent failed push first);
//! - `page` (from 1) and `per_page` (1 to [`MAX_PER_PAGE`], default [`DEFAULT_PER_PAGE`]);
//! - `stale`: the age of the last push beyond which a group is marked stale (a Go duration,
//!   default 1h; `0` marks none).

use std::cmp::Ordering;
use std::fmt::Write;

use axum::response::Response;
use http::{Method, StatusCode};

use super::api::{build_information, rfc3339_nano};
use super::html::{esc, page_end, page_start, query_params, query_value, Tab};
use super::status_groups::{display_labels, render_group};
use crate::gateway::Gateway;
use crate::http::request_metrics::counted;
use crate::http::response::{method_not_allowed, plain, typed, TEXT_HTML};
use crate::http::state::{AppState, HttpConfig};
use crate::store::GroupSnapshot;

pub(crate) const DEFAULT_PER_PAGE: usize = 50;
pub(crate) const MAX_PER_PAGE: usize = 1000;
const DEFAULT_STALE_SECS: f64 = 3600.0;
/// A filter longer than this is refused (it is matched against every group).
const MAX_FILTER_BYTES: usize = 4096;

pub(crate) async fn status_page<G: Gateway>(
    st: &AppState<G>,
    method: &Method,
    query: Option<&str>,
) -> Response {
    match *method {
        Method::GET => {
            let resp = match View::parse(query) {
                Err(e) => plain(StatusCode::BAD_REQUEST, e),
                Ok(view) => match st.gateway.groups().await {
                    Ok(groups) => {
                        let clustered = st.gateway.cluster_view().is_some();
                        render(&st.config, &view, groups, clustered)
                    }
                    Err(refused) => plain(StatusCode::SERVICE_UNAVAILABLE, refused.0),
                },
            };
            counted("status", method, resp)
        }
        _ => method_not_allowed("GET, OPTIONS"),
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Sort {
    Labels,
    PushOld,
    PushNew,
    Failure,
}

impl Sort {
    const ALL: [(Sort, &'static str, &'static str); 4] = [
        (Sort::Labels, "labels", "job, instance, labels"),
        (Sort::PushOld, "push_old", "last push, oldest first"),
        (Sort::PushNew, "push_new", "last push, newest first"),
        (Sort::Failure, "failure", "last failure, newest first"),
    ];
}

/// What the query asks to see.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct View {
    pub(crate) filter: String,
    pub(crate) sort: Sort,
    pub(crate) page: usize,
    pub(crate) per_page: usize,
    pub(crate) stale_secs: f64,
}

impl View {
    pub(crate) fn parse(query: Option<&str>) -> Result<View, String> {
        let mut v = View {
            filter: String::new(),
            sort: Sort::Labels,
            page: 1,
            per_page: DEFAULT_PER_PAGE,
            stale_secs: DEFAULT_STALE_SECS,
        };
        for (k, val) in query_params(query) {
            match k.as_str() {
                "q" if val.len() > MAX_FILTER_BYTES => {
                    return Err(format!("q: longer than {MAX_FILTER_BYTES} bytes"))
                }
                "q" => v.filter = val.trim().to_owned(),
                "sort" if val.is_empty() => {}
                "sort" => {
                    v.sort = Sort::ALL
                        .iter()
                        .find(|(_, name, _)| *name == val)
                        .map(|(s, _, _)| *s)
                        .ok_or_else(|| {
                            format!("sort: {val:?} is none of labels, push_old, push_new, failure")
                        })?
                }
                "page" if !val.is_empty() => {
                    v.page = val
                        .parse::<usize>()
                        .ok()
                        .filter(|p| *p >= 1)
                        .ok_or_else(|| format!("page: {val:?} is not a page number (1, 2, ...)"))?
                }
                "per_page" if !val.is_empty() => {
                    v.per_page = val
                        .parse::<usize>()
                        .ok()
                        .filter(|p| (1..=MAX_PER_PAGE).contains(p))
                        .ok_or_else(|| format!("per_page: {val:?} is not 1 to {MAX_PER_PAGE}"))?
                }
                "stale" if !val.is_empty() => {
                    v.stale_secs = crate::time::parse_go_duration(&val)
                        .map_err(|e| format!("stale: {e}"))?
                        .as_secs_f64()
                }
                _ => {}
            }
        }
        Ok(v)
    }

    /// The query string of this view on another page.
    fn link(&self, page: usize) -> String {
        let mut q = format!("?page={page}&per_page={}", self.per_page);
        if !self.filter.is_empty() {
            let _ = write!(q, "&q={}", query_value(&self.filter));
        }
        if self.sort != Sort::Labels {
            let name = Sort::ALL.iter().find(|s| s.0 == self.sort).map_or("", |s| s.1);
            let _ = write!(q, "&sort={name}");
        }
        if self.stale_secs != DEFAULT_STALE_SECS {
            let _ = write!(q, "&stale={}s", self.stale_secs);
        }
        q
    }
}

/// One word of the filter.
enum Term {
    /// `name=value`: a grouping label `name` whose value contains `value`.
    Label(String, String),
    /// Any grouping label value or metric name containing it.
    Text(String),
}

fn terms(filter: &str) -> Vec<Term> {
    filter
        .split_whitespace()
        .map(|w| match w.split_once('=') {
            Some((n, v)) if !n.is_empty() => Term::Label(n.to_owned(), v.to_lowercase()),
            _ => Term::Text(w.to_lowercase()),
        })
        .collect()
}

fn contains_ci(hay: &str, lower_needle: &str) -> bool {
    lower_needle.is_empty()
        || if hay.is_ascii() && lower_needle.is_ascii() {
            hay.as_bytes()
                .windows(lower_needle.len())
                .any(|w| w.eq_ignore_ascii_case(lower_needle.as_bytes()))
        } else {
            hay.to_lowercase().contains(lower_needle)
        }
}

fn matches(g: &GroupSnapshot, terms: &[Term]) -> bool {
    terms.iter().all(|t| match t {
        Term::Label(n, v) => g.key.get(n).is_some_and(|have| contains_ci(have, v)),
        Term::Text(w) => {
            g.key.labels().iter().any(|(_, v)| contains_ci(v, w))
                || g.families.iter().any(|(f, _)| contains_ci(&f.name, w))
        }
    })
}

fn by_labels(a: &GroupSnapshot, b: &GroupSnapshot) -> Ordering {
    display_labels(&a.key).cmp(display_labels(&b.key))
}

/// The groups to show: filtered, sorted, and the page's slice; with the number that matched.
pub(crate) fn select(groups: Vec<GroupSnapshot>, view: &View) -> (Vec<GroupSnapshot>, usize) {
    let terms = terms(&view.filter);
    let mut kept: Vec<GroupSnapshot> = if terms.is_empty() {
        groups
    } else {
        groups.into_iter().filter(|g| matches(g, &terms)).collect()
    };
    let total = kept.len();
    let cmp = |a: &GroupSnapshot, b: &GroupSnapshot| match view.sort {
        Sort::Labels => by_labels(a, b),
        Sort::PushOld => a.push_time.total_cmp(&b.push_time).then_with(|| by_labels(a, b)),
        Sort::PushNew => b.push_time.total_cmp(&a.push_time).then_with(|| by_labels(a, b)),
        Sort::Failure => b
            .failure_time
            .total_cmp(&a.failure_time)
            .then_with(|| by_labels(a, b)),
    };
    let start = (view.page - 1).saturating_mul(view.per_page).min(total);
    let end = start.saturating_add(view.per_page).min(total);
    // Only the page's groups need their full order: partition around the page's bounds, then
    // sort the page alone (100,000 groups are not sorted whole for a page of 50).
    if end > start {
        if start > 0 {
            kept.select_nth_unstable_by(start, cmp);
        }
        let tail = &mut kept[start..];
        if end - start < tail.len() {
            tail.select_nth_unstable_by(end - start, cmp);
        }
        kept[start..end].sort_by(cmp);
    }
    kept.truncate(end);
    kept.drain(..start);
    (kept, total)
}

fn render(cfg: &HttpConfig, view: &View, groups: Vec<GroupSnapshot>, clustered: bool) -> Response {
    let held = groups.len();
    let failed = groups.iter().filter(|g| !g.last_push_successful).count();
    let (page, matched) = select(groups, view);
    let now = crate::time::unix_seconds();
    let mut h = String::with_capacity(8192 + page.len() * 2048);
    page_start(&mut h, cfg, "pushgate", Tab::Metrics);
    status_tab(&mut h, cfg);
    h.push_str("<section class=\"metrics-tab\" id=\"metrics\">\n");
    let _ = write!(
        h,
        "<form class=\"bar\" method=\"get\" action=\"\"><input type=\"search\" name=\"q\" id=\"q\" \
value=\"{}\" placeholder=\"filter: job=batch, a label value or a metric name\">\
<select name=\"sort\" id=\"sort\">",
        esc(&view.filter)
    );
    for (s, name, label) in Sort::ALL {
        let sel = if s == view.sort { " selected" } else { "" };
        let _ = write!(h, "<option value=\"{name}\"{sel}>{label}</option>");
    }
    let _ = write!(
        h,
        "</select><input type=\"hidden\" name=\"per_page\" value=\"{}\">\
<button type=\"submit\" id=\"apply\">Filter</button>",
        view.per_page
    );
    if !view.filter.is_empty() || view.sort != Sort::Labels {
        let _ = write!(h, "<a href=\"{}/\">clear</a>", esc(&cfg.route_prefix));
    }
    if cfg.enable_admin_api {
        let _ = write!(
            h,
            "<button class=\"del\" id=\"delete-all\" style=\"margin-left:auto\" data-method=\"PUT\" \
data-url=\"{}/api/v1/admin/wipe\" data-confirm=\"Delete ALL groups? This cannot be undone.\">\
Delete All Groups</button>",
            esc(&cfg.route_prefix)
        );
    }
    h.push_str("</form>\n");
    let _ = writeln!(
        h,
        "<p class=\"muted\" id=\"summary\">{held} groups held, {failed} with a failed last push; \
<b>{matched}</b> match. Stale: last push over {} ago.</p>",
        super::html::human_age(view.stale_secs)
    );
    let pages = matched.div_ceil(view.per_page).max(1);
    h.push_str("<div id=\"groups\">\n");
    for g in &page {
        render_group(&mut h, cfg, g, now, view.stale_secs, clustered);
    }
    if page.is_empty() {
        h.push_str("<p id=\"none\">No group matches.</p>\n");
    }
    h.push_str("</div>\n<div class=\"pages\">");
    if view.page > 1 {
        let _ = write!(h, "<a id=\"prev\" href=\"{}\">&laquo; previous</a>", esc(&view.link(view.page - 1)));
    }
    let _ = write!(h, "<span>page {} of {pages}</span>", view.page);
    if view.page < pages {
        let _ = write!(h, "<a id=\"next\" href=\"{}\">next &raquo;</a>", esc(&view.link(view.page + 1)));
    }
    h.push_str("</div>\n</section>\n");
    page_end(&mut h);
    typed(StatusCode::OK, h, TEXT_HTML)
}

/// The Status tab: upstream's three tables (runtime, build, startup flags). The flags come
/// from the same table as `/api/v1/status`.
fn status_tab(h: &mut String, cfg: &HttpConfig) {
    h.push_str("<section class=\"tab\" id=\"status\">\n<h2>Runtime Information</h2><table class=\"kv\">");
    let _ = write!(
        h,
        "<tr><th>Started</th><td>{}</td></tr></table>\n<h2>Build Information</h2><table class=\"kv\">",
        esc(&rfc3339_nano(cfg.start_time))
    );
    for (k, v) in build_information() {
        let _ = write!(h, "<tr><th>{}</th><td>{}</td></tr>", esc(k), esc(v));
    }
    h.push_str("</table>\n<h2>Startup Flags</h2><table class=\"kv\" id=\"flags\">");
    let mut flags: Vec<&(String, String)> = cfg.flags.iter().collect();
    flags.sort();
    for (k, v) in flags {
        let _ = write!(h, "<tr><th>{}</th><td>{}</td></tr>", esc(k), esc(v));
    }
    h.push_str("</table>\n</section>\n");
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::store::GroupKey;

    fn group(job: &str, instance: &str, push: f64, failure: f64) -> GroupSnapshot {
        GroupSnapshot {
            key: Arc::new(GroupKey::new([
                ("job".to_owned(), job.to_owned()),
                ("instance".to_owned(), instance.to_owned()),
                ("a_label".to_owned(), format!("{job}{instance}")),
            ])),
            families: Vec::new(),
            push_time: push,
            failure_time: failure,
            last_push_successful: failure <= push,
            aggregating: false,
            ttl: 0.0,
            version: 0,
            stamps: crate::store::Stamps::default(),
            timing: None,
            agg: None,
            agg_digest: 0,
        }
    }

    fn jobs(gs: &[GroupSnapshot]) -> Vec<String> {
        gs.iter()
            .map(|g| format!("{}/{}", g.key.job(), g.key.get("instance").unwrap_or("")))
            .collect()
    }

    /// Every page of every order is the same slice a whole sort gives: the partial selections
    /// around the page's bounds lose and repeat nothing.
    #[test]
    fn each_page_is_the_slice_of_the_whole_sorted_list() {
        // Push times collide on purpose (ties are broken by the labels).
        let all: Vec<GroupSnapshot> = (0..97)
            .map(|i| {
                group(
                    &format!("j{}", (i * 37) % 11),
                    &format!("i{}", (i * 53) % 97),
                    (i % 7) as f64,
                    (i % 5) as f64,
                )
            })
            .collect();
        for sort in Sort::ALL.map(|s| s.0) {
            let mut whole = all.clone();
            let view = |page, per_page| View {
                filter: String::new(),
                sort,
                page,
                per_page,
                stale_secs: DEFAULT_STALE_SECS,
            };
            let (everything, n) = select(all.clone(), &view(1, 1000));
            assert_eq!(n, 97);
            whole.sort_by(|a, b| match sort {
                Sort::Labels => by_labels(a, b),
                Sort::PushOld => a.push_time.total_cmp(&b.push_time).then(by_labels(a, b)),
                Sort::PushNew => b.push_time.total_cmp(&a.push_time).then(by_labels(a, b)),
                Sort::Failure => b.failure_time.total_cmp(&a.failure_time).then(by_labels(a, b)),
            });
            assert_eq!(jobs(&everything), jobs(&whole), "{sort:?}");
            for per_page in [1, 7, 10, 96, 97, 200] {
                let mut pages = Vec::new();
                for page in 1..=(97 / per_page + 2) {
                    let (slice, n) = select(all.clone(), &view(page, per_page));
                    assert_eq!(n, 97);
                    pages.extend(jobs(&slice));
                }
                assert_eq!(pages, jobs(&whole), "{sort:?} per_page {per_page}");
            }
        }
    }

    #[test]
    fn job_and_instance_lead_the_label_order() {
        let g = group("b", "x", 1.0, 0.0);
        let order: Vec<&str> = display_labels(&g.key).map(|(n, _)| n).collect();
        assert_eq!(order, ["job", "instance", "a_label"]);
    }

    #[test]
    fn the_filter_matches_labels_and_metric_names() {
        let g = group("backup", "db-1", 1.0, 0.0);
        let m = |f: &str| matches(&g, &terms(f));
        assert!(m("job=back"));
        assert!(!m("JOB=BACK"), "label names match exactly");
        assert!(m("job=BACK db-1"));
        assert!(!m("job=db"));
        assert!(!m("nosuch=x"));
        assert!(m("DB-"));
        assert!(!m("backup missing"));
    }
}
