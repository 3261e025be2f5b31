//! The persistence file of a node: loaded at start (an unreadable file refuses the start, or is
//! moved aside when the flags allow), written at most once per interval and at shutdown.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio::sync::Notify;

use crate::exposition::names::NameScheme;
use crate::store::{persistence, Store};
use crate::telemetry::metrics as m;
use crate::time::unix_seconds;

/// Loads the file into `store`. Refuses a path whose directory does not exist (nothing could
/// be written there) and, unless `start_empty`, an unreadable file; with `start_empty`, the
/// unreadable file is renamed aside (`.corrupt-<unix time>`) and the store starts empty.
pub(super) fn load(
    store: &Store,
    path: &Path,
    names: NameScheme,
    start_empty: bool,
) -> anyhow::Result<()> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_owned(),
        _ => PathBuf::from("."),
    };
    if !dir.is_dir() {
        anyhow::bail!(
            "--persistence.file {:?}: directory {:?} does not exist",
            path.display().to_string(),
            dir.display().to_string()
        );
    }
    match persistence::load(store, path, names) {
        Ok(n) => {
            tracing::info!(file = %path.display(), groups = n, "loaded persistence file");
            Ok(())
        }
        Err(e) if start_empty => {
            let aside = aside_name(path, unix_seconds() as u64);
            std::fs::rename(path, &aside)
                .with_context(|| format!("{e}; and moving it aside to {} failed", aside.display()))?;
            store.wipe();
            tracing::error!(err = %e, kept_as = %aside.display(), "persistence file unreadable; starting empty as --persistence.start-empty-on-error asks");
            Ok(())
        }
        Err(e) => Err(anyhow::Error::new(e).context(
            "refusing to start: fix or remove the persistence file, or pass --persistence.start-empty-on-error",
        )),
    }
}

/// Where an unreadable file is kept: `.corrupt-<unix time>` appended to its whole name (as
/// `--help` says), so `t.snap` keeps its `.snap` and an operator sees what the file was.
fn aside_name(path: &Path, unix_time: u64) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(format!(".corrupt-{unix_time}"));
    PathBuf::from(name)
}

/// Writes the snapshot at most once per interval when something changed, and once more at
/// shutdown.
pub(super) async fn persist_loop(
    store: Arc<Store>,
    path: PathBuf,
    interval: Duration,
    stop: Arc<Notify>,
) -> anyhow::Result<()> {
    let mut written = store.generation();
    let interval = interval.max(Duration::from_millis(100));
    loop {
        let stopping = tokio::select! {
            _ = tokio::time::sleep(interval) => false,
            _ = stop.notified() => true,
        };
        let generation = store.generation();
        if generation != written || stopping {
            let s = store.clone();
            let p = path.clone();
            let res = tokio::task::spawn_blocking(move || persistence::save(&s, &p))
                .await
                .context("persistence writer panicked")?;
            match res {
                Ok(groups) => {
                    written = generation;
                    metrics::counter!(m::PERSISTENCE_WRITES_TOTAL, "result" => "success")
                        .increment(1);
                    metrics::gauge!(m::PERSISTENCE_LAST_WRITE_SECONDS).set(unix_seconds());
                    tracing::debug!(file = %path.display(), groups, "wrote persistence file");
                }
                Err(e) => {
                    metrics::counter!(m::PERSISTENCE_WRITES_TOTAL, "result" => "error")
                        .increment(1);
                    tracing::error!(err = %e, "writing the persistence file failed");
                    if stopping {
                        return Err(e.into());
                    }
                }
            }
        }
        if stopping {
            return Ok(());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_unreadable_file_keeps_its_whole_name_with_the_corrupt_suffix() {
        assert_eq!(
            aside_name(Path::new("/data/t2.snap"), 1_700_000_000),
            PathBuf::from("/data/t2.snap.corrupt-1700000000")
        );
        assert_eq!(
            aside_name(Path::new("snap"), 7),
            PathBuf::from("snap.corrupt-7")
        );
        assert_eq!(
            aside_name(Path::new("dir.d/pushgate.data.v2"), 7),
            PathBuf::from("dir.d/pushgate.data.v2.corrupt-7")
        );
    }
}
