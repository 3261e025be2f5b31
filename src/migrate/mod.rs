//! `pushgate import`: copies every group of an upstream Pushgateway into a pushgate node or
//! cluster with its push and failure times, for a migration without losing a group. The groups
//! come from the running gateway's `/api/v1/metrics` (`api_json`) or from its persistence file
//! (`store::upstream`; a pushgate snapshot is read too); each goes to the target's admin import
//! endpoint (`PUT P/api/v1/admin/import`, one group per request, as a pushgate snapshot), which
//! places it on its owners like a push. Running it twice changes nothing: the target keeps a
//! group it holds as written later than the imported copy.

mod api_json;
mod client;

use std::collections::VecDeque;
use std::sync::Arc;

use bytes::Bytes;
use http::Method;
use parking_lot::Mutex;

use self::client::Endpoint;
use crate::config::import::{Access, ImportArgs};
use crate::exposition::NameScheme;
use crate::store::persistence::{encode_snapshot, read_file};
use crate::store::GroupSnapshot;

/// The largest `/api/v1/metrics` reply read from the upstream gateway.
const MAX_API_REPLY: usize = 1 << 30;
/// The largest answer read from the target.
const MAX_IMPORT_REPLY: usize = 64 << 10;

/// What an import did.
#[derive(Debug, Default)]
pub struct Summary {
    pub groups: usize,
    /// Each group the target refused, with why.
    pub failed: Vec<String>,
}

/// Reads the groups from the source and imports them into the target.
pub async fn run(args: ImportArgs) -> anyhow::Result<Summary> {
    let to = Arc::new(
        Endpoint::new(&args.to, &Access::from(&args.to_access), args.timeout)
            .map_err(anyhow::Error::msg)?,
    );
    // Names as the newest upstream allows them: the target checks them by its own flags.
    let names = NameScheme::Utf8;
    let (groups, source) = match (&args.from, &args.from_file) {
        (_, Some(path)) => match read_file(path, names)? {
            Some((decoded, _)) => (decoded.groups, path.display().to_string()),
            None => anyhow::bail!("--from-file {}: no such file", path.display()),
        },
        (Some(url), None) => {
            let from = Arc::new(
                Endpoint::new(url, &Access::from(&args.from_access), args.timeout)
                    .map_err(anyhow::Error::msg)?,
            );
            let (status, body) = from
                .connection()
                .send(Method::GET, "/api/v1/metrics", Bytes::new(), MAX_API_REPLY)
                .await
                .map_err(anyhow::Error::msg)?;
            if !status.is_success() {
                anyhow::bail!(
                    "{}/api/v1/metrics answered {status}: {}",
                    from.shown,
                    String::from_utf8_lossy(&body).trim()
                );
            }
            let groups = api_json::groups_from_api(&body, names)
                .map_err(|e| anyhow::anyhow!("{}/api/v1/metrics: {e}", from.shown))?;
            (groups, from.shown.clone())
        }
        (None, None) => anyhow::bail!("give --from or --from-file"),
    };
    tracing::info!(from = %source, to = %to.shown, groups = groups.len(), "importing");
    let total = groups.len();
    let queue = Arc::new(Mutex::new(VecDeque::from(groups)));
    let failed = Arc::new(Mutex::new(Vec::new()));
    let mut workers = tokio::task::JoinSet::new();
    for _ in 0..args.concurrency {
        let (queue, failed, to) = (queue.clone(), failed.clone(), to.clone());
        workers.spawn(async move {
            let mut conn = to.connection();
            loop {
                let Some(g) = queue.lock().pop_front() else {
                    return;
                };
                if let Err(e) = send_group(&mut conn, &g).await {
                    tracing::error!(group = %g.key, err = %e, "import of a group failed");
                    failed.lock().push(format!("group {}: {e}", g.key));
                }
            }
        });
    }
    while let Some(done) = workers.join_next().await {
        done.map_err(|e| anyhow::anyhow!("an import worker failed: {e}"))?;
    }
    let failed = std::mem::take(&mut *failed.lock());
    Ok(Summary {
        groups: total,
        failed,
    })
}

/// One group to the target; a failure carries the target's answer.
async fn send_group(conn: &mut client::Connection, g: &GroupSnapshot) -> Result<(), String> {
    // An import carries groups only, never a wipe watermark.
    let body = Bytes::from(encode_snapshot(
        std::slice::from_ref(g),
        &[],
        crate::time::unix_seconds(),
        0,
    ));
    let (status, reply) = conn
        .send(Method::PUT, "/api/v1/admin/import", body, MAX_IMPORT_REPLY)
        .await?;
    if status.is_success() {
        return Ok(());
    }
    let reply = String::from_utf8_lossy(&reply);
    let hint = if status == http::StatusCode::NOT_FOUND {
        " (does the target run with --web.enable-admin-api?)"
    } else {
        ""
    };
    Err(format!("{status}: {}{hint}", reply.trim()))
}
