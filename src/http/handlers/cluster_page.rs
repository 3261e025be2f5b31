//! `GET P/cluster`: the Cluster page (pushgate's addition; upstream has no such route).
//!
//! - 200 HTML: on a cluster node, every live member (state, address, version, groups held and
//!   owned as primary, hints, last heartbeat) and a form that names the nodes owning a group
//!   (`?key=/job/<job>/<label>/<value>...`, the path after `/metrics` in a push URL, `@base64`
//!   accepted); on a single node, a line saying so;
//! - 400 a `key` that is not a grouping key path (with the parser's message, shown on the page);
//! - 405 any other method.

use std::fmt::Write;

use axum::response::Response;
use http::{Method, StatusCode};

use super::html::{esc, human_age, page_end, page_start, query_params, Tab};
use super::status_groups::{display_labels, label_span};
use crate::gateway::{ClusterView, Gateway};
use crate::http::grouping::parse_grouping_path;
use crate::http::request_metrics::counted;
use crate::http::response::{method_not_allowed, typed, TEXT_HTML};
use crate::http::state::AppState;

pub(crate) fn cluster_page<G: Gateway>(
    st: &AppState<G>,
    method: &Method,
    query: Option<&str>,
) -> Response {
    if *method != Method::GET {
        return method_not_allowed("GET, OPTIONS");
    }
    let cfg = &st.config;
    let key_text = query_params(query)
        .into_iter()
        .find(|(k, _)| k == "key")
        .map(|(_, v)| v.trim().to_owned())
        .filter(|v| !v.is_empty());
    let mut h = String::with_capacity(8192);
    page_start(&mut h, cfg, "pushgate: cluster", Tab::Cluster);
    let mut status = StatusCode::OK;
    match st.gateway.cluster_view() {
        None => h.push_str(
            "<h2>Cluster</h2><p id=\"single\">This is a single node: it is not running as a \
cluster member (start it with <code>--cluster.listen-address</code> and \
<code>--cluster.peer</code> to form a cluster).</p>\n",
        ),
        Some(view) => {
            members_table(&mut h, &view);
            let _ = writeln!(
                h,
                "<h2>Which nodes own a group?</h2><form class=\"bar\" method=\"get\" action=\"\">\
<input type=\"search\" name=\"key\" id=\"key\" value=\"{}\" \
placeholder=\"/job/batch/instance/a (the path after /metrics)\"><button type=\"submit\" id=\"find\">\
Find owners</button></form>",
                esc(key_text.as_deref().unwrap_or(""))
            );
            if let Some(text) = &key_text {
                // Accept a whole push path too, as people copy it from a client's URL.
                let rest = text.strip_prefix("/metrics").unwrap_or(text);
                let rest = if rest.starts_with('/') {
                    rest.to_owned()
                } else {
                    format!("/{rest}")
                };
                match parse_grouping_path(&rest, cfg.names, cfg.grouping) {
                    Err(e) => {
                        status = StatusCode::BAD_REQUEST;
                        let _ = write!(h, "<p class=\"mark fail\" id=\"key-error\">{}</p>", esc(&e.0));
                    }
                    Ok(key) => {
                        let owners = st.gateway.owners(&key);
                        h.push_str("<div id=\"owners\">");
                        for (n, v) in display_labels(&key) {
                            label_span(&mut h, n, v);
                            h.push(' ');
                        }
                        match owners {
                            Some(o) if !o.nodes.is_empty() => {
                                h.push_str("is owned by: <ol>");
                                for (i, n) in o.nodes.iter().enumerate() {
                                    let role = if i == 0 { "primary" } else { "replica" };
                                    let _ = write!(h, "<li class=\"owner\"><b>{}</b> ({role})</li>", esc(n));
                                }
                                h.push_str("</ol>");
                                if o.short {
                                    let _ = write!(
                                        h,
                                        "<span class=\"mark stale\">fewer active members than the \
replication factor ({}): fewer copies than wanted</span>",
                                        view.replication_factor
                                    );
                                }
                            }
                            _ => h.push_str("has no owner: no member is active."),
                        }
                        h.push_str("</div>\n");
                    }
                }
            }
        }
    }
    page_end(&mut h);
    counted("cluster", method, typed(status, h, TEXT_HTML))
}

fn members_table(h: &mut String, view: &ClusterView) {
    let _ = write!(
        h,
        "<h2>Cluster</h2><p class=\"muted\">Seen from <b>{}</b>: {} live members; replication \
factor {}, write quorum {}. Groups and hints are each node's own counts (primary as of its last \
reconciliation round), gossiped every few seconds.</p>\n<table id=\"members\"><thead><tr>\
<th>Node</th><th>State</th><th>Address (gRPC)</th><th>Version</th><th>Groups held</th>\
<th>Owned as primary</th><th>Hints</th><th>Last heartbeat</th></tr></thead><tbody>",
        esc(&view.self_id),
        view.members.len(),
        view.replication_factor,
        view.write_quorum
    );
    let num = |v: Option<u64>| v.map_or("?".to_owned(), |n| n.to_string());
    for m in &view.members {
        let me = if m.id == view.self_id { " (this node)" } else { "" };
        let _ = write!(
            h,
            "<tr class=\"member\"><td>{}{me}</td><td class=\"state-{}\">{}</td><td>{}</td><td>{}</td>\
<td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            esc(&m.id),
            m.state,
            m.state,
            esc(&m.address),
            esc(m.version.as_deref().unwrap_or("?")),
            num(m.groups),
            num(m.primary),
            num(m.hints),
            m.heartbeat_age
                .map_or("?".to_owned(), |a| format!("{} ago", human_age(a.as_secs_f64()))),
        );
    }
    h.push_str("</tbody></table>\n");
}
