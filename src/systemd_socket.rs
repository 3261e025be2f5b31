//! `--web.systemd-socket`: listen on the sockets systemd passes (socket activation), as
//! upstream's exporter-toolkit does: the file descriptors from 3 on, `LISTEN_FDS` of them, for
//! the process `LISTEN_PID` names. `--web.listen-address` is then ignored.
//!
//! In the binary rather than the library because taking over an inherited descriptor is
//! `unsafe` (the library denies unsafe code): the checks below are what makes it sound.

use std::net::TcpListener;
use std::os::fd::{FromRawFd, RawFd};

/// The first descriptor systemd passes (`SD_LISTEN_FDS_START`).
const LISTEN_FDS_START: RawFd = 3;

/// Takes the listening sockets systemd passed to this process; an error names what is wrong
/// (no sockets passed, passed to another process, not a listening TCP socket).
pub fn listeners() -> Result<Vec<TcpListener>, String> {
    let pid = std::env::var("LISTEN_PID").ok();
    let fds = std::env::var("LISTEN_FDS").ok();
    let count = passed_fds(pid.as_deref(), fds.as_deref(), std::process::id())?;
    // As sd_listen_fds(unset_environment = 1): children started later must not take them too.
    std::env::remove_var("LISTEN_PID");
    std::env::remove_var("LISTEN_FDS");
    std::env::remove_var("LISTEN_FDNAMES");
    (LISTEN_FDS_START..LISTEN_FDS_START + count)
        .map(take_listener)
        .collect()
}

/// How many descriptors systemd passed to process `own_pid`, from `LISTEN_PID` and
/// `LISTEN_FDS`.
fn passed_fds(pid: Option<&str>, fds: Option<&str>, own_pid: u32) -> Result<RawFd, String> {
    const HINT: &str = "--web.systemd-socket needs a socket unit (systemd socket activation) starting this service";
    let (Some(pid), Some(fds)) = (pid, fds) else {
        return Err(format!(
            "no socket activation file descriptors found (LISTEN_PID and LISTEN_FDS are not set); {HINT}"
        ));
    };
    match pid.trim().parse::<u32>() {
        Ok(p) if p == own_pid => {}
        _ => {
            return Err(format!(
                "LISTEN_PID={pid:?} is not this process ({own_pid}): the sockets were passed to another one; {HINT}"
            ))
        }
    }
    match fds.trim().parse::<RawFd>() {
        // Far more than any socket unit lists; bounds the range taken below.
        Ok(n) if (1..=1024).contains(&n) => Ok(n),
        _ => Err(format!(
            "LISTEN_FDS={fds:?} is not a number of sockets (1 or more); {HINT}"
        )),
    }
}

/// The listening TCP socket at `fd`, made non-blocking and close-on-exec.
fn take_listener(fd: RawFd) -> Result<TcpListener, String> {
    if !is_listening_socket(fd) {
        return Err(format!(
            "file descriptor {fd} passed by systemd is not a listening socket (pushgate serves on stream sockets with ListenStream=)"
        ));
    }
    // SAFETY: `fd` is open and a listening socket (checked above), systemd passed it to this
    // process (LISTEN_PID checked) and nothing else in the process owns descriptors from 3 up
    // to 3 + LISTEN_FDS (inherited, they were open before anything here opened a file): each
    // is taken here, once, at start.
    let listener = unsafe { TcpListener::from_raw_fd(fd) };
    // SAFETY: fcntl on a descriptor this process owns; FD_CLOEXEC only affects exec.
    unsafe { libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC) };
    match listener.local_addr() {
        Ok(_) => {}
        Err(e) => {
            return Err(format!(
                "file descriptor {fd} passed by systemd is not a TCP socket ({e}); pushgate listens on TCP (ListenStream= with a port or an address)"
            ))
        }
    }
    listener
        .set_nonblocking(true)
        .map_err(|e| format!("file descriptor {fd}: cannot make it non-blocking: {e}"))?;
    Ok(listener)
}

/// Whether `fd` is an open socket in the listening state.
fn is_listening_socket(fd: RawFd) -> bool {
    let mut accepting: libc::c_int = 0;
    let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: getsockopt writes at most `len` bytes into `accepting`, which lives on this
    // stack frame; on a descriptor that is not an open socket it fails and writes nothing.
    let rc = unsafe {
        libc::getsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_ACCEPTCONN,
            (&mut accepting as *mut libc::c_int).cast(),
            &mut len,
        )
    };
    rc == 0 && accepting != 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_environment_must_name_this_process_and_a_count() {
        assert_eq!(passed_fds(Some("42"), Some("2"), 42), Ok(2));
        assert!(passed_fds(None, None, 42)
            .unwrap_err()
            .contains("no socket activation file descriptors found"));
        assert!(passed_fds(Some("41"), Some("1"), 42)
            .unwrap_err()
            .contains("not this process"));
        for bad in ["0", "-1", "x", "", "100000"] {
            assert!(
                passed_fds(Some("42"), Some(bad), 42)
                    .unwrap_err()
                    .contains("LISTEN_FDS"),
                "{bad:?}"
            );
        }
    }
}
