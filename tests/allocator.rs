//! The binary's allocator tuning as the kernel sees it: transparent huge pages are off for the
//! process unless `MIMALLOC_ALLOW_THP` is set (src/alloc.rs, `tune_allocator`).

mod common;

use std::process::{Command, Stdio};
use std::time::Duration;

use common::{free_port, poll_until, pushgate_bin, Gateway};

/// The `THP_enabled` line of a process's /proc status (Linux 5.0 and later): "1" or "0".
fn thp_enabled(pid: u32) -> Option<String> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("THP_enabled:"))
        .map(|v| v.trim().to_owned())
}

#[test]
fn transparent_huge_pages_are_off_for_the_process_unless_the_environment_allows_them() {
    // A child inherits the flag, so the gateway's own setting can only be told from what it
    // inherited when this process has THP on: turn it on here (a parent, e.g. a container
    // runtime, may have turned it off), instead of skipping where it is off.
    // SAFETY: prctl with PR_SET_THP_DISABLE takes plain integers and touches no memory.
    let rc = unsafe { libc::prctl(libc::PR_SET_THP_DISABLE, 0, 0, 0, 0) };
    assert_eq!(rc, 0, "prctl(PR_SET_THP_DISABLE, 0) failed");
    assert_eq!(
        thp_enabled(std::process::id()).as_deref(),
        Some("1"),
        "the test process should have THP on now (the THP_enabled status line needs Linux 5.0+)"
    );
    // The operator's override must not leak in from the test's own environment; this file
    // holds one test, so no other thread reads the environment meanwhile.
    std::env::remove_var("MIMALLOC_ALLOW_THP");
    let gw = Gateway::start("pushgate", &pushgate_bin(), &[], "");
    assert_eq!(
        thp_enabled(gw.pid()).as_deref(),
        Some("0"),
        "a running gateway should have THP off"
    );
    // The process still works with it off: a push is stored and scraped.
    assert_eq!(
        gw.put_text("/metrics/job/thp", "# TYPE x gauge\nx 1\n")
            .status,
        200
    );
    let scraped = gw.get("/metrics").text();
    assert!(
        scraped
            .lines()
            .any(|l| l.starts_with("x{") && l.contains("job=\"thp\"")),
        "{scraped}"
    );

    // With the operator's override the process keeps the setting it inherited (on, as this
    // test process has it).
    let dir = tempfile::tempdir().expect("temp dir");
    let port = free_port();
    let mut child = Command::new(pushgate_bin())
        .args([
            format!("--web.listen-address=127.0.0.1:{port}"),
            "--persistence.file=".to_owned(),
        ])
        .env("MIMALLOC_ALLOW_THP", "1")
        .current_dir(dir.path())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawning pushgate");
    let listening = poll_until(Duration::from_secs(15), || {
        std::net::TcpStream::connect(("127.0.0.1", port))
            .ok()
            .map(|_| ())
    });
    let seen = thp_enabled(child.id());
    let _ = child.kill();
    let _ = child.wait();
    assert!(listening.is_some(), "pushgate did not listen on {port}");
    assert_eq!(
        seen.as_deref(),
        Some("1"),
        "MIMALLOC_ALLOW_THP=1 keeps THP on"
    );
}
