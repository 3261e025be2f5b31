//! The persistence file with the real binary: restarts keep every group, SIGTERM / `/-/quit`
//! write a final snapshot, SIGHUP is harmless, and unreadable files are refused clearly.

mod common;

use common::*;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

fn start_with(file: &Path, extra: &[&str]) -> Gateway {
    let mut flags = vec![format!("--persistence.file={}", file.display())];
    flags.extend(extra.iter().map(|s| s.to_string()));
    Gateway::start("pushgate", &pushgate_bin(), &flags, "")
}

fn push_groups(gw: &Gateway, n: usize) {
    for i in 0..n {
        let body =
            format!("# HELP job_value a value\n# TYPE job_value gauge\njob_value{{k=\"v\"}} {i}\n");
        assert_eq!(
            gw.put_text(&format!("/metrics/job/persist/instance/i{i}"), &body)
                .status,
            200
        );
    }
}

fn groups_of(gw: &Gateway) -> serde_json::Value {
    let (s, v) = gw.api_metrics_normalised();
    assert_eq!(s, 200);
    v
}

#[test]
fn restart_after_sigterm_keeps_every_group() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("pushgate.snapshot");
    let mut gw = start_with(&file, &["--persistence.interval=1h"]);
    push_groups(&gw, 50);
    let before = groups_of(&gw);
    let scrape_before = gw.scrape_normalised().1;
    signal(gw.pid(), "TERM");
    assert!(
        gw.wait_exit(Duration::from_secs(20)),
        "pushgate did not stop on SIGTERM"
    );
    assert!(
        file.exists(),
        "no snapshot written at shutdown; log:\n{}",
        gw.log()
    );

    let gw2 = start_with(&file, &["--persistence.interval=1h"]);
    assert_eq!(groups_of(&gw2), before);
    assert_eq!(gw2.scrape_normalised().1, scrape_before);
}

#[test]
fn periodic_snapshot_survives_kill_9() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("snap");
    let gw = start_with(&file, &["--persistence.interval=200ms"]);
    push_groups(&gw, 10);
    // Wait until a snapshot holding all ten groups was written, then crash hard.
    let written = poll_until(Duration::from_secs(10), || {
        let len = std::fs::metadata(&file).map(|m| m.len()).unwrap_or(0);
        (len > 0).then_some(())
    });
    assert!(
        written.is_some(),
        "no periodic snapshot; log:\n{}",
        gw.log()
    );
    let complete = poll_until(Duration::from_secs(10), || {
        let bytes = std::fs::read(&file).ok()?;
        let decoded =
            pushgate::store::persistence::decode_snapshot(&file, &bytes, Default::default())
                .ok()?;
        (decoded.groups.len() == 10).then_some(())
    });
    assert!(
        complete.is_some(),
        "no snapshot with all ten groups was written"
    );
    let before = groups_of(&gw);
    signal(gw.pid(), "KILL");
    drop(gw);
    let gw2 = start_with(&file, &[]);
    assert_eq!(groups_of(&gw2), before);
}

#[test]
fn sighup_is_not_a_crash() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("snap");
    let mut gw = start_with(&file, &[]);
    push_groups(&gw, 3);
    signal(gw.pid(), "HUP");
    // A request answered after the signal was sent proves the process survived it.
    assert_eq!(gw.get("/-/ready").status, 200);
    assert!(!gw.has_exited(), "SIGHUP killed the process");
    assert_eq!(groups_of(&gw)["data"].as_array().map(|a| a.len()), Some(3));
}

#[test]
fn the_start_is_logged_with_the_version() {
    let dir = tempfile::tempdir().unwrap();
    let gw = start_with(&dir.path().join("snap"), &[]);
    let log = gw.log();
    let line = log
        .lines()
        .find(|l| l.contains("starting pushgate"))
        .unwrap_or_else(|| panic!("no start line in:\n{log}"));
    assert!(line.contains(env!("CARGO_PKG_VERSION")), "{line}");
}

#[test]
fn quit_writes_a_final_snapshot() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("snap");
    let mut gw = start_with(
        &file,
        &["--web.enable-lifecycle", "--persistence.interval=1h"],
    );
    push_groups(&gw, 4);
    assert_eq!(gw.request(&Req::new("PUT", "/-/quit")).status, 200);
    assert!(gw.wait_exit(Duration::from_secs(20)));
    let gw2 = start_with(&file, &[]);
    assert_eq!(groups_of(&gw2)["data"].as_array().map(|a| a.len()), Some(4));
}

