//! One group on the status page: a collapsed row (`<details>`) whose summary carries the
//! grouping labels (`job` and `instance` first, coloured), the markers (last push failed,
//! aggregating, expiry, stale), the age of the last push and the delete button; opened, the
//! push times and each family with HELP and TYPE badges and its metrics as a table (histogram
//! buckets and summary quantiles as nested tables).

use std::fmt::Write;

use base64::Engine;

use super::api::{go_float, rfc3339_nano, simple_value};
use super::html::{esc, esc_into, human_age, query_value};
use crate::exposition::{Metric, MetricType};
use crate::http::state::HttpConfig;
use crate::store::{GroupKey, GroupSnapshot, StoredFamily};

/// The path after `/metrics` that names the group, every value base64-encoded so any value
/// survives the path.
pub(crate) fn group_path(g: &GroupSnapshot) -> String {
    let b64 = |v: &str| {
        if v.is_empty() {
            "=".to_owned()
        } else {
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v)
        }
    };
    let mut path = format!("/job@base64/{}", b64(g.key.job()));
    for (n, v) in g.key.labels() {
        if n != "job" {
            let _ = write!(path, "/{n}@base64/{}", b64(v));
        }
    }
    path
}

/// The grouping labels in display order: `job`, `instance`, then the others by name.
pub(crate) fn display_labels(key: &GroupKey) -> impl Iterator<Item = (&str, &str)> {
    let first = ["job", "instance"]
        .into_iter()
        .filter_map(|n| key.get(n).map(|v| (n, v)));
    let rest = key
        .labels()
        .iter()
        .filter(|(n, _)| n != "job" && n != "instance")
        .map(|(n, v)| (n.as_str(), v.as_str()));
    first.chain(rest)
}

pub(crate) fn label_span(h: &mut String, n: &str, v: &str) {
    let class = match n {
        "job" => "lbl job",
        "instance" => "lbl instance",
        _ => "lbl",
    };
    let _ = write!(h, "<span class=\"{class}\">");
    esc_into(h, n);
    h.push_str("=\"");
    esc_into(h, v);
    h.push_str("\"</span>");
}

fn time_or_never(t: f64) -> String {
    if t > 0.0 {
        rfc3339_nano(t)
    } else {
        "never".to_owned()
    }
}

pub(crate) fn render_group(
    h: &mut String,
    cfg: &HttpConfig,
    g: &GroupSnapshot,
    now: f64,
    stale_secs: f64,
    clustered: bool,
) {
    let path = group_path(g);
    let class = if g.last_push_successful {
        "grp"
    } else {
        "grp failed"
    };
    let _ = write!(h, "<details class=\"{class}\" data-id=\"{}\"><summary>", esc(&path));
    let mut what = String::new();
    for (n, v) in display_labels(&g.key) {
        label_span(h, n, v);
        let _ = write!(what, "{n}=\"{v}\" ");
    }
    if !g.last_push_successful {
        h.push_str("<span class=\"mark fail\">Last push failed!</span>");
    }
    if g.aggregating {
        h.push_str(
            "<span class=\"mark agg\" title=\"pushes under /aggregate add up\">aggregating</span>",
        );
    }
    if let Some(at) = g.expires_at() {
        let _ = write!(
            h,
            "<span class=\"mark exp\" title=\"at {}\">expires in {} unless pushed again</span>",
            esc(&rfc3339_nano(at)),
            human_age(at - now)
        );
    }
    let last = if g.push_time > 0.0 {
        g.push_time
    } else {
        g.failure_time
    };
    let age = now - last;
    if stale_secs > 0.0 && age > stale_secs {
        let _ = write!(
            h,
            "<span class=\"mark stale\">stale: no push for {}</span>",
            human_age(age)
        );
    }
    let _ = write!(
        h,
        "<span class=\"push\">{}</span><button class=\"del\" data-method=\"DELETE\" \
data-url=\"{}{}\" data-confirm=\"Delete group {}?\">Delete Group</button></summary>\n<div class=\"body\">",
        if g.push_time > 0.0 {
            format!("last push {} ago", human_age(now - g.push_time))
        } else {
            "never pushed successfully".to_owned()
        },
        esc(&format!("{}/metrics", cfg.route_prefix)),
        esc(&path),
        esc(what.trim_end()),
    );
    let _ = write!(
        h,
        "<p class=\"muted\">last push: {} &middot; last failure: {}",
        esc(&time_or_never(g.push_time)),
        esc(&time_or_never(g.failure_time)),
    );
    if clustered {
        let _ = write!(
            h,
            " &middot; <a href=\"{}/cluster?key={}\">which nodes own it</a>",
            esc(&cfg.route_prefix),
            esc(&query_value(&path))
        );
    }
    h.push_str("</p>\n");
    for (f, t) in &g.families {
        render_family(h, f, *t);
    }
    h.push_str("</div></details>\n");
}

fn render_family(h: &mut String, f: &StoredFamily, pushed_at: f64) {
    h.push_str("<details class=\"fam\"><summary><b>");
    esc_into(h, &f.name);
    h.push_str("</b> ");
    if !f.help.is_empty() {
        h.push_str("<span class=\"help\" title=\"HELP\">");
        esc_into(h, &f.help);
        h.push_str("</span> ");
    }
    let _ = write!(
        h,
        "<span class=\"type\">{}</span> <span class=\"muted\">last pushed: {}</span></summary>\
<table><thead><tr><th>Labels</th><th>Value</th><th>Timestamp</th></tr></thead><tbody>",
        f.typ.as_str_name(),
        esc(&rfc3339_nano(pushed_at))
    );
    let mf = f.to_metric_family();
    for m in &mf.metric {
        h.push_str("<tr><td>");
        for l in &m.label {
            label_span(h, l.name(), l.value());
            h.push(' ');
        }
        h.push_str("</td><td>");
        value_cell(h, m, f.typ);
        h.push_str("</td><td>");
        if let Some(ms) = m.timestamp_ms {
            esc_into(h, &rfc3339_nano(ms as f64 / 1000.0));
        }
        h.push_str("</td></tr>");
    }
    h.push_str("</tbody></table></details>\n");
}

fn value_cell(h: &mut String, m: &Metric, typ: MetricType) {
    let row = |h: &mut String, k: &str, v: &str| {
        let _ = write!(h, "<tr><th>{}</th><td>{}</td></tr>", esc(k), esc(v));
    };
    match typ {
        MetricType::Summary => {
            let s = m.summary.clone().unwrap_or_default();
            h.push_str("<table class=\"quantiles\">");
            for q in &s.quantile {
                row(h, &format!("Quantile {}", go_float(q.quantile())), &go_float(q.value()));
            }
            row(h, "Sample Count", &s.sample_count().to_string());
            row(h, "Sample Sum", &go_float(s.sample_sum()));
            h.push_str("</table>");
        }
        MetricType::Histogram | MetricType::GaugeHistogram => {
            let hist = m.histogram.clone().unwrap_or_default();
            h.push_str("<table class=\"buckets\">");
            for b in &hist.bucket {
                row(
                    h,
                    &format!("Sample values ≤ {}", go_float(b.upper_bound())),
                    &b.cumulative_count().to_string(),
                );
            }
            row(h, "Total sample Count", &hist.sample_count().to_string());
            row(h, "Sample Sum", &go_float(hist.sample_sum()));
            h.push_str("</table>");
        }
        _ => esc_into(h, &go_float(simple_value(m, typ))),
    }
}
