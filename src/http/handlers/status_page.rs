//! `GET P/` and `GET P/status`: the server-rendered status page, every group with its labels,
//! push times, metrics, and a button that deletes the group.
//!
//! - 200 HTML;
//! - 405 any other method.

use std::fmt::Write;

use axum::response::Response;
use base64::Engine;
use http::{Method, StatusCode};

use super::api::rfc3339_nano;
use crate::gateway::Gateway;
use crate::http::request_metrics::counted;
use crate::http::response::{method_not_allowed, plain, typed, TEXT_HTML};
use crate::http::state::{AppState, HttpConfig};
use crate::store::GroupSnapshot;

pub(crate) async fn status_page<G: Gateway>(st: &AppState<G>, method: &Method) -> Response {
    match *method {
        Method::GET => {
            let resp = match st.gateway.groups().await {
                Ok(groups) => render(&st.config, &groups),
                Err(refused) => plain(StatusCode::SERVICE_UNAVAILABLE, refused.0),
            };
            counted("status", method, resp)
        }
        _ => method_not_allowed("GET, OPTIONS"),
    }
}

fn esc(s: &str) -> String {
    let mut o = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => o.push_str("&amp;"),
            '<' => o.push_str("&lt;"),
            '>' => o.push_str("&gt;"),
            '"' => o.push_str("&quot;"),
            '\'' => o.push_str("&#39;"),
            c => o.push(c),
        }
    }
    o
}

/// The group's URL with every value base64-encoded, so any value survives the path.
fn group_url(cfg: &HttpConfig, g: &GroupSnapshot) -> String {
    let b64 = |v: &str| {
        if v.is_empty() {
            "=".to_owned()
        } else {
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v)
        }
    };
    let mut url = format!(
        "{}/metrics/job@base64/{}",
        cfg.route_prefix,
        b64(g.key.job())
    );
    for (n, v) in g.key.labels() {
        if n != "job" {
            let _ = write!(url, "/{n}@base64/{}", b64(v));
        }
    }
    url
}

fn render(cfg: &HttpConfig, groups: &[GroupSnapshot]) -> Response {
    let mut h = String::with_capacity(4096 + groups.len() * 1024);
    h.push_str(
        "<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>pushgate</title>\n<style>\
body{font-family:sans-serif;margin:1.5em}table{border-collapse:collapse;margin:.3em 0 1em}\
td,th{border:1px solid #ccc;padding:2px 6px;text-align:left;font-size:90%}\
.group{border:1px solid #888;border-radius:4px;padding:.5em 1em;margin-bottom:1em}\
.failed{background:#fee}.label{background:#eef;border-radius:3px;padding:1px 4px;margin-right:4px}\
pre{margin:0}</style></head><body>\n<h1>pushgate</h1>\n",
    );
    let _ = writeln!(
        h,
        "<p>{} groups. Started {}. <a href=\"{}{}\">metrics</a></p>",
        groups.len(),
        esc(&rfc3339_nano(cfg.start_time)),
        esc(&cfg.route_prefix),
        esc(&cfg.telemetry_path)
    );
    for g in groups {
        let class = if g.last_push_successful {
            "group"
        } else {
            "group failed"
        };
        let _ = write!(h, "<div class=\"{class}\"><div>");
        for (n, v) in g.key.labels() {
            let _ = write!(h, "<span class=\"label\">{}=\"{}\"</span>", esc(n), esc(v));
        }
        if g.aggregating {
            h.push_str(" <b class=\"aggregating\">aggregating: pushes add up (/aggregate)</b>");
        }
        if let Some(at) = g.expires_at() {
            let _ = write!(
                h,
                " <span class=\"expires\">expires {} unless pushed again</span>",
                esc(&rfc3339_nano(at))
            );
        }
        let _ = write!(
            h,
            "</div><p>last push: {} &middot; last failure: {} &middot; last push successful: {} \
<button onclick=\"if(confirm('Delete this group?'))fetch('{}',{{method:'DELETE'}}).then(()=>location.reload())\">Delete group</button></p>",
            if g.push_time > 0.0 { esc(&rfc3339_nano(g.push_time)) } else { "never".into() },
            if g.failure_time > 0.0 { esc(&rfc3339_nano(g.failure_time)) } else { "never".into() },
            g.last_push_successful,
            esc(&group_url(cfg, g)),
        );
        for (f, t) in &g.families {
            let _ = write!(
                h,
                "<details><summary><b>{}</b> ({}, {} metrics, pushed {})</summary>",
                esc(&f.name),
                f.typ.as_str_name(),
                f.len(),
                esc(&rfc3339_nano(*t))
            );
            if !f.help.is_empty() {
                let _ = write!(h, "<p>{}</p>", esc(&f.help));
            }
            h.push_str("<pre>");
            h.push_str(&esc(&String::from_utf8_lossy(f.text())));
            h.push_str("</pre></details>");
        }
        h.push_str("</div>\n");
    }
    h.push_str("</body></html>\n");
    typed(StatusCode::OK, h, TEXT_HTML)
}
