//! `PUT P/api/v1/admin/import`: groups taken over from another gateway (`pushgate import`, a
//! migration from the upstream Pushgateway), each with its original push and failure times and
//! each family's push time. The body is a pushgate snapshot (`proto/pushgate/snapshot.proto`
//! behind its header, as `--persistence.file` holds it), gzip allowed, at most
//! `--push.max-body-bytes`. Behind `--web.enable-admin-api` like the wipe, since it writes push
//! times no client push can set.
//!
//! - 200 `{"status":"success","data":{"groups":N}}`: every group imported, or kept where the
//!   gateway holds it as written later than the imported copy;
//! - 400 a body that is not a snapshot, a group with times that are not Unix times up to now,
//!   or a group the consistency check refuses (the groups before it are imported; the message
//!   says how many);
//! - 404 without `--web.enable-admin-api`; 405 another method;
//! - 413 over the body limit; 503 the cluster cannot take a group with R copies now.

use axum::extract::Request;
use axum::response::Response;
use http::{Method, StatusCode};
use serde_json::json;

use crate::gateway::Gateway;
use crate::http::request_metrics::counted;
use crate::http::response::{error_text, method_not_allowed, not_found, plain, typed};
use crate::http::state::AppState;
use crate::ingest::body::read_body;
use crate::store::persistence::decode_snapshot_bytes;
use crate::store::upstream::version_at;
use crate::store::{GroupSnapshot, Stamps};

/// How far ahead of this node's clock an imported time may be (clocks of two hosts differ).
const MAX_SKEW_SECONDS: f64 = 300.0;

pub(crate) async fn import<G: Gateway>(st: &AppState<G>, method: &Method, req: Request) -> Response {
    if !st.config.enable_admin_api {
        return not_found();
    }
    if method != Method::PUT {
        return method_not_allowed("PUT");
    }
    counted("import", method, import_groups(st, req).await)
}

async fn import_groups<G: Gateway>(st: &AppState<G>, req: Request) -> Response {
    let cfg = &st.config;
    let (parts, body) = req.into_parts();
    let (bytes, _held) =
        match read_body(&parts.headers, body, cfg.max_body_bytes, &cfg.inflight).await {
            Ok(b) => b,
            Err(e) => return error_text(e.status(), &e),
        };
    let groups = match decode_snapshot_bytes(&bytes, cfg.names) {
        // An import adds groups; a wipe watermark in the body is not applied.
        Ok(decoded) => decoded.groups,
        Err(reason) => {
            return plain(
                StatusCode::BAD_REQUEST,
                format!("import body is not a pushgate snapshot: {reason}"),
            )
        }
    };
    drop(bytes);
    let total = groups.len();
    for (done, mut g) in groups.into_iter().enumerate() {
        if let Err(why) = check_times(&g) {
            return plain(StatusCode::BAD_REQUEST, format!("group {}: {why}{}", g.key, so_far(done)));
        }
        // The sender's version means nothing here: the copy is as new as its own times, and
        // whether its last push succeeded follows from them, as upstream derives it.
        g.version = version_at(g.push_time.max(g.failure_time));
        g.last_push_successful = g.failure_time <= g.push_time;
        g.stamps = Stamps::whole(
            g.version,
            g.families.len(),
            [g.push_time, g.failure_time],
            g.last_push_successful,
        );
        let key = g.key.clone();
        if let Err(e) = st.gateway.import(g).await {
            return error_text(e.status(), &format!("group {key}: {e}{}", so_far(done)));
        }
    }
    typed(
        StatusCode::OK,
        json!({"status": "success", "data": {"groups": total}}).to_string(),
        "application/json",
    )
}

fn so_far(done: usize) -> String {
    format!("; the {done} group(s) before it were imported")
}

/// Push, failure and family times must be Unix times no later than now (give or take the
/// clocks' skew): a time in the future would outrank every later push of the group.
fn check_times(g: &GroupSnapshot) -> Result<(), String> {
    let latest = crate::time::unix_seconds() + MAX_SKEW_SECONDS;
    let times = [g.push_time, g.failure_time]
        .into_iter()
        .chain(g.families.iter().map(|(_, t)| *t));
    for t in times {
        if !(0.0..=latest).contains(&t) {
            return Err(format!("time {t} is not a Unix time up to now"));
        }
    }
    Ok(())
}