/// Runs the binary on a bad file and returns (exit success, stderr).
fn run_on(file: &Path, extra: &[&str], deadline: Duration) -> (bool, String) {
    let port = free_port();
    let mut child = Command::new(pushgate_bin())
        .arg(format!("--web.listen-address=127.0.0.1:{port}"))
        .arg(format!("--persistence.file={}", file.display()))
        .args(extra)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("pushgate should spawn");
    let exited = poll_until(deadline, || child.try_wait().ok().flatten());
    match exited {
        Some(status) => {
            let mut err = String::new();
            use std::io::Read;
            child
                .stderr
                .take()
                .unwrap()
                .read_to_string(&mut err)
                .unwrap();
            (status.success(), err)
        }
        None => {
            // Still running: it accepted the file.
            let _ = child.kill();
            let _ = child.wait();
            (true, String::new())
        }
    }
}

#[test]
fn truncated_file_is_refused_with_a_clear_message_and_kept() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("t2.snap");
    {
        let mut gw = start_with(&file, &["--persistence.interval=1h"]);
        push_groups(&gw, 5);
        signal(gw.pid(), "TERM");
        assert!(gw.wait_exit(Duration::from_secs(20)));
    }
    let good = std::fs::read(&file).unwrap();
    std::fs::write(&file, &good[..good.len() / 2]).unwrap();
    let (ok, err) = run_on(&file, &[], Duration::from_secs(10));
    assert!(!ok, "pushgate started on a truncated file");
    assert!(err.contains("truncated"), "unclear message: {err}");
    assert_eq!(
        std::fs::read(&file).unwrap().len(),
        good.len() / 2,
        "the file must be left as it was"
    );

    // With the explicit flag it starts empty and keeps the bad file aside.
    let (ok, _) = run_on(
        &file,
        &["--persistence.start-empty-on-error"],
        Duration::from_secs(2),
    );
    assert!(ok);
    // Kept under its whole name with `.corrupt-<unix time>` appended, as `--help` says.
    let names: Vec<String> = std::fs::read_dir(dir.path())
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    let aside = names
        .iter()
        .find(|n| n.contains("corrupt-"))
        .unwrap_or_else(|| panic!("the unreadable file was not kept aside: {names:?}"));
    let time = aside
        .strip_prefix("t2.snap.corrupt-")
        .unwrap_or_else(|| panic!("kept as {aside:?}, not t2.snap.corrupt-<unix time>"));
    assert!(
        !time.is_empty() && time.bytes().all(|b| b.is_ascii_digit()),
        "kept as {aside:?}"
    );
    assert_eq!(
        std::fs::read(dir.path().join(aside)).unwrap().len(),
        good.len() / 2,
        "the kept file is the unreadable one"
    );
}

#[test]
fn the_snapshot_file_is_readable_by_its_owner_only() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("snap");
    let mode_of = |f: &Path| std::fs::metadata(f).unwrap().permissions().mode() & 0o777;
    let mut gw = start_with(&file, &["--persistence.interval=1h"]);
    push_groups(&gw, 3);
    signal(gw.pid(), "TERM");
    assert!(gw.wait_exit(Duration::from_secs(20)));
    assert_eq!(
        mode_of(&file),
        0o600,
        "snapshot written with mode {:o}",
        mode_of(&file)
    );
    // A file left readable by everyone (an older version's, or a copy): the next write
    // replaces it with a private one.
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
    let mut gw = start_with(&file, &["--persistence.interval=1h"]);
    push_groups(&gw, 4);
    signal(gw.pid(), "TERM");
    assert!(gw.wait_exit(Duration::from_secs(20)));
    assert_eq!(
        mode_of(&file),
        0o600,
        "snapshot rewritten with mode {:o}",
        mode_of(&file)
    );
    // Nothing else in the directory (no temporary file left, none world-readable).
    let others: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.path() != file)
        .map(|e| e.file_name())
        .collect();
    assert!(others.is_empty(), "{others:?}");
}

#[test]
fn a_truncated_upstream_gob_file_is_refused_not_misread() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("pushgateway.data");
    // The first bytes of a Go gob stream, as upstream writes them, and nothing more.
    std::fs::write(&file, b"\x3f\xff\x81\x03\x01\x01\x0fmetricGroupsMap").unwrap();
    let (ok, err) = run_on(&file, &[], Duration::from_secs(10));
    assert!(!ok);
    assert!(
        err.contains("is an upstream Pushgateway file (Go gob) that cannot be read"),
        "{err}"
    );
    assert!(err.contains("truncated"), "{err}");
}

#[test]
fn a_file_of_neither_format_is_refused_clearly() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("pushgateway.data");
    std::fs::write(&file, b"# TYPE some_text_file gauge\nsome_text_file 1\n").unwrap();
    let (ok, err) = run_on(&file, &[], Duration::from_secs(10));
    assert!(!ok);
    assert!(
        err.contains("neither a pushgate snapshot nor an upstream Pushgateway file"),
        "{err}"
    );
    assert_eq!(
        std::fs::read(&file).unwrap(),
        b"# TYPE some_text_file gauge\nsome_text_file 1\n"
    );
}
