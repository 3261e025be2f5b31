//! Upstream's set-up flags on real processes: `--web.systemd-socket` serving on a listening
//! socket inherited at descriptor 3 (as systemd passes it), kingpin's `--no-<flag>` negations
//! side by side with the upstream Pushgateway, and the 404 that says `/debug/pprof` is absent.

mod common;

use std::net::TcpListener;
use std::os::fd::AsRawFd;
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::{http, poll_until, pushgate_bin, upstream_bin, Gateway, Req};

/// The process killed (and reaped) when the test ends, whatever happens.
struct Child(std::process::Child);

impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts pushgate as a systemd socket unit would: `listener` at descriptor 3, `LISTEN_FDS=1`
/// and `LISTEN_PID` naming the process (a shell sets it to its own pid, then execs pushgate
/// in place, keeping the pid). `pid_offset` names another process instead when not 0.
fn start_activated(listener: &TcpListener, pid_offset: u32, log: &std::path::Path) -> Child {
    let fd = listener.as_raw_fd();
    let log = std::fs::File::create(log).unwrap();
    let mut cmd = Command::new("sh");
    cmd.arg("-c")
        .arg(format!(
            "LISTEN_PID=$(($$ + {pid_offset})) LISTEN_FDS=1 exec \"$0\" \"$@\""
        ))
        .arg(pushgate_bin())
        .args(["--web.systemd-socket", "--persistence.file="])
        // Ignored with --web.systemd-socket, as upstream: a port nothing listens on.
        .arg("--web.listen-address=127.0.0.1:1")
        .stdin(Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log);
    // SAFETY: dup2 and fcntl are async-signal-safe; between fork and exec they only place the
    // listening socket at descriptor 3 without close-on-exec, where systemd puts the first one
    // (dup2 onto itself would leave the flag set, so a socket already at 3 has it cleared).
    unsafe {
        cmd.pre_exec(move || {
            let rc = if fd == 3 {
                libc::fcntl(3, libc::F_SETFD, 0)
            } else {
                libc::dup2(fd, 3)
            };
            if rc < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    Child(cmd.spawn().expect("sh should start"))
}

#[test]
fn web_systemd_socket_serves_on_the_inherited_socket() {
    let dir = tempfile::tempdir().unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let log = dir.path().join("log.txt");
    let _child = start_activated(&listener, 0, &log);
    // The test's own copy stays open: connections queue on the socket until pushgate accepts.
    let ready = poll_until(Duration::from_secs(15), || {
        match http(&addr, &Req::get("/-/ready"), Duration::from_secs(2)) {
            Ok(r) if r.status == 200 => Some(()),
            _ => None,
        }
    });
    assert!(
        ready.is_some(),
        "not ready on the inherited socket; log:\n{}",
        std::fs::read_to_string(&log).unwrap_or_default()
    );
    let push = Req::new("PUT", "/metrics/job/activated").body(b"up_via_socket 1\n".to_vec());
    assert_eq!(
        http(&addr, &push, Duration::from_secs(10)).unwrap().status,
        200
    );
    let scrape = http(&addr, &Req::get("/metrics"), Duration::from_secs(10)).unwrap();
    assert!(
        scrape
            .text()
            .contains("up_via_socket{instance=\"\",job=\"activated\"} 1"),
        "{}",
        scrape.text()
    );
    let status = http(&addr, &Req::get("/api/v1/status"), Duration::from_secs(10)).unwrap();
    let v: serde_json::Value = serde_json::from_slice(&status.body).unwrap();
    assert_eq!(v["data"]["flags"]["web.systemd-socket"], "true", "{v}");
}

#[test]
fn web_systemd_socket_refuses_sockets_passed_to_another_process() {
    let dir = tempfile::tempdir().unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let log = dir.path().join("log.txt");
    let mut child = start_activated(&listener, 1, &log);
    let exited = poll_until(Duration::from_secs(15), || child.0.try_wait().unwrap());
    let status = exited.expect("pushgate should exit when LISTEN_PID is another process");
    assert!(!status.success());
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(text.contains("is not this process"), "{text}");
}

/// `/-/quit` with lifecycle turned off by its negation, and on: pushgate answers as upstream.
/// Given both, pushgate takes the last (kingpin refuses a repeated flag; pushgate is laxer).
#[test]
fn negated_boolean_flags_work_as_upstream_s() {
    let quit = |bin: &std::path::Path, name: &str, flags: &[&str]| {
        let flags: Vec<String> = flags.iter().map(|f| (*f).to_owned()).collect();
        let gw = Gateway::start(name, bin, &flags, "");
        gw.request(&Req::new("PUT", "/-/quit")).status
    };
    for (bin, name) in [(pushgate_bin(), "pushgate"), (upstream_bin(), "upstream")] {
        assert_eq!(
            quit(&bin, name, &["--no-web.enable-lifecycle"]),
            403,
            "{name}"
        );
        assert_eq!(quit(&bin, name, &["--web.enable-lifecycle"]), 200, "{name}");
    }
    let pushgate = pushgate_bin();
    let both = ["--web.enable-lifecycle", "--no-web.enable-lifecycle"];
    assert_eq!(quit(&pushgate, "pushgate", &both), 403);
    let both = ["--no-web.enable-lifecycle", "--web.enable-lifecycle"];
    assert_eq!(quit(&pushgate, "pushgate", &both), 200);
}

#[test]
fn debug_pprof_answers_a_404_that_says_why() {
    let gw = Gateway::start("pushgate", &pushgate_bin(), &[], "");
    for path in ["/debug/pprof", "/debug/pprof/", "/debug/pprof/heap"] {
        let r = gw.get(path);
        assert_eq!(r.status, 404, "{path}");
        assert!(
            r.text().contains("pushgate has no /debug/pprof"),
            "{path}: {}",
            r.text()
        );
    }
    // Any other unknown path keeps upstream's text.
    assert_eq!(gw.get("/debug/vars").text(), "404 page not found\n");
}
