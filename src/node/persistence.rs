//! The persistence file of a node: loaded at start (an unreadable file refuses the start, or is
//! moved aside when the flags allow), written at most once per interval and at shutdown.
//!
//! An upstream Pushgateway file at that path is loaded too (a migration): its groups are kept
//! with their times, the file itself is kept under `<file>.upstream-<unix time>` (a hard link
//! to the same bytes, or a copy), and pushgate's own snapshot replaces it at the path on the
//! next round, so the next start reads pushgate's format and the upstream file stays as it was
//! for a rollback.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio::sync::Notify;

use crate::exposition::names::NameScheme;
use crate::store::persistence::{FileFormat, Loaded};
use crate::store::{persistence, Store};
use crate::telemetry::metrics as m;
use crate::time::unix_seconds;

/// Loads the file into `store`. Refuses a path whose directory does not exist (nothing could
/// be written there) and, unless `start_empty`, an unreadable file; with `start_empty`, the
/// unreadable file is renamed aside (`.corrupt-<unix time>`) and the store starts empty.
/// True when the store holds groups the file does not hold in pushgate's format (an upstream
/// file was loaded): the snapshot is then written on the next round, changes or not.
pub(super) fn load(
    store: &Store,
    path: &Path,
    names: NameScheme,
    start_empty: bool,
) -> anyhow::Result<bool> {
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
        Ok(Loaded {
            groups,
            format: Some(FileFormat::Upstream),
        }) => {
            let kept = keep_upstream_file(path, unix_seconds() as u64)?;
            tracing::info!(
                file = %path.display(),
                groups,
                kept_as = %kept.display(),
                "loaded the upstream Pushgateway's persistence file; pushgate's snapshot replaces it at the next write, the upstream file is kept as it was"
            );
            Ok(true)
        }
        Ok(Loaded { groups, .. }) => {
            tracing::info!(file = %path.display(), groups, "loaded persistence file");
            Ok(false)
        }
        Err(e) if start_empty => {
            let aside = aside_name(path, unix_seconds() as u64);
            std::fs::rename(path, &aside)
                .with_context(|| format!("{e}; and moving it aside to {} failed", aside.display()))?;
            store.wipe();
            tracing::error!(err = %e, kept_as = %aside.display(), "persistence file unreadable; starting empty as --persistence.start-empty-on-error asks");
            Ok(false)
        }
        Err(e) => Err(anyhow::Error::new(e).context(
            "refusing to start: fix or remove the persistence file, or pass --persistence.start-empty-on-error",
        )),
    }
}

/// Keeps the upstream file at `path` under `<path>.upstream-<unix time>` (`.1`, `.2`, ... added
/// when that name is taken: nothing already kept is ever replaced) before pushgate's snapshot
/// replaces it: a hard link (the very same bytes, nothing copied), or a copy where the file
/// system has none. Failing that, the start is refused: the snapshot must not be the only copy
/// of what the upstream file held.
fn keep_upstream_file(path: &Path, unix_time: u64) -> anyhow::Result<PathBuf> {
    let refused = |kept: &Path, e: std::io::Error| {
        anyhow::anyhow!(
            "refusing to start: the upstream Pushgateway file {} could not be kept as {} before pushgate's snapshot replaces it: {e}",
            path.display(),
            kept.display()
        )
    };
    for n in 0..100 {
        let mut name = path.as_os_str().to_owned();
        name.push(format!(".upstream-{unix_time}"));
        if n > 0 {
            name.push(format!(".{n}"));
        }
        let kept = PathBuf::from(name);
        match std::fs::hard_link(path, &kept) {
            Ok(()) => return Ok(kept),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(_) => {}
        }
        let copied = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&kept)
            .and_then(|mut to| {
                std::io::copy(&mut std::fs::File::open(path)?, &mut to)?;
                to.sync_all()
            });
        match copied {
            Ok(()) => return Ok(kept),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(refused(&kept, e)),
        }
    }
    Err(refused(
        path,
        std::io::Error::other("100 kept copies of that second exist already"),
    ))
}

/// Where an unreadable file is kept: `.corrupt-<unix time>` appended to its whole name (as
/// `--help` says), so `t.snap` keeps its `.snap` and an operator sees what the file was.
fn aside_name(path: &Path, unix_time: u64) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(format!(".corrupt-{unix_time}"));
    PathBuf::from(name)
}

/// Writes the snapshot at most once per interval when something changed (or, with `dirty`, at
/// the first round whatever changed), and once more at shutdown.
pub(super) async fn persist_loop(
    store: Arc<Store>,
    path: PathBuf,
    interval: Duration,
    dirty: bool,
    stop: Arc<Notify>,
) -> anyhow::Result<()> {
    let mut written = (!dirty).then(|| store.generation());
    let interval = interval.max(Duration::from_millis(100));
    loop {
        let stopping = tokio::select! {
            _ = tokio::time::sleep(interval) => false,
            _ = stop.notified() => true,
        };
        let generation = store.generation();
        if written != Some(generation) || stopping {
            let s = store.clone();
            let p = path.clone();
            let res = tokio::task::spawn_blocking(move || persistence::save(&s, &p))
                .await
                .context("persistence writer panicked")?;
            match res {
                Ok(groups) => {
                    written = Some(generation);
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
    fn an_upstream_file_is_kept_byte_for_byte_beside_the_snapshot() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("pushgateway.db");
        std::fs::write(&path, b"upstream bytes").unwrap();
        let kept = keep_upstream_file(&path, 42).unwrap();
        assert_eq!(kept, dir.path().join("pushgateway.db.upstream-42"));
        std::fs::write(dir.path().join("other"), b"x").unwrap();
        std::fs::rename(dir.path().join("other"), &path).unwrap();
        assert_eq!(std::fs::read(&kept).unwrap(), b"upstream bytes");
        // A second keep within the same second never replaces the first copy.
        let again = keep_upstream_file(&path, 42).unwrap();
        assert_eq!(again, dir.path().join("pushgateway.db.upstream-42.1"));
        assert_eq!(std::fs::read(&kept).unwrap(), b"upstream bytes");
        assert_eq!(std::fs::read(&again).unwrap(), b"x");
    }

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
